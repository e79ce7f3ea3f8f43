//! loom models of `AtomicBitmapFrameAllocator`: CPUs allocating and freeing at
//! once never get the same frame, a double free is reported exactly once, no
//! free frame becomes unfindable, and the free count is exact afterwards.
#![cfg(loom)]

use std::boxed::Box;
use std::vec::Vec;

use kalloc_api::sync::AtomicU64;
use kalloc_api::{AllocError, Frame, FrameRange, FreeError};
use kalloc_bitmap_frame::{AtomicBitmapFrameAllocator, atomic_storage_words};
use loom::sync::Arc;
use loom::thread;

/// An allocator over `frames` frames from frame 0, all of them free. The
/// storage is leaked so the allocator can move into `'static` loom threads.
fn allocator(frames: usize) -> Arc<AtomicBitmapFrameAllocator<'static>> {
    let storage: Vec<AtomicU64> = (0..atomic_storage_words(frames))
        .map(|_| AtomicU64::new(0))
        .collect();
    let storage: &'static [AtomicU64] = Box::leak(storage.into_boxed_slice());
    let bitmap = AtomicBitmapFrameAllocator::new(Frame::from_number(0), frames, storage).unwrap();
    bitmap
        .mark_free(FrameRange::new(Frame::from_number(0), frames as u64))
        .unwrap();
    Arc::new(bitmap)
}

#[test]
fn concurrent_allocations_never_share_a_frame() {
    loom::model(|| {
        let bitmap = allocator(2);
        let handles: Vec<_> = (0..2)
            .map(|cpu| {
                let bitmap = bitmap.clone();
                thread::spawn(move || bitmap.allocate_on(cpu, 1, 1).unwrap())
            })
            .collect();
        let got: Vec<FrameRange> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_ne!(got[0], got[1]);
        assert_eq!(bitmap.free_frames(), 0);
        assert_eq!(bitmap.allocate_on(0, 1, 1), Err(AllocError::OutOfMemory));
        bitmap.check_quiescent().unwrap();
    });
}

/// One thread frees the frame another is about to need while that other takes
/// the last free frame of the same word: the withdraw of the word from the
/// summary races the publish of the freed frame, and the freed frame must stay
/// findable.
#[test]
fn free_racing_the_last_claim_of_its_word_stays_findable() {
    loom::model(|| {
        let bitmap = allocator(2);
        let held = bitmap.allocate_on(0, 1, 1).unwrap();
        let freer = {
            let bitmap = bitmap.clone();
            thread::spawn(move || bitmap.deallocate_on(1, held).unwrap())
        };
        let taker = {
            let bitmap = bitmap.clone();
            thread::spawn(move || bitmap.allocate_on(0, 1, 1).unwrap())
        };
        freer.join().unwrap();
        let taken = taker.join().unwrap();
        assert_eq!(bitmap.free_frames(), 1);
        bitmap.check_quiescent().unwrap();
        let last = bitmap.allocate_on(1, 1, 1).unwrap();
        assert_ne!(last, taken);
        assert_eq!(bitmap.free_frames(), 0);
    });
}

