//! Model-based test of `BootMemory`: random maps and random reserve/allocate
//! sequences, checked step by step against a reference model built from plain
//! vectors of intervals.

use kalloc_api::{AllocError, FRAME_SIZE, MemoryMap, PhysAddr, Region, RegionKind};
use kalloc_bump::{BootMemory, PhysRange, Placement};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const RESERVED_SLOTS: usize = 24;

/// A tiny deterministic generator, so every failure names its seed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Sorted, merged half-open intervals; touching ones merge, as in the table.
fn union(intervals: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut sorted = intervals.to_vec();
    sorted.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (start, end) in sorted {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// `usable` minus `taken`, both sorted and merged.
fn gaps(usable: &[(u64, u64)], taken: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(lo, hi) in usable {
        let mut cursor = lo;
        for &(t_lo, t_hi) in taken {
            if t_hi <= cursor || t_lo >= hi {
                continue;
            }
            if t_lo > cursor {
                out.push((cursor, t_lo));
            }
            cursor = cursor.max(t_hi);
        }
        if cursor < hi {
            out.push((cursor, hi));
        }
    }
    out
}

/// Where the model expects an allocation of `size` at `align` inside `window`.
fn expected_fit(
    free: &[(u64, u64)],
    size: u64,
    align: u64,
    window: (u64, u64),
    placement: Placement,
) -> Option<u64> {
    let fits = free.iter().filter_map(|&(lo, hi)| {
        let (lo, hi) = (lo.max(window.0), hi.min(window.1));
        if hi < lo || hi - lo < size {
            return None;
        }
        match placement {
            Placement::TopDown => {
                let start = (hi - size) / align * align;
                (start >= lo).then_some(start)
            }
            Placement::BottomUp => {
                let start = lo.checked_next_multiple_of(align)?;
                (start.checked_add(size)? <= hi).then_some(start)
            }
        }
    });
    match placement {
        Placement::TopDown => fits.max(),
        Placement::BottomUp => fits.min(),
    }
}

/// A random firmware map: a few usable regions below 64 MiB, one above 4 GiB,
/// with firmware holes punched in, none of them frame-aligned.
fn random_map(rng: &mut XorShift) -> Vec<Region> {
    let mut regions = Vec::new();
    for _ in 0..1 + rng.below(4) {
        let start = rng.below(64 * MIB);
        let len = 1 + rng.below(8 * MIB);
        regions.push(Region::new(PhysAddr::new(start), len, RegionKind::Usable));
    }
    if rng.chance(50) {
        let start = 4 * GIB + rng.below(MIB);
        regions.push(Region::new(
            PhysAddr::new(start),
            1 + rng.below(4 * MIB),
            RegionKind::Usable,
        ));
    }
    for _ in 0..rng.below(4) {
        let start = rng.below(64 * MIB);
        let kind =
            [RegionKind::Reserved, RegionKind::AcpiNvs, RegionKind::Bad][rng.below(3) as usize];
        regions.push(Region::new(PhysAddr::new(start), 1 + rng.below(MIB), kind));
    }
    regions
}

fn interval(range: PhysRange) -> (u64, u64) {
    (range.start().as_u64(), range.end().as_u64())
}

/// How often each outcome happened, so the test can show it reached them all.
#[derive(Default)]
struct Outcomes {
    reserved: u64,
    allocated: u64,
    out_of_memory: u64,
    table_full: u64,
}

fn run_seed(seed: u64, steps: usize, seen: &mut Outcomes) {
    let mut rng = XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut map_storage = [Region::EMPTY; 32];
    let map = MemoryMap::from_regions(&mut map_storage, random_map(&mut rng)).unwrap();
    let usable: Vec<(u64, u64)> = map
        .usable_frame_ranges()
        .map(|r| (r.start_address().as_u64(), r.end_address().as_u64()))
        .collect();
    let usable_total: u64 = usable.iter().map(|(lo, hi)| hi - lo).sum();

    let mut usable_slots = [PhysRange::EMPTY; 16];
    let mut reserved_slots = [PhysRange::EMPTY; RESERVED_SLOTS];
    let mut boot = BootMemory::new(&map, &mut usable_slots, &mut reserved_slots).unwrap();
    assert_eq!(
        boot.usable_ranges().map(interval).collect::<Vec<_>>(),
        usable
    );

    // Everything taken so far, reservations and allocations alike.
    let mut taken: Vec<(u64, u64)> = Vec::new();
    for step in 0..steps {
        let context = format!("seed {seed} step {step}");
        let merged = union(&taken);
        if rng.chance(25) {
            let start = rng.below(70 * MIB);
            let len = 1 + rng.below(256 * KIB);
            let islands = union(&[&taken[..], &[(start, start + len)]].concat()).len();
            let result = boot.reserve(PhysAddr::new(start), len);
            if islands > RESERVED_SLOTS {
                assert_eq!(result, Err(AllocError::TableFull), "{context}");
                seen.table_full += 1;
            } else {
                assert_eq!(result, Ok(()), "{context}");
                taken.push((start, start + len));
                seen.reserved += 1;
            }
        } else {
            let placement = if rng.chance(50) {
                Placement::TopDown
            } else {
                Placement::BottomUp
            };
            boot.set_placement(placement);
            let limit = rng.chance(30).then(|| rng.below(70 * MIB));
            boot.set_limit(limit.map(PhysAddr::new));
            let (size, align) = if rng.chance(30) {
                let frames = 1 + rng.below(64);
                (frames * FRAME_SIZE, FRAME_SIZE << rng.below(6))
            } else {
                let largest = if rng.chance(10) { 4 * MIB } else { 8 * KIB };
                (1 + rng.below(largest), 1 << rng.below(17))
            };
            let window = (0, limit.unwrap_or(u64::MAX));
            let free = gaps(&usable, &merged);
            let expected = expected_fit(&free, size, align, window, placement);
            let result = if size % FRAME_SIZE == 0 && align >= FRAME_SIZE && rng.chance(50) {
                boot.allocate_frames((size / FRAME_SIZE) as usize, (align / FRAME_SIZE) as usize)
                    .map(|frames| {
                        assert_eq!(frames.size_bytes(), size, "{context}");
                        frames.start_address()
                    })
            } else {
                boot.allocate(size, align)
            };
            match expected {
                None => {
                    assert_eq!(result, Err(AllocError::OutOfMemory), "{context}");
                    seen.out_of_memory += 1;
                }
                Some(start) => {
                    let islands = union(&[&taken[..], &[(start, start + size)]].concat()).len();
                    if islands > RESERVED_SLOTS {
                        assert_eq!(result, Err(AllocError::TableFull), "{context}");
                        seen.table_full += 1;
                    } else {
                        let got = result.unwrap_or_else(|e| panic!("{context}: {e}")).as_u64();
                        assert_eq!(got, start, "{context}: placement");
                        check_allocation(&usable, &merged, got, size, align, limit, &context);
                        taken.push((got, got + size));
                        seen.allocated += 1;
                    }
                }
            }
        }
        if step % 16 == 0 || step + 1 == steps {
            check_hand_over(&boot, &usable, usable_total, &union(&taken), &context);
        }
    }
}

/// The properties any correct allocator has, independent of placement.
fn check_allocation(
    usable: &[(u64, u64)],
    taken: &[(u64, u64)],
    start: u64,
    size: u64,
    align: u64,
    limit: Option<u64>,
    context: &str,
) {
    let end = start + size;
    assert_eq!(start % align, 0, "{context}: misaligned");
    assert!(
        usable.iter().any(|&(lo, hi)| lo <= start && end <= hi),
        "{context}: {start:#x}..{end:#x} is not inside one usable region"
    );
    assert!(
        taken.iter().all(|&(lo, hi)| end <= lo || hi <= start),
        "{context}: {start:#x}..{end:#x} overlaps taken memory"
    );
    if let Some(limit) = limit {
        assert!(end <= limit, "{context}: past the limit");
    }
}

fn check_hand_over(
    boot: &BootMemory<'_>,
    usable: &[(u64, u64)],
    usable_total: u64,
    taken: &[(u64, u64)],
    context: &str,
) {
    let reserved: Vec<_> = boot.reserved_ranges().map(interval).collect();
    assert_eq!(reserved, taken, "{context}: reserved ranges");

    let free: Vec<_> = boot
        .free_ranges()
        .map(|r| (r.start_address().as_u64(), r.end_address().as_u64()))
        .collect();
    let expected_free: Vec<_> = gaps(usable, taken)
        .into_iter()
        .map(|(lo, hi)| {
            (
                lo.next_multiple_of(FRAME_SIZE),
                hi / FRAME_SIZE * FRAME_SIZE,
            )
        })
        .filter(|(lo, hi)| lo < hi)
        .collect();
    assert_eq!(free, expected_free, "{context}: free ranges");
    for &(lo, hi) in &free {
        assert!(
            usable.iter().any(|&(u_lo, u_hi)| u_lo <= lo && hi <= u_hi),
            "{context}"
        );
        assert!(
            taken.iter().all(|&(t_lo, t_hi)| hi <= t_lo || t_hi <= lo),
            "{context}"
        );
    }

    let reserved_frames: Vec<_> = boot.reserved_frames().collect();
    for pair in reserved_frames.windows(2) {
        assert!(
            pair[0].end_number() < pair[1].start().number(),
            "{context}: not merged"
        );
    }
    for frames in &reserved_frames {
        let (lo, hi) = (
            frames.start_address().as_u64(),
            frames.end_address().as_u64(),
        );
        assert!(
            usable.iter().any(|&(u_lo, u_hi)| u_lo <= lo && hi <= u_hi),
            "{context}"
        );
        assert!(
            free.iter().all(|&(f_lo, f_hi)| hi <= f_lo || f_hi <= lo),
            "{context}"
        );
    }
    let free_bytes: u64 = free.iter().map(|(lo, hi)| hi - lo).sum();
    let reserved_bytes: u64 = reserved_frames.iter().map(|r| r.size_bytes()).sum();
    assert_eq!(
        free_bytes + reserved_bytes,
        usable_total,
        "{context}: bytes lost"
    );
    assert_eq!(boot.free_bytes(), free_bytes, "{context}");

    // Byte-exact: free gaps plus reserved bytes inside usable memory = usable total.
    let gap_bytes: u64 = boot.free_gaps().map(|g| g.len()).sum();
    let reserved_usable: u64 = taken
        .iter()
        .flat_map(|&(t_lo, t_hi)| {
            usable
                .iter()
                .map(move |&(u_lo, u_hi)| u_hi.min(t_hi).saturating_sub(u_lo.max(t_lo)))
        })
        .sum();
    assert_eq!(
        gap_bytes + reserved_usable,
        usable_total,
        "{context}: byte accounting"
    );
}

#[test]
fn random_reserve_and_allocate_sequences_match_the_model() {
    let (seeds, steps) = if cfg!(miri) { (3, 40) } else { (300, 400) };
    let mut seen = Outcomes::default();
    for seed in 0..seeds {
        run_seed(seed, steps, &mut seen);
    }
    assert!(seen.reserved > 0 && seen.allocated > 0 && seen.out_of_memory > 0);
    if !cfg!(miri) {
        assert!(seen.table_full > 0, "the reservation table never filled up");
    }
}
