//! `kalloc-bump` against the reference model: the boot allocator's reservation
//! table and hand-over, and the bump arena's every address, predicted exactly.

use kalloc_tests::check;
use kalloc_tests::families::{BOOT_MEMORY, BUMP_ARENA};

#[test]
fn boot_memory_matches_the_model_and_hands_over_every_frame_once() {
    let total = check(&BOOT_MEMORY.plan(150, 1..=600), BOOT_MEMORY.run);
    assert!(total.allocations > 10_000, "{total:?}");
    assert!(total.reservations > 1_000, "{total:?}");
    assert!(
        total.out_of_memory > 0,
        "never reached exhaustion: {total:?}"
    );
    assert!(total.hostile_checked > 500, "{total:?}");
}

#[test]
fn bump_arena_predicts_every_block_and_keeps_contents() {
    let total = check(&BUMP_ARENA.plan(200, 1..=1600), BUMP_ARENA.run);
    assert!(total.allocations > 10_000, "{total:?}");
    assert!(total.frees > 10_000, "{total:?}");
    assert!(total.reallocations > 1_000, "{total:?}");
    assert!(
        total.out_of_memory > 0,
        "never reached exhaustion: {total:?}"
    );
    assert!(total.hostile_checked > 500, "{total:?}");
}
