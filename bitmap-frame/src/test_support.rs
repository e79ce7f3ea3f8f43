//! A reference model of which frames are free, live or reserved, and a tiny
//! seeded generator, shared by the model-based tests of both allocators.

extern crate std;

use std::vec;
use std::vec::Vec;

use kalloc_api::{AllocError, Frame, FrameRange};

/// xorshift64*: reproducible from its seed.
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    /// A request mix: mostly single frames, some small aligned runs, some
    /// long runs, some huge-frame-like runs.
    pub(crate) fn request(&mut self) -> (usize, usize) {
        match self.below(10) {
            0..=4 => (1, 1),
            5 | 6 => (1 + self.below(64), 1 << self.below(7)),
            7 => (65 + self.below(200), 1 << self.below(6)),
            8 => (1 + self.below(300), 64 << self.below(3)),
            _ => (512, 512),
        }
    }
}

const FREE: u8 = 0;
const LIVE: u8 = 1;
const RESERVED: u8 = 2;

/// What every managed frame is, and the live allocations.
pub(crate) struct Reference {
    base: u64,
    state: Vec<u8>,
    live: Vec<FrameRange>,
}

impl Reference {
    pub(crate) fn new(base: u64, frames: usize) -> Self {
        Self {
            base,
            state: vec![RESERVED; frames],
            live: Vec::new(),
        }
    }

    fn index(&self, frame: u64) -> usize {
        (frame - self.base) as usize
    }

    fn indices(&self, range: FrameRange) -> core::ops::Range<usize> {
        let start = self.index(range.start().number());
        start..start + range.count() as usize
    }

    pub(crate) fn free_frames(&self) -> usize {
        self.state.iter().filter(|s| **s == FREE).count()
    }

    pub(crate) fn count_free(&self, range: FrameRange) -> usize {
        self.state[self.indices(range)]
            .iter()
            .filter(|s| **s == FREE)
            .count()
    }

    /// Whether some free run of `count` frames starts at a multiple of `align`.
    pub(crate) fn has_free_run(&self, count: usize, align: usize) -> bool {
        let mut run_start = None;
        for (index, state) in self.state.iter().enumerate() {
            if *state != FREE {
                run_start = None;
                continue;
            }
            let start = *run_start.get_or_insert(index);
            let first = (self.base + start as u64).next_multiple_of(align as u64);
            if first + count as u64 <= self.base + index as u64 + 1 {
                return true;
            }
        }
        false
    }

    /// Checks an allocation's answer and records it. `must_find`: an
    /// out-of-memory answer while a fitting run is free is a failure.
    pub(crate) fn check_allocation(
        &mut self,
        count: usize,
        align: usize,
        result: Result<FrameRange, AllocError>,
        must_find: bool,
    ) {
        match result {
            Ok(range) => {
                assert_eq!(range.count(), count as u64);
                assert_eq!(range.start().number() % align as u64, 0, "misaligned run");
                assert!(range.start().number() >= self.base);
                let indices = self.indices(range);
                assert!(indices.end <= self.state.len(), "run past the end");
                assert!(
                    self.state[indices.clone()].iter().all(|s| *s == FREE),
                    "handed out a frame that was not free: {range:?}"
                );
                self.state[indices].fill(LIVE);
                self.live.push(range);
            }
            Err(AllocError::OutOfMemory) => {
                if must_find {
                    assert!(
                        !self.has_free_run(count, align),
                        "missed a free run of {count} at {align}"
                    );
                }
            }
            Err(other) => panic!("unexpected {other:?} for {count} at {align}"),
        }
    }

    pub(crate) fn take_live(&mut self, rng: &mut XorShift) -> Option<FrameRange> {
        if self.live.is_empty() {
            return None;
        }
        let at = rng.below(self.live.len());
        Some(self.live.swap_remove(at))
    }

    pub(crate) fn set_free(&mut self, range: FrameRange) {
        let indices = self.indices(range);
        self.state[indices].fill(FREE);
    }

    /// Free frames become reserved; live ones stay live.
    pub(crate) fn reserve(&mut self, range: FrameRange) {
        let indices = self.indices(range);
        for state in &mut self.state[indices] {
            if *state == FREE {
                *state = RESERVED;
            }
        }
    }

    /// A non-empty range inside the managed frames.
    pub(crate) fn random_range(&self, rng: &mut XorShift) -> FrameRange {
        let start = rng.below(self.state.len());
        let count = 1 + rng.below((self.state.len() - start).min(100));
        FrameRange::new(Frame::from_number(self.base + start as u64), count as u64)
    }

    /// A range of reserved frames (at most 100), if a probe finds one.
    pub(crate) fn random_reservation(&self, rng: &mut XorShift) -> Option<FrameRange> {
        let start = rng.below(self.state.len());
        if self.state[start] != RESERVED {
            return None;
        }
        let len = self.state[start..]
            .iter()
            .take(100)
            .take_while(|s| **s == RESERVED)
            .count();
        Some(FrameRange::new(
            Frame::from_number(self.base + start as u64),
            len as u64,
        ))
    }

    pub(crate) fn largest_free_run(&self) -> usize {
        self.state
            .split(|s| *s != FREE)
            .map(<[u8]>::len)
            .max()
            .unwrap_or(0)
    }
}
