//! The adapter trait that lets the driver run any allocator against the model.

use kalloc_api::{AllocError, FreeError};

use crate::model::{Block, Model, Span};

/// What an operation the model can judge must return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect<E: 'static> {
    /// The operation is not defined for this allocator (undefined behaviour
    /// through its API, or not offered): the driver skips it.
    Skip,
    /// It must fail with one of these errors and change nothing.
    Fail(&'static [E]),
    /// It must succeed (zero-size requests on allocators that allow them).
    Succeed,
}

/// What an allocator promises for each kind of operation.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// Granularity of addresses and sizes in bytes (4096 for frames, 1 for bytes).
    pub unit: u64,
    /// Whether `free` is offered at all (a boot allocator never frees).
    pub frees: bool,
    /// Whether `realloc` is offered.
    pub reallocs: bool,
    /// Whether `reserve` is offered.
    pub reserves: bool,
    /// Whether a reservation may cover live or reserved memory (a boot
    /// allocator merges them); if not, the driver trims each reservation to
    /// the free gap at its start.
    pub reserve_overlaps: bool,
    /// Whether the driver may read and write blocks (`Block::ptr` is set).
    pub writes_contents: bool,
    /// A request for zero bytes.
    pub zero_size: Expect<AllocError>,
    /// A request whose alignment is zero or not a power of two.
    pub bad_align: Expect<AllocError>,
    /// A request for more memory than exists, or that overflows when rounded.
    pub huge: Expect<AllocError>,
    /// Freeing a block again after it was freed (it overlaps nothing live).
    pub double_free: Expect<FreeError>,
    /// Freeing a block again straight after freeing it, nothing in between:
    /// allocators that check only their most recent free (a slab's free-list
    /// head, a magazine's top) promise to catch this one. The driver tries it
    /// after every free.
    pub immediate_double_free: Expect<FreeError>,
    /// Freeing an address outside every owned range.
    pub foreign_free: Expect<FreeError>,
    /// Freeing an address past the start of a live block.
    pub misaligned_free: Expect<FreeError>,
}

impl Rules {
    /// The rules of a checked frame allocator: every hostile operation fails.
    pub const FRAME_ALLOCATOR: Self = Self {
        unit: 4096,
        frees: true,
        reallocs: false,
        reserves: false,
        reserve_overlaps: false,
        writes_contents: false,
        zero_size: Expect::Fail(&[AllocError::ZeroSize]),
        bad_align: Expect::Fail(&[AllocError::BadAlignment]),
        huge: Expect::Fail(&[
            AllocError::OutOfMemory,
            AllocError::Overflow,
            AllocError::BadAlignment,
        ]),
        double_free: Expect::Fail(&[
            FreeError::DoubleFree,
            FreeError::Misaligned,
            FreeError::SizeMismatch,
        ]),
        immediate_double_free: Expect::Fail(&[
            FreeError::DoubleFree,
            FreeError::Misaligned,
            FreeError::SizeMismatch,
        ]),
        foreign_free: Expect::Fail(&[FreeError::NotOwned, FreeError::OutOfRange]),
        misaligned_free: Expect::Skip,
    };

    /// The rules of a `GlobalAlloc`-style heap: frees of anything but a live
    /// block are undefined behaviour, so only allocation failures are probed.
    pub const UNCHECKED_HEAP: Self = Self {
        unit: 1,
        frees: true,
        reallocs: true,
        reserves: false,
        reserve_overlaps: false,
        writes_contents: true,
        zero_size: Expect::Skip,
        bad_align: Expect::Skip,
        huge: Expect::Fail(&[AllocError::OutOfMemory, AllocError::Overflow]),
        double_free: Expect::Skip,
        immediate_double_free: Expect::Skip,
        foreign_free: Expect::Skip,
        misaligned_free: Expect::Skip,
    };
}

/// An allocator the driver can run against the [`Model`].
///
/// Sizes and alignments are in bytes; frame allocators convert to frames.
/// Each method must call the allocator's real API once and report what it
/// returned, translating only representation, never judging the answer.
pub trait ModelAllocator {
    /// What the allocator promises.
    fn rules(&self) -> Rules;

