//! `kalloc-heap`'s pinned per-CPU front through its own API: one thread
//! plays every CPU in turn with a [`PinnedCpu`] token per call, as a kernel
//! does with preemption off, over the checking [`HostPages`] source.

use std::alloc::Layout;
use std::ptr::NonNull;

use kalloc_api::{AllocError, FreeError, PinnedCpu};
use kalloc_heap::{HeapStats, PinnedPerCpuHeap};

use super::heap::{CPUS, CheckedHeap, HeapAdapter, SOURCE_ALIGN_PAGES, SOURCE_PAGES, SourceMemory};
use crate::driver::{Divergence, Summary, run};
use crate::host::HostPages;
use crate::op::Op;

/// The heap and the CPU the next call runs on: every allocation moves on
/// to the next of `CPUS + 1` indices (the last has no slot and goes
/// through the depots), and frees and reallocations run on the CPU of the
/// latest allocation, so small blocks go back on other CPUs than they came
/// from.
struct RotatingPinnedHeap<'p> {
    heap: PinnedPerCpuHeap<&'p HostPages, CPUS>,
    cpu: usize,
}

/// A token for CPU `index`.
fn token(index: usize) -> PinnedCpu {
    // SAFETY: one thread makes every token and uses each for one call, so
    // no two contexts ever share a slot.
    unsafe { PinnedCpu::new(index) }
}

impl CheckedHeap for RotatingPinnedHeap<'_> {
    /// Small blocks count as their class's size, and not while they sit in
    /// a magazine.
    const EXACT_USAGE: bool = false;

    fn allocate(&mut self, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        self.cpu = (self.cpu + 1) % (CPUS + 1);
        self.heap.allocate(&token(self.cpu), layout)
    }

    unsafe fn deallocate(&mut self, ptr: NonNull<u8>, layout: Layout) -> Result<(), FreeError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.heap.deallocate(&token(self.cpu), ptr, layout) }
    }

    unsafe fn reallocate(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Result<NonNull<u8>, AllocError> {
        // SAFETY: the caller's promise, passed on.
        unsafe {
            self.heap
                .reallocate(&token(self.cpu), ptr, layout, new_size)
        }
    }

    fn shrink(&mut self) {
        // Each CPU's magazines can only be flushed with its own token.
        for index in 0..=CPUS {
            self.heap.shrink(&token(index));
        }
    }

    fn stats(&self) -> HeapStats {
        self.heap.stats()
    }
}

/// Runs `ops` on a [`PinnedPerCpuHeap`] through its checked API, one thread
/// playing every CPU in turn; contents are written and verified, and after
/// every block is freed and every CPU has shrunk the heap, every page must
/// be back in the 4 MiB checking page source.
pub fn run_pinned_heap(ops: &[Op]) -> Result<Summary, Divergence> {
    let pages = HostPages::new(SOURCE_PAGES, SOURCE_ALIGN_PAGES);
    let heap = PinnedPerCpuHeap::with_pages(&pages).expect("the size classes are valid");
    let mut adapter = HeapAdapter {
        heap: RotatingPinnedHeap { heap, cpu: 0 },
        memory: SourceMemory(&pages),
    };
    run(&mut adapter, ops)
}
