//! One slab: its header, its free list and how both are laid out in its pages.
//!
//! The header sits at the very start of the slab's first page, always
//! in-slab, even for large objects: the order calculation in
//! [`Geometry`] picks a slab large enough that header plus padding stay
//! within the waste bound, so no off-slab header storage (which would have
//! to come from pages too) is needed. The double-free bitmap, when on,
//! follows the header; objects start at `first_offset`.
//!
//! Free objects form a singly linked list threaded through their first
//! word. With [`Hardening::FREELIST_HARDENED`] the stored word is
//! `next ^ secret ^ slot_address`, so a use-after-free write cannot steer the
//! allocator to an address of its choosing without knowing the secret, and
//! every decoded link is checked to be a slot of the same slab before use.

use core::cell::Cell;
use core::ptr::{self, NonNull};

use intrusive_collections::{LinkedListLink, UnsafeRef, intrusive_adapter};
use kalloc_api::FreeError;

use crate::config::{CorruptionHandler, Hardening};
use crate::corruption;
use crate::geometry::Geometry;

/// Byte written over freed objects (beyond their link word) when poisoning is
/// on; Linux's `POISON_FREE`.
pub const POISON_FREE_BYTE: u8 = 0x6b;
/// Byte filling the red zone after every object; Linux's `SLUB_RED_INACTIVE`.
pub const RED_ZONE_BYTE: u8 = 0xbb;
/// Mixed into every slab's tag so a stray address rarely passes for a header.
const SLAB_TAG_MAGIC: usize = 0x51ab_c0de_51ab_c0de_u64 as usize;

/// Which list a slab is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlabState {
    /// Every object is handed out (or in a magazine); on the full list.
    Full,
    /// Some objects are free; on the partial list.
    Partial,
    /// No object is handed out; on the empty list.
    Empty,
    /// Its free list was found corrupted: on no list, never allocated from
    /// again and never given back.
    Quarantined,
}

/// The header at the start of every slab. Every mutable field is a `Cell`, so
/// the header is only ever reached through shared references or raw pointers.
#[repr(C)]
pub(crate) struct SlabHeader {
    /// Links the slab into its cache's full, partial or empty list.
    link: LinkedListLink,
    /// The first free object (null when none is free).
    pub(crate) free: Cell<*mut u8>,
    /// Objects not on the free list.
    pub(crate) in_use: Cell<u32>,
    /// Which list the slab is on.
    pub(crate) state: Cell<SlabState>,
    /// `tag_for(slab start)` of the owning cache, checked on every free.
    tag: usize,
}

intrusive_adapter!(pub(crate) SlabAdapter = UnsafeRef<SlabHeader>: SlabHeader { link => LinkedListLink });

/// The fixed parameters of one cache, shared by the slab layer and the
/// per-CPU front (which checks objects without taking the depot lock).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SlabFormat {
    pub(crate) geometry: Geometry,
    pub(crate) hardening: Hardening,
    secret: usize,
    /// `SLAB_TAG_MAGIC ^ secret ^ stride`: the tag less the slab address.
    tag_base: usize,
    /// `!0` when links are obfuscated, `0` when stored plain.
    key_mask: usize,
    pub(crate) on_corruption: Option<CorruptionHandler>,
}

impl SlabFormat {
    pub(crate) const fn new(
        geometry: Geometry,
        hardening: Hardening,
        secret: usize,
        on_corruption: Option<CorruptionHandler>,
    ) -> Self {
        let key_mask = if hardening.contains(Hardening::FREELIST_HARDENED) {
            !0
        } else {
            0
        };
        Self {
            geometry,
            hardening,
            secret,
            tag_base: SLAB_TAG_MAGIC ^ secret ^ geometry.stride,
            key_mask,
            on_corruption,
        }
    }

    /// What the link stored in the slot at `slot` is XORed with.
    #[inline]
    const fn key(&self, slot: usize) -> usize {
        (self.secret ^ slot) & self.key_mask
    }

    /// The tag a slab of this cache at `start` carries in its header.
    #[inline]
    const fn tag_for(&self, start: usize) -> usize {
        self.tag_base ^ start
    }

    /// Whether any per-object check (bitmap, poison, red zone) is on.
    #[inline]
    pub(crate) const fn checks_objects(&self) -> bool {
        self.hardening.intersects(Hardening::OBJECT_CHECKS)
    }

