use super::*;
use crate::frame::Frame;
use RegionKind::*;

fn region(start: u64, len: u64, kind: RegionKind) -> Region {
    Region::new(PhysAddr::new(start), len, kind)
}

fn spans(map: &MemoryMap<'_>) -> std::vec::Vec<(u64, u64, RegionKind)> {
    map.regions()
        .iter()
        .map(|r| (r.start.as_u64(), r.end(), r.kind))
        .collect()
}

extern crate std;

#[test]
fn unsorted_regions_come_out_sorted() {
    let mut storage = [Region::EMPTY; 4];
    let map = MemoryMap::from_regions(
        &mut storage,
        [
            region(0x8000, 0x1000, Usable),
            region(0x1000, 0x1000, Reserved),
            region(0x4000, 0x2000, Usable),
        ],
    )
    .unwrap();
    assert_eq!(
        spans(&map),
        [
            (0x1000, 0x2000, Reserved),
            (0x4000, 0x6000, Usable),
            (0x8000, 0x9000, Usable)
        ]
    );
}

#[test]
fn touching_regions_of_one_kind_merge() {
    let mut storage = [Region::EMPTY; 4];
    let map = MemoryMap::from_regions(
        &mut storage,
        [
            region(0x0, 0x1000, Usable),
            region(0x1000, 0x1000, Usable),
            region(0x2000, 0x1000, Reserved),
        ],
    )
    .unwrap();
    assert_eq!(
        spans(&map),
        [(0x0, 0x2000, Usable), (0x2000, 0x3000, Reserved)]
    );
}

#[test]
fn overlapping_regions_of_one_kind_merge() {
    let mut storage = [Region::EMPTY; 4];
    let map = MemoryMap::from_regions(
        &mut storage,
        [region(0x0, 0x3000, Usable), region(0x1000, 0x4000, Usable)],
    )
    .unwrap();
    assert_eq!(spans(&map), [(0x0, 0x5000, Usable)]);
}

#[test]
fn the_more_restrictive_kind_wins_an_overlap() {
    let mut storage = [Region::EMPTY; 8];
    let map = MemoryMap::from_regions(
        &mut storage,
        [
            region(0x0, 0x10000, Usable),
            region(0x4000, 0x2000, Reserved),
            region(0x5000, 0x4000, AcpiReclaimable),
            region(0xf000, 0x4000, Bad),
        ],
    )
    .unwrap();
    assert_eq!(
        spans(&map),
        [
            (0x0, 0x4000, Usable),
            (0x4000, 0x6000, Reserved),
            (0x6000, 0x9000, AcpiReclaimable),
            (0x9000, 0xf000, Usable),
            (0xf000, 0x13000, Bad),
        ]
    );
}

#[test]
fn usable_regions_are_trimmed_inward_to_frames() {
    let mut storage = [Region::EMPTY; 4];
    let map = MemoryMap::from_regions(
        &mut storage,
        [
            region(0x0800, 0x2000, Usable),
            region(0x5000, 0x0fff, Usable),
            region(0x7800, 0x100, Reserved),
        ],
    )
    .unwrap();
    // 0x800..0x2800 keeps only frame 1; 0x5000..0x5fff holds no whole frame;
    // reserved regions keep their exact bytes.
    assert_eq!(
        spans(&map),
        [(0x1000, 0x2000, Usable), (0x7800, 0x7900, Reserved)]
    );
}

#[test]
fn zero_length_region_is_rejected_by_index() {
    let mut storage = [Region::EMPTY; 4];
    let mut map = MemoryMap::new(&mut storage);
    map.push(region(0x0, 0x1000, Usable)).unwrap();
    assert_eq!(
        map.push(region(0x5000, 0, Usable)),
        Err(MapError::EmptyRegion { index: 1 })
    );
    assert_eq!(map.len(), 1);
}

#[test]
fn region_ending_past_u64_max_is_rejected_by_index() {
    let mut storage = [Region::EMPTY; 4];
    let result = MemoryMap::from_regions(
        &mut storage,
        [
            region(0x0, 0x1000, Usable),
            region(0x1000, 0x1000, Usable),
            region(u64::MAX - 0xfff, 0x1001, Usable),
        ],
    );
    assert_eq!(result.err(), Some(MapError::Overflow { index: 2 }));
}

#[test]
fn region_ending_exactly_at_u64_max_is_accepted() {
    let mut storage = [Region::EMPTY; 2];
    let map = MemoryMap::from_regions(&mut storage, [region(u64::MAX - 0x1fff, 0x1fff, Reserved)])
        .unwrap();
    assert_eq!(map.regions()[0].end(), u64::MAX);
}

#[test]
fn more_regions_than_capacity_are_rejected_by_index() {
    let mut storage = [Region::EMPTY; 2];
    let result = MemoryMap::from_regions(
        &mut storage,
        [
            region(0x0, 0x1000, Usable),
            region(0x2000, 0x1000, Usable),
            region(0x4000, 0x1000, Usable),
        ],
    );
    assert_eq!(result.err(), Some(MapError::CapacityExceeded { index: 2 }));
}

