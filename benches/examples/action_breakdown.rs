//! Where a heap's time goes in random actions: the mean time of each kind of
//! operation (allocate, free, reallocate) by size band, timed one call at a
//! time.
//!
//! Plays the random-actions sequence of the heaps family (default seed, up
//! to 10,000 live blocks, sizes from 8 bytes to 64 KiB) on `kalloc-heap`,
//! `kalloc-heap-pinned`, rlsf and talc, in turns of 100,000 operations (a
//! batch of the suite) so that a slow spell of the machine falls on every
//! heap alike, and times every call after the first tenth (the fill from
//! empty). It plays the sequence five times on fresh heaps (`--rounds N`
//! for another count) and prints, per heap, the median over the rounds of
//! the mean nanoseconds per operation and per call of each kind and band.
//! The bands are small (up to 512 B), mid (up to 8 KiB) and large; `r-sm`
//! is a reallocation from a small to a mid size.
//!
//! With `--mid-size` the sequence holds only allocations and frees of
//! 513 B to 64 KiB, up to 1,000 live blocks: the heaps' mid-size paths
//! alone, with no small blocks between and no copies.
//!
//! ```sh
//! cargo run --release -p kalloc-benches --example action_breakdown
//! cargo run --release -p kalloc-benches --example action_breakdown -- --mid-size
//! cargo run --release -p kalloc-benches --example action_breakdown -- 3000000
//! ```
//!
//! The timer's own cost (a few nanoseconds per call) is in every figure, so
//! compare heaps with each other rather than read the figures as absolute.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::time::Instant;

use kalloc_benches::heap::{
    HEAP_ARENA_BYTES, HeapBench, KallocHeap, KallocPinnedHeap, MAX_LIVE_BLOCKS, RlsfPeer, TalcPeer,
    alloc_call, free_call, realloc_call,
};
use kalloc_benches::measure::median;
use kalloc_benches::rng::DEFAULT_SEED;
use kalloc_benches::sequence::{HeapOp, OpSequence};

const BANDS: [&str; 3] = ["s", "m", "l"];
/// Kinds of call: allocations and frees by band, then reallocations by old
/// band and new band.
const KINDS: usize = 15;
/// Operations each heap plays before the next takes its turn: a batch of
/// the suite's random actions.
const TURN_OPS: usize = 100_000;
/// A call taking longer than this many ticks (tens of microseconds, far
/// above the dearest reallocation) had the thread preempted or interrupted,
/// and is left out: one such call would outweigh thousands of others.
const PREEMPTED_TICKS: u64 = 200_000;
/// Live blocks at most in the mid-size sequence: about half the arena.
const MID_SIZE_MAX_LIVE: usize = 1_000;

fn band(size: usize) -> usize {
    match size {
        0..=512 => 0,
        513..=8192 => 1,
        _ => 2,
    }
}

fn kind_name(kind: usize) -> String {
    match kind {
        0..3 => format!("a-{}", BANDS[kind]),
        3..6 => format!("f-{}", BANDS[kind - 3]),
        _ => format!("r-{}{}", BANDS[(kind - 6) / 3], BANDS[(kind - 6) % 3]),
    }
}

/// Ticks of a cheap cycle counter, where there is one.
#[inline(always)]
fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `rdtsc` only reads the time-stamp counter.
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        use std::sync::OnceLock;
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

/// Ticks and calls per kind, summed over the timed turns, and the calls
/// left out because the thread was preempted during them.
#[derive(Default)]
struct Tally {
    ticks: [u64; KINDS],
    calls: [u64; KINDS],
    left_out: u64,
}

/// A heap playing its turns of the sequence.
trait Player {
    fn name(&self) -> &'static str;
    fn play(&mut self, ops: &[HeapOp], timed: bool);
    fn tally(&self) -> &Tally;
}

struct Timed<H> {
    heap: H,
    table: Vec<Option<(NonNull<u8>, Layout)>>,
    tally: Tally,
}

impl<H: HeapBench + 'static> Timed<H> {
    fn boxed(slots: usize) -> Box<dyn Player> {
        Box::new(Self {
            heap: H::new(HEAP_ARENA_BYTES),
            table: vec![None; slots],
            tally: Tally::default(),
        })
    }
}

