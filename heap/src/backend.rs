//! Everything above the small size classes: the mid-size TLSF, whole-page
//! allocations, and where both get their memory.
//!
//! A backend runs in one of two modes, fixed by the first initialisation:
//!
//! - **pages**: a [`PageSource`] feeds everything. Mid-size requests are cut
//!   from page runs of [`MID_CHUNK_PAGES`] pages (given back once wholly free,
//!   keeping one against churn), large ones take whole pages of their own, and
//!   slabs take their pages straight from the source.
//! - **region**: one or more fixed regions (a static array, memory the boot
//!   allocator handed over) become TLSF chunks, and every non-small request,
//!   slab pages included, is cut from them with the alignment it needs. Nothing
//!   is rounded to pages, so a full region wastes almost nothing.

use core::alloc::Layout;
use core::fmt;
use core::ptr::NonNull;

use kalloc_api::{AllocError, FreeError, PAGE_SIZE, PageSource, Stats};

use crate::provenance;
use crate::tlsf::{ReleasedChunk, Tlsf, TlsfFreeError};

/// Requests above this many bytes skip the mid-size allocator (in pages mode).
pub const MID_MAX_BYTES: usize = 64 * 1024;

/// Pages in each run the mid-size allocator takes from the page source.
pub const MID_CHUNK_PAGES: usize = 64;

/// Why a heap could not be initialised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    /// The heap already has a page source, or regions, and cannot take a page source now.
    AlreadyInitialized,
    /// The region is too small (or too badly aligned) to hold one block.
    RegionTooSmall,
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AlreadyInitialized => "heap is already initialised",
            Self::RegionTooSmall => "region too small for the heap",
        })
    }
}

impl core::error::Error for InitError {}

/// Where non-small memory comes from.
enum Source<P> {
    Uninit,
    Pages(P),
    Region,
}

/// Usage of the mid-size and large paths.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendStats {
    /// Mid-size requests (region mode: every non-small request).
    pub mid: Stats,
    /// Whole-page requests (pages mode only).
    pub large: Stats,
    /// Free bytes inside the mid-size allocator's chunks.
    pub mid_free_bytes: usize,
    /// The largest request the mid-size allocator could serve without growing.
    pub mid_largest_free: usize,
    /// Pages held for slabs, in bytes (pages mode: from the source; region mode: cut from the regions).
    pub slab_bytes: usize,
}

/// The mid-size and large paths. See the module docs.
pub struct Backend<P> {
    source: Source<P>,
    tlsf: Tlsf,
    mid: Stats,
    large: Stats,
    slab_bytes: usize,
}

/// Pages needed for `size` bytes at `align`, as a page source is asked for
/// them: alignment above a page is met by taking at least that many pages.
fn large_pages(size: usize, align: usize) -> Option<(usize, usize)> {
    let pages = size.max(1).checked_add(PAGE_SIZE - 1)? / PAGE_SIZE;
    let align_pages = (align / PAGE_SIZE).max(1);
    Some((pages.max(align_pages), align_pages))
}

impl<P: PageSource> Backend<P> {
    /// A backend with no memory.
    pub const fn new() -> Self {
        Self {
            source: Source::Uninit,
            tlsf: Tlsf::new(),
            mid: Stats::ZERO,
            large: Stats::ZERO,
            slab_bytes: 0,
        }
    }

    /// A backend taking all its memory from `pages`.
    pub const fn with_pages(pages: P) -> Self {
        Self {
            source: Source::Pages(pages),
            tlsf: Tlsf::new(),
            mid: Stats::ZERO,
            large: Stats::ZERO,
            slab_bytes: 0,
        }
    }

    /// Whether `init` or `add_region` has run.
    pub fn is_initialized(&self) -> bool {
        !matches!(self.source, Source::Uninit)
    }

    /// Takes `pages` as the source of all memory.
    pub fn init(&mut self, pages: P) -> Result<(), InitError> {
        if self.is_initialized() {
            return Err(InitError::AlreadyInitialized);
        }
        self.source = Source::Pages(pages);
        Ok(())
    }

    /// Adds a fixed region. Before a page source it puts the backend in region
    /// mode; after one, the region serves mid-size requests only.
    ///
    /// # Safety
    /// `start..start + len` is writable memory used by nothing else, for as
    /// long as the backend lives.
    pub unsafe fn add_region(&mut self, start: *mut u8, len: usize) -> Result<(), InitError> {
        let start = NonNull::new(start).ok_or(InitError::RegionTooSmall)?;
        provenance::expose(start);
        // SAFETY: the caller's promise. Beyond `MAX_BLOCK_BYTES` (128 TiB) the
        // TLSF trims the region.
        if unsafe { self.tlsf.add_chunk(start, len, false) } == 0 {
            return Err(InitError::RegionTooSmall);
        }
        if let Source::Uninit = self.source {
            self.source = Source::Region;
        }
        Ok(())
    }

