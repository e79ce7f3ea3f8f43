//! Operations: decoded from random input ([`RawOp`]), scaled to an allocator
//! family by a [`Profile`] into [`Op`]s the driver runs.
//!
//! Proptest and the fuzzer produce the same `RawOp`s (proptest through the
//! strategies in [`strategy`](crate::strategy), libFuzzer through
//! [`arbitrary`]), so a case found by one can be replayed by the other.

use arbitrary::Arbitrary;

/// One operation before scaling: small integers the input chooses freely.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Arbitrary)]
pub enum RawOp {
    /// Allocate; `size` and `align` are scaled by the profile.
    Allocate {
        /// Size selector.
        size: u32,
        /// Alignment selector.
        align: u8,
    },
    /// Free the `pick`-th live block.
    Free {
        /// Which live block (modulo the number live).
        pick: u16,
    },
    /// Resize the `pick`-th live block.
    Realloc {
        /// Which live block.
        pick: u16,
        /// Size selector for the new size.
        size: u32,
    },
    /// Free a block that was freed before and overlaps nothing live.
    DoubleFree {
        /// Which remembered freed block.
        pick: u16,
    },
    /// Free an address outside every range the allocator owns.
    FreeForeign {
        /// Which foreign address.
        pick: u16,
    },
    /// Free an address inside a live block, past its start.
    FreeMisaligned {
        /// Which live block.
        pick: u16,
        /// Offset selector.
        offset: u32,
    },
    /// Allocate a size no allocator can satisfy (near `u64::MAX`, past all memory).
    AllocateHuge {
        /// Which huge request.
        pick: u8,
    },
    /// Allocate zero bytes.
    AllocateZero,
    /// Allocate with an alignment that is zero or not a power of two.
    AllocateBadAlign {
        /// Which bad alignment.
        pick: u8,
    },
    /// Reserve a range of owned memory (boot allocators only).
    Reserve {
        /// Where, as a fraction of owned memory.
        at: u16,
        /// Length selector.
        size: u32,
    },
    /// Give cached memory back to the layer below.
    Shrink,
}

/// One operation as the driver runs it, with sizes and alignments in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Allocate `size` bytes aligned to `align`.
    Allocate {
        /// Bytes.
        size: u64,
        /// Alignment in bytes, a power of two.
        align: u64,
    },
    /// Free the `pick`-th live block.
    Free {
        /// Which live block.
        pick: usize,
    },
    /// Resize the `pick`-th live block to `size` bytes, keeping its alignment.
    Realloc {
        /// Which live block.
        pick: usize,
        /// New size in bytes.
        size: u64,
    },
    /// Free again a block freed earlier.
    DoubleFree {
        /// Which remembered freed block.
        pick: usize,
    },
    /// Free an address outside owned memory.
    FreeForeign {
        /// Which foreign address.
        pick: usize,
    },
    /// Free `offset` bytes past the start of a live block.
    FreeMisaligned {
        /// Which live block.
        pick: usize,
        /// Offset selector; the driver reduces it to `1..size` in units.
        offset: u64,
    },
    /// Allocate `size` bytes, more than can ever be satisfied.
    AllocateHuge {
        /// Bytes.
        size: u64,
        /// Alignment in bytes.
        align: u64,
    },
    /// Allocate zero bytes aligned to `align`.
    AllocateZero {
        /// Alignment in bytes.
        align: u64,
    },
    /// Allocate `size` bytes with a bad alignment.
    AllocateBadAlign {
        /// Bytes.
        size: u64,
        /// Zero, or not a power of two.
        align: u64,
    },
    /// Reserve `size` bytes at fraction `at / 65536` of owned memory.
    Reserve {
        /// Position selector.
        at: u16,
        /// Bytes.
        size: u64,
    },
    /// Give cached memory back.
    Shrink,
}

