//! Magazines (Bonwick 2001): small stacks of free object pointers, the
//! per-CPU caching unit, and the depot that trades full ones between CPUs.

use core::ptr::NonNull;

use kalloc_api::sync::Mutex;
use kalloc_api::{AllocError, PackedAllocation, PageSource};

use crate::cache::{SlabCache, handout_checks};
use crate::config::{Hardening, SlabConfig};
use crate::slab::SlabFormat;
use crate::stats::CacheStats;

/// Object pointers one magazine holds: 61, which makes a magazine 62 words
/// with its count and sentinel, so that a pinned CPU's two magazines and
/// their published counts fill one KiB exactly, a power-of-two stride that
/// locates a CPU's slot with one shift. (4 under loom and 13 under miri, a
/// 256-byte slot, so that models and the interpreter reach the depot paths
/// in a few steps.) Larger magazines mean fewer trips to the depot lock
/// in a burst.
pub const MAGAZINE_ROUNDS: usize = if cfg!(loom) {
    4
} else if cfg!(miri) {
    13
} else {
    61
};
/// Full magazines the depot holds at most; further overflow goes back to
/// the slabs (2 under loom and 12 under miri). The first four (one under
/// loom) live in the depot itself, the rest in magazine-sized objects of a
/// small internal slab cache on the same page source (Bonwick's magazine
/// cache), so a burst of up to `DEPOT_MAGAZINES * MAGAZINE_ROUNDS` frees is
/// absorbed without going back to the slabs, and an idle cache pays for none
/// of it.
pub const DEPOT_MAGAZINES: usize = if cfg!(loom) {
    2
} else if cfg!(miri) {
    12
} else {
    32
};
/// Full magazines stored inside the depot (1 under loom).
pub(crate) const INLINE_MAGAZINES: usize = if cfg!(loom) { 1 } else { 4 };
/// Objects a CPU takes straight from the slabs when neither its magazines
/// nor the depot have any: half a magazine, so the next frees find room.
pub(crate) const REFILL_ROUNDS: usize = MAGAZINE_ROUNDS / 2;

/// A stack of up to [`MAGAZINE_ROUNDS`] free objects.
///
/// `objects[1..=rounds]` hold the stack and `objects[0]` a sentinel that is
/// never a real object, so the top can be read without testing for an empty
/// magazine (the immediate double-free check on every free).
#[derive(Clone, Copy)]
pub(crate) struct Magazine {
    rounds: usize,
    objects: [NonNull<u8>; MAGAZINE_ROUNDS + 1],
}

// SAFETY: the pointers are free objects the magazine's owner (a CPU slot or
// the depot, each behind a lock) holds exclusively.
unsafe impl Send for Magazine {}

impl Magazine {
    pub(crate) const EMPTY: Self = Self {
        rounds: 0,
        objects: [NonNull::dangling(); MAGAZINE_ROUNDS + 1],
    };

    /// Objects held.
    #[inline]
    pub(crate) const fn rounds(&self) -> usize {
        self.rounds
    }

    #[inline]
    pub(crate) const fn is_full(&self) -> bool {
        self.rounds >= MAGAZINE_ROUNDS
    }

    #[inline]
    pub(crate) fn pop(&mut self) -> Option<NonNull<u8>> {
        let top = self.rounds;
        if top == 0 {
            return None;
        }
        debug_assert!(top <= MAGAZINE_ROUNDS);
        // SAFETY: `rounds` never exceeds MAGAZINE_ROUNDS (only `push` raises
        // it, after checking), so `top` indexes the array.
        let object = unsafe { *self.objects.get_unchecked(top) };
        self.rounds = top - 1;
        Some(object)
    }

    /// Sets the count, for a CPU slot that keeps it elsewhere while its fast
    /// path runs (see `PinnedSlot`).
    #[inline]
    pub(crate) fn set_rounds(&mut self, rounds: usize) {
        debug_assert!(rounds <= MAGAZINE_ROUNDS);
        self.rounds = rounds;
    }

    /// Entry `index`: the object at stack depth `index` (1-based), or the
    /// sentinel at 0.
    ///
    /// # Safety
    /// `index` is at most [`MAGAZINE_ROUNDS`].
    #[inline(always)]
    pub(crate) unsafe fn object_at(&self, index: usize) -> NonNull<u8> {
        debug_assert!(index <= MAGAZINE_ROUNDS);
        // SAFETY: (caller) `index` is inside the array.
        unsafe { *self.objects.get_unchecked(index) }
    }

