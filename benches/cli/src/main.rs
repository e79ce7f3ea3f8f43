//! `kalloc-bench`: runs kalloc's allocators side by side with peer crates on
//! the same seeded workloads, prints one table per family, and writes a
//! report folder (Markdown summary, SVG charts, JSON and CSV).
//!
//! `cargo run --release -p kalloc-bench` runs the default suite (about two
//! minutes on two cores); `--help` lists the options.

mod args;
mod report;
mod svg;

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use args::{Command, RunArgs};
use kalloc_benches::suite::{CaseResult, Config, Event, Metric};
use kalloc_benches::trace;

fn main() -> ExitCode {
    let command = match args::parse(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("kalloc-bench: {message}");
            return ExitCode::from(2);
        }
    };
    let outcome = match command {
        Command::Help => {
            print!("{}", args::USAGE);
            Ok(())
        }
        Command::List(config) => {
            list(&config);
            Ok(())
        }
        Command::Run(run_args) => run(&run_args),
        Command::Replay { file, args } => replay(&file, &args),
        Command::ConvertValgrind { log, out } => convert(&log, out.as_deref()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("kalloc-bench: {message}");
            ExitCode::FAILURE
        }
    }
}

fn list(config: &Config) {
    let mut all = config.clone();
    all.workloads.clear();
    println!("{:<9} {:<28} {:<8} about", "family", "workload", "default");
    for info in kalloc_benches::list(&all) {
        if config.families.is_empty() || config.families.contains(&info.family) {
            let default = if info.default { "yes" } else { "no" };
            println!(
                "{:<9} {:<28} {default:<8} {}",
                info.family.name(),
                info.name,
                info.about
            );
        }
    }
}

/// One line about the machine, for the report and the JSON.
fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!(
        "{cpu}, {cores} cores available, {} {kernel}",
        std::env::consts::OS
    )
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!(
        "cargo run --release -p kalloc-bench{}{}",
        if args.is_empty() { "" } else { " -- " },
        args.join(" ")
    )
}

fn run(args: &RunArgs) -> Result<(), String> {
    let started = Instant::now();
    let mut results: Vec<CaseResult> = Vec::new();
    let mut case = 0;
    // Whether the last progress line waits for its case's result.
    let mut line_open = false;
    eprintln!(
        "kalloc-bench: {} (scale {:?}); progress below, tables at the end",
        machine(),
        args.config.scale
    );
    kalloc_benches::run(&args.config, &mut |event| match event {
        Event::Start {
            family,
            workload,
            allocator,
        } => {
            case += 1;
            eprint!(
                "[{case:>3} {:>5.1}s] {family:<7} {workload:<28} {allocator:<26}",
                started.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
            line_open = true;
        }
        Event::Done(result) => {
            if !line_open {
                eprint!(
                    "[    {:>5.1}s] {:<7} {:<28} {:<26}",
                    started.elapsed().as_secs_f64(),
                    result.family,
                    result.workload,
                    result.allocator
                );
            }
            match result.metric {
                Metric::Time(s) => eprintln!(" {:>10.1} ns/op", s.median_ns),
                Metric::Percent(p) => eprintln!(" {p:>10.1} %"),
            }
            line_open = false;
            results.push(result);
        }
        Event::Skipped => {
            eprintln!(" {:>10}", "n/a");
            line_open = false;
        }
        Event::Deferred => {
            eprintln!(" {:>10}", "in turns");
            line_open = false;
        }
    });
    eprintln!(
        "kalloc-bench: {case} cases in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if results.is_empty() {
        return Err("no workload matched the selection (see --list)".into());
    }
    let grouped = report::group(&results);
    let (machine, command) = (machine(), command_line());
    if args.json {
        print!("{}", report::json(&grouped, &machine, &command));
    } else {
        print!("{}", report::text_tables(&grouped));
        for (name, ratio) in report::fill_ratios(&results) {
            println!("fill cost, 95% over 10%: {name:<26} {ratio:.2}x");
        }
    }
    if args.report {
        write_report(&args.out, &grouped, &results, &machine, &command)?;
        let path = fs::canonicalize(&args.out).unwrap_or_else(|_| args.out.clone());
        eprintln!("kalloc-bench: report written to {}", path.display());
        if !args.json {
            println!("\nreport: {}", path.display());
        }
    }
    Ok(())
}

fn write_report(
    out: &Path,
    grouped: &report::Grouped<'_>,
    results: &[CaseResult],
    machine: &str,
    command: &str,
) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot write the report to {}: {e}", out.display());
    fs::create_dir_all(out).map_err(fail)?;
    let mut summary = format!(
        "# kalloc-bench report\n\nMachine: {machine}  \nCommand: `{command}`\n\n\
         Median nanoseconds per operation over many timed batches after a warm-up; every allocator \
         of a family runs the same seeded operation sequence, and every heap gets an arena of the \
         same size; the heaps of a timed workload run their batches in turns, each operation one call \
         the loop cannot inline. \"vs best peer\" is the value divided by the best peer crate's on the same \
         workload: below 1 is faster (for efficiency, above 1 is better). Absolute times vary by \
         machine and load; the ratios much less. **Bold** rows are kalloc's allocators.\n"
    );
    for (family, workloads) in &grouped.families {
        let file = format!("{}.svg", family.name());
        fs::write(out.join(&file), svg::family_chart(*family, workloads)).map_err(fail)?;
        summary.push_str(&format!("\n![{family}]({file})\n"));
    }
    summary.push_str("\n## Tables\n");
    summary.push_str(&report::markdown_tables(grouped));
    let ratios = report::fill_ratios(results);
    if !ratios.is_empty() {
        summary.push_str("\n### Frame allocation cost at 95% fill over 10% fill\n\n| allocator | ratio |\n| --- | ---: |\n");
        for (name, ratio) in ratios {
            summary.push_str(&format!("| {name} | {ratio:.2} |\n"));
        }
    }
    fs::write(out.join("summary.md"), summary).map_err(fail)?;
    fs::write(
        out.join("results.json"),
        report::json(grouped, machine, command),
    )
    .map_err(fail)?;
    fs::write(out.join("results.csv"), report::csv(grouped)).map_err(fail)?;
    Ok(())
}

