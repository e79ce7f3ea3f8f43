//! The mid-size allocator: a two-level segregated fit (TLSF) over chunks of
//! memory, with boundary tags for constant-time coalescing.
//!
//! # Layout
//!
//! A chunk is a run of memory (pages from a page source, or a fixed region)
//! cut into blocks that tile it exactly, followed by a 16-byte end sentinel:
//!
//! ```text
//! | block | block | block | ... | sentinel |
//!   ^ header: prev_phys|PREV_FREE, size|flags; a free block adds next_free, prev_free
//! ```
//!
//! Every block starts with a two-word [`Block`] header and is a multiple of
//! [`GRANULE_BYTES`], so payloads are 16-byte aligned. `prev_phys` points to
//! the previous block, with its low bit (`PREV_FREE`) set, while that block
//! is free, and is null while it is used, except in the first block of a
//! chunk, where it holds the chunk's length (and whether the chunk may be
//! given back). The sentinel is a used block of size zero, so merging never
//! runs off the chunk's end.
//!
//! # Memory traffic
//!
//! The headers an operation touches are usually cold, so the code is shaped
//! around cache misses. The `PREV_FREE` flag lives in the pointer word, not
//! beside the size, so that a neighbour changing state writes the word whole:
//! a split or a merge stores to the far neighbour's header without reading
//! its line first. Code that has just written a header passes the size on
//! rather than reading it back, since a load from a line whose store still
//! waits for that line stalls until it arrives.
//!
//! # Invariants
//!
//! - No two free blocks are neighbours: a block freed next to a free one merges.
//! - A free block is in exactly the list `mapping_insert(size)` names, and the
//!   bitmaps have a bit set exactly for the non-empty lists.
//! - `spare` is null or the one wholly free chunk kept against churn.
//!
//! # Search
//!
//! Sizes map to a first level (the power of two) and a second level (16 slices
//! of it). A search rounds the request up to the next slice boundary so that
//! the head of any non-empty list found by two bit scans fits (good fit, O(1)).
//! Only when that fails does a cold path scan the lists the rounding skipped,
//! so memory is not reported exhausted while a fitting block exists.

use core::ptr::{self, NonNull};

/// Size and alignment granule of blocks, in bytes.
pub const GRANULE_BYTES: usize = 16;
const GRANULE_LOG: u32 = GRANULE_BYTES.trailing_zeros();
/// Bytes of a block header before the payload.
pub const HEADER_BYTES: usize = 16;
/// The smallest block: a header and the two free-list links.
const MIN_BLOCK_BYTES: usize = 32;
/// Bytes a chunk spends on its end sentinel.
pub const SENTINEL_BYTES: usize = HEADER_BYTES;
/// The smallest chunk that holds one block and the sentinel.
pub const MIN_CHUNK_BYTES: usize = MIN_BLOCK_BYTES + SENTINEL_BYTES;

const SL_LOG: u32 = 4;
const SL_COUNT: usize = 1 << SL_LOG;
/// Blocks below `1 << FL_SHIFT` bytes share first level 0, in 16-byte slices.
const FL_SHIFT: u32 = SL_LOG + GRANULE_LOG;
const FL_COUNT: usize = 40;
/// Blocks of a request's own list that [`Tlsf::find_close_fit`] looks at.
const CLOSE_FIT_SCAN: usize = 8;
/// The largest block a chunk may hold (first level `FL_COUNT - 1`).
pub const MAX_BLOCK_BYTES: usize = (1 << (FL_COUNT as u32 + FL_SHIFT - 1)) - GRANULE_BYTES;

const FREE: usize = 1;
const FIRST: usize = 2;
const FLAGS: usize = GRANULE_BYTES - 1;
/// In `prev_phys`: the previous block is free (and the word points to it).
const PREV_FREE: usize = 1;
/// In a first block's `prev_phys` (a chunk's length, a multiple of pages):
/// the chunk goes back to its source once wholly free.
const RELEASABLE: usize = 2;

/// A block header; the free-list links exist only in free blocks.
#[repr(C)]
struct Block {
    prev_phys: *mut Block,
    size: usize,
    next_free: *mut Block,
    prev_free: *mut Block,
}