#[test]
fn split_without_room_reports_capacity_and_keeps_the_memory() {
    let mut storage = [Region::EMPTY; 2];
    let mut map = MemoryMap::new(&mut storage);
    map.push(region(0x0, 0x10000, Usable)).unwrap();
    map.push(region(0x4000, 0x1000, Reserved)).unwrap();
    assert_eq!(
        map.normalize(),
        Err(MapError::CapacityExceeded { index: 2 })
    );
    // Nothing was dropped: both regions are still there.
    assert_eq!(
        spans(&map),
        [(0x0, 0x10000, Usable), (0x4000, 0x5000, Reserved)]
    );
}

#[test]
fn subtract_carves_a_hole_in_usable_memory() {
    let mut storage = [Region::EMPTY; 4];
    let mut map = MemoryMap::from_regions(&mut storage, [region(0x0, 0x10000, Usable)]).unwrap();
    map.subtract(PhysAddr::new(0x2800), 0x1000).unwrap();
    let usable: std::vec::Vec<_> = map.usable_frame_ranges().collect();
    assert_eq!(
        usable,
        [
            FrameRange::new(Frame::from_number(0), 2),
            FrameRange::new(Frame::from_number(4), 12)
        ]
    );
    assert_eq!(map.usable_bytes(), 14 * FRAME_SIZE);
}

#[test]
fn failed_subtract_leaves_the_map_unchanged() {
    let mut storage = [Region::EMPTY; 2];
    let mut map = MemoryMap::from_regions(&mut storage, [region(0x0, 0x10000, Usable)]).unwrap();
    let before = spans(&map);
    assert_eq!(
        map.subtract(PhysAddr::new(0x4000), 0x1000),
        Err(MapError::CapacityExceeded { index: 1 })
    );
    assert_eq!(spans(&map), before);
    assert_eq!(
        map.subtract(PhysAddr::new(0x4000), 0),
        Err(MapError::EmptyRegion { index: 2 })
    );
    assert_eq!(
        map.subtract(PhysAddr::new(u64::MAX), 2),
        Err(MapError::Overflow { index: 3 })
    );
    assert_eq!(spans(&map), before);
    // An edge reservation needs no split and fits.
    map.subtract(PhysAddr::new(0x0), 0x1000).unwrap();
    assert_eq!(
        spans(&map),
        [(0x0, 0x1000, Reserved), (0x1000, 0x10000, Usable)]
    );
}

#[test]
fn errors_name_the_region() {
    extern crate std;
    use std::string::ToString;
    assert_eq!(
        MapError::Overflow { index: 3 }.to_string(),
        "memory map region 3 ends past 2^64"
    );
}

/// A tiny deterministic generator, so the randomised test needs no dependency.
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
}

const KINDS: [RegionKind; 6] = [
    Usable,
    BootloaderReclaimable,
    AcpiReclaimable,
    AcpiNvs,
    Reserved,
    Bad,
];
/// The randomised test works in 256-byte chunks over 16 frames.
const CHUNK: u64 = 256;
const CHUNKS: usize = 256;
const CHUNKS_PER_FRAME: usize = (FRAME_SIZE / CHUNK) as usize;

#[test]
fn normalisation_matches_a_chunk_by_chunk_reference() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _case in 0..3000 {
        let mut storage = [Region::EMPTY; 64];
        let mut map = MemoryMap::new(&mut storage);
        let mut expected: [Option<RegionKind>; CHUNKS] = [None; CHUNKS];
        for _ in 0..1 + rng.below(8) {
            let start = rng.below(CHUNKS as u64);
            let len = 1 + rng.below(CHUNKS as u64 - start);
            let kind = KINDS[rng.below(KINDS.len() as u64) as usize];
            map.push(region(start * CHUNK, len * CHUNK, kind)).unwrap();
            for chunk in &mut expected[start as usize..(start + len) as usize] {
                *chunk = Some(chunk.map_or(kind, |k| k.max(kind)));
            }
        }
        map.normalize().unwrap();
        // A usable chunk survives only if its whole frame is usable.
        for frame in expected.chunks_mut(CHUNKS_PER_FRAME) {
            if frame.iter().any(|c| *c != Some(Usable)) {
                for chunk in frame.iter_mut().filter(|c| **c == Some(Usable)) {
                    *chunk = None;
                }
            }
        }
        let mut actual: [Option<RegionKind>; CHUNKS] = [None; CHUNKS];
        let regions = map.regions();
        for pair in regions.windows(2) {
            assert!(
                pair[0].end() <= pair[1].start.as_u64(),
                "overlap in {map:?}"
            );
            assert!(
                pair[0].kind != pair[1].kind || pair[0].end() < pair[1].start.as_u64(),
                "unmerged neighbours in {map:?}"
            );
        }
        for r in regions {
            for chunk in
                &mut actual[(r.start.as_u64() / CHUNK) as usize..(r.end() / CHUNK) as usize]
            {
                *chunk = Some(r.kind);
            }
        }
        assert_eq!(actual, expected, "{map:?}");
    }
}
