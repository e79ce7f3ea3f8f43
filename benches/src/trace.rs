//! Workloads from traces of real programs: a small text format, a converter
//! from `valgrind --trace-malloc=yes` logs, and a replay on every heap.
//!
//! The format has one operation per line; `#` starts a comment:
//!
//! ```text
//! allocate ID SIZE ALIGN
//! free ID
//! realloc ID SIZE
//! ```
//!
//! IDs are any non-negative integers naming live blocks (an ID may be reused
//! after its block is freed).

use std::alloc::Layout;
use std::collections::HashMap;
use std::fmt;

use crate::heap::{
    BuddySystemHeapPeer, HeapBench, KallocBuddyHeap, KallocHeap, KallocPerCpuHeap, LinkedListPeer,
    RlsfPeer, SlotTable, TalcPeer, free_all, play, replay_timed,
};
use crate::host::Host;
use crate::measure::Sample;
use crate::sequence::{HeapOp, OpSequence, Slots};
use crate::suite::Config;

/// A trace line that could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for TraceError {}

/// Reads a trace into an operation sequence.
///
/// # Errors
/// A [`TraceError`] for an unknown operation, a bad number or layout, an ID
/// allocated twice, or a free/realloc of an ID that is not live.
pub fn parse(text: &str) -> Result<OpSequence, TraceError> {
    let mut slots = Slots::default();
    let mut live: HashMap<u64, u32> = HashMap::new();
    let mut ops = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let err = |reason: String| TraceError {
            line: index + 1,
            reason,
        };
        let line = raw.split('#').next().unwrap_or("").trim();
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((&op, args)) = words.split_first() else {
            continue;
        };
        let num = |i: usize| -> Result<u64, TraceError> {
            let word = args
                .get(i)
                .ok_or_else(|| err(format!("`{op}` needs more arguments")))?;
            word.parse()
                .map_err(|_| err(format!("`{word}` is not a number")))
        };
        let live_slot = |live: &HashMap<u64, u32>, id: u64| {
            live.get(&id)
                .copied()
                .ok_or_else(|| err(format!("id {id} is not live")))
        };
        match op {
            "allocate" | "alloc" | "a" => {
                let (id, size, align) = (num(0)?, num(1)?, num(2).unwrap_or(8));
                let layout = Layout::from_size_align(size.max(1) as usize, align.max(1) as usize)
                    .map_err(|_| {
                    err(format!(
                        "size {size} with alignment {align} is not a layout"
                    ))
                })?;
                if live.contains_key(&id) {
                    return Err(err(format!("id {id} is already live")));
                }
                let slot = slots.take();
                live.insert(id, slot);
                ops.push(HeapOp::Alloc { slot, layout });
            }
            "free" | "f" => {
                let id = num(0)?;
                let slot = live_slot(&live, id)?;
                live.remove(&id);
                slots.give_back(slot);
                ops.push(HeapOp::Free { slot });
            }
            "realloc" | "r" => {
                let (id, size) = (num(0)?, num(1)?);
                let slot = live_slot(&live, id)?;
                ops.push(HeapOp::Realloc {
                    slot,
                    size: size.max(1) as usize,
                });
            }
            other => return Err(err(format!("unknown operation `{other}`"))),
        }
    }
    Ok(OpSequence {
        ops,
        slots: slots.count(),
    })
}

/// Writes a sequence in the trace format (IDs are slot numbers).
pub fn write(sequence: &OpSequence) -> String {
    let mut out = String::new();
    for op in &sequence.ops {
        let line = match *op {
            HeapOp::Alloc { slot, layout } => {
                format!("allocate {slot} {} {}\n", layout.size(), layout.align())
            }
            HeapOp::Free { slot } => format!("free {slot}\n"),
            HeapOp::Realloc { slot, size } => format!("realloc {slot} {size}\n"),
        };
        out.push_str(&line);
    }
    out
}

