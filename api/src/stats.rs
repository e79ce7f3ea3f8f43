//! A snapshot of an allocator's usage.

/// Usage counters an allocator reports.
///
/// `bytes_in_use` is what callers hold; `bytes_held` is what the allocator took
/// from the layer below (pages from a frame allocator, an arena). Their
/// difference is overhead: free space inside held memory, headers, rounding.
///
/// ```
/// use kalloc_api::Stats;
///
/// let mut stats = Stats::default();
/// stats.record_allocation(48);
/// stats.bytes_held = 4096;
/// stats.record_deallocation(48);
/// assert_eq!(stats.peak_bytes_in_use, 48);
/// assert_eq!(stats.overhead_bytes(), 4096);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes currently handed out to callers.
    pub bytes_in_use: usize,
    /// Bytes taken from the underlying memory (pages, arena).
    pub bytes_held: usize,
    /// The largest `bytes_in_use` seen.
    pub peak_bytes_in_use: usize,
    /// Successful allocations since creation.
    pub allocations: u64,
    /// Successful deallocations since creation.
    pub deallocations: u64,
    /// Allocation requests that failed.
    pub failed_allocations: u64,
}

impl Stats {
    /// An all-zero snapshot (usable in `const` contexts).
    pub const ZERO: Self = Self {
        bytes_in_use: 0,
        bytes_held: 0,
        peak_bytes_in_use: 0,
        allocations: 0,
        deallocations: 0,
        failed_allocations: 0,
    };

    /// Counts an allocation of `bytes`.
    #[inline]
    pub fn record_allocation(&mut self, bytes: usize) {
        self.bytes_in_use += bytes;
        self.allocations += 1;
        if self.bytes_in_use > self.peak_bytes_in_use {
            self.peak_bytes_in_use = self.bytes_in_use;
        }
    }

    /// Counts a deallocation of `bytes`.
    #[inline]
    pub fn record_deallocation(&mut self, bytes: usize) {
        self.bytes_in_use -= bytes;
        self.deallocations += 1;
    }

    /// Counts a failed allocation.
    #[inline]
    pub fn record_failure(&mut self) {
        self.failed_allocations += 1;
    }

    /// Held bytes not in use by callers.
    #[inline]
    pub const fn overhead_bytes(&self) -> usize {
        self.bytes_held.saturating_sub(self.bytes_in_use)
    }

    /// Share of held memory that is in use, in per-mille (1000 when nothing is held).
    #[inline]
    pub const fn utilization_permille(&self) -> usize {
        if self.bytes_held == 0 {
            return 1000;
        }
        // u128 keeps the product exact for any usize.
        ((self.bytes_in_use as u128 * 1000) / self.bytes_held as u128) as usize
    }

    /// Adds another snapshot's counters (peaks add too: an upper bound).
    pub const fn merged(self, other: Self) -> Self {
        Self {
            bytes_in_use: self.bytes_in_use + other.bytes_in_use,
            bytes_held: self.bytes_held + other.bytes_held,
            peak_bytes_in_use: self.peak_bytes_in_use + other.peak_bytes_in_use,
            allocations: self.allocations + other.allocations,
            deallocations: self.deallocations + other.deallocations,
            failed_allocations: self.failed_allocations + other.failed_allocations,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_survives_frees_and_utilisation_is_exact() {
        let mut stats = Stats {
            bytes_held: 1000,
            ..Stats::ZERO
        };
        stats.record_allocation(600);
        stats.record_deallocation(100);
        stats.record_failure();
        assert_eq!(stats.bytes_in_use, 500);
        assert_eq!(stats.peak_bytes_in_use, 600);
        assert_eq!(stats.utilization_permille(), 500);
        assert_eq!(
            (
                stats.allocations,
                stats.deallocations,
                stats.failed_allocations
            ),
            (1, 1, 1)
        );
        assert_eq!(Stats::ZERO.utilization_permille(), 1000);
        let twice = stats.merged(stats);
        assert_eq!(twice.bytes_held, 2000);
        assert_eq!(twice.utilization_permille(), 500);
    }
}
