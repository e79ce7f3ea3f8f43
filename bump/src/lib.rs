//! Boot-time memory for kernels: the first allocators that run.
//!
//! Before a kernel has a frame allocator it still needs memory: for page
//! tables, for the frame allocator's own bitmap or free lists, for per-CPU
//! areas, for a first heap. This crate provides the two allocators for that stage:
//!
//! - [`BootMemory`] hands out physical memory straight from the firmware memory
//!   map, like Linux's memblock. The kernel reserves what is already in use
//!   (its image, the initrd, firmware tables), allocates what it needs (top-down
//!   by default, optionally below a limit for DMA), and finally hands the rest
//!   to the frame allocator: [`free_ranges`](BootMemory::free_ranges) to mark
//!   free, [`reserved_frames`](BootMemory::reserved_frames) to mark used.
//!   Its tables live in slices the caller lends; it never allocates.
//! - [`BumpArena`] is a lock-free bump allocator over one byte region, usable
//!   as the `#[global_allocator]` from the first instruction (it is `const`
//!   constructible over a `static` [`ArenaMemory`] in `.bss`) and through the
//!   `allocator-api2` `Allocator` trait. Freeing gives back only the most
//!   recent block; it suits the few allocations made before the real heap.
//!
//! Neither is a general-purpose allocator: neither reuses freed memory (except
//! the last block), so once the frame allocator and heap are up, use those.
//!
//! # The boot sequence
//!
//! ```
//! use kalloc_api::{FRAME_SIZE, MemoryMap, PhysAddr, Region, RegionKind};
//! use kalloc_bump::{BootMemory, PhysRange};
//!
//! const MIB: u64 = 1 << 20;
//!
//! // 1. The firmware's memory map (e820 here), normalised.
//! let mut map_storage = [Region::EMPTY; 16];
//! let map = MemoryMap::from_regions(
//!     &mut map_storage,
//!     [
//!         Region::new(PhysAddr::new(0), 0x9_fc00, RegionKind::Usable),
//!         Region::new(PhysAddr::new(0xf_0000), 0x1_0000, RegionKind::Reserved),
//!         Region::new(PhysAddr::new(MIB), 2047 * MIB, RegionKind::Usable),
//!         Region::new(PhysAddr::new(0x1_0000_0000), 1024 * MIB, RegionKind::Usable),
//!     ],
//! )?;
//!
//! // 2. The boot allocator over it. In a kernel the tables are static arrays.
//! let mut usable = [PhysRange::EMPTY; 16];
//! let mut reserved = [PhysRange::EMPTY; 64];
//! let mut boot = BootMemory::new(&map, &mut usable, &mut reserved)?;
//!
//! // 3. Take out what is already in use: the kernel image (from linker
//! //    symbols in a kernel; it need not end on a frame boundary) and the initrd.
//! boot.reserve(PhysAddr::new(2 * MIB), 0x13_4567)?;
//! boot.reserve(PhysAddr::new(128 * MIB), 4 * MIB)?;
//!
//! // 4. Allocate the frame allocator's metadata: one bit per frame up to the
//! //    end of RAM, page-aligned, anywhere (top-down keeps low memory free).
//! let end_of_ram = boot.usable_ranges().last().map_or(0, |r| r.end().as_u64());
//! let bitmap_bytes = (end_of_ram / FRAME_SIZE).div_ceil(8);
//! let bitmap = boot.allocate(bitmap_bytes, FRAME_SIZE)?;
//! assert!(bitmap.as_u64() >= 0x1_0000_0000);
//! // ... and a DMA buffer that 32-bit devices can reach.
//! boot.set_limit(Some(PhysAddr::new(1 << 32)));
//! let dma = boot.allocate_frames(16, 16)?;
//! assert!(dma.end_address().as_u64() <= 1 << 32);
//! boot.set_limit(None);
//!
//! // 5. Hand over: the frame allocator starts with every frame used, marks
//! //    these free, and keeps the reserved frames (kernel, initrd, bitmap, DMA
//! //    buffer) used. Together they cover every usable frame exactly once.
//! let free: u64 = boot.free_ranges().map(|run| run.size_bytes()).sum();
//! let taken: u64 = boot.reserved_frames().map(|run| run.size_bytes()).sum();
//! assert_eq!(free + taken, boot.usable_bytes());
//! assert!(boot.free_ranges().all(|run| !run.contains(kalloc_api::Frame::containing(bitmap))));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The early heap
//!
//! ```
//! use kalloc_bump::{ArenaMemory, BumpArena};
//!
//! static EARLY_HEAP_MEMORY: ArenaMemory<{ 64 * 1024 }> = ArenaMemory::new();
//! // SAFETY: no other arena is built over `EARLY_HEAP_MEMORY`.
//! // In a kernel, add `#[global_allocator]` here.
//! static EARLY_HEAP: BumpArena = unsafe { BumpArena::from_memory(&EARLY_HEAP_MEMORY) };
//!
//! let mut v = allocator_api2::vec::Vec::new_in(&EARLY_HEAP);
//! v.extend_from_slice(b"early boot");
//! assert_eq!(EARLY_HEAP.used(), v.capacity());
//! ```
#![no_std]
#![warn(missing_docs)]

mod arena;
mod boot_memory;
mod range;

pub use arena::{ARENA_MEMORY_ALIGN_BYTES, ArenaMemory, BumpArena, InitError};
pub use boot_memory::{
    BootMemory, FreeGaps, Placement, ReservedFrames, SetupError, TABLE_SLOT_BYTES,
};
pub use range::PhysRange;