/// Why the TLSF refused to free a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsfFreeError {
    /// The block is already free.
    DoubleFree,
}

/// A chunk the allocator no longer uses: the caller gives its memory back.
#[derive(Debug)]
pub struct ReleasedChunk {
    /// Start of the chunk (as passed to [`Tlsf::add_chunk`]).
    pub start: NonNull<u8>,
    /// Length of the chunk in bytes.
    pub len: usize,
}

/// The two-level segregated-fit allocator. See the module docs.
pub struct Tlsf {
    fl_bitmap: u64,
    sl_bitmaps: [u32; FL_COUNT],
    heads: [[*mut Block; SL_COUNT]; FL_COUNT],
    spare: *mut Block,
    free_bytes: usize,
    held_bytes: usize,
    chunks: usize,
}

// SAFETY: the raw pointers address memory the Tlsf owns exclusively (chunks
// handed over by `add_chunk`); moving the owner to another thread moves that
// ownership with it.
unsafe impl Send for Tlsf {}

impl Default for Tlsf {
    fn default() -> Self {
        Self::new()
    }
}

/// `(first level, second level)` of the list holding free blocks of `size`.
#[inline]
fn mapping_insert(size: usize) -> (usize, usize) {
    if size < (1 << FL_SHIFT) {
        (0, size >> GRANULE_LOG)
    } else {
        let log = usize::BITS - 1 - size.leading_zeros();
        let fl = (log - FL_SHIFT + 1) as usize;
        let sl = (size >> (log - SL_LOG)) & (SL_COUNT - 1);
        (fl, sl)
    }
}

/// The first list whose every block holds `size` bytes (rounded up a slice).
#[inline]
fn mapping_search(size: usize) -> (usize, usize) {
    if size < (1 << FL_SHIFT) {
        return mapping_insert(size);
    }
    let log = usize::BITS - 1 - size.leading_zeros();
    // Cannot overflow: sizes are capped far below usize::MAX by MAX_BLOCK_BYTES.
    mapping_insert(size + (1 << (log - SL_LOG)) - 1)
}

/// Block size (header included) that serves a `payload`-byte request.
#[inline]
fn block_bytes_for(payload: usize) -> Option<usize> {
    let rounded = payload.checked_add(HEADER_BYTES + GRANULE_BYTES - 1)? & !(GRANULE_BYTES - 1);
    (rounded <= MAX_BLOCK_BYTES).then_some(rounded.max(MIN_BLOCK_BYTES))
}

// Block accessors. Each takes a pointer to a block header inside a chunk this
// allocator owns; the `# Safety` of each is that promise.

/// # Safety
/// `block` is a block header (or sentinel) in an owned chunk.
#[inline]
unsafe fn size_of(block: *mut Block) -> usize {
    // SAFETY: the caller promises a valid header.
    unsafe { (*block).size & !FLAGS }
}

/// # Safety
/// As [`size_of`].
#[inline]
unsafe fn flags_of(block: *mut Block) -> usize {
    // SAFETY: the caller promises a valid header.
    unsafe { (*block).size & FLAGS }
}

/// # Safety
/// As [`size_of`], and `block` is not the sentinel.
#[inline]
unsafe fn next_phys(block: *mut Block) -> *mut Block {
    // SAFETY: blocks tile the chunk and the sentinel ends it, so the block's
    // end is the next header, inside the same allocation.
    unsafe { block.byte_add(size_of(block)) }
}

/// # Safety
/// As [`size_of`].
#[inline]
unsafe fn set_size(block: *mut Block, size: usize, flags: usize) {
    debug_assert_eq!(size & FLAGS, 0);
    // SAFETY: the caller promises a valid header.
    unsafe { (*block).size = size | flags }
}

/// The block before `block`, when that block is free.
///
/// # Safety
/// As [`size_of`]; `block` is not a chunk's first block.
#[inline]
unsafe fn free_prev(block: *mut Block) -> Option<*mut Block> {
    // SAFETY: the caller promises a valid header.
    let word = unsafe { (*block).prev_phys };
    (word.addr() & PREV_FREE != 0).then(|| word.map_addr(|addr| addr & !PREV_FREE))
}

