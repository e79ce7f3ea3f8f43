//! [`BumpArena`]: a lock-free bump allocator over one byte region, for the
//! kernel heap before the real one exists.
//!
//! The whole state is a region (`base`, `capacity`) fixed once, and a cursor
//! `next`: the offset of the first byte never handed out. Allocation rounds the
//! cursor up to the requested alignment and moves it past the new block with a
//! compare-and-swap, so CPUs allocating at once each get a disjoint block and
//! nobody waits on a lock. Freeing does nothing, except for the block that ends
//! at the cursor: a compare-and-swap moves the cursor back to its start, so a
//! short-lived last allocation (a growing vector, a scratch buffer) costs nothing.
//!
//! The base is kept as a pointer, not an address, so every block is derived
//! from the region's own provenance: no integer-to-pointer casts.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::fmt;
use core::mem::MaybeUninit;
use core::ptr::{self, NonNull};

use kalloc_api::AllocError;
use kalloc_api::sync::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

/// Byte alignment of [`ArenaMemory`]: one cache line, so small requests never
/// pay for padding at the start of the region.
pub const ARENA_MEMORY_ALIGN_BYTES: usize = 64;

/// Statically allocated backing bytes for a [`BumpArena`], `BYTES` long.
///
/// It holds its bytes in an `UnsafeCell` of uninitialised memory, so a `static`
/// of it lands in `.bss`, and the arena may write through a shared reference
/// without `static mut`. See [`BumpArena::from_memory`].
#[repr(C, align(64))]
pub struct ArenaMemory<const BYTES: usize> {
    bytes: UnsafeCell<MaybeUninit<[u8; BYTES]>>,
}

// SAFETY: the bytes are only reached through the one arena built over them
// (`BumpArena::from_memory`'s contract), which hands each byte to one owner at
// a time; sharing `&ArenaMemory` itself gives no access to them.
unsafe impl<const BYTES: usize> Sync for ArenaMemory<BYTES> {}

const _: () = assert!(core::mem::align_of::<ArenaMemory<1>>() == ARENA_MEMORY_ALIGN_BYTES);

impl<const BYTES: usize> ArenaMemory<BYTES> {
    /// Uninitialised backing memory.
    #[inline]
    pub const fn new() -> Self {
        Self {
            bytes: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// The first byte, for [`BumpArena::init`] (whose contract then applies).
    #[inline]
    pub const fn as_mut_ptr(&self) -> *mut u8 {
        self.bytes.get().cast::<u8>()
    }
}

impl<const BYTES: usize> Default for ArenaMemory<BYTES> {
    fn default() -> Self {
        Self::new()
    }
}

/// Why [`BumpArena::init`] refused a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InitError {
    /// The arena already has a region; it takes one only once.
    AlreadyInitialized,
    /// The region starts at the null pointer.
    NullStart,
    /// The region runs past the end of the address space or is longer than
    /// `isize::MAX` bytes.
    Overflow,
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AlreadyInitialized => "arena already has a region",
            Self::NullStart => "arena region starts at null",
            Self::Overflow => "arena region overflows the address space",
        })
    }
}

impl core::error::Error for InitError {}

