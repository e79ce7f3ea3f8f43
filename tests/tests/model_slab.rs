//! `kalloc-slab` against the reference model: objects written and checked,
//! double, foreign and misaligned frees refused, and every page back in the
//! page source at the end.

use kalloc_tests::check;
use kalloc_tests::families::{PER_CPU_SLAB, PINNED_SLAB, SLAB_CACHE};

#[test]
fn slab_cache_matches_the_model_and_returns_every_page() {
    let total = check(&SLAB_CACHE.plan(150, 1..=1600), SLAB_CACHE.run);
    assert!(total.allocations > 10_000, "{total:?}");
    assert!(
        total.out_of_memory > 0,
        "never reached exhaustion: {total:?}"
    );
    assert!(total.hostile_checked > 500, "{total:?}");
}

#[test]
fn per_cpu_slab_matches_the_model_across_cpus() {
    let total = check(&PER_CPU_SLAB.plan(150, 1..=1600), PER_CPU_SLAB.run);
    assert!(total.allocations > 10_000, "{total:?}");
    assert!(
        total.out_of_memory > 0,
        "never reached exhaustion: {total:?}"
    );
    assert!(total.hostile_checked > 500, "{total:?}");
}

#[test]
fn pinned_slab_matches_the_model_across_cpus() {
    let total = check(&PINNED_SLAB.plan(150, 1..=1600), PINNED_SLAB.run);
    assert!(total.allocations > 10_000, "{total:?}");
    assert!(
        total.out_of_memory > 0,
        "never reached exhaustion: {total:?}"
    );
    assert!(total.hostile_checked > 500, "{total:?}");
}
