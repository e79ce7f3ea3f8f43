extern crate std;

use std::vec::Vec;

use kalloc_api::{AllocError, Frame, FrameAllocator, FrameRange, FreeError, ThreadCpuId};

use super::{PCP_BATCH_FRAMES, PCP_HIGH_FRAMES, PerCpuBuddy};
use crate::frame_buddy::BuddyFrameAllocator;
use crate::meta::FrameMeta;

const BASE_PFN: u64 = 0x8_0000;

fn storage(frames: usize) -> Vec<FrameMeta> {
    (0..frames).map(|_| FrameMeta::new()).collect()
}

fn allocator(meta: &mut [FrameMeta]) -> BuddyFrameAllocator<'_, 6> {
    let frames = meta.len();
    let mut buddy =
        BuddyFrameAllocator::<6>::new(Frame::from_number(BASE_PFN), frames, meta).unwrap();
    buddy
        .add_range(FrameRange::new(Frame::from_number(BASE_PFN), frames as u64))
        .unwrap();
    buddy
}

/// A CPU id the test can change between calls.
struct Switch(core::sync::atomic::AtomicUsize);

impl kalloc_api::CpuId for Switch {
    fn current_cpu(&self) -> usize {
        self.0.load(core::sync::atomic::Ordering::Relaxed)
    }
}

fn switch(cpu: usize) -> Switch {
    Switch(cpu.into())
}

fn set(front: &PerCpuBuddy<'_, Switch, 2, 6>, cpu: usize) {
    front
        .cpu
        .0
        .store(cpu, core::sync::atomic::Ordering::Relaxed);
}

#[test]
fn first_allocation_refills_a_batch() {
    let mut meta = storage(256);
    let front: PerCpuBuddy<'_, Switch, 2, 6> = PerCpuBuddy::new(allocator(&mut meta), switch(0));
    front.allocate_frame().unwrap();
    assert_eq!(front.cached_frames(), PCP_BATCH_FRAMES - 1);
    assert_eq!(front.free_frames(), 255);
    front
        .with_allocator(|buddy| buddy.check_invariants())
        .unwrap();
}

#[test]
fn frame_freed_on_another_cpu_is_reused_there() {
    let mut meta = storage(256);
    let front: PerCpuBuddy<'_, Switch, 2, 6> = PerCpuBuddy::new(allocator(&mut meta), switch(0));
    let frame = front.allocate_frame().unwrap();
    set(&front, 1);
    front.deallocate_frame(frame).unwrap();
    assert_eq!(front.allocate_frame().unwrap(), frame);
    front.deallocate_frame(frame).unwrap();
    assert_eq!(front.drain(), PCP_BATCH_FRAMES);
    assert_eq!(front.free_frames(), 256);
    front.with_allocator(|buddy| {
        buddy.check_invariants().unwrap();
        assert_eq!(buddy.largest_free_order(), Some(6));
    });
}

#[test]
fn double_free_across_cpus_is_reported() {
    let mut meta = storage(256);
    let front: PerCpuBuddy<'_, Switch, 2, 6> = PerCpuBuddy::new(allocator(&mut meta), switch(0));
    let frame = front.allocate_frame().unwrap();
    front.deallocate_frame(frame).unwrap();
    set(&front, 1);
    assert_eq!(front.deallocate_frame(frame), Err(FreeError::DoubleFree));
    front.drain();
    // Back in the allocator and merged: still a double free.
    assert_eq!(front.deallocate_frame(frame), Err(FreeError::DoubleFree));
    assert_eq!(front.free_frames(), 256);
    front
        .with_allocator(|buddy| buddy.check_invariants())
        .unwrap();
}

#[test]
fn bad_frees_change_nothing() {
    let mut meta = storage(256);
    let front: PerCpuBuddy<'_, Switch, 2, 6> = PerCpuBuddy::new(allocator(&mut meta), switch(0));
    let mut handle = &front;
    assert_eq!(
        front.deallocate_frame(Frame::from_number(3)),
        Err(FreeError::NotOwned)
    );
    let run = handle.allocate(4, 1).unwrap();
    let inside = Frame::from_number(run.start().number() + 1);
    assert_eq!(front.deallocate_frame(inside), Err(FreeError::Misaligned));
    assert_eq!(
        front.deallocate_frame(run.start()),
        Err(FreeError::SizeMismatch)
    );
    // A never-allocated frame, free in the allocator.
    let free_frame = Frame::from_number(run.start().number() ^ 4);
    assert_eq!(
        front.deallocate_frame(free_frame),
        Err(FreeError::DoubleFree)
    );
    assert_eq!(front.free_frames(), 252);
    handle.deallocate(run).unwrap();
    assert_eq!(front.free_frames(), 256);
    front
        .with_allocator(|buddy| buddy.check_invariants())
        .unwrap();
}

