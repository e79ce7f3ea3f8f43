//! `PerCpuCache`: a slab cache shared by CPUs through per-CPU magazines.
//!
//! Each CPU owns a loaded and a previous [magazine](crate::MAGAZINE_ROUNDS)
//! behind its own lock, which nothing but that CPU takes in a kernel that
//! runs each CPU's calls on that CPU: the fast path is an uncontended lock, a
//! pop or push and an unlock. When the loaded magazine runs empty (full), the
//! previous one is swapped in if it has objects (room); otherwise the CPU
//! takes the depot lock and trades its empty (full) magazine for a full
//! (empty) one. The depot holds at most [`DEPOT_MAGAZINES`](crate::DEPOT_MAGAZINES)
//! full magazines; beyond that, and when it has none, objects go to and come
//! from the [`SlabCache`] under the same lock. Locks are taken CPU first,
//! depot second, and CPU locks in index order, so no cycle can form.
//!
//! An object freed on another CPU than the one that allocated it simply goes
//! into the freeing CPU's magazine. A thread that migrates mid-call uses
//! another CPU's magazines under that CPU's lock: correct, only slower.
//!
//! Memory held in magazines is bounded by
//! `(2 * CPUS + DEPOT_MAGAZINES) * MAGAZINE_ROUNDS` objects;
//! [`reap`](PerCpuCache::reap) flushes the depot's stored magazines and
//! [`shrink`](PerCpuCache::shrink) everything back.

use core::ptr::NonNull;

use kalloc_api::sync::Mutex;
use kalloc_api::{AllocError, CpuId, FreeError, PageSource};

use crate::cache::SlabCache;
use crate::checks;
use crate::config::SlabConfig;
use crate::magazine::{CpuMagazines, Depot, MAGAZINE_ROUNDS, handout_checked};
use crate::slab::SlabFormat;
use crate::stats::CacheStats;

/// One CPU's magazines on a cache line of their own.
#[repr(align(64))]
struct CpuSlot(Mutex<CpuMagazines>);

/// A slab cache behind per-CPU magazines, `&self` throughout, for `CPUS`
/// CPUs whose index `C` reports. A CPU index at or above `CPUS` still works,
/// through the depot lock.
///
/// Without per-object [`Hardening`](crate::Hardening) checks the magazine fast
/// path checks only the immediate double free (the object on top of the
/// loaded magazine); other bad pointers are caught when a magazine is flushed
/// to the slabs and reported through the corruption handler. With the
/// per-object checks on, every free is checked as
/// [`SlabCache::deallocate`] checks it.
///
/// ```
/// # #[cfg(feature = "std")] {
/// use kalloc_slab::{HostPages, PerCpuCache, SlabConfig};
///
/// fn cpu() -> usize { 0 }
/// let pages = HostPages::new();
/// let cache: PerCpuCache<fn() -> usize, 4> =
///     PerCpuCache::new(SlabConfig::new(48, 8), cpu as fn() -> usize).unwrap();
/// let object = cache.allocate(&pages).unwrap();
/// // SAFETY: `object` came from this cache.
/// unsafe { cache.deallocate(object, &pages) }.unwrap();
/// assert_eq!(cache.stats().objects_in_use, 0);
/// cache.shrink(&pages);
/// assert_eq!(pages.pages_out(), 0);
/// # }
/// ```
pub struct PerCpuCache<C: CpuId, const CPUS: usize> {
    cpus: [CpuSlot; CPUS],
    depot: Mutex<Depot>,
    format: SlabFormat,
    cpu: C,
}

impl<C: CpuId, const CPUS: usize> PerCpuCache<C, CPUS> {
    /// A cache for `config`'s objects, asking `cpu` which CPU runs each call.
    ///
    /// # Errors
    /// As [`SlabCache::new`].
    #[cfg(not(loom))]
    pub const fn new(config: SlabConfig, cpu: C) -> Result<Self, AllocError> {
        let cache = match SlabCache::new(config) {
            Ok(cache) => cache,
            Err(error) => {
                core::mem::forget(cpu);
                return Err(error);
            }
        };
        Ok(Self {
            format: *cache.format(),
            cpus: [const { CpuSlot(Mutex::new(CpuMagazines::EMPTY)) }; CPUS],
            depot: Mutex::new(Depot::new(cache)),
            cpu,
        })
    }

