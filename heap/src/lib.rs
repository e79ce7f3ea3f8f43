//! A `GlobalAlloc` kernel heap: fine size classes on slab caches, mid sizes on
//! a low-waste two-level segregated fit, large requests on whole pages.
//!
//! - **Small** requests (up to [`SMALL_MAX_BYTES`]) go to one of
//!   [`SMALL_CLASS_COUNT`] size classes, each a `kalloc_slab` cache: 8-byte
//!   steps to 128 bytes, then four classes per power of two, so a class wastes
//!   at most 12.5% (64..=128 bytes) or 20% (above) of an object. The class is
//!   one table load away ([`small_class`]). Freed small blocks wait on a short
//!   stack per class ([`Heap`]) or per CPU ([`PerCpuHeap`]) for the next
//!   request of their class before they go back to the slabs.
//! - **Mid-size** requests (up to [`MID_MAX_BYTES`]) go to a TLSF allocator
//!   over page runs of [`MID_CHUNK_PAGES`] pages: O(1) search through two
//!   bitmap levels, boundary tags for O(1) coalescing, exact splitting (16-byte
//!   granule, 16-byte header), runs given back once wholly free.
//! - **Large** requests take whole pages from the [`PageSource`](kalloc_api::PageSource).
//!
//! A heap with no page source yet can live on fixed regions
//! ([`Heap::init_with_region`]): then the TLSF spans the regions and serves
//! slab pages and large blocks too, with no rounding to pages.
//!
//! Fronts: [`Heap`] (`&mut self`), [`LockedHeap`] (one lock) and
//! [`PerCpuHeap`] (small classes on per-CPU magazines, the rest under a lock),
//! all with [`GlobalAlloc`](core::alloc::GlobalAlloc) (null on failure, never
//! a panic) and allocator-api2's `Allocator` on the shared ones; and
//! [`PinnedPerCpuHeap`], whose small classes take no lock at all for callers
//! that pin themselves to a CPU with a [`PinnedCpu`](kalloc_api::PinnedCpu)
//! token (its docs show the `GlobalAlloc` wrapper a kernel writes). An
//! out-of-memory hook ([`OomHandler`]), [`shrink`](Heap::shrink),
//! [`reap`](Heap::reap) for a periodic timer, and [`HeapStats`] per class and
//! path.
//!
//! # Example
//!
//! ```
//! use kalloc_heap::LockedHeap;
//!
//! // In a kernel: `#[global_allocator] static HEAP: LockedHeap = LockedHeap::new();`
//! static HEAP: LockedHeap = LockedHeap::new();
//!
//! #[repr(align(4096))]
//! struct Arena([u8; 256 * 1024]);
//! static mut ARENA: Arena = Arena([0; 256 * 1024]);
//!
//! // SAFETY: the arena is handed to the heap for good and used by nothing else.
//! unsafe { HEAP.init_with_region(&raw mut ARENA.0 as *mut u8, 256 * 1024) }.unwrap();
//! let mut v = allocator_api2::vec::Vec::new_in(&HEAP);
//! v.extend(0..1000u32);
//! assert_eq!(v.iter().sum::<u32>(), 499_500);
//! drop(v);
//! assert_eq!(HEAP.stats().total.bytes_in_use, 0);
//! ```
#![no_std]
#![warn(missing_docs)]

#[cfg(any(test, feature = "std"))]
extern crate std;

mod allocator_api;
mod backend;
mod heap;
mod locked;
mod pages;
mod per_cpu;
mod pinned;
mod provenance;
mod recycle;
mod shared;
mod size_class;
mod stats;
mod tlsf;

pub use backend::{InitError, MID_CHUNK_PAGES, MID_MAX_BYTES};
pub use heap::{Heap, OomHandler};
pub use locked::LockedHeap;
pub use pages::NoPages;
#[cfg(any(test, feature = "std"))]
pub use pages::SystemPages;
pub use per_cpu::PerCpuHeap;
pub use pinned::PinnedPerCpuHeap;
pub use size_class::{
    SMALL_CLASS_BYTES, SMALL_CLASS_COUNT, SMALL_MAX_BYTES, small_class, worst_case_waste_permille,
};
pub use stats::{ClassStats, HeapStats};
