//! The physical memory map: RAM and firmware reservations from the device
//! tree, and the ranges the kernel occupies itself.

use kalloc_api::{MapError, MemoryMap, PhysAddr, Region, RegionKind};

use crate::devicetree::{PhysRange, Platform};

/// Regions the map can hold: RAM, firmware reservations and the splits they cause.
pub const MAP_CAPACITY: usize = 64;

/// The bytes the kernel image occupies: code, data, `.bss` and the boot stacks.
pub fn kernel_image() -> PhysRange {
    unsafe extern "C" {
        static __kernel_start: u8;
        static __kernel_end: u8;
    }
    let start = core::ptr::addr_of!(__kernel_start) as u64;
    let end = core::ptr::addr_of!(__kernel_end) as u64;
    PhysRange {
        start,
        len: end - start,
    }
}

/// The firmware's view of memory: RAM as usable, the device tree's own
/// reservations as reserved, normalised. The kernel image and the tree blob
/// are left for the boot allocator to reserve.
pub fn firmware_map<'a>(
    platform: &Platform,
    storage: &'a mut [Region],
) -> Result<MemoryMap<'a>, MapError> {
    let ram = platform
        .ram
        .as_slice()
        .iter()
        .map(|range| Region::new(PhysAddr::new(range.start), range.len, RegionKind::Usable));
    let reserved = platform
        .reserved
        .as_slice()
        .iter()
        .map(|range| Region::new(PhysAddr::new(range.start), range.len, RegionKind::Reserved));
    MemoryMap::from_regions(storage, ram.chain(reserved))
}
