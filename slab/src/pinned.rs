//! `PinnedPerCpuCache`: per-CPU magazines with no lock on the fast path.
//!
//! [`PerCpuCache`](crate::PerCpuCache) guards each CPU's magazines with a
//! lock that only that CPU takes in a well-behaved kernel, yet the lock's
//! atomic read-modify-write is most of the cost of an allocation. Kernels
//! already run allocator calls with preemption off, and then nothing but the
//! running context can touch the CPU's magazines: a [`PinnedCpu`] token
//! states exactly that, and this front uses the magazines through it with
//! plain loads and stores, as Linux's SLUB uses `this_cpu` operations.
//!
//! The price is that no CPU may reach into another's magazines: the depot
//! and the slabs stay shared under their lock, but a CPU's cached objects
//! go back only when that CPU calls [`flush_cpu`](PinnedPerCpuCache::flush_cpu)
//! (Linux flushes per-CPU slabs the same way, from each CPU).
//! [`stats`](PinnedPerCpuCache::stats) reads the per-CPU counts each CPU
//! publishes with relaxed stores: exact whenever no call is in flight.

use core::ptr::NonNull;

use kalloc_api::sync::{AtomicUsize, Mutex, Ordering, UnsafeCell};
use kalloc_api::{AllocError, FreeError, PackedAllocation, PageSource, PinnedCpu};

use crate::cache::SlabCache;
use crate::checks;
use crate::config::SlabConfig;
use crate::magazine::{CpuMagazines, Depot, MAGAZINE_ROUNDS, handout_checked};
use crate::slab::SlabFormat;
use crate::stats::CacheStats;

/// One CPU's magazines on cache lines of their own, with the number of
/// objects in each in atomics that [`PinnedPerCpuCache::stats`] reads.
///
/// `loaded_rounds` *is* the loaded magazine's count: the fast path keeps
/// it there alone (one load and one store, both plain moves for relaxed
/// atomics), and the slow path copies it into the magazine before working
/// on it and back after. The previous magazine's count is published when
/// the slow path changes it.
#[repr(align(64))]
struct PinnedSlot {
    magazines: UnsafeCell<CpuMagazines>,
    loaded_rounds: AtomicUsize,
    previous_rounds: AtomicUsize,
}

// The fast path finds a slot with a shift (see `MAGAZINE_ROUNDS`).
#[cfg(not(loom))]
const _: () = assert!(size_of::<PinnedSlot>().is_power_of_two());

impl PinnedSlot {
    #[cfg(not(loom))]
    const fn empty() -> Self {
        Self {
            magazines: UnsafeCell::new(CpuMagazines::EMPTY),
            loaded_rounds: AtomicUsize::new(0),
            previous_rounds: AtomicUsize::new(0),
        }
    }

    #[cfg(loom)]
    fn empty() -> Self {
        Self {
            magazines: UnsafeCell::new(CpuMagazines::EMPTY),
            loaded_rounds: AtomicUsize::new(0),
            previous_rounds: AtomicUsize::new(0),
        }
    }

    /// Runs `f` on this slot's magazines, the loaded one's count brought in
    /// from `loaded_rounds` before and published after.
    ///
    /// # Safety
    /// The caller holds the [`PinnedCpu`] token of this slot's CPU.
    #[inline(always)]
    unsafe fn with<R>(&self, f: impl FnOnce(&mut CpuMagazines) -> R) -> R {
        self.magazines.with_mut(|magazines| {
            // SAFETY: (caller) the token's context is the only one using this
            // slot until the token drops, and this call does not nest.
            let magazines = unsafe { &mut *magazines };
            magazines
                .loaded
                .set_rounds(self.loaded_rounds.load(Ordering::Relaxed));
            let result = f(magazines);
            self.loaded_rounds
                .store(magazines.loaded.rounds(), Ordering::Relaxed);
            result
        })
    }

