//! Usage figures: per size class, per path, and in total.

use kalloc_api::Stats;

use crate::backend::BackendStats;
use crate::size_class::SMALL_CLASS_COUNT;

/// Usage of one small size class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Object size of the class, in bytes.
    pub object_bytes: usize,
    /// Objects handed out and not yet freed.
    pub objects_in_use: usize,
    /// The most objects in use at once (for the per-CPU fronts, the most out
    /// of the slabs at once, in use or in magazines: an upper bound).
    pub peak_objects_in_use: usize,
    /// Bytes of the slabs the class holds.
    pub bytes_held: usize,
}

impl ClassStats {
    /// Held bytes not handed out as objects (free slots, slab headers).
    pub const fn overhead_bytes(&self) -> usize {
        self.bytes_held
            .saturating_sub(self.objects_in_use * self.object_bytes)
    }
}

/// A snapshot of a heap's usage.
///
/// `bytes_in_use` counts the sizes callers asked for; `bytes_held` what the
/// heap took from its page source or region. In region mode the mid-size
/// allocator holds the whole region, less what it lent to slabs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapStats {
    /// All paths together (the peak is the sum of the paths' peaks: an upper bound).
    pub total: Stats,
    /// Requests served by the size classes. The per-CPU fronts count whole
    /// objects, not requested bytes; objects cached in their magazines are
    /// not in use; their peak is that of objects out of the slabs (in use or
    /// cached), an upper bound; and they keep no allocation counts.
    pub small: Stats,
    /// Requests served by the mid-size allocator.
    pub mid: Stats,
    /// Requests served by whole pages.
    pub large: Stats,
    /// Each size class.
    pub classes: [ClassStats; SMALL_CLASS_COUNT],
    /// Free bytes inside the mid-size allocator.
    pub mid_free_bytes: usize,
    /// The largest request the mid-size allocator can serve without growing.
    pub mid_largest_free_bytes: usize,
}

impl HeapStats {
    /// External fragmentation of the mid-size allocator, in per-mille: the
    /// share of its free memory outside the largest free block (0 when all
    /// free memory is one block, or none is free).
    pub const fn fragmentation_permille(&self) -> usize {
        if self.mid_free_bytes == 0 {
            return 0;
        }
        let outside = self
            .mid_free_bytes
            .saturating_sub(self.mid_largest_free_bytes);
        ((outside as u128 * 1000) / self.mid_free_bytes as u128) as usize
    }
}

/// Puts the heap's figures together.
pub(crate) fn assemble(
    small: Stats,
    backend: BackendStats,
    classes: [ClassStats; SMALL_CLASS_COUNT],
) -> HeapStats {
    HeapStats {
        total: small.merged(backend.mid).merged(backend.large),
        small,
        mid: backend.mid,
        large: backend.large,
        classes,
        mid_free_bytes: backend.mid_free_bytes,
        mid_largest_free_bytes: backend.mid_largest_free,
    }
}
