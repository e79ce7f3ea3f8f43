//! The driver: runs an operation sequence through an adapter and the model,
//! and stops at the first divergence with a message that says what went wrong.

use std::fmt;

use kalloc_api::{AllocError, FreeError};

use crate::adapter::{Expect, ModelAllocator, Rules};
use crate::model::{Block, Live, Model, Span};
use crate::op::Op;

/// How many operations before the failing one a [`Divergence`] shows.
const HISTORY_LEN: usize = 12;

/// The first place where the allocator and the model disagreed.
#[derive(Clone, Debug)]
pub struct Divergence {
    /// Index of the operation in the sequence (`ops.len()` for the final
    /// free-everything phase).
    pub step: usize,
    /// The operation, if the divergence happened in one.
    pub op: Option<Op>,
    /// What the allocator did wrong.
    pub message: String,
    /// The operations just before it, with their indices.
    pub recent: Vec<(usize, Op)>,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.op {
            Some(op) => writeln!(f, "step {} ({op:?}): {}", self.step, self.message)?,
            None => writeln!(f, "after the last step: {}", self.message)?,
        }
        writeln!(f, "operations just before:")?;
        for (step, op) in &self.recent {
            writeln!(f, "  {step:>6}: {op:?}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Divergence {}

/// What a run exercised, so tests can assert they were not vacuous.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Successful allocations (including reallocations that moved).
    pub allocations: u64,
    /// Allocations refused for lack of memory.
    pub out_of_memory: u64,
    /// Successful frees of live blocks (including the final phase).
    pub frees: u64,
    /// Successful reallocations.
    pub reallocations: u64,
    /// Hostile operations whose failure the model checked.
    pub hostile_checked: u64,
    /// Reservations recorded.
    pub reservations: u64,
    /// Operations skipped: not offered, undefined, or nothing to act on.
    pub skipped: u64,
    /// Most blocks live at once.
    pub peak_live: u64,
}

impl Summary {
    /// Adds another run's counts (the peak is the larger of the two).
    pub fn add(&mut self, other: &Self) {
        self.allocations += other.allocations;
        self.out_of_memory += other.out_of_memory;
        self.frees += other.frees;
        self.reallocations += other.reallocations;
        self.hostile_checked += other.hostile_checked;
        self.reservations += other.reservations;
        self.skipped += other.skipped;
        self.peak_live = self.peak_live.max(other.peak_live);
    }
}

/// Runs `ops` through `alloc` against a fresh model, then frees every live
/// block, shrinks, and lets the adapter check that everything came back.
///
/// # Errors
/// The first [`Divergence`].
pub fn run<A: ModelAllocator + ?Sized>(alloc: &mut A, ops: &[Op]) -> Result<Summary, Divergence> {
    let mut driver = Driver {
        rules: alloc.rules(),
        alloc,
        model: Model::new(),
        summary: Summary::default(),
    };
    for (step, op) in ops.iter().enumerate() {
        driver
            .step(op)
            .and_then(|()| driver.check_state())
            .map_err(|message| Divergence {
                step,
                op: Some(*op),
                message,
                recent: recent(ops, step),
            })?;
    }
    driver.finish().map_err(|message| Divergence {
        step: ops.len(),
        op: None,
        message,
        recent: recent(ops, ops.len()),
    })?;
    Ok(driver.summary)
}

/// [`run`], panicking with the divergence (for fuzz targets and plain tests).
///
/// # Panics
/// On the first divergence.
pub fn run_or_panic<A: ModelAllocator + ?Sized>(alloc: &mut A, ops: &[Op]) -> Summary {
    match run(alloc, ops) {
        Ok(summary) => summary,
        Err(divergence) => panic!("allocator diverged from the model at {divergence}"),
    }
}

fn recent(ops: &[Op], step: usize) -> Vec<(usize, Op)> {
    let from = step.saturating_sub(HISTORY_LEN);
    (from..step).map(|i| (i, ops[i])).collect()
}

struct Driver<'a, A: ModelAllocator + ?Sized> {
    alloc: &'a mut A,
    rules: Rules,
    model: Model,
    summary: Summary,
}

type Step = Result<(), String>;

impl<A: ModelAllocator + ?Sized> Driver<'_, A> {
    fn step(&mut self, op: &Op) -> Step {
        match *op {
            Op::Allocate { size, align } => self.allocate(size, align),
            Op::Free { pick } => match self.model.pick(pick).filter(|_| self.rules.frees) {
                Some(live) => self.free(&live),
                None => self.skip(),
            },
            Op::Realloc { pick, size } => {
                match self.model.pick(pick).filter(|_| self.rules.reallocs) {
                    Some(live) => self.realloc(&live, size),
                    None => self.skip(),
                }
            }
            Op::DoubleFree { pick } => self.double_free(pick),
            Op::FreeForeign { pick } => self.foreign_free(pick),
            Op::FreeMisaligned { pick, offset } => self.misaligned_free(pick, offset),
            Op::AllocateHuge { size, align } => self.hostile_allocate(size, align, self.rules.huge),
            Op::AllocateZero { align } => self.hostile_allocate(0, align, self.rules.zero_size),
            Op::AllocateBadAlign { size, align } => {
                self.hostile_allocate(size, align, self.rules.bad_align)
            }
            Op::Reserve { at, size } => self.reserve(at, size),
            Op::Shrink => {
                self.alloc.shrink();
                Ok(())
            }
        }
    }