    /// Allocates a non-small block (the caller has ruled out the size classes).
    #[inline]
    pub fn allocate(&mut self, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        let (size, align) = (layout.size(), layout.align());
        let ptr = match &self.source {
            Source::Pages(_) if size > MID_MAX_BYTES || align > PAGE_SIZE => {
                return self.allocate_large(size, align);
            }
            Source::Uninit => return Err(AllocError::Uninitialized),
            _ => match self.tlsf.allocate(size, align) {
                Some(ptr) => ptr,
                None => self.grow_and_allocate(size, align)?,
            },
        };
        self.mid.record_allocation(size);
        Ok(ptr)
    }

    #[cold]
    fn grow_and_allocate(&mut self, size: usize, align: usize) -> Result<NonNull<u8>, AllocError> {
        let Source::Pages(pages) = &self.source else {
            return Err(AllocError::OutOfMemory);
        };
        // Pages mode only sends requests that fit one chunk with room to align.
        let count = MID_CHUNK_PAGES;
        let chunk = pages.allocate_pages(count, 1)?;
        provenance::expose(chunk);
        // SAFETY: the source hands us `count` pages exclusively until we give
        // them back, which the TLSF does only once the chunk is wholly free.
        unsafe { self.tlsf.add_chunk(chunk, count * PAGE_SIZE, true) };
        self.tlsf
            .allocate(size, align)
            .ok_or(AllocError::OutOfMemory)
    }

    #[cold]
    fn allocate_large(&mut self, size: usize, align: usize) -> Result<NonNull<u8>, AllocError> {
        let Source::Pages(pages) = &self.source else {
            return Err(AllocError::Uninitialized);
        };
        let (count, align_pages) = large_pages(size, align).ok_or(AllocError::Overflow)?;
        let ptr = pages.allocate_pages(count, align_pages)?;
        provenance::expose(ptr);
        self.large.record_allocation(size);
        self.large.bytes_held += count * PAGE_SIZE;
        Ok(ptr)
    }

    /// Frees a block from [`allocate`](Self::allocate).
    ///
    /// # Safety
    /// `ptr` was returned by `allocate(layout)` on this backend and is no
    /// longer used.
    pub unsafe fn deallocate(&mut self, ptr: NonNull<u8>, layout: Layout) -> Result<(), FreeError> {
        let (size, align) = (layout.size(), layout.align());
        match &self.source {
            Source::Pages(pages) if size > MID_MAX_BYTES || align > PAGE_SIZE => {
                let (count, _) = large_pages(size, align).ok_or(FreeError::SizeMismatch)?;
                // SAFETY: the caller promises `ptr` came from `allocate_large`
                // with this layout, hence these `count` pages.
                unsafe { pages.deallocate_pages(ptr, count) }?;
                self.large.record_deallocation(size);
                self.large.bytes_held -= count * PAGE_SIZE;
                Ok(())
            }
            Source::Uninit => Err(FreeError::NotOwned),
            _ => {
                // SAFETY: the caller promises `ptr` came from the TLSF.
                unsafe { self.free_mid(ptr) }?;
                self.mid.record_deallocation(size);
                Ok(())
            }
        }
    }

    /// # Safety
    /// `ptr` is a live TLSF allocation.
    unsafe fn free_mid(&mut self, ptr: NonNull<u8>) -> Result<(), FreeError> {
        // SAFETY: per the caller's promise.
        match unsafe { self.tlsf.deallocate(ptr) } {
            Ok(None) => Ok(()),
            Ok(Some(chunk)) => {
                self.give_back(chunk);
                Ok(())
            }
            Err(TlsfFreeError::DoubleFree) => Err(FreeError::DoubleFree),
        }
    }

    #[cold]
    fn give_back(&mut self, chunk: ReleasedChunk) {
        if let Source::Pages(pages) = &self.source {
            // SAFETY: releasable chunks are page runs of this length from this
            // source, and the TLSF no longer uses the chunk.
            let result = unsafe { pages.deallocate_pages(chunk.start, chunk.len / PAGE_SIZE) };
            debug_assert!(result.is_ok(), "page source refused its own pages");
        }
    }

