//! `kalloc-buddy` against the reference model: long random sequences with
//! hostile operations; the allocator's invariant checker runs after every step.

use kalloc_tests::check;
use kalloc_tests::families::{BUDDY_FRAMES, BUDDY_HEAP, LOCKED_BUDDY_HEAP, PER_CPU_BUDDY};

#[test]
fn buddy_frames_match_the_model() {
    let total = check(&BUDDY_FRAMES.plan(200, 1..=1600), BUDDY_FRAMES.run);
    assert!(total.allocations > 10_000, "{total:?}");
    assert!(
        total.out_of_memory > 0,
        "never reached exhaustion: {total:?}"
    );
    assert!(total.hostile_checked > 500, "{total:?}");
}

#[test]
fn per_cpu_buddy_matches_the_model() {
    let total = check(&PER_CPU_BUDDY.plan(200, 1..=1600), PER_CPU_BUDDY.run);
    assert!(total.allocations > 10_000, "{total:?}");
    assert!(total.hostile_checked > 500, "{total:?}");
}

#[test]
fn buddy_heap_matches_the_model_and_keeps_contents() {
    let total = check(&BUDDY_HEAP.plan(100, 1..=1600), BUDDY_HEAP.run);
    assert!(total.allocations > 10_000, "{total:?}");
    assert!(
        total.out_of_memory > 0,
        "never reached exhaustion: {total:?}"
    );
    assert!(total.hostile_checked > 100, "{total:?}");
}

#[test]
fn locked_buddy_heap_reallocates_without_losing_contents() {
    let total = check(
        &LOCKED_BUDDY_HEAP.plan(100, 1..=1600),
        LOCKED_BUDDY_HEAP.run,
    );
    assert!(total.reallocations > 1_000, "{total:?}");
    assert!(
        total.out_of_memory > 0,
        "never reached exhaustion: {total:?}"
    );
}