/// A bump allocator over one byte region, usable through `&self` from several
/// CPUs at once, and as the `#[global_allocator]` from the first instruction.
///
/// Two ways to give it memory:
///
/// - at compile time, over a `static` [`ArenaMemory`] (which lands in `.bss`):
///   [`from_memory`](Self::from_memory);
/// - at run time, once, over any region (for example one
///   [`BootMemory`](crate::BootMemory) allocated and the kernel mapped):
///   [`new`](Self::new) then [`init`](Self::init).
///
/// Until it has memory every allocation fails (`GlobalAlloc` returns null).
///
/// ```
/// use core::alloc::{GlobalAlloc, Layout};
/// use kalloc_bump::{ArenaMemory, BumpArena};
///
/// static EARLY_HEAP_MEMORY: ArenaMemory<4096> = ArenaMemory::new();
/// // SAFETY: `EARLY_HEAP_MEMORY` is private to this arena.
/// static EARLY_HEAP: BumpArena = unsafe { BumpArena::from_memory(&EARLY_HEAP_MEMORY) };
/// // In a kernel: #[global_allocator] static EARLY_HEAP: BumpArena = ...
///
/// let layout = Layout::from_size_align(100, 16).unwrap();
/// // SAFETY: the layout has a non-zero size.
/// let block = unsafe { EARLY_HEAP.alloc(layout) };
/// assert!(!block.is_null() && block.align_offset(16) == 0);
/// assert_eq!(EARLY_HEAP.used(), 100);
/// // Freeing the most recent block gives its bytes back.
/// // SAFETY: `block` came from this arena with `layout`.
/// unsafe { EARLY_HEAP.dealloc(block, layout) };
/// assert_eq!(EARLY_HEAP.remaining(), 4096);
/// ```
///
/// As the global allocator (the whole program's heap here, so give it room):
///
/// ```
/// use kalloc_bump::{ArenaMemory, BumpArena};
///
/// static HEAP_MEMORY: ArenaMemory<{ 1 << 20 }> = ArenaMemory::new();
/// #[global_allocator]
/// // SAFETY: `HEAP_MEMORY` is private to this arena.
/// static HEAP: BumpArena = unsafe { BumpArena::from_memory(&HEAP_MEMORY) };
///
/// fn main() {
///     let squares: Vec<u64> = (0..100).map(|i| i * i).collect();
///     assert_eq!(squares[9], 81);
///     assert!(HEAP.used() >= 800);
/// }
/// ```
pub struct BumpArena {
    /// Start of the region; null until the arena has one. Written once, after
    /// `capacity`, with `Release`, so whoever sees it non-null sees `capacity`.
    base: AtomicPtr<u8>,
    /// Region length in bytes.
    capacity: AtomicUsize,
    /// Offset from `base` of the first byte not handed out.
    next: AtomicUsize,
    /// Set by the one `init` (or `from_memory`) that gives the region.
    claimed: AtomicBool,
}

impl BumpArena {
    /// An arena with no memory yet; give it some with [`init`](Self::init).
    ///
    /// ```
    /// use kalloc_bump::BumpArena;
    ///
    /// static EARLY_HEAP: BumpArena = BumpArena::new();
    /// assert_eq!(EARLY_HEAP.capacity(), 0);
    /// ```
    #[cfg(not(loom))]
    #[must_use]
    pub const fn new() -> Self {
        Self {
            base: AtomicPtr::new(ptr::null_mut()),
            capacity: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            claimed: AtomicBool::new(false),
        }
    }

    /// An arena with no memory yet (loom build: not `const`).
    #[cfg(loom)]
    #[must_use]
    pub fn new() -> Self {
        Self {
            base: AtomicPtr::new(ptr::null_mut()),
            capacity: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            claimed: AtomicBool::new(false),
        }
    }

    /// An arena over `memory`, usable in a `static` initialiser.
    ///
    /// # Safety
    /// No other arena is ever built over `memory`, and nothing else reads or
    /// writes its bytes: the arena owns them. (A `static` `ArenaMemory` that is
    /// private to the `static` arena's initialiser keeps this by construction;
    /// a `const` arena would not, since each use of a `const` is a new arena.)
    #[cfg(not(loom))]
    #[must_use]
    pub const unsafe fn from_memory<const BYTES: usize>(
        memory: &'static ArenaMemory<BYTES>,
    ) -> Self {
        Self {
            base: AtomicPtr::new(memory.as_mut_ptr()),
            capacity: AtomicUsize::new(BYTES),
            next: AtomicUsize::new(0),
            claimed: AtomicBool::new(true),
        }
    }

