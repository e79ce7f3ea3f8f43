//! Errors of setting up a buddy allocator and of its invariant checker.

use core::fmt;

/// Why a window could not be created or a range could not be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BuddyError {
    /// The metadata storage has fewer entries than the window has frames.
    StorageTooSmall {
        /// Entries needed (one per frame).
        needed: usize,
        /// Entries given.
        given: usize,
    },
    /// The window has more than [`MAX_WINDOW_FRAMES`](crate::MAX_WINDOW_FRAMES)
    /// frames, or ends past the last frame a physical address can name.
    WindowTooLarge,
    /// The range reaches outside the window given at construction.
    OutsideWindow,
    /// Some frame of the range was added before.
    AlreadyAdded {
        /// The first frame number found already added.
        frame: u64,
    },
}

impl fmt::Display for BuddyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StorageTooSmall { needed, given } => {
                write!(f, "metadata storage has {given} entries, {needed} needed")
            }
            Self::WindowTooLarge => f.write_str("frame window is too large"),
            Self::OutsideWindow => f.write_str("range reaches outside the frame window"),
            Self::AlreadyAdded { frame } => write!(f, "frame {frame:#x} was already added"),
        }
    }
}

impl core::error::Error for BuddyError {}

/// A broken invariant found by
/// [`BuddyFrameAllocator::check_invariants`](crate::BuddyFrameAllocator::check_invariants).
/// `frame` is a frame number; `order` a block order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InvariantError {
    /// A free list link leaves the window or disagrees with its neighbour.
    BrokenLink {
        /// The list.
        order: usize,
        /// The frame whose link is wrong.
        frame: u64,
    },
    /// A block on the free list for `order` is not tagged free with that order.
    WrongTag {
        /// The list.
        order: usize,
        /// The block.
        frame: u64,
    },
    /// A block is not aligned to its size or runs past the window.
    Misplaced {
        /// The block's order.
        order: usize,
        /// The block.
        frame: u64,
    },
    /// A free block's buddy is free with the same order: they should have merged.
    Uncoalesced {
        /// The blocks' order.
        order: usize,
        /// The lower of the two blocks.
        frame: u64,
    },
    /// A list's length, its counter and its bit in the non-empty mask disagree.
    CountMismatch {
        /// The list.
        order: usize,
    },
    /// A frame is neither a block head nor inside the block before it.
    OrphanFrame {
        /// The frame.
        frame: u64,
    },
    /// An allocation's pieces are not chained (a piece that continues nothing,
    /// or one that announces a continuation that is missing).
    BrokenAllocation {
        /// The piece.
        frame: u64,
    },
    /// Free, allocated and total frame counts do not add up.
    FrameCountMismatch,
}

impl fmt::Display for InvariantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BrokenLink { order, frame } => {
                write!(f, "order-{order} free list link broken at frame {frame:#x}")
            }
            Self::WrongTag { order, frame } => {
                write!(
                    f,
                    "frame {frame:#x} on the order-{order} list is not a free order-{order} block"
                )
            }
            Self::Misplaced { order, frame } => {
                write!(
                    f,
                    "order-{order} block at frame {frame:#x} is misaligned or out of the window"
                )
            }
            Self::Uncoalesced { order, frame } => {
                write!(
                    f,
                    "free order-{order} buddies at frame {frame:#x} were not merged"
                )
            }
            Self::CountMismatch { order } => write!(f, "order-{order} free list count is wrong"),
            Self::OrphanFrame { frame } => write!(f, "frame {frame:#x} belongs to no block"),
            Self::BrokenAllocation { frame } => {
                write!(f, "allocation pieces are not chained at frame {frame:#x}")
            }
            Self::FrameCountMismatch => f.write_str("free + allocated frames != total frames"),
        }
    }
}

impl core::error::Error for InvariantError {}
