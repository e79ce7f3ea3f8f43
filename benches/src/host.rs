//! The host's allocators, called through `GlobalAlloc` (never installed as
//! the global allocator, so the harness's own allocations do not disturb them).

use std::alloc::{GlobalAlloc, Layout, System};

use mimalloc::MiMalloc;

/// A host allocator measured as a peer.
pub trait HostAllocator: GlobalAlloc + Sync + 'static {
    /// Name in the tables.
    const NAME: &'static str;
    /// The allocator value to call.
    const INSTANCE: Self;
}

impl HostAllocator for System {
    const NAME: &'static str = "System";
    const INSTANCE: Self = System;
}

impl HostAllocator for MiMalloc {
    const NAME: &'static str = "mimalloc";
    const INSTANCE: Self = MiMalloc;
}

/// Alignment of the objects asked of host allocators in the object family.
pub const OBJECT_ALIGN: usize = 8;

/// A host allocator as a peer of every family: it ignores the arena it is
/// built for and serves every request from its own memory.
#[derive(Clone, Copy, Debug)]
pub struct Host<G> {
    pub(crate) allocator: G,
    /// The object layout, in the object family.
    pub(crate) object: Layout,
}

impl<G: HostAllocator> Host<G> {
    /// The host allocator, serving objects of `object_size` bytes when used as a cache.
    pub fn new(object_size: usize) -> Self {
        let object =
            Layout::from_size_align(object_size.max(1), OBJECT_ALIGN).expect("object layout");
        Self {
            allocator: G::INSTANCE,
            object,
        }
    }
}
