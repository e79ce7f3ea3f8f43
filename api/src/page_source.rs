//! `PageSource`: where slab caches and heaps get whole pages from.

use core::ptr::NonNull;

use crate::addr::PhysAddr;
use crate::error::{AllocError, FreeError};
use crate::frame::{FRAME_SIZE, Frame, FrameRange};
use crate::frame_allocator::FrameAllocator;

/// Bytes in one page handed out by a [`PageSource`] (the frame size, 4 KiB).
pub const PAGE_SIZE: usize = FRAME_SIZE as usize;

/// A supplier of whole, mapped, writable pages, shared by `&self` so that one
/// source can feed many caches and CPUs at once.
///
/// # Safety
///
/// Implementors promise that a pointer returned by
/// [`allocate_pages`](Self::allocate_pages) addresses `count * PAGE_SIZE` bytes
/// that are mapped readable and writable, aligned to `align_pages * PAGE_SIZE`,
/// and owned by nobody else until they are passed back to
/// [`deallocate_pages`](Self::deallocate_pages). Slab caches and heaps write
/// their metadata into these pages on the strength of that promise.
///
/// # Example
///
/// ```
/// use core::ptr::NonNull;
/// use kalloc_api::{AllocError, FreeError, PageSource, PAGE_SIZE};
///
/// /// Hands out the single page of a static buffer, once.
/// struct OnePage(core::sync::atomic::AtomicBool, core::cell::UnsafeCell<[u8; PAGE_SIZE]>);
/// // SAFETY: the page is handed out at most once, guarded by the flag.
/// unsafe impl Sync for OnePage {}
///
/// // SAFETY: the buffer is valid, PAGE_SIZE-aligned through the wrapper below,
/// // and handed to one owner at a time.
/// unsafe impl PageSource for OnePage {
///     fn allocate_pages(&self, count: usize, align_pages: usize) -> Result<NonNull<u8>, AllocError> {
///         use core::sync::atomic::Ordering::AcqRel;
///         if count != 1 || align_pages != 1 || self.0.swap(true, AcqRel) {
///             return Err(AllocError::OutOfMemory);
///         }
///         Ok(NonNull::new(self.1.get().cast()).unwrap())
///     }
///     unsafe fn deallocate_pages(&self, _: NonNull<u8>, _: usize) -> Result<(), FreeError> {
///         self.0.store(false, core::sync::atomic::Ordering::Release);
///         Ok(())
///     }
/// }
///
/// #[repr(align(4096))]
/// struct Aligned(OnePage);
/// let source = Aligned(OnePage(false.into(), [0; PAGE_SIZE].into()));
/// let page = source.0.allocate_pages(1, 1)?;
/// assert!(source.0.allocate_pages(1, 1).is_err());
/// // SAFETY: `page` came from this source and is no longer used.
/// unsafe { source.0.deallocate_pages(page, 1) }.unwrap();
/// # Ok::<(), AllocError>(())
/// ```
pub unsafe trait PageSource {
    /// Allocates `count` contiguous pages, the first aligned to
    /// `align_pages * PAGE_SIZE` bytes (`align_pages` a power of two).
    ///
    /// # Errors
    /// [`AllocError::ZeroSize`], [`AllocError::BadAlignment`] or
    /// [`AllocError::OutOfMemory`], as for [`FrameAllocator::allocate`].
    fn allocate_pages(&self, count: usize, align_pages: usize) -> Result<NonNull<u8>, AllocError>;

    /// Gives back pages from [`allocate_pages`](Self::allocate_pages).
    ///
    /// # Errors
    /// A [`FreeError`] when the source can tell the pages are not its own or not
    /// allocated; nothing changes then.
    ///
    /// # Safety
    /// `pages` and `count` describe one earlier allocation from this source that
    /// has not been given back, and the caller no longer uses that memory.
    unsafe fn deallocate_pages(&self, pages: NonNull<u8>, count: usize) -> Result<(), FreeError>;
}

// SAFETY: forwarding keeps the inner source's promise.
unsafe impl<P: PageSource + ?Sized> PageSource for &P {
    #[inline]
    fn allocate_pages(&self, count: usize, align_pages: usize) -> Result<NonNull<u8>, AllocError> {
        (**self).allocate_pages(count, align_pages)
    }

    #[inline]
    unsafe fn deallocate_pages(&self, pages: NonNull<u8>, count: usize) -> Result<(), FreeError> {
        // SAFETY: the caller's promise is passed on unchanged.
        unsafe { (**self).deallocate_pages(pages, count) }
    }
}

