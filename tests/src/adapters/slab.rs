//! `kalloc-slab`: the slab cache and its per-CPU magazine front, over the
//! checking [`HostPages`] source.

use std::ptr::NonNull;

use kalloc_api::sync::{AtomicUsize, Ordering};
use kalloc_api::{AllocError, FreeError, PinnedCpu};
use kalloc_slab::{
    CacheStats, Hardening, MAX_SLAB_BYTES, PerCpuCache, PinnedPerCpuCache, SlabCache, SlabConfig,
};

use crate::adapter::{Expect, ModelAllocator, Rules};
use crate::driver::{Divergence, Summary, run};
use crate::host::{HostArena, HostPages};
use crate::model::{Block, Model, Span};
use crate::op::Op;

/// Object shapes `(size, align)` the runs cycle through: small objects in a
/// one-page slab, cache-line-aligned ones, and large ones in multi-page slabs.
/// Each is at least [`MAX_REQUEST_BYTES`] long.
const OBJECTS: [(usize, usize); 3] = [(64, 8), (200, 64), (1500, 16)];
/// Largest request in the slab profile; every object shape holds it.
pub const MAX_REQUEST_BYTES: u64 = 64;
/// Pages of the page source: few enough that the large objects run out.
const SOURCE_PAGES: usize = 24;
/// Alignment of the page source's arena, in pages: the largest slab.
const SOURCE_ALIGN_PAGES: usize = MAX_SLAB_BYTES / 4096;
/// CPUs of the per-CPU front; the CPU id moves on at every call.
const CPUS: usize = 3;

/// The calls an object cache offers, so one adapter drives both fronts.
trait ObjectCache {
    fn allocate(&mut self, pages: &HostPages) -> Result<NonNull<u8>, AllocError>;
    /// # Safety
    /// As `SlabCache::deallocate`: the header-sized bytes at `object` rounded
    /// down to the slab size are readable.
    unsafe fn deallocate(
        &mut self,
        object: NonNull<u8>,
        pages: &HostPages,
    ) -> Result<(), FreeError>;
    fn shrink(&mut self, pages: &HostPages);
    fn stats(&self) -> CacheStats;
}

impl ObjectCache for SlabCache {
    fn allocate(&mut self, pages: &HostPages) -> Result<NonNull<u8>, AllocError> {
        SlabCache::allocate(self, pages)
    }

    unsafe fn deallocate(
        &mut self,
        object: NonNull<u8>,
        pages: &HostPages,
    ) -> Result<(), FreeError> {
        // SAFETY: (caller).
        unsafe { SlabCache::deallocate(self, object, pages) }
    }

    fn shrink(&mut self, pages: &HostPages) {
        SlabCache::shrink(self, 0, pages);
    }

    fn stats(&self) -> CacheStats {
        SlabCache::stats(self)
    }
}

impl<C: kalloc_api::CpuId> ObjectCache for &PerCpuCache<C, CPUS> {
    fn allocate(&mut self, pages: &HostPages) -> Result<NonNull<u8>, AllocError> {
        PerCpuCache::allocate(self, pages)
    }

    unsafe fn deallocate(
        &mut self,
        object: NonNull<u8>,
        pages: &HostPages,
    ) -> Result<(), FreeError> {
        // SAFETY: (caller).
        unsafe { PerCpuCache::deallocate(self, object, pages) }
    }

    fn shrink(&mut self, pages: &HostPages) {
        PerCpuCache::shrink(self, pages);
    }

    fn stats(&self) -> CacheStats {
        PerCpuCache::stats(self)
    }
}

/// The pinned front driven from one thread that plays every CPU in turn:
/// each allocation moves to the next CPU (one of them without a slot, served
/// through the depot), and frees run on the CPU of the latest allocation, so
/// objects go back on other CPUs than they came from while a free repeated
/// at once still meets its object on top of the same magazine.
struct RotatingPinned<'c> {
    cache: &'c PinnedPerCpuCache<CPUS>,
    cpu: usize,
}

impl RotatingPinned<'_> {
    fn token(&self) -> PinnedCpu {
        // SAFETY: one thread makes every token and uses each for one call,
        // so no two contexts ever share a slot.
        unsafe { PinnedCpu::new(self.cpu) }
    }
}