impl<H: HeapBench> Player for Timed<H> {
    fn name(&self) -> &'static str {
        H::NAME
    }

    fn play(&mut self, ops: &[HeapOp], timed: bool) {
        let Self { heap, table, tally } = self;
        for op in ops {
            let before = ticks();
            let kind = match *op {
                HeapOp::Alloc { slot, layout } => {
                    let block = alloc_call(heap, layout).expect("the arena holds the sequence");
                    // SAFETY: the block is live and at least one byte long.
                    unsafe { block.as_ptr().write(slot as u8) };
                    table[slot as usize] = Some((block, layout));
                    band(layout.size())
                }
                HeapOp::Free { slot } => {
                    let (block, layout) = table[slot as usize].take().expect("a live slot");
                    // SAFETY: the table holds live blocks with their layouts.
                    unsafe { free_call(heap, block, layout) };
                    3 + band(layout.size())
                }
                HeapOp::Realloc { slot, size } => {
                    let (block, layout) = table[slot as usize].expect("a live slot");
                    // SAFETY: as above; sizes in sequences are non-zero.
                    let moved =
                        unsafe { realloc_call(heap, block, layout, size) }.expect("room to move");
                    let new_layout = Layout::from_size_align(size, layout.align()).expect("layout");
                    table[slot as usize] = Some((moved, new_layout));
                    6 + band(layout.size()) * 3 + band(size)
                }
            };
            let spent = ticks() - before;
            if timed && spent > PREEMPTED_TICKS {
                tally.left_out += 1;
            } else if timed {
                tally.ticks[kind] += spent;
                tally.calls[kind] += 1;
            }
        }
    }

    fn tally(&self) -> &Tally {
        &self.tally
    }
}

fn main() {
    let mut mid_size = false;
    let mut ops = 1_000_000;
    let mut rounds = 5;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--mid-size" => mid_size = true,
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--rounds takes a count");
            }
            count => {
                ops = count
                    .parse()
                    .expect("--mid-size, --rounds N or a count of operations")
            }
        }
    }
    let sequence = if mid_size {
        OpSequence::mid_size_actions(DEFAULT_SEED, ops, MID_SIZE_MAX_LIVE)
    } else {
        OpSequence::random_actions(DEFAULT_SEED, ops, MAX_LIVE_BLOCKS)
    };
    let rounds: Vec<Vec<Row>> = (0..rounds.max(1)).map(|_| round(&sequence)).collect();
    report(&rounds);
}

/// One heap's figures from one round: its name, ns per operation, ns per
/// call of each kind (`None` where the kind did not occur), and the calls
/// left out as preempted.
struct Row {
    name: &'static str,
    per_op: f64,
    per_kind: [Option<f64>; KINDS],
    left_out: u64,
}

/// Plays `sequence` once on fresh heaps, in turns.
fn round(sequence: &OpSequence) -> Vec<Row> {
    let mut players = [
        Timed::<KallocHeap>::boxed(sequence.slots),
        Timed::<KallocPinnedHeap>::boxed(sequence.slots),
        Timed::<RlsfPeer>::boxed(sequence.slots),
        Timed::<TalcPeer>::boxed(sequence.slots),
    ];
    let warm_up = sequence.ops.len() / 10;
    let (start, start_ticks) = (Instant::now(), ticks());
    for (turn, part) in sequence.ops.chunks(TURN_OPS).enumerate() {
        for player in &mut players {
            player.play(part, turn * TURN_OPS >= warm_up);
        }
    }
    let ticks_per_ns = (ticks() - start_ticks) as f64 / start.elapsed().as_nanos() as f64;
    players
        .iter()
        .map(|player| {
            let tally = player.tally();
            let calls: u64 = tally.calls.iter().sum();
            let total: u64 = tally.ticks.iter().sum();
            Row {
                name: player.name(),
                per_op: total as f64 / ticks_per_ns / calls.max(1) as f64,
                per_kind: core::array::from_fn(|kind| {
                    (tally.calls[kind] > 0)
                        .then(|| tally.ticks[kind] as f64 / ticks_per_ns / tally.calls[kind] as f64)
                }),
                left_out: tally.left_out,
            }
        })
        .collect()
}

/// One row per heap: the median over the rounds of its ns per operation
/// and of its ns per call of every kind that occurred.
fn report(rounds: &[Vec<Row>]) {
    let kinds: Vec<usize> = (0..KINDS)
        .filter(|&kind| rounds[0][0].per_kind[kind].is_some())
        .collect();
    let mut header = format!("{:20} {:>7}", "heap", "per op");
    for &kind in &kinds {
        header += &format!(" {:>6}", kind_name(kind));
    }
    println!(
        "median of {} rounds; mean ns per operation and per call of each kind:",
        rounds.len()
    );
    println!("{header}");
    for heap in 0..rounds[0].len() {
        let cell = |figure: &dyn Fn(&Row) -> f64| {
            median(&mut rounds.iter().map(|r| figure(&r[heap])).collect::<Vec<_>>())
        };
        let mut row = format!("{:20} {:7.1}", rounds[0][heap].name, cell(&|r| r.per_op));
        for &kind in &kinds {
            row += &format!(" {:6.0}", cell(&|r| r.per_kind[kind].unwrap_or(0.0)));
        }
        println!("{row}");
    }
    let left_out: u64 = rounds.iter().flatten().map(|row| row.left_out).sum();
    println!("calls left out as preempted (over {PREEMPTED_TICKS} ticks): {left_out}");
}
