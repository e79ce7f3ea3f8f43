//! Checks any [`FrameAllocator`] the same way: single frames, 2 MiB runs, the
//! memory behind them, a double free and a foreign free.

use kalloc_api::{AllocError, Frame, FrameAllocator, FrameRange, FreeError, SIZE_2MIB, SIZE_4KIB};

use crate::println;

/// Single frames taken at once.
const SINGLE_FRAMES: usize = 64;
/// 2 MiB runs taken at once.
const HUGE_RUNS: usize = 4;
/// Frames in a 2 MiB run.
const FRAMES_PER_2MIB: usize = (SIZE_2MIB / SIZE_4KIB) as usize;

/// What a double free must return. The `fail-self-test` build expects the
/// wrong answer, so the runner can see a failing check fail the boot.
pub fn expected_double_free() -> Result<(), FreeError> {
    if cfg!(feature = "fail-self-test") {
        Ok(())
    } else {
        Err(FreeError::DoubleFree)
    }
}

/// Runs the checks on `frames`, which manages (part of) `window`, and leaves
/// it with as many free frames as it had.
pub fn exercise(name: &str, mut frames: impl FrameAllocator, window: FrameRange) {
    let stack = crate::stack::get();
    let free_before = frames.free_frames();
    let mut singles = [FrameRange::new(Frame::from_number(0), 0); SINGLE_FRAMES];
    for slot in singles.iter_mut() {
        *slot = frames
            .allocate(1, 1)
            .unwrap_or_else(|error| panic!("{name}: single frame: {error:?}"));
    }
    let mut huge = [FrameRange::new(Frame::from_number(0), 0); HUGE_RUNS];
    for slot in huge.iter_mut() {
        *slot = frames
            .allocate(FRAMES_PER_2MIB, FRAMES_PER_2MIB)
            .unwrap_or_else(|error| panic!("{name}: 2 MiB run: {error:?}"));
        assert_eq!(
            slot.count(),
            FRAMES_PER_2MIB as u64,
            "{name}: 2 MiB run size"
        );
        assert_eq!(
            slot.start_address().as_u64() % SIZE_2MIB,
            0,
            "{name}: 2 MiB run alignment"
        );
    }
    assert_eq!(
        frames.free_frames(),
        free_before - SINGLE_FRAMES - HUGE_RUNS * FRAMES_PER_2MIB,
        "{name}: free count after allocating"
    );

    let all = || singles.iter().chain(huge.iter());
    for (i, range) in all().enumerate() {
        assert!(
            window.covers(*range),
            "{name}: {range:?} outside {window:?}"
        );
        assert!(
            !stack.touches_reserved(*range),
            "{name}: {range:?} is reserved memory"
        );
        for (j, other) in all().enumerate() {
            assert!(
                i == j || !range.overlaps(*other),
                "{name}: {range:?} overlaps {other:?}"
            );
        }
    }
    // The memory itself: every frame writable and kept apart from the others.
    for range in all() {
        fill(*range);
    }
    for range in all() {
        verify(name, *range);
    }

    for range in all() {
        frames
            .deallocate(*range)
            .unwrap_or_else(|error| panic!("{name}: free {range:?}: {error:?}"));
    }
    assert_eq!(frames.free_frames(), free_before, "{name}: frames lost");

    let frame = frames
        .allocate(1, 1)
        .unwrap_or_else(|error| panic!("{name}: frame: {error:?}"));
    frames.deallocate(frame).expect("first free");
    assert_eq!(
        frames.deallocate(frame),
        expected_double_free(),
        "{name}: double free"
    );
    assert!(
        frames.deallocate(foreign(window)).is_err(),
        "{name}: free of a frame outside the allocator"
    );
    assert_eq!(
        frames.allocate(0, 1),
        Err(AllocError::ZeroSize),
        "{name}: zero frames"
    );
    assert_eq!(
        frames.free_frames(),
        free_before,
        "{name}: frames lost after bad frees"
    );
    println!(
        "frames    {name}: {SINGLE_FRAMES} frames + {HUGE_RUNS} x 2 MiB runs written, checked and freed; double free refused; {} of {} frames free",
        frames.free_frames(),
        frames.total_frames()
    );
}

/// A frame just past the end of `window`.
fn foreign(window: FrameRange) -> FrameRange {
    FrameRange::new(Frame::from_number(window.end_number()), 1)
}

/// The value stored in word `index` of frame `frame`.
fn pattern(frame: u64, index: usize) -> u64 {
    (frame << 20) ^ index as u64 ^ 0x5a5a_0000_0000_0000
}

/// Words of a frame checked: the first, a middle one and the last.
const PROBED_WORDS: [usize; 3] = [0, 255, 511];

fn word(frame: Frame, index: usize) -> *mut u64 {
    let address = frame.start_address().as_u64() as usize + index * 8;
    core::ptr::with_exposed_provenance_mut(address)
}

fn fill(range: FrameRange) {
    for frame in range.iter() {
        for index in PROBED_WORDS {
            // SAFETY: the frame was just allocated to us and is identity-mapped RAM.
            unsafe { word(frame, index).write_volatile(pattern(frame.number(), index)) };
        }
    }
}

fn verify(name: &str, range: FrameRange) {
    for frame in range.iter() {
        for index in PROBED_WORDS {
            // SAFETY: as in `fill`; still allocated to us.
            let found = unsafe { word(frame, index).read_volatile() };
            assert_eq!(
                found,
                pattern(frame.number(), index),
                "{name}: frame {frame:?} word {index} overwritten"
            );
        }
    }
}
