//! Buddy allocators for kernels: power-of-two blocks of physical frames with
//! all bookkeeping out of band, a per-CPU front for it, and a byte-granular
//! buddy heap.
//!
//! - [`BuddyFrameAllocator`]: the classic page allocator (Linux's
//!   `alloc_pages`). Blocks of `2^order` frames, split on allocation and merged
//!   with their buddy on free, O(1) per order step. Its metadata is a
//!   caller-provided array of [`FrameMeta`] ([`metadata_bytes`] bytes, 12 per
//!   frame), so it works before any heap exists and over physical memory that
//!   is not mapped: the frames themselves are never read or written. A double
//!   free, a frame in the middle of a block or a wrong size is an error value,
//!   never a corrupted free list, and [`check_invariants`] verifies the whole
//!   structure.
//! - [`PerCpuBuddy`]: the allocator behind a lock, shared by `&self`, with a
//!   per-CPU cache of single frames refilled and drained in batches (Linux's
//!   per-CPU page lists). Double frees are still caught, across CPUs.
//! - [`BuddyHeap`] / [`LockedBuddyHeap`]: a byte-granular buddy heap over memory
//!   the caller hands in, with free lists threaded through the free blocks; the
//!   locked form is a `#[global_allocator]`.
//!
//! When not to use it: a buddy allocator rounds every request up to a power of
//! two; for many small objects of one size, put a slab cache on top of it.
//!
//! # Example
//!
//! ```
//! use kalloc_api::{Frame, FrameAllocator, FrameRange, FreeError};
//! use kalloc_buddy::{BuddyFrameAllocator, FrameMeta, metadata_bytes};
//!
//! // 4 MiB of RAM at physical 0x8000_0000, minus a reserved hole. The storage
//! // would come from the boot allocator in a kernel.
//! const FRAMES: usize = 1024;
//! let mut storage = [FrameMeta::EMPTY; FRAMES];
//! assert_eq!(core::mem::size_of_val(&storage), metadata_bytes(FRAMES));
//! let ram = FrameRange::new(Frame::from_number(0x8_0000), FRAMES as u64);
//! let mut frames = BuddyFrameAllocator::<10>::new(ram.start(), FRAMES, &mut storage)?;
//! frames.add_range(FrameRange::new(ram.start(), 100))?;
//! frames.add_range(FrameRange::new(Frame::from_number(0x8_0000 + 120), 904))?;
//!
//! let page = frames.allocate_frame()?;
//! let huge = frames.allocate(256, 256)?; // 1 MiB, 1 MiB-aligned
//! assert_eq!(huge.start().number() % 256, 0);
//! frames.deallocate(huge).unwrap();
//! frames.deallocate_frame(page).unwrap();
//! assert_eq!(frames.deallocate_frame(page), Err(FreeError::DoubleFree));
//! assert_eq!(frames.free_frames(), 1004);
//! frames.check_invariants().unwrap();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`check_invariants`]: BuddyFrameAllocator::check_invariants
#![no_std]
#![warn(missing_docs)]

mod diagnose;
mod error;
mod frame_buddy;
mod heap;
mod invariants;
mod locked_heap;
mod meta;
mod per_cpu;

pub use error::{BuddyError, InvariantError};
pub use frame_buddy::BuddyFrameAllocator;
pub use heap::{BuddyHeap, MIN_BLOCK_BYTES};
pub use locked_heap::LockedBuddyHeap;
pub use meta::{FrameMeta, MAX_WINDOW_FRAMES, metadata_bytes};
pub use per_cpu::{PCP_BATCH_FRAMES, PCP_HIGH_FRAMES, PerCpuBuddy};