    /// A cache for `config`'s objects, asking `cpu` which CPU runs each call.
    ///
    /// # Errors
    /// As [`SlabCache::new`].
    #[cfg(loom)]
    pub fn new(config: SlabConfig, cpu: C) -> Result<Self, AllocError> {
        let cache = SlabCache::new(config)?;
        Ok(Self {
            format: *cache.format(),
            cpus: core::array::from_fn(|_| CpuSlot(Mutex::new(CpuMagazines::EMPTY))),
            depot: Mutex::new(Depot::new(cache)),
            cpu,
        })
    }

    /// Bytes a caller may use in each object.
    pub const fn object_size(&self) -> usize {
        self.format.geometry.object_size
    }

    /// An object off this CPU's loaded magazine, or `None` when that takes
    /// more than a pop (the magazine is empty, the CPU has no slot, or the
    /// per-object checks are on): then call [`allocate`](Self::allocate).
    /// The fast path alone, with no slow path inlined into it, for fronts
    /// that branch to one out-of-line slow path of their own.
    #[inline]
    pub fn allocate_fast(&self) -> Option<NonNull<u8>> {
        if self.format.checks_objects() {
            return None;
        }
        let slot = self.cpus.get(self.cpu.current_cpu())?;
        slot.0.lock().loaded.pop()
    }

    /// Pushes `object` onto this CPU's loaded magazine; `false` (and
    /// nothing changed) when that takes more than a push: the magazine is
    /// full, the CPU has no slot, the per-object checks are on, or `object`
    /// is the one freed last (a double free). Then call
    /// [`deallocate`](Self::deallocate), which handles each case.
    ///
    /// # Safety
    /// As for [`deallocate`](Self::deallocate).
    #[inline]
    pub unsafe fn deallocate_fast(&self, object: NonNull<u8>) -> bool {
        if self.format.checks_objects() {
            return false;
        }
        let Some(slot) = self.cpus.get(self.cpu.current_cpu()) else {
            return false;
        };
        let mut magazines = slot.0.lock();
        let loaded = &mut magazines.loaded;
        loaded.top() != object && loaded.push(object).is_ok()
    }

    /// Allocates one object, from this CPU's magazines when they have one.
    ///
    /// # Errors
    /// As [`SlabCache::allocate`].
    #[inline]
    pub fn allocate<P: PageSource + ?Sized>(&self, pages: &P) -> Result<NonNull<u8>, AllocError> {
        let object = self.pop(pages)?;
        if self.format.checks_objects() {
            return self.checked_handout(object, pages);
        }
        Ok(object)
    }

    /// Gives an object back into this CPU's magazines.
    ///
    /// # Errors
    /// [`FreeError::DoubleFree`] when `object` tops the loaded magazine;
    /// with per-object checks on, every error [`SlabCache::deallocate`]
    /// reports. Nothing changes then.
    ///
    /// # Safety
    /// As for [`SlabCache::deallocate`]: normally `object` came from
    /// [`allocate`](Self::allocate) on this cache and the caller no longer
    /// uses it.
    #[inline]
    pub unsafe fn deallocate<P: PageSource + ?Sized>(
        &self,
        object: NonNull<u8>,
        pages: &P,
    ) -> Result<(), FreeError> {
        if self.format.checks_objects() {
            // SAFETY: (caller).
            return unsafe { self.checked_free(object, pages) };
        }
        // SAFETY: (caller).
        unsafe { self.push(object, pages) }
    }

