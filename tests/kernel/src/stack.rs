//! The allocator stack, brought up once by hart 0 and shared by every hart.
//!
//! Boot memory (the memblock stage) takes the firmware map, reserves the
//! kernel image and the device tree, and lends the frame allocators their
//! metadata. Then RAM is split into three windows, each handed to one frame
//! allocator: the first quarter to the locked bitmap, which feeds the heap and
//! the slab caches with pages; the next eighth to the lock-free bitmap and the
//! rest to the buddy allocator, which the tests draw frames from directly (so
//! their free counts must come back exactly).

use core::mem::{align_of, size_of};

use kalloc_api::sync::AtomicU64;
use kalloc_api::{Frame, FrameRange, Locked, MemoryMap, OffsetPages, PhysAddr};
use kalloc_bitmap_frame::{
    AtomicBitmapFrameAllocator, BitmapFrameAllocator, atomic_storage_words, storage_words,
};
use kalloc_buddy::{BuddyFrameAllocator, FrameMeta, PerCpuBuddy};
use kalloc_bump::{BootMemory, PhysRange};
use spin::Once;

use crate::devicetree;
use crate::entry::{self, MAX_HARTS};
use crate::{println, slab_tests};

/// The kernel's [`CpuId`](kalloc_api::CpuId): the hart id kept in `tp`.
pub type Hart = fn() -> usize;

/// Largest buddy block: 2^10 frames (4 MiB), so 2 MiB runs come from one split.
pub const MAX_ORDER: usize = 10;

/// Frames in 2 MiB: window boundaries are aligned to it so huge runs fit.
const FRAMES_PER_2MIB: u64 = 512;

/// Usable regions the boot allocator can track.
const BOOT_USABLE_SLOTS: usize = 16;
/// Separate reservations the boot allocator can track.
const BOOT_RESERVED_SLOTS: usize = 32;

/// The locked bitmap allocator.
pub type Bitmap = Locked<BitmapFrameAllocator<'static>>;
/// The lock-free bitmap allocator, each hart starting its searches at its own cursor.
pub type AtomicBitmap = AtomicBitmapFrameAllocator<'static, Hart>;
/// The buddy allocator with per-hart caches of single frames.
pub type Buddy = PerCpuBuddy<'static, Hart, MAX_HARTS, MAX_ORDER>;

/// Pages for the heap and the slab caches: locked-bitmap frames, identity-mapped.
pub type Pages = OffsetPages<&'static Bitmap>;

/// Every shared allocator, and the frames each may manage.
pub struct Stack {
    /// The locked bitmap allocator.
    pub bitmap: Bitmap,
    /// Its window.
    pub bitmap_window: FrameRange,
    /// The lock-free bitmap allocator.
    pub atomic: AtomicBitmap,
    /// Its window.
    pub atomic_window: FrameRange,
    /// The buddy allocator behind per-hart caches.
    pub buddy: Buddy,
    /// Its window.
    pub buddy_window: FrameRange,
    /// Task-sized slab objects behind pinned per-hart magazines, on [`Stack::pages`].
    pub objects: slab_tests::SharedTasks,
    /// Frames kept out of every allocator: image, device tree, metadata.
    reserved: [FrameRange; BOOT_RESERVED_SLOTS],
}

impl Stack {
    /// Whether `range` shares a frame with the kernel image, the device tree
    /// or allocator metadata: no allocator may ever hand such a frame out.
    pub fn touches_reserved(&self, range: FrameRange) -> bool {
        self.reserved.iter().any(|run| run.overlaps(range))
    }

    /// The page source over [`Stack::bitmap`].
    pub fn pages(&'static self) -> Pages {
        // SAFETY: the kernel runs in machine mode without translation, so every
        // frame is at its physical address, and the bitmap hands each frame to
        // one owner at a time.
        unsafe { OffsetPages::identity(&self.bitmap) }
    }
}

static STACK: Once<Stack> = Once::new();

/// The stack; panics if hart 0 has not brought it up yet.
pub fn get() -> &'static Stack {
    STACK.get().expect("allocator stack not up yet")
}

