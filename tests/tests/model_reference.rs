//! The harness on itself: a correct reference allocator passes long random
//! sequences, and each bug switched into it is caught.

use kalloc_tests::families::{REFERENCE, run_reference};
use kalloc_tests::reference::Bug;
use kalloc_tests::{check, first_divergence};

#[test]
fn correct_reference_matches_the_model() {
    let total = check(&REFERENCE.plan(300, 1..=1600), REFERENCE.run);
    assert!(total.allocations > 10_000, "{total:?}");
    assert!(total.frees > 10_000, "{total:?}");
    assert!(
        total.out_of_memory > 0,
        "sequences never reached exhaustion: {total:?}"
    );
    assert!(total.hostile_checked > 1_000, "{total:?}");
}

#[test]
fn every_injected_bug_is_caught() {
    for (bug, expected) in [
        (Bug::ShortRun, "bytes in use"),
        (Bug::SilentDoubleFree, "double free"),
        (Bug::LeakOnFree, "bytes in use"),
        (Bug::IgnoresAlignment, "not aligned"),
    ] {
        let plan = REFERENCE.plan(50, 1..=1600);
        let divergence = first_divergence(&plan, |ops| run_reference(ops, bug))
            .unwrap_or_else(|| panic!("{bug:?} was not caught"));
        let text = divergence.to_string();
        assert!(text.contains(expected), "{bug:?}: {text}");
    }
}
