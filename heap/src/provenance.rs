//! Provenance for pointers the heap takes back.
//!
//! A pointer handed to `dealloc` carries its caller's provenance, and a `Box`
//! narrows that to exactly the block's bytes. Freeing must read and write
//! beyond the block (a slab header, TLSF boundary tags, a neighbour to
//! coalesce with), which through the caller's pointer would be undefined
//! behaviour. So every page run entering the heap has its provenance exposed,
//! and a pointer coming back is rebuilt from its address with that exposed
//! provenance, as a kernel's `virt_to_page` finds the page of an address.

use core::ptr::NonNull;

/// Lets [`reclaim`] rebuild pointers into the memory `start` points to.
#[inline]
pub(crate) fn expose(start: NonNull<u8>) {
    let _ = start.as_ptr().expose_provenance();
}

/// `block` with the provenance of the page run it lies in (exposed by
/// [`expose`]) instead of its caller's.
#[inline]
pub(crate) fn reclaim(block: NonNull<u8>) -> NonNull<u8> {
    let rebuilt = core::ptr::with_exposed_provenance_mut::<u8>(block.as_ptr().addr());
    // SAFETY: the address is `block`'s, which is non-null.
    unsafe { NonNull::new_unchecked(rebuilt) }
}
