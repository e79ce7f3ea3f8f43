//! The reference model: which ranges are live, and the rules every allocator obeys.
//!
//! The model knows nothing about how an allocator works. It keeps the set of
//! live ranges (address, size, alignment) and checks each answer the
//! allocator gives against four promises:
//!
//! 1. a new range overlaps no live range (nor a boot-time reservation);
//! 2. it lies inside memory the allocator owns at that moment;
//! 3. its address is a multiple of the requested alignment and it is at least
//!    as long as requested;
//! 4. a free names a live range, and after every step the allocator's own
//!    count of bytes in use equals what the model says is live.

use std::collections::BTreeMap;
use std::fmt;
use std::ptr::NonNull;

/// Half-open address range `[start, end)`.
pub type Span = (u64, u64);

/// One allocation as an allocator handed it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// First address (physical for frame allocators, virtual for byte heaps).
    pub addr: u64,
    /// Bytes the caller may use; at least what was requested.
    pub size: u64,
    /// A pointer to `addr` carrying its provenance, when the memory may be
    /// read and written (byte heaps); `None` for physical frames.
    pub ptr: Option<NonNull<u8>>,
}

impl Block {
    /// A block of physical memory that is never dereferenced.
    pub const fn phys(addr: u64, size: u64) -> Self {
        Self {
            addr,
            size,
            ptr: None,
        }
    }

    /// A block of host memory the harness may write.
    pub fn host(ptr: NonNull<u8>, size: u64) -> Self {
        Self {
            addr: ptr.as_ptr() as u64,
            size,
            ptr: Some(ptr),
        }
    }

    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.addr.saturating_add(self.size)
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.addr, self.end())
    }
}

/// A range the model believes is allocated.
#[derive(Clone, Copy, Debug)]
pub struct Live {
    /// What the allocator returned.
    pub block: Block,
    /// The size the caller asked for (the pattern covers these bytes).
    pub requested: u64,
    /// The alignment the caller asked for.
    pub align: u64,
    /// Bytes this allocation counts for in the allocator's usage figure.
    pub charged: u64,
    /// Sequence number, seeds the block's contents pattern.
    pub id: u64,
}

/// How many recently freed blocks the model remembers for double-free probes.
const FREED_HISTORY_LEN: usize = 64;

/// The set of live ranges and the checks against it.
#[derive(Debug, Default)]
pub struct Model {
    live: BTreeMap<u64, Live>,
    /// Addresses of `live`, in no particular order, so that "the i-th live
    /// block" is O(1) to pick.
    order: Vec<u64>,
    /// Recently freed blocks, newest last.
    freed: Vec<Live>,
    /// Boot-time reservations, merged and sorted.
    reserved: Vec<Span>,
    charged: u64,
    next_id: u64,
}

impl Model {
    /// An empty model.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of live blocks.
    pub fn live_count(&self) -> usize {
        self.order.len()
    }

    /// Sum of the `charged` bytes of every live block.
    pub fn charged_bytes(&self) -> u64 {
        self.charged
    }

    /// The live blocks in address order.
    pub fn live(&self) -> impl Iterator<Item = &Live> {
        self.live.values()
    }

    /// Boot-time reservations recorded with [`reserve`](Self::reserve), merged.
    pub fn reserved(&self) -> &[Span] {
        &self.reserved
    }

    /// The `pick`-th live block (modulo the number live), if any is live.
    pub fn pick(&self, pick: usize) -> Option<Live> {
        if self.order.is_empty() {
            return None;
        }
        let addr = self.order[pick % self.order.len()];
        self.live.get(&addr).copied()
    }

    /// The `pick`-th remembered freed block that overlaps nothing live or
    /// reserved now, so freeing it again is a double free any allocator can
    /// recognise.
    pub fn pick_freed(&self, pick: usize) -> Option<Live> {
        let candidates: Vec<&Live> = self
            .freed
            .iter()
            .filter(|l| !self.is_taken(l.block.addr, l.block.end()))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        Some(*candidates[pick % candidates.len()])
    }

