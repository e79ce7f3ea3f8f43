//! A bitmap physical frame allocator: one bit per 4 KiB frame in memory the
//! kernel hands in, summaries that keep searches short at any fill level,
//! contiguous aligned runs (DMA buffers, 2 MiB huge frames), and a lock-free
//! variant on atomic words.
//!
//! - [`BitmapFrameAllocator`]: the `&mut self` core. Share it between CPUs as
//!   [`kalloc_api::Locked`]`<BitmapFrameAllocator>`, which is a
//!   [`FrameAllocator`](kalloc_api::FrameAllocator) by `&self`.
//! - [`AtomicBitmapFrameAllocator`]: the same bitmap on atomic words; CPUs
//!   allocate and free without a lock, each from its own cursor.
//! - [`storage_words`] / [`atomic_storage_words`]: how much memory the bits
//!   take (about 1/32768 of the memory they manage), so a kernel can carve it
//!   from boot memory before the allocator exists.
//!
//! Use a bitmap when the frame allocator must be simple to trust, its
//! metadata small and fixed, and any free run findable; use a buddy allocator
//! when most requests are large power-of-two blocks.
//!
//! The bits are plain `u64` words: the searches are `trailing_zeros`, masks
//! and shifts on whole words, which the hot paths need anyway, and `bitvec`
//! 1.0's pointer encoding does integer-to-pointer casts that miri's strict
//! provenance mode rejects.
//!
//! # Example
//!
//! ```
//! use kalloc_api::{Frame, FrameAllocator, FrameRange, Locked};
//! use kalloc_bitmap_frame::{BitmapFrameAllocator, storage_words};
//!
//! // 64 MiB of RAM from 1 MiB, of which the kernel image takes the first 2 MiB.
//! const FRAMES: usize = 16_384;
//! let mut storage = vec![0u64; storage_words(FRAMES)];
//! let ram = FrameRange::new(Frame::from_number(0x100), FRAMES as u64);
//! let mut frames = BitmapFrameAllocator::new(ram.start(), FRAMES, &mut storage)?;
//! frames.mark_free(ram)?;
//! frames.mark_used(FrameRange::new(ram.start(), 512))?;
//!
//! let shared = Locked::new(frames);
//! let mut any_cpu = &shared;
//! let dma = any_cpu.allocate(16, 16)?; // 64 KiB, 64 KiB-aligned
//! assert!(dma.start_address().is_aligned(16 * 4096));
//! any_cpu.deallocate(dma).unwrap();
//! assert_eq!(any_cpu.free_frames(), FRAMES - 512);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![no_std]
#![warn(missing_docs)]

mod atomic;
mod bitmap;
mod error;
mod layout;
mod summary;
#[cfg(all(test, not(loom)))]
mod test_support;

pub use atomic::{AtomicBitmapFrameAllocator, CPU_SLOTS, NoCpuId};
pub use bitmap::BitmapFrameAllocator;
pub use error::BitmapError;
pub use layout::{atomic_storage_words, storage_words};