/// How random selectors become sizes and alignments for one allocator family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Granularity of sizes and alignments in bytes (4096 for frame allocators, 1 for heaps).
    pub unit: u64,
    /// Largest ordinary request in units.
    pub max_units: u64,
    /// Largest ordinary alignment in units (a power of two).
    pub max_align_units: u64,
    /// Smallest ordinary alignment in units (a power of two).
    pub min_align_units: u64,
}

/// Alignments (in units) that are not powers of two.
const BAD_ALIGN_UNITS: [u64; 6] = [0, 3, 5, 6, 12, 0x1001];

impl Profile {
    /// Frame allocators: whole 4 KiB frames, runs up to 64 frames, alignment up to 64 frames.
    pub const FRAMES: Self = Self {
        unit: 4096,
        max_units: 64,
        max_align_units: 64,
        min_align_units: 1,
    };

    /// Single frames only (per-CPU frame caches).
    pub const SINGLE_FRAMES: Self = Self {
        unit: 4096,
        max_units: 1,
        max_align_units: 1,
        min_align_units: 1,
    };

    /// Byte heaps: 1 byte to 1 MiB, alignment up to 4 KiB.
    pub const HEAP: Self = Self {
        unit: 1,
        max_units: 1 << 20,
        max_align_units: 4096,
        min_align_units: 1,
    };

    /// Small byte requests (object caches, small arenas): up to 4 KiB.
    pub const SMALL: Self = Self {
        unit: 1,
        max_units: 4096,
        max_align_units: 4096,
        min_align_units: 1,
    };

    /// Slab objects: requests up to 64 bytes aligned up to 8, each served by
    /// one object of the cache's (larger) size.
    pub const OBJECTS: Self = Self {
        unit: 1,
        max_units: 64,
        max_align_units: 8,
        min_align_units: 1,
    };

    /// Boot-time physical requests: 1 byte to 256 KiB, alignment up to 2 MiB
    /// (a huge page), never dereferenced.
    pub const BOOT: Self = Self {
        unit: 1,
        max_units: 256 << 10,
        max_align_units: 2 << 20,
        min_align_units: 1,
    };

    /// A size in units from a selector: log-uniform, so small sizes are common
    /// and every magnitude up to `max_units` appears.
    pub fn size_units(&self, selector: u32) -> u64 {
        let magnitude_count = u64::BITS - self.max_units.leading_zeros(); // bits of max
        let magnitude = u64::from(selector & 0x3f) % u64::from(magnitude_count);
        let span = 1u64 << magnitude;
        let size = span + u64::from(selector >> 6) % span;
        size.min(self.max_units)
    }

    /// An alignment in units from a selector: a power of two in
    /// `min_align_units..=max_align_units`, small ones more often.
    pub fn align_units(&self, selector: u8) -> u64 {
        let lo = self.min_align_units.trailing_zeros();
        let hi = self.max_align_units.trailing_zeros();
        // Half the requests take the minimum: most callers do not care.
        if selector & 1 == 0 {
            return self.min_align_units;
        }
        let shift = lo + u32::from(selector >> 1) % (hi - lo + 1);
        1 << shift
    }

