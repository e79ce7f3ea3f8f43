//! `kalloc-bump`: the boot-time allocator over a memory map, and the bump arena.

use std::alloc::{GlobalAlloc, Layout};
use std::ptr::NonNull;

use kalloc_api::{
    AllocError, FRAME_SIZE, FrameRange, FreeError, MemoryMap, PhysAddr, Region, RegionKind,
};
use kalloc_bump::{BootMemory, BumpArena, PhysRange, Placement};

use crate::adapter::{Expect, ModelAllocator, Rules};
use crate::driver::{Divergence, Summary, run};
use crate::host::HostArena;
use crate::model::{Block, Model, Span, spans};
use crate::op::Op;

/// The firmware memory map the boot allocator starts from: low memory below
/// the legacy hole, a main region whose ends are not frame-aligned (the
/// normalised map trims them), a firmware hole, and memory above 4 GiB.
const MEMORY_MAP: [(u64, u64, RegionKind); 5] = [
    (0x1000, 0x9_f000, RegionKind::Usable),
    (0xf_0000, 0x1_0000, RegionKind::Reserved),
    (0x10_0800, 0x2f_f000, RegionKind::Usable),
    (0x40_0000, 0x2_0000, RegionKind::AcpiReclaimable),
    (0x1_0000_0000, 0x10_0000, RegionKind::Usable),
];

/// The allocation limit of the limited variants: inside the main region, not
/// frame-aligned, like a DMA limit that cuts a region in two.
const LIMIT: u64 = 0x23_4567;

/// Slots in the reservation table: enough for long sequences, few enough that
/// a scattered one fills it.
const RESERVED_SLOTS: usize = 128;

/// Drives a [`BootMemory`]: allocate and reserve only, never free.
struct BootAdapter<'a> {
    boot: BootMemory<'a>,
    /// Usable memory, as the normalised map has it.
    usable: Vec<Span>,
    usable_total: u64,
}

impl BootAdapter<'_> {
    /// The usable memory new allocations may come from: below the limit, if set.
    fn window(&self) -> Vec<Span> {
        let limit = self.boot.limit().map_or(u64::MAX, PhysAddr::as_u64);
        self.usable
            .iter()
            .map(|&(s, e)| (s, e.min(limit)))
            .filter(|&(s, e)| s < e)
            .collect()
    }

    /// Reservations the model expects: live blocks and recorded reservations,
    /// merged.
    fn expected_taken(model: &Model) -> Vec<Span> {
        let mut taken: Vec<Span> = model
            .live()
            .map(|l| (l.block.addr, l.block.end()))
            .chain(model.reserved().iter().copied())
            .collect();
        merge(&mut taken);
        taken
    }

    /// Checks the hand-over: free frames and reserved frames are sorted,
    /// disjoint, inside usable memory, cover every usable frame exactly once,
    /// and a frame is reserved exactly when a live or reserved byte is in it.
    fn check_hand_over(&self, model: &Model) -> Result<(), String> {
        let taken = Self::expected_taken(model);
        // Frames of each usable range: 0 = unseen, 1 = free, 2 = reserved.
        let mut seen: Vec<Vec<u8>> = self
            .usable
            .iter()
            .map(|&(s, e)| vec![0; ((e - s) / FRAME_SIZE) as usize])
            .collect();
        let mut mark = |run: FrameRange, value: u8, what: &str| -> Result<(), String> {
            let (start, end) = (run.start_address().as_u64(), run.end_address().as_u64());
            let Some(index) = self
                .usable
                .iter()
                .position(|&(s, e)| s <= start && end <= e)
            else {
                return Err(format!(
                    "{what} run [{start:#x}, {end:#x}) is not inside usable memory {}",
                    spans(&self.usable)
                ));
            };
            let first = ((start - self.usable[index].0) / FRAME_SIZE) as usize;
            for frame in &mut seen[index][first..first + run.count() as usize] {
                if *frame != 0 {
                    return Err(format!(
                        "{what} run [{start:#x}, {end:#x}) repeats a frame already handed over"
                    ));
                }
                *frame = value;
            }
            Ok(())
        };
        for run in self.boot.free_ranges() {
            mark(run, 1, "free")?;
        }
        for run in self.boot.reserved_frames() {
            mark(run, 2, "reserved")?;
        }
        for (&(s, _), frames) in self.usable.iter().zip(&seen) {
            for (i, &state) in frames.iter().enumerate() {
                let frame = s + i as u64 * FRAME_SIZE;
                let busy = taken
                    .iter()
                    .any(|&(ts, te)| ts < frame + FRAME_SIZE && frame < te);
                let want = if busy { 2 } else { 1 };
                if state != want {
                    let said = ["in neither list", "free", "reserved"][usize::from(state)];
                    return Err(format!(
                        "frame {frame:#x} is handed over as {said}, but it holds {} live or reserved byte",
                        if busy { "a" } else { "no" }
                    ));
                }
            }
        }
        let free = self.boot.free_bytes();
        let reserved: u64 = self.boot.reserved_frames().map(|r| r.size_bytes()).sum();
        if free + reserved != self.usable_total {
            return Err(format!(
                "{free:#x} free + {reserved:#x} reserved frame bytes != {:#x} usable",
                self.usable_total
            ));
        }
        Ok(())
    }
}

