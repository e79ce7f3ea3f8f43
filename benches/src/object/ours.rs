//! kalloc's object caches, behind [`ObjectCacheBench`], with their default
//! hardening on (it is part of what is measured).

use std::ptr::NonNull;

use kalloc_api::PinnedCpu;
use kalloc_slab::{HostPages, PerCpuCache, PinnedPerCpuCache, SlabCache, SlabConfig};

use super::ObjectCacheBench;
use crate::cpu::{BENCH_CPUS, BenchCpu, pinned_cpu};
use crate::host::OBJECT_ALIGN;

/// `kalloc_slab::SlabCache` (the `&mut self` core) over host pages.
pub struct KallocSlab {
    cache: SlabCache,
    pages: HostPages,
}

impl ObjectCacheBench for KallocSlab {
    const NAME: &'static str = "kalloc-slab";
    const OURS: bool = true;

    fn new(object_size: usize) -> Self {
        let cache =
            SlabCache::new(SlabConfig::new(object_size, OBJECT_ALIGN)).expect("slab configuration");
        Self {
            cache,
            pages: HostPages::new(),
        }
    }

    #[inline]
    fn alloc(&mut self) -> Option<NonNull<u8>> {
        self.cache.allocate(&self.pages).ok()
    }

    #[inline]
    unsafe fn free(&mut self, object: NonNull<u8>) {
        // SAFETY: the caller's promise: an object of this cache, live.
        let freed = unsafe { self.cache.deallocate(object, &self.pages) };
        debug_assert!(freed.is_ok(), "{freed:?}");
    }
}

impl Drop for KallocSlab {
    fn drop(&mut self) {
        self.cache.shrink(0, &self.pages);
    }
}

/// The per-CPU front measured: [`BENCH_CPUS`] magazine pairs.
pub type PerCpuSlabFront = PerCpuCache<BenchCpu, BENCH_CPUS>;

/// `kalloc_slab::PerCpuCache`: per-CPU magazines over a depot and the slab
/// layer, used through `&self`.
pub struct KallocPerCpuSlab {
    cache: PerCpuSlabFront,
    pages: HostPages,
}

impl KallocPerCpuSlab {
    /// One object, from the calling thread's magazine when it has one.
    #[inline]
    pub fn alloc_shared(&self) -> Option<NonNull<u8>> {
        self.cache.allocate(&self.pages).ok()
    }

    /// Frees an object into the calling thread's magazine.
    ///
    /// # Safety
    /// `object` came from this cache and is not freed yet.
    #[inline]
    pub unsafe fn free_shared(&self, object: NonNull<u8>) {
        // SAFETY: the caller's promise.
        let freed = unsafe { self.cache.deallocate(object, &self.pages) };
        debug_assert!(freed.is_ok(), "{freed:?}");
    }
}

impl ObjectCacheBench for KallocPerCpuSlab {
    const NAME: &'static str = "kalloc-slab-pcp";
    const OURS: bool = true;

    fn new(object_size: usize) -> Self {
        let cache = PerCpuCache::new(SlabConfig::new(object_size, OBJECT_ALIGN), BenchCpu)
            .expect("slab configuration");
        Self {
            cache,
            pages: HostPages::new(),
        }
    }

    #[inline]
    fn alloc(&mut self) -> Option<NonNull<u8>> {
        self.alloc_shared()
    }

    #[inline]
    unsafe fn free(&mut self, object: NonNull<u8>) {
        // SAFETY: the caller's promise.
        unsafe { self.free_shared(object) };
    }
}

impl Drop for KallocPerCpuSlab {
    fn drop(&mut self) {
        self.cache.shrink(&self.pages);
    }
}

/// The pinned front measured: [`BENCH_CPUS`] magazine pairs.
pub type PinnedSlabFront = PinnedPerCpuCache<BENCH_CPUS>;

/// `kalloc_slab::PinnedPerCpuCache`: the per-CPU magazines without a lock,
/// driven the way a kernel drives them with preemption off: one thread, its
/// own CPU slot, a [`PinnedCpu`] token held for the whole run.
pub struct KallocPinnedSlab {
    cache: PinnedSlabFront,
    cpu: PinnedCpu,
    pages: HostPages,
}

impl ObjectCacheBench for KallocPinnedSlab {
    const NAME: &'static str = "kalloc-slab-pinned";
    const OURS: bool = true;

    fn new(object_size: usize) -> Self {
        let cache = PinnedPerCpuCache::new(SlabConfig::new(object_size, OBJECT_ALIGN))
            .expect("slab configuration");
        Self {
            cache,
            cpu: pinned_cpu(),
            pages: HostPages::new(),
        }
    }

    #[inline]
    fn alloc(&mut self) -> Option<NonNull<u8>> {
        self.cache.allocate(&self.cpu, &self.pages).ok()
    }

    #[inline]
    unsafe fn free(&mut self, object: NonNull<u8>) {
        // SAFETY: the caller's promise.
        let freed = unsafe { self.cache.deallocate(&self.cpu, object, &self.pages) };
        debug_assert!(freed.is_ok(), "{freed:?}");
    }
}

impl Drop for KallocPinnedSlab {
    fn drop(&mut self) {
        self.cache.flush_cpu(&self.cpu, &self.pages);
        self.cache.shrink(&self.pages);
    }
}