    /// Reports corruption to this cache's handler or the global one.
    pub(crate) fn report(&self, error: FreeError, at: *mut u8) {
        match self.on_corruption {
            Some(handler) => handler(error, at),
            None => corruption::report_corruption(error, at),
        }
    }

    /// Pointer to slot `index` of the slab at `start`.
    #[inline]
    fn slot(&self, start: *mut u8, index: usize) -> *mut u8 {
        start.wrapping_byte_add(self.geometry.first_offset + index * self.geometry.stride)
    }

    /// Lays out a fresh slab in `pages`: header, bitmap, guard bytes and a
    /// free list through every object (shuffled with
    /// [`Hardening::FREELIST_RANDOM`]).
    ///
    /// # Safety
    /// `pages` addresses `slab_bytes` writable bytes aligned to `slab_bytes`
    /// that nothing else uses.
    pub(crate) unsafe fn format(&self, pages: NonNull<u8>, rng: &mut Rng) -> NonNull<SlabHeader> {
        let g = &self.geometry;
        let start = pages.as_ptr();
        let header = start.cast::<SlabHeader>();
        // SAFETY: the slab is ours and aligned to at least a page, so the
        // header and the bitmap after it (inside `first_offset`) fit.
        unsafe {
            header.write(SlabHeader {
                link: LinkedListLink::new(),
                free: Cell::new(ptr::null_mut()),
                in_use: Cell::new(0),
                state: Cell::new(SlabState::Empty),
                tag: self.tag_for(start.addr()),
            });
            bitmap_start(header).write_bytes(0, g.bitmap_words * size_of::<u64>());
        }
        for index in 0..g.capacity {
            let slot = self.slot(start, index);
            // SAFETY: slots lie inside the slab; guards cover bytes past the link word.
            unsafe { self.write_guards(slot) };
        }
        let head = if self.hardening.contains(Hardening::FREELIST_RANDOM) {
            // SAFETY: as above; the shuffle only touches link words of our slots.
            unsafe { self.link_shuffled(start, rng) }
        } else {
            // SAFETY: as above.
            unsafe { self.link_in_order(start) }
        };
        // SAFETY: the header was written above.
        unsafe { (*header).free.set(head) };
        // SAFETY: `header` is derived from the non-null `pages`.
        unsafe { NonNull::new_unchecked(header) }
    }

    /// Fills the poison and red-zone bytes of a free slot.
    ///
    /// # Safety
    /// `slot` is a slot of a slab this cache owns, not handed out.
    pub(crate) unsafe fn write_guards(&self, slot: *mut u8) {
        let g = &self.geometry;
        if self.hardening.contains(Hardening::POISON) && g.object_size > size_of::<usize>() {
            let poisoned = g.object_size - size_of::<usize>();
            // SAFETY: bytes after the link word up to the object's end are inside the slot.
            unsafe {
                slot.byte_add(size_of::<usize>())
                    .write_bytes(POISON_FREE_BYTE, poisoned)
            };
        }
        if self.hardening.contains(Hardening::RED_ZONE) {
            let start = g.object_size.max(size_of::<usize>());
            // SAFETY: the red zone runs from the object's end to the next slot.
            unsafe {
                slot.byte_add(start)
                    .write_bytes(RED_ZONE_BYTE, g.stride - start)
            };
        }
    }

    /// Links slot 0 → 1 → … → last; returns the head.
    unsafe fn link_in_order(&self, start: *mut u8) -> *mut u8 {
        let count = self.geometry.capacity;
        for index in 0..count {
            let slot = self.slot(start, index);
            let next = if index + 1 < count {
                self.slot(start, index + 1).addr()
            } else {
                0
            };
            // SAFETY: (caller) `slot` is a free slot of our slab, word-aligned.
            unsafe { self.store_link(slot, next) };
        }
        self.slot(start, 0)
    }