/// Records in `next` that the block before it is used.
///
/// # Safety
/// As [`size_of`]; `next` is not a chunk's first block.
#[inline]
unsafe fn mark_prev_used(next: *mut Block) {
    // SAFETY: the caller promises a valid header.
    unsafe { (*next).prev_phys = ptr::null_mut() }
}

/// Marks free `block`, of `size` bytes, in its successor's tag: one store,
/// so the successor's line need not be read first.
///
/// # Safety
/// As [`next_phys`]; `size` is the block's size.
#[inline]
unsafe fn link_successor(block: *mut Block, size: usize) {
    // SAFETY: the successor is a header in the same chunk (maybe the sentinel).
    unsafe { (*block.byte_add(size)).prev_phys = block.map_addr(|addr| addr | PREV_FREE) }
}

impl Tlsf {
    /// An allocator with no memory.
    pub const fn new() -> Self {
        Self {
            fl_bitmap: 0,
            sl_bitmaps: [0; FL_COUNT],
            heads: [[ptr::null_mut(); SL_COUNT]; FL_COUNT],
            spare: ptr::null_mut(),
            free_bytes: 0,
            held_bytes: 0,
            chunks: 0,
        }
    }

    /// Bytes in free blocks (headers included).
    pub const fn free_bytes(&self) -> usize {
        self.free_bytes
    }

    /// Bytes of all chunks held.
    pub const fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Number of chunks held.
    #[cfg(test)]
    pub const fn chunks(&self) -> usize {
        self.chunks
    }

    /// The largest free block's payload, in bytes (0 when none).
    pub fn largest_free_payload(&self) -> usize {
        if self.fl_bitmap == 0 {
            return 0;
        }
        let fl = 63 - self.fl_bitmap.leading_zeros() as usize;
        let sl = 31 - self.sl_bitmaps[fl].leading_zeros() as usize;
        let mut largest = 0;
        let mut block = self.heads[fl][sl];
        while !block.is_null() {
            // SAFETY: listed blocks are free headers in owned chunks.
            unsafe {
                largest = largest.max(size_of(block));
                block = (*block).next_free;
            }
        }
        largest - HEADER_BYTES
    }

    /// Hands the allocator a chunk of memory; returns the usable bytes.
    ///
    /// `releasable` chunks come back through [`ReleasedChunk`] once wholly free.
    /// The chunk is trimmed to 16-byte alignment and to [`MAX_BLOCK_BYTES`].
    ///
    /// # Safety
    /// `start..start + len` is writable memory that nothing else uses until the
    /// allocator gives it back (never, for a chunk that is not releasable).
    pub unsafe fn add_chunk(&mut self, start: NonNull<u8>, len: usize, releasable: bool) -> usize {
        let skip = start.as_ptr().align_offset(GRANULE_BYTES);
        if releasable {
            debug_assert_eq!(skip, 0, "page runs are granule-aligned");
        }
        let Some(usable) = len.checked_sub(skip) else {
            return 0;
        };
        let usable = (usable & !(GRANULE_BYTES - 1)).min(MAX_BLOCK_BYTES + SENTINEL_BYTES);
        if usable < MIN_CHUNK_BYTES {
            return 0;
        }
        let block_bytes = usable - SENTINEL_BYTES;
        // SAFETY: `skip + usable <= len`, so both headers lie in the chunk the
        // caller hands over; the first is 16-byte aligned by `skip`.
        unsafe {
            let block: *mut Block = start.as_ptr().byte_add(skip).cast();
            // Only a releasable chunk's length is read back; it is a
            // multiple of pages, so the flag bits are clear.
            let tag = if releasable { len | RELEASABLE } else { 0 };
            (*block).prev_phys = ptr::without_provenance_mut(tag);
            set_size(block, block_bytes, FREE | FIRST);
            set_size(next_phys(block), 0, 0);
            link_successor(block, block_bytes);
            self.insert(block, block_bytes);
        }
        self.held_bytes += usable;
        self.free_bytes += block_bytes;
        self.chunks += 1;
        block_bytes - HEADER_BYTES
    }

