//! One adapter for every [`FrameAllocator`]: bitmap, atomic bitmap (through
//! `&AtomicBitmapFrameAllocator`), buddy, per-CPU buddy, `Locked<_>`.

use kalloc_api::{AllocError, FRAME_SIZE, Frame, FrameAllocator, FrameRange, FreeError};

use crate::adapter::{ModelAllocator, Rules};
use crate::model::{Block, Model, Span};

/// Drives a [`FrameAllocator`]: sizes in bytes become whole frames, blocks
/// are physical (never dereferenced).
pub struct FrameAdapter<F> {
    frames: F,
    owned: Vec<Span>,
    rules: Rules,
    /// Frames used before the run started (reserved, never handed over).
    baseline_used: usize,
    free_at_start: usize,
    fit: Fit,
    buddy_blocks: bool,
    extra_check: Option<Check<F>>,
    shrink: Option<fn(&mut F)>,
    reserve: Option<Reserve<F>>,
    /// Frames taken by reservations (used, but not allocated).
    reserved_frames: usize,
    /// The whole window the allocator manages, when it is wider than
    /// `owned` (frames it keeps used): foreign addresses lie outside it.
    managed: Option<Span>,
}

impl<F: FrameAllocator> FrameAdapter<F> {
    /// Drives `frames`, which manages exactly the frames in `owned` (byte
    /// spans) plus any it keeps marked used.
    pub fn new(frames: F, owned: Vec<Span>) -> Self {
        let baseline_used = frames.used_frames();
        let free_at_start = frames.free_frames();
        Self {
            frames,
            owned,
            rules: Rules::FRAME_ALLOCATOR,
            baseline_used,
            free_at_start,
            fit: Fit::None,
            buddy_blocks: false,
            extra_check: None,
            shrink: None,
            reserve: None,
            reserved_frames: 0,
            managed: None,
        }
    }

    /// Replaces the rules (for allocators that detect more, or less).
    pub fn with_rules(mut self, rules: Rules) -> Self {
        self.rules = rules;
        self
    }

    /// Declares that the allocator finds any free aligned run: an
    /// out-of-memory answer while the model sees one is a divergence.
    pub fn exhaustive(mut self) -> Self {
        self.fit = Fit::Exhaustive;
        self
    }

    /// Declares that the allocator coalesces fully: an out-of-memory answer
    /// while the model sees a free naturally aligned block of the covering
    /// order (up to `max_order`) is a divergence.
    pub fn coalescing(mut self, max_order: u32) -> Self {
        self.fit = Fit::Buddy { max_order };
        self
    }

    /// Declares buddy semantics: a free that starts inside a power-of-two
    /// allocation must be refused (`Misaligned` or `SizeMismatch`).
    pub fn buddy_blocks(mut self) -> Self {
        self.buddy_blocks = true;
        self.rules.misaligned_free =
            crate::adapter::Expect::Fail(&[FreeError::Misaligned, FreeError::SizeMismatch]);
        self
    }

    /// Adds the allocator's own invariant check, run after every step.
    pub fn with_check(mut self, check: Check<F>) -> Self {
        self.extra_check = Some(check);
        self
    }

    /// Adds what a shrink operation does (drain per-CPU caches).
    pub fn with_shrink(mut self, shrink: fn(&mut F)) -> Self {
        self.shrink = Some(shrink);
        self
    }

    /// Declares that the allocator finds a run wherever a free run of whole
    /// `chunk_frames`-frame chunks covers it (single frames anywhere): an
    /// out-of-memory answer while the model sees such a run is a divergence.
    pub fn chunked(mut self, chunk_frames: u64) -> Self {
        self.fit = Fit::Chunked { chunk_frames };
        self
    }

    /// Offers reservations: `reserve` marks a range used and returns how
    /// many of its frames were free before. The driver reserves only free
    /// memory, and the frames reserved do not count as allocated.
    pub fn with_reserve(mut self, reserve: Reserve<F>) -> Self {
        self.reserve = Some(reserve);
        self.rules.reserves = true;
        self
    }

    /// Declares the whole window the allocator manages (byte span), wider
    /// than the memory it was given: frees outside it are foreign, frees of
    /// never-given frames inside it are not probed.
    pub fn with_managed(mut self, managed: Span) -> Self {
        self.managed = Some(managed);
        self
    }

    /// The allocator.
    pub fn inner(&self) -> &F {
        &self.frames
    }

    fn range_of(block: &Block) -> FrameRange {
        FrameRange::new(
            Frame::containing(kalloc_api::PhysAddr::new(block.addr)),
            block.size / FRAME_SIZE,
        )
    }
}

/// An allocator's own invariant check.
pub type Check<F> = fn(&F) -> Result<(), String>;

/// Marks a range used; returns how many of its frames were free before.
pub type Reserve<F> = fn(&mut F, FrameRange) -> Result<usize, AllocError>;