/// Brings the stack up from the firmware `map`, keeping `image` and `blob`
/// (the kernel and the device tree) out of every allocator.
pub fn bring_up(
    map: &MemoryMap<'_>,
    image: devicetree::PhysRange,
    blob: devicetree::PhysRange,
) -> &'static Stack {
    let mut usable_slots = [PhysRange::EMPTY; BOOT_USABLE_SLOTS];
    let mut reserved_slots = [PhysRange::EMPTY; BOOT_RESERVED_SLOTS];
    let mut boot = BootMemory::new(map, &mut usable_slots, &mut reserved_slots)
        .unwrap_or_else(|error| panic!("boot memory: {error}"));
    for (what, range) in [("kernel image", image), ("device tree", blob)] {
        boot.reserve(PhysAddr::new(range.start), range.len)
            .unwrap_or_else(|error| panic!("reserve the {what}: {error:?}"));
    }

    let (bitmap_window, atomic_window, buddy_window) = windows(&boot);
    let bitmap_frames = bitmap_window.count() as usize;
    let atomic_frames = atomic_window.count() as usize;
    let buddy_frames = buddy_window.count() as usize;
    let bitmap_words = boot_slice(&mut boot, storage_words(bitmap_frames), || 0u64);
    let atomic_words = boot_slice(&mut boot, atomic_storage_words(atomic_frames), || {
        AtomicU64::new(0)
    });
    let buddy_meta = boot_slice(&mut boot, buddy_frames, FrameMeta::new);

    let mut bitmap = BitmapFrameAllocator::new(bitmap_window.start(), bitmap_frames, bitmap_words)
        .unwrap_or_else(|error| panic!("bitmap: {error}"));
    let atomic =
        AtomicBitmapFrameAllocator::new(atomic_window.start(), atomic_frames, atomic_words)
            .unwrap_or_else(|error| panic!("atomic bitmap: {error}"))
            .with_cpu_id(entry::hart_id as Hart);
    let mut buddy = BuddyFrameAllocator::new(buddy_window.start(), buddy_frames, buddy_meta)
        .unwrap_or_else(|error| panic!("buddy: {error}"));

    // The hand-over: every free frame to the allocator whose window holds it.
    let mut handed = 0;
    for free in boot.free_ranges() {
        if let Some(part) = intersect(free, bitmap_window) {
            handed += bitmap
                .mark_free(part)
                .unwrap_or_else(|e| panic!("bitmap {part:?}: {e}"));
        }
        if let Some(part) = intersect(free, atomic_window) {
            handed += atomic
                .mark_free(part)
                .unwrap_or_else(|e| panic!("atomic {part:?}: {e}"));
        }
        if let Some(part) = intersect(free, buddy_window) {
            buddy
                .add_range(part)
                .unwrap_or_else(|e| panic!("buddy {part:?}: {e}"));
            handed += part.count() as usize;
        }
    }
    let reserved: u64 = boot.reserved_frames().map(|run| run.count()).sum();
    let usable = boot.usable_bytes() / kalloc_api::FRAME_SIZE;
    assert_eq!(
        handed as u64 + reserved,
        usable,
        "hand-over: free and reserved frames cover usable memory exactly once"
    );
    println!(
        "boot mem  {handed} frames handed over, {reserved} kept reserved (image, device tree, metadata)"
    );
    for run in boot.reserved_frames() {
        for frame in [run.start(), Frame::from_number(run.end_number() - 1)] {
            assert_ne!(
                bitmap.is_free(frame),
                Some(true),
                "reserved {frame:?} free in the bitmap"
            );
            assert_ne!(
                atomic.is_free(frame),
                Some(true),
                "reserved {frame:?} free in the atomic bitmap"
            );
        }
    }
    bitmap
        .check_invariants()
        .unwrap_or_else(|error| panic!("bitmap: {error}"));
    buddy
        .check_invariants()
        .unwrap_or_else(|error| panic!("buddy: {error}"));

    let mut reserved = [FrameRange::new(Frame::from_number(0), 0); BOOT_RESERVED_SLOTS];
    for (slot, run) in reserved.iter_mut().zip(boot.reserved_frames()) {
        *slot = run;
    }
    STACK.call_once(|| Stack {
        bitmap: Locked::new(bitmap),
        bitmap_window,
        atomic,
        atomic_window,
        buddy: PerCpuBuddy::new(buddy, entry::hart_id as Hart),
        buddy_window,
        objects: slab_tests::shared_task_cache(),
        reserved,
    })
}

/// Splits the span of usable RAM into the three allocators' windows: a
/// quarter, an eighth and the rest, on 2 MiB boundaries.
fn windows(boot: &BootMemory<'_>) -> (FrameRange, FrameRange, FrameRange) {
    let first = boot.usable_ranges().next().expect("no usable memory");
    let last = boot.usable_ranges().last().expect("no usable memory");
    let low = first.start().as_u64() / kalloc_api::FRAME_SIZE;
    let high = last.end().as_u64() / kalloc_api::FRAME_SIZE;
    let eighth = ((high - low) / 8).next_multiple_of(FRAMES_PER_2MIB);
    let first_cut = (low + 2 * eighth).next_multiple_of(FRAMES_PER_2MIB);
    let second_cut = first_cut + eighth;
    assert!(second_cut < high, "too little RAM for three windows");
    (
        FrameRange::new(Frame::from_number(low), first_cut - low),
        FrameRange::new(Frame::from_number(first_cut), eighth),
        FrameRange::new(Frame::from_number(second_cut), high - second_cut),
    )
}

/// The frames `a` and `b` share, if any.
fn intersect(a: FrameRange, b: FrameRange) -> Option<FrameRange> {
    let start = a.start().number().max(b.start().number());
    let end = a.end_number().min(b.end_number());
    (start < end).then(|| FrameRange::new(Frame::from_number(start), end - start))
}

/// `count` values made by `init`, in memory taken from `boot` for the life of
/// the kernel (allocator metadata).
fn boot_slice<T>(
    boot: &mut BootMemory<'_>,
    count: usize,
    init: impl Fn() -> T,
) -> &'static mut [T] {
    let bytes = size_of::<T>()
        .checked_mul(count)
        .expect("metadata size overflows");
    let start = boot
        .allocate(bytes as u64, align_of::<T>() as u64)
        .unwrap_or_else(|error| panic!("{bytes} bytes of metadata: {error:?}"));
    let slots: *mut T = core::ptr::with_exposed_provenance_mut(start.as_u64() as usize);
    for index in 0..count {
        // SAFETY: boot memory reserved these bytes for us alone (it never hands
        // them to a frame allocator), they are identity-mapped RAM, and the
        // address is aligned for `T`.
        unsafe { slots.add(index).write(init()) };
    }
    // SAFETY: every element was initialised above; the memory stays reserved
    // and reachable only through this slice for the life of the kernel.
    unsafe { core::slice::from_raw_parts_mut(slots, count) }
}
