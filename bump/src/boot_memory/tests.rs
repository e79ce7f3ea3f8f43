extern crate std;

use std::vec::Vec;

use kalloc_api::{Region, RegionKind};

use super::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Usable `[1 MiB, 16 MiB)` and `[4 GiB - 8 MiB, 4 GiB + 8 MiB)`, with
/// firmware holding `[8 MiB, 9 MiB)`.
fn map_regions() -> [Region; 3] {
    [
        Region::new(PhysAddr::new(MIB), 15 * MIB, RegionKind::Usable),
        Region::new(PhysAddr::new(8 * MIB), MIB, RegionKind::Reserved),
        Region::new(
            PhysAddr::new(4 * GIB - 8 * MIB),
            16 * MIB,
            RegionKind::Usable,
        ),
    ]
}

struct Storage {
    map: [Region; 8],
    usable: [PhysRange; 4],
    reserved: [PhysRange; 8],
}

impl Storage {
    fn new() -> Self {
        Self {
            map: [Region::EMPTY; 8],
            usable: [PhysRange::EMPTY; 4],
            reserved: [PhysRange::EMPTY; 8],
        }
    }

    fn boot(&mut self) -> BootMemory<'_> {
        let map = MemoryMap::from_regions(&mut self.map, map_regions()).unwrap();
        BootMemory::new(&map, &mut self.usable, &mut self.reserved).unwrap()
    }
}

fn snapshot(boot: &BootMemory<'_>) -> (Vec<PhysRange>, Vec<FrameRange>) {
    (
        boot.reserved_ranges().collect(),
        boot.free_ranges().collect(),
    )
}

fn range(start: u64, end: u64) -> PhysRange {
    PhysRange::from_bounds(PhysAddr::new(start), PhysAddr::new(end)).unwrap()
}

#[test]
fn usable_ranges_follow_the_normalised_map() {
    let mut storage = Storage::new();
    let boot = storage.boot();
    let usable: Vec<_> = boot.usable_ranges().collect();
    assert_eq!(
        usable,
        [
            range(MIB, 8 * MIB),
            range(9 * MIB, 16 * MIB),
            range(4 * GIB - 8 * MIB, 4 * GIB + 8 * MIB)
        ]
    );
    assert_eq!(boot.usable_bytes(), 30 * MIB);
    assert_eq!(boot.free_bytes(), 30 * MIB);
}

#[test]
fn allocations_are_top_down_by_default() {
    let mut storage = Storage::new();
    let mut boot = storage.boot();
    assert_eq!(boot.placement(), Placement::TopDown);
    let first = boot.allocate(0x1000, 0x1000).unwrap();
    assert_eq!(first.as_u64(), 4 * GIB + 8 * MIB - 0x1000);
    // The next small allocation packs directly below the first.
    let second = boot.allocate(24, 8).unwrap();
    assert_eq!(second.as_u64(), first.as_u64() - 24);
    assert_eq!(
        boot.reserved_slots().0,
        1,
        "touching allocations share a slot"
    );
}

#[test]
fn bottom_up_places_at_the_lowest_fit() {
    let mut storage = Storage::new();
    let mut boot = storage.boot().bottom_up();
    assert_eq!(boot.allocate(100, 64).unwrap().as_u64(), MIB);
    assert_eq!(boot.allocate(100, 64).unwrap().as_u64(), MIB + 128);
    // Seven MiB does not fit in the rest of the first region: it goes above the hole.
    assert_eq!(boot.allocate(7 * MIB, 4096).unwrap().as_u64(), 9 * MIB);
}

#[test]
fn limit_keeps_allocations_below_it() {
    let mut storage = Storage::new();
    let mut boot = storage.boot().below(PhysAddr::new(4 * GIB));
    let dma = boot.allocate(MIB, MIB).unwrap();
    assert_eq!(dma.as_u64(), 4 * GIB - MIB);
    boot.set_limit(Some(PhysAddr::new(16 * MIB)));
    let low = boot.allocate(4 * MIB, 4096).unwrap();
    assert_eq!(low.as_u64(), 12 * MIB);
    // Only 7 MiB is free under the limit in one piece.
    assert_eq!(boot.allocate(8 * MIB, 8), Err(AllocError::OutOfMemory));
    boot.set_limit(None);
    assert_eq!(boot.limit(), None);
    assert!(boot.allocate(8 * MIB, 8).unwrap().as_u64() > 4 * GIB - 8 * MIB);
}

#[test]
fn allocate_within_stays_inside_the_window() {
    let mut storage = Storage::new();
    let mut boot = storage.boot();
    let window = range(2 * MIB, 3 * MIB);
    let at = boot.allocate_within(0x1000, 0x1000, window).unwrap();
    assert_eq!(at.as_u64(), 3 * MIB - 0x1000);
    assert_eq!(
        boot.allocate_within(2 * MIB, 8, window),
        Err(AllocError::OutOfMemory)
    );
}