/// Frames in two words: allocating and freeing on both CPUs while the other
/// CPU's word empties and refills, each frame owned by one thread at a time.
#[test]
fn alloc_free_cycles_across_words_keep_frames_exclusive() {
    loom::model(|| {
        let bitmap = allocator(65);
        // Leave one free frame in each word: frame 0 and frame 64.
        bitmap
            .mark_used(FrameRange::new(Frame::from_number(1), 63))
            .unwrap();
        let owners: Arc<Vec<loom::sync::atomic::AtomicUsize>> = Arc::new(
            (0..65)
                .map(|_| loom::sync::atomic::AtomicUsize::new(0))
                .collect(),
        );
        let handles: Vec<_> = (0..2)
            .map(|cpu| {
                let (bitmap, owners) = (bitmap.clone(), owners.clone());
                thread::spawn(move || {
                    for _ in 0..2 {
                        let Ok(run) = bitmap.allocate_on(cpu, 1, 1) else {
                            continue;
                        };
                        let slot = &owners[run.start().number() as usize];
                        let before = slot.swap(cpu + 1, loom::sync::atomic::Ordering::Relaxed);
                        assert_eq!(before, 0, "frame handed to two threads");
                        slot.store(0, loom::sync::atomic::Ordering::Relaxed);
                        bitmap.deallocate_on(cpu, run).unwrap();
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        assert_eq!(bitmap.free_frames(), 2);
        bitmap.check_quiescent().unwrap();
        let a = bitmap.allocate_on(0, 1, 1).unwrap();
        let b = bitmap.allocate_on(1, 1, 1).unwrap();
        assert_ne!(a, b);
    });
}

#[test]
fn racing_double_free_of_a_frame_is_reported_once() {
    loom::model(|| {
        let bitmap = allocator(2);
        let held = bitmap.allocate_on(0, 1, 1).unwrap();
        let handles: Vec<_> = (0..2)
            .map(|cpu| {
                let bitmap = bitmap.clone();
                thread::spawn(move || bitmap.deallocate_on(cpu, held))
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let refused = results
            .iter()
            .filter(|r| **r == Err(FreeError::DoubleFree))
            .count();
        assert_eq!(refused, 1, "{results:?}");
        assert!(results.contains(&Ok(())));
        assert_eq!(bitmap.free_frames(), 2);
        bitmap.check_quiescent().unwrap();
    });
}

#[test]
fn racing_double_free_of_a_two_word_run_is_reported_once() {
    loom::model(|| {
        let bitmap = allocator(128);
        let run = bitmap.allocate_on(0, 128, 64).unwrap();
        let handles: Vec<_> = (0..2)
            .map(|cpu| {
                let bitmap = bitmap.clone();
                thread::spawn(move || bitmap.deallocate_on(cpu, run))
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(results.contains(&Ok(())) && results.contains(&Err(FreeError::DoubleFree)));
        assert_eq!(bitmap.free_frames(), 128);
        bitmap.check_quiescent().unwrap();
    });
}

/// Three CPUs allocate and free one frame each over two frames: whoever finds
/// none gets out-of-memory, and the count ends exact.
#[test]
fn three_threads_keep_the_count_exact() {
    loom::model(|| {
        let bitmap = allocator(2);
        let handles: Vec<_> = (0..3)
            .map(|cpu| {
                let bitmap = bitmap.clone();
                thread::spawn(move || {
                    if let Ok(run) = bitmap.allocate_on(cpu, 1, 1) {
                        bitmap.deallocate_on(cpu, run).unwrap();
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        assert_eq!(bitmap.free_frames(), 2);
        bitmap.check_quiescent().unwrap();
    });
}

/// Two CPUs claim two-word runs over three words at once: the claims overlap
/// in the middle word, so one gets a run and the other rolls back (or finds
/// none); no frame is handed out twice and the count ends exact.
#[test]
fn racing_multi_word_runs_roll_back_cleanly() {
    loom::model(|| {
        let bitmap = allocator(192);
        let handles: Vec<_> = (0..2)
            .map(|cpu| {
                let bitmap = bitmap.clone();
                thread::spawn(move || bitmap.allocate_on(cpu, 128, 64))
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let won: Vec<FrameRange> = results.iter().filter_map(|r| r.ok()).collect();
        assert!(!won.is_empty(), "one of the two runs fits");
        if let [first, second] = won[..] {
            assert!(!first.overlaps(second), "{first:?} and {second:?} overlap");
        }
        assert!(
            results
                .iter()
                .all(|r| r.is_ok() || *r == Err(AllocError::OutOfMemory))
        );
        assert_eq!(bitmap.free_frames(), 192 - 128 * won.len());
        for run in won {
            bitmap.deallocate_on(0, run).unwrap();
        }
        assert_eq!(bitmap.free_frames(), 192);
        bitmap.check_quiescent().unwrap();
    });
}