impl ObjectCache for RotatingPinned<'_> {
    fn allocate(&mut self, pages: &HostPages) -> Result<NonNull<u8>, AllocError> {
        self.cpu = (self.cpu + 1) % (CPUS + 1);
        self.cache.allocate(&self.token(), pages)
    }

    unsafe fn deallocate(
        &mut self,
        object: NonNull<u8>,
        pages: &HostPages,
    ) -> Result<(), FreeError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.cache.deallocate(&self.token(), object, pages) }
    }

    fn shrink(&mut self, pages: &HostPages) {
        for index in 0..CPUS {
            // SAFETY: as in `token`.
            self.cache
                .flush_cpu(&unsafe { PinnedCpu::new(index) }, pages);
        }
        self.cache.shrink(pages);
    }

    fn stats(&self) -> CacheStats {
        self.cache.stats()
    }
}

/// Drives an object cache: every request (at most [`MAX_REQUEST_BYTES`])
/// gets one object; objects must lie in pages the cache holds right now.
struct SlabAdapter<'p, C> {
    cache: C,
    pages: &'p HostPages,
    object_size: u64,
    /// Whether every double free must be caught (per-object checks on).
    checks_every_free: bool,
    /// Zeroed memory no cache owns, aligned to the largest slab: foreign
    /// frees point here, so reading a "slab header" under them is defined.
    foreign: HostArena,
}

impl<C: ObjectCache> ModelAllocator for SlabAdapter<'_, C> {
    fn rules(&self) -> Rules {
        Rules {
            reallocs: false,
            zero_size: Expect::Skip,
            bad_align: Expect::Skip,
            huge: Expect::Skip,
            double_free: if self.checks_every_free {
                Expect::Fail(&[FreeError::DoubleFree])
            } else {
                // Only the immediate double free is caught without the bitmap.
                Expect::Skip
            },
            immediate_double_free: Expect::Fail(&[FreeError::DoubleFree]),
            foreign_free: Expect::Fail(&[FreeError::NotOwned]),
            misaligned_free: Expect::Fail(&[FreeError::Misaligned]),
            ..Rules::UNCHECKED_HEAP
        }
    }

    fn owned(&self) -> Vec<Span> {
        self.pages.held_spans()
    }

    fn allocate(&mut self, size: u64, align: u64) -> Result<Block, AllocError> {
        debug_assert!(
            size <= self.object_size && align <= 8,
            "the profile fits every shape"
        );
        let object = self.cache.allocate(self.pages)?;
        Ok(Block::host(object, self.object_size))
    }

    fn free(&mut self, block: &Block, _size: u64, _align: u64) -> Result<(), FreeError> {
        let object = match block.ptr {
            Some(ptr) => ptr,
            // A foreign probe: rebuild the pointer from the foreign arena.
            None => {
                let (base, _) = self.foreign.span();
                let offset = block.addr.checked_sub(base).ok_or(FreeError::NotOwned)?;
                self.foreign.at(offset as usize)
            }
        };
        // SAFETY: `object` is a block this cache handed out (live, or freed
        // while its page is still held: `may_free_again`), a pointer inside
        // one, or a pointer into the zeroed, slab-aligned foreign arena; in
        // every case the header-sized bytes at it rounded down to the slab
        // size are readable.
        unsafe { self.cache.deallocate(object, self.pages) }
    }

    fn shrink(&mut self) {
        self.cache.shrink(self.pages);
    }

    fn used_bytes(&self) -> Option<u64> {
        Some(self.cache.stats().objects_in_use as u64 * self.object_size)
    }

    fn check(&self, _model: &Model) -> Result<(), String> {
        let stats = self.cache.stats();
        let accounted = stats.objects_in_use
            + stats.objects_cached
            + stats.objects_free
            + stats.objects_quarantined;
        if accounted != stats.total_objects() {
            return Err(format!(
                "{accounted} objects accounted for in {} slabs of {}: {stats:?}",
                stats.slabs, stats.objects_per_slab
            ));
        }
        if stats.peak_objects_out < stats.objects_in_use + stats.objects_cached {
            return Err(format!(
                "peak below the objects out of the slabs now: {stats:?}"
            ));
        }
        let outstanding = self.pages.outstanding_pages();
        let slab_pages = stats.slabs * stats.pages_per_slab;
        if stats.pages_held != outstanding || slab_pages + stats.magazine_pages != outstanding {
            return Err(format!(
                "the cache says it holds {} pages in {} slabs; the page source has {outstanding} out",
                stats.pages_held, stats.slabs
            ));
        }
        if stats.corruptions != 0 || stats.objects_quarantined != 0 {
            return Err(format!("corruption reported in a valid run: {stats:?}"));
        }
        if let Some(misuse) = self.pages.misuse().first() {
            return Err(format!("page source misused: {misuse}"));
        }
        Ok(())
    }

    fn may_free_again(&self, block: &Block) -> bool {
        // Once its slab went back to the source, the object is just memory.
        self.pages.holds(block.addr)
    }

    fn foreign_address(&self, pick: usize) -> u64 {
        let (base, end) = self.foreign.span();
        // Object-like offsets, some past the first slab-sized stretch.
        (base + (pick as u64 * 72) % (end - base)) & !7
    }

    fn finish(&mut self, _model: &Model) -> Result<(), String> {
        let stats = self.cache.stats();
        if stats.slabs != 0 || stats.pages_held != 0 {
            return Err(format!(
                "after every object was freed and the cache shrunk, it still holds {} slabs: \
                 {stats:?}",
                stats.slabs
            ));
        }
        self.pages.check_all_returned()
    }
}

