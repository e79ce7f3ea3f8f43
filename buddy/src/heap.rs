//! `BuddyHeap`: a byte-granular buddy allocator over caller-given memory, with
//! its free lists threaded through the free blocks themselves.
//!
//! # Invariants
//!
//! - A block of order `k` is `2^k` bytes at an address that is a multiple of
//!   `2^k`, so its buddy is at `addr ^ 2^k` and every block is aligned to its
//!   size. The smallest block holds one list link ([`MIN_BLOCK_BYTES`]).
//! - Every free block is on exactly one list, the one for its order; its first
//!   word is the link to the next block on that list. Bit `k` of `nonempty` is
//!   set iff list `k` is non-empty.
//! - Every pointer kept is derived from a pointer passed to
//!   [`add_region`](BuddyHeap::add_region), so blocks keep that region's
//!   provenance; merged blocks keep the lower block's pointer.
//!
//! Whether a buddy is free is found by scanning its order's list, as
//! `buddy_system_allocator::Heap` does: the heap keeps no out-of-band state at
//! all, at the price of a list walk per merge step on free.

use core::alloc::Layout;
use core::mem::size_of;
use core::ptr::NonNull;

use kalloc_api::{AllocError, FreeError, Stats};

/// The smallest block: room for one free-list link.
pub const MIN_BLOCK_BYTES: usize = size_of::<usize>();

/// `log2(MIN_BLOCK_BYTES)`.
const MIN_ORDER: usize = MIN_BLOCK_BYTES.trailing_zeros() as usize;

/// A free-list link, stored in the first word of a free block.
type Link = Option<NonNull<u8>>;

/// A buddy heap with blocks of `2^MIN_ORDER` up to `2^(ORDERS - 1)` bytes
/// (`ORDERS = 32` allows blocks up to 2 GiB).
///
/// It manages memory given with [`add_region`](Self::add_region), any number
/// of times; every allocation is rounded up to a power of two of at least its
/// alignment, so alignments up to the block size come for free. Share it with
/// [`LockedBuddyHeap`](crate::LockedBuddyHeap).
///
/// ```
/// use core::alloc::Layout;
/// use kalloc_buddy::BuddyHeap;
///
/// #[repr(align(4096))]
/// struct Arena([u8; 4096]);
/// let mut arena = Arena([0; 4096]);
///
/// let mut heap = BuddyHeap::<32>::new();
/// // SAFETY: the arena outlives the heap and is used through it only.
/// let added = unsafe { heap.add_region(arena.0.as_mut_ptr(), 4096) };
/// assert_eq!(added, 4096);
///
/// let layout = Layout::from_size_align(100, 16).unwrap();
/// let block = heap.allocate(layout)?;
/// assert_eq!(block.as_ptr() as usize % 16, 0);
/// assert_eq!(heap.free_bytes(), 4096 - 128);
/// // SAFETY: `block` came from this heap with this layout.
/// unsafe { heap.deallocate(block, layout) }.unwrap();
/// assert_eq!(heap.free_bytes(), 4096);
/// # Ok::<(), kalloc_api::AllocError>(())
/// ```
#[derive(Debug)]
pub struct BuddyHeap<const ORDERS: usize> {
    free_lists: [Link; ORDERS],
    nonempty: u64,
    free_bytes: usize,
    total_bytes: usize,
    stats: Stats,
}

// SAFETY: the heap owns the free blocks it links (the caller of `add_region`
// gave them up) and hands out each byte to one owner at a time; nothing in it
// is tied to the thread that created it.
unsafe impl<const ORDERS: usize> Send for BuddyHeap<ORDERS> {}

impl<const ORDERS: usize> Default for BuddyHeap<ORDERS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const ORDERS: usize> BuddyHeap<ORDERS> {
    const VALID_ORDERS: () = assert!(
        ORDERS > MIN_ORDER && ORDERS <= 64,
        "ORDERS must allow at least one block size and fit a u64 mask"
    );

    /// An empty heap; give it memory with [`add_region`](Self::add_region).
    pub const fn new() -> Self {
        let () = Self::VALID_ORDERS;
        Self {
            free_lists: [None; ORDERS],
            nonempty: 0,
            free_bytes: 0,
            total_bytes: 0,
            stats: Stats::ZERO,
        }
    }