    /// Resizes a non-small block in place; `false` when it must move.
    ///
    /// # Safety
    /// `ptr` is a live allocation from `allocate(old)`, and `new` has `old`'s
    /// alignment and is itself not small.
    pub unsafe fn resize_in_place(
        &mut self,
        ptr: NonNull<u8>,
        old: Layout,
        new_size: usize,
    ) -> bool {
        let (old_size, align) = (old.size(), old.align());
        let large = matches!(self.source, Source::Pages(_))
            && (old_size > MID_MAX_BYTES || align > PAGE_SIZE);
        let moved_on = match &self.source {
            Source::Pages(_) if large => {
                if new_size <= MID_MAX_BYTES && align <= PAGE_SIZE {
                    return false;
                }
                // Same page run: the count is all a large block records.
                large_pages(old_size, align) == large_pages(new_size, align)
            }
            Source::Pages(_) if new_size > MID_MAX_BYTES => return false,
            // SAFETY: the caller promises a live TLSF block.
            _ => unsafe { self.tlsf.resize_in_place(ptr, new_size) },
        };
        if moved_on {
            // Region mode counts every TLSF block as mid-size, whatever its size.
            let stats = if large {
                &mut self.large
            } else {
                &mut self.mid
            };
            stats.bytes_in_use = stats.bytes_in_use - old_size + new_size;
            stats.peak_bytes_in_use = stats.peak_bytes_in_use.max(stats.bytes_in_use);
        }
        moved_on
    }

    /// Pages for a slab: from the source, or cut from the regions.
    pub fn allocate_pages(
        &mut self,
        count: usize,
        align_pages: usize,
    ) -> Result<NonNull<u8>, AllocError> {
        let bytes = count.checked_mul(PAGE_SIZE).ok_or(AllocError::Overflow)?;
        let align = align_pages
            .checked_mul(PAGE_SIZE)
            .ok_or(AllocError::BadAlignment)?;
        let ptr = match &self.source {
            Source::Pages(pages) => {
                let ptr = pages.allocate_pages(count, align_pages)?;
                provenance::expose(ptr);
                ptr
            }
            Source::Uninit => return Err(AllocError::Uninitialized),
            Source::Region => {
                if count == 0 {
                    return Err(AllocError::ZeroSize);
                }
                if !align_pages.is_power_of_two() {
                    return Err(AllocError::BadAlignment);
                }
                self.tlsf
                    .allocate(bytes, align)
                    .ok_or(AllocError::OutOfMemory)?
            }
        };
        self.slab_bytes += bytes;
        Ok(ptr)
    }

    /// Takes back slab pages from [`allocate_pages`](Self::allocate_pages).
    ///
    /// # Safety
    /// As [`PageSource::deallocate_pages`].
    pub unsafe fn deallocate_pages(
        &mut self,
        ptr: NonNull<u8>,
        count: usize,
    ) -> Result<(), FreeError> {
        match &self.source {
            // SAFETY: per the caller's promise.
            Source::Pages(pages) => unsafe { pages.deallocate_pages(ptr, count) }?,
            Source::Uninit => return Err(FreeError::NotOwned),
            // SAFETY: per the caller's promise, `ptr` came from the TLSF.
            Source::Region => unsafe { self.free_mid(ptr) }?,
        }
        self.slab_bytes -= count * PAGE_SIZE;
        Ok(())
    }

    /// Gives the kept empty page run back to the source; returns the bytes.
    pub fn shrink(&mut self) -> usize {
        match self.tlsf.release_spare() {
            Some(chunk) => {
                let len = chunk.len;
                self.give_back(chunk);
                len
            }
            None => 0,
        }
    }

    /// Usage of the mid-size and large paths.
    pub fn stats(&self) -> BackendStats {
        let mut mid = self.mid;
        mid.bytes_held = self.tlsf.held_bytes();
        if let Source::Region = self.source {
            // Slab pages cut from the regions count toward the slabs.
            mid.bytes_held -= self.slab_bytes;
        }
        BackendStats {
            mid,
            large: self.large,
            mid_free_bytes: self.tlsf.free_bytes(),
            mid_largest_free: self.tlsf.largest_free_payload(),
            slab_bytes: self.slab_bytes,
        }
    }

    /// Counts a failed request against the path that refused it.
    pub fn record_failure(&mut self, layout: Layout) {
        if matches!(self.source, Source::Pages(_))
            && (layout.size() > MID_MAX_BYTES || layout.align() > PAGE_SIZE)
        {
            self.large.record_failure();
        } else {
            self.mid.record_failure();
        }
    }

    #[cfg(test)]
    pub fn check(&self) {
        self.tlsf.check();
    }
}

impl<P: PageSource> Default for Backend<P> {
    fn default() -> Self {
        Self::new()
    }
}