    /// Stores `object` as entry `index` (1-based); the count is the caller's.
    ///
    /// # Safety
    /// `1 <= index <= MAGAZINE_ROUNDS`.
    #[inline(always)]
    pub(crate) unsafe fn set_object_at(&mut self, index: usize, object: NonNull<u8>) {
        debug_assert!((1..=MAGAZINE_ROUNDS).contains(&index));
        // SAFETY: (caller) `index` is inside the array and not the sentinel.
        unsafe { *self.objects.get_unchecked_mut(index) = object };
    }

    /// The object `pop` would return next, or the sentinel when empty.
    #[inline]
    pub(crate) fn top(&self) -> NonNull<u8> {
        debug_assert!(self.rounds <= MAGAZINE_ROUNDS);
        // SAFETY: as in `pop`; index 0 is the sentinel.
        unsafe { *self.objects.get_unchecked(self.rounds) }
    }

    /// Pushes `object`; gives it back when the magazine is full.
    #[inline]
    pub(crate) fn push(&mut self, object: NonNull<u8>) -> Result<(), NonNull<u8>> {
        if self.rounds >= MAGAZINE_ROUNDS {
            return Err(object);
        }
        self.rounds += 1;
        // SAFETY: `rounds` is at most MAGAZINE_ROUNDS after the check above.
        unsafe { *self.objects.get_unchecked_mut(self.rounds) = object };
        Ok(())
    }
}

/// One CPU's pair of magazines: allocations pop from and frees push to the
/// loaded one; the previous one is swapped in when the loaded one runs empty
/// (or full), so a CPU alternating around a boundary never touches the depot.
pub(crate) struct CpuMagazines {
    pub(crate) loaded: Magazine,
    pub(crate) previous: Magazine,
}

impl CpuMagazines {
    pub(crate) const EMPTY: Self = Self {
        loaded: Magazine::EMPTY,
        previous: Magazine::EMPTY,
    };

    /// Exchanges loaded and previous (a copy on the slow path keeps the fast
    /// path free of index arithmetic).
    #[inline]
    pub(crate) fn swap(&mut self) {
        core::mem::swap(&mut self.loaded, &mut self.previous);
    }

    /// Both magazines, for flushing and counting.
    pub(crate) fn both(&mut self) -> [&mut Magazine; 2] {
        [&mut self.loaded, &mut self.previous]
    }

    /// The loaded magazine is empty: swap in the previous one if it has
    /// objects, else trade with the depot, else fill from the slabs; then
    /// pop an object. Out of line, and returning a [`PackedAllocation`], so
    /// that the fast paths around it stay small.
    #[cold]
    #[inline(never)]
    pub(crate) fn refill<P: PageSource + ?Sized>(
        &mut self,
        depot: &Mutex<Depot>,
        pages: &P,
    ) -> PackedAllocation {
        if self.previous.rounds() > 0 {
            self.swap();
        } else {
            let mut depot = depot.lock();
            if !depot.exchange_empty(&mut self.loaded, pages) {
                if let Err(error) = depot.fill(&mut self.loaded, REFILL_ROUNDS, pages) {
                    return PackedAllocation::from(Err(error));
                }
            }
        }
        PackedAllocation::from(self.loaded.pop().ok_or(AllocError::OutOfMemory))
    }

    /// The loaded magazine is full: swap in the previous one if it has room,
    /// else stock the full one in the depot, else return half to the slabs;
    /// then push `object`.
    #[cold]
    #[inline(never)]
    pub(crate) fn spill<P: PageSource + ?Sized>(
        &mut self,
        depot: &Mutex<Depot>,
        object: NonNull<u8>,
        pages: &P,
    ) {
        if !self.previous.is_full() {
            self.swap();
        } else {
            let mut depot = depot.lock();
            if !depot.exchange_full(&mut self.loaded, pages) {
                depot.flush(&mut self.loaded, MAGAZINE_ROUNDS / 2, pages);
            }
        }
        // Cannot fail: room was made above.
        let _ = self.loaded.push(object);
    }
}

