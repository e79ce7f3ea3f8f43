extern crate std;

use core::alloc::Layout;
use core::ptr::NonNull;
use std::sync::mpsc;
use std::vec::Vec;

use kalloc_api::{FreeError, PinnedCpu};

use super::PinnedPerCpuHeap;
use kalloc_slab::HostPages;

type TestHeap<'p> = PinnedPerCpuHeap<&'p HostPages, 2>;

fn cpu(index: usize) -> PinnedCpu {
    // SAFETY: each test's heap is used by one thread per CPU index.
    unsafe { PinnedCpu::new(index) }
}

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

/// Shrinks on every CPU: every page must be back.
fn shrink_everywhere(heap: &TestHeap<'_>, pages: &HostPages) {
    for index in 0..2 {
        heap.shrink(&cpu(index));
    }
    assert_eq!(heap.stats().total.bytes_in_use, 0);
    assert_eq!(pages.pages_out(), 0, "every page back");
}

#[test]
fn every_path_round_trips_across_cpus_and_pages_go_back() {
    let pages = HostPages::new();
    let heap: TestHeap<'_> = PinnedPerCpuHeap::with_pages(&pages).unwrap();
    let (zero, one) = (cpu(0), cpu(1));
    let layouts = [
        layout(1, 1),
        layout(24, 8),
        layout(1000, 64),
        layout(5000, 16),
        layout(60_000, 4096),
        layout(200_000, 8),
        layout(10, 16384),
    ];
    let blocks: Vec<_> = layouts
        .iter()
        .map(|l| (heap.allocate(&zero, *l).unwrap(), *l))
        .collect();
    for (ptr, l) in &blocks {
        assert_eq!(ptr.as_ptr() as usize % l.align(), 0);
        // SAFETY: the block is ours and this long.
        unsafe { ptr.as_ptr().write_bytes(0x5a, l.size()) };
    }
    // Small blocks count as their class's size.
    let requested: usize = layouts.iter().map(|l| l.size()).sum();
    let in_use = heap.stats().total.bytes_in_use;
    assert!((requested..requested + 64).contains(&in_use), "{in_use}");
    for (ptr, l) in blocks {
        // SAFETY: live, freed once, on the other CPU.
        unsafe { heap.deallocate(&one, ptr, l) }.unwrap();
    }
    shrink_everywhere(&heap, &pages);
}

#[test]
fn reallocation_keeps_contents_and_stays_in_place_within_a_class() {
    let pages = HostPages::new();
    let heap: TestHeap<'_> = PinnedPerCpuHeap::with_pages(&pages).unwrap();
    let zero = cpu(0);
    let small = layout(100, 8);
    let block = heap.allocate(&zero, small).unwrap();
    // SAFETY: ours, 100 bytes.
    unsafe { block.as_ptr().write_bytes(7, 100) };
    // SAFETY: live with `small`; 104 bytes fall in the same class.
    let same = unsafe { heap.reallocate(&zero, block, small, 104) }.unwrap();
    assert_eq!(same, block);
    // SAFETY: live with 104 bytes; moved to a mid-size block.
    let grown = unsafe { heap.reallocate(&zero, same, layout(104, 8), 20_000) }.unwrap();
    // SAFETY: the block is live and at least 100 bytes long.
    let kept = unsafe { core::slice::from_raw_parts(grown.as_ptr(), 100) };
    assert!(
        kept.iter().all(|b| *b == 7),
        "the first 100 bytes were copied"
    );
    // SAFETY: live with this layout, freed once.
    unsafe { heap.deallocate(&zero, grown, layout(20_000, 8)) }.unwrap();
    shrink_everywhere(&heap, &pages);
}

#[test]
fn bad_frees_are_reported_and_nothing_is_lost() {
    let pages = HostPages::new();
    let heap: TestHeap<'_> = PinnedPerCpuHeap::with_pages(&pages).unwrap();
    let zero = cpu(0);
    let small = layout(48, 16);
    let block = heap.allocate(&zero, small).unwrap();
    // SAFETY: one byte into the block: refused before any use.
    let misaligned = unsafe { heap.deallocate(&zero, block.byte_add(1), small) };
    assert_eq!(misaligned, Err(FreeError::Misaligned));
    // SAFETY: live, freed once.
    unsafe { heap.deallocate(&zero, block, small) }.unwrap();
    // SAFETY: the slab is still held; the second free is refused.
    let again = unsafe { heap.deallocate(&zero, block, small) };
    assert_eq!(again, Err(FreeError::DoubleFree));
    // The mid-size path checks the alignment as well.
    let mid = layout(3000, 64);
    let block = heap.allocate(&zero, mid).unwrap();
    // SAFETY: one byte into the block: refused before any use.
    let misaligned = unsafe { heap.deallocate(&zero, block.byte_add(1), mid) };
    assert_eq!(misaligned, Err(FreeError::Misaligned));
    assert_eq!(heap.stats().total.bytes_in_use, mid.size());
    // SAFETY: live, freed once.
    unsafe { heap.deallocate(&zero, block, mid) }.unwrap();
    assert_eq!(heap.stats().total.bytes_in_use, 0);
    // The block merged into the free gap its alignment left before it; its
    // own header still reports the second free (the chunk is kept: it is
    // the heap's only one).
    // SAFETY: refused on the block's header, which still reads free.
    let again = unsafe { heap.deallocate(&zero, block, mid) };
    assert_eq!(again, Err(FreeError::DoubleFree));
    assert_eq!(heap.stats().total.bytes_in_use, 0);
    shrink_everywhere(&heap, &pages);
}