    /// Pops an object off the loaded magazine; `None` when it is empty.
    ///
    /// The fast path: small enough to inline into callers, with the slow
    /// paths kept out of line.
    ///
    /// # Safety
    /// As for [`with`](Self::with).
    #[inline(always)]
    unsafe fn pop(&self) -> Option<NonNull<u8>> {
        let rounds = self.loaded_rounds.load(Ordering::Relaxed);
        if rounds == 0 {
            return None;
        }
        // SAFETY: (caller) as in `with`; `rounds` is at most a magazine's
        // worth, as every count stored here is.
        let object = self
            .magazines
            .with_mut(|magazines| unsafe { (*magazines).loaded.object_at(rounds) });
        self.loaded_rounds.store(rounds - 1, Ordering::Relaxed);
        Some(object)
    }

    /// Pushes `object` onto the loaded magazine: `Ok(true)` when it went
    /// in, `Ok(false)` when the magazine holds `limit` objects (at most
    /// [`MAGAZINE_ROUNDS`]), and the double free when `object` is the one
    /// freed last.
    ///
    /// # Safety
    /// As for [`with`](Self::with).
    #[inline(always)]
    unsafe fn push(&self, object: NonNull<u8>, limit: usize) -> Result<bool, FreeError> {
        // SAFETY: (caller).
        if unsafe { self.try_push(object, limit) } {
            return Ok(true);
        }
        // SAFETY: (caller) as in `with`; `loaded_rounds` is at most a
        // magazine's worth, and slot 0 holds the sentinel.
        let top = self.magazines.with_mut(|magazines| unsafe {
            (*magazines)
                .loaded
                .object_at(self.loaded_rounds.load(Ordering::Relaxed))
        });
        if top == object {
            return immediate_double_free();
        }
        Ok(false)
    }

    /// Pushes `object` onto the loaded magazine unless it holds `limit`
    /// objects or `object` is the one freed last; `false` then, and nothing
    /// changed. No call on any path, so it inlines into fast paths whole.
    ///
    /// # Safety
    /// As for [`with`](Self::with).
    #[inline(always)]
    unsafe fn try_push(&self, object: NonNull<u8>, limit: usize) -> bool {
        let rounds = self.loaded_rounds.load(Ordering::Relaxed);
        let pushed = self.magazines.with_mut(|magazines| {
            // SAFETY: (caller) as in `with`.
            let loaded = unsafe { &mut (*magazines).loaded };
            // SAFETY: `rounds` is at most a magazine's worth; slot 0, the
            // top of an empty magazine, holds the sentinel.
            if unsafe { loaded.object_at(rounds) } == object || rounds >= limit {
                return false;
            }
            // SAFETY: `rounds + 1` is at most `limit`, at most MAGAZINE_ROUNDS.
            unsafe { loaded.set_object_at(rounds + 1, object) };
            true
        });
        if pushed {
            self.loaded_rounds.store(rounds + 1, Ordering::Relaxed);
        }
        pushed
    }

    /// Publishes the previous magazine's count after a slow path.
    #[inline]
    fn publish_previous(&self, magazines: &CpuMagazines) {
        self.previous_rounds
            .store(magazines.previous.rounds(), Ordering::Relaxed);
    }

    /// Objects in this slot's magazines, as last published.
    fn cached(&self) -> usize {
        self.loaded_rounds.load(Ordering::Relaxed) + self.previous_rounds.load(Ordering::Relaxed)
    }
}

/// A slab cache shared by `CPUS` CPUs through per-CPU magazines that are
/// used without a lock: every call names its CPU with a [`PinnedCpu`]
/// token. A token whose index is `CPUS` or more still works, through the
/// depot lock.
///
/// Checks: the immediate double free on the fast path, everything else
/// when magazines go back to the slabs. With the per-object
/// [`Hardening`](crate::Hardening) checks on (a debug mode), the magazines
/// stay unused and every call goes to the slabs with the checks, so the fast
/// path needs no flag test.
///
/// ```
/// # #[cfg(feature = "std")] {
/// use kalloc_api::PinnedCpu;
/// use kalloc_slab::{HostPages, PinnedPerCpuCache, SlabConfig};
///
/// let pages = HostPages::new();
/// let cache: PinnedPerCpuCache<4> = PinnedPerCpuCache::new(SlabConfig::new(48, 8)).unwrap();
/// // SAFETY: this thread is the only user of CPU 0's slot of this cache.
/// let cpu = unsafe { PinnedCpu::new(0) };
/// let object = cache.allocate(&cpu, &pages).unwrap();
/// // SAFETY: `object` came from this cache.
/// unsafe { cache.deallocate(&cpu, object, &pages) }.unwrap();
/// assert_eq!(cache.stats().objects_in_use, 0);
/// cache.flush_cpu(&cpu, &pages);
/// cache.shrink(&pages);
/// assert_eq!(pages.pages_out(), 0);
/// # }
/// ```
pub struct PinnedPerCpuCache<const CPUS: usize> {
    cpus: [PinnedSlot; CPUS],
    /// Objects a CPU's loaded magazine may take on the fast path: a whole
    /// magazine, or none when the per-object checks are on. Then every
    /// free misses the fast path, allocations find the magazines empty, and
    /// both go to the slabs through the checked paths, with no flag test
    /// on the fast path.
    magazine_limit: usize,
    depot: Mutex<Depot>,
    format: SlabFormat,
}