/// Hands out `object` after the per-object checks; objects failing them are
/// quarantined and reported, and another is taken from the slabs.
#[cold]
pub(crate) fn handout_checked<P: PageSource + ?Sized>(
    format: &SlabFormat,
    depot: &Mutex<Depot>,
    mut object: NonNull<u8>,
    pages: &P,
) -> Result<NonNull<u8>, AllocError> {
    loop {
        // SAFETY: `object` came off a magazine or slab of this cache and
        // nobody else holds it.
        match unsafe { handout_checks(format, object) } {
            Ok(()) => return Ok(object),
            Err(error) => {
                let mut depot = depot.lock();
                depot.cache.quarantine_object(object, error);
                object = depot.cache.take(pages)?;
            }
        }
    }
}

/// A full magazine stored outside the depot, in an object of the depot's
/// magazine cache, linked into a stack.
struct StoredMagazine {
    next: *mut StoredMagazine,
    magazine: Magazine,
}

/// The magazine cache's objects: stored magazines, with hardened links.
const STORED_MAGAZINES: SlabConfig =
    SlabConfig::new(size_of::<StoredMagazine>(), align_of::<StoredMagazine>())
        .with_hardening(Hardening::FREELIST_HARDENED);

/// The shared layer under the CPUs: a bounded stock of full magazines and the
/// slab cache they are filled from and flushed to. Always behind one lock,
/// taken after a CPU's own lock, never before.
pub(crate) struct Depot {
    pub(crate) cache: SlabCache,
    full: [Magazine; INLINE_MAGAZINES],
    full_count: usize,
    /// Full magazines beyond the inline ones, newest first.
    stored: *mut StoredMagazine,
    stored_count: usize,
    /// Where stored magazines live.
    magazines: SlabCache,
}

// SAFETY: the stored magazines are objects of `magazines`, owned by the
// depot alone and only reached through it (behind the fronts' depot lock).
unsafe impl Send for Depot {}

impl Depot {
    pub(crate) const fn new(cache: SlabCache) -> Self {
        let magazines = match SlabCache::new(STORED_MAGAZINES) {
            Ok(magazines) => magazines,
            Err(_) => panic!("a stored magazine fits a slab"),
        };
        Self {
            cache,
            full: [Magazine::EMPTY; INLINE_MAGAZINES],
            full_count: 0,
            stored: core::ptr::null_mut(),
            stored_count: 0,
            magazines,
        }
    }

    /// Objects held in the depot's magazines.
    pub(crate) fn cached(&self) -> usize {
        let inline: usize = self.full[..self.full_count]
            .iter()
            .map(Magazine::rounds)
            .sum();
        let mut stored = 0;
        let mut next = self.stored;
        while !next.is_null() {
            // SAFETY: the stack links live stored magazines only.
            let entry = unsafe { &*next };
            stored += entry.magazine.rounds();
            next = entry.next;
        }
        inline + stored
    }

    /// Swaps the empty `magazine` for a full one; `false` if none is stocked.
    pub(crate) fn exchange_empty<P: PageSource + ?Sized>(
        &mut self,
        magazine: &mut Magazine,
        pages: &P,
    ) -> bool {
        if let Some(top) = NonNull::new(self.stored) {
            // SAFETY: the top of the stack is a live stored magazine.
            let entry = unsafe { top.as_ptr().read() };
            *magazine = entry.magazine;
            self.stored = entry.next;
            self.stored_count -= 1;
            // SAFETY: the object came from `magazines` and is not used again.
            let freed = unsafe { self.magazines.deallocate(top.cast(), pages) };
            debug_assert!(freed.is_ok(), "{freed:?}");
            return true;
        }
        let Some(last) = self.full_count.checked_sub(1) else {
            return false;
        };
        *magazine = self.full[last];
        self.full_count = last;
        true
    }