/// Converts the log of `valgrind --trace-malloc=yes PROGRAM` into a trace:
/// `malloc`, `calloc`, `realloc`, `free`, `memalign`-style calls and C++
/// `new`/`delete`, with addresses as IDs. Other lines are skipped, and so are
/// frees of addresses the log never allocated (made before tracing began).
pub fn from_valgrind(log: &str) -> String {
    let mut out = String::from("# converted from valgrind --trace-malloc=yes\n");
    let mut live: HashMap<u64, ()> = HashMap::new();
    for line in log.lines() {
        // `--PID-- name(args) = 0xADDR`, or `--PID-- free(0xADDR)`.
        let Some(call) = line
            .strip_prefix("--")
            .and_then(|l| l.split_once("-- "))
            .map(|(_, c)| c.trim())
        else {
            continue;
        };
        let Some((name, rest)) = call.split_once('(') else {
            continue;
        };
        let Some((args, result)) = rest.split_once(')') else {
            continue;
        };
        let args: Vec<&str> = args.split(',').map(|a| a.trim()).collect();
        let result = result.trim().strip_prefix('=').map(str::trim).and_then(hex);
        let number = |s: &str| {
            s.trim_start_matches("al ")
                .trim_start_matches("size ")
                .parse::<u64>()
                .ok()
        };
        match (name, result) {
            ("free" | "cfree" | "_ZdlPv" | "_ZdaPv" | "_ZdlPvm" | "_ZdaPvm", _) => {
                if let Some(addr) = args.first().and_then(|a| hex(a)) {
                    if live.remove(&addr).is_some() {
                        out.push_str(&format!("free {addr}\n"));
                    }
                }
            }
            ("realloc", Some(new)) => {
                let old = args.first().and_then(|a| hex(a)).unwrap_or(0);
                let size = args.get(1).and_then(|s| number(s)).unwrap_or(1);
                if old == 0 || live.remove(&old).is_none() {
                    out.push_str(&format!("allocate {new} {size} 16\n"));
                } else if old == new {
                    out.push_str(&format!("realloc {old} {size}\n"));
                } else {
                    // A moved block keeps its trace ID only if addresses match;
                    // express the move as a new block and a free.
                    out.push_str(&format!("allocate {new} {size} 16\nfree {old}\n"));
                }
                live.insert(new, ());
            }
            (_, Some(addr)) if addr != 0 => {
                let (size, align) = match name {
                    "calloc" => (args.iter().filter_map(|a| number(a)).product::<u64>(), 16),
                    "memalign" | "posix_memalign" | "aligned_alloc" | "valloc" => {
                        let align = args.first().and_then(|a| number(a)).unwrap_or(16);
                        (args.get(1).and_then(|a| number(a)).unwrap_or(1), align)
                    }
                    _ => (args.first().and_then(|a| number(a)).unwrap_or(1), 16),
                };
                if live.insert(addr, ()).is_none() {
                    out.push_str(&format!("allocate {addr} {} {align}\n", size.max(1)));
                }
            }
            _ => {}
        }
    }
    out
}

fn hex(text: &str) -> Option<u64> {
    u64::from_str_radix(text.strip_prefix("0x")?, 16).ok()
}

/// One heap's replay of a trace.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayResult {
    /// Heap name.
    pub allocator: &'static str,
    /// Whether it is one of kalloc's.
    pub ours: bool,
    /// Time per operation.
    pub sample: Sample,
    /// Footprint: the address span of every block the replay placed, from the
    /// lowest start to the highest end (`None` for host heaps, whose blocks
    /// share the address space with everything else).
    pub peak_held_bytes: Option<usize>,
    /// Largest sum of live block sizes.
    pub peak_live_bytes: usize,
    /// Allocations and reallocations that failed.
    pub failures: u64,
}

impl ReplayResult {
    /// `1 - peak live / peak held`: the share of the footprint wasted.
    pub fn fragmentation(&self) -> Option<f64> {
        self.peak_held_bytes
            .map(|held| 1.0 - self.peak_live_bytes as f64 / held.max(1) as f64)
    }
}

/// The arena every heap gets for a replay: four times the trace's peak live
/// bytes, at least the heap workloads' arena.
pub fn replay_arena_bytes(sequence: &OpSequence) -> usize {
    (sequence.peak_live_bytes().saturating_mul(4))
        .max(crate::heap::HEAP_ARENA_BYTES)
        .next_multiple_of(1 << 20)
}

