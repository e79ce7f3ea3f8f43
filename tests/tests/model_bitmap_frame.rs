//! `kalloc-bitmap-frame` against the reference model: long random sequences
//! with reservations and hostile operations; each allocator's invariant
//! checker runs after every step.

use kalloc_tests::check;
use kalloc_tests::families::{ATOMIC_BITMAP_FRAMES, BITMAP_FRAMES};

#[test]
fn bitmap_frames_match_the_model() {
    let total = check(&BITMAP_FRAMES.plan(200, 1..=1600), BITMAP_FRAMES.run);
    assert!(total.allocations > 10_000, "{total:?}");
    assert!(total.reservations > 500, "{total:?}");
    assert!(
        total.out_of_memory > 0,
        "never reached exhaustion: {total:?}"
    );
    assert!(total.hostile_checked > 500, "{total:?}");
}

#[test]
fn atomic_bitmap_frames_match_the_model_across_cpus() {
    let total = check(
        &ATOMIC_BITMAP_FRAMES.plan(200, 1..=1600),
        ATOMIC_BITMAP_FRAMES.run,
    );
    assert!(total.allocations > 10_000, "{total:?}");
    assert!(total.reservations > 500, "{total:?}");
    assert!(
        total.out_of_memory > 0,
        "never reached exhaustion: {total:?}"
    );
    assert!(total.hostile_checked > 500, "{total:?}");
}