    /// Flushes every magazine back to the slabs and gives every empty slab
    /// back to `pages`; returns the slabs given back.
    pub fn shrink<P: PageSource + ?Sized>(&self, pages: &P) -> usize {
        for slot in &self.cpus {
            let mut magazines = slot.0.lock();
            let mut depot = self.depot.lock();
            for magazine in magazines.both() {
                depot.flush(magazine, MAGAZINE_ROUNDS, pages);
            }
        }
        let mut depot = self.depot.lock();
        depot.shrink(pages)
    }

    /// Returns the depot's stored magazines (those beyond the ones it keeps
    /// inline: what a burst left) to the slabs, then gives back the empty
    /// slabs that no allocation needed since the previous reap, as
    /// [`SlabCache::reap`]. CPUs' own magazines stay. Returns the slabs
    /// given back.
    pub fn reap<P: PageSource + ?Sized>(&self, pages: &P) -> usize {
        self.depot.lock().reap(pages)
    }

    /// A consistent snapshot: every CPU's lock and the depot's are held
    /// together while counting.
    pub fn stats(&self) -> CacheStats {
        let mut cpus: [_; CPUS] = core::array::from_fn(|cpu| self.cpus[cpu].0.lock());
        let depot = self.depot.lock();
        let in_magazines: usize = cpus
            .iter_mut()
            .flat_map(|magazines| magazines.both().map(|m| m.rounds()))
            .sum();
        depot.stats(in_magazines)
    }

    /// An object from this CPU's magazines, refilled when empty.
    #[inline]
    fn pop<P: PageSource + ?Sized>(&self, pages: &P) -> Result<NonNull<u8>, AllocError> {
        let Some(slot) = self.cpus.get(self.cpu.current_cpu()) else {
            return self.depot.lock().cache.take(pages);
        };
        let mut magazines = slot.0.lock();
        match magazines.loaded.pop() {
            Some(object) => Ok(object),
            None => magazines.refill(&self.depot, pages).into_result(),
        }
    }

    /// Puts `object` into this CPU's magazines, spilling when full.
    ///
    /// # Safety
    /// As for [`deallocate`](Self::deallocate).
    #[inline]
    unsafe fn push<P: PageSource + ?Sized>(
        &self,
        object: NonNull<u8>,
        pages: &P,
    ) -> Result<(), FreeError> {
        let Some(slot) = self.cpus.get(self.cpu.current_cpu()) else {
            // SAFETY: (caller of `deallocate`) as for `SlabCache::deallocate`.
            return unsafe { self.depot.lock().cache.put(object, pages) };
        };
        let mut magazines = slot.0.lock();
        let loaded = &mut magazines.loaded;
        if loaded.top() == object {
            return Err(FreeError::DoubleFree);
        }
        if let Err(object) = loaded.push(object) {
            magazines.spill(&self.depot, object, pages);
        }
        Ok(())
    }

    /// Allocation with per-object checks; failing objects are quarantined
    /// and reported, and another is tried.
    #[cold]
    fn checked_handout<P: PageSource + ?Sized>(
        &self,
        object: NonNull<u8>,
        pages: &P,
    ) -> Result<NonNull<u8>, AllocError> {
        handout_checked(&self.format, &self.depot, object, pages)
    }

    /// Free with per-object checks.
    ///
    /// # Safety
    /// As for [`deallocate`](Self::deallocate).
    #[cold]
    unsafe fn checked_free<P: PageSource + ?Sized>(
        &self,
        object: NonNull<u8>,
        pages: &P,
    ) -> Result<(), FreeError> {
        // SAFETY: (caller) the header under `object` is readable.
        let (header, index) = unsafe { self.format.locate(object) }?;
        // SAFETY: `locate` proved `object` is slot `index` of our live slab
        // `header`, which stays live while a caller holds the object.
        unsafe { checks::begin_free(&self.format, header, index, object) }?;
        // SAFETY: as above; the caller gave the object up.
        unsafe { checks::poison(&self.format, object) };
        // SAFETY: (caller).
        let result = unsafe { self.push(object, pages) };
        if result.is_err() {
            // SAFETY: as above; the object stays the caller's.
            unsafe { checks::undo_free(&self.format, header, index) };
        }
        result
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
