//! A deliberately simple, obviously correct frame allocator, and switchable
//! bugs in it: the harness tests itself on these before it judges anyone else.

use kalloc_api::{AllocError, FRAME_SIZE, Frame, FrameAllocator, FrameRange, FreeError};

use crate::model::Span;

/// A bug [`GridFrames`] can be told to have, to prove the harness catches it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Bug {
    /// No bug.
    #[default]
    None,
    /// Marks one frame fewer than it hands out (an off-by-one in the run).
    ShortRun,
    /// Accepts a double free silently.
    SilentDoubleFree,
    /// Forgets to count a freed run as free again.
    LeakOnFree,
    /// Ignores alignment.
    IgnoresAlignment,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Free,
    /// First frame of an allocation of this many frames.
    Head(usize),
    Tail,
}

/// First-fit over one slot per frame, `O(frames)` per call.
#[derive(Clone, Debug)]
pub struct GridFrames {
    base: u64,
    slots: Vec<Slot>,
    free: usize,
    bug: Bug,
}

impl GridFrames {
    /// `frames` free frames from frame number `base`, with `bug`.
    pub fn new(base: u64, frames: usize, bug: Bug) -> Self {
        Self {
            base,
            slots: vec![Slot::Free; frames],
            free: frames,
            bug,
        }
    }

    /// The byte span the allocator manages.
    pub fn span(&self) -> Span {
        let start = self.base * FRAME_SIZE;
        (start, start + self.slots.len() as u64 * FRAME_SIZE)
    }
}

impl FrameAllocator for GridFrames {
    fn allocate(&mut self, count: usize, frame_align: usize) -> Result<FrameRange, AllocError> {
        if count == 0 {
            return Err(AllocError::ZeroSize);
        }
        if !frame_align.is_power_of_two() {
            return Err(AllocError::BadAlignment);
        }
        let align = if self.bug == Bug::IgnoresAlignment {
            1
        } else {
            frame_align as u64
        };
        let mut index = 0usize;
        loop {
            let number = (self.base + index as u64).next_multiple_of(align);
            index = usize::try_from(number - self.base).map_err(|_| AllocError::OutOfMemory)?;
            let end = index.checked_add(count).ok_or(AllocError::Overflow)?;
            if end > self.slots.len() {
                return Err(AllocError::OutOfMemory);
            }
            match self.slots[index..end]
                .iter()
                .rposition(|s| *s != Slot::Free)
            {
                Some(busy) => index += busy + 1,
                None => {
                    let marked = if self.bug == Bug::ShortRun {
                        count - 1
                    } else {
                        count
                    };
                    self.slots[index..index + marked].fill(Slot::Tail);
                    if marked > 0 {
                        self.slots[index] = Slot::Head(count);
                    }
                    self.free -= marked;
                    return Ok(FrameRange::new(Frame::from_number(number), count as u64));
                }
            }
        }
    }

    fn deallocate(&mut self, range: FrameRange) -> Result<(), FreeError> {
        let number = range.start().number();
        if number < self.base {
            return Err(FreeError::NotOwned);
        }
        let index = usize::try_from(number - self.base).map_err(|_| FreeError::NotOwned)?;
        let count = range.count() as usize;
        match self.slots.get(index) {
            None => Err(FreeError::NotOwned),
            Some(Slot::Free) if self.bug == Bug::SilentDoubleFree => Ok(()),
            Some(Slot::Free) => Err(FreeError::DoubleFree),
            Some(Slot::Tail) => Err(FreeError::Misaligned),
            Some(&Slot::Head(held)) if held != count => Err(FreeError::SizeMismatch),
            Some(Slot::Head(_)) => {
                let end = (index + count).min(self.slots.len());
                let marked = self.slots[index..end]
                    .iter()
                    .filter(|s| **s != Slot::Free)
                    .count();
                self.slots[index..end].fill(Slot::Free);
                if self.bug != Bug::LeakOnFree {
                    self.free += marked;
                }
                Ok(())
            }
        }
    }

    fn free_frames(&self) -> usize {
        self.free
    }

    fn total_frames(&self) -> usize {
        self.slots.len()
    }
}