    /// The memory the allocator owns right now: a new block must lie inside
    /// one of these spans. For allocators growing from a page source, the
    /// pages it currently holds.
    fn owned(&self) -> Vec<Span>;

    /// Allocates `size` bytes aligned to `align`.
    ///
    /// # Errors
    /// The allocator's error (a null pointer reads as [`AllocError::OutOfMemory`]).
    fn allocate(&mut self, size: u64, align: u64) -> Result<Block, AllocError>;

    /// Frees `block`, which the driver obtained from `allocate` with `size`
    /// and `align`, or built for a hostile probe under the rules.
    ///
    /// # Errors
    /// The allocator's error; `GlobalAlloc` frees always report `Ok`.
    fn free(&mut self, block: &Block, size: u64, align: u64) -> Result<(), FreeError>;

    /// Resizes `block` (allocated with `size`, `align`) to `new_size`.
    ///
    /// # Errors
    /// The allocator's error; on error `block` must still be live and intact.
    fn realloc(
        &mut self,
        block: &Block,
        size: u64,
        align: u64,
        new_size: u64,
    ) -> Result<Block, AllocError> {
        let _ = (block, size, align, new_size);
        Err(AllocError::OutOfMemory)
    }

    /// Reserves `[start, start + len)` (boot allocators).
    ///
    /// # Errors
    /// The allocator's error (a full reservation table).
    fn reserve(&mut self, start: u64, len: u64) -> Result<(), AllocError> {
        let _ = (start, len);
        Err(AllocError::TableFull)
    }

    /// Gives cached memory back to the layer below.
    fn shrink(&mut self) {}

    /// Bytes a block of `requested` bytes aligned to `align` counts for in
    /// [`used_bytes`](Self::used_bytes) (rounding to frames, orders, classes).
    fn charge(&self, block: &Block, requested: u64, align: u64) -> u64 {
        let _ = (requested, align);
        block.size
    }

    /// The allocator's own figure of bytes in use, when it keeps one the
    /// model can predict exactly.
    fn used_bytes(&self) -> Option<u64>;

    /// The allocator's own consistency checks (free + used = total, an
    /// invariant walker), run after every step.
    ///
    /// # Errors
    /// A message saying what is inconsistent.
    fn check(&self, model: &Model) -> Result<(), String> {
        let _ = model;
        Ok(())
    }

    /// Whether freeing `block` again, long after it was freed, is defined for
    /// this allocator now (a slab's page may have gone back to its source).
    fn may_free_again(&self, block: &Block) -> bool {
        let _ = block;
        true
    }

    /// The shape `(size, align)` of a free range whose presence (in the model)
    /// proves that an out-of-memory answer to `size` bytes aligned to `align`
    /// was wrong: the request itself for an exhaustive search (a bitmap), the
    /// covering naturally aligned block for a buddy; `None` when the
    /// allocator promises no such thing.
    fn guaranteed_fit(&self, size: u64, align: u64) -> Option<(u64, u64)> {
        let _ = (size, align);
        None
    }

    /// Whether a misaligned free `offset` bytes into `block` is one the
    /// allocator can recognise (for a buddy, only inside a single block).
    fn may_free_inside(&self, block: &Block, offset: u64) -> bool {
        let _ = (block, offset);
        true
    }

    /// An address this allocator does not own, chosen by `pick`.
    fn foreign_address(&self, pick: usize) -> u64 {
        let owned = self.owned();
        let end = owned.iter().map(|s| s.1).max().unwrap_or(0);
        let start = owned.iter().map(|s| s.0).min().unwrap_or(0);
        let unit = 4096;
        match pick % 3 {
            0 if start >= unit => start - unit,
            1 => end.saturating_add(unit * (pick as u64 % 7)),
            _ => end.saturating_add(1 << 30) & !(unit - 1),
        }
    }

    /// Runs after the driver freed every block and shrank: every page must
    /// be back where it came from.
    ///
    /// # Errors
    /// A message naming what leaked.
    fn finish(&mut self, model: &Model) -> Result<(), String> {
        let _ = model;
        Ok(())
    }
}
