//! What a run is made of: families, workloads, the configuration that picks
//! them, and the results they produce.

use std::fmt;

use crate::measure::{Batch, Budget, Sample, measure, measure_in_turns};
use crate::rng::DEFAULT_SEED;

/// A family of allocators compared with each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// Physical frame allocators (bitmap, buddy).
    Frames,
    /// Fixed-size object caches (slab).
    Objects,
    /// General-purpose heaps over one arena.
    Heaps,
    /// Concurrent fronts of every family at 1, 2, … threads.
    Threads,
}

impl Family {
    /// Every family, in report order.
    pub const ALL: [Self; 4] = [Self::Frames, Self::Objects, Self::Heaps, Self::Threads];

    /// The name used on the command line and in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Frames => "frames",
            Self::Objects => "objects",
            Self::Heaps => "heaps",
            Self::Threads => "threads",
        }
    }

    /// The family called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How big the workloads are: the same shapes at three sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// The default suite.
    Full,
    /// `--quick`: fewer operations per batch, large memories left out.
    Quick,
    /// Unit tests and criterion: tiny memories, a few hundred operations.
    Smoke,
}

impl Scale {
    /// The value for this scale.
    pub const fn pick(self, full: usize, quick: usize, smoke: usize) -> usize {
        match self {
            Self::Full => full,
            Self::Quick => quick,
            Self::Smoke => smoke,
        }
    }
}

/// A workload as `--list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadInfo {
    /// Its family.
    pub family: Family,
    /// Its name, unique within the family (`mix-95/1GiB`).
    pub name: String,
    /// What one operation is and what the workload does.
    pub about: String,
    /// Whether a run without `--workload` includes it.
    pub default: bool,
}

/// What to run and how long to time it.
#[derive(Clone, Debug)]
pub struct Config {
    /// Timing budget per case.
    pub budget: Budget,
    /// Workload sizes.
    pub scale: Scale,
    /// Seed of every operation sequence.
    pub seed: u64,
    /// Thread counts for the `threads` family.
    pub threads: Vec<usize>,
    /// Families to run (empty: all).
    pub families: Vec<Family>,
    /// Substrings of workload names to run (empty: the default workloads).
    pub workloads: Vec<String>,
    /// Substrings of allocator names to run (empty: all).
    pub allocators: Vec<String>,
}

impl Config {
    /// The default suite.
    pub fn full() -> Self {
        Self {
            budget: Budget::DEFAULT,
            scale: Scale::Full,
            seed: DEFAULT_SEED,
            threads: vec![1, 2],
            families: Vec::new(),
            workloads: Vec::new(),
            allocators: Vec::new(),
        }
    }

    /// `--quick`.
    pub fn quick() -> Self {
        Self {
            budget: Budget::QUICK,
            scale: Scale::Quick,
            ..Self::full()
        }
    }

    /// Tiny sizes and one batch, for tests.
    pub fn smoke() -> Self {
        Self {
            budget: Budget::SMOKE,
            scale: Scale::Smoke,
            ..Self::full()
        }
    }

    /// Whether `workload` is selected.
    pub fn wants(&self, workload: &WorkloadInfo) -> bool {
        let family = self.families.is_empty() || self.families.contains(&workload.family);
        let name = if self.workloads.is_empty() {
            workload.default
        } else {
            self.workloads
                .iter()
                .any(|w| workload.name.contains(w.as_str()))
        };
        family && name
    }

    /// Whether the allocator called `name` is selected.
    pub fn wants_allocator(&self, name: &str) -> bool {
        self.allocators.is_empty() || self.allocators.iter().any(|a| name.contains(a.as_str()))
    }
}

/// What a case measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Metric {
    /// Time per operation (lower is better).
    Time(Sample),
    /// A share in percent (higher is better), such as heap efficiency.
    Percent(f64),
}

impl Metric {
    /// The number the tables rank by.
    pub fn value(&self) -> f64 {
        match self {
            Self::Time(sample) => sample.median_ns,
            Self::Percent(p) => *p,
        }
    }

    /// Whether a smaller value is better.
    pub fn lower_is_better(&self) -> bool {
        matches!(self, Self::Time(_))
    }
}