    /// Links the slots in a random order without scratch memory: each slot
    /// first holds its own index, Sattolo's shuffle turns those into a random
    /// single cycle (slot `x` holds its successor's index), and the cycle is
    /// cut after a random slot to make the list. Returns the head.
    unsafe fn link_shuffled(&self, start: *mut u8, rng: &mut Rng) -> *mut u8 {
        let count = self.geometry.capacity;
        let word = |index: usize| self.slot(start, index).cast::<usize>();
        for index in 0..count {
            // SAFETY: (caller) link words of our free slots are ours to use.
            unsafe { word(index).write(index) };
        }
        for high in (1..count).rev() {
            let low = rng.below(high);
            // SAFETY: both indexes are below `count`.
            unsafe { ptr::swap(word(high), word(low)) };
        }
        let last = rng.below(count);
        // SAFETY: as above.
        let head = unsafe { word(last).read() };
        for index in 0..count {
            // SAFETY: as above; each slot's successor is read before its word is overwritten.
            let successor = unsafe { word(index).read() };
            let next = if index == last {
                0
            } else {
                self.slot(start, successor).addr()
            };
            // SAFETY: as above.
            unsafe { self.store_link(self.slot(start, index), next) };
        }
        self.slot(start, head)
    }

    /// Stores the link to `next` (an address, 0 for the end) in `slot`.
    ///
    /// # Safety
    /// `slot` is a free, word-aligned slot of a slab this cache owns.
    #[inline]
    pub(crate) unsafe fn store_link(&self, slot: *mut u8, next: usize) {
        // SAFETY: (caller) the slot's first word is ours.
        unsafe { slot.cast::<usize>().write(next ^ self.key(slot.addr())) };
    }

    /// Reads the link in the free `slot` of the slab at `slab_start`; `None`
    /// when hardening finds it pointing anywhere but a slot of that slab or
    /// the end of the list.
    ///
    /// # Safety
    /// `slot` is a free, word-aligned slot of a slab this cache owns.
    #[inline]
    pub(crate) unsafe fn load_link(&self, slab_start: usize, slot: *mut u8) -> Option<usize> {
        // SAFETY: (caller) the slot's first word holds its link.
        let next = unsafe { slot.cast::<usize>().read() } ^ self.key(slot.addr());
        if self.key_mask != 0 && next != 0 && !self.geometry.is_slot(slab_start, next) {
            return None;
        }
        Some(next)
    }

    /// The header of the slab holding `object` and the object's slot index.
    ///
    /// # Errors
    /// [`FreeError::NotOwned`] when the slab's tag is not this cache's,
    /// [`FreeError::Misaligned`] when `object` is not the start of a slot.
    ///
    /// # Safety
    /// `object & slab_mask` addresses a readable slab header (see
    /// [`SlabCache::deallocate`](crate::SlabCache::deallocate)).
    #[inline]
    pub(crate) unsafe fn locate(
        &self,
        object: NonNull<u8>,
    ) -> Result<(NonNull<SlabHeader>, usize), FreeError> {
        let g = &self.geometry;
        let header = object.map_addr(|addr| {
            // SAFETY: masking a non-null address inside a slab keeps it at or
            // above the slab's non-null start.
            unsafe { core::num::NonZeroUsize::new_unchecked(addr.get() & g.slab_mask()) }
        });
        let header = header.cast::<SlabHeader>();
        // SAFETY: (caller) the header is readable; `tag` is never written after format.
        let tag = unsafe { (*header.as_ptr()).tag };
        if tag != self.tag_for(header.addr().get()) {
            return Err(FreeError::NotOwned);
        }
        let offset = (object.addr().get() - header.addr().get()).wrapping_sub(g.first_offset);
        match g.slot_index(offset) {
            Some(index) => Ok((header, index)),
            None => Err(FreeError::Misaligned),
        }
    }
}

/// The first bitmap word after `header`.
#[inline]
pub(crate) fn bitmap_start(header: *mut SlabHeader) -> *mut u64 {
    header.wrapping_add(1).cast::<u64>()
}

/// A tiny xorshift64* generator for free-list shuffles, seeded by the caller.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) const fn new(seed: u64) -> Self {
        // xorshift never leaves zero; any other seed works.
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }

    /// A value in `0..bound` (`bound` at most `u32::MAX`), by multiply-shift
    /// rather than division.
    fn below(&mut self, bound: usize) -> usize {
        ((u64::from(self.next_u32()) * bound as u64) >> 32) as usize
    }
}

/// A raw pointer to a header, as the lists hold it.
#[inline]
pub(crate) fn list_ref(header: NonNull<SlabHeader>) -> UnsafeRef<SlabHeader> {
    // SAFETY: headers live in slabs the cache owns until it unlinks and gives them back.
    unsafe { UnsafeRef::from_raw(header.as_ptr()) }
}
