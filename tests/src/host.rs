//! Host memory for allocators that need real bytes: an aligned arena, and a
//! checking [`PageSource`] over one that records every page it hands out, so
//! a test can tell which pages a cache holds and that all came back.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::Mutex;

use kalloc_api::{AllocError, FreeError, PAGE_SIZE, PageSource};

use crate::model::Span;

/// An aligned, zeroed block of host memory, freed on drop.
#[derive(Debug)]
pub struct HostArena {
    base: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the arena is plain memory owned by this value; sharing its base
// pointer between threads is as safe as sharing a `Box<[u8]>`'s.
unsafe impl Send for HostArena {}
// SAFETY: as above; `&HostArena` only hands out the base pointer.
unsafe impl Sync for HostArena {}

impl HostArena {
    /// `len` bytes aligned to `align` (a power of two).
    ///
    /// # Panics
    /// When the layout is invalid or the host is out of memory.
    pub fn new(len: usize, align: usize) -> Self {
        let layout = Layout::from_size_align(len.max(1), align).expect("arena layout");
        // SAFETY: the layout has a non-zero size.
        let base = unsafe { alloc_zeroed(layout) };
        let base = NonNull::new(base).expect("host out of memory for the test arena");
        Self { base, layout }
    }

    /// The first byte.
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.layout.size()
    }

    /// Whether the arena is empty (never: `new` allocates at least a byte).
    pub fn is_empty(&self) -> bool {
        self.layout.size() == 0
    }

    /// The arena's address range.
    pub fn span(&self) -> Span {
        let start = self.base.as_ptr() as u64;
        (start, start + self.len() as u64)
    }

    /// The pointer `offset` bytes into the arena, with its provenance.
    ///
    /// # Panics
    /// When `offset` is past the end.
    pub fn at(&self, offset: usize) -> NonNull<u8> {
        assert!(offset <= self.len(), "offset past the arena");
        // SAFETY: `offset` is within the allocation (or one past its end).
        unsafe { self.base.add(offset) }
    }
}

impl Drop for HostArena {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout and freed only here.
        unsafe { dealloc(self.base.as_ptr(), self.layout) };
    }
}

#[derive(Debug, Default)]
struct PageBook {
    /// Outstanding allocations: first page index -> page count.
    runs: BTreeMap<usize, usize>,
    /// One flag per page: handed out.
    used: Vec<bool>,
    /// Bad returns seen (wrong count, pages not handed out), newest last.
    misuse: Vec<String>,
}

/// A [`PageSource`] over a [`HostArena`] that checks how it is used: pages
/// come back with the count they went out with, and none twice.
#[derive(Debug)]
pub struct HostPages {
    arena: HostArena,
    book: Mutex<PageBook>,
}

impl HostPages {
    /// A source of `pages` pages; the arena is aligned to `align_pages` pages
    /// so aligned requests up to that size can be served anywhere.
    pub fn new(pages: usize, align_pages: usize) -> Self {
        let arena = HostArena::new(pages * PAGE_SIZE, align_pages.max(1) * PAGE_SIZE);
        let book = PageBook {
            used: vec![false; pages],
            ..PageBook::default()
        };
        Self {
            arena,
            book: Mutex::new(book),
        }
    }

    /// Pages currently handed out.
    pub fn outstanding_pages(&self) -> usize {
        self.lock().runs.values().sum()
    }

    /// The address ranges currently handed out, in address order.
    pub fn held_spans(&self) -> Vec<Span> {
        let (base, _) = self.arena.span();
        let page = PAGE_SIZE as u64;
        self.lock()
            .runs
            .iter()
            .map(|(&first, &count)| {
                let start = base + first as u64 * page;
                (start, start + count as u64 * page)
            })
            .collect()
    }

    /// Whether the page containing `addr` is handed out now.
    pub fn holds(&self, addr: u64) -> bool {
        let (base, end) = self.arena.span();
        if addr < base || addr >= end {
            return false;
        }
        let index = ((addr - base) / PAGE_SIZE as u64) as usize;
        self.lock().used[index]
    }

    /// The whole arena's range.
    pub fn span(&self) -> Span {
        self.arena.span()
    }

    /// Bad returns the source saw (each also returned an error to the caller).
    pub fn misuse(&self) -> Vec<String> {
        self.lock().misuse.clone()
    }

