//! Why a bitmap could not be built or a range not marked.

use core::fmt;

/// Why [`BitmapFrameAllocator::new`](crate::BitmapFrameAllocator::new),
/// [`AtomicBitmapFrameAllocator::new`](crate::AtomicBitmapFrameAllocator::new)
/// or a `mark_free` / `mark_used` call refused its input. Nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BitmapError {
    /// The caller's storage is shorter than [`storage_words`](crate::storage_words) asks.
    StorageTooSmall {
        /// Words the allocator needs.
        needed: usize,
        /// Words the caller handed in.
        provided: usize,
    },
    /// The managed frames would end past the last addressable frame.
    Overflow,
    /// The range starts outside the managed frames.
    NotOwned,
    /// The range starts inside the managed frames but runs past their end.
    OutOfRange,
}

impl fmt::Display for BitmapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StorageTooSmall { needed, provided } => write!(
                f,
                "bitmap storage holds {provided} words, {needed} are needed"
            ),
            Self::Overflow => f.write_str("managed frames end past the last physical frame"),
            Self::NotOwned => f.write_str("range starts outside the managed frames"),
            Self::OutOfRange => f.write_str("range runs past the managed frames"),
        }
    }
}

impl core::error::Error for BitmapError {}
