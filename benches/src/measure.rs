//! Timing: warm up, then many timed batches, and keep the median per operation.

use std::time::{Duration, Instant};

/// How long to measure one case: warm-up batches are run and discarded, then
/// batches are timed until both `min_batches` and `target` are reached (or
/// `max_batches` is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Batches run before timing starts (caches, page faults, lazy setup).
    pub warmup_batches: usize,
    /// Timed batches at least.
    pub min_batches: usize,
    /// Timed batches at most.
    pub max_batches: usize,
    /// Timed wall time to aim for, per case.
    pub target: Duration,
}

impl Budget {
    /// The default suite: about 0.4 s per case.
    pub const DEFAULT: Self = Self {
        warmup_batches: 1,
        min_batches: 7,
        max_batches: 400,
        target: Duration::from_millis(400),
    };

    /// `--quick`: a few batches per case.
    pub const QUICK: Self = Self {
        warmup_batches: 1,
        min_batches: 3,
        max_batches: 30,
        target: Duration::from_millis(40),
    };

    /// Tests and criterion-free smoke runs: one timed batch.
    pub const SMOKE: Self = Self {
        warmup_batches: 0,
        min_batches: 1,
        max_batches: 1,
        target: Duration::ZERO,
    };
}

/// One timed batch: how long it took and how many operations it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Wall time of the timed part.
    pub elapsed: Duration,
    /// Operations done in that time.
    pub ops: u64,
}

impl Batch {
    /// Times `work`, which returns how many operations it did.
    #[inline]
    pub fn time(work: impl FnOnce() -> u64) -> Self {
        let start = Instant::now();
        let ops = work();
        let elapsed = start.elapsed();
        Self { elapsed, ops }
    }

    /// Nanoseconds per operation in this batch.
    pub fn ns_per_op(&self) -> f64 {
        self.elapsed.as_nanos() as f64 / self.ops.max(1) as f64
    }
}

/// The timing of one case: the median over batches of nanoseconds per operation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Median nanoseconds per operation.
    pub median_ns: f64,
    /// Fastest batch, nanoseconds per operation.
    pub min_ns: f64,
    /// Slowest batch, nanoseconds per operation.
    pub max_ns: f64,
    /// Timed batches.
    pub batches: usize,
    /// Operations in all timed batches.
    pub ops: u64,
}

impl Sample {
    /// Operations per second at the median.
    pub fn ops_per_sec(&self) -> f64 {
        if self.median_ns > 0.0 {
            1e9 / self.median_ns
        } else {
            f64::INFINITY
        }
    }

    /// The sample of already timed batches (at least one).
    pub fn from_batches(batches: &[Batch]) -> Self {
        let mut per_op: Vec<f64> = batches.iter().map(Batch::ns_per_op).collect();
        let median_ns = median(&mut per_op);
        let n = per_op.len();
        Self {
            median_ns,
            min_ns: per_op.first().copied().unwrap_or(f64::NAN),
            max_ns: per_op.last().copied().unwrap_or(f64::NAN),
            batches: n,
            ops: batches.iter().map(|b| b.ops).sum(),
        }
    }
}

/// The median of `values` (the mean of the middle two for an even count,
/// NaN for none); sorts them.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Past this many times the target, a case stops even below `min_batches`.
const MIN_BATCHES_CAP: u32 = 4;

/// Runs `batch` under `budget` and summarises the timed batches.
///
/// Long batches (seconds, such as a pass over 16 GiB of frames on a slow
/// peer) are not repeated for the sake of `min_batches`: timing stops once
/// `MIN_BATCHES_CAP` times the target is spent, and a warm-up batch that alone
/// took longer than the target is kept as the only timed batch.
pub fn measure(budget: &Budget, mut batch: impl FnMut() -> Batch) -> Sample {
    measure_in_turns(budget, &mut [()], |_| batch())
        .pop()
        .expect("one sample per case")
}

/// Times several cases of one workload batch by batch in turns, each under
/// `budget` as [`measure`] times one, and summarises each case's batches.
///
/// Taking turns puts every case through the same moments of a noisy
/// machine: measured one after the other, a case that ran while a neighbour
/// was busy looks slower than it is, and ratios between cases move with it.
/// The first case of each round moves on by one, so no case always runs
/// right after the same other.
pub fn measure_in_turns<C>(
    budget: &Budget,
    cases: &mut [C],
    mut batch: impl FnMut(&mut C) -> Batch,
) -> Vec<Sample> {
    let mut progress: Vec<Progress> = cases.iter().map(|_| Progress::default()).collect();
    for _ in 0..budget.warmup_batches {
        for (case, progress) in cases.iter_mut().zip(&mut progress) {
            if !progress.done {
                progress.warm_up(batch(case), budget);
            }
        }
    }
    for round in 0.. {
        if progress.iter().all(|p| p.done) {
            break;
        }
        for turn in 0..cases.len() {
            let index = (round + turn) % cases.len();
            if !progress[index].done {
                let timed = batch(&mut cases[index]);
                progress[index].record(timed, budget);
            }
        }
    }
    progress
        .iter()
        .map(|p| Sample::from_batches(&p.batches))
        .collect()
}

/// The timed batches of one case so far.
#[derive(Default)]
struct Progress {
    batches: Vec<Batch>,
    spent: Duration,
    done: bool,
}

impl Progress {
    /// Discards a warm-up batch, unless it alone overran the target: then
    /// it is the case's only timed batch.
    fn warm_up(&mut self, warm: Batch, budget: &Budget) {
        if warm.elapsed > budget.target && budget.target > Duration::ZERO {
            self.batches = vec![warm];
            self.done = true;
        }
    }

    fn record(&mut self, batch: Batch, budget: &Budget) {
        self.spent += batch.elapsed;
        self.batches.push(batch);
        let enough = self.spent >= budget.target && self.batches.len() >= budget.min_batches;
        self.done = enough
            || self.batches.len() >= budget.max_batches.max(1)
            || self.spent >= budget.target * MIN_BATCHES_CAP;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(nanos: u64, ops: u64) -> Batch {
        Batch {
            elapsed: Duration::from_nanos(nanos),
            ops,
        }
    }

    #[test]
    fn median_is_taken_per_operation() {
        let s = Sample::from_batches(&[batch(100, 10), batch(300, 10), batch(200, 10)]);
        assert_eq!(s.median_ns, 20.0);
        assert_eq!(s.min_ns, 10.0);
        assert_eq!(s.max_ns, 30.0);
        assert_eq!(s.ops, 30);
    }

    #[test]
    fn smoke_budget_runs_exactly_one_batch() {
        let mut runs = 0;
        let s = measure(&Budget::SMOKE, || {
            runs += 1;
            batch(1, 1)
        });
        assert_eq!((runs, s.batches), (1, 1));
    }

    #[test]
    fn cases_take_turns_and_each_stops_on_its_own_budget() {
        let budget = Budget {
            warmup_batches: 1,
            min_batches: 3,
            max_batches: 100,
            target: Duration::from_nanos(1_000),
        };
        let mut order = String::new();
        let samples = measure_in_turns(&budget, &mut [('s', 600), ('f', 100)], |(name, nanos)| {
            order.push(*name);
            batch(*nanos, 1)
        });
        // The slow case meets its target in its minimum of three batches,
        // the fast one needs ten; rounds start with each case in turn.
        assert_eq!(order, concat!("sf", "sf", "fs", "sf", "fffffff"));
        assert_eq!((samples[0].batches, samples[1].batches), (3, 10));
        assert_eq!(samples[0].median_ns, 600.0);
    }
}