// SAFETY: a slot's magazines are only used by the holder of that CPU's
// token, one context at a time by the token's contract; the depot is behind
// its lock; the published counts are atomic; the format is read-only.
unsafe impl<const CPUS: usize> Sync for PinnedPerCpuCache<CPUS> {}

impl<const CPUS: usize> PinnedPerCpuCache<CPUS> {
    /// A cache for `config`'s objects.
    ///
    /// # Errors
    /// As [`SlabCache::new`].
    #[cfg(not(loom))]
    pub const fn new(config: SlabConfig) -> Result<Self, AllocError> {
        let cache = match SlabCache::new(config) {
            Ok(cache) => cache,
            Err(error) => return Err(error),
        };
        Ok(Self {
            format: *cache.format(),
            cpus: [const { PinnedSlot::empty() }; CPUS],
            magazine_limit: magazine_limit(cache.format()),
            depot: Mutex::new(Depot::new(cache)),
        })
    }

    /// A cache for `config`'s objects.
    ///
    /// # Errors
    /// As [`SlabCache::new`].
    #[cfg(loom)]
    pub fn new(config: SlabConfig) -> Result<Self, AllocError> {
        let cache = SlabCache::new(config)?;
        Ok(Self {
            format: *cache.format(),
            cpus: core::array::from_fn(|_| PinnedSlot::empty()),
            magazine_limit: magazine_limit(cache.format()),
            depot: Mutex::new(Depot::new(cache)),
        })
    }

    /// Bytes a caller may use in each object.
    pub const fn object_size(&self) -> usize {
        self.format.geometry.object_size
    }

    /// An object off `cpu`'s loaded magazine, or `None` when that takes
    /// more than a pop (the magazine is empty, `cpu` has no slot, or the
    /// per-object checks are on): then call [`allocate`](Self::allocate).
    ///
    /// The fast path alone, with no call in it, for fronts that branch to
    /// one out-of-line slow path of their own: a function whose only calls
    /// are in tail position saves no registers and sets up no frame.
    ///
    /// ```
    /// # #[cfg(feature = "std")] {
    /// use kalloc_api::PinnedCpu;
    /// use kalloc_slab::{HostPages, PinnedPerCpuCache, SlabConfig};
    ///
    /// let pages = HostPages::new();
    /// let cache: PinnedPerCpuCache<1> = PinnedPerCpuCache::new(SlabConfig::new(64, 8)).unwrap();
    /// // SAFETY: this thread is the only one using CPU 0's slot.
    /// let cpu = unsafe { PinnedCpu::new(0) };
    /// // A front's allocation: the pop inline, the rest out of line.
    /// let object = match cache.allocate_fast(&cpu) {
    ///     Some(object) => object,
    ///     None => cache.allocate(&cpu, &pages).unwrap(),
    /// };
    /// // SAFETY: `object` came from this cache and is no longer used.
    /// if !unsafe { cache.deallocate_fast(&cpu, object) } {
    ///     // SAFETY: as above; the fast path changed nothing.
    ///     unsafe { cache.deallocate(&cpu, object, &pages) }.unwrap();
    /// }
    /// assert_eq!(cache.stats().objects_in_use, 0);
    /// # }
    /// ```
    #[inline(always)]
    pub fn allocate_fast(&self, cpu: &PinnedCpu) -> Option<NonNull<u8>> {
        let slot = self.cpus.get(cpu.index())?;
        // SAFETY: `cpu` is this slot's token. With the per-object checks on
        // the magazines stay empty (see `magazine_limit`), so nothing
        // unchecked is handed out here.
        unsafe { slot.pop() }
    }