/// Sorts and merges overlapping or touching spans.
fn merge(list: &mut Vec<Span>) {
    list.retain(|&(s, e)| s < e);
    list.sort_unstable();
    let mut merged: Vec<Span> = Vec::with_capacity(list.len());
    for &(s, e) in list.iter() {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    *list = merged;
}

/// Bytes of `list` (merged) inside `within` (merged).
fn overlap_bytes(list: &[Span], within: &[Span]) -> u64 {
    list.iter()
        .flat_map(|&(s, e)| {
            within
                .iter()
                .map(move |&(ws, we)| e.min(we).saturating_sub(s.max(ws)))
        })
        .sum()
}

fn phys(range: PhysRange) -> Span {
    (range.start().as_u64(), range.end().as_u64())
}

impl ModelAllocator for BootAdapter<'_> {
    fn rules(&self) -> Rules {
        Rules {
            unit: 1,
            frees: false,
            reserves: true,
            reserve_overlaps: true,
            ..Rules::FRAME_ALLOCATOR
        }
    }

    fn owned(&self) -> Vec<Span> {
        self.window()
    }

    fn allocate(&mut self, size: u64, align: u64) -> Result<Block, AllocError> {
        let addr = self.boot.allocate(size, align)?;
        Ok(Block::phys(addr.as_u64(), size))
    }

    fn free(&mut self, _block: &Block, _size: u64, _align: u64) -> Result<(), FreeError> {
        unreachable!("the rules say a boot allocator never frees")
    }

    fn reserve(&mut self, start: u64, len: u64) -> Result<(), AllocError> {
        self.boot.reserve(PhysAddr::new(start), len)
    }

    fn used_bytes(&self) -> Option<u64> {
        // Reservations may overlap live blocks, so the charged sum is not the
        // figure; `check` compares the whole reservation table instead.
        None
    }

    fn check(&self, model: &Model) -> Result<(), String> {
        let expected = Self::expected_taken(model);
        let table: Vec<Span> = self.boot.reserved_ranges().map(phys).collect();
        if table != expected {
            return Err(format!(
                "reservation table {} differs from the live and reserved ranges {}",
                spans(&table),
                spans(&expected)
            ));
        }
        let gaps: Vec<Span> = self.boot.free_gaps().map(phys).collect();
        let gap_bytes: u64 = gaps.iter().map(|(s, e)| e - s).sum();
        let taken_bytes = overlap_bytes(&expected, &self.usable);
        if gap_bytes + taken_bytes != self.usable_total || overlap_bytes(&gaps, &expected) != 0 {
            return Err(format!(
                "free gaps {} ({gap_bytes:#x} bytes) and the {taken_bytes:#x} taken usable bytes \
                 do not partition the {:#x} usable bytes",
                spans(&gaps),
                self.usable_total
            ));
        }
        if self.boot.usable_bytes() != self.usable_total {
            return Err(format!(
                "usable bytes changed from {:#x} to {:#x}",
                self.usable_total,
                self.boot.usable_bytes()
            ));
        }
        Ok(())
    }

    fn guaranteed_fit(&self, size: u64, align: u64) -> Option<(u64, u64)> {
        // Every gap is searched; an allocation touching no reservation needs
        // one more table slot, which a full table does not have.
        let (used, capacity) = self.boot.reserved_slots();
        (used < capacity).then_some((size, align))
    }

    fn finish(&mut self, model: &Model) -> Result<(), String> {
        self.check_hand_over(model)?;
        // Free + reserved + allocated adds up to usable, in bytes: allocated
        // blocks are disjoint and usable; reservations count where no block is.
        let allocated: u64 = model.live().map(|l| l.block.size).sum();
        let taken = overlap_bytes(&Self::expected_taken(model), &self.usable);
        let reserved_only = taken.checked_sub(allocated).ok_or_else(|| {
            format!("{allocated:#x} bytes allocated, more than the {taken:#x} taken")
        })?;
        let free: u64 = self.boot.free_gaps().map(|g| g.len()).sum();
        if free + reserved_only + allocated != self.usable_total {
            return Err(format!(
                "{free:#x} free + {reserved_only:#x} reserved + {allocated:#x} allocated \
                 != {:#x} usable bytes",
                self.usable_total
            ));
        }
        Ok(())
    }
}

