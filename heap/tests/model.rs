//! Random allocate / reallocate / free against a model of the live blocks:
//! sizes from 1 byte to 1 MiB, alignments up to 4 KiB. Checks that blocks
//! never overlap, keep their alignment, keep their contents across
//! reallocation, and that every page goes back after all frees and `shrink`.

use core::alloc::Layout;
use core::ptr::NonNull;

use kalloc_api::ThreadCpuId;
use kalloc_heap::{LockedHeap, PerCpuHeap};
use kalloc_slab::HostPages;

/// The operations both heap fronts offer.
trait ModelHeap {
    fn alloc(&self, layout: Layout) -> Option<NonNull<u8>>;
    /// # Safety
    /// `ptr` is live with `layout`.
    unsafe fn realloc(
        &self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>>;
    /// # Safety
    /// `ptr` is live with `layout`.
    unsafe fn free(&self, ptr: NonNull<u8>, layout: Layout);
    fn shrink(&self);
    fn bytes_in_use(&self) -> usize;
    /// Whether small blocks count their requested size (else their class size).
    const EXACT_SMALL_BYTES: bool;
}

impl ModelHeap for LockedHeap<&HostPages> {
    fn alloc(&self, layout: Layout) -> Option<NonNull<u8>> {
        self.allocate(layout).ok()
    }
    unsafe fn realloc(
        &self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        // SAFETY: the caller's promise.
        unsafe { self.reallocate(ptr, layout, new_size) }.ok()
    }
    unsafe fn free(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's promise.
        unsafe { self.deallocate(ptr, layout) }.unwrap();
    }
    fn shrink(&self) {
        LockedHeap::shrink(self);
    }
    fn bytes_in_use(&self) -> usize {
        self.stats().total.bytes_in_use
    }
    const EXACT_SMALL_BYTES: bool = true;
}

impl ModelHeap for PerCpuHeap<&HostPages, ThreadCpuId, 4> {
    fn alloc(&self, layout: Layout) -> Option<NonNull<u8>> {
        self.allocate(layout).ok()
    }
    unsafe fn realloc(
        &self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Option<NonNull<u8>> {
        // SAFETY: the caller's promise.
        unsafe { self.reallocate(ptr, layout, new_size) }.ok()
    }
    unsafe fn free(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's promise.
        unsafe { self.deallocate(ptr, layout) }.unwrap();
    }
    fn shrink(&self) {
        PerCpuHeap::shrink(self);
    }
    fn bytes_in_use(&self) -> usize {
        self.shrink();
        self.stats().total.bytes_in_use
    }
    const EXACT_SMALL_BYTES: bool = false;
}

struct Live {
    ptr: NonNull<u8>,
    layout: Layout,
    fill: u8,
}

fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A size from 1 byte to 1 MiB (16 KiB under miri, where every byte written
/// and checked costs), spread evenly over the powers of two.
fn random_size(state: &mut u64) -> usize {
    let max_bits = if cfg!(miri) { 14 } else { 20 };
    let bits = next(state) % max_bits + 1;
    (next(state) as usize & ((1 << bits) - 1)) + 1
}

fn check_fill(block: &Live) {
    // SAFETY: the block is live and `layout.size()` bytes long.
    let bytes = unsafe { core::slice::from_raw_parts(block.ptr.as_ptr(), block.layout.size()) };
    assert!(bytes.iter().all(|b| *b == block.fill), "contents lost");
}

fn run_model<H: ModelHeap>(heap: &H, pages: &HostPages, seed: u64) {
    let steps = if cfg!(miri) { 200 } else { 20_000 };
    let mut state = seed;
    let mut live: Vec<Live> = Vec::new();
    for step in 0..steps {
        let choice = next(&mut state) % 8;
        if live.is_empty() || choice < 4 {
            let size = random_size(&mut state);
            let align = 1 << (next(&mut state) % 13);
            let layout = Layout::from_size_align(size, align).unwrap();
            let Some(ptr) = heap.alloc(layout) else {
                panic!("host memory ran out at step {step}");
            };
            assert_eq!(ptr.as_ptr() as usize % align, 0, "alignment");
            let start = ptr.as_ptr() as usize;
            for other in &live {
                let o = other.ptr.as_ptr() as usize;
                assert!(
                    start + size <= o || o + other.layout.size() <= start,
                    "overlap"
                );
            }
            let fill = step as u8;
            // SAFETY: the block is ours and `size` bytes long.
            unsafe { ptr.as_ptr().write_bytes(fill, size) };
            live.push(Live { ptr, layout, fill });
        } else if choice < 6 {
            let index = next(&mut state) as usize % live.len();
            let block = &mut live[index];
            check_fill(block);
            let new_size = random_size(&mut state);
            // SAFETY: the block is live with its layout.
            let ptr = unsafe { heap.realloc(block.ptr, block.layout, new_size) }.expect("realloc");
            assert_eq!(
                ptr.as_ptr() as usize % block.layout.align(),
                0,
                "realloc alignment"
            );
            let kept = block.layout.size().min(new_size);
            block.ptr = ptr;
            block.layout = Layout::from_size_align(new_size, block.layout.align()).unwrap();
            // SAFETY: the moved block is `new_size` bytes long.
            let bytes = unsafe { core::slice::from_raw_parts(ptr.as_ptr(), kept) };
            assert!(
                bytes.iter().all(|b| *b == block.fill),
                "realloc lost contents"
            );
            // SAFETY: as above.
            unsafe { ptr.as_ptr().write_bytes(block.fill, new_size) };
        } else {
            let block = live.swap_remove(next(&mut state) as usize % live.len());
            check_fill(&block);
            // SAFETY: live, freed once.
            unsafe { heap.free(block.ptr, block.layout) };
        }
    }
    let expected: usize = live.iter().map(|block| block.layout.size()).sum();
    if H::EXACT_SMALL_BYTES {
        assert_eq!(heap.bytes_in_use(), expected);
    } else {
        // Small blocks count whole class objects, at most a fifth more (or 7 bytes).
        let in_use = heap.bytes_in_use();
        assert!(in_use >= expected && in_use <= expected + expected / 4 + 8 * live.len());
    }
    for block in live.drain(..) {
        check_fill(&block);
        // SAFETY: live, freed once.
        unsafe { heap.free(block.ptr, block.layout) };
    }
    heap.shrink();
    assert_eq!(heap.bytes_in_use(), 0);
    assert_eq!(pages.pages_out(), 0, "every page back after shrink");
}

#[test]
fn locked_heap_matches_the_model() {
    let pages = HostPages::new();
    let heap = LockedHeap::new();
    heap.init(&pages).unwrap();
    run_model(&heap, &pages, 0x1234_5678_9abc_def1);
}

#[test]
fn per_cpu_heap_matches_the_model() {
    let pages = HostPages::new();
    let heap = PerCpuHeap::new(ThreadCpuId).unwrap();
    heap.init(&pages).unwrap();
    run_model(&heap, &pages, 0x0fed_cba9_8765_4321);
}

#[test]
fn per_cpu_heap_matches_the_model_on_several_threads() {
    let pages = HostPages::new();
    let heap: PerCpuHeap<&HostPages, ThreadCpuId, 4> = PerCpuHeap::new(ThreadCpuId).unwrap();
    heap.init(&pages).unwrap();
    let threads: u64 = if cfg!(miri) { 2 } else { 4 };
    std::thread::scope(|scope| {
        for seed in 1..=threads {
            let heap = &heap;
            scope.spawn(move || {
                let steps = if cfg!(miri) { 100 } else { 5_000 };
                let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let mut live: Vec<Live> = Vec::new();
                for step in 0..steps {
                    if live.is_empty() || next(&mut state) % 2 == 0 {
                        let size = random_size(&mut state) % 4096 + 1;
                        let layout = Layout::from_size_align(size, 8).unwrap();
                        let ptr = heap.alloc(layout).unwrap();
                        // SAFETY: ours, `size` bytes.
                        unsafe { ptr.as_ptr().write_bytes(step as u8, size) };
                        live.push(Live {
                            ptr,
                            layout,
                            fill: step as u8,
                        });
                    } else {
                        let block = live.swap_remove(next(&mut state) as usize % live.len());
                        check_fill(&block);
                        // SAFETY: live, freed once.
                        unsafe { heap.free(block.ptr, block.layout) };
                    }
                }
                for block in live {
                    check_fill(&block);
                    // SAFETY: live, freed once.
                    unsafe { heap.free(block.ptr, block.layout) };
                }
            });
        }
    });
    heap.shrink();
    assert_eq!(heap.stats().total.bytes_in_use, 0);
    assert_eq!(pages.pages_out(), 0);
}
