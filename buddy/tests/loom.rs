//! loom models of the per-CPU front: refills and drains under the allocator's
//! lock racing with frees from another CPU.
#![cfg(loom)]

use kalloc_api::{AllocError, Frame, FrameAllocator, FrameRange, FreeError};
use kalloc_buddy::{BuddyFrameAllocator, FrameMeta, PerCpuBuddy};
use loom::sync::Arc;
use loom::thread;

const BASE_PFN: u64 = 0x8_0000;
const FRAMES: usize = 4;

loom::thread_local! {
    static CPU: core::cell::Cell<usize> = core::cell::Cell::new(0);
}

/// The CPU id of a modelled thread: set once at the thread's start.
fn current_cpu() -> usize {
    CPU.with(|cpu| cpu.get())
}

fn on_cpu(cpu: usize) {
    CPU.with(|slot| slot.set(cpu));
}

type Front = PerCpuBuddy<'static, fn() -> usize, 2, 2>;

/// A front over `FRAMES` frames; the metadata is leaked so threads can share it.
fn front() -> Arc<Front> {
    let storage: &'static mut [FrameMeta] = Box::leak(
        (0..FRAMES)
            .map(|_| FrameMeta::new())
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let mut buddy =
        BuddyFrameAllocator::<2>::new(Frame::from_number(BASE_PFN), FRAMES, storage).unwrap();
    buddy
        .add_range(FrameRange::new(Frame::from_number(BASE_PFN), FRAMES as u64))
        .unwrap();
    Arc::new(PerCpuBuddy::new(buddy, current_cpu as fn() -> usize))
}

/// CPU 1 frees a frame CPU 0 allocated while CPU 0 allocates again (refilling
/// or reclaiming) and then drains: every frame is handed out once, and the
/// counts are exact afterwards.
#[test]
fn remote_free_races_refill_and_drain() {
    loom::model(|| {
        let front = front();
        on_cpu(0);
        let first = front.allocate_frame().unwrap();
        let remote = {
            let front = front.clone();
            thread::spawn(move || {
                on_cpu(1);
                front.deallocate_frame(first).unwrap();
                front.drain();
            })
        };
        let mut held = Vec::new();
        while let Ok(frame) = front.allocate_frame() {
            assert!(!held.contains(&frame), "{frame:?} handed out twice");
            held.push(frame);
            if held.len() == 3 {
                break;
            }
        }
        remote.join().unwrap();
        assert!(!held.contains(&first) || held.iter().filter(|f| **f == first).count() == 1);
        for frame in held {
            front.deallocate_frame(frame).unwrap();
        }
        front.drain();
        assert_eq!(front.free_frames(), FRAMES);
        assert_eq!(front.cached_frames(), 0);
        front.with_allocator(|buddy| {
            buddy.check_invariants().unwrap();
            assert_eq!(buddy.largest_free_order(), Some(2));
        });
    });
}

/// Two CPUs free the same frame at once: exactly one free succeeds.
#[test]
fn concurrent_double_free_is_caught_once() {
    loom::model(|| {
        let front = front();
        on_cpu(0);
        let frame = front.allocate_frame().unwrap();
        let other = {
            let front = front.clone();
            thread::spawn(move || {
                on_cpu(1);
                front.deallocate_frame(frame)
            })
        };
        let here = front.deallocate_frame(frame);
        let there = other.join().unwrap();
        let results = [here, there];
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
        assert!(results.contains(&Err(FreeError::DoubleFree)));
        front.drain();
        assert_eq!(front.free_frames(), FRAMES);
        front
            .with_allocator(|buddy| buddy.check_invariants())
            .unwrap();
    });
}

/// Both CPUs allocate until the memory runs out, each reclaiming what the
/// other cached: no frame is handed out twice, and all come back.
#[test]
fn exhaustion_with_reclaim_hands_out_each_frame_once() {
    loom::model(|| {
        let front = front();
        let other = {
            let front = front.clone();
            thread::spawn(move || {
                on_cpu(1);
                let mut mine = Vec::new();
                for _ in 0..2 {
                    match front.allocate_frame() {
                        Ok(frame) => mine.push(frame),
                        Err(error) => assert_eq!(error, AllocError::OutOfMemory),
                    }
                }
                mine
            })
        };
        on_cpu(0);
        let mut handle = &*front;
        let mut mine = Vec::new();
        for _ in 0..2 {
            match handle.allocate(1, 1) {
                Ok(run) => mine.push(run.start()),
                Err(error) => assert_eq!(error, AllocError::OutOfMemory),
            }
        }
        let theirs = other.join().unwrap();
        let mut all: Vec<Frame> = mine.iter().chain(theirs.iter()).copied().collect();
        let handed_out = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), handed_out, "a frame was handed out twice");
        // A refill on one CPU can take the frames another CPU just reclaimed,
        // so a request may fail while frames sit in a cache; none is lost.
        assert!(handed_out >= 2, "each CPU's first request finds a frame");
        for frame in all {
            handle.deallocate(FrameRange::new(frame, 1)).unwrap();
        }
        front.drain();
        assert_eq!(handle.free_frames(), FRAMES);
        front
            .with_allocator(|buddy| buddy.check_invariants())
            .unwrap();
    });
}