/// Runs `ops` on a fresh [`BootMemory`] over a five-region memory map. The sequence's
/// length picks the variant, so every sequence length class covers all four:
/// top-down or bottom-up placement, with or without an allocation limit.
/// After the last step the hand-over is checked frame by frame.
pub fn run_boot_memory(ops: &[Op]) -> Result<Summary, Divergence> {
    let mut map_storage = [Region::EMPTY; MEMORY_MAP.len()];
    let map = MemoryMap::from_regions(
        &mut map_storage,
        MEMORY_MAP.map(|(start, len, kind)| Region::new(PhysAddr::new(start), len, kind)),
    )
    .expect("the test memory map is valid");
    let mut usable_storage = [PhysRange::EMPTY; MEMORY_MAP.len()];
    let mut reserved_storage = [PhysRange::EMPTY; RESERVED_SLOTS];
    let mut boot = BootMemory::new(&map, &mut usable_storage, &mut reserved_storage)
        .expect("the tables fit the map");
    let placement = if ops.len() % 2 == 0 {
        Placement::TopDown
    } else {
        Placement::BottomUp
    };
    boot.set_placement(placement);
    if ops.len() % 4 >= 2 {
        boot.set_limit(Some(PhysAddr::new(LIMIT)));
    }
    let usable: Vec<Span> = boot.usable_ranges().map(phys).collect();
    let usable_total = usable.iter().map(|(s, e)| e - s).sum();
    let mut adapter = BootAdapter {
        boot,
        usable,
        usable_total,
    };
    run(&mut adapter, ops)
}

/// Bytes of the bump arena under test.
const ARENA_BYTES: usize = 256 << 10;
/// Alignment of its region: a page, so block addresses are as in a kernel.
const ARENA_ALIGN_BYTES: usize = 4096;

/// Drives a [`BumpArena`] through `GlobalAlloc` and `try_allocate`/`deallocate`
/// in turn, predicting every answer exactly: the cursor moves past each new
/// block, back only when the most recent block is freed or shrunk.
struct BumpAdapter {
    arena: BumpArena,
    region: HostArena,
    /// The cursor the arena should have: offset of the first byte never handed out.
    cursor: usize,
    /// Calls so far; even ones go through `GlobalAlloc`.
    calls: u64,
    /// The first answer that differed from the prediction.
    mismatch: Option<String>,
}

