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

#[cfg(all(test, not(loom)))]
mod tests {
    extern crate std;

    use super::*;
    use crate::Locked;
    use std::alloc::{Layout, alloc, dealloc};

    /// A frame allocator over real host memory, so the pages can be written.
    struct HostFrames {
        base: u64,
        used: [bool; 8],
    }

    impl FrameAllocator for HostFrames {
        fn allocate(&mut self, count: usize, align: usize) -> Result<FrameRange, AllocError> {
            if count == 0 {
                return Err(AllocError::ZeroSize);
            }
            let first = self.base / FRAME_SIZE;
            let start = (0..=8 - count)
                .find(|i| {
                    (first + *i as u64) % align as u64 == 0
                        && self.used[*i..*i + count].iter().all(|u| !u)
                })
                .ok_or(AllocError::OutOfMemory)?;
            self.used[start..start + count].fill(true);
            Ok(FrameRange::new(
                Frame::from_number(first + start as u64),
                count as u64,
            ))
        }
        fn deallocate(&mut self, range: FrameRange) -> Result<(), FreeError> {
            let index = range
                .start()
                .number()
                .checked_sub(self.base / FRAME_SIZE)
                .ok_or(FreeError::NotOwned)? as usize;
            let slots = self
                .used
                .get_mut(index..index + range.count() as usize)
                .ok_or(FreeError::OutOfRange)?;
            if slots.iter().any(|u| !u) {
                return Err(FreeError::DoubleFree);
            }
            slots.fill(false);
            Ok(())
        }
        fn free_frames(&self) -> usize {
            self.used.iter().filter(|u| !**u).count()
        }
        fn total_frames(&self) -> usize {
            8
        }
    }

    const ARENA: Layout = match Layout::from_size_align(8 * PAGE_SIZE, 8 * PAGE_SIZE) {
        Ok(layout) => layout,
        Err(_) => panic!("arena layout"),
    };

    #[test]
    fn identity_pages_are_writable_aligned_and_returned() {
        // SAFETY: ARENA has a non-zero size.
        let arena = unsafe { alloc(ARENA) };
        assert!(!arena.is_null());
        // Expose the arena's provenance so pages rebuilt from frame numbers may use it.
        let base = arena.expose_provenance() as u64;
        let frames = Locked::new(HostFrames {
            base,
            used: [false; 8],
        });
        // SAFETY: the frames are the pages of `arena`, mapped at their address.
        let pages = unsafe { OffsetPages::identity(&frames) };
        let two = pages.allocate_pages(2, 2).unwrap();
        assert_eq!(two.as_ptr() as usize % (2 * PAGE_SIZE), 0);
        // SAFETY: the two pages are ours until deallocated.
        unsafe { two.as_ptr().write_bytes(0xa5, 2 * PAGE_SIZE) };
        assert_eq!(frames.free_frames(), 6);
        // SAFETY: `two` came from `pages` with count 2.
        unsafe { pages.deallocate_pages(two, 2) }.unwrap();
        // SAFETY: as above; the second call must be refused, not corrupt anything.
        let again = unsafe { pages.deallocate_pages(two, 2) };
        assert_eq!(again, Err(FreeError::DoubleFree));
        assert_eq!(frames.free_frames(), 8);
        // SAFETY: allocated above with ARENA, and no page is in use.
        unsafe { dealloc(arena, ARENA) };
    }

    #[test]
    fn offset_that_breaks_alignment_is_refused() {
        let frames = Locked::new(HostFrames {
            base: 0,
            used: [false; 8],
        });
        // SAFETY: no page is ever dereferenced in this test.
        let pages = unsafe { OffsetPages::new(&frames, PAGE_SIZE) };
        assert_eq!(pages.allocate_pages(1, 2), Err(AllocError::BadAlignment));
        assert_eq!(pages.allocate_pages(1, 3), Err(AllocError::BadAlignment));
        assert_eq!(frames.free_frames(), 8);
    }

    #[test]
    fn foreign_or_misaligned_pages_are_refused() {
        let frames = Locked::new(HostFrames {
            base: 0x10_0000,
            used: [false; 8],
        });
        // SAFETY: no page is ever dereferenced in this test.
        let pages = unsafe { OffsetPages::new(&frames, 0x1000_0000) };
        let below = NonNull::new(0x1000 as *mut u8).unwrap();
        // SAFETY: the source only does arithmetic on the pointer.
        let foreign = unsafe { pages.deallocate_pages(below, 1) };
        assert_eq!(foreign, Err(FreeError::NotOwned));
        let odd = NonNull::new((0x1010_0000 + 8) as *mut u8).unwrap();
        // SAFETY: as above.
        let misaligned = unsafe { pages.deallocate_pages(odd, 1) };
        assert_eq!(misaligned, Err(FreeError::Misaligned));
    }
}
