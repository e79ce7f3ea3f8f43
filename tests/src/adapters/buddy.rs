//! `kalloc-buddy`: the buddy frame allocator, its per-CPU front and the buddy heap.

use kalloc_api::sync::{AtomicUsize, Ordering};
use kalloc_api::{AllocError, Frame, FrameAllocator, FrameRange, FreeError};
use kalloc_buddy::{BuddyFrameAllocator, FrameMeta, PerCpuBuddy};

use crate::adapters::FrameAdapter;
use crate::driver::{Divergence, Summary, run};
use crate::model::Span;
use crate::op::Op;
use crate::{Expect, Rules};

/// Largest block order of the allocators under test (blocks up to 4 MiB, as Linux).
pub const MAX_ORDER: usize = 10;
/// Frames in the window.
const WINDOW_FRAMES: usize = 512;
/// First frame of the window: not zero, and not aligned to the largest order,
/// so physical (not window-relative) block alignment is exercised.
const WINDOW_BASE: u64 = 0x1_0100;
/// Ranges added to the window (window-relative, unaligned, with a hole).
const ADDED: [(u64, u64); 2] = [(3, 200), (210, WINDOW_FRAMES as u64)];

fn window(storage: &mut [FrameMeta]) -> (BuddyFrameAllocator<'_, MAX_ORDER>, Vec<Span>) {
    let mut buddy =
        BuddyFrameAllocator::new(Frame::from_number(WINDOW_BASE), WINDOW_FRAMES, storage)
            .expect("window fits its storage");
    let mut owned = Vec::new();
    for (start, end) in ADDED {
        let range = FrameRange::new(Frame::from_number(WINDOW_BASE + start), end - start);
        buddy.add_range(range).expect("range inside the window");
        owned.push((range.start_address().as_u64(), range.end_address().as_u64()));
    }
    (buddy, owned)
}

fn storage() -> Vec<FrameMeta> {
    (0..WINDOW_FRAMES).map(|_| FrameMeta::new()).collect()
}

/// Runs `ops` on a fresh [`BuddyFrameAllocator`] over two unaligned ranges,
/// checking its invariants (no uncoalesced buddies, lists consistent) after
/// every step.
pub fn run_buddy_frames(ops: &[Op]) -> Result<Summary, Divergence> {
    let mut storage = storage();
    let (buddy, owned) = window(&mut storage);
    let mut adapter = FrameAdapter::new(buddy, owned)
        .coalescing(MAX_ORDER as u32)
        .buddy_blocks()
        .with_check(|buddy| buddy.check_invariants().map_err(|e| e.to_string()));
    run(&mut adapter, ops)
}

/// CPUs of the per-CPU front under test.
const CPUS: usize = 3;

/// `FrameAllocator` over a [`PerCpuBuddy`]'s single-frame API.
struct PerCpuFrames<'r, 'a, C: kalloc_api::CpuId> {
    front: &'r PerCpuBuddy<'a, C, CPUS, MAX_ORDER>,
}

impl<C: kalloc_api::CpuId> FrameAllocator for PerCpuFrames<'_, '_, C> {
    fn allocate(&mut self, count: usize, frame_align: usize) -> Result<FrameRange, AllocError> {
        debug_assert_eq!(
            (count, frame_align),
            (1, 1),
            "the profile asks for single frames"
        );
        self.front.allocate_frame().map(|f| FrameRange::new(f, 1))
    }

    fn deallocate(&mut self, range: FrameRange) -> Result<(), FreeError> {
        self.front.deallocate_frame(range.start())
    }

    fn free_frames(&self) -> usize {
        self.front.free_frames()
    }

    fn total_frames(&self) -> usize {
        self.front.total_frames()
    }
}