    /// An arena over `memory` (loom build: not `const`).
    ///
    /// # Safety
    /// As the `const` version: the arena owns `memory`'s bytes.
    #[cfg(loom)]
    #[must_use]
    pub unsafe fn from_memory<const BYTES: usize>(memory: &'static ArenaMemory<BYTES>) -> Self {
        Self {
            base: AtomicPtr::new(memory.as_mut_ptr()),
            capacity: AtomicUsize::new(BYTES),
            next: AtomicUsize::new(0),
            claimed: AtomicBool::new(true),
        }
    }

    /// Gives the arena the `len` bytes at `start`. Only the first call (or a
    /// [`from_memory`](Self::from_memory) construction) gives it memory.
    ///
    /// ```
    /// use kalloc_bump::{BumpArena, InitError};
    ///
    /// static EARLY_HEAP: BumpArena = BumpArena::new();
    /// let region: &'static mut [u8] = Box::leak(vec![0u8; 1024].into_boxed_slice());
    /// let (start, len) = (region.as_mut_ptr(), region.len());
    /// // SAFETY: the leaked region is valid forever and only the arena uses it.
    /// unsafe { EARLY_HEAP.init(start, len) }?;
    /// assert_eq!(EARLY_HEAP.remaining(), 1024);
    /// // SAFETY: refused before the region is touched.
    /// assert_eq!(unsafe { EARLY_HEAP.init(start, len) }, Err(InitError::AlreadyInitialized));
    /// # Ok::<(), InitError>(())
    /// ```
    ///
    /// # Errors
    /// [`InitError::NullStart`], [`InitError::Overflow`] (the region wraps
    /// the address space or is longer than `isize::MAX`), and
    /// [`InitError::AlreadyInitialized`]; the arena is unchanged.
    ///
    /// # Safety
    /// `start..start + len` is valid for reads and writes for as long as the
    /// arena (or any block it handed out) is used, and nothing else uses those
    /// bytes meanwhile.
    pub unsafe fn init(&self, start: *mut u8, len: usize) -> Result<(), InitError> {
        if start.is_null() {
            return Err(InitError::NullStart);
        }
        if len > isize::MAX as usize || start.addr().checked_add(len).is_none() {
            return Err(InitError::Overflow);
        }
        if self
            .claimed
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(InitError::AlreadyInitialized);
        }
        self.capacity.store(len, Ordering::Relaxed);
        self.next.store(0, Ordering::Relaxed);
        self.base.store(start, Ordering::Release);
        Ok(())
    }

    /// Allocates a block for `layout`: the fast path behind `GlobalAlloc` and
    /// `Allocator`. A zero-size layout gets a dangling, aligned pointer and
    /// uses no memory.
    ///
    /// # Errors
    /// [`AllocError::Uninitialized`] before the arena has memory,
    /// [`AllocError::OutOfMemory`] when the rest of the region cannot hold the
    /// aligned block (including when aligning would overflow the address space).
    #[inline]
    pub fn try_allocate(&self, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        if layout.size() == 0 {
            return Ok(dangling(layout));
        }
        let base = self.base.load(Ordering::Acquire);
        if base.is_null() {
            return Err(AllocError::Uninitialized);
        }
        let capacity = self.capacity.load(Ordering::Relaxed);
        let mut next = self.next.load(Ordering::Relaxed);
        loop {
            let (start, end) =
                fit(base.addr(), next, capacity, layout).ok_or(AllocError::OutOfMemory)?;
            // Acquire pairs with the Release of a `deallocate` that moved the
            // cursor back, so its owner's last writes come before ours.
            match self
                .next
                .compare_exchange_weak(next, end, Ordering::AcqRel, Ordering::Relaxed)
            {
                // `start <= capacity`, so the block lies in the region and
                // keeps its provenance; the region does not wrap (checked at
                // `init`), so the pointer is not null.
                Ok(_) => {
                    return NonNull::new(base.wrapping_add(start)).ok_or(AllocError::OutOfMemory);
                }
                Err(current) => next = current,
            }
        }
    }

    /// Frees the block at `block`: gives its bytes back if it is the most
    /// recent allocation, otherwise does nothing. Zero-size blocks, foreign
    /// pointers and blocks that are not last are ignored.
    #[inline]
    pub fn deallocate(&self, block: NonNull<u8>, layout: Layout) {
        if layout.size() == 0 {
            return;
        }
        if let Some((start, end)) = self.offsets(block, layout.size()) {
            // Fails, harmlessly, unless `block` is the last allocation.
            let _ = self
                .next
                .compare_exchange(end, start, Ordering::Release, Ordering::Relaxed);
        }
    }

    /// Resizes `block` in place to `new_size` bytes when it is the most recent
    /// allocation and the region has room; returns whether it did.
    pub fn resize_in_place(&self, block: NonNull<u8>, old_size: usize, new_size: usize) -> bool {
        if old_size == 0 || new_size == 0 {
            return false;
        }
        let capacity = self.capacity.load(Ordering::Relaxed);
        let Some((start, old_end)) = self.offsets(block, old_size) else {
            return false;
        };
        match start.checked_add(new_size) {
            Some(new_end) if new_end <= capacity => self
                .next
                .compare_exchange(old_end, new_end, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok(),
            _ => false,
        }
    }

    /// Forgets every allocation: the whole region is free again. `&mut self`
    /// proves no borrowed block (through the `Allocator` API) is alive.
    pub fn reset(&mut self) {
        self.next.store(0, Ordering::Relaxed);
    }

    /// Bytes handed out (including alignment padding).
    #[inline]
    pub fn used(&self) -> usize {
        self.next.load(Ordering::Relaxed)
    }

    /// Bytes never handed out (alignment may make less of it usable).
    #[inline]
    pub fn remaining(&self) -> usize {
        self.capacity().saturating_sub(self.used())
    }

    /// Region length in bytes; zero before the arena has memory.
    #[inline]
    pub fn capacity(&self) -> usize {
        if self.base.load(Ordering::Acquire).is_null() {
            return 0;
        }
        self.capacity.load(Ordering::Relaxed)
    }

    /// Whether the arena has its memory.
    #[inline]
    pub fn is_initialized(&self) -> bool {
        !self.base.load(Ordering::Acquire).is_null()
    }

    /// `block`'s offsets `start..start + size` in the region, if it can be one
    /// of its blocks.
    fn offsets(&self, block: NonNull<u8>, size: usize) -> Option<(usize, usize)> {
        let base = self.base.load(Ordering::Acquire);
        if base.is_null() {
            return None;
        }
        let start = block.as_ptr().addr().checked_sub(base.addr())?;
        let end = start.checked_add(size)?;
        (end <= self.capacity.load(Ordering::Relaxed)).then_some((start, end))
    }

    /// A new block for `new_layout` holding the first `copy` bytes of `block`;
    /// `block` is freed.
    ///
    /// # Safety
    /// `block` is a live block of this arena of at least `copy` bytes, allocated
    /// with `old_layout`.
    #[cold]
    unsafe fn move_block(
        &self,
        block: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
        copy: usize,
    ) -> Result<NonNull<u8>, AllocError> {
        let moved = self.try_allocate(new_layout)?;
        // SAFETY: `block` holds `copy` readable bytes (caller); `moved` is a
        // fresh block of at least `copy` bytes, disjoint from every live block.
        unsafe { ptr::copy_nonoverlapping(block.as_ptr(), moved.as_ptr(), copy) };
        self.deallocate(block, old_layout);
        Ok(moved)
    }
}