#[test]
fn reserved_memory_is_never_allocated() {
    let mut storage = Storage::new();
    let mut boot = storage.boot().bottom_up();
    // The kernel image: not frame-aligned at either end.
    boot.reserve(PhysAddr::new(MIB + 0x8), 0x2_0000).unwrap();
    // The 8 bytes below the image are too few.
    let next = boot.allocate(16, 16).unwrap();
    assert_eq!(next.as_u64(), MIB + 0x2_0010);
    // A reservation spanning the firmware hole and the end of a region.
    boot.reserve(PhysAddr::new(7 * MIB), 3 * MIB).unwrap();
    let frames = boot.allocate_frames(1, 1).unwrap();
    assert_eq!(frames.start_address().as_u64(), MIB + 0x2_1000);
}

#[test]
fn repeated_and_overlapping_reservations_merge() {
    let mut storage = Storage::new();
    let mut boot = storage.boot();
    for _ in 0..20 {
        boot.reserve(PhysAddr::new(2 * MIB), 0x1000).unwrap();
    }
    boot.reserve(PhysAddr::new(2 * MIB + 0x800), 0x1000)
        .unwrap();
    boot.reserve(PhysAddr::new(2 * MIB - 0x10), 0x10).unwrap();
    let reserved: Vec<_> = boot.reserved_ranges().collect();
    assert_eq!(reserved, [range(2 * MIB - 0x10, 2 * MIB + 0x1800)]);
}

#[test]
fn hand_over_splits_usable_frames_exactly() {
    let mut storage = Storage::new();
    let mut boot = storage.boot();
    boot.reserve(PhysAddr::new(MIB + 0x10), 0x2_0000).unwrap();
    boot.allocate(24, 8).unwrap();
    boot.allocate_frames(3, 1).unwrap();
    // Outside usable memory: recorded, but not a usable frame.
    boot.reserve(PhysAddr::new(0xfee0_0000), 0x1000).unwrap();

    let reserved_frames: Vec<_> = boot.reserved_frames().collect();
    assert_eq!(reserved_frames.len(), 2);
    assert_eq!(
        reserved_frames[0],
        FrameRange::inside(PhysAddr::new(MIB), 0x2_1000).unwrap()
    );
    // The 24-byte allocation and the three frames share one frame run.
    assert_eq!(reserved_frames[1].count(), 4);

    let free: u64 = boot.free_bytes();
    let reserved: u64 = reserved_frames.iter().map(|r| r.size_bytes()).sum();
    assert_eq!(free + reserved, boot.usable_bytes());
    for free in boot.free_ranges() {
        assert!(free.start_address().is_aligned(FRAME_SIZE));
        assert!(reserved_frames.iter().all(|taken| !taken.overlaps(free)));
    }
}

#[test]
fn zero_size_is_reported_and_nothing_lost() {
    let mut storage = Storage::new();
    let mut boot = storage.boot();
    let before = snapshot(&boot);
    assert_eq!(boot.allocate(0, 8), Err(AllocError::ZeroSize));
    assert_eq!(boot.allocate_frames(0, 1), Err(AllocError::ZeroSize));
    assert_eq!(
        boot.reserve(PhysAddr::new(MIB), 0),
        Err(AllocError::ZeroSize)
    );
    assert_eq!(snapshot(&boot), before);
}

#[test]
fn bad_alignment_is_reported_and_nothing_lost() {
    let mut storage = Storage::new();
    let mut boot = storage.boot();
    let before = snapshot(&boot);
    assert_eq!(boot.allocate(8, 0), Err(AllocError::BadAlignment));
    assert_eq!(boot.allocate(8, 24), Err(AllocError::BadAlignment));
    assert_eq!(boot.allocate_frames(1, 3), Err(AllocError::BadAlignment));
    assert_eq!(snapshot(&boot), before);
}

#[test]
fn alignment_no_region_can_meet_is_out_of_memory() {
    let mut storage = Storage::new();
    let mut boot = storage.boot();
    let before = snapshot(&boot);
    assert_eq!(boot.allocate(8, 1 << 63), Err(AllocError::OutOfMemory));
    assert_eq!(boot.allocate(8, 8 * GIB), Err(AllocError::OutOfMemory));
    boot.set_placement(Placement::BottomUp);
    assert_eq!(boot.allocate(8, 1 << 63), Err(AllocError::OutOfMemory));
    assert_eq!(snapshot(&boot), before);
}