    /// Pushes `object` onto `cpu`'s loaded magazine; `false` (and nothing
    /// changed) when that takes more than a push: the magazine is full,
    /// `cpu` has no slot, the per-object checks are on, or `object` is the
    /// one freed last (a double free). Then call
    /// [`deallocate`](Self::deallocate), which handles each case.
    ///
    /// # Safety
    /// As for [`deallocate`](Self::deallocate).
    #[inline(always)]
    pub unsafe fn deallocate_fast(&self, cpu: &PinnedCpu, object: NonNull<u8>) -> bool {
        let Some(slot) = self.cpus.get(cpu.index()) else {
            return false;
        };
        // SAFETY: `cpu` is this slot's token.
        unsafe { slot.try_push(object, self.magazine_limit) }
    }

    /// Allocates one object, from `cpu`'s magazines when they have one.
    ///
    /// # Errors
    /// As [`SlabCache::allocate`].
    #[inline]
    pub fn allocate<P: PageSource + ?Sized>(
        &self,
        cpu: &PinnedCpu,
        pages: &P,
    ) -> Result<NonNull<u8>, AllocError> {
        let Some(slot) = self.cpus.get(cpu.index()) else {
            return self.allocate_unslotted(pages).into_result();
        };
        // SAFETY: `cpu` is this slot's token.
        match unsafe { slot.pop() } {
            Some(object) => Ok(object),
            // SAFETY: as above.
            None => unsafe { self.allocate_refilling(slot, pages) }.into_result(),
        }
    }

    /// The loaded magazine is empty: refill it, then hand out an object.
    ///
    /// # Safety
    /// The caller holds the token of `slot`'s CPU.
    #[cold]
    #[inline(never)]
    unsafe fn allocate_refilling<P: PageSource + ?Sized>(
        &self,
        slot: &PinnedSlot,
        pages: &P,
    ) -> PackedAllocation {
        if self.format.checks_objects() {
            return self.allocate_unslotted(pages);
        }
        // SAFETY: (caller).
        unsafe {
            slot.with(|magazines| {
                let object = magazines.refill(&self.depot, pages);
                slot.publish_previous(magazines);
                object
            })
        }
    }

    /// Allocation straight from the slabs, with the per-object checks when
    /// they are on: for a CPU without a slot, and for every CPU then.
    #[cold]
    #[inline(never)]
    fn allocate_unslotted<P: PageSource + ?Sized>(&self, pages: &P) -> PackedAllocation {
        let taken = self.depot.lock().cache.take(pages);
        PackedAllocation::from(taken.and_then(|object| {
            if self.format.checks_objects() {
                return handout_checked(&self.format, &self.depot, object, pages);
            }
            Ok(object)
        }))
    }

    /// Gives an object back into `cpu`'s magazines; it may have been
    /// allocated on any CPU.
    ///
    /// # Errors
    /// As [`PerCpuCache::deallocate`](crate::PerCpuCache::deallocate);
    /// nothing changes then.
    ///
    /// # Safety
    /// As for [`SlabCache::deallocate`]: normally `object` came from
    /// [`allocate`](Self::allocate) on this cache and the caller no longer
    /// uses it.
    #[inline]
    pub unsafe fn deallocate<P: PageSource + ?Sized>(
        &self,
        cpu: &PinnedCpu,
        object: NonNull<u8>,
        pages: &P,
    ) -> Result<(), FreeError> {
        let Some(slot) = self.cpus.get(cpu.index()) else {
            // SAFETY: (caller).
            return unsafe { self.free_unslotted(object, pages) };
        };
        // SAFETY: `cpu` is this slot's token.
        if unsafe { slot.push(object, self.magazine_limit) }? {
            return Ok(());
        }
        // SAFETY: as above; the rest is the caller's promise.
        unsafe { self.free_spilling(slot, object, pages) }
    }