#[test]
fn exhaustion_flushes_the_failing_cpu_and_recovers() {
    let mut region = std::vec![0u128; 256 * 1024 / 16];
    let heap: PinnedPerCpuHeap<crate::NoPages, 2> = PinnedPerCpuHeap::new().unwrap();
    // SAFETY: the region outlives the heap and nothing else uses it.
    unsafe { heap.init_with_region(region.as_mut_ptr().cast(), 256 * 1024) }.unwrap();
    let zero = cpu(0);
    let small = layout(512, 8);
    let mut blocks = Vec::new();
    while let Ok(block) = heap.allocate(&zero, small) {
        blocks.push(block);
    }
    assert!(blocks.len() > 100, "{}", blocks.len());
    for block in blocks.drain(..) {
        // SAFETY: live, freed once.
        unsafe { heap.deallocate(&zero, block, small) }.unwrap();
    }
    // The freed blocks sit in CPU 0's magazines and the slabs; a mid-size
    // request finds no room until the failure path gives them back.
    let big = layout(100_000, 8);
    let block = heap
        .allocate(&zero, big)
        .expect("the out-of-memory path reclaims");
    // SAFETY: live, freed once.
    unsafe { heap.deallocate(&zero, block, big) }.unwrap();
    assert_eq!(heap.stats().total.bytes_in_use, 0);
}

/// A block moved to another thread, which then owns it alone.
struct Handed(NonNull<u8>, Layout);
// SAFETY: whoever holds a `Handed` owns the block alone.
unsafe impl Send for Handed {}

#[test]
fn threads_on_their_own_cpus_free_each_others_blocks() {
    let rounds = if cfg!(miri) { 40 } else { 4_000 };
    let pages = HostPages::new();
    let heap: TestHeap<'_> = PinnedPerCpuHeap::with_pages(&pages).unwrap();
    let (to_one, from_zero) = mpsc::channel::<Handed>();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let zero = cpu(0);
            for round in 0..rounds {
                let l = layout(8 + round % 2000, 8);
                let block = heap.allocate(&zero, l).unwrap();
                // SAFETY: ours until handed over.
                unsafe { block.cast::<usize>().write(round) };
                to_one.send(Handed(block, l)).unwrap();
            }
            drop(to_one);
            heap.shrink(&zero);
        });
        scope.spawn(|| {
            let one = cpu(1);
            for (expected, Handed(block, l)) in from_zero.into_iter().enumerate() {
                // SAFETY: handed over whole by CPU 0.
                assert_eq!(unsafe { block.cast::<usize>().read() }, expected);
                // SAFETY: live, freed once, here on CPU 1.
                unsafe { heap.deallocate(&one, block, l) }.unwrap();
            }
            heap.shrink(&one);
        });
    });
    shrink_everywhere(&heap, &pages);
}

#[test]
fn small_peak_is_at_least_the_most_in_use_at_once() {
    let pages = HostPages::new();
    let heap: TestHeap<'_> = PinnedPerCpuHeap::with_pages(&pages).unwrap();
    let zero = cpu(0);
    let l = layout(100, 8);
    let class = crate::small_class(100, 8).unwrap();
    let object_bytes = crate::size_class::class_bytes(class);
    let blocks: Vec<_> = (0..300).map(|_| heap.allocate(&zero, l).unwrap()).collect();
    for ptr in blocks {
        // SAFETY: live, freed once.
        unsafe { heap.deallocate(&zero, ptr, l) }.unwrap();
    }
    let stats = heap.stats();
    assert_eq!(stats.classes[class].objects_in_use, 0);
    assert!(stats.classes[class].peak_objects_in_use >= 300, "{stats:?}");
    assert!(stats.small.peak_bytes_in_use >= 300 * object_bytes);
    assert!(stats.total.peak_bytes_in_use >= stats.small.peak_bytes_in_use);
    shrink_everywhere(&heap, &pages);
}
