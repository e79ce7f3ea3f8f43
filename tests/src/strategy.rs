//! Proptest strategies over operation sequences, and [`check`], which runs a
//! seeded, reproducible property test of one adapter against the model.
//!
//! Case counts and lengths are sized for the normal test run (a few seconds
//! per allocator on two cores). `KALLOC_DEEP=n` multiplies the cases by `20n`
//! and the sequence lengths by 4 for long runs; `KALLOC_SEED=n` changes the
//! seed to explore new sequences (the default seed is fixed per test, so the
//! normal run is the same every time).

use std::cell::RefCell;
use std::ops::RangeInclusive;

use proptest::prelude::*;
use proptest::strategy::{Union, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

use crate::driver::{Divergence, Summary};
use crate::op::{Mix, Op, Profile, RawOp};

/// One raw operation drawn with the weights of `mix` (kinds of weight zero never appear).
pub fn raw_op(mix: Mix) -> impl Strategy<Value = RawOp> {
    let h = mix.hostile;
    let options: Vec<(u32, BoxedStrategy<RawOp>)> = vec![
        (
            mix.allocate,
            (any::<u32>(), any::<u8>())
                .prop_map(|(size, align)| RawOp::Allocate { size, align })
                .boxed(),
        ),
        (
            mix.free,
            any::<u16>().prop_map(|pick| RawOp::Free { pick }).boxed(),
        ),
        (
            mix.realloc,
            (any::<u16>(), any::<u32>())
                .prop_map(|(pick, size)| RawOp::Realloc { pick, size })
                .boxed(),
        ),
        (
            h,
            any::<u16>()
                .prop_map(|pick| RawOp::DoubleFree { pick })
                .boxed(),
        ),
        (
            h,
            any::<u16>()
                .prop_map(|pick| RawOp::FreeForeign { pick })
                .boxed(),
        ),
        (
            h,
            (any::<u16>(), any::<u32>())
                .prop_map(|(pick, offset)| RawOp::FreeMisaligned { pick, offset })
                .boxed(),
        ),
        (
            h,
            any::<u8>()
                .prop_map(|pick| RawOp::AllocateHuge { pick })
                .boxed(),
        ),
        (h, Just(RawOp::AllocateZero).boxed()),
        (
            h,
            any::<u8>()
                .prop_map(|pick| RawOp::AllocateBadAlign { pick })
                .boxed(),
        ),
        (
            mix.reserve,
            (any::<u16>(), any::<u32>())
                .prop_map(|(at, size)| RawOp::Reserve { at, size })
                .boxed(),
        ),
        (mix.shrink, Just(RawOp::Shrink).boxed()),
    ];
    Union::new_weighted(options.into_iter().filter(|(w, _)| *w > 0).collect())
}

/// A sequence of `len` raw operations.
pub fn raw_ops(mix: Mix, len: RangeInclusive<usize>) -> impl Strategy<Value = Vec<RawOp>> {
    proptest::collection::vec(raw_op(mix), len)
}

/// A property test of one allocator family.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Names the test in messages and seeds its random generator.
    pub name: &'static str,
    /// Cases in the normal run.
    pub cases: u32,
    /// Operations per case in the normal run (a failing case shrinks down
    /// to the start of the range, so keep it small).
    pub len: RangeInclusive<usize>,
    /// How raw operations become sizes.
    pub profile: Profile,
    /// Which operations, how often.
    pub mix: Mix,
}

/// How much deeper than normal this run goes (`KALLOC_DEEP`, 0 when unset).
pub fn depth() -> u32 {
    std::env::var("KALLOC_DEEP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The seed of `plan`: `KALLOC_SEED` if set, else a hash of its name.
pub fn seed(plan: &Plan) -> u64 {
    if let Some(seed) = std::env::var("KALLOC_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return seed;
    }
    // FNV-1a: stable across Rust versions, unlike `DefaultHasher`.
    plan.name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Runs `plan`: each case's sequence goes to `run_case`, which builds a fresh
/// allocator and runs the driver on it (a [`Family`](crate::Family)'s `run`).
/// Returns what the cases exercised in total.
///
/// # Panics
/// On the first failing case, after proptest has shrunk it, with the seed,
/// the minimal sequence and the divergence.
pub fn check<F>(plan: &Plan, run_case: F) -> Summary
where
    F: Fn(&[Op]) -> Result<Summary, Divergence>,
{
    let deep = depth();
    let (cases, len) = if deep == 0 {
        (plan.cases, plan.len.clone())
    } else {
        (
            plan.cases * 20 * deep,
            *plan.len.start() * 4..=*plan.len.end() * 4,
        )
    };
    let config = Config {
        cases,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        max_shrink_iters: 4096,
        max_shrink_time: 60_000,
        ..Config::default()
    };
    let seed = seed(plan);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let total = RefCell::new(Summary::default());
    let profile = plan.profile;
    let result = runner.run(&raw_ops(plan.mix, len), |raw| {
        let ops = profile.scale_all(&raw);
        let summary = run_case(&ops).map_err(|d| TestCaseError::fail(d.to_string()))?;
        total.borrow_mut().add(&summary);
        Ok(())
    });
    match result {
        Ok(()) => total.into_inner(),
        Err(TestError::Fail(reason, minimal)) => panic!(
            "{}: allocator diverged from the model (seed {seed}, KALLOC_DEEP={deep}).\n\
             {reason}\nshrunk sequence ({} ops): {:?}",
            plan.name,
            minimal.len(),
            profile.scale_all(&minimal)
        ),
        Err(TestError::Abort(reason)) => panic!("{}: proptest aborted: {reason}", plan.name),
    }
}

/// Runs the cases of `plan` (normal depth, no shrinking) and returns the
/// first divergence, if any: how the harness proves it catches known bugs.
pub fn first_divergence<F>(plan: &Plan, run_case: F) -> Option<Divergence>
where
    F: Fn(&[Op]) -> Result<Summary, Divergence>,
{
    let config = Config {
        cases: plan.cases,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        ..Config::default()
    };
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed(plan).to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let strategy = raw_ops(plan.mix, plan.len.clone());
    for _ in 0..plan.cases {
        let raw = strategy
            .new_tree(&mut runner)
            .expect("operation strategies never reject")
            .current();
        if let Err(divergence) = run_case(&plan.profile.scale_all(&raw)) {
            return Some(divergence);
        }
    }
    None
}