    /// Stocks the full `magazine`, leaving it empty; `false` if the depot is
    /// full (or no room for another stored magazine could be had).
    pub(crate) fn exchange_full<P: PageSource + ?Sized>(
        &mut self,
        magazine: &mut Magazine,
        pages: &P,
    ) -> bool {
        if let Some(slot) = self.full.get_mut(self.full_count) {
            *slot = *magazine;
            magazine.rounds = 0;
            self.full_count += 1;
            return true;
        }
        if INLINE_MAGAZINES + self.stored_count >= DEPOT_MAGAZINES {
            return false;
        }
        let Ok(object) = self.magazines.allocate(pages) else {
            return false;
        };
        let entry = object.cast::<StoredMagazine>();
        // SAFETY: a fresh object of the magazine cache, sized and aligned
        // for a `StoredMagazine`.
        unsafe {
            entry.as_ptr().write(StoredMagazine {
                next: self.stored,
                magazine: *magazine,
            });
        }
        self.stored = entry.as_ptr();
        self.stored_count += 1;
        magazine.rounds = 0;
        true
    }

    /// Returns the stored magazines (those beyond the inline ones) to the
    /// slabs: what an idle period leaves behind a burst.
    pub(crate) fn flush_stored<P: PageSource + ?Sized>(&mut self, pages: &P) {
        let mut magazine = Magazine::EMPTY;
        while !self.stored.is_null() {
            let stocked = self.exchange_empty(&mut magazine, pages);
            debug_assert!(stocked);
            self.flush(&mut magazine, MAGAZINE_ROUNDS, pages);
        }
    }

    /// Returns every cached object to the slabs and gives every empty slab
    /// back; returns the object slabs given back.
    pub(crate) fn shrink<P: PageSource + ?Sized>(&mut self, pages: &P) -> usize {
        self.flush_stock(pages);
        self.magazines.shrink(0, pages);
        self.cache.shrink(0, pages)
    }

    /// Flushes the stored magazines, then reaps the slabs as
    /// [`SlabCache::reap`]; returns the object slabs given back.
    pub(crate) fn reap<P: PageSource + ?Sized>(&mut self, pages: &P) -> usize {
        self.flush_stored(pages);
        self.magazines.reap(pages);
        self.cache.reap(pages)
    }

    /// The slab cache's stats with `in_magazines` objects held by CPUs and
    /// the depot's own counted as cached, and the magazine cache's pages as
    /// held.
    pub(crate) fn stats(&self, in_magazines: usize) -> CacheStats {
        let cached = in_magazines + self.cached();
        let mut stats = self.cache.stats();
        stats.objects_in_use = stats.objects_in_use.saturating_sub(cached);
        stats.objects_cached = cached;
        let magazine_pages = self.magazines.stats().pages_held;
        stats.magazine_pages = magazine_pages;
        stats.pages_held += magazine_pages;
        stats
    }

    /// Fills `magazine` with up to `rounds` objects from the slabs.
    ///
    /// # Errors
    /// The slab layer's error when not even one object could be had.
    pub(crate) fn fill<P: PageSource + ?Sized>(
        &mut self,
        magazine: &mut Magazine,
        rounds: usize,
        pages: &P,
    ) -> Result<(), AllocError> {
        while magazine.rounds() < rounds {
            match self.cache.take(pages) {
                Ok(object) => {
                    // Cannot fail: `rounds` is at most a magazine.
                    let _ = magazine.push(object);
                }
                Err(error) if magazine.rounds() == 0 => return Err(error),
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Returns up to `count` objects from `magazine` to the slabs. A pointer
    /// the slabs refuse (a wrong address freed into the front, or a double
    /// free the magazines could not see) is reported, not returned.
    pub(crate) fn flush<P: PageSource + ?Sized>(
        &mut self,
        magazine: &mut Magazine,
        count: usize,
        pages: &P,
    ) {
        for _ in 0..count {
            let Some(object) = magazine.pop() else {
                return;
            };
            // SAFETY: every magazine entry was given to the front's
            // `deallocate`, whose contract matches `SlabCache::deallocate`'s.
            if let Err(error) = unsafe { self.cache.put(object, pages) } {
                self.cache.report(error, object.as_ptr());
            }
        }
    }

    /// Returns every object in the depot's magazines to the slabs.
    pub(crate) fn flush_stock<P: PageSource + ?Sized>(&mut self, pages: &P) {
        self.flush_stored(pages);
        while let Some(last) = self.full_count.checked_sub(1) {
            let mut magazine = self.full[last];
            self.full_count = last;
            self.flush(&mut magazine, MAGAZINE_ROUNDS, pages);
        }
    }
}