    fn skip(&mut self) -> Step {
        self.summary.skipped += 1;
        Ok(())
    }

    fn allocate(&mut self, size: u64, align: u64) -> Step {
        match self.alloc.allocate(size, align) {
            Ok(block) => self.accept(block, size, align),
            Err(AllocError::OutOfMemory | AllocError::TableFull) => self.out_of_memory(size, align),
            Err(error) => Err(format!(
                "allocation of {size:#x} bytes aligned {align:#x} failed with {error:?}"
            )),
        }
    }

    /// Records an out-of-memory answer, wrong only where the allocator
    /// guarantees a fit and the model has a free range of that shape.
    fn out_of_memory(&mut self, size: u64, align: u64) -> Step {
        self.summary.out_of_memory += 1;
        if let Some((fit, fit_align)) = self.alloc.guaranteed_fit(size, align) {
            if let Some(gap) = find_gap(&self.model, &self.alloc.owned(), fit, fit_align) {
                return Err(format!(
                    "allocation of {size:#x} bytes aligned {align:#x} failed, \
                     but [{gap:#x}, {:#x}) is free",
                    gap + fit
                ));
            }
        }
        Ok(())
    }

    /// Checks and records a block the allocator returned, and fills it.
    fn accept(&mut self, block: Block, size: u64, align: u64) -> Step {
        self.model
            .check_new(&block, size, align, &self.alloc.owned())?;
        let charged = self.alloc.charge(&block, size, align);
        let id = self.model.insert(block, size, align, charged);
        if self.rules.writes_contents {
            fill(&block, size, id);
        }
        self.summary.allocations += 1;
        self.summary.peak_live = self.summary.peak_live.max(self.model.live_count() as u64);
        Ok(())
    }

    fn free(&mut self, live: &Live) -> Step {
        if self.rules.writes_contents {
            verify(&live.block, live.requested, live.id, live.requested)?;
        }
        match self.alloc.free(&live.block, live.requested, live.align) {
            Ok(()) => {
                self.model.remove(live.block.addr);
                self.summary.frees += 1;
                let rule = self.rules.immediate_double_free;
                if rule != Expect::Skip && self.alloc.may_free_again(&live.block) {
                    self.expect_refused(
                        "immediate double free",
                        &live.block,
                        live.requested,
                        live.align,
                        rule,
                    )?;
                }
                Ok(())
            }
            Err(error) => Err(format!(
                "free of live block {} (id {}) failed with {error:?}",
                live.block, live.id
            )),
        }
    }

    fn realloc(&mut self, live: &Live, new_size: u64) -> Step {
        let writes = self.rules.writes_contents;
        if writes {
            verify(&live.block, live.requested, live.id, live.requested)?;
        }
        match self
            .alloc
            .realloc(&live.block, live.requested, live.align, new_size)
        {
            Ok(block) => {
                self.model.remove(live.block.addr);
                let kept = live.requested.min(new_size);
                if writes {
                    verify(&block, kept, live.id, live.requested)
                        .map_err(|e| format!("realloc of {} lost contents: {e}", live.block))?;
                }
                self.summary.reallocations += 1;
                self.accept(block, new_size, live.align)
            }
            Err(AllocError::OutOfMemory) => {
                self.summary.out_of_memory += 1;
                if writes {
                    verify(&live.block, live.requested, live.id, live.requested)
                        .map_err(|e| format!("failed realloc damaged the old block: {e}"))?;
                }
                Ok(())
            }
            Err(error) => Err(format!(
                "realloc of {} to {new_size:#x} bytes failed with {error:?}",
                live.block
            )),
        }
    }

