//! The trait every physical frame allocator implements.

use crate::error::{AllocError, FreeError};
use crate::frame::{Frame, FrameRange};

/// A physical frame allocator: hands out runs of 4 KiB frames and takes them back.
///
/// The core of every kalloc frame allocator is a plain struct with `&mut self`
/// methods; sharing between CPUs comes from a wrapper ([`Locked`](crate::Locked))
/// or, for lock-free allocators, from implementing this trait for `&Allocator`.
///
/// Implementations never corrupt their state on bad input: a deallocation that
/// names frames which are not allocated, not owned, or not the start of an
/// allocation returns a [`FreeError`] and changes nothing.
///
/// # Example
///
/// A toy allocator over frames 0..8 that hands out one frame at a time:
///
/// ```
/// use kalloc_api::{AllocError, Frame, FrameAllocator, FrameRange, FreeError};
///
/// struct EightFrames { used: u8 }
///
/// impl FrameAllocator for EightFrames {
///     fn allocate(&mut self, count: usize, frame_align: usize) -> Result<FrameRange, AllocError> {
///         if count == 0 { return Err(AllocError::ZeroSize); }
///         if count != 1 || frame_align != 1 { return Err(AllocError::OutOfMemory); }
///         let free = (!self.used).trailing_zeros();
///         if free == 8 { return Err(AllocError::OutOfMemory); }
///         self.used |= 1 << free;
///         Ok(FrameRange::new(Frame::from_number(free.into()), 1))
///     }
///     fn deallocate(&mut self, range: FrameRange) -> Result<(), FreeError> {
///         let n = range.start().number();
///         if n >= 8 || range.count() != 1 { return Err(FreeError::NotOwned); }
///         if self.used & (1 << n) == 0 { return Err(FreeError::DoubleFree); }
///         self.used &= !(1 << n);
///         Ok(())
///     }
///     fn free_frames(&self) -> usize { self.used.count_zeros() as usize }
///     fn total_frames(&self) -> usize { 8 }
/// }
///
/// let mut frames = EightFrames { used: 0 };
/// let frame = frames.allocate_frame()?;
/// assert_eq!(frames.free_frames(), 7);
/// frames.deallocate_frame(frame).unwrap();
/// assert_eq!(frames.deallocate_frame(frame), Err(FreeError::DoubleFree));
/// # Ok::<(), AllocError>(())
/// ```
pub trait FrameAllocator {
    /// Allocates `count` contiguous frames whose first frame number is a
    /// multiple of `frame_align` (so the run's physical address is aligned to
    /// `frame_align * 4 KiB`; 512 gives a 2 MiB-aligned run).
    ///
    /// # Errors
    /// [`AllocError::ZeroSize`] for `count == 0`, [`AllocError::BadAlignment`]
    /// when `frame_align` is not a power of two, [`AllocError::OutOfMemory`] when
    /// no suitable run is free.
    fn allocate(&mut self, count: usize, frame_align: usize) -> Result<FrameRange, AllocError>;

    /// Returns a run obtained from [`allocate`](Self::allocate).
    ///
    /// # Errors
    /// A [`FreeError`] naming why the run cannot be freed; the allocator is unchanged.
    fn deallocate(&mut self, range: FrameRange) -> Result<(), FreeError>;

    /// Frames currently free.
    fn free_frames(&self) -> usize;

    /// Frames under management, free or not.
    fn total_frames(&self) -> usize;

    /// Allocates a single frame.
    ///
    /// # Errors
    /// As [`allocate`](Self::allocate).
    #[inline]
    fn allocate_frame(&mut self) -> Result<Frame, AllocError> {
        self.allocate(1, 1).map(FrameRange::start)
    }

    /// Frees a single frame.
    ///
    /// # Errors
    /// As [`deallocate`](Self::deallocate).
    #[inline]
    fn deallocate_frame(&mut self, frame: Frame) -> Result<(), FreeError> {
        self.deallocate(FrameRange::new(frame, 1))
    }

    /// Frames currently allocated (or reserved).
    #[inline]
    fn used_frames(&self) -> usize {
        self.total_frames() - self.free_frames()
    }
}

impl<A: FrameAllocator + ?Sized> FrameAllocator for &mut A {
    #[inline]
    fn allocate(&mut self, count: usize, frame_align: usize) -> Result<FrameRange, AllocError> {
        (**self).allocate(count, frame_align)
    }

    #[inline]
    fn deallocate(&mut self, range: FrameRange) -> Result<(), FreeError> {
        (**self).deallocate(range)
    }

    #[inline]
    fn free_frames(&self) -> usize {
        (**self).free_frames()
    }

    #[inline]
    fn total_frames(&self) -> usize {
        (**self).total_frames()
    }
}
