//! Each allocator family as the property tests and fuzz targets see it: how
//! its sequences are scaled, which operations they favour, and the function
//! that builds a fresh allocator and runs a sequence on it.

use crate::adapters::FrameAdapter;
use crate::driver::{Divergence, Summary, run};
use crate::op::{Mix, Op, Profile, RawOp};
use crate::reference::{Bug, GridFrames};

/// One allocator family.
#[derive(Clone, Copy, Debug)]
pub struct Family {
    /// Names the family in messages, test seeds and fuzz targets.
    pub name: &'static str,
    /// How raw operations become sizes.
    pub profile: Profile,
    /// Which operations, how often (proptest; the fuzzer picks freely).
    pub mix: Mix,
    /// Builds a fresh allocator, runs the sequence, checks the hand-back.
    pub run: fn(&[Op]) -> Result<Summary, Divergence>,
}

impl Family {
    /// Runs raw operations from a fuzzer.
    ///
    /// # Panics
    /// On a divergence, so libFuzzer records the input as a crash.
    pub fn fuzz(&self, raw: &[RawOp]) {
        if let Err(divergence) = (self.run)(&self.profile.scale_all(raw)) {
            panic!(
                "{}: allocator diverged from the model at {divergence}",
                self.name
            );
        }
    }

    /// A property-test plan of `cases` sequences of `len` operations.
    #[cfg(feature = "proptest")]
    pub fn plan(&self, cases: u32, len: core::ops::RangeInclusive<usize>) -> crate::Plan {
        crate::Plan {
            name: self.name,
            cases,
            len,
            profile: self.profile,
            mix: self.mix,
        }
    }
}

/// Frames the reference allocator manages.
const REFERENCE_FRAMES: usize = 256;

/// The harness's own reference allocator with `bug` switched in.
pub fn run_reference(ops: &[Op], bug: Bug) -> Result<Summary, Divergence> {
    let grid = GridFrames::new(0x100, REFERENCE_FRAMES, bug);
    let span = grid.span();
    run(&mut FrameAdapter::new(grid, vec![span]).exhaustive(), ops)
}

/// The reference frame allocator (correct): the harness testing itself.
pub const REFERENCE: Family = Family {
    name: "reference",
    profile: Profile::FRAMES,
    mix: Mix::CHURN,
    run: |ops| run_reference(ops, Bug::None),
};

/// `kalloc-buddy`'s frame allocator.
pub const BUDDY_FRAMES: Family = Family {
    name: "buddy-frames",
    profile: Profile::FRAMES,
    mix: Mix::CHURN,
    run: crate::adapters::buddy::run_buddy_frames,
};

/// `kalloc-buddy`'s per-CPU front (single frames).
pub const PER_CPU_BUDDY: Family = Family {
    name: "per-cpu-buddy",
    profile: Profile::SINGLE_FRAMES,
    mix: Mix::CHURN,
    run: crate::adapters::buddy::run_per_cpu_buddy,
};

/// `kalloc-buddy`'s byte heap, through its checked API.
pub const BUDDY_HEAP: Family = Family {
    name: "buddy-heap",
    profile: Profile::HEAP,
    mix: Mix::CHURN,
    run: crate::adapters::buddy::run_buddy_heap,
};

/// `kalloc-buddy`'s locked heap, through `GlobalAlloc` (reallocation included).
pub const LOCKED_BUDDY_HEAP: Family = Family {
    name: "locked-buddy-heap",
    profile: Profile::HEAP,
    mix: Mix::CHURN,
    run: crate::adapters::buddy::run_locked_buddy_heap,
};

/// `kalloc-bump`'s boot allocator: allocations and reservations over a
/// memory map, the hand-over checked frame by frame at the end.
pub const BOOT_MEMORY: Family = Family {
    name: "boot-memory",
    profile: Profile::BOOT,
    mix: Mix::BOOT,
    run: crate::adapters::bump::run_boot_memory,
};

/// `kalloc-bump`'s bump arena through `GlobalAlloc` and `try_allocate`, every
/// address predicted.
pub const BUMP_ARENA: Family = Family {
    name: "bump-arena",
    profile: Profile::SMALL,
    mix: Mix::STACK,
    run: crate::adapters::bump::run_bump_arena,
};

/// `kalloc-bitmap-frame`'s bitmap allocator, reservations through `mark_used`.
pub const BITMAP_FRAMES: Family = Family {
    name: "bitmap-frames",
    profile: Profile::FRAMES,
    mix: Mix::CHURN_RESERVING,
    run: crate::adapters::bitmap::run_bitmap_frames,
};

/// `kalloc-bitmap-frame`'s lock-free bitmap, one call at a time through
/// `&self`, the CPU id rotating.
pub const ATOMIC_BITMAP_FRAMES: Family = Family {
    name: "atomic-bitmap-frames",
    profile: Profile::FRAMES,
    mix: Mix::CHURN_RESERVING,
    run: crate::adapters::bitmap::run_atomic_bitmap_frames,
};

/// `kalloc-slab`'s slab cache over a checking page source, with and without
/// per-object hardening; every page must come back at the end.
pub const SLAB_CACHE: Family = Family {
    name: "slab-cache",
    profile: Profile::OBJECTS,
    mix: Mix::CHURN,
    run: crate::adapters::slab::run_slab_cache,
};

/// `kalloc-slab`'s per-CPU magazine front, objects freed on other CPUs.
pub const PER_CPU_SLAB: Family = Family {
    name: "per-cpu-slab",
    profile: Profile::OBJECTS,
    mix: Mix::CHURN,
    run: crate::adapters::slab::run_per_cpu_slab,
};

/// `kalloc-slab`'s pinned (lock-free) per-CPU front, one thread playing every
/// CPU in turn.
pub const PINNED_SLAB: Family = Family {
    name: "pinned-slab",
    profile: Profile::OBJECTS,
    mix: Mix::CHURN,
    run: crate::adapters::slab::run_pinned_slab,
};

/// `kalloc-heap`'s heap through its checked API, over a checking page source.
pub const HEAP: Family = Family {
    name: "heap",
    profile: Profile::HEAP,
    mix: Mix::CHURN,
    run: crate::adapters::heap::run_heap,
};

/// `kalloc-heap`'s heap over one fixed region: slabs, mid-size and large
/// blocks all cut from it.
pub const REGION_HEAP: Family = Family {
    name: "region-heap",
    profile: Profile::HEAP,
    mix: Mix::CHURN,
    run: crate::adapters::heap::run_region_heap,
};

/// `kalloc-heap`'s locked heap through `GlobalAlloc`, reallocation included.
pub const LOCKED_HEAP: Family = Family {
    name: "locked-heap",
    profile: Profile::HEAP,
    mix: Mix::CHURN,
    run: crate::adapters::heap::run_locked_heap,
};

/// `kalloc-heap`'s per-CPU heap through `GlobalAlloc`, small objects freed on
/// other CPUs.
pub const PER_CPU_HEAP: Family = Family {
    name: "per-cpu-heap",
    profile: Profile::HEAP,
    mix: Mix::CHURN,
    run: crate::adapters::heap::run_per_cpu_heap,
};

/// `kalloc-heap`'s pinned (lock-free) per-CPU front through its own API,
/// one thread playing every CPU in turn.
pub const PINNED_HEAP: Family = Family {
    name: "pinned-heap",
    profile: Profile::HEAP,
    mix: Mix::CHURN,
    run: crate::adapters::pinned_heap::run_pinned_heap,
};