#[test]
fn full_cache_drains_a_batch() {
    let mut meta = storage(256);
    let front: PerCpuBuddy<'_, Switch, 2, 6> = PerCpuBuddy::new(allocator(&mut meta), switch(0));
    let frames: Vec<Frame> = (0..PCP_HIGH_FRAMES + 1)
        .map(|_| front.allocate_frame().unwrap())
        .collect();
    set(&front, 1);
    for frame in &frames {
        front.deallocate_frame(*frame).unwrap();
    }
    assert!(front.cached_frames() <= 2 * PCP_HIGH_FRAMES);
    assert_eq!(front.free_frames(), 256);
    front
        .with_allocator(|buddy| buddy.check_invariants())
        .unwrap();
    front.drain();
    assert_eq!(front.cached_frames(), 0);
    front.with_allocator(|buddy| assert_eq!(buddy.largest_free_order(), Some(6)));
}

#[test]
fn exhaustion_reclaims_other_caches_first() {
    let mut meta = storage(64);
    let front: PerCpuBuddy<'_, Switch, 2, 6> = PerCpuBuddy::new(allocator(&mut meta), switch(0));
    let mut held: Vec<Frame> = (0..64).map(|_| front.allocate_frame().unwrap()).collect();
    assert_eq!(front.allocate_frame(), Err(AllocError::OutOfMemory));
    // Two frames freed on CPU 0 are found by CPU 1 through the reclaim path.
    front.deallocate_frame(held.pop().unwrap()).unwrap();
    front.deallocate_frame(held.pop().unwrap()).unwrap();
    set(&front, 1);
    held.push(front.allocate_frame().unwrap());
    held.push(front.allocate_frame().unwrap());
    assert_eq!(front.allocate_frame(), Err(AllocError::OutOfMemory));
    assert_eq!(front.free_frames(), 0);
    for frame in held {
        front.deallocate_frame(frame).unwrap();
    }
    let buddy = front.into_inner();
    assert_eq!(buddy.free_frames(), 64);
    buddy.check_invariants().unwrap();
}

#[test]
fn cpu_ids_beyond_the_cache_count_still_work() {
    let mut meta = storage(64);
    let front: PerCpuBuddy<'_, Switch, 2, 6> = PerCpuBuddy::new(allocator(&mut meta), switch(7));
    let frame = front.allocate_frame().unwrap();
    front.deallocate_frame(frame).unwrap();
    assert_eq!(front.free_frames(), 64);
}

#[test]
fn threads_never_share_a_frame() {
    const THREADS: usize = 4;
    let rounds = if cfg!(miri) { 50 } else { 5_000 };
    let mut meta = storage(512);
    let front: PerCpuBuddy<'_, ThreadCpuId, THREADS, 6> =
        PerCpuBuddy::new(allocator(&mut meta), ThreadCpuId);
    let owners: Vec<core::sync::atomic::AtomicUsize> = (0..512).map(|_| 0.into()).collect();
    std::thread::scope(|scope| {
        for thread in 1..=THREADS {
            let front = &front;
            let owners = &owners;
            scope.spawn(move || {
                let mut handle = front;
                let mut held: Vec<FrameRange> = Vec::new();
                let mut rng = crate::frame_buddy::tests::Rng::new(thread as u64);
                for _ in 0..rounds {
                    if held.len() < 40 && rng.below(3) != 0 {
                        let count = if rng.below(4) == 0 {
                            1 + rng.below(5) as usize
                        } else {
                            1
                        };
                        if let Ok(run) = handle.allocate(count, 1) {
                            for frame in run {
                                let slot = &owners[(frame.number() - BASE_PFN) as usize];
                                assert_eq!(
                                    slot.swap(thread, core::sync::atomic::Ordering::Relaxed),
                                    0
                                );
                            }
                            held.push(run);
                        }
                    } else if let Some(run) = held.pop() {
                        for frame in run {
                            let slot = &owners[(frame.number() - BASE_PFN) as usize];
                            assert_eq!(slot.swap(0, core::sync::atomic::Ordering::Relaxed), thread);
                        }
                        handle.deallocate(run).unwrap();
                    }
                }
                // Hand the rest to another thread's CPU by freeing after a yield.
                for run in held {
                    for frame in run {
                        owners[(frame.number() - BASE_PFN) as usize]
                            .store(0, core::sync::atomic::Ordering::Relaxed);
                    }
                    handle.deallocate(run).unwrap();
                }
            });
        }
    });
    front.drain();
    assert_eq!(front.free_frames(), 512);
    front.with_allocator(|buddy| {
        buddy.check_invariants().unwrap();
        assert_eq!(buddy.largest_free_order(), Some(6));
    });
}