fn replay(file: &Path, args: &RunArgs) -> Result<(), String> {
    let text =
        fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let sequence = trace::parse(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    eprintln!(
        "kalloc-bench: replaying {} operations ({} peak live bytes) on every heap, arena {} MiB",
        sequence.ops.len(),
        sequence.peak_live_bytes(),
        trace::replay_arena_bytes(&sequence) >> 20
    );
    let mut rows = Vec::new();
    trace::replay_all(&sequence, &args.config, &mut |result| {
        eprintln!(
            "  {:<26} {:>10.1} ns/op",
            result.allocator, result.sample.median_ns
        );
        rows.push(result);
    });
    let mut table = String::from(
        "| heap | ns/op | peak held (KiB) | peak live (KiB) | fragmentation | failed |\n| --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let mut json = String::from("[\n");
    for (i, r) in rows.iter().enumerate() {
        let held = r
            .peak_held_bytes
            .map_or("-".into(), |b| format!("{:.1}", b as f64 / 1024.0));
        let frag = r
            .fragmentation()
            .map_or("-".into(), |f| format!("{:.1}%", f * 100.0));
        table.push_str(&format!(
            "| {} | {:.1} | {held} | {:.1} | {frag} | {} |\n",
            r.allocator,
            r.sample.median_ns,
            r.peak_live_bytes as f64 / 1024.0,
            r.failures
        ));
        json.push_str(&format!(
            "  {{\"allocator\": \"{}\", \"ours\": {}, \"median_ns\": {}, \"peak_held_bytes\": {}, \"peak_live_bytes\": {}, \"fragmentation\": {}, \"failures\": {}}}{}\n",
            r.allocator,
            r.ours,
            r.sample.median_ns,
            r.peak_held_bytes.map_or("null".into(), |b| b.to_string()),
            r.peak_live_bytes,
            r.fragmentation().map_or("null".into(), |f| f.to_string()),
            r.failures,
            if i + 1 == rows.len() { "" } else { "," }
        ));
    }
    json.push_str("]\n");
    if args.json {
        print!("{json}");
    } else {
        println!(
            "\nreplay of {}: peak held = address span of all blocks placed; fragmentation = 1 - peak live / peak held\n",
            file.display()
        );
        print!("{table}");
    }
    if args.report {
        let fail =
            |e: std::io::Error| format!("cannot write the report to {}: {e}", args.out.display());
        fs::create_dir_all(&args.out).map_err(fail)?;
        fs::write(
            args.out.join("replay.md"),
            format!(
                "# Replay of `{}`\n\nMachine: {}\n\n{table}",
                file.display(),
                machine()
            ),
        )
        .map_err(fail)?;
        fs::write(args.out.join("replay.json"), json).map_err(fail)?;
        eprintln!(
            "kalloc-bench: replay report written to {}",
            args.out.display()
        );
    }
    Ok(())
}

fn convert(log: &Path, out: Option<&Path>) -> Result<(), String> {
    let text =
        fs::read_to_string(log).map_err(|e| format!("cannot read {}: {e}", log.display()))?;
    let converted = trace::from_valgrind(&text);
    match out {
        Some(path) => {
            fs::write(path, converted).map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        None => {
            print!("{converted}");
            Ok(())
        }
    }
}