/// The object shape and hardening of a run, from its length: every shape
/// with and without per-object checks across nearby lengths.
fn config_for(ops: &[Op], always_checked: bool) -> (SlabConfig, bool) {
    let (size, align) = OBJECTS[ops.len() % OBJECTS.len()];
    let checked = always_checked || (ops.len() / OBJECTS.len()) % 2 == 0;
    let hardening = if checked {
        Hardening::DEBUG
    } else {
        Hardening::DEFAULT
    };
    let config = SlabConfig::new(size, align)
        .with_hardening(hardening)
        .with_secret(0x5eed_c0de)
        .with_seed(ops.len() as u64);
    (config, checked)
}

fn foreign_arena() -> HostArena {
    HostArena::new(MAX_SLAB_BYTES, MAX_SLAB_BYTES)
}

/// Runs `ops` on a fresh [`SlabCache`] over a 24-page [`HostPages`]; the
/// sequence length picks the object shape and whether per-object checks
/// (double-free bitmap, poison, red zones) are on. At the end, with every
/// object freed and `shrink(0)`, every page must be back in the source.
pub fn run_slab_cache(ops: &[Op]) -> Result<Summary, Divergence> {
    let pages = HostPages::new(SOURCE_PAGES, SOURCE_ALIGN_PAGES);
    let (config, checks_every_free) = config_for(ops, false);
    let cache = SlabCache::new(config).expect("valid object shape");
    let mut adapter = SlabAdapter {
        object_size: cache.object_size() as u64,
        cache,
        pages: &pages,
        checks_every_free,
        foreign: foreign_arena(),
    };
    run(&mut adapter, ops)
}

/// Runs `ops` on a [`PerCpuCache`] with per-object checks, whose CPU id
/// moves on at every call, so objects are freed into other CPUs' magazines
/// than they came from; a shrink flushes every magazine and empty slab.
pub fn run_per_cpu_slab(ops: &[Op]) -> Result<Summary, Divergence> {
    let pages = HostPages::new(SOURCE_PAGES, SOURCE_ALIGN_PAGES);
    let (config, checks_every_free) = config_for(ops, true);
    let next = AtomicUsize::new(0);
    let cpu = || next.fetch_add(1, Ordering::Relaxed) % CPUS;
    let cache: PerCpuCache<_, CPUS> = PerCpuCache::new(config, cpu).expect("valid object shape");
    let mut adapter = SlabAdapter {
        object_size: cache.object_size() as u64,
        cache: &cache,
        pages: &pages,
        checks_every_free,
        foreign: foreign_arena(),
    };
    run(&mut adapter, ops)
}

/// Runs `ops` on a [`PinnedPerCpuCache`] played by one thread that moves to
/// another CPU at every allocation (one of them without a slot), with
/// per-object checks, which the hostile frees need (as for the locked
/// front); a shrink flushes every CPU first.
pub fn run_pinned_slab(ops: &[Op]) -> Result<Summary, Divergence> {
    let pages = HostPages::new(SOURCE_PAGES, SOURCE_ALIGN_PAGES);
    let (config, checks_every_free) = config_for(ops, true);
    let cache: PinnedPerCpuCache<CPUS> =
        PinnedPerCpuCache::new(config).expect("valid object shape");
    let mut adapter = SlabAdapter {
        object_size: cache.object_size() as u64,
        cache: RotatingPinned {
            cache: &cache,
            cpu: 0,
        },
        pages: &pages,
        checks_every_free,
        foreign: foreign_arena(),
    };
    run(&mut adapter, ops)
}