    /// Allocates `size` bytes aligned to `align` (a power of two).
    ///
    /// Returns `None` when no free block fits; nothing changes then.
    #[inline]
    pub fn allocate(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        debug_assert!(align.is_power_of_two());
        let needed = block_bytes_for(size)?;
        if align <= GRANULE_BYTES {
            let block = self
                .find_close_fit(needed)
                .or_else(|| self.find_good_fit(needed))
                .or_else(|| self.find_any_fit(needed, 1))?;
            // SAFETY: `block` is a listed free block of at least `needed` bytes.
            return Some(unsafe { self.take(block, needed) });
        }
        self.allocate_aligned(needed, align)
    }

    #[cold]
    fn allocate_aligned(&mut self, needed: usize, align: usize) -> Option<NonNull<u8>> {
        // The front gap is 0, or at least a minimum block so it can stay free:
        // at worst `align + GRANULE_BYTES`.
        let search = needed.checked_add(align)?.checked_add(GRANULE_BYTES)?;
        let block = match (search <= MAX_BLOCK_BYTES).then(|| self.find_good_fit(search)) {
            Some(Some(block)) => block,
            _ => self.find_any_fit(needed, align)?,
        };
        // SAFETY: `block` is a listed free block; `aligned_gap` says how far in
        // the aligned payload starts, and the search made sure the rest fits.
        unsafe {
            let gap = Self::aligned_gap(block, align);
            self.remove(block);
            let block = if gap == 0 {
                block
            } else {
                let total = size_of(block);
                let aligned: *mut Block = block.byte_add(gap);
                set_size(aligned, total - gap, FREE);
                (*aligned).prev_phys = block.map_addr(|addr| addr | PREV_FREE);
                set_size(block, gap, flags_of(block));
                self.insert(block, gap);
                aligned
            };
            self.free_bytes -= size_of(block);
            self.split_used(block, needed);
            Some(NonNull::new_unchecked(block.byte_add(HEADER_BYTES).cast()))
        }
    }

    /// Bytes from `block` to the header of an `align`-aligned payload whose
    /// front gap can stand as a free block of its own.
    ///
    /// # Safety
    /// `block` is a header in an owned chunk.
    unsafe fn aligned_gap(block: *mut Block, align: usize) -> usize {
        let payload = block.addr() + HEADER_BYTES;
        let mut gap = payload.next_multiple_of(align) - payload;
        if gap != 0 && gap < MIN_BLOCK_BYTES {
            gap += align;
        }
        gap
    }

    /// The first block holding `needed` bytes among the first few of
    /// `needed`'s own list, whose blocks are at most one list step larger.
    /// Taking these before the next list's keeps larger blocks whole for
    /// larger requests: good fit alone splits them and fragments the heap.
    /// The first fit, not the best of the few: every block looked at is a
    /// likely cache miss, and the head, most recently freed, is the likeliest
    /// to be cached.
    #[inline]
    fn find_close_fit(&self, needed: usize) -> Option<*mut Block> {
        let (fl, sl) = mapping_insert(needed);
        if self.sl_bitmaps.get(fl)? & (1 << sl) == 0 {
            return None;
        }
        let mut block = self.heads[fl][sl];
        for _ in 0..CLOSE_FIT_SCAN {
            if block.is_null() {
                break;
            }
            // SAFETY: listed blocks are free headers in owned chunks.
            if unsafe { size_of(block) } >= needed {
                return Some(block);
            }
            // SAFETY: as above.
            block = unsafe { (*block).next_free };
        }
        None
    }

    /// Head of the first list whose blocks all hold `needed` bytes.
    #[inline]
    fn find_good_fit(&self, needed: usize) -> Option<*mut Block> {
        let (mut fl, sl) = mapping_search(needed);
        let mut sl_map = self.sl_bitmaps.get(fl)? & (!0u32 << sl);
        if sl_map == 0 {
            let fl_map = self.fl_bitmap & (!0u64).checked_shl(fl as u32 + 1).unwrap_or(0);
            if fl_map == 0 {
                return None;
            }
            fl = fl_map.trailing_zeros() as usize;
            sl_map = self.sl_bitmaps[fl];
        }
        Some(self.heads[fl][sl_map.trailing_zeros() as usize])
    }

