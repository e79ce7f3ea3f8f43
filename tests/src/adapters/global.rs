//! One adapter for every [`GlobalAlloc`] heap: the bump arena, the buddy
//! heap, the kernel heap and its fronts.

use std::alloc::{GlobalAlloc, Layout};
use std::ptr::NonNull;

use kalloc_api::{AllocError, FreeError};

use crate::adapter::{ModelAllocator, Rules};
use crate::model::{Block, Model, Span};

/// A hook reading something from the heap.
pub type Hook<'a, G, T> = Box<dyn Fn(&G) -> T + 'a>;
/// A hook checking the heap against the model.
pub type ModelCheck<'a, G> = Box<dyn Fn(&G, &Model) -> Result<(), String> + 'a>;

/// What the adapter needs to know about a heap besides `GlobalAlloc`.
pub struct HeapHooks<'a, G> {
    /// The memory the heap owns now (its regions, or the pages it holds).
    pub owned: Hook<'a, G, Vec<Span>>,
    /// Bytes in use by the heap's own account, when the model can predict it.
    pub used_bytes: Option<Hook<'a, G, u64>>,
    /// What a block of `(requested, align)` counts for in `used_bytes`.
    pub charge: Box<dyn Fn(u64, u64) -> u64 + 'a>,
    /// Gives cached memory back.
    pub shrink: Option<Hook<'a, G, ()>>,
    /// The heap's own consistency check.
    pub check: Option<ModelCheck<'a, G>>,
    /// The leak check after everything was freed and shrunk.
    pub finish: Option<Hook<'a, G, Result<(), String>>>,
}

impl<G> HeapHooks<'_, G> {
    /// Hooks for a heap over fixed `owned` spans that reports no usage.
    pub fn fixed(owned: Vec<Span>) -> Self {
        Self {
            owned: Box::new(move |_| owned.clone()),
            used_bytes: None,
            charge: Box::new(|requested, _| requested),
            shrink: None,
            check: None,
            finish: None,
        }
    }
}

/// Drives a [`GlobalAlloc`]: null reads as out of memory; frees cannot fail.
pub struct GlobalAdapter<'a, G> {
    heap: G,
    hooks: HeapHooks<'a, G>,
    rules: Rules,
}

impl<'a, G: GlobalAlloc> GlobalAdapter<'a, G> {
    /// Drives `heap` with `hooks`.
    pub fn new(heap: G, hooks: HeapHooks<'a, G>) -> Self {
        Self {
            heap,
            hooks,
            rules: Rules::UNCHECKED_HEAP,
        }
    }

    /// Replaces the rules.
    pub fn with_rules(mut self, rules: Rules) -> Self {
        self.rules = rules;
        self
    }

    /// The heap.
    pub fn heap(&self) -> &G {
        &self.heap
    }
}

/// The layout of a request, or the error a checked allocator would give.
fn layout(size: u64, align: u64) -> Result<Layout, AllocError> {
    let size = usize::try_from(size).map_err(|_| AllocError::Overflow)?;
    let align = usize::try_from(align).map_err(|_| AllocError::BadAlignment)?;
    Layout::from_size_align(size, align).map_err(|_| AllocError::Overflow)
}

fn host_block(ptr: *mut u8, size: u64) -> Result<Block, AllocError> {
    NonNull::new(ptr)
        .map(|p| Block::host(p, size))
        .ok_or(AllocError::OutOfMemory)
}

impl<G: GlobalAlloc> ModelAllocator for GlobalAdapter<'_, G> {
    fn rules(&self) -> Rules {
        self.rules
    }

    fn owned(&self) -> Vec<Span> {
        (self.hooks.owned)(&self.heap)
    }

    fn allocate(&mut self, size: u64, align: u64) -> Result<Block, AllocError> {
        // A request `Layout` cannot express (past isize::MAX) is refused here,
        // as `alloc` would never see it.
        let layout = layout(size, align)?;
        if layout.size() == 0 {
            // Zero-size `GlobalAlloc::alloc` is undefined; the rules skip it.
            return Err(AllocError::ZeroSize);
        }
        // SAFETY: the layout has a non-zero size.
        host_block(unsafe { self.heap.alloc(layout) }, size)
    }

    fn free(&mut self, block: &Block, size: u64, align: u64) -> Result<(), FreeError> {
        let layout = layout(size, align).map_err(|_| FreeError::SizeMismatch)?;
        let ptr = block.ptr.ok_or(FreeError::NotOwned)?;
        // SAFETY: the driver frees only live blocks of this heap with the
        // layout they were allocated with (hostile frees are skipped by the rules).
        unsafe { self.heap.dealloc(ptr.as_ptr(), layout) };
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
        layout(new_size, align)?;
        let ptr = block.ptr.ok_or(AllocError::OutOfMemory)?;
        let new_size_usize = usize::try_from(new_size).map_err(|_| AllocError::Overflow)?;
        // SAFETY: `ptr` is a live block of this heap allocated with `layout`;
        // the new size is non-zero (sizes come from a profile starting at 1) and fits a layout with the same alignment.
        let moved = unsafe { self.heap.realloc(ptr.as_ptr(), old, new_size_usize) };
        host_block(moved, new_size)
    }

    fn shrink(&mut self) {
        if let Some(shrink) = &self.hooks.shrink {
            shrink(&self.heap);
        }
    }

    fn charge(&self, _block: &Block, requested: u64, align: u64) -> u64 {
        (self.hooks.charge)(requested, align)
    }

    fn used_bytes(&self) -> Option<u64> {
        self.hooks.used_bytes.as_ref().map(|used| used(&self.heap))
    }

    fn check(&self, model: &Model) -> Result<(), String> {
        self.hooks
            .check
            .as_ref()
            .map_or(Ok(()), |check| check(&self.heap, model))
    }

    fn finish(&mut self, _model: &Model) -> Result<(), String> {
        self.hooks
            .finish
            .as_ref()
            .map_or(Ok(()), |finish| finish(&self.heap))
    }
}
