//! Allocators that borrow caller-provided metadata, bundled with that storage.

use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// An allocator `A` together with the storage `S` it borrows for its
/// metadata (kalloc allocators keep their bookkeeping in memory the caller
/// hands in). The storage is freed after the allocator.
pub struct Owned<A, S: ?Sized + 'static> {
    value: ManuallyDrop<A>,
    storage: NonNull<S>,
}

// SAFETY: the bundle owns both parts; sending it sends an `A` and a `Box<S>`.
unsafe impl<A: Send, S: ?Sized + Send> Send for Owned<A, S> {}
// SAFETY: `&Owned` gives out only `&A`; the storage is reached only through `A`.
unsafe impl<A: Sync, S: ?Sized + Sync> Sync for Owned<A, S> {}

impl<A, S: ?Sized + 'static> Owned<A, S> {
    /// Builds the allocator over `storage`, borrowed mutably.
    pub fn new_mut(storage: Box<S>, build: impl FnOnce(&'static mut S) -> A) -> Self {
        let raw = Box::into_raw(storage);
        // SAFETY: `raw` is a live, exclusive allocation from `Box::into_raw`. The
        // `'static` borrow is used only by `value`, which `Drop` destroys before
        // turning `raw` back into a box, so no use outlives the storage.
        let value = build(unsafe { &mut *raw });
        Self {
            value: ManuallyDrop::new(value),
            storage: NonNull::new(raw).expect("boxes are non-null"),
        }
    }

    /// Builds the allocator over `storage`, borrowed shared (atomic words).
    pub fn new_shared(storage: Box<S>, build: impl FnOnce(&'static S) -> A) -> Self {
        let raw = Box::into_raw(storage);
        // SAFETY: as in `new_mut`: only `value` uses the borrow, and it dies first.
        let value = build(unsafe { &*raw });
        Self {
            value: ManuallyDrop::new(value),
            storage: NonNull::new(raw).expect("boxes are non-null"),
        }
    }
}

impl<A, S: ?Sized> Deref for Owned<A, S> {
    type Target = A;
    fn deref(&self) -> &A {
        &self.value
    }
}

impl<A, S: ?Sized> DerefMut for Owned<A, S> {
    fn deref_mut(&mut self) -> &mut A {
        &mut self.value
    }
}

impl<A, S: ?Sized> Drop for Owned<A, S> {
    fn drop(&mut self) {
        // SAFETY: `value` is dropped exactly once, here, before its storage.
        unsafe { ManuallyDrop::drop(&mut self.value) };
        // SAFETY: `storage` came from `Box::into_raw` and nothing borrows it now.
        drop(unsafe { Box::from_raw(self.storage.as_ptr()) });
    }
}