    /// Scans the lists the good-fit rounding skips for a block that holds
    /// `needed` bytes at `align`: slow, but only taken before reporting failure.
    #[cold]
    fn find_any_fit(&self, needed: usize, align: usize) -> Option<*mut Block> {
        let (mut fl, mut sl) = mapping_insert(needed);
        while fl < FL_COUNT {
            let mut block = self.heads[fl][sl];
            while !block.is_null() {
                // SAFETY: listed blocks are free headers in owned chunks.
                unsafe {
                    let gap = if align > GRANULE_BYTES {
                        Self::aligned_gap(block, align)
                    } else {
                        0
                    };
                    if size_of(block) >= needed.saturating_add(gap) {
                        return Some(block);
                    }
                    block = (*block).next_free;
                }
            }
            sl += 1;
            if sl == SL_COUNT {
                sl = 0;
                fl += 1;
            }
        }
        None
    }

    /// Takes listed free `block` for a `needed`-byte allocation.
    ///
    /// # Safety
    /// `block` is a listed free block of at least `needed` bytes.
    #[inline]
    unsafe fn take(&mut self, block: *mut Block, needed: usize) -> NonNull<u8> {
        // SAFETY: per the caller's promise.
        unsafe {
            self.remove(block);
            self.free_bytes -= size_of(block);
            self.split_used(block, needed);
            NonNull::new_unchecked(block.byte_add(HEADER_BYTES).cast())
        }
    }

    /// Marks unlisted `block` used, giving back its tail beyond `needed` bytes.
    ///
    /// # Safety
    /// `block` is an unlisted header in an owned chunk, not counted in
    /// `free_bytes`, of at least `needed` bytes; its successor is used.
    #[inline]
    unsafe fn split_used(&mut self, block: *mut Block, needed: usize) {
        // SAFETY: per the caller's promise; the tail lies inside `block`.
        unsafe {
            let total = size_of(block);
            let flags = flags_of(block) & !FREE;
            if total - needed >= MIN_BLOCK_BYTES {
                set_size(block, needed, flags);
                let rest = block.byte_add(needed);
                set_size(rest, total - needed, FREE);
                mark_prev_used(rest);
                link_successor(rest, total - needed);
                self.free_bytes += total - needed;
                self.insert(rest, total - needed);
            } else {
                set_size(block, total, flags);
                mark_prev_used(block.byte_add(total));
            }
        }
    }

    /// Frees the block whose payload is `payload`.
    ///
    /// Returns a chunk to give back when the block's chunk became wholly free,
    /// is releasable and another wholly free chunk is already kept.
    ///
    /// # Safety
    /// `payload` was returned by [`allocate`](Self::allocate) on this
    /// allocator (freed since or not: a double free is reported when the header
    /// still reads free) and is no longer used.
    pub unsafe fn deallocate(
        &mut self,
        payload: NonNull<u8>,
    ) -> Result<Option<ReleasedChunk>, TlsfFreeError> {
        // SAFETY: the caller promises `payload` follows one of our headers;
        // neighbours found through the tags are headers of the same chunk.
        unsafe {
            let mut block: *mut Block = payload.as_ptr().byte_sub(HEADER_BYTES).cast();
            let flags = flags_of(block);
            if flags & FREE != 0 {
                return Err(TlsfFreeError::DoubleFree);
            }
            let mut first = flags & FIRST;
            let own_size = size_of(block);
            let mut size = own_size;
            self.free_bytes += size;
            let next = block.byte_add(size);
            if flags_of(next) & FREE != 0 {
                size += size_of(next);
                self.remove(next);
            }
            if let Some(prev) = free_prev(block) {
                // The block's own header is left inside the merged block;
                // marked free, it still reports a second free of the block
                // until the memory is handed out again. (Its line is cached:
                // the flags were just read from it.)
                set_size(block, own_size, FREE);
                size += size_of(prev);
                first = flags_of(prev) & FIRST;
                self.remove(prev);
                block = prev;
            }
            // From here on only stores reach the headers: see the module docs.
            set_size(block, size, first | FREE);
            link_successor(block, size);
            if first != 0 && Self::spans_releasable_chunk(block, size) {
                return Ok(self.chunk_became_free(block, size));
            }
            self.insert(block, size);
            Ok(None)
        }
    }