/// Replays `sequence` on heap `H`: one untimed pass for the footprint, then timed passes.
pub fn replay_on<H: HeapBench>(sequence: &OpSequence, config: &Config) -> ReplayResult {
    let arena = replay_arena_bytes(sequence);
    let mut heap = H::new(arena);
    let base = heap.arena_start();
    let mut table: SlotTable = vec![None; sequence.slots];
    let (mut low, mut high) = (usize::MAX, 0usize);
    play(&mut heap, &sequence.ops, &mut table, |_, block, size| {
        low = low.min(block.as_ptr() as usize);
        high = high.max(block.as_ptr() as usize + size);
    });
    free_all(&mut heap, &mut table);
    let (sample, failures) = replay_timed(&mut heap, sequence, config);
    ReplayResult {
        allocator: H::NAME,
        ours: H::OURS,
        sample,
        peak_held_bytes: base.map(|_| high.saturating_sub(low)),
        peak_live_bytes: sequence.peak_live_bytes(),
        failures,
    }
}

/// Replays a sequence on one heap.
type Replayer = fn(&OpSequence, &Config) -> ReplayResult;

/// Replays `sequence` on every heap, reporting each result to `each`.
pub fn replay_all(sequence: &OpSequence, config: &Config, each: &mut dyn FnMut(ReplayResult)) {
    let runners: &[(&str, Replayer)] = &[
        (TalcPeer::NAME, replay_on::<TalcPeer>),
        (RlsfPeer::NAME, replay_on::<RlsfPeer>),
        (LinkedListPeer::NAME, replay_on::<LinkedListPeer>),
        (BuddySystemHeapPeer::NAME, replay_on::<BuddySystemHeapPeer>),
        (
            <Host<std::alloc::System> as HeapBench>::NAME,
            replay_on::<Host<std::alloc::System>>,
        ),
        (
            <Host<mimalloc::MiMalloc> as HeapBench>::NAME,
            replay_on::<Host<mimalloc::MiMalloc>>,
        ),
        (KallocHeap::NAME, replay_on::<KallocHeap>),
        (KallocPerCpuHeap::NAME, replay_on::<KallocPerCpuHeap>),
        (KallocBuddyHeap::NAME, replay_on::<KallocBuddyHeap>),
    ];
    for (name, runner) in runners {
        if config.wants_allocator(name) {
            each(runner(sequence, config));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_round_trips_through_text() {
        let sequence = OpSequence::random_actions(5, 500, 20);
        assert_eq!(parse(&write(&sequence)).unwrap(), sequence);
    }

    #[test]
    fn bad_trace_lines_are_reported_with_their_line() {
        assert_eq!(parse("allocate 1 8 8\nfree 2\n").unwrap_err().line, 2);
        assert_eq!(
            parse("# only a comment\nallocate 1 8 3\n")
                .unwrap_err()
                .line,
            2
        );
        assert_eq!(parse("allocate 1 8 8\nallocate 1 8 8").unwrap_err().line, 2);
        assert_eq!(parse("jump 1").unwrap_err().line, 1);
    }

    #[test]
    fn valgrind_log_converts_to_a_trace() {
        let log = "==1== Memcheck\n\
                   --1-- malloc(32) = 0x4A4B040\n\
                   --1-- calloc(4,8) = 0x4A4B0A0\n\
                   --1-- realloc(0x4A4B040,64) = 0x4A4B040\n\
                   --1-- realloc(0x4A4B0A0,4096) = 0x4A4C000\n\
                   --1-- free(0x4A4B040)\n\
                   --1-- free(0x1234)\n\
                   --1-- memalign(al 64, size 100) = 0x4A4D000\n";
        let sequence = parse(&from_valgrind(log)).unwrap();
        let kinds: Vec<&str> = sequence
            .ops
            .iter()
            .map(|op| match op {
                HeapOp::Alloc { .. } => "a",
                HeapOp::Free { .. } => "f",
                HeapOp::Realloc { .. } => "r",
            })
            .collect();
        assert_eq!(kinds, ["a", "a", "r", "a", "f", "f", "a"]);
        assert!(
            matches!(sequence.ops[6], HeapOp::Alloc { layout, .. } if layout.align() == 64 && layout.size() == 100)
        );
    }
}