    /// Checks a block the allocator just returned for a request of `requested`
    /// bytes aligned to `align`, against the memory it owns (`owned`, sorted or
    /// not).
    ///
    /// # Errors
    /// A message naming the broken promise.
    pub fn check_new(
        &self,
        block: &Block,
        requested: u64,
        align: u64,
        owned: &[Span],
    ) -> Result<(), String> {
        if block.size < requested {
            return Err(format!(
                "block {block} is {:#x} bytes, shorter than the {requested:#x} requested",
                block.size
            ));
        }
        if align != 0 && block.addr % align != 0 {
            return Err(format!("block {block} is not aligned to {align:#x}"));
        }
        let Some(end) = block.addr.checked_add(requested) else {
            return Err(format!("block {block} wraps around the address space"));
        };
        if requested > 0 && !owned.iter().any(|&(s, e)| s <= block.addr && end <= e) {
            return Err(format!(
                "block {block} (first {requested:#x} bytes) is not inside memory the allocator owns: {}",
                spans(owned)
            ));
        }
        if block.size > 0 {
            if let Some(other) = self.first_overlap(block.addr, block.end()) {
                return Err(format!(
                    "block {block} overlaps live block {} (id {}, asked {:#x} bytes aligned {:#x})",
                    other.block, other.id, other.requested, other.align
                ));
            }
            if let Some(&(s, e)) = self
                .reserved
                .iter()
                .find(|&&(s, e)| s < block.end() && block.addr < e)
            {
                return Err(format!(
                    "block {block} overlaps the reservation [{s:#x}, {e:#x})"
                ));
            }
        }
        Ok(())
    }

    /// Records a block that passed [`check_new`](Self::check_new); returns its id.
    pub fn insert(&mut self, block: Block, requested: u64, align: u64, charged: u64) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let live = Live {
            block,
            requested,
            align,
            charged,
            id,
        };
        let previous = self.live.insert(block.addr, live);
        assert!(
            previous.is_none(),
            "model: two live blocks at {:#x} (zero-size blocks must not be recorded)",
            block.addr
        );
        self.order.push(block.addr);
        self.charged += charged;
        id
    }

    /// Forgets the live block at `addr` (a successful free) and returns it.
    ///
    /// # Panics
    /// When no block is live at `addr`: the driver only frees what it picked.
    pub fn remove(&mut self, addr: u64) -> Live {
        let live = self
            .live
            .remove(&addr)
            .unwrap_or_else(|| panic!("model: no live block at {addr:#x}"));
        let index = self
            .order
            .iter()
            .position(|&a| a == addr)
            .expect("model: order and live disagree");
        self.order.swap_remove(index);
        self.charged -= live.charged;
        if self.freed.len() == FREED_HISTORY_LEN {
            self.freed.remove(0);
        }
        self.freed.push(live);
        live
    }

    /// Records a boot-time reservation `[start, end)`, merged with those
    /// before it. New blocks must stay clear of it.
    pub fn reserve(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        self.reserved.push((start, end));
        self.reserved.sort_unstable();
        let mut merged: Vec<Span> = Vec::with_capacity(self.reserved.len());
        for &(s, e) in &self.reserved {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.reserved = merged;
    }

    /// Whether `[start, end)` overlaps a live block or reservation.
    pub fn is_taken(&self, start: u64, end: u64) -> bool {
        self.first_overlap(start, end).is_some()
            || self.reserved.iter().any(|&(s, e)| s < end && start < e)
    }

    /// The end of the free gap starting at `start`, at most `limit`: the first
    /// byte in `[start, limit)` that a live block or reservation covers, or
    /// `limit`; `start` itself when that byte is taken.
    pub fn free_until(&self, start: u64, limit: u64) -> u64 {
        if start >= limit {
            return start;
        }
        let live = self
            .first_overlap(start, limit)
            .map_or(limit, |first| first.block.addr.max(start));
        let reserved = self
            .reserved
            .iter()
            .find(|&&(s, e)| s < limit && start < e)
            .map_or(limit, |&(s, _)| s.max(start));
        live.min(reserved)
    }

    /// Checks the allocator's usage figure against the model: `used` bytes in
    /// use by the allocator's own account.
    ///
    /// # Errors
    /// A message with both figures.
    pub fn check_usage(&self, used: u64) -> Result<(), String> {
        if used == self.charged {
            Ok(())
        } else {
            Err(format!(
                "allocator reports {used:#x} bytes in use, the model counts {:#x} in {} live blocks",
                self.charged,
                self.live_count()
            ))
        }
    }

    /// The live block with the lowest address that overlaps `[start, end)`.
    fn first_overlap(&self, start: u64, end: u64) -> Option<&Live> {
        if start >= end {
            return None;
        }
        // The block starting at or before `start` may reach into the range;
        // otherwise the first block starting inside it overlaps.
        if let Some((_, before)) = self.live.range(..=start).next_back() {
            if before.block.end() > start && before.block.size > 0 {
                return Some(before);
            }
        }
        self.live
            .range(start..end)
            .map(|(_, live)| live)
            .find(|live| live.block.size > 0)
    }
}

