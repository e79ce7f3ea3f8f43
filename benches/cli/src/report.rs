//! Tables on the terminal and the report folder: Markdown summary, JSON, CSV.

use std::fmt::Write as _;

use kalloc_benches::suite::{CaseResult, Family, Metric};

/// A result with its ratio to the best peer on the same workload.
pub struct Row<'a> {
    pub result: &'a CaseResult,
    /// `value / best peer value`: below 1 is faster (times), above 1 is better (shares).
    pub vs_peer: Option<f64>,
}

/// One workload's rows.
pub type WorkloadRows<'a> = (String, Vec<Row<'a>>);

/// Results grouped by family then workload, in the order they ran.
pub struct Grouped<'a> {
    pub families: Vec<(Family, Vec<WorkloadRows<'a>>)>,
}

pub fn group(results: &[CaseResult]) -> Grouped<'_> {
    let mut families: Vec<(Family, Vec<WorkloadRows<'_>>)> = Vec::new();
    for result in results {
        let family = match families.iter_mut().position(|(f, _)| *f == result.family) {
            Some(i) => &mut families[i].1,
            None => {
                families.push((result.family, Vec::new()));
                &mut families.last_mut().expect("just pushed").1
            }
        };
        match family.iter_mut().find(|(w, _)| *w == result.workload) {
            Some((_, rows)) => rows.push(Row {
                result,
                vs_peer: None,
            }),
            None => family.push((
                result.workload.clone(),
                vec![Row {
                    result,
                    vs_peer: None,
                }],
            )),
        }
    }
    for (_, workloads) in &mut families {
        for (_, rows) in workloads.iter_mut() {
            let peers = rows
                .iter()
                .filter(|r| !r.result.ours)
                .map(|r| r.result.metric);
            let best = peers.reduce(|a, b| {
                let a_better = if a.lower_is_better() {
                    a.value() <= b.value()
                } else {
                    a.value() >= b.value()
                };
                if a_better { a } else { b }
            });
            for row in rows.iter_mut() {
                row.vs_peer = best.map(|b| row.result.metric.value() / b.value());
            }
        }
    }
    Grouped { families }
}

fn value_text(metric: &Metric) -> (String, String) {
    match metric {
        Metric::Time(s) => (
            format!("{:.1}", s.median_ns),
            format!("{:.1}", s.ops_per_sec() / 1e6),
        ),
        Metric::Percent(p) => (format!("{p:.1}%"), "-".into()),
    }
}

fn name_of(row: &Row<'_>) -> String {
    if row.result.ours {
        format!("{} *", row.result.allocator)
    } else {
        row.result.allocator.to_string()
    }
}

/// The tables for the terminal.
pub fn text_tables(grouped: &Grouped<'_>) -> String {
    let mut out = String::new();
    for (family, workloads) in &grouped.families {
        let _ = writeln!(
            out,
            "\n== {family} ==  (median ns per op; vs peer = value / best peer's; * = kalloc)"
        );
        let _ = writeln!(
            out,
            "{:<28} {:<26} {:>10} {:>9} {:>8}",
            "workload", "allocator", "ns/op", "Mops/s", "vs peer"
        );
        for (workload, rows) in workloads {
            for (i, row) in rows.iter().enumerate() {
                let (value, throughput) = value_text(&row.result.metric);
                let ratio = row.vs_peer.map_or("-".into(), |r| format!("{r:.2}"));
                let failed = if row.result.failures > 0 {
                    format!("  ({} failed)", row.result.failures)
                } else {
                    String::new()
                };
                let label = if i == 0 { workload.as_str() } else { "" };
                let _ = writeln!(
                    out,
                    "{label:<28} {:<26} {value:>10} {throughput:>9} {ratio:>8}{failed}",
                    name_of(row)
                );
            }
        }
    }
    out
}

