//! The small size classes: which slab cache serves a request.
//!
//! Classes step by 8 bytes up to 128, then by a quarter of the power of two
//! below them (160, 192, 224, 256, 320, ...) up to [`SMALL_MAX_BYTES`]. With
//! four classes per doubling no class wastes more than a fifth of itself on a
//! request just above the class below it, and from 64 bytes up at most 12.5%
//! (8-byte steps) or 20% (quarter steps): see `worst_case_waste_is_bounded`.
//!
//! Lookup is one table load indexed by `(size + 7) >> 3`; alignment above 8
//! bytes rounds the size up to a multiple of the alignment first. Every class
//! in `(2^k, 2^(k+1)]` is a multiple of `2^(k-2)`, and a rounded size that is
//! a multiple of a larger power of two is itself a class, so the class found
//! is always a multiple of the alignment: a class's natural alignment (the
//! largest power of two dividing its size) is enough for every request it
//! serves.

/// The largest request, in bytes, that a slab size class serves. Above it
/// the mid-size allocator's exact fit (a 16-byte header and granule, at most
/// 6% of a 513-byte block) wastes less than classes four to a doubling (up
/// to 20%), and mid-size requests of that range reuse free fragments no
/// larger request could.
pub const SMALL_MAX_BYTES: usize = 512;

/// Number of small size classes.
pub const SMALL_CLASS_COUNT: usize = 24;

/// Bytes between neighbouring classes up to [`LINEAR_MAX_BYTES`].
const LINEAR_STEP_BYTES: usize = 8;

/// The last class of the evenly spaced range.
const LINEAR_MAX_BYTES: usize = 128;

/// Object size of each small class, in bytes, ascending.
pub const SMALL_CLASS_BYTES: [usize; SMALL_CLASS_COUNT] = [
    8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120, 128, //
    160, 192, 224, 256, //
    320, 384, 448, 512,
];

/// Entries of the lookup table: one per 8-byte step from 0 to `SMALL_MAX_BYTES`.
const LOOKUP_LEN: usize = SMALL_MAX_BYTES / LINEAR_STEP_BYTES + 1;

/// `CLASS_OF_STEP[(size + 7) / 8]` is the smallest class that holds `size` bytes.
static CLASS_OF_STEP: [u8; LOOKUP_LEN] = build_lookup();

const fn build_lookup() -> [u8; LOOKUP_LEN] {
    let mut table = [0u8; LOOKUP_LEN];
    let mut step = 0;
    let mut class = 0;
    while step < LOOKUP_LEN {
        while SMALL_CLASS_BYTES[class] < step * LINEAR_STEP_BYTES {
            class += 1;
        }
        table[step] = class as u8;
        step += 1;
    }
    table
}

const _: () = {
    let mut step = 0;
    while step < LOOKUP_LEN {
        assert!((CLASS_OF_STEP[step] as usize) < SMALL_CLASS_COUNT);
        step += 1;
    }
    assert!(SMALL_CLASS_BYTES[SMALL_CLASS_COUNT - 1] == SMALL_MAX_BYTES);
    assert!(SMALL_CLASS_BYTES[15] == LINEAR_MAX_BYTES);
    assert!(SMALL_CLASS_COUNT <= u8::MAX as usize);
};

/// The class serving `size` bytes at `align`, or `None` when the request is
/// larger than [`SMALL_MAX_BYTES`] once rounded up to the alignment.
///
/// A zero size is served as one byte.
#[inline]
pub fn small_class(size: usize, align: usize) -> Option<usize> {
    debug_assert!(align.is_power_of_two());
    let rounded = if align <= LINEAR_STEP_BYTES {
        size
    } else {
        // `size <= SMALL_MAX_BYTES` is checked first so the sum cannot overflow.
        if size > SMALL_MAX_BYTES || align > SMALL_MAX_BYTES {
            return None;
        }
        (size.max(1) + align - 1) & !(align - 1)
    };
    if rounded > SMALL_MAX_BYTES {
        return None;
    }
    let class = CLASS_OF_STEP[rounded.div_ceil(LINEAR_STEP_BYTES)] as usize;
    // SAFETY: every entry of the table is a class index, checked at compile
    // time above. Telling the optimizer spares callers a bounds check when
    // they index their per-class arrays on the fast path.
    unsafe { core::hint::assert_unchecked(class < SMALL_CLASS_COUNT) };
    Some(class)
}

/// Object size of class `class`, in bytes.
#[inline]
pub const fn class_bytes(class: usize) -> usize {
    SMALL_CLASS_BYTES[class]
}

/// The alignment every object of class `class` has: the largest power of two
/// dividing its size.
#[inline]
pub const fn class_align(class: usize) -> usize {
    let size = SMALL_CLASS_BYTES[class];
    size & size.wrapping_neg()
}

/// The largest share of a class's object, in per-mille, left unused by a
/// request that only just missed the class below (the first class counts from
/// a one-byte request).
pub const fn worst_case_waste_permille(class: usize) -> usize {
    let size = SMALL_CLASS_BYTES[class];
    let smallest_request = if class == 0 {
        1
    } else {
        SMALL_CLASS_BYTES[class - 1] + 1
    };
    (size - smallest_request) * 1000 / size
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_gets_the_smallest_class_that_fits() {
        for size in 0..=SMALL_MAX_BYTES {
            let class = small_class(size, 1).unwrap();
            assert!(class_bytes(class) >= size.max(1), "size {size}");
            if class > 0 {
                assert!(class_bytes(class - 1) < size, "size {size} skipped a class");
            }
        }
        assert_eq!(small_class(SMALL_MAX_BYTES + 1, 1), None);
        assert_eq!(small_class(usize::MAX, 1), None);
    }

    #[test]
    fn aligned_requests_get_a_class_aligned_at_least_as_much() {
        let mut align = 1;
        while align <= 2 * SMALL_MAX_BYTES {
            for size in 0..=SMALL_MAX_BYTES + 1 {
                match small_class(size, align) {
                    Some(class) => {
                        assert!(class_bytes(class) >= size);
                        assert!(class_align(class) >= align, "size {size} align {align}");
                    }
                    None => assert!(size.max(1).next_multiple_of(align) > SMALL_MAX_BYTES),
                }
            }
            align *= 2;
        }
        assert_eq!(small_class(usize::MAX, 16), None);
    }

    #[test]
    fn worst_case_waste_is_bounded() {
        for class in 0..SMALL_CLASS_COUNT {
            let size = class_bytes(class);
            let waste = worst_case_waste_permille(class);
            // Below 64 bytes the 8-byte step dominates; above, the spacing.
            let bound = match size {
                ..64 => 875,
                64..=LINEAR_MAX_BYTES => 125,
                _ => 200,
            };
            assert!(waste <= bound, "class {size}: {waste} per-mille");
        }
        let worst_above_64 = (7..SMALL_CLASS_COUNT)
            .map(worst_case_waste_permille)
            .max()
            .unwrap();
        assert_eq!(worst_above_64, 196);
    }

    #[test]
    fn classes_ascend_and_stay_multiples_of_eight() {
        for pair in SMALL_CLASS_BYTES.windows(2) {
            assert!(pair[0] < pair[1]);
            assert_eq!(pair[1] % LINEAR_STEP_BYTES, 0);
        }
    }
}