    /// Checks that nothing is outstanding and nothing was returned wrongly.
    ///
    /// # Errors
    /// A message naming the leaked pages or the bad returns.
    pub fn check_all_returned(&self) -> Result<(), String> {
        let book = self.lock();
        if let Some(first) = book.misuse.first() {
            return Err(format!("page source misused: {first}"));
        }
        if book.runs.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} pages in {} runs never came back to the page source (first at page {})",
                book.runs.values().sum::<usize>(),
                book.runs.len(),
                book.runs.keys().next().copied().unwrap_or(0)
            ))
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PageBook> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }
}

// SAFETY: pages are carved from the arena this source owns; the book hands
// each page to one caller at a time and the arena outlives every borrow of
// the source, so returned pointers address mapped, writable, aligned memory
// nobody else uses until it is given back.
unsafe impl PageSource for HostPages {
    fn allocate_pages(&self, count: usize, align_pages: usize) -> Result<NonNull<u8>, AllocError> {
        if count == 0 {
            return Err(AllocError::ZeroSize);
        }
        if !align_pages.is_power_of_two() {
            return Err(AllocError::BadAlignment);
        }
        let align_bytes = align_pages
            .checked_mul(PAGE_SIZE)
            .ok_or(AllocError::BadAlignment)?;
        let base = self.arena.base().as_ptr() as usize;
        let mut book = self.lock();
        let pages = book.used.len();
        let mut first = (base.next_multiple_of(align_bytes) - base) / PAGE_SIZE;
        while first.checked_add(count).is_some_and(|end| end <= pages) {
            match book.used[first..first + count].iter().rposition(|&u| u) {
                None => {
                    book.used[first..first + count].fill(true);
                    book.runs.insert(first, count);
                    return Ok(self.arena.at(first * PAGE_SIZE));
                }
                Some(busy) => {
                    let next = base + (first + busy + 1) * PAGE_SIZE;
                    first = (next.next_multiple_of(align_bytes) - base) / PAGE_SIZE;
                }
            }
        }
        Err(AllocError::OutOfMemory)
    }

    unsafe fn deallocate_pages(&self, pages: NonNull<u8>, count: usize) -> Result<(), FreeError> {
        let (base, end) = self.arena.span();
        let addr = pages.as_ptr() as u64;
        let mut book = self.lock();
        let result = if addr < base || addr >= end {
            Err(FreeError::NotOwned)
        } else if (addr - base) % PAGE_SIZE as u64 != 0 {
            Err(FreeError::Misaligned)
        } else {
            let first = ((addr - base) / PAGE_SIZE as u64) as usize;
            match book.runs.get(&first) {
                None if book.used[first] => Err(FreeError::Misaligned),
                None => Err(FreeError::DoubleFree),
                Some(&held) if held != count => Err(FreeError::SizeMismatch),
                Some(_) => Ok(first),
            }
        };
        match result {
            Ok(first) => {
                book.runs.remove(&first);
                book.used[first..first + count].fill(false);
                Ok(())
            }
            Err(error) => {
                book.misuse
                    .push(format!("{count} pages at {addr:#x} given back: {error:?}"));
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_aligned_disjoint_and_must_come_back_exactly() {
        let source = HostPages::new(16, 4);
        let one = source.allocate_pages(1, 1).unwrap();
        let four = source.allocate_pages(4, 4).unwrap();
        assert_eq!(four.as_ptr() as usize % (4 * PAGE_SIZE), 0);
        assert_ne!(one, four);
        assert_eq!(source.outstanding_pages(), 5);
        assert!(source.holds(four.as_ptr() as u64 + 100));
        // SAFETY: `four` came from this source; the wrong count is refused.
        let wrong = unsafe { source.deallocate_pages(four, 2) };
        assert_eq!(wrong, Err(FreeError::SizeMismatch));
        // SAFETY: as above, with the right count.
        unsafe { source.deallocate_pages(four, 4) }.unwrap();
        // SAFETY: a second return is refused.
        let twice = unsafe { source.deallocate_pages(four, 4) };
        assert_eq!(twice, Err(FreeError::DoubleFree));
        assert!(source.check_all_returned().is_err());
        assert_eq!(source.held_spans().len(), 1);
        assert!(matches!(
            source.allocate_pages(32, 1),
            Err(AllocError::OutOfMemory)
        ));
    }
}