    /// Scales one raw operation.
    pub fn scale(&self, raw: &RawOp) -> Op {
        let unit = self.unit;
        match *raw {
            RawOp::Allocate { size, align } => Op::Allocate {
                size: self.size_units(size) * unit,
                align: self.align_units(align) * unit,
            },
            RawOp::Free { pick } => Op::Free { pick: pick.into() },
            RawOp::Realloc { pick, size } => Op::Realloc {
                pick: pick.into(),
                size: self.size_units(size) * unit,
            },
            RawOp::DoubleFree { pick } => Op::DoubleFree { pick: pick.into() },
            RawOp::FreeForeign { pick } => Op::FreeForeign { pick: pick.into() },
            RawOp::FreeMisaligned { pick, offset } => Op::FreeMisaligned {
                pick: pick.into(),
                offset: offset.into(),
            },
            RawOp::AllocateHuge { pick } => {
                let huge = [
                    u64::MAX,
                    u64::MAX - unit + 1,
                    1 << 63,
                    (isize::MAX as u64) + 1,
                    1 << 48,
                ];
                let size = huge[usize::from(pick) % huge.len()];
                // Some requests also ask for a huge alignment.
                let align = if pick & 0x80 != 0 { 1 << 62 } else { unit };
                Op::AllocateHuge { size, align }
            }
            RawOp::AllocateZero => Op::AllocateZero {
                align: self.min_align_units * unit,
            },
            RawOp::AllocateBadAlign { pick } => Op::AllocateBadAlign {
                size: unit,
                align: BAD_ALIGN_UNITS[usize::from(pick) % BAD_ALIGN_UNITS.len()] * unit,
            },
            RawOp::Reserve { at, size } => Op::Reserve {
                at,
                size: self.size_units(size) * unit,
            },
            RawOp::Shrink => Op::Shrink,
        }
    }

    /// Scales a whole sequence.
    pub fn scale_all(&self, raw: &[RawOp]) -> Vec<Op> {
        raw.iter().map(|op| self.scale(op)).collect()
    }
}

/// Relative weights of each kind of operation in generated sequences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    /// Ordinary allocations.
    pub allocate: u32,
    /// Frees of live blocks.
    pub free: u32,
    /// Reallocations.
    pub realloc: u32,
    /// Each hostile operation (double free, foreign, misaligned, huge, zero, bad alignment).
    pub hostile: u32,
    /// Reservations.
    pub reserve: u32,
    /// Shrinks.
    pub shrink: u32,
}

impl Mix {
    /// Allocation slightly ahead of frees, so sequences reach high fill and
    /// exhaustion, with a sprinkling of every hostile operation.
    pub const CHURN: Self = Self {
        allocate: 40,
        free: 32,
        realloc: 8,
        hostile: 2,
        reserve: 0,
        shrink: 1,
    };

    /// Frees slightly ahead of allocations, so few blocks are live and the
    /// most recent one is often the one freed or resized (a bump arena gives
    /// back only that one).
    pub const STACK: Self = Self {
        allocate: 40,
        free: 44,
        realloc: 12,
        hostile: 2,
        reserve: 0,
        shrink: 0,
    };

    /// [`CHURN`](Self::CHURN) with reservations of free memory mixed in.
    pub const CHURN_RESERVING: Self = Self {
        reserve: 2,
        ..Self::CHURN
    };

    /// A boot allocator: allocations and reservations, never frees.
    pub const BOOT: Self = Self {
        allocate: 30,
        free: 0,
        realloc: 0,
        hostile: 2,
        reserve: 8,
        shrink: 0,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_cover_every_magnitude_and_stay_in_bounds() {
        let profile = Profile::HEAP;
        let sizes: Vec<u64> = (0..u32::from(u16::MAX))
            .map(|s| profile.size_units(s.wrapping_mul(2_654_435_761)))
            .collect();
        assert!(sizes.iter().all(|&s| (1..=1 << 20).contains(&s)));
        assert!(sizes.contains(&1));
        assert!(sizes.iter().any(|&s| s > 1 << 19));
    }

    #[test]
    fn alignments_are_powers_of_two_in_range() {
        let profile = Profile::FRAMES;
        for selector in 0..=u8::MAX {
            let align = profile.align_units(selector);
            assert!(align.is_power_of_two() && align <= 64, "{align}");
        }
        let max_seen = (0..=u8::MAX).map(|s| profile.align_units(s)).max();
        assert_eq!(max_seen, Some(64));
    }

    #[test]
    fn bad_alignments_are_never_powers_of_two() {
        for pick in 0..=u8::MAX {
            let op = Profile::FRAMES.scale(&RawOp::AllocateBadAlign { pick });
            let Op::AllocateBadAlign { align, .. } = op else {
                panic!("{op:?}")
            };
            assert!(!align.is_power_of_two());
        }
    }
}