/// Turns a shareable frame allocator into a [`PageSource`] through a fixed
/// physical-to-virtual offset: the page for frame `f` is at virtual address
/// `f.start_address() + offset` (an identity-mapped kernel uses offset 0).
///
/// `A` is a `Copy` handle whose copies allocate from the same frames, such as
/// `&Locked<BuddyFrameAllocator>` or `&AtomicBitmapFrameAllocator`.
///
/// ```
/// use kalloc_api::{AllocError, FrameAllocator, FrameRange, FreeError, Locked, OffsetPages};
/// # struct Never;
/// # impl FrameAllocator for Never {
/// #     fn allocate(&mut self, _: usize, _: usize) -> Result<FrameRange, AllocError> { Err(AllocError::OutOfMemory) }
/// #     fn deallocate(&mut self, _: FrameRange) -> Result<(), FreeError> { Err(FreeError::NotOwned) }
/// #     fn free_frames(&self) -> usize { 0 }
/// #     fn total_frames(&self) -> usize { 0 }
/// # }
/// static FRAMES: Locked<Never> = Locked::new(Never);
/// const PHYS_OFFSET: usize = 0xffff_8000_0000_0000;
/// // SAFETY (in a real kernel): all physical memory is mapped at PHYS_OFFSET.
/// let pages = unsafe { OffsetPages::new(&FRAMES, PHYS_OFFSET) };
/// # let _ = pages;
/// ```
#[derive(Clone, Copy, Debug)]
pub struct OffsetPages<A> {
    frames: A,
    offset: usize,
}

impl<A> OffsetPages<A> {
    /// Pages from `frames`, each mapped at its physical address plus `offset`.
    ///
    /// # Safety
    /// Every frame `frames` can hand out is mapped readable and writable at
    /// `physical address + offset`, and that memory is used by nothing but this
    /// source's callers while allocated.
    pub const unsafe fn new(frames: A, offset: usize) -> Self {
        Self { frames, offset }
    }

    /// Pages from `frames` in an identity-mapped address space (virtual == physical).
    ///
    /// # Safety
    /// As [`new`](Self::new) with an offset of zero.
    pub const unsafe fn identity(frames: A) -> Self {
        Self { frames, offset: 0 }
    }

    /// The frame allocator behind the pages.
    pub const fn frames(&self) -> &A {
        &self.frames
    }

    fn virt_of(&self, range: FrameRange) -> Option<NonNull<u8>> {
        let phys = usize::try_from(range.start_address().as_u64()).ok()?;
        let virt = phys.checked_add(self.offset)?;
        NonNull::new(core::ptr::with_exposed_provenance_mut(virt))
    }
}

// SAFETY: `new`'s contract makes every frame the allocator returns mapped and
// exclusively ours at `phys + offset`; alignment carries over because `offset`
// must map page-aligned physical addresses to page-aligned virtual ones, which
// `allocate_pages` checks.
unsafe impl<A: FrameAllocator + Copy> PageSource for OffsetPages<A> {
    fn allocate_pages(&self, count: usize, align_pages: usize) -> Result<NonNull<u8>, AllocError> {
        // An offset that is not a multiple of the alignment would break it.
        let align_bytes = align_pages
            .checked_mul(PAGE_SIZE)
            .ok_or(AllocError::BadAlignment)?;
        if !align_pages.is_power_of_two() || self.offset % align_bytes != 0 {
            return Err(AllocError::BadAlignment);
        }
        let mut frames = self.frames;
        let range = frames.allocate(count, align_pages)?;
        match self.virt_of(range) {
            Some(pages) => Ok(pages),
            None => {
                // Unreachable through a kernel's own mapping; keep the frames anyway.
                let _ = frames.deallocate(range);
                Err(AllocError::OutOfMemory)
            }
        }
    }

    unsafe fn deallocate_pages(&self, pages: NonNull<u8>, count: usize) -> Result<(), FreeError> {
        let virt = pages.as_ptr() as usize;
        let phys = virt.checked_sub(self.offset).ok_or(FreeError::NotOwned)?;
        let frame =
            Frame::from_start(PhysAddr::new(phys as u64)).map_err(|_| FreeError::Misaligned)?;
        let mut frames = self.frames;
        frames.deallocate(FrameRange::new(frame, count as u64))
    }
}