/// One allocator on one workload.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseResult {
    /// The workload's family.
    pub family: Family,
    /// The workload's name.
    pub workload: String,
    /// The allocator's name.
    pub allocator: &'static str,
    /// Whether the allocator is one of kalloc's.
    pub ours: bool,
    /// Threads that ran it (1 outside the `threads` family).
    pub threads: usize,
    /// The measurement.
    pub metric: Metric,
    /// Allocations that failed (a healthy run has none, except where a
    /// workload fills memory on purpose).
    pub failures: u64,
}

/// Progress of a run, as it happens.
#[derive(Debug)]
pub enum Event<'a> {
    /// A case is about to start.
    Start {
        /// Its family.
        family: Family,
        /// Its workload.
        workload: &'a str,
        /// Its allocator.
        allocator: &'static str,
    },
    /// A case finished: the one started last, or one deferred earlier.
    Done(CaseResult),
    /// The started case does not apply to its allocator (efficiency of a host heap).
    Skipped,
    /// The started case is set up and waits to be timed in turns with its
    /// workload's other cases; its `Done` follows once they all are.
    Deferred,
}

/// Receives [`Event`]s.
pub type Sink<'s> = dyn FnMut(Event<'_>) + 's;

/// A case timed batch by batch, so that the cases of one workload can take
/// turns ([`measure_in_turns`]).
pub trait TimedCase {
    /// Runs and times one batch.
    fn batch(&mut self) -> Batch;
    /// Ends the case, giving back what it holds; returns the allocations
    /// that failed.
    fn finish(&mut self) -> u64;
}

/// A case once started.
pub enum Case {
    /// Measured already: a share, or a time taken on its own.
    Measured(Metric, u64),
    /// Ready to be timed in turns with the workload's other cases.
    Timed(Box<dyn TimedCase>),
}

impl Case {
    /// A case its family measured whole.
    pub fn measured((metric, failures): (Metric, u64)) -> Self {
        Self::Measured(metric, failures)
    }

    /// The measurement and failed allocations, timing a timed case alone.
    pub fn measure_alone(self, budget: &Budget) -> (Metric, u64) {
        match self {
            Self::Measured(metric, failures) => (metric, failures),
            Self::Timed(mut case) => {
                let sample = measure(budget, || case.batch());
                (Metric::Time(sample), case.finish())
            }
        }
    }
}

/// An allocator entry of a family: its name, whether it is ours, and the
/// monomorphised function that starts one workload on it (`None` where the
/// workload does not apply).
pub(crate) struct Entry<W> {
    pub name: &'static str,
    pub ours: bool,
    pub start: fn(&Config, &W) -> Option<Case>,
}

/// Runs every selected workload on every selected allocator, workload by
/// workload so that slow drifts of the machine hit all allocators alike;
/// within a workload, the timed cases take turns batch by batch.
pub(crate) fn run_family<W>(
    config: &Config,
    workloads: &[(WorkloadInfo, W)],
    entries: &[Entry<W>],
    threads_of: fn(&W) -> usize,
    sink: &mut Sink<'_>,
) {
    for (info, workload) in workloads.iter().filter(|(info, _)| config.wants(info)) {
        let result = |entry: &Entry<W>, metric, failures| CaseResult {
            family: info.family,
            workload: info.name.clone(),
            allocator: entry.name,
            ours: entry.ours,
            threads: threads_of(workload),
            metric,
            failures,
        };
        let mut timed: Vec<(&Entry<W>, Box<dyn TimedCase>)> = Vec::new();
        for entry in entries.iter().filter(|e| config.wants_allocator(e.name)) {
            sink(Event::Start {
                family: info.family,
                workload: &info.name,
                allocator: entry.name,
            });
            match (entry.start)(config, workload) {
                Some(Case::Timed(case)) => {
                    sink(Event::Deferred);
                    timed.push((entry, case));
                }
                Some(Case::Measured(metric, failures)) => {
                    sink(Event::Done(result(entry, metric, failures)));
                }
                None => sink(Event::Skipped),
            }
        }
        let samples = measure_in_turns(&config.budget, &mut timed, |(_, case)| case.batch());
        for ((entry, mut case), sample) in timed.into_iter().zip(samples) {
            let failures = case.finish();
            sink(Event::Done(result(entry, Metric::Time(sample), failures)));
        }
    }
}
