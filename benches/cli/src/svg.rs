//! Charts as hand-written SVG: one horizontal bar chart per family, bars
//! showing each allocator's performance relative to the best peer on the
//! same workload (longer is better; the dashed line is the best peer).
//! Written by hand rather than with `plotters`, whose dependency tree would
//! double the tool's build time for a few rectangles and labels.

use std::fmt::Write as _;

use kalloc_benches::suite::{Family, Metric};

use crate::report::Row;

const WIDTH: f64 = 960.0;
const LABEL_WIDTH: f64 = 300.0;
const BAR_HEIGHT: f64 = 14.0;
const BAR_GAP: f64 = 3.0;
const GROUP_GAP: f64 = 14.0;
const TITLE_HEIGHT: f64 = 54.0;
/// Bars are clipped at this many times the best peer.
const MAX_RELATIVE: f64 = 4.0;
const OURS_COLOUR: &str = "#d9480f";
const PEER_COLOUR: &str = "#5c7cfa";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Performance relative to the best peer: above 1 is better than every peer.
fn relative(row: &Row<'_>) -> Option<f64> {
    let ratio = row.vs_peer?;
    Some(if row.result.metric.lower_is_better() {
        1.0 / ratio
    } else {
        ratio
    })
}

/// The chart of one family's workloads.
pub fn family_chart(family: Family, workloads: &[(String, Vec<Row<'_>>)]) -> String {
    let bars: usize = workloads.iter().map(|(_, rows)| rows.len()).sum();
    let height = TITLE_HEIGHT
        + workloads.len() as f64 * (GROUP_GAP + 18.0)
        + bars as f64 * (BAR_HEIGHT + BAR_GAP)
        + 30.0;
    let plot = WIDTH - LABEL_WIDTH - 90.0;
    let x_of = |rel: f64| LABEL_WIDTH + plot * rel.min(MAX_RELATIVE) / MAX_RELATIVE;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height:.0}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(out, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        out,
        "<text x=\"10\" y=\"22\" font-size=\"16\" font-weight=\"bold\">{family}: performance relative to the best peer (longer is better)</text>"
    );
    let _ = writeln!(
        out,
        "<text x=\"10\" y=\"40\" fill=\"#555\">bar = best peer's ns/op ÷ this allocator's (efficiency: share ÷ best peer's share); <tspan fill=\"{OURS_COLOUR}\">kalloc</tspan>, <tspan fill=\"{PEER_COLOUR}\">peers</tspan>; clipped at {MAX_RELATIVE}x</text>"
    );
    let mut y = TITLE_HEIGHT;
    for (workload, rows) in workloads {
        y += GROUP_GAP;
        let _ = writeln!(
            out,
            "<text x=\"10\" y=\"{:.1}\" font-weight=\"bold\">{}</text>",
            y + 10.0,
            escape(workload)
        );
        y += 18.0;
        let top = y;
        for row in rows {
            let r = row.result;
            let colour = if r.ours { OURS_COLOUR } else { PEER_COLOUR };
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                LABEL_WIDTH - 6.0,
                y + BAR_HEIGHT - 3.0,
                escape(r.allocator)
            );
            let value = match r.metric {
                Metric::Time(s) => format!("{:.1} ns", s.median_ns),
                Metric::Percent(p) => format!("{p:.1}%"),
            };
            if let Some(rel) = relative(row) {
                let end = x_of(rel);
                let _ = writeln!(
                    out,
                    "<rect x=\"{LABEL_WIDTH}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{BAR_HEIGHT}\" fill=\"{colour}\"/>",
                    (end - LABEL_WIDTH).max(1.0)
                );
                let clipped = if rel > MAX_RELATIVE { "▶ " } else { "" };
                let _ = writeln!(
                    out,
                    "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#333\">{clipped}{value} ({rel:.2}x)</text>",
                    end + 4.0,
                    y + BAR_HEIGHT - 3.0
                );
            }
            y += BAR_HEIGHT + BAR_GAP;
        }
        let one = x_of(1.0);
        let _ = writeln!(
            out,
            "<line x1=\"{one:.1}\" y1=\"{:.1}\" x2=\"{one:.1}\" y2=\"{:.1}\" stroke=\"#222\" stroke-dasharray=\"4 3\"/>",
            top - 2.0,
            y
        );
    }
    out.push_str("</svg>\n");
    out
}
