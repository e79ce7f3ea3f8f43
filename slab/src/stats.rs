//! `CacheStats`: a snapshot of one cache's usage.

use kalloc_api::{PAGE_SIZE, Stats};

/// Usage of one cache.
///
/// Every object slot of every slab is exactly one of: in use by a caller,
/// cached in a per-CPU magazine or the depot, free in a slab, or quarantined
/// (found corrupted and never reused):
/// `objects_in_use + objects_cached + objects_free + objects_quarantined ==
/// slabs * objects_per_slab`.
///
/// ```
/// use kalloc_slab::CacheStats;
///
/// let stats = CacheStats { slabs: 2, objects_per_slab: 100, objects_in_use: 150, objects_free: 50, ..CacheStats::default() };
/// assert_eq!(stats.total_objects(), 200);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Bytes a caller may use in each object.
    pub object_size: usize,
    /// Bytes between consecutive objects (size, red zone, padding).
    pub slot_bytes: usize,
    /// Objects in each slab.
    pub objects_per_slab: usize,
    /// Pages in each slab.
    pub pages_per_slab: usize,
    /// Objects held by callers.
    pub objects_in_use: usize,
    /// The most objects out of the slabs at once since the cache was made:
    /// held by callers, cached in magazines, or quarantined one by one. For
    /// a cache without magazines, the peak of `objects_in_use` (plus any
    /// quarantined); with them, an upper bound of that peak, which no one
    /// counts on the magazines' lock-free path.
    pub peak_objects_out: usize,
    /// Free objects held in per-CPU magazines and the depot.
    pub objects_cached: usize,
    /// Free objects on the slabs' free lists.
    pub objects_free: usize,
    /// Objects found corrupted (poison or red zone overwritten, or already
    /// held) and withheld forever.
    pub objects_quarantined: usize,
    /// Slabs held, on any list or quarantined.
    pub slabs: usize,
    /// Slabs with no free object.
    pub full_slabs: usize,
    /// Slabs with some objects free and some not.
    pub partial_slabs: usize,
    /// Slabs with every object free, kept for reuse until `shrink`.
    pub empty_slabs: usize,
    /// Slabs whose free list was found corrupted; never used or given back.
    pub quarantined_slabs: usize,
    /// Pages taken from the page source and not given back: the slabs'
    /// and [`magazine_pages`](Self::magazine_pages).
    pub pages_held: usize,
    /// Pages a per-CPU front's depot holds for full magazines beyond those
    /// stored in the depot itself (0 for a plain cache).
    pub magazine_pages: usize,
    /// Bytes of the held pages that can never hold caller data: slab
    /// headers, bitmaps, padding, red zones and slab tails (free slots are
    /// not waste).
    pub waste_bytes: usize,
    /// Allocations refused because the page source had no slab to give.
    pub failed_allocations: u64,
    /// Corruption reports made by the cache (bad links, overwritten poison or
    /// red zones, objects handed out twice).
    pub corruptions: u64,
}

impl CacheStats {
    /// Object slots in all held slabs.
    pub const fn total_objects(&self) -> usize {
        self.slabs * self.objects_per_slab
    }

    /// Bytes taken from the page source.
    pub const fn bytes_held(&self) -> usize {
        self.pages_held * PAGE_SIZE
    }

    /// The same usage in the crate-independent [`Stats`] shape (allocation
    /// counters, which a cache does not keep, stay zero).
    pub const fn to_stats(&self) -> Stats {
        let bytes_in_use = self.objects_in_use * self.object_size;
        Stats {
            bytes_in_use,
            bytes_held: self.bytes_held(),
            peak_bytes_in_use: bytes_in_use,
            ..Stats::ZERO
        }
    }
}