/// The Markdown tables, one per family.
pub fn markdown_tables(grouped: &Grouped<'_>) -> String {
    let mut out = String::new();
    for (family, workloads) in &grouped.families {
        let _ = writeln!(out, "\n### {family}\n");
        let _ = writeln!(
            out,
            "| workload | allocator | ns/op | Mops/s | vs best peer | failed |"
        );
        let _ = writeln!(out, "| --- | --- | ---: | ---: | ---: | ---: |");
        for (workload, rows) in workloads {
            for row in rows {
                let (value, throughput) = value_text(&row.result.metric);
                let ratio = row.vs_peer.map_or("-".into(), |r| format!("{r:.2}"));
                let name = if row.result.ours {
                    format!("**{}**", row.result.allocator)
                } else {
                    row.result.allocator.into()
                };
                let _ = writeln!(
                    out,
                    "| {workload} | {name} | {value} | {throughput} | {ratio} | {} |",
                    row.result.failures
                );
            }
        }
    }
    out
}

/// Derived figures the issues set goals on: each frame allocator's cost at
/// 95% fill over its cost at 10% fill.
pub fn fill_ratios(results: &[CaseResult]) -> Vec<(&'static str, f64)> {
    let at = |name: &str, fill: &str| {
        results
            .iter()
            .find(|r| r.allocator == name && r.workload == format!("mix-{fill}/1GiB"))
            .map(|r| r.metric.value())
    };
    let mut names: Vec<&'static str> = Vec::new();
    for result in results.iter().filter(|r| r.family == Family::Frames) {
        if !names.contains(&result.allocator) {
            names.push(result.allocator);
        }
    }
    names
        .into_iter()
        .filter_map(|n| Some((n, at(n, "95")? / at(n, "10")?)))
        .collect()
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_number(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".into()
    }
}

/// The raw results as JSON, with the machine and the command.
pub fn json(grouped: &Grouped<'_>, machine: &str, command: &str) -> String {
    let mut out = format!(
        "{{\n  \"machine\": {},\n  \"command\": {},\n  \"results\": [\n",
        json_string(machine),
        json_string(command)
    );
    let mut first = true;
    for (family, workloads) in &grouped.families {
        for (workload, rows) in workloads {
            for row in rows {
                let r = row.result;
                let metric = match r.metric {
                    Metric::Time(s) => format!(
                        "\"median_ns\": {}, \"min_ns\": {}, \"max_ns\": {}, \"ops_per_sec\": {}, \"batches\": {}, \"ops\": {}",
                        json_number(s.median_ns),
                        json_number(s.min_ns),
                        json_number(s.max_ns),
                        json_number(s.ops_per_sec()),
                        s.batches,
                        s.ops
                    ),
                    Metric::Percent(p) => format!("\"percent\": {}", json_number(p)),
                };
                let _ = write!(
                    out,
                    "{}    {{\"family\": {}, \"workload\": {}, \"allocator\": {}, \"ours\": {}, \"threads\": {}, {metric}, \"vs_best_peer\": {}, \"failures\": {}}}",
                    if first { "" } else { ",\n" },
                    json_string(family.name()),
                    json_string(workload),
                    json_string(r.allocator),
                    r.ours,
                    r.threads,
                    row.vs_peer.map_or("null".into(), json_number),
                    r.failures
                );
                first = false;
            }
        }
    }
    out.push_str("\n  ]\n}\n");
    out
}

/// The raw results as CSV.
pub fn csv(grouped: &Grouped<'_>) -> String {
    let mut out = String::from(
        "family,workload,allocator,ours,threads,median_ns,min_ns,max_ns,ops_per_sec,percent,vs_best_peer,failures\n",
    );
    for (family, workloads) in &grouped.families {
        for (workload, rows) in workloads {
            for row in rows {
                let r = row.result;
                let (times, percent) = match r.metric {
                    Metric::Time(s) => (
                        format!(
                            "{},{},{},{}",
                            s.median_ns,
                            s.min_ns,
                            s.max_ns,
                            s.ops_per_sec()
                        ),
                        String::new(),
                    ),
                    Metric::Percent(p) => (",,,".into(), p.to_string()),
                };
                let ratio = row.vs_peer.map_or(String::new(), |v| v.to_string());
                let _ = writeln!(
                    out,
                    "{family},{workload},{},{},{},{times},{percent},{ratio},{}",
                    r.allocator, r.ours, r.threads, r.failures
                );
            }
        }
    }
    out
}
