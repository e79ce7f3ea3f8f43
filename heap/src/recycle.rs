//! Recently freed small blocks of one size class, kept for the next request
//! of that class.
//!
//! A `Heap` is single-owner, so this needs no lock: allocating pops a
//! pointer, freeing pushes one, and the slab cache behind sees only every
//! [`RECYCLE_FLUSH`]-th operation of a class that churns. It is the magazine
//! of the per-CPU front without the CPUs. Blocks are checked against their
//! slab before they are pushed, so only the slab cache's own blocks ever come
//! back out; a block freed twice in a row is caught at the top.

use core::ptr::{self, NonNull};

use kalloc_slab::{Hardening, SlabConfig};

/// Blocks a class keeps for reuse.
pub(crate) const RECYCLE_CAPACITY: usize = 16;

/// Blocks a full stack gives back to the slab cache at once: half, so a
/// class going back and forth at the edge does not flush on every free.
pub(crate) const RECYCLE_FLUSH: usize = RECYCLE_CAPACITY / 2;

/// Whether the slab caches' hardening lets blocks skip them: per-object
/// checks (double-free bitmap, poison, red zones) must see every free.
pub(crate) const RECYCLING: bool = {
    let hardening = SlabConfig::new(8, 8).hardening();
    !(hardening.contains(Hardening::DOUBLE_FREE_BITMAP)
        || hardening.contains(Hardening::POISON)
        || hardening.contains(Hardening::RED_ZONE))
};

/// A stack of freed blocks of one class.
pub(crate) struct RecycleStack {
    len: usize,
    blocks: [*mut u8; RECYCLE_CAPACITY],
}

// SAFETY: the stack holds addresses of free blocks that the owning heap alone
// hands out; moving it between threads moves that ownership with the heap.
unsafe impl Send for RecycleStack {}

impl RecycleStack {
    /// An empty stack.
    pub(crate) const EMPTY: Self = Self {
        len: 0,
        blocks: [ptr::null_mut(); RECYCLE_CAPACITY],
    };

    /// The most recently pushed block.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<NonNull<u8>> {
        let len = self.len.checked_sub(1)?;
        self.len = len;
        NonNull::new(self.blocks[len])
    }

    /// Whether `block` is the one pushed last: freeing it again is a double free.
    #[inline]
    pub(crate) fn is_top(&self, block: NonNull<u8>) -> bool {
        self.len > 0 && self.blocks[self.len - 1] == block.as_ptr()
    }

    /// Pushes `block`, or hands it back when the stack is full.
    #[inline]
    pub(crate) fn push(&mut self, block: NonNull<u8>) -> Result<(), NonNull<u8>> {
        if self.len == RECYCLE_CAPACITY {
            return Err(block);
        }
        self.blocks[self.len] = block.as_ptr();
        self.len += 1;
        Ok(())
    }

    /// Takes the `count` blocks pushed first (the coldest), or all there are.
    pub(crate) fn take_oldest(&mut self, count: usize) -> impl Iterator<Item = NonNull<u8>> {
        let count = count.min(self.len);
        let mut taken = [ptr::null_mut(); RECYCLE_CAPACITY];
        taken[..count].copy_from_slice(&self.blocks[..count]);
        self.blocks.copy_within(count..self.len, 0);
        self.len -= count;
        taken.into_iter().take(count).filter_map(NonNull::new)
    }
}