impl Default for BumpArena {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for BumpArena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BumpArena")
            .field("base", &self.base.load(Ordering::Relaxed))
            .field("used", &self.used())
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// The offsets `start..end` of a block for `layout` at the first suitably
/// aligned address at or after `base + next`, if it fits in `capacity` bytes.
#[inline]
fn fit(base: usize, next: usize, capacity: usize, layout: Layout) -> Option<(usize, usize)> {
    let mask = layout.align() - 1;
    let aligned = base.checked_add(next)?.checked_add(mask)? & !mask;
    let start = aligned - base;
    let end = start.checked_add(layout.size())?;
    (end <= capacity).then_some((start, end))
}

/// A non-null pointer aligned for `layout`, for zero-size blocks.
#[inline]
fn dangling(layout: Layout) -> NonNull<u8> {
    // Layout alignments are never zero, so the pointer is not null.
    NonNull::new(ptr::without_provenance_mut(layout.align())).unwrap_or(NonNull::dangling())
}

// SAFETY: blocks come from `try_allocate`, which hands each byte of the region
// to one caller until it is freed or the arena is reset (`&mut self`, so no
// `GlobalAlloc` borrow is alive); failures return null and nothing panics.
unsafe impl GlobalAlloc for BumpArena {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.try_allocate(layout)
            .map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(block) = NonNull::new(ptr) {
            self.deallocate(block, layout);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(block) = NonNull::new(ptr) else {
            return ptr::null_mut();
        };
        if new_size <= layout.size() {
            // Gives the tail back if the block is last; otherwise it keeps it.
            self.resize_in_place(block, layout.size(), new_size);
            return ptr;
        }
        if self.resize_in_place(block, layout.size(), new_size) {
            return ptr;
        }
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return ptr::null_mut();
        };
        // SAFETY: `ptr` is a live block of `layout.size()` bytes (caller's promise).
        unsafe { self.move_block(block, layout, new_layout, layout.size()) }
            .map_or(ptr::null_mut(), NonNull::as_ptr)
    }
}

