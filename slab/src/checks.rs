//! Per-object checks at the boundary between the cache and its callers:
//! the double-free bitmap, poison and red zones.
//!
//! They run when an object is handed to a caller and when a caller gives it
//! back, in the slab layer and in the per-CPU front alike; objects moving
//! between magazines and slabs are not checked again. A set bitmap bit means
//! "a caller holds this object". The bits are atomics so CPUs may flip bits of
//! the same slab without sharing a lock.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use kalloc_api::FreeError;

use crate::config::Hardening;
use crate::slab::{POISON_FREE_BYTE, RED_ZONE_BYTE, SlabFormat, SlabHeader, bitmap_start};

const WORD_BYTES: usize = size_of::<usize>();

/// Sets (`set`) or clears the bitmap bit of slot `index`; returns whether it was set.
///
/// # Safety
/// `header` heads a live slab of `format` with a bitmap, `index` below its capacity.
unsafe fn flip_bit(header: NonNull<SlabHeader>, index: usize, set: bool) -> bool {
    let word = bitmap_start(header.as_ptr()).wrapping_add(index / 64);
    let bit = 1u64 << (index % 64);
    // SAFETY: (caller) the word lies in the slab's bitmap, 8-byte aligned (the
    // header's size is a multiple of 8), and is only ever accessed atomically.
    let word = unsafe { AtomicU64::from_ptr(word) };
    let old = if set {
        word.fetch_or(bit, Ordering::AcqRel)
    } else {
        word.fetch_and(!bit, Ordering::AcqRel)
    };
    old & bit != 0
}

/// Whether every byte of `len` bytes at `start` equals `byte`.
///
/// # Safety
/// The bytes are readable and nobody writes them meanwhile.
unsafe fn all_bytes(start: *const u8, len: usize, byte: u8) -> bool {
    // SAFETY: (caller).
    unsafe { core::slice::from_raw_parts(start, len) }
        .iter()
        .all(|b| *b == byte)
}

/// Whether the red zone after `object` is intact.
///
/// # Safety
/// `object` is a slot of a live slab of `format`.
unsafe fn red_zone_intact(format: &SlabFormat, object: NonNull<u8>) -> bool {
    let g = &format.geometry;
    let start = g.object_size.max(WORD_BYTES);
    // SAFETY: (caller) the red zone is inside the slot, owned by the cache.
    unsafe {
        all_bytes(
            object.as_ptr().byte_add(start),
            g.stride - start,
            RED_ZONE_BYTE,
        )
    }
}

/// Checks an object about to be handed to a caller: poison intact (no write
/// after free), red zone intact, not already held by a caller.
///
/// # Errors
/// [`FreeError::Corrupted`]: the caller must not hand the object out.
///
/// # Safety
/// `object` is slot `index` of the live slab `header` of `format`, and sits
/// on no free list or magazine any more.
pub(crate) unsafe fn on_allocate(
    format: &SlabFormat,
    header: NonNull<SlabHeader>,
    index: usize,
    object: NonNull<u8>,
) -> Result<(), FreeError> {
    let g = &format.geometry;
    let h = format.hardening;
    if h.contains(Hardening::POISON) && g.object_size > WORD_BYTES {
        // SAFETY: (caller) the object's bytes are the cache's until returned.
        let poisoned = unsafe {
            all_bytes(
                object.as_ptr().byte_add(WORD_BYTES),
                g.object_size - WORD_BYTES,
                POISON_FREE_BYTE,
            )
        };
        if !poisoned {
            return Err(FreeError::Corrupted);
        }
    }
    // SAFETY: (caller).
    if h.contains(Hardening::RED_ZONE) && !unsafe { red_zone_intact(format, object) } {
        return Err(FreeError::Corrupted);
    }
    // SAFETY: (caller) the slab has a bitmap when the flag is on.
    if h.contains(Hardening::DOUBLE_FREE_BITMAP) && unsafe { flip_bit(header, index, true) } {
        // A caller already holds it: the free list or a magazine was tampered with.
        return Err(FreeError::Corrupted);
    }
    Ok(())
}

/// Checks an object a caller gives back and marks it no longer held.
///
/// # Errors
/// [`FreeError::DoubleFree`] when no caller held it, [`FreeError::Corrupted`]
/// when its red zone was overwritten; nothing changes then.
///
/// # Safety
/// `object` is slot `index` of the live slab `header` of `format`.
pub(crate) unsafe fn begin_free(
    format: &SlabFormat,
    header: NonNull<SlabHeader>,
    index: usize,
    object: NonNull<u8>,
) -> Result<(), FreeError> {
    let h = format.hardening;
    let bitmap = h.contains(Hardening::DOUBLE_FREE_BITMAP);
    // SAFETY: (caller) the slab has a bitmap when the flag is on.
    if bitmap && !unsafe { flip_bit(header, index, false) } {
        return Err(FreeError::DoubleFree);
    }
    // SAFETY: (caller).
    if h.contains(Hardening::RED_ZONE) && !unsafe { red_zone_intact(format, object) } {
        if bitmap {
            // SAFETY: as above; the caller keeps the object.
            unsafe { flip_bit(header, index, true) };
        }
        return Err(FreeError::Corrupted);
    }
    Ok(())
}

/// Marks an object held again after [`begin_free`] succeeded but the free
/// was refused further down.
///
/// # Safety
/// As for [`begin_free`].
pub(crate) unsafe fn undo_free(format: &SlabFormat, header: NonNull<SlabHeader>, index: usize) {
    if format.hardening.contains(Hardening::DOUBLE_FREE_BITMAP) {
        // SAFETY: (caller).
        unsafe { flip_bit(header, index, true) };
    }
}

/// Poisons a freed object past its first word (which may hold a link).
///
/// # Safety
/// `object` is a slot of a live slab of `format` that no caller holds.
pub(crate) unsafe fn poison(format: &SlabFormat, object: NonNull<u8>) {
    let g = &format.geometry;
    if format.hardening.contains(Hardening::POISON) && g.object_size > WORD_BYTES {
        // SAFETY: (caller) the object's bytes are the cache's again.
        unsafe {
            object
                .as_ptr()
                .byte_add(WORD_BYTES)
                .write_bytes(POISON_FREE_BYTE, g.object_size - WORD_BYTES);
        }
    }
}