    fn hostile_allocate(&mut self, size: u64, align: u64, rule: Expect<AllocError>) -> Step {
        if rule == Expect::Skip {
            return self.skip();
        }
        match (rule, self.alloc.allocate(size, align)) {
            (Expect::Skip, _) => unreachable!("skipped rules return before allocating"),
            (Expect::Fail(allowed), Err(error)) if allowed.contains(&error) => self.checked(),
            (Expect::Fail(allowed), Err(error)) => Err(format!(
                "allocation of {size:#x} bytes aligned {align:#x} failed with {error:?}, \
                 expected one of {allowed:?}"
            )),
            (Expect::Fail(allowed), Ok(block)) => Err(format!(
                "allocation of {size:#x} bytes aligned {align:#x} returned {block}, \
                 expected one of {allowed:?}"
            )),
            (Expect::Succeed, Ok(block)) => {
                if align.is_power_of_two() && block.addr % align != 0 {
                    return Err(format!(
                        "zero-size block {block} is not aligned to {align:#x}"
                    ));
                }
                self.alloc
                    .free(&block, size, align)
                    .map_err(|e| format!("free of zero-size block {block} failed with {e:?}"))?;
                self.checked()
            }
            // A zero size served as a real block needs memory like any
            // other request: out of memory is an answer, checked as one.
            (Expect::Succeed, Err(AllocError::OutOfMemory | AllocError::TableFull)) => {
                self.out_of_memory(size, align)
            }
            (Expect::Succeed, Err(error)) => Err(format!(
                "allocation of {size:#x} bytes aligned {align:#x} failed with {error:?}, \
                 expected success"
            )),
        }
    }

    fn checked(&mut self) -> Step {
        self.summary.hostile_checked += 1;
        Ok(())
    }

    fn expect_refused(
        &mut self,
        what: &str,
        block: &Block,
        size: u64,
        align: u64,
        rule: Expect<FreeError>,
    ) -> Step {
        let Expect::Fail(allowed) = rule else {
            unreachable!("only failing rules reach here")
        };
        match self.alloc.free(block, size, align) {
            Err(error) if allowed.contains(&error) => self.checked(),
            Err(error) => Err(format!(
                "{what} of {block} failed with {error:?}, expected one of {allowed:?}"
            )),
            Ok(()) => Err(format!(
                "{what} of {block} was accepted, expected one of {allowed:?}"
            )),
        }
    }

    fn double_free(&mut self, pick: usize) -> Step {
        let rule = self.rules.double_free;
        if !self.rules.frees || rule == Expect::Skip {
            return self.skip();
        }
        match self.model.pick_freed(pick) {
            Some(old) if self.alloc.may_free_again(&old.block) => {
                self.expect_refused("double free", &old.block, old.requested, old.align, rule)
            }
            _ => self.skip(),
        }
    }

    fn foreign_free(&mut self, pick: usize) -> Step {
        let rule = self.rules.foreign_free;
        if !self.rules.frees || rule == Expect::Skip {
            return self.skip();
        }
        let unit = self.rules.unit;
        let addr = self.alloc.foreign_address(pick);
        let owned = self.alloc.owned();
        if owned
            .iter()
            .any(|&(s, e)| s < addr.saturating_add(unit) && addr < e)
        {
            return self.skip();
        }
        self.expect_refused(
            "free of a foreign address",
            &Block::phys(addr, unit),
            unit,
            unit,
            rule,
        )
    }

    fn misaligned_free(&mut self, pick: usize, offset: u64) -> Step {
        let rule = self.rules.misaligned_free;
        let unit = self.rules.unit;
        let Some(live) = self.model.pick(pick) else {
            return self.skip();
        };
        let units = live.requested / unit;
        if !self.rules.frees || rule == Expect::Skip || units < 2 {
            return self.skip();
        }
        let offset = unit * (1 + offset % (units - 1));
        if !self.alloc.may_free_inside(&live.block, offset) {
            return self.skip();
        }
        let inside = Block {
            addr: live.block.addr + offset,
            size: live.block.size - offset,
            // SAFETY: `offset` is below the block's size, so the pointer stays
            // inside the live block.
            ptr: live.block.ptr.map(|p| unsafe { p.add(offset as usize) }),
        };
        let size = live.requested - offset;
        self.expect_refused("free inside a live block", &inside, size, live.align, rule)
    }

    fn reserve(&mut self, at: u16, size: u64) -> Step {
        if !self.rules.reserves {
            return self.skip();
        }
        let owned = self.alloc.owned();
        let total: u64 = owned.iter().map(|(s, e)| e - s).sum();
        if total == 0 {
            return self.skip();
        }
        // Walk to the byte at fraction `at` of the owned memory.
        let mut target = (u128::from(total) * u128::from(at) / 65536) as u64;
        let unit = self.rules.unit.max(1);
        let (mut start, mut end) = (0, 0);
        for &(s, e) in &owned {
            if target < e - s {
                // Whole units: frame allocators reserve whole frames.
                (start, end) = (s + target / unit * unit, e);
                break;
            }
            target -= e - s;
        }
        if !self.rules.reserve_overlaps {
            end = self.model.free_until(start, end);
        }
        let len = size.min(end - start);
        if len == 0 {
            return self.skip();
        }
        match self.alloc.reserve(start, len) {
            Ok(()) => {
                self.model.reserve(start, start + len);
                self.summary.reservations += 1;
                Ok(())
            }
            Err(AllocError::TableFull) => self.skip(),
            Err(error) => Err(format!(
                "reservation of [{start:#x}, {:#x}) failed with {error:?}",
                start + len
            )),
        }
    }