// SAFETY: as for `GlobalAlloc`; blocks stay valid when the arena moves (they
// live in the region, not in the arena), and `reset` needs `&mut self`, which
// no collection holding `&BumpArena` allows.
unsafe impl allocator_api2::alloc::Allocator for BumpArena {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, allocator_api2::alloc::AllocError> {
        self.try_allocate(layout)
            .map(|block| NonNull::slice_from_raw_parts(block, layout.size()))
            .map_err(|_| allocator_api2::alloc::AllocError)
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        BumpArena::deallocate(self, ptr, layout);
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> Result<NonNull<[u8]>, allocator_api2::alloc::AllocError> {
        let aligned = ptr.as_ptr().addr() & (new_layout.align() - 1) == 0;
        if aligned && self.resize_in_place(ptr, old_layout.size(), new_layout.size()) {
            return Ok(NonNull::slice_from_raw_parts(ptr, new_layout.size()));
        }
        // SAFETY: `ptr` is a live block of `old_layout` (caller's promise).
        unsafe { self.move_block(ptr, old_layout, new_layout, old_layout.size()) }
            .map(|block| NonNull::slice_from_raw_parts(block, new_layout.size()))
            .map_err(|_| allocator_api2::alloc::AllocError)
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> Result<NonNull<[u8]>, allocator_api2::alloc::AllocError> {
        let aligned = ptr.as_ptr().addr() & (new_layout.align() - 1) == 0;
        if aligned {
            // Gives the tail back if `ptr` is last; otherwise the block simply
            // keeps its extra bytes.
            self.resize_in_place(ptr, old_layout.size(), new_layout.size());
            return Ok(NonNull::slice_from_raw_parts(ptr, new_layout.size()));
        }
        // SAFETY: `ptr` is a live block of `old_layout`, and `new_layout.size()`
        // is at most `old_layout.size()` (caller's promise).
        unsafe { self.move_block(ptr, old_layout, new_layout, new_layout.size()) }
            .map(|block| NonNull::slice_from_raw_parts(block, new_layout.size()))
            .map_err(|_| allocator_api2::alloc::AllocError)
    }
}

// loom's atomics only work inside `loom::model`; tests/loom.rs covers that build.
#[cfg(all(test, not(loom)))]
mod tests;
