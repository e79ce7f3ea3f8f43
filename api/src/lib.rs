//! The shared vocabulary of the kalloc allocators.
//!
//! Every kalloc crate speaks in the types defined here, so a kernel can bring
//! memory up in stages and hand one stage's output to the next:
//!
//! - [`PhysAddr`] / [`VirtAddr`]: address newtypes with checked alignment.
//! - [`Frame`] / [`FrameRange`]: 4 KiB physical frames and runs of them.
//! - [`MemoryMap`]: the firmware memory map, normalised in caller-provided storage.
//! - [`FrameAllocator`] and [`PageSource`]: the two traits allocators implement.
//! - [`AllocError`], [`FreeError`], [`MapError`]: errors as values, one variant per cause.
//! - [`Stats`]: a snapshot of an allocator's usage.
//! - [`sync`]: `spin` in kernels, `loom` under `cfg(loom)`; [`Locked`] built on it.
//! - [`CpuId`]: how a kernel tells per-CPU fronts which CPU is running;
//!   [`PinnedCpu`]: the token of a context that has its CPU to itself, for
//!   lock-free per-CPU paths.
//!
//! The crate is `#![no_std]` and never allocates.
//!
//! # Example
//!
//! ```
//! use kalloc_api::{MemoryMap, PhysAddr, Region, RegionKind};
//!
//! let mut storage = [Region::EMPTY; 8];
//! let mut map = MemoryMap::new(&mut storage);
//! map.push(Region::new(PhysAddr::new(0x10_0000), 0x7f0_0000, RegionKind::Usable))?;
//! map.push(Region::new(PhysAddr::new(0x20_0000), 0x10_0000, RegionKind::Reserved))?;
//! map.normalize()?;
//! let usable: u64 = map.usable_frame_ranges().map(|r| r.size_bytes()).sum();
//! assert_eq!(usable, 0x7f0_0000 - 0x10_0000);
//! # Ok::<(), kalloc_api::MapError>(())
//! ```
#![no_std]
#![warn(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

mod addr;
mod cpu;
mod error;
mod frame;
mod frame_allocator;
mod locked;
mod memory_map;
mod page_source;
mod stats;
pub mod sync;
#[cfg(feature = "x86_64")]
pub mod x86_64_adapter;

pub use addr::{PhysAddr, VirtAddr, align_down, align_up, is_power_of_two};
#[cfg(feature = "std")]
pub use cpu::ThreadCpuId;
pub use cpu::{CpuId, PinnedCpu};
pub use error::{AddrError, AllocError, FreeError, MapError, PackedAllocation};
pub use frame::{FRAME_SHIFT, FRAME_SIZE, Frame, FrameRange, SIZE_1GIB, SIZE_2MIB, SIZE_4KIB};
pub use frame_allocator::FrameAllocator;
pub use locked::Locked;
pub use memory_map::{MemoryMap, Region, RegionKind};
pub use page_source::{OffsetPages, PAGE_SIZE, PageSource};
pub use stats::Stats;