/// When an out-of-memory answer can be proven wrong.
#[derive(Clone, Copy, Debug)]
enum Fit {
    None,
    Exhaustive,
    Buddy { max_order: u32 },
    Chunked { chunk_frames: u64 },
}

/// Converts a byte count to frames, saturating (a huge request stays huge).
fn frames_of(bytes: u64) -> usize {
    usize::try_from(bytes.div_ceil(FRAME_SIZE)).unwrap_or(usize::MAX)
}

impl<F: FrameAllocator> ModelAllocator for FrameAdapter<F> {
    fn rules(&self) -> Rules {
        self.rules
    }

    fn owned(&self) -> Vec<Span> {
        self.owned.clone()
    }

    fn allocate(&mut self, size: u64, align: u64) -> Result<Block, AllocError> {
        // Alignments are whole frames here; a bad one (3 frames) stays bad.
        let frame_align = usize::try_from(align / FRAME_SIZE).unwrap_or(usize::MAX);
        let range = self.frames.allocate(frames_of(size), frame_align)?;
        Ok(Block::phys(
            range.start_address().as_u64(),
            range.size_bytes(),
        ))
    }

    fn free(&mut self, block: &Block, _size: u64, _align: u64) -> Result<(), FreeError> {
        self.frames.deallocate(Self::range_of(block))
    }

    fn shrink(&mut self) {
        if let Some(shrink) = self.shrink {
            shrink(&mut self.frames);
        }
    }

    fn reserve(&mut self, start: u64, len: u64) -> Result<(), AllocError> {
        let Some(reserve) = self.reserve else {
            return Err(AllocError::TableFull);
        };
        let range = Self::range_of(&Block::phys(start, len));
        self.reserved_frames += reserve(&mut self.frames, range)?;
        Ok(())
    }

    fn used_bytes(&self) -> Option<u64> {
        let used = self
            .frames
            .used_frames()
            .checked_sub(self.baseline_used + self.reserved_frames)?;
        Some(used as u64 * FRAME_SIZE)
    }

    fn check(&self, _model: &Model) -> Result<(), String> {
        let (free, total) = (self.frames.free_frames(), self.frames.total_frames());
        if free > total {
            return Err(format!("{free} frames free out of {total}"));
        }
        if self.frames.used_frames() < self.baseline_used {
            return Err(format!(
                "{} frames used, fewer than the {} reserved before the run",
                self.frames.used_frames(),
                self.baseline_used
            ));
        }
        self.extra_check.map_or(Ok(()), |check| check(&self.frames))
    }

    fn guaranteed_fit(&self, size: u64, align: u64) -> Option<(u64, u64)> {
        match self.fit {
            Fit::None => None,
            Fit::Exhaustive => Some((size, align)),
            // An aligned request takes a whole block of the alignment's order
            // (as Linux's does), so only a free block of that order proves
            // the answer wrong.
            Fit::Buddy { max_order } => {
                let block = size.checked_next_power_of_two()?.max(align);
                (block <= FRAME_SIZE << max_order).then_some((block, block))
            }
            Fit::Chunked { .. } if size <= FRAME_SIZE && align <= FRAME_SIZE => Some((size, align)),
            Fit::Chunked { chunk_frames } => {
                let chunk = chunk_frames * FRAME_SIZE;
                Some((size.checked_next_multiple_of(chunk)?, align.max(chunk)))
            }
        }
    }

    fn may_free_inside(&self, block: &Block, _offset: u64) -> bool {
        // Inside a single power-of-two block the buddy's metadata knows the
        // block's head; an allocation of another length may be several blocks.
        self.buddy_blocks && (block.size / FRAME_SIZE).is_power_of_two()
    }

    fn foreign_address(&self, pick: usize) -> u64 {
        let Some((start, end)) = self.managed else {
            let owned = self.owned();
            let end = owned.iter().map(|s| s.1).max().unwrap_or(0);
            let start = owned.iter().map(|s| s.0).min().unwrap_or(0);
            return foreign_near(start, end, pick);
        };
        foreign_near(start, end, pick)
    }

    fn finish(&mut self, _model: &Model) -> Result<(), String> {
        // Reserved frames stay used.
        let free = self.frames.free_frames() + self.reserved_frames;
        if free != self.free_at_start {
            return Err(format!(
                "after every frame was freed, {free} frames are free or reserved; {} were free at the start",
                self.free_at_start
            ));
        }
        Ok(())
    }
}

/// An address outside `[start, end)`, chosen by `pick`: just below, just
/// above, or far above.
fn foreign_near(start: u64, end: u64, pick: usize) -> u64 {
    match pick % 3 {
        0 if start >= FRAME_SIZE => start - FRAME_SIZE,
        1 => end.saturating_add(FRAME_SIZE * (pick as u64 % 7)),
        _ => end.saturating_add(1 << 30) & !(FRAME_SIZE - 1),
    }
}