    /// Adds the memory `[start, start + len)`, trimmed to whole
    /// [`MIN_BLOCK_BYTES`]-aligned blocks, and returns how many bytes joined the
    /// heap. Blocks merge with free neighbours already in the heap.
    ///
    /// # Safety
    /// The memory is valid for reads and writes for as long as the heap (or
    /// anything allocated from it) is used, is used by nobody else from now on,
    /// and overlaps no region added before.
    pub unsafe fn add_region(&mut self, start: *mut u8, len: usize) -> usize {
        let end = start.addr().saturating_add(len);
        let Some(mut addr) = start.addr().checked_next_multiple_of(MIN_BLOCK_BYTES) else {
            return 0;
        };
        let mut added = 0;
        while end.saturating_sub(addr) >= MIN_BLOCK_BYTES {
            let order = (addr.trailing_zeros() as usize)
                .min((end - addr).ilog2() as usize)
                .min(ORDERS - 1);
            let Some(block) = NonNull::new(start.with_addr(addr)) else {
                // Address zero: skip the first block rather than link a null.
                addr += MIN_BLOCK_BYTES;
                continue;
            };
            // SAFETY: the block lies in the region the caller handed over, is
            // aligned to its size and in no list yet; without the double-free
            // check the release cannot fail.
            let _ = unsafe { self.release(block, order, false) };
            added += 1 << order;
            addr += 1 << order;
        }
        self.total_bytes += added;
        self.stats.bytes_held = self.total_bytes;
        added
    }

    /// Allocates a block fitting `layout`.
    ///
    /// # Errors
    /// [`AllocError::ZeroSize`] for a zero-size layout, [`AllocError::Overflow`]
    /// when the rounded size does not fit a `usize`, [`AllocError::OutOfMemory`]
    /// when no block is large enough, [`AllocError::Uninitialized`] before any
    /// memory was added.
    pub fn allocate(&mut self, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        let order = match Self::order_of(layout) {
            Ok(order) => order,
            Err(error) => return Err(self.failed(error)),
        };
        let usable = self.nonempty & (u64::MAX << order);
        if usable == 0 {
            let error = if self.total_bytes == 0 {
                AllocError::Uninitialized
            } else {
                AllocError::OutOfMemory
            };
            return Err(self.failed(error));
        }
        let found = usable.trailing_zeros() as usize;
        // SAFETY: bit `found` is set, so list `found` is non-empty.
        let block = unsafe { self.pop(found) };
        for lower in (order..found).rev() {
            // SAFETY: the offset stays inside the block of order `found`, and the
            // upper half of a free block of order `lower + 1` is a free block of
            // order `lower`, aligned to its size; `byte_add` keeps the provenance.
            unsafe { self.push(block.byte_add(1 << lower), lower) };
        }
        self.free_bytes -= 1 << order;
        self.stats.record_allocation(layout.size());
        Ok(block)
    }

    /// Frees a block from [`allocate`](Self::allocate), merging it with its
    /// buddy as long as the buddy is free.
    ///
    /// # Errors
    /// [`FreeError::DoubleFree`] when the block is found on its free list (a
    /// best-effort check: a block already merged into a larger free block is not
    /// noticed), [`FreeError::SizeMismatch`] for a layout no allocation can
    /// have. Nothing changes then.
    ///
    /// # Safety
    /// `block` was returned by `allocate` on this heap with this `layout`, and
    /// the caller no longer uses it.
    pub unsafe fn deallocate(
        &mut self,
        block: NonNull<u8>,
        layout: Layout,
    ) -> Result<(), FreeError> {
        let order = Self::order_of(layout).map_err(|_| FreeError::SizeMismatch)?;
        // SAFETY: the caller gives the block back; it is aligned to its size.
        unsafe { self.release(block, order, true) }?;
        self.stats.record_deallocation(layout.size());
        Ok(())
    }

    /// Bytes free in the heap (in blocks of any size).
    pub fn free_bytes(&self) -> usize {
        self.free_bytes
    }

    /// Bytes added with [`add_region`](Self::add_region).
    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Usage counters: `bytes_in_use` counts requested sizes, `bytes_held` the
    /// memory added, so rounding shows as overhead.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Free blocks on each order's list, orders `0..ORDERS` (orders below
    /// `log2(MIN_BLOCK_BYTES)` are always empty).
    pub fn free_blocks_per_order(&self) -> [usize; ORDERS] {
        let mut counts = [0; ORDERS];
        for (order, count) in counts.iter_mut().enumerate() {
            let mut cursor = self.free_lists[order];
            while let Some(node) = cursor {
                *count += 1;
                // SAFETY: `node` is a free block on a list; its first word is its link.
                cursor = unsafe { node.cast::<Link>().read() };
            }
        }
        counts
    }

