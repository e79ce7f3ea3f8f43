//! Slab geometry: slot size, slab order and where objects sit in a slab.
//!
//! A slab is `2^order` pages aligned to its own size, so masking any address
//! inside it with `!(slab_bytes - 1)` gives the slab's start, where its header
//! lives. Objects follow the header at `first_offset`, one every `stride`
//! bytes. The order is the smallest for which the bytes that can never hold
//! an object (header, padding, the tail too short for another slot) stay at
//! most 1/8 of the slab, as SLUB's `calculate_order` does with its fraction.

use kalloc_api::{AllocError, PAGE_SIZE};

use crate::config::Hardening;
use crate::slab::SlabHeader;

/// Bytes of a free-list link, the smallest slot.
pub(crate) const WORD_BYTES: usize = size_of::<usize>();
/// The largest slab order: slabs are at most `2^MAX_SLAB_ORDER` pages (256 KiB).
pub const MAX_SLAB_ORDER: u32 = 6;
/// The largest slab, in bytes.
pub const MAX_SLAB_BYTES: usize = PAGE_SIZE << MAX_SLAB_ORDER;
/// The smallest red zone after each object when [`Hardening::RED_ZONE`] is on;
/// padding up to the next aligned slot is guarded too.
pub const RED_ZONE_BYTES: usize = WORD_BYTES;
/// Waste per slab is kept at or below `slab_bytes / WASTE_FRACTION`.
const WASTE_FRACTION: usize = 8;
/// Bits per word of the double-free bitmap.
const BITMAP_WORD_BITS: usize = 64;
/// Fixed-point shift of the stride reciprocal: `offset * reciprocal >> 40` is
/// `offset / stride` exactly while `offset * stride < 2^40`, which holds for
/// every offset and stride below `MAX_SLAB_BYTES = 2^18`.
const RECIPROCAL_SHIFT: u32 = 40;

/// Where objects sit in the slabs of one cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Bytes a caller may use in each object.
    pub object_size: usize,
    /// Alignment of every object (at least a word).
    pub align: usize,
    /// Distance between consecutive objects: size, red zone, padding.
    pub stride: usize,
    /// Offset of the first object from the slab start (the header comes first).
    pub first_offset: usize,
    /// Objects per slab.
    pub capacity: usize,
    /// `capacity * stride`: bytes from the first object to the end of the last.
    pub span: usize,
    /// Pages per slab (a power of two; also the slab's alignment in pages).
    pub slab_pages: usize,
    /// Bytes per slab.
    pub slab_bytes: usize,
    /// `ceil(2^RECIPROCAL_SHIFT / stride)`: slot indexes without division.
    pub reciprocal: u64,
    /// Words of the double-free bitmap after the header (0 when off).
    pub bitmap_words: usize,
}

const fn round_up(value: usize, align: usize) -> Option<usize> {
    match value.checked_add(align - 1) {
        Some(sum) => Some(sum & !(align - 1)),
        None => None,
    }
}

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

impl Geometry {
    /// The geometry for objects of `object_size` bytes aligned to `align`.
    ///
    /// # Errors
    /// [`AllocError::ZeroSize`] for zero-size objects,
    /// [`AllocError::BadAlignment`] for an alignment that is not a power of
    /// two or exceeds a page, [`AllocError::Overflow`] for objects too large
    /// to fit a slab of `MAX_SLAB_BYTES` beside its header.
    pub(crate) const fn new(
        object_size: usize,
        align: usize,
        hardening: Hardening,
    ) -> Result<Self, AllocError> {
        if object_size == 0 {
            return Err(AllocError::ZeroSize);
        }
        if !align.is_power_of_two() || align > PAGE_SIZE {
            return Err(AllocError::BadAlignment);
        }
        let align = max(align, WORD_BYTES);
        let mut body = max(object_size, WORD_BYTES);
        if hardening.contains(Hardening::RED_ZONE) {
            body = match body.checked_add(RED_ZONE_BYTES) {
                Some(body) => body,
                None => return Err(AllocError::Overflow),
            };
        }
        let stride = match round_up(body, align) {
            Some(stride) if stride < MAX_SLAB_BYTES => stride,
            _ => return Err(AllocError::Overflow),
        };
        let mut fallback: Option<Self> = None;
        let mut order = 0;
        while order <= MAX_SLAB_ORDER {
            let slab_bytes = PAGE_SIZE << order;
            if let Some(geometry) =
                Self::with_slab(object_size, align, stride, slab_bytes, hardening)
            {
                let waste = slab_bytes - geometry.capacity * stride;
                if waste * WASTE_FRACTION <= slab_bytes {
                    return Ok(geometry);
                }
                // Keep the order with the smallest share of waste in case none is good enough.
                let better = match fallback {
                    None => true,
                    Some(best) => {
                        let best_waste = best.slab_bytes - best.capacity * stride;
                        waste * best.slab_bytes < best_waste * slab_bytes
                    }
                };
                if better {
                    fallback = Some(geometry);
                }
            }
            order += 1;
        }
        match fallback {
            Some(geometry) => Ok(geometry),
            None => Err(AllocError::Overflow),
        }
    }