#[test]
fn overflowing_sizes_are_reported_and_nothing_lost() {
    let mut storage = Storage::new();
    let mut boot = storage.boot();
    let before = snapshot(&boot);
    assert_eq!(
        boot.reserve(PhysAddr::new(u64::MAX - 1), 4),
        Err(AllocError::Overflow)
    );
    assert_eq!(
        boot.allocate_frames(usize::MAX, 1),
        Err(AllocError::Overflow)
    );
    assert_eq!(
        boot.allocate_frames(1, 1 << (usize::BITS - 1)),
        Err(AllocError::Overflow)
    );
    assert_eq!(boot.allocate(u64::MAX, 1), Err(AllocError::OutOfMemory));
    assert_eq!(snapshot(&boot), before);
}

#[test]
fn exhaustion_is_reported_and_nothing_lost() {
    let mut storage = Storage::new();
    let mut boot = storage.boot();
    let whole = boot.allocate(16 * MIB, 4096).unwrap();
    assert_eq!(whole.as_u64(), 4 * GIB - 8 * MIB);
    let before = snapshot(&boot);
    assert_eq!(boot.allocate(8 * MIB, 1), Err(AllocError::OutOfMemory));
    assert_eq!(snapshot(&boot), before);
    // Everything that is left is still there to allocate.
    assert_eq!(boot.allocate(7 * MIB, 1).unwrap().as_u64(), 9 * MIB);
    assert_eq!(boot.allocate(7 * MIB, 1).unwrap().as_u64(), MIB);
    assert_eq!(boot.free_bytes(), 0);
    assert_eq!(boot.allocate(1, 1), Err(AllocError::OutOfMemory));
}

#[test]
fn full_reservation_table_is_reported_and_nothing_lost() {
    let mut map = [Region::EMPTY; 4];
    let map = MemoryMap::from_regions(&mut map, map_regions()).unwrap();
    let mut usable = [PhysRange::EMPTY; 4];
    let mut reserved = [PhysRange::EMPTY; 2];
    let mut boot = BootMemory::new(&map, &mut usable, &mut reserved)
        .unwrap()
        .bottom_up();
    boot.reserve(PhysAddr::new(MIB), 0x1000).unwrap();
    boot.reserve(PhysAddr::new(2 * MIB), 0x1000).unwrap();
    let before = snapshot(&boot);
    assert_eq!(
        boot.reserve(PhysAddr::new(3 * MIB), 0x1000),
        Err(AllocError::TableFull)
    );
    // Needs a new island at 1 MiB + 4 KiB aligned to 64 KiB: no slot.
    assert_eq!(boot.allocate(8, 0x1_0000), Err(AllocError::TableFull));
    assert_eq!(snapshot(&boot), before);
    // Touching an existing reservation needs no slot.
    assert_eq!(boot.allocate(8, 8).unwrap().as_u64(), MIB + 0x1000);
    boot.reserve(PhysAddr::new(MIB), 3 * MIB).unwrap();
    assert_eq!(boot.reserved_slots(), (1, 2));
}

#[test]
fn unnormalised_map_is_refused() {
    let mut map = [Region::EMPTY; 4];
    let mut map = MemoryMap::new(&mut map);
    map.push(map_regions()[0]).unwrap();
    let (mut usable, mut reserved) = ([PhysRange::EMPTY; 4], [PhysRange::EMPTY; 4]);
    assert_eq!(
        BootMemory::new(&map, &mut usable, &mut reserved).unwrap_err(),
        SetupError::MapNotNormalized
    );
}

#[test]
fn short_usable_storage_is_refused() {
    let mut map = [Region::EMPTY; 8];
    let map = MemoryMap::from_regions(&mut map, map_regions()).unwrap();
    let (mut usable, mut reserved) = ([PhysRange::EMPTY; 2], [PhysRange::EMPTY; 4]);
    assert_eq!(
        BootMemory::new(&map, &mut usable, &mut reserved).unwrap_err(),
        SetupError::UsableTableFull { regions: 3 }
    );
}

#[test]
fn free_gaps_skip_reservations_that_span_regions() {
    let mut storage = Storage::new();
    let mut boot = storage.boot();
    boot.reserve(PhysAddr::new(0), 2 * MIB).unwrap();
    boot.reserve(PhysAddr::new(7 * MIB), 3 * MIB).unwrap();
    boot.reserve(PhysAddr::new(4 * GIB), 16 * GIB).unwrap();
    let gaps: Vec<_> = boot.free_gaps().collect();
    assert_eq!(
        gaps,
        [
            range(2 * MIB, 7 * MIB),
            range(10 * MIB, 16 * MIB),
            range(4 * GIB - 8 * MIB, 4 * GIB)
        ]
    );
}
