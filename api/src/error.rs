//! Errors as values: one enum per operation, one variant per cause.

use core::fmt;
use core::ptr::NonNull;

/// Why address arithmetic failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddrError {
    /// The alignment is zero or not a power of two.
    BadAlignment,
    /// The result does not fit in the address type.
    Overflow,
    /// The address is not aligned as the operation requires.
    Misaligned,
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadAlignment => "alignment is not a power of two",
            Self::Overflow => "address arithmetic overflowed",
            Self::Misaligned => "address is not aligned",
        })
    }
}

impl core::error::Error for AddrError {}

/// Why an allocation failed. Nothing was allocated and nothing was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AllocError {
    /// Not enough free memory, or no free run long and aligned enough.
    OutOfMemory,
    /// A request for zero bytes or zero frames.
    ZeroSize,
    /// The alignment is zero, not a power of two, or larger than the allocator supports.
    BadAlignment,
    /// The size, rounded up for alignment or to whole frames, overflows.
    Overflow,
    /// A fixed-capacity bookkeeping table (reservations, regions) is full.
    TableFull,
    /// The allocator has no memory yet: it was constructed but never given any.
    Uninitialized,
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::OutOfMemory => "out of memory",
            Self::ZeroSize => "zero-size request",
            Self::BadAlignment => "unsupported alignment",
            Self::Overflow => "size overflows",
            Self::TableFull => "bookkeeping table is full",
            Self::Uninitialized => "allocator has no memory yet",
        })
    }
}

impl core::error::Error for AllocError {}

/// An allocation's outcome as a pointer and an error: what out-of-line
/// slow paths return to an inlined fast path.
///
/// A `Result<NonNull<u8>, AllocError>` keeps its tag and its payload at
/// different offsets, so a function returning one writes it to memory and
/// the caller reads it back; this pair comes back in two registers.
///
/// ```
/// use core::ptr::NonNull;
/// use kalloc_api::{AllocError, PackedAllocation};
///
/// let failed = PackedAllocation::from(Err(AllocError::ZeroSize));
/// assert_eq!(failed.into_result(), Err(AllocError::ZeroSize));
/// let block = NonNull::<u8>::dangling();
/// assert_eq!(PackedAllocation::from(Ok(block)).into_result(), Ok(block));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct PackedAllocation {
    block: *mut u8,
    error: AllocError,
}

impl PackedAllocation {
    /// Packs `result`.
    #[inline(always)]
    pub fn from(result: Result<NonNull<u8>, AllocError>) -> Self {
        match result {
            Ok(block) => Self {
                block: block.as_ptr(),
                error: AllocError::OutOfMemory,
            },
            Err(error) => Self {
                block: core::ptr::null_mut(),
                error,
            },
        }
    }

    /// The result packed.
    #[inline(always)]
    pub fn into_result(self) -> Result<NonNull<u8>, AllocError> {
        NonNull::new(self.block).ok_or(self.error)
    }
}

/// Why a deallocation was refused. The allocator's state is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FreeError {
    /// The memory is already free.
    DoubleFree,
    /// The address lies outside every range this allocator manages.
    NotOwned,
    /// The address is not at the start of an allocation (or not frame-aligned).
    Misaligned,
    /// The range starts inside the allocator but runs past its end.
    OutOfRange,
    /// The size or order given does not match the allocation at that address.
    SizeMismatch,
    /// Metadata that hardening checks guard was found overwritten.
    Corrupted,
}

impl fmt::Display for FreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::DoubleFree => "double free",
            Self::NotOwned => "address not owned by this allocator",
            Self::Misaligned => "address is not the start of an allocation",
            Self::OutOfRange => "range runs past the managed memory",
            Self::SizeMismatch => "size does not match the allocation",
            Self::Corrupted => "allocator metadata corrupted",
        })
    }
}

impl core::error::Error for FreeError {}

/// Why a memory map was rejected. `index` is the position of the offending
/// region in the order it was pushed (or, for [`MapError::CapacityExceeded`]
/// during normalisation, the number of regions at that point).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapError {
    /// `start + length` does not fit in a `u64`.
    Overflow {
        /// Which region.
        index: usize,
    },
    /// The region has length zero.
    EmptyRegion {
        /// Which region.
        index: usize,
    },
    /// The caller-provided storage has no room for another region.
    CapacityExceeded {
        /// Which region did not fit.
        index: usize,
    },
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Overflow { index } => write!(f, "memory map region {index} ends past 2^64"),
            Self::EmptyRegion { index } => write!(f, "memory map region {index} is empty"),
            Self::CapacityExceeded { index } => {
                write!(f, "memory map storage is full at region {index}")
            }
        }
    }
}

impl core::error::Error for MapError {}