    fn check_state(&self) -> Step {
        if let Some(used) = self.alloc.used_bytes() {
            self.model.check_usage(used)?;
        }
        self.alloc.check(&self.model)
    }

    fn finish(&mut self) -> Step {
        if self.rules.frees {
            while let Some(live) = self.model.pick(0) {
                self.free(&live)?;
                self.check_state()?;
            }
            self.alloc.shrink();
            self.check_state()?;
        }
        self.alloc.finish(&self.model)
    }
}

/// The first address in `owned` where `size` bytes aligned to `align` overlap
/// nothing live or reserved: proof that an out-of-memory answer was wrong.
pub fn find_gap(model: &Model, owned: &[Span], size: u64, align: u64) -> Option<u64> {
    let align = align.max(1);
    let mut taken: Vec<Span> = model
        .live()
        .map(|l| (l.block.addr, l.block.end()))
        .chain(model.reserved().iter().copied())
        .collect();
    taken.sort_unstable();
    for &(s, e) in owned {
        let mut candidate = s.checked_next_multiple_of(align)?;
        for &(ts, te) in &taken {
            if te <= candidate {
                continue;
            }
            if ts >= candidate.checked_add(size)? {
                break;
            }
            candidate = te.checked_next_multiple_of(align)?;
        }
        if candidate.checked_add(size)? <= e {
            return Some(candidate);
        }
    }
    None
}

/// The fill byte of the block with id `id`: consecutive ids differ, so two
/// blocks that overlap show it where one overwrote the other.
fn fill_byte(id: u64) -> u8 {
    (id % 251) as u8 + 1
}

/// The stamp at both ends of a block: its id, so a shifted copy or a block
/// overlapping at its edge is noticed even where fill bytes coincide.
fn stamp(id: u64) -> [u8; 8] {
    id.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes()
}

/// The expected contents of the first `len` bytes of a block of `original_len`
/// bytes with id `id`, at `offset`: stamps at both ends, fill in between.
fn expected(id: u64, offset: u64, original_len: u64) -> u8 {
    let stamp = stamp(id);
    if offset < 8 {
        stamp[offset as usize]
    } else if original_len >= 16 && offset >= original_len - 8 {
        stamp[(offset - (original_len - 8)) as usize]
    } else {
        fill_byte(id)
    }
}

fn fill(block: &Block, len: u64, id: u64) {
    let Some(ptr) = block.ptr else { return };
    // SAFETY: the allocator handed out `block` for at least `len` bytes
    // (checked by the model), readable and writable, and nothing else uses it
    // while it is live.
    let bytes = unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr(), len as usize) };
    // `fill` is a memset even in unoptimised builds: megabyte blocks stay cheap.
    bytes.fill(fill_byte(id));
    let head = bytes.len().min(8);
    bytes[..head].copy_from_slice(&stamp(id)[..head]);
    if len >= 16 {
        let tail = bytes.len() - 8;
        bytes[tail..].copy_from_slice(&stamp(id));
    }
}

/// Checks the first `len` bytes of `block` hold what [`fill`] wrote there for
/// a block of `original_len` bytes with id `id`.
fn verify(block: &Block, len: u64, id: u64, original_len: u64) -> Step {
    let Some(ptr) = block.ptr else { return Ok(()) };
    debug_assert!(len <= original_len);
    // SAFETY: as in `fill`: the block is live and at least `len` bytes long.
    let bytes = unsafe { std::slice::from_raw_parts(ptr.as_ptr(), len as usize) };
    const CHUNK: usize = 4096;
    let filled = [fill_byte(id); CHUNK];
    // Compare chunk by chunk against a filled buffer (a memcmp), and only
    // look byte by byte where a chunk differs or near the stamps.
    let mut offset = 0;
    while offset < bytes.len() {
        let end = (offset + CHUNK).min(bytes.len());
        let plain = offset >= 8 && (end as u64) + 8 <= original_len;
        if !plain || bytes[offset..end] != filled[..end - offset] {
            for (i, &byte) in bytes[offset..end].iter().enumerate() {
                let at = (offset + i) as u64;
                let want = expected(id, at, original_len);
                if byte != want {
                    return Err(format!(
                        "contents of block {block} (id {id}) changed at offset {at:#x}: \
                         {byte:#04x} instead of {want:#04x} (overlap with another block, \
                         or the allocator wrote into a live block)"
                    ));
                }
            }
        }
        offset = end;
    }
    Ok(())
}
