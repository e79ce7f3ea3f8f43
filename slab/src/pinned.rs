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
/// objects in each published for [`PinnedPerCpuCache::stats`]: the loaded
/// one's after every call, the previous one's when the slow path changes it.
#[repr(align(64))]
struct PinnedSlot {
    magazines: UnsafeCell<CpuMagazines>,
    loaded_rounds: AtomicUsize,
    previous_rounds: AtomicUsize,
}

// The fast path finds a slot with a shift (see `MAGAZINE_ROUNDS`).
#[cfg(not(loom))]
const _: () = assert!(size_of::<PinnedSlot>() == 512);

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

    /// Runs `f` on this slot's magazines, then publishes the loaded one's count.
    ///
    /// # Safety
    /// The caller holds the [`PinnedCpu`] token of this slot's CPU.
    #[inline(always)]
    unsafe fn with<R>(&self, f: impl FnOnce(&mut CpuMagazines) -> R) -> R {
        self.magazines.with_mut(|magazines| {
            // SAFETY: (caller) the token's context is the only one using this
            // slot until the token drops, and this call does not nest.
            let magazines = unsafe { &mut *magazines };
            let result = f(magazines);
            self.loaded_rounds
                .store(magazines.loaded.rounds(), Ordering::Relaxed);
            result
        })
    }

    /// Pops an object off the loaded magazine; `None` when it is empty.
    ///
    /// The fast path, kept apart from [`with`](Self::with) so that it
    /// publishes the count it has in a register, and so small that it
    /// inlines into callers while the slow paths stay out of line.
    ///
    /// # Safety
    /// As for [`with`](Self::with).
    #[inline(always)]
    unsafe fn pop(&self) -> Option<NonNull<u8>> {
        self.magazines.with_mut(|magazines| {
            // SAFETY: (caller) as in `with`.
            let loaded = unsafe { &mut (*magazines).loaded };
            let object = loaded.pop()?;
            self.loaded_rounds.store(loaded.rounds(), Ordering::Relaxed);
            Some(object)
        })
    }

    /// Pushes `object` onto the loaded magazine: `Ok(true)` when it went
    /// in, `Ok(false)` when the magazine is full, and the double free when
    /// `object` is the one freed last.
    ///
    /// # Safety
    /// As for [`with`](Self::with).
    #[inline(always)]
    unsafe fn push(&self, object: NonNull<u8>) -> Result<bool, FreeError> {
        self.magazines.with_mut(|magazines| {
            // SAFETY: (caller) as in `with`.
            let loaded = unsafe { &mut (*magazines).loaded };
            let rounds = loaded.rounds();
            if loaded.top() == object {
                return Err(FreeError::DoubleFree);
            }
            if loaded.push(object).is_err() {
                return Ok(false);
            }
            // Published from the register: the store of `object` above
            // might otherwise force a reload of the count.
            self.loaded_rounds.store(rounds + 1, Ordering::Relaxed);
            Ok(true)
        })
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
/// Checks are those of [`PerCpuCache`](crate::PerCpuCache): the immediate
/// double free on the fast path, everything else when magazines go back to
/// the slabs, or on every call with the per-object
/// [`Hardening`](crate::Hardening) checks on.
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
            depot: Mutex::new(Depot::new(cache)),
        })
    }

    /// Bytes a caller may use in each object.
    pub const fn object_size(&self) -> usize {
        self.format.geometry.object_size
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
            Some(object) if !self.format.checks_objects() => Ok(object),
            Some(object) => handout_checked(&self.format, &self.depot, object, pages),
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
        // SAFETY: (caller).
        let refilled = unsafe {
            slot.with(|magazines| {
                let object = magazines.refill(&self.depot, pages);
                slot.publish_previous(magazines);
                object
            })
        };
        PackedAllocation::from(refilled.and_then(|object| self.hand_out(object, pages)))
    }

    /// Allocation for a CPU without a slot: straight from the slabs.
    #[cold]
    #[inline(never)]
    fn allocate_unslotted<P: PageSource + ?Sized>(&self, pages: &P) -> PackedAllocation {
        let taken = self.depot.lock().cache.take(pages);
        PackedAllocation::from(taken.and_then(|object| self.hand_out(object, pages)))
    }

    /// `object`, after the per-object checks when they are on.
    #[inline]
    fn hand_out<P: PageSource + ?Sized>(
        &self,
        object: NonNull<u8>,
        pages: &P,
    ) -> Result<NonNull<u8>, AllocError> {
        if self.format.checks_objects() {
            return handout_checked(&self.format, &self.depot, object, pages);
        }
        Ok(object)
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
        if self.format.checks_objects() {
            // SAFETY: (caller).
            return unsafe { self.checked_free(cpu, object, pages) };
        }
        // SAFETY: (caller).
        unsafe { self.push(cpu, object, pages) }
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

    /// Puts `object` into `cpu`'s magazines, spilling when full.
    ///
    /// # Safety
    /// As for [`deallocate`](Self::deallocate).
    #[inline]
    unsafe fn push<P: PageSource + ?Sized>(
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
        if unsafe { slot.push(object) }? {
            return Ok(());
        }
        // SAFETY: as above.
        unsafe { self.free_spilling(slot, object, pages) };
        Ok(())
    }

    /// The loaded magazine is full: make room, then push `object`.
    ///
    /// # Safety
    /// The caller holds the token of `slot`'s CPU.
    #[cold]
    #[inline(never)]
    unsafe fn free_spilling<P: PageSource + ?Sized>(
        &self,
        slot: &PinnedSlot,
        object: NonNull<u8>,
        pages: &P,
    ) {
        // SAFETY: (caller).
        unsafe {
            slot.with(|magazines| {
                magazines.spill(&self.depot, object, pages);
                slot.publish_previous(magazines);
            });
        }
    }

    /// Free for a CPU without a slot: straight to the slabs.
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
        // SAFETY: (caller) as for `SlabCache::deallocate`.
        unsafe { self.depot.lock().cache.put(object, pages) }
    }

    /// Free with per-object checks.
    ///
    /// # Safety
    /// As for [`deallocate`](Self::deallocate).
    #[cold]
    unsafe fn checked_free<P: PageSource + ?Sized>(
        &self,
        cpu: &PinnedCpu,
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
        let result = unsafe { self.push(cpu, object, pages) };
        if result.is_err() {
            // SAFETY: as above; the object stays the caller's.
            unsafe { checks::undo_free(&self.format, header, index) };
        }
        result
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