    /// Returns every object in `cpu`'s magazines to the slabs. Run it on
    /// each CPU (from an inter-processor interrupt, or each CPU's idle loop)
    /// before [`shrink`](Self::shrink) to give back everything.
    pub fn flush_cpu<P: PageSource + ?Sized>(&self, cpu: &PinnedCpu, pages: &P) {
        let Some(slot) = self.cpus.get(cpu.index()) else {
            return;
        };
        // SAFETY: `cpu` is this slot's token.
        unsafe {
            slot.with(|magazines| {
                let mut depot = self.depot.lock();
                for magazine in magazines.both() {
                    depot.flush(magazine, MAGAZINE_ROUNDS, pages);
                }
                slot.publish_previous(magazines);
            });
        }
    }

    /// Returns the depot's magazines to the slabs and gives every empty slab
    /// back to `pages`; returns the slabs given back. Objects in CPUs'
    /// magazines stay there (see [`flush_cpu`](Self::flush_cpu)).
    pub fn shrink<P: PageSource + ?Sized>(&self, pages: &P) -> usize {
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

    /// A snapshot of the cache's usage; objects in CPUs' magazines are
    /// counted as cached from the counts each CPU last published, so the
    /// figures are exact when no call is in flight. During calls, objects
    /// on their way between a magazine and the slabs may count as in use.
    pub fn stats(&self) -> CacheStats {
        let in_magazines: usize = self.cpus.iter().map(PinnedSlot::cached).sum();
        let depot = self.depot.lock();
        depot.stats(in_magazines)
    }

    /// The loaded magazine is full, or the per-object checks are on: make
    /// room and push `object`, or free it to the slabs with the checks.
    ///
    /// # Safety
    /// The caller holds the token of `slot`'s CPU; the rest as for
    /// [`deallocate`](Self::deallocate).
    #[cold]
    #[inline(never)]
    unsafe fn free_spilling<P: PageSource + ?Sized>(
        &self,
        slot: &PinnedSlot,
        object: NonNull<u8>,
        pages: &P,
    ) -> Result<(), FreeError> {
        if self.format.checks_objects() {
            // SAFETY: (caller).
            return unsafe { self.free_unslotted(object, pages) };
        }
        // SAFETY: (caller).
        unsafe {
            slot.with(|magazines| {
                magazines.spill(&self.depot, object, pages);
                slot.publish_previous(magazines);
            });
        }
        Ok(())
    }

    /// Free straight to the slabs, with the per-object checks when they are
    /// on: for a CPU without a slot, and for every CPU then.
    ///
    /// # Safety
    /// As for [`deallocate`](Self::deallocate).
    #[cold]
    #[inline(never)]
    unsafe fn free_unslotted<P: PageSource + ?Sized>(
        &self,
        object: NonNull<u8>,
        pages: &P,
    ) -> Result<(), FreeError> {
        if !self.format.checks_objects() {
            // SAFETY: (caller) as for `SlabCache::deallocate`.
            return unsafe { self.depot.lock().cache.put(object, pages) };
        }
        // SAFETY: (caller) the header under `object` is readable.
        let (header, index) = unsafe { self.format.locate(object) }?;
        // SAFETY: `locate` proved `object` is slot `index` of our live slab
        // `header`, which stays live while a caller holds the object.
        unsafe { checks::begin_free(&self.format, header, index, object) }?;
        // SAFETY: as above; the caller gave the object up.
        unsafe { checks::poison(&self.format, object) };
        // SAFETY: (caller) as for `SlabCache::deallocate`.
        let result = unsafe { self.depot.lock().cache.put(object, pages) };
        if result.is_err() {
            // SAFETY: as above; the object stays the caller's.
            unsafe { checks::undo_free(&self.format, header, index) };
        }
        result
    }
}

/// [`PinnedPerCpuCache::magazine_limit`] for caches of `format`.
const fn magazine_limit(format: &SlabFormat) -> usize {
    if format.checks_objects() {
        0
    } else {
        MAGAZINE_ROUNDS
    }
}

/// The immediate double free the fast path catches, out of line: marked
/// cold, it keeps that test a plain compare and branch.
#[cold]
#[inline(never)]
fn immediate_double_free() -> Result<bool, FreeError> {
    Err(FreeError::DoubleFree)
}

#[cfg(all(test, not(loom)))]
mod tests;
