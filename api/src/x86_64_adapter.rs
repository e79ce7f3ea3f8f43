//! Hands a kalloc frame allocator to the `x86_64` crate's page-table mapper.
//!
//! Most Rust x86_64 kernels map pages with `x86_64::structures::paging::Mapper`,
//! which asks for frames through its own `FrameAllocator<Size4KiB>` trait.
//! [`X86FrameAllocator`] wraps any kalloc [`FrameAllocator`] to fill that role:
//!
//! ```
//! use kalloc_api::x86_64_adapter::X86FrameAllocator;
//! use x86_64::structures::paging::{FrameAllocator as _, PhysFrame, Size4KiB};
//! # use kalloc_api::{AllocError, Frame, FrameAllocator, FrameRange, FreeError};
//! # struct One(bool);
//! # impl FrameAllocator for One {
//! #     fn allocate(&mut self, _: usize, _: usize) -> Result<FrameRange, AllocError> {
//! #         if self.0 { return Err(AllocError::OutOfMemory) } self.0 = true;
//! #         Ok(FrameRange::new(Frame::from_number(42), 1)) }
//! #     fn deallocate(&mut self, _: FrameRange) -> Result<(), FreeError> { self.0 = false; Ok(()) }
//! #     fn free_frames(&self) -> usize { 1 - self.0 as usize }
//! #     fn total_frames(&self) -> usize { 1 }
//! # }
//!
//! let mut frames = X86FrameAllocator::new(One(false));
//! let frame: PhysFrame<Size4KiB> = frames.allocate_frame().unwrap();
//! assert_eq!(frame.start_address().as_u64(), 42 * 4096);
//! assert!(frames.allocate_frame().is_none());
//! ```

use x86_64::PhysAddr as X86PhysAddr;
use x86_64::structures::paging::{FrameDeallocator, PhysFrame, Size4KiB};

use crate::addr::PhysAddr;
use crate::frame::Frame;
use crate::frame_allocator::FrameAllocator;

/// A kalloc frame allocator seen through the `x86_64` crate's traits.
#[derive(Debug)]
pub struct X86FrameAllocator<A>(A);

impl<A: FrameAllocator> X86FrameAllocator<A> {
    /// Wraps `frames` (an allocator, `&mut` to one, or `&Locked<...>`).
    pub const fn new(frames: A) -> Self {
        Self(frames)
    }

    /// The wrapped allocator.
    pub fn into_inner(self) -> A {
        self.0
    }

    /// The wrapped allocator, for calls outside the mapper.
    pub fn inner_mut(&mut self) -> &mut A {
        &mut self.0
    }
}

// SAFETY: kalloc frame allocators hand out each frame to one owner until it is
// deallocated, which is exactly the uniqueness the x86_64 trait demands.
unsafe impl<A: FrameAllocator> x86_64::structures::paging::FrameAllocator<Size4KiB>
    for X86FrameAllocator<A>
{
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let frame = self.0.allocate_frame().ok()?;
        let addr = X86PhysAddr::try_new(frame.start_address().as_u64()).ok()?;
        Some(PhysFrame::containing_address(addr))
    }
}

impl<A: FrameAllocator> FrameDeallocator<Size4KiB> for X86FrameAllocator<A> {
    unsafe fn deallocate_frame(&mut self, frame: PhysFrame<Size4KiB>) {
        let frame = Frame::containing(PhysAddr::new(frame.start_address().as_u64()));
        // The x86_64 trait has no error channel; a frame the mapper did not get
        // from us is refused by the allocator and left alone, never corrupting it.
        let refused = self.0.deallocate_frame(frame);
        debug_assert!(
            refused.is_ok(),
            "x86_64 mapper freed a frame kalloc refused: {refused:?}"
        );
    }
}
