//! The out-of-band record kept for every frame of a [`BuddyFrameAllocator`]'s window.
//!
//! Each frame owns one [`FrameMeta`]: a state tag and two free-list links that
//! name other frames by index into the window. Only the first frame of a block
//! (its *head*) carries meaningful state; the other frames of the block are
//! tagged [`INSIDE`](tag::INSIDE) so that a pointer into the middle of a block
//! can be recognised as such.
//!
//! The fields are atomics so that the allocator can keep a shared `&[FrameMeta]`
//! while a per-CPU front ([`PerCpuBuddy`](crate::PerCpuBuddy)) moves single frames
//! between "allocated" and "cached" with one compare-and-swap outside the lock.
//! Every access is `Relaxed`: the links are only touched under the allocator's
//! lock, and no other data is published through a tag. Relaxed atomic loads
//! and stores compile to plain moves on x86-64 and RISC-V.
//!
//! [`BuddyFrameAllocator`]: crate::BuddyFrameAllocator

use core::mem::MaybeUninit;
use core::sync::atomic::AtomicU32;

use kalloc_api::sync::AtomicU8;

/// "No frame": the end of a free list. Window indices stay below it.
pub(crate) const NIL: u32 = u32::MAX;

/// The most frames one allocator's window may span (indices are `u32`, one value
/// is the list terminator): just under 16 TiB of 4 KiB frames.
pub const MAX_WINDOW_FRAMES: usize = (u32::MAX - 1) as usize;

/// Bytes of metadata storage needed for a window of `frames` frames.
///
/// That is `frames` [`FrameMeta`] entries of 12 bytes each (0.3% of the
/// memory managed), aligned to 4 bytes. Saturates instead of overflowing.
///
/// ```
/// use kalloc_buddy::{metadata_bytes, FrameMeta};
///
/// // One GiB of 4 KiB frames needs 3 MiB of metadata.
/// assert_eq!(metadata_bytes(262_144), 262_144 * core::mem::size_of::<FrameMeta>());
/// assert_eq!(metadata_bytes(262_144), 3 << 20);
/// ```
pub const fn metadata_bytes(frames: usize) -> usize {
    frames.saturating_mul(core::mem::size_of::<FrameMeta>())
}

/// Per-frame state of a [`BuddyFrameAllocator`](crate::BuddyFrameAllocator).
///
/// Callers only provide storage for these (see [`metadata_bytes`]); the content
/// is private. The allocator initialises every entry it is given.
#[repr(C)]
#[derive(Debug)]
pub struct FrameMeta {
    pub(crate) next: AtomicU32,
    pub(crate) prev: AtomicU32,
    pub(crate) tag: AtomicU8,
}

impl FrameMeta {
    /// An unused entry, for initialising storage arrays: `[FrameMeta::EMPTY; N]`.
    // Each use of the constant is a fresh entry, which is what an initialiser wants.
    #[allow(clippy::declare_interior_mutable_const)]
    #[cfg(not(loom))]
    pub const EMPTY: Self = Self::new();

    /// An unused entry.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            next: AtomicU32::new(NIL),
            prev: AtomicU32::new(NIL),
            tag: AtomicU8::new(tag::ABSENT),
        }
    }

    /// An unused entry.
    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            next: AtomicU32::new(NIL),
            prev: AtomicU32::new(NIL),
            tag: AtomicU8::new(tag::ABSENT),
        }
    }
}

impl FrameMeta {
    /// Turns uninitialised storage (memory carved from a boot allocator, say)
    /// into entries ready for [`BuddyFrameAllocator::new`](crate::BuddyFrameAllocator::new).
    ///
    /// ```
    /// use core::mem::MaybeUninit;
    /// use kalloc_buddy::FrameMeta;
    ///
    /// let mut raw = [const { MaybeUninit::<FrameMeta>::uninit() }; 16];
    /// let storage = FrameMeta::init_storage(&mut raw);
    /// assert_eq!(storage.len(), 16);
    /// ```
    pub fn init_storage(storage: &mut [MaybeUninit<Self>]) -> &mut [Self] {
        for slot in storage.iter_mut() {
            slot.write(Self::new());
        }
        // SAFETY: every element was initialised just above, and
        // `MaybeUninit<T>` has the same layout as `T`.
        unsafe { &mut *(core::ptr::from_mut(storage) as *mut [Self]) }
    }
}

impl Default for FrameMeta {
    fn default() -> Self {
        Self::new()
    }
}

/// The state tag of a frame.
///
/// ```text
///   0x00            INSIDE   not the head of a block
///   0x01            ABSENT   in the window but never added
///   0x02            CACHED   an order-0 block parked in a per-CPU cache
///   0x20 | order    FREE     head of a free block, on the list for `order`
///   0x80 | flags | order     head of an allocated piece:
///                   CONT 0x40  the piece continues an allocation begun earlier
///                   MORE 0x20  the allocation continues in the next piece
/// ```
///
/// An allocation of a count that is not a power of two is made of several
/// naturally aligned pieces; CONT and MORE let `deallocate` tell "the start of
/// an allocation of exactly this size" from every other case by comparing
/// bytes, without a separate table of allocation sizes.
pub(crate) mod tag {
    pub(crate) const INSIDE: u8 = 0x00;
    pub(crate) const ABSENT: u8 = 0x01;
    pub(crate) const CACHED: u8 = 0x02;
    pub(crate) const FREE: u8 = 0x20;
    pub(crate) const ALLOC: u8 = 0x80;
    pub(crate) const CONT: u8 = 0x40;
    pub(crate) const MORE: u8 = 0x20;
    pub(crate) const ORDER_MASK: u8 = 0x1f;

    /// The tag of a free block head of `order`.
    #[inline]
    pub(crate) const fn free(order: usize) -> u8 {
        FREE | order as u8
    }

    /// Whether `tag` is the head of a free block.
    #[inline]
    pub(crate) const fn is_free(tag: u8) -> bool {
        tag & 0xe0 == FREE
    }

    /// Whether `tag` is the head of an allocated piece.
    #[inline]
    pub(crate) const fn is_alloc(tag: u8) -> bool {
        tag & ALLOC != 0
    }

    /// The order of a free or allocated head.
    #[inline]
    pub(crate) const fn order(tag: u8) -> usize {
        (tag & ORDER_MASK) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_is_twelve_bytes_aligned_to_four() {
        assert_eq!(core::mem::size_of::<FrameMeta>(), 12);
        assert_eq!(core::mem::align_of::<FrameMeta>(), 4);
        assert_eq!(metadata_bytes(usize::MAX), usize::MAX);
    }

    #[test]
    fn uninitialised_storage_becomes_unused_entries() {
        let mut raw = [const { MaybeUninit::<FrameMeta>::uninit() }; 4];
        let storage = init_storage_for_test(&mut raw);
        assert!(
            storage
                .iter()
                .all(|m| m.tag.load(core::sync::atomic::Ordering::Relaxed) == tag::ABSENT)
        );
    }

    fn init_storage_for_test(raw: &mut [MaybeUninit<FrameMeta>]) -> &mut [FrameMeta] {
        FrameMeta::init_storage(raw)
    }
}
