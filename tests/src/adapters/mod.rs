//! Adapters from each allocator's own API to [`ModelAllocator`](crate::ModelAllocator).

pub mod buddy;
mod frames;
mod global;

pub use frames::{Check, FrameAdapter};
pub use global::{GlobalAdapter, HeapHooks, Hook, ModelCheck};
