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

/// When an out-of-memory answer can be proven wrong.
#[derive(Clone, Copy, Debug)]
enum Fit {
    None,
    Exhaustive,
    Buddy { max_order: u32 },
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

    fn used_bytes(&self) -> Option<u64> {
        let used = self.frames.used_frames().checked_sub(self.baseline_used)?;
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
        }
    }

    fn may_free_inside(&self, block: &Block, _offset: u64) -> bool {
        // Inside a single power-of-two block the buddy's metadata knows the
        // block's head; an allocation of another length may be several blocks.
        self.buddy_blocks && (block.size / FRAME_SIZE).is_power_of_two()
    }

    fn finish(&mut self, _model: &Model) -> Result<(), String> {
        let free = self.frames.free_frames();
        if free != self.free_at_start {
            return Err(format!(
                "after every frame was freed, {free} frames are free; {} were at the start",
                self.free_at_start
            ));
        }
        Ok(())
    }
}
