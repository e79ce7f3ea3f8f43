//! Slab object caches for kernel objects of one size, with per-CPU magazines
//! and hardening.
//!
//! Kernel objects (tasks, inodes, buffers) of one size are allocated and
//! freed constantly. This crate serves them the way Bonwick's slab allocator
//! and its magazine layer, and Linux's SLUB, do:
//!
//! - [`SlabCache`]: the `&mut self` core. Objects are carved from *slabs*,
//!   runs of `2^k` pages aligned to their own size, so the slab header is
//!   found by masking an object's address. `k` is the smallest order that
//!   keeps the bytes unusable for objects at or below 1/8 of the slab. The
//!   header is always in-slab, at the start (see the `slab` module docs); no
//!   memory outside the slabs is used. Slabs sit on full, partial and empty
//!   lists (`intrusive-collections`, linked through the headers); allocation
//!   prefers the most used partial slab. Empty slabs are kept for reuse up
//!   to the most the cache had in use at once; [`SlabCache::reap`], run from
//!   a periodic timer, gives back those that stayed unused for a period, and
//!   [`SlabCache::shrink`] all of them.
//! - [`PerCpuCache`]: the `&self` front for many CPUs: Bonwick's per-CPU
//!   loaded/previous magazines of [`MAGAZINE_ROUNDS`] object pointers over a
//!   depot of full magazines and the slab cache, under the
//!   [`sync`](kalloc_api::sync) shim's locks (model-checked with loom).
//! - [`PinnedPerCpuCache`]: the same magazines without a lock on the fast
//!   path, for kernels that call it with preemption off and say so with a
//!   [`PinnedCpu`](kalloc_api::PinnedCpu) token.
//! - [`TypedCache`]: a cache of `T`s returning owned [`SlabBox`] handles.
//! - [`Hardening`]: obfuscated and validated free-list links
//!   (`SLAB_FREELIST_HARDENED`), randomised free-list order in new slabs
//!   (`SLAB_FREELIST_RANDOM`), an always-on immediate double-free check, a
//!   per-slab double-free bitmap, poisoning and red zones. Checked APIs
//!   return [`FreeError`](kalloc_api::FreeError)s; what cannot be returned
//!   goes to a [`CorruptionHandler`].
//!
//! Pages come from any [`PageSource`](kalloc_api::PageSource), passed to each
//! call so one source can feed many caches. Slabs are requested with
//! `allocate_pages(n, n)`.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "std")] {
//! use kalloc_slab::{Hardening, HostPages, SlabCache, SlabConfig};
//!
//! let pages = HostPages::new(); // a kernel passes its frame allocator's PageSource
//! let config = SlabConfig::new(192, 64)
//!     .with_hardening(Hardening::DEFAULT)
//!     .with_secret(0x1f2e_3d4c) // from the boot entropy
//!     .with_seed(7);
//! let mut inodes = SlabCache::new(config)?;
//!
//! let inode = inodes.allocate(&pages)?;
//! assert_eq!(inode.as_ptr() as usize % 64, 0);
//! // SAFETY: `inode` came from `inodes` and is no longer used.
//! unsafe { inodes.deallocate(inode, &pages) }.unwrap();
//! // SAFETY: as above; freeing it twice is caught.
//! assert!(unsafe { inodes.deallocate(inode, &pages) }.is_err());
//!
//! assert_eq!(inodes.stats().objects_in_use, 0);
//! inodes.shrink(0, &pages);
//! assert_eq!(pages.pages_out(), 0);
//! # }
//! # Ok::<(), kalloc_api::AllocError>(())
//! ```
//!
//! # Features
//!
//! - `hardened` (default): [`SlabConfig::new`] starts from [`Hardening::DEFAULT`].
//! - `debug-checks`: [`SlabConfig::new`] starts from [`Hardening::DEBUG`].
//! - `std`: `HostPages`, a page source over `std::alloc` for tests and benchmarks.
#![no_std]
#![warn(missing_docs)]

#[cfg(any(test, feature = "std"))]
extern crate std;

mod cache;
mod checks;
mod config;
mod corruption;
mod geometry;
#[cfg(any(test, feature = "std"))]
mod host;
mod magazine;
mod per_cpu;
mod pinned;
mod slab;
mod stats;
#[cfg(all(test, not(loom)))]
mod test_support;
mod typed;

pub use cache::SlabCache;
pub use config::{CorruptionHandler, DEFAULT_MAX_EMPTY_SLABS, Hardening, SlabConfig};
pub use corruption::{report_corruption, set_corruption_handler};
pub use geometry::{MAX_SLAB_BYTES, MAX_SLAB_ORDER, RED_ZONE_BYTES};
#[cfg(any(test, feature = "std"))]
pub use host::HostPages;
pub use magazine::{DEPOT_MAGAZINES, MAGAZINE_ROUNDS};
pub use per_cpu::PerCpuCache;
pub use pinned::PinnedPerCpuCache;
pub use slab::{POISON_FREE_BYTE, RED_ZONE_BYTE};
pub use stats::CacheStats;
pub use typed::{SlabBox, TypedCache};