/// Runs single-frame `ops` on a [`PerCpuBuddy`] whose CPU id moves on at
/// every call, so frames are freed into other CPUs' caches than they came
/// from; a shrink drains every cache and checks the allocator's invariants.
pub fn run_per_cpu_buddy(ops: &[Op]) -> Result<Summary, Divergence> {
    let mut storage = storage();
    let (buddy, owned) = window(&mut storage);
    let next = AtomicUsize::new(0);
    let cpu = || next.fetch_add(1, Ordering::Relaxed) % CPUS;
    let front: PerCpuBuddy<'_, _, CPUS, MAX_ORDER> = PerCpuBuddy::new(buddy, cpu);
    let rules = Rules {
        zero_size: Expect::Skip,
        bad_align: Expect::Skip,
        huge: Expect::Skip,
        ..Rules::FRAME_ALLOCATOR
    };
    let mut adapter = FrameAdapter::new(PerCpuFrames { front: &front }, owned)
        .with_rules(rules)
        .with_shrink(|frames| {
            frames.front.drain();
        })
        .with_check(|frames| {
            if frames.front.cached_frames() == 0 {
                frames
                    .front
                    .with_allocator(|buddy| buddy.check_invariants())
                    .map_err(|e| e.to_string())
            } else {
                Ok(())
            }
        });
    let summary = run(&mut adapter, ops)?;
    drop(adapter);
    let buddy = front.into_inner();
    buddy.check_invariants().map_err(|e| Divergence {
        step: ops.len(),
        op: None,
        message: format!("after draining the per-CPU caches: {e}"),
        recent: Vec::new(),
    })?;
    Ok(summary)
}

/// Orders of the buddy heaps under test (blocks up to 2 GiB).
const HEAP_ORDERS: usize = 32;
/// Bytes of the main region given to the buddy heap.
const HEAP_MAIN_BYTES: usize = 4 << 20;
/// A second, oddly placed region: trimming and mixed block sizes.
const HEAP_ODD_OFFSET: usize = 24;
const HEAP_ODD_BYTES: usize = 300_000;

/// The buddy heap's checked API (`allocate`/`deallocate` returning errors).
struct BuddyHeapAdapter {
    heap: kalloc_buddy::BuddyHeap<HEAP_ORDERS>,
    owned: Vec<Span>,
    total: usize,
}

/// Bytes a buddy heap block for `(size, align)` occupies.
fn buddy_block_bytes(size: u64, align: u64) -> u64 {
    size.max(align)
        .max(kalloc_buddy::MIN_BLOCK_BYTES as u64)
        .next_power_of_two()
}

impl crate::ModelAllocator for BuddyHeapAdapter {
    fn rules(&self) -> Rules {
        Rules {
            reallocs: false,
            zero_size: Expect::Fail(&[AllocError::ZeroSize]),
            // Its double-free check is best effort (a block merged into a
            // larger free block goes unnoticed and would be released twice),
            // so a double free is undefined through this API.
            double_free: Expect::Skip,
            ..Rules::UNCHECKED_HEAP
        }
    }

    fn owned(&self) -> Vec<Span> {
        self.owned.clone()
    }

    fn allocate(&mut self, size: u64, align: u64) -> Result<crate::Block, AllocError> {
        let layout = layout(size, align)?;
        let ptr = self.heap.allocate(layout)?;
        Ok(crate::Block::host(ptr, size))
    }

    fn free(&mut self, block: &crate::Block, size: u64, align: u64) -> Result<(), FreeError> {
        let layout = layout(size, align).map_err(|_| FreeError::SizeMismatch)?;
        let ptr = block.ptr.ok_or(FreeError::NotOwned)?;
        // SAFETY: the rules skip every hostile free, so the driver frees only
        // live blocks of this heap, with the layout they were allocated with.
        unsafe { self.heap.deallocate(ptr, layout) }
    }

    fn charge(&self, _block: &crate::Block, requested: u64, align: u64) -> u64 {
        buddy_block_bytes(requested, align)
    }

    fn used_bytes(&self) -> Option<u64> {
        Some((self.heap.total_bytes() - self.heap.free_bytes()) as u64)
    }

    fn check(&self, model: &crate::Model) -> Result<(), String> {
        let requested: u64 = model.live().map(|l| l.requested).sum();
        let stats = self.heap.stats();
        if stats.bytes_in_use as u64 != requested {
            return Err(format!(
                "stats say {} bytes in use, the live blocks asked for {requested}",
                stats.bytes_in_use
            ));
        }
        if self.heap.total_bytes() != self.total {
            return Err(format!(
                "total bytes changed from {} to {}",
                self.total,
                self.heap.total_bytes()
            ));
        }
        Ok(())
    }