    /// The order of the block serving `layout`.
    #[inline]
    fn order_of(layout: Layout) -> Result<usize, AllocError> {
        if layout.size() == 0 {
            return Err(AllocError::ZeroSize);
        }
        let size = layout.size().max(layout.align()).max(MIN_BLOCK_BYTES);
        let size = size
            .checked_next_power_of_two()
            .ok_or(AllocError::Overflow)?;
        let order = size.trailing_zeros() as usize;
        if order >= ORDERS {
            return Err(AllocError::OutOfMemory);
        }
        Ok(order)
    }

    #[cold]
    fn failed(&mut self, error: AllocError) -> AllocError {
        self.stats.record_failure();
        error
    }

    /// Frees the block of `order` at `block`, merging with free buddies. With
    /// `check_double`, the first list walk also looks for the block itself and
    /// reports a double free before anything changes.
    ///
    /// # Safety
    /// `block` is `2^order` bytes the heap may use, aligned to its size, and
    /// (unless it is found on its list) on no list.
    unsafe fn release(
        &mut self,
        mut block: NonNull<u8>,
        mut order: usize,
        mut check_double: bool,
    ) -> Result<(), FreeError> {
        let bytes = 1 << order;
        while order + 1 < ORDERS {
            let buddy = block.addr().get() ^ (1 << order);
            let itself = check_double.then_some(block);
            check_double = false;
            // SAFETY: list `order` holds free blocks of that order only.
            let Some(found) = (unsafe { self.take_from_list(order, buddy, itself) })? else {
                break;
            };
            if found < block {
                block = found;
            }
            order += 1;
        }
        // SAFETY: the (merged) block is free, aligned and on no list.
        unsafe { self.push(block, order) };
        self.free_bytes += bytes;
        Ok(())
    }

    /// Unlinks and returns the block at address `addr` from list `order`, if
    /// it is there; meeting `itself` on the way is a double free.
    ///
    /// # Safety
    /// List `order` is well formed.
    unsafe fn take_from_list(
        &mut self,
        order: usize,
        addr: usize,
        itself: Option<NonNull<u8>>,
    ) -> Result<Option<NonNull<u8>>, FreeError> {
        let mut prev: Option<NonNull<u8>> = None;
        let mut cursor = self.free_lists[order];
        while let Some(node) = cursor {
            if Some(node) == itself {
                return Err(FreeError::DoubleFree);
            }
            // SAFETY: `node` is a free block on the list; its first word is its link.
            let next = unsafe { node.cast::<Link>().read() };
            if node.addr().get() == addr {
                match prev {
                    None => self.free_lists[order] = next,
                    // SAFETY: `prev` is a free block on the same list.
                    Some(prev) => unsafe { prev.cast::<Link>().write(next) },
                }
                if self.free_lists[order].is_none() {
                    self.nonempty &= !(1 << order);
                }
                return Ok(Some(node));
            }
            prev = cursor;
            cursor = next;
        }
        Ok(None)
    }

    /// # Safety
    /// `block` is a free block of `order`, aligned to its size, on no list.
    #[inline]
    unsafe fn push(&mut self, block: NonNull<u8>, order: usize) {
        // SAFETY: a free block of at least MIN_BLOCK_BYTES, aligned to them, is
        // ours to write the link into.
        unsafe { block.cast::<Link>().write(self.free_lists[order]) };
        self.free_lists[order] = Some(block);
        self.nonempty |= 1 << order;
    }

    /// # Safety
    /// List `order` is non-empty.
    #[inline]
    unsafe fn pop(&mut self, order: usize) -> NonNull<u8> {
        debug_assert!(self.free_lists[order].is_some());
        // SAFETY: the caller promises the list is non-empty.
        let block = unsafe { self.free_lists[order].unwrap_unchecked() };
        // SAFETY: `block` is a free block on the list; its first word is its link.
        let next = unsafe { block.cast::<Link>().read() };
        self.free_lists[order] = next;
        if next.is_none() {
            self.nonempty &= !(1 << order);
        }
        block
    }
}

#[cfg(test)]
mod tests;