/// Formats a list of spans for messages.
pub fn spans(list: &[Span]) -> String {
    let parts: Vec<String> = list
        .iter()
        .take(8)
        .map(|(s, e)| format!("[{s:#x}, {e:#x})"))
        .collect();
    let more = list.len().saturating_sub(8);
    if more > 0 {
        format!("{} and {more} more", parts.join(" "))
    } else if parts.is_empty() {
        "nothing".to_owned()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNED: &[Span] = &[(0x1000, 0x9000)];

    #[test]
    fn overlap_with_a_live_block_is_reported() {
        let mut model = Model::new();
        model.insert(Block::phys(0x2000, 0x2000), 0x2000, 0x1000, 0x2000);
        let err = model
            .check_new(&Block::phys(0x3000, 0x1000), 0x1000, 0x1000, OWNED)
            .unwrap_err();
        assert!(err.contains("overlaps live block"), "{err}");
        let err = model
            .check_new(&Block::phys(0x1000, 0x2000), 0x2000, 0x1000, OWNED)
            .unwrap_err();
        assert!(err.contains("overlaps live block"), "{err}");
        model
            .check_new(&Block::phys(0x4000, 0x1000), 0x1000, 0x1000, OWNED)
            .unwrap();
    }

    #[test]
    fn blocks_outside_owned_memory_or_misaligned_are_reported() {
        let model = Model::new();
        let outside = model.check_new(&Block::phys(0x8800, 0x1000), 0x1000, 1, OWNED);
        assert!(outside.unwrap_err().contains("not inside"));
        let misaligned = model.check_new(&Block::phys(0x1800, 0x800), 0x800, 0x1000, OWNED);
        assert!(misaligned.unwrap_err().contains("not aligned"));
        let short = model.check_new(&Block::phys(0x1000, 0x800), 0x1000, 1, OWNED);
        assert!(short.unwrap_err().contains("shorter"));
    }

    #[test]
    fn reservations_merge_and_exclude_new_blocks() {
        let mut model = Model::new();
        model.reserve(0x2000, 0x3000);
        model.reserve(0x2800, 0x4000);
        model.reserve(0x6000, 0x7000);
        assert_eq!(model.reserved(), &[(0x2000, 0x4000), (0x6000, 0x7000)]);
        let err = model.check_new(&Block::phys(0x3000, 0x1000), 0x1000, 1, OWNED);
        assert!(err.unwrap_err().contains("reservation"));
        assert!(model.is_taken(0x6fff, 0x7001));
        assert!(!model.is_taken(0x4000, 0x6000));
    }

    #[test]
    fn free_gaps_end_at_the_first_live_or_reserved_byte() {
        let mut model = Model::new();
        model.insert(Block::phys(0x4000, 0x1000), 0x1000, 1, 0x1000);
        model.reserve(0x6000, 0x7000);
        assert_eq!(model.free_until(0x1000, 0x9000), 0x4000);
        assert_eq!(model.free_until(0x4800, 0x9000), 0x4800);
        assert_eq!(model.free_until(0x5000, 0x9000), 0x6000);
        assert_eq!(model.free_until(0x7000, 0x8000), 0x8000);
    }

    #[test]
    fn usage_must_match_charged_bytes_and_freed_blocks_are_remembered() {
        let mut model = Model::new();
        model.insert(Block::phys(0x1000, 0x1000), 0x1000, 1, 0x1000);
        model.insert(Block::phys(0x3000, 0x2000), 0x2000, 1, 0x2000);
        assert!(model.check_usage(0x3000).is_ok());
        assert!(model.check_usage(0x2000).is_err());
        let live = model.remove(0x3000);
        assert_eq!(live.requested, 0x2000);
        assert_eq!(model.charged_bytes(), 0x1000);
        assert_eq!(
            model.pick_freed(7).map(|l| l.block),
            Some(Block::phys(0x3000, 0x2000))
        );
        // Once part of it is live again, it is no longer a clean double free.
        model.insert(Block::phys(0x4000, 0x1000), 0x1000, 1, 0x1000);
        assert!(model.pick_freed(0).is_none());
    }
}
