//! `kalloc-heap`'s pinned per-CPU front through its own API: one thread
//! plays every CPU in turn with a [`PinnedCpu`] token per call, as a kernel
//! does with preemption off, over the checking [`HostPages`] source.

use kalloc_api::{AllocError, FreeError, PinnedCpu};
use kalloc_heap::PinnedPerCpuHeap;

use super::heap::{CPUS, SOURCE_ALIGN_PAGES, SOURCE_PAGES, check_all_back, check_pages, layout};
use crate::adapter::{Expect, ModelAllocator, Rules};
use crate::driver::{Divergence, Summary, run};
use crate::host::HostPages;
use crate::model::{Block, Model, Span};
use crate::op::Op;

/// The heap and the CPU the next call runs on: every allocation moves on
/// to the next of `CPUS + 1` indices (the last has no slot and goes
/// through the depots), and frees and reallocations run on the CPU of the
/// latest allocation, so small blocks go back on other CPUs than they came
/// from.
struct PinnedHeapAdapter<'p> {
    heap: PinnedPerCpuHeap<&'p HostPages, CPUS>,
    pages: &'p HostPages,
    cpu: usize,
}

impl PinnedHeapAdapter<'_> {
    fn token(&self) -> PinnedCpu {
        // SAFETY: one thread makes every token and uses each for one call,
        // so no two contexts ever share a slot.
        unsafe { PinnedCpu::new(self.cpu) }
    }
}

impl ModelAllocator for PinnedHeapAdapter<'_> {
    fn rules(&self) -> Rules {
        Rules {
            // A zero size is served as one byte.
            zero_size: Expect::Succeed,
            ..Rules::UNCHECKED_HEAP
        }
    }

    fn owned(&self) -> Vec<Span> {
        self.pages.held_spans()
    }

    fn allocate(&mut self, size: u64, align: u64) -> Result<Block, AllocError> {
        self.cpu = (self.cpu + 1) % (CPUS + 1);
        let ptr = self.heap.allocate(&self.token(), layout(size, align)?)?;
        Ok(Block::host(ptr, size))
    }

    fn free(&mut self, block: &Block, size: u64, align: u64) -> Result<(), FreeError> {
        let layout = layout(size, align).map_err(|_| FreeError::SizeMismatch)?;
        let ptr = block.ptr.ok_or(FreeError::NotOwned)?;
        // SAFETY: the rules skip every hostile free, so `ptr` is a live
        // block of this heap allocated (or last resized) with `layout`.
        unsafe { self.heap.deallocate(&self.token(), ptr, layout) }
    }

    fn realloc(
        &mut self,
        block: &Block,
        size: u64,
        align: u64,
        new_size: u64,
    ) -> Result<Block, AllocError> {
        let old = layout(size, align)?;
        let new_size = usize::try_from(new_size).map_err(|_| AllocError::Overflow)?;
        let ptr = block.ptr.ok_or(AllocError::OutOfMemory)?;
        // SAFETY: `ptr` is a live block of this heap allocated with `old`.
        let moved = unsafe { self.heap.reallocate(&self.token(), ptr, old, new_size) }?;
        Ok(Block::host(moved, new_size as u64))
    }

    fn shrink(&mut self) {
        // Each CPU's magazines can only be flushed with its own token.
        for index in 0..=CPUS {
            // SAFETY: as in `token`.
            self.heap.shrink(&unsafe { PinnedCpu::new(index) });
        }
    }

    fn charge(&self, _block: &Block, requested: u64, _align: u64) -> u64 {
        requested
    }

    fn used_bytes(&self) -> Option<u64> {
        // Small blocks count as their class's size, and not while they sit
        // in a magazine: no figure to hold to the requested bytes.
        None
    }

    fn check(&self, _model: &Model) -> Result<(), String> {
        check_pages(&self.heap.stats(), self.pages)
    }

    fn finish(&mut self, _model: &Model) -> Result<(), String> {
        check_all_back(&self.heap.stats(), self.pages)
    }
}

/// Runs `ops` on a [`PinnedPerCpuHeap`] through its checked API, one thread
/// playing every CPU in turn; contents are written and verified, and after
/// every block is freed and every CPU has shrunk the heap, every page must
/// be back in the 4 MiB checking page source.
pub fn run_pinned_heap(ops: &[Op]) -> Result<Summary, Divergence> {
    let pages = HostPages::new(SOURCE_PAGES, SOURCE_ALIGN_PAGES);
    let mut adapter = PinnedHeapAdapter {
        heap: PinnedPerCpuHeap::with_pages(&pages).expect("the size classes are valid"),
        pages: &pages,
        cpu: 0,
    };
    run(&mut adapter, ops)
}