    fn finish(&mut self, _model: &crate::Model) -> Result<(), String> {
        let (free, total) = (self.heap.free_bytes(), self.heap.total_bytes());
        if free != total {
            return Err(format!(
                "{free} of {total} bytes free after every block was freed"
            ));
        }
        Ok(())
    }
}

fn layout(size: u64, align: u64) -> Result<core::alloc::Layout, AllocError> {
    let size = usize::try_from(size).map_err(|_| AllocError::Overflow)?;
    let align = usize::try_from(align).map_err(|_| AllocError::BadAlignment)?;
    core::alloc::Layout::from_size_align(size, align).map_err(|_| AllocError::Overflow)
}

/// Runs `ops` on a [`BuddyHeap`](kalloc_buddy::BuddyHeap) over a 4 MiB host
/// region and an oddly aligned second one, writing and checking every block.
pub fn run_buddy_heap(ops: &[Op]) -> Result<Summary, Divergence> {
    let main = crate::HostArena::new(HEAP_MAIN_BYTES, HEAP_MAIN_BYTES);
    let odd = crate::HostArena::new(HEAP_ODD_OFFSET + HEAP_ODD_BYTES, 4096);
    let mut heap = kalloc_buddy::BuddyHeap::<HEAP_ORDERS>::new();
    let odd_start = odd.at(HEAP_ODD_OFFSET);
    // SAFETY: both arenas outlive the heap (dropped after it, at the end of
    // this function) and are used through the heap only.
    let total = unsafe {
        heap.add_region(main.base().as_ptr(), HEAP_MAIN_BYTES)
            + heap.add_region(odd_start.as_ptr(), HEAP_ODD_BYTES)
    };
    let odd_span = odd.span();
    let owned = vec![
        main.span(),
        (
            odd_span.0 + HEAP_ODD_OFFSET as u64,
            odd_span.0 + (HEAP_ODD_OFFSET + HEAP_ODD_BYTES) as u64,
        ),
    ];
    let mut adapter = BuddyHeapAdapter { heap, owned, total };
    let summary = run(&mut adapter, ops);
    drop(adapter);
    drop((main, odd));
    summary
}

/// Runs `ops` on a [`LockedBuddyHeap`](kalloc_buddy::LockedBuddyHeap) through
/// `GlobalAlloc`, reallocation included.
pub fn run_locked_buddy_heap(ops: &[Op]) -> Result<Summary, Divergence> {
    let main = crate::HostArena::new(HEAP_MAIN_BYTES, HEAP_MAIN_BYTES);
    let heap = kalloc_buddy::LockedBuddyHeap::<HEAP_ORDERS>::new();
    // SAFETY: the arena outlives the heap (dropped after the adapter) and is
    // used through the heap only.
    unsafe { heap.add_region(main.base().as_ptr(), HEAP_MAIN_BYTES) };
    let hooks = crate::HeapHooks {
        used_bytes: Some(Box::new(
            |heap: &kalloc_buddy::LockedBuddyHeap<HEAP_ORDERS>| {
                let heap = heap.lock();
                (heap.total_bytes() - heap.free_bytes()) as u64
            },
        )),
        charge: Box::new(buddy_block_bytes),
        finish: Some(Box::new(
            |heap: &kalloc_buddy::LockedBuddyHeap<HEAP_ORDERS>| {
                let heap = heap.lock();
                if heap.free_bytes() == heap.total_bytes() {
                    Ok(())
                } else {
                    Err(format!(
                        "{} of {} bytes free at the end",
                        heap.free_bytes(),
                        heap.total_bytes()
                    ))
                }
            },
        )),
        ..crate::HeapHooks::fixed(vec![main.span()])
    };
    let mut adapter = crate::GlobalAdapter::new(heap, hooks);
    let summary = run(&mut adapter, ops);
    drop(adapter);
    drop(main);
    summary
}