    /// Whether free first block `block` of `size` bytes fills a releasable
    /// chunk. Reads only the block's own header: the successor (the sentinel
    /// then) may be a line away.
    ///
    /// # Safety
    /// `block` is the first block of an owned chunk.
    #[inline]
    unsafe fn spans_releasable_chunk(block: *mut Block, size: usize) -> bool {
        // SAFETY: a first block's `prev_phys` holds its chunk's length tag.
        let tag = unsafe { (*block).prev_phys }.addr();
        tag & RELEASABLE != 0 && size + SENTINEL_BYTES == tag & !RELEASABLE
    }

    /// Keeps one wholly free releasable chunk listed; hands back any other.
    ///
    /// # Safety
    /// `block` is the unlisted, free, only block of a releasable chunk, of
    /// `size` bytes.
    #[cold]
    unsafe fn chunk_became_free(
        &mut self,
        block: *mut Block,
        size: usize,
    ) -> Option<ReleasedChunk> {
        if self.spare.is_null() {
            self.spare = block;
            // SAFETY: per the caller's promise.
            unsafe { self.insert(block, size) };
            return None;
        }
        // SAFETY: as above; the chunk's length is its block and sentinel.
        Some(unsafe { self.forget_chunk(block, size + SENTINEL_BYTES) })
    }

    /// Drops the accounting of wholly free, unlisted chunk `block`.
    ///
    /// # Safety
    /// As [`chunk_became_free`](Self::chunk_became_free).
    unsafe fn forget_chunk(&mut self, block: *mut Block, len: usize) -> ReleasedChunk {
        // SAFETY: per the caller's promise.
        let size = unsafe { size_of(block) };
        self.free_bytes -= size;
        self.held_bytes -= size + SENTINEL_BYTES;
        self.chunks -= 1;
        ReleasedChunk {
            // SAFETY: releasable chunks start at their (non-null) first block.
            start: unsafe { NonNull::new_unchecked(block.cast()) },
            len,
        }
    }

    /// Gives back the kept wholly free chunk, if any.
    pub fn release_spare(&mut self) -> Option<ReleasedChunk> {
        let block = core::mem::replace(&mut self.spare, ptr::null_mut());
        if block.is_null() {
            return None;
        }
        // SAFETY: `spare` is a listed, wholly free, releasable chunk's block.
        unsafe {
            self.remove(block);
            let tag = (*block).prev_phys.addr();
            Some(self.forget_chunk(block, tag & !RELEASABLE))
        }
    }

    /// Payload bytes of the allocated block at `payload`.
    #[cfg(test)]
    ///
    /// # Safety
    /// `payload` is a live allocation of this allocator.
    pub unsafe fn usable_size(payload: NonNull<u8>) -> usize {
        // SAFETY: per the caller's promise the header precedes the payload.
        unsafe { size_of(payload.as_ptr().byte_sub(HEADER_BYTES).cast()) - HEADER_BYTES }
    }

    /// Grows or shrinks the allocation at `payload` to `new_size` bytes without
    /// moving it; returns `false` (and changes nothing) when it cannot.
    ///
    /// # Safety
    /// `payload` is a live allocation of this allocator.
    pub unsafe fn resize_in_place(&mut self, payload: NonNull<u8>, new_size: usize) -> bool {
        let Some(needed) = block_bytes_for(new_size) else {
            return false;
        };
        // SAFETY: per the caller's promise; the successor is a header of the
        // same chunk and is absorbed only while free.
        unsafe {
            let block: *mut Block = payload.as_ptr().byte_sub(HEADER_BYTES).cast();
            let mut total = size_of(block);
            if needed > total {
                let next = next_phys(block);
                if flags_of(next) & FREE == 0 || total + size_of(next) < needed {
                    return false;
                }
                self.remove(next);
                self.free_bytes -= size_of(next);
                total += size_of(next);
                set_size(block, total, flags_of(block));
                mark_prev_used(block.byte_add(total));
            }
            if total - needed >= MIN_BLOCK_BYTES {
                self.shrink_used(block, needed);
            }
            true
        }
    }

