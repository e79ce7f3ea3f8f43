//! Adapters from each allocator's own API to [`ModelAllocator`](crate::ModelAllocator).

pub mod bitmap;
pub mod buddy;
pub mod bump;
mod frames;
mod global;
pub mod heap;
pub mod pinned_heap;
pub mod slab;

pub use frames::{Check, FrameAdapter};
pub use global::{GlobalAdapter, HeapHooks, Hook, ModelCheck};