impl BumpAdapter {
    fn base(&self) -> usize {
        self.region.base().as_ptr() as usize
    }

    fn capacity(&self) -> usize {
        self.region.len()
    }

    /// Where a block for `layout` goes if allocated now: `(start, end)` offsets.
    fn predict(&self, layout: Layout) -> Option<(usize, usize)> {
        let mask = layout.align() - 1;
        let aligned = self.base().checked_add(self.cursor)?.checked_add(mask)? & !mask;
        let start = aligned - self.base();
        let end = start.checked_add(layout.size())?;
        (end <= self.capacity()).then_some((start, end))
    }

    fn offset(&self, ptr: NonNull<u8>) -> usize {
        (ptr.as_ptr() as usize).wrapping_sub(self.base())
    }

    fn via_global(&mut self) -> bool {
        self.calls += 1;
        self.calls % 2 == 0
    }

    fn note(&mut self, message: String) {
        self.mismatch.get_or_insert(message);
    }

    /// Compares an allocation's answer with the prediction and moves the
    /// predicted cursor.
    fn expect_block(&mut self, what: &str, layout: Layout, got: Option<NonNull<u8>>) {
        let predicted = self.predict(layout);
        match (predicted, got) {
            (Some((start, end)), Some(ptr)) if self.offset(ptr) == start => self.cursor = end,
            (Some((start, _)), Some(ptr)) => self.note(format!(
                "{what} of {layout:?} returned offset {:#x}, the cursor at {:#x} gives {start:#x}",
                self.offset(ptr),
                self.cursor
            )),
            (Some((start, _)), None) => self.note(format!(
                "{what} of {layout:?} failed, but offset {start:#x} fits (cursor {:#x} of {:#x})",
                self.cursor,
                self.capacity()
            )),
            (None, Some(ptr)) => self.note(format!(
                "{what} of {layout:?} returned offset {:#x}, past the room left (cursor {:#x})",
                self.offset(ptr),
                self.cursor
            )),
            (None, None) => {}
        }
    }
}

fn layout(size: u64, align: u64) -> Result<Layout, AllocError> {
    let size = usize::try_from(size).map_err(|_| AllocError::Overflow)?;
    let align = usize::try_from(align).map_err(|_| AllocError::BadAlignment)?;
    Layout::from_size_align(size, align).map_err(|_| AllocError::Overflow)
}

impl ModelAllocator for BumpAdapter {
    fn rules(&self) -> Rules {
        Rules {
            // `try_allocate` gives zero-size requests a dangling aligned pointer.
            zero_size: Expect::Succeed,
            ..Rules::UNCHECKED_HEAP
        }
    }

    fn owned(&self) -> Vec<Span> {
        vec![self.region.span()]
    }

    fn allocate(&mut self, size: u64, align: u64) -> Result<Block, AllocError> {
        let layout = layout(size, align)?;
        if layout.size() == 0 {
            // Zero-size `GlobalAlloc::alloc` is undefined; `try_allocate` is not.
            return self
                .arena
                .try_allocate(layout)
                .map(|ptr| Block::host(ptr, 0));
        }
        let result = if self.via_global() {
            // SAFETY: the layout has a non-zero size.
            NonNull::new(unsafe { self.arena.alloc(layout) }).ok_or(AllocError::OutOfMemory)
        } else {
            self.arena.try_allocate(layout)
        };
        self.expect_block("allocation", layout, result.ok());
        result.map(|ptr| Block::host(ptr, size))
    }