    /// Cuts used `block` to `needed` bytes, freeing the tail.
    ///
    /// # Safety
    /// `block` is a used header in an owned chunk, at least `needed +
    /// MIN_BLOCK_BYTES` long.
    unsafe fn shrink_used(&mut self, block: *mut Block, needed: usize) {
        // SAFETY: per the caller's promise; the successor is a header of the
        // same chunk, merged into the tail when free.
        unsafe {
            let total = size_of(block);
            let next = next_phys(block);
            let mut rest_size = total - needed;
            if flags_of(next) & FREE != 0 {
                self.remove(next);
                self.free_bytes -= size_of(next);
                rest_size += size_of(next);
            }
            set_size(block, needed, flags_of(block));
            let rest = block.byte_add(needed);
            set_size(rest, rest_size, FREE);
            mark_prev_used(rest);
            link_successor(rest, rest_size);
            self.free_bytes += rest_size;
            self.insert(rest, rest_size);
        }
    }

    /// Pushes free `block`, of `size` bytes, on its list. The size comes
    /// from the caller, who has just written it (see the module docs).
    ///
    /// # Safety
    /// `block` is an unlisted free header of `size` bytes in an owned chunk.
    #[inline]
    unsafe fn insert(&mut self, block: *mut Block, size: usize) {
        let (fl, sl) = mapping_insert(size);
        let head = self.heads[fl][sl];
        // SAFETY: per the caller's promise; the old head is a listed block.
        unsafe {
            debug_assert_eq!(size_of(block), size);
            (*block).next_free = head;
            (*block).prev_free = ptr::null_mut();
            if !head.is_null() {
                (*head).prev_free = block;
            }
        }
        self.heads[fl][sl] = block;
        self.fl_bitmap |= 1 << fl;
        self.sl_bitmaps[fl] |= 1 << sl;
    }

    /// Unlinks listed free `block`.
    ///
    /// # Safety
    /// `block` is a listed free header in an owned chunk.
    #[inline]
    unsafe fn remove(&mut self, block: *mut Block) {
        if block == self.spare {
            self.spare = ptr::null_mut();
        }
        // SAFETY: per the caller's promise; its list neighbours are listed too.
        unsafe {
            let (fl, sl) = mapping_insert(size_of(block));
            let (next, prev) = ((*block).next_free, (*block).prev_free);
            if !next.is_null() {
                (*next).prev_free = prev;
            }
            if prev.is_null() {
                self.heads[fl][sl] = next;
                if next.is_null() {
                    self.sl_bitmaps[fl] &= !(1 << sl);
                    if self.sl_bitmaps[fl] == 0 {
                        self.fl_bitmap &= !(1 << fl);
                    }
                }
            } else {
                (*prev).next_free = next;
            }
        }
    }

    /// Checks the list and bitmap invariants; returns the free bytes listed.
    #[cfg(test)]
    pub fn check(&self) -> usize {
        let mut listed = 0;
        for fl in 0..FL_COUNT {
            assert_eq!(self.fl_bitmap >> fl & 1 == 1, self.sl_bitmaps[fl] != 0);
            for sl in 0..SL_COUNT {
                let mut block = self.heads[fl][sl];
                assert_eq!(self.sl_bitmaps[fl] >> sl & 1 == 1, !block.is_null());
                while !block.is_null() {
                    // SAFETY: listed blocks are free headers in owned chunks.
                    unsafe {
                        assert_eq!(mapping_insert(size_of(block)), (fl, sl));
                        assert_ne!(flags_of(block) & FREE, 0);
                        let next = next_phys(block);
                        assert_eq!(flags_of(next) & FREE, 0, "free neighbours");
                        assert_eq!(free_prev(next), Some(block));
                        listed += size_of(block);
                        block = (*block).next_free;
                    }
                }
            }
        }
        assert_eq!(listed, self.free_bytes);
        listed
    }
}

#[cfg(test)]
mod tests;