    const fn with_slab(
        object_size: usize,
        align: usize,
        stride: usize,
        slab_bytes: usize,
        hardening: Hardening,
    ) -> Option<Self> {
        let bitmap_words = if hardening.contains(Hardening::DOUBLE_FREE_BITMAP) {
            (slab_bytes / stride).div_ceil(BITMAP_WORD_BITS)
        } else {
            0
        };
        let header_bytes = size_of::<SlabHeader>() + bitmap_words * size_of::<u64>();
        let first_offset = match round_up(header_bytes, align) {
            Some(offset) if offset < slab_bytes => offset,
            _ => return None,
        };
        let capacity = (slab_bytes - first_offset) / stride;
        if capacity == 0 {
            return None;
        }
        let shifted = 1u64 << RECIPROCAL_SHIFT;
        Some(Self {
            object_size,
            align,
            stride,
            first_offset,
            capacity,
            span: capacity * stride,
            slab_pages: slab_bytes / PAGE_SIZE,
            slab_bytes,
            reciprocal: shifted.div_ceil(stride as u64),
            bitmap_words,
        })
    }

    /// Mask that turns an address inside a slab into the slab's start.
    #[inline]
    pub(crate) const fn slab_mask(&self) -> usize {
        !(self.slab_bytes - 1)
    }

    /// The slot index of `offset` bytes past the first object, if `offset` is
    /// exactly the start of a slot.
    #[inline]
    pub(crate) const fn slot_index(&self, offset: usize) -> Option<usize> {
        if offset >= self.span {
            return None;
        }
        // Exact because offset * stride < 2^36 (see RECIPROCAL_SHIFT).
        let index = ((offset as u64 * self.reciprocal) >> RECIPROCAL_SHIFT) as usize;
        if index * self.stride == offset {
            Some(index)
        } else {
            None
        }
    }

    /// Whether `addr` is the start of a slot of the slab at `slab_start`.
    #[inline]
    pub(crate) const fn is_slot(&self, slab_start: usize, addr: usize) -> bool {
        let offset = addr
            .wrapping_sub(slab_start)
            .wrapping_sub(self.first_offset);
        self.slot_index(offset).is_some()
    }

    /// Bytes per slab that never hold caller data: header, padding, red
    /// zones and the tail.
    pub(crate) const fn waste_per_slab(&self) -> usize {
        self.slab_bytes - self.capacity * self.object_size
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn waste_stays_within_an_eighth_for_common_sizes() {
        for size in [
            8, 16, 24, 32, 48, 64, 96, 128, 200, 256, 512, 700, 1024, 2048, 4096,
        ] {
            for hardening in [Hardening::NONE, Hardening::DEBUG] {
                let g = Geometry::new(size, 8, hardening).unwrap();
                let waste = g.slab_bytes - g.capacity * g.stride;
                assert!(waste * 8 <= g.slab_bytes, "size {size}: {g:?}");
                assert!(g.first_offset >= size_of::<SlabHeader>() + g.bitmap_words * 8);
                assert!(g.first_offset + g.capacity * g.stride <= g.slab_bytes);
                assert!(g.slab_pages.is_power_of_two());
            }
        }
    }

    #[test]
    fn small_objects_use_single_pages() {
        let g = Geometry::new(32, 8, Hardening::NONE).unwrap();
        assert_eq!(g.slab_pages, 1);
        assert_eq!(g.stride, 32);
        let tiny = Geometry::new(1, 1, Hardening::NONE).unwrap();
        assert_eq!(tiny.stride, WORD_BYTES);
        assert_eq!(tiny.align, WORD_BYTES);
    }

    #[test]
    fn red_zone_widens_the_stride() {
        let plain = Geometry::new(64, 8, Hardening::NONE).unwrap();
        let guarded = Geometry::new(64, 8, Hardening::RED_ZONE).unwrap();
        assert_eq!(guarded.stride, plain.stride + RED_ZONE_BYTES);
    }

    #[test]
    fn bad_configurations_are_refused() {
        assert_eq!(
            Geometry::new(0, 8, Hardening::NONE),
            Err(AllocError::ZeroSize)
        );
        assert_eq!(
            Geometry::new(8, 3, Hardening::NONE),
            Err(AllocError::BadAlignment)
        );
        assert_eq!(
            Geometry::new(8, 0, Hardening::NONE),
            Err(AllocError::BadAlignment)
        );
        assert_eq!(
            Geometry::new(8, 2 * PAGE_SIZE, Hardening::NONE),
            Err(AllocError::BadAlignment)
        );
        assert_eq!(
            Geometry::new(MAX_SLAB_BYTES, 8, Hardening::NONE),
            Err(AllocError::Overflow)
        );
        assert_eq!(
            Geometry::new(usize::MAX, 8, Hardening::RED_ZONE),
            Err(AllocError::Overflow)
        );
        assert_eq!(
            Geometry::new(usize::MAX - 2, 8, Hardening::NONE),
            Err(AllocError::Overflow)
        );
    }

    #[test]
    fn reciprocal_index_matches_division_everywhere() {
        let strides = [8, 24, 40, 56, 200, 1000, 4104, 65536 - 8];
        let step = if cfg!(miri) { 97 } else { 1 };
        for stride in strides {
            let g = Geometry::new(stride, 8, Hardening::NONE).unwrap();
            assert_eq!(g.stride, stride);
            for offset in (0..g.capacity * g.stride).step_by(step) {
                let expected = (offset % stride == 0).then_some(offset / stride);
                assert_eq!(
                    g.slot_index(offset),
                    expected,
                    "stride {stride} offset {offset}"
                );
            }
            assert_eq!(g.slot_index(g.capacity * g.stride), None);
            assert_eq!(g.slot_index(usize::MAX), None);
        }
    }

    #[test]
    fn page_aligned_objects_fit() {
        let g = Geometry::new(4096, 4096, Hardening::NONE).unwrap();
        assert_eq!(g.first_offset, 4096);
        assert_eq!(g.first_offset % 4096, 0);
        assert!(g.capacity >= 7);
    }
}