    fn free(&mut self, block: &Block, size: u64, align: u64) -> Result<(), FreeError> {
        let layout = layout(size, align).map_err(|_| FreeError::SizeMismatch)?;
        let ptr = block.ptr.ok_or(FreeError::NotOwned)?;
        if size == 0 {
            // Zero-size blocks never came from `GlobalAlloc::alloc`.
            self.arena.deallocate(ptr, layout);
            return Ok(());
        }
        let start = self.offset(ptr);
        if start + layout.size() == self.cursor {
            self.cursor = start;
        }
        if self.via_global() {
            // SAFETY: the rules skip hostile frees, so `ptr` is a live block
            // of this arena allocated with `layout`.
            unsafe { self.arena.dealloc(ptr.as_ptr(), layout) };
        } else {
            self.arena.deallocate(ptr, layout);
        }
        Ok(())
    }

    fn realloc(
        &mut self,
        block: &Block,
        size: u64,
        align: u64,
        new_size: u64,
    ) -> Result<Block, AllocError> {
        let old = layout(size, align)?;
        let new = layout(new_size, align)?;
        let ptr = block.ptr.ok_or(AllocError::OutOfMemory)?;
        let start = self.offset(ptr);
        let last = start + old.size() == self.cursor;
        // In place when shrinking, or growing the last block with room;
        // otherwise a new block, the old one staying where it is (not last).
        let in_place = new.size() <= old.size() || (last && start + new.size() <= self.capacity());
        // SAFETY: `ptr` is a live block of this arena allocated with `old`;
        // the new size is non-zero (profiles start at 1 byte) and fits a
        // layout with the same alignment (checked above).
        let moved = NonNull::new(unsafe { self.arena.realloc(ptr.as_ptr(), old, new.size()) });
        if in_place {
            if moved != Some(ptr) {
                self.note(format!(
                    "realloc of the block at offset {start:#x} from {:#x} to {:#x} bytes moved or \
                     failed ({moved:?}), but it could stay in place",
                    old.size(),
                    new.size()
                ));
            } else if last {
                self.cursor = start + new.size();
            }
        } else {
            self.expect_block("moving realloc", new, moved);
        }
        moved
            .map(|p| Block::host(p, new_size))
            .ok_or(AllocError::OutOfMemory)
    }

    fn used_bytes(&self) -> Option<u64> {
        // Freed blocks that were not last stay used: `check` compares the
        // cursor with the prediction instead.
        None
    }

    fn check(&self, model: &Model) -> Result<(), String> {
        if let Some(mismatch) = &self.mismatch {
            return Err(mismatch.clone());
        }
        let (used, remaining) = (self.arena.used(), self.arena.remaining());
        if used != self.cursor || used + remaining != self.capacity() {
            return Err(format!(
                "arena reports {used:#x} used and {remaining:#x} remaining of {:#x}; \
                 the cursor should be at {:#x}",
                self.capacity(),
                self.cursor
            ));
        }
        let limit = (self.base() + used) as u64;
        if let Some(past) = model.live().find(|l| l.block.end() > limit) {
            return Err(format!(
                "live block {} lies past the cursor at {limit:#x}",
                past.block
            ));
        }
        Ok(())
    }
}

/// Runs `ops` on a [`BumpArena`] over a 256 KiB host region, alternating
/// between its `GlobalAlloc` and `try_allocate`/`deallocate` entry points,
/// writing and checking every block and predicting every address.
pub fn run_bump_arena(ops: &[Op]) -> Result<Summary, Divergence> {
    let region = HostArena::new(ARENA_BYTES, ARENA_ALIGN_BYTES);
    let arena = BumpArena::new();
    // SAFETY: the region lives in the adapter beside the arena, which is
    // dropped with it, and only the arena uses its bytes.
    unsafe { arena.init(region.base().as_ptr(), region.len()) }
        .expect("a fresh arena takes its region");
    let mut adapter = BumpAdapter {
        arena,
        region,
        cursor: 0,
        calls: 0,
        mismatch: None,
    };
    run(&mut adapter, ops)
}
