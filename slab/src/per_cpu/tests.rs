use core::cell::Cell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::collections::HashSet;
use std::sync::Mutex as StdMutex;
use std::vec::Vec;

use kalloc_api::{AllocError, FreeError};

use super::PerCpuCache;
use crate::config::{Hardening, SlabConfig};
use crate::magazine::{DEPOT_MAGAZINES, INLINE_MAGAZINES, MAGAZINE_ROUNDS};
use crate::test_support::{TrackingPages, XorShift};

std::thread_local! {
    /// The CPU the current test thread pretends to run on.
    static CPU: Cell<usize> = const { Cell::new(0) };
}

fn current_cpu() -> usize {
    CPU.with(Cell::get)
}

fn run_on(cpu: usize) {
    CPU.with(|c| c.set(cpu));
}

type Cache = PerCpuCache<fn() -> usize, 2>;

fn per_cpu(size: usize, hardening: Hardening) -> Cache {
    PerCpuCache::new(
        SlabConfig::new(size, 8).with_hardening(hardening),
        current_cpu as fn() -> usize,
    )
    .unwrap()
}

#[test]
fn fast_path_returns_the_last_freed_object() {
    let pages = TrackingPages::new();
    let cache = per_cpu(64, Hardening::DEFAULT);
    let a = cache.allocate(&pages).unwrap();
    let b = cache.allocate(&pages).unwrap();
    // SAFETY: allocated above, freed once.
    unsafe { cache.deallocate(a, &pages) }.unwrap();
    assert_eq!(cache.allocate(&pages).unwrap(), a);
    // SAFETY: as above.
    unsafe { cache.deallocate(b, &pages) }.unwrap();
    // SAFETY: as above.
    unsafe { cache.deallocate(a, &pages) }.unwrap();
    let stats = cache.stats();
    assert_eq!(stats.objects_in_use, 0);
    assert!(stats.objects_cached >= 2);
    cache.shrink(&pages);
    assert_eq!(pages.pages_out(), 0);
}

#[test]
fn fast_entry_points_pop_and_push_and_send_everything_else_to_the_full_paths() {
    let pages = TrackingPages::new();
    let cache = per_cpu(64, Hardening::DEFAULT);
    run_on(0);
    assert_eq!(cache.allocate_fast(), None, "nothing cached yet");
    let a = cache.allocate(&pages).unwrap();
    let b = cache.allocate(&pages).unwrap();
    // SAFETY: allocated above, freed once.
    assert!(unsafe { cache.deallocate_fast(a) });
    // SAFETY: `a` is already on the magazine: refused, nothing changes.
    assert!(!unsafe { cache.deallocate_fast(a) });
    // SAFETY: as above; the full path reports what the fast one refused.
    let again = unsafe { cache.deallocate(a, &pages) };
    assert_eq!(again, Err(FreeError::DoubleFree));
    // SAFETY: allocated above, freed once.
    assert!(unsafe { cache.deallocate_fast(b) });
    assert_eq!(cache.allocate_fast(), Some(b));
    assert_eq!(cache.allocate_fast(), Some(a));
    // A CPU without a slot always takes the full paths.
    run_on(2);
    assert_eq!(cache.allocate_fast(), None);
    // SAFETY: allocated above, freed once (the fast path refuses it).
    assert!(!unsafe { cache.deallocate_fast(a) });
    // SAFETY: as above.
    unsafe { cache.deallocate(a, &pages) }.unwrap();
    run_on(0);
    // SAFETY: as above.
    unsafe { cache.deallocate(b, &pages) }.unwrap();
    assert_eq!(cache.stats().objects_in_use, 0);
    cache.shrink(&pages);
    assert_eq!(pages.pages_out(), 0);
}

#[test]
fn fast_entry_points_stand_aside_when_objects_are_checked() {
    let pages = TrackingPages::new();
    let cache = per_cpu(64, Hardening::DEFAULT.union(Hardening::DOUBLE_FREE_BITMAP));
    run_on(0);
    let object = cache.allocate(&pages).unwrap();
    // SAFETY: allocated above; refused, so freed once below.
    assert!(!unsafe { cache.deallocate_fast(object) });
    // SAFETY: as above.
    unsafe { cache.deallocate(object, &pages) }.unwrap();
    assert_eq!(cache.allocate_fast(), None);
    cache.shrink(&pages);
    assert_eq!(pages.pages_out(), 0);
}

#[test]
fn cross_cpu_frees_and_overflow_keep_stats_exact() {
    let pages = TrackingPages::new();
    let cache = per_cpu(32, Hardening::DEFAULT);
    let count = (2 * 2 + DEPOT_MAGAZINES + 3) * MAGAZINE_ROUNDS;
    run_on(0);
    let objects: Vec<NonNull<u8>> = (0..count)
        .map(|_| cache.allocate(&pages).unwrap())
        .collect();
    let distinct: HashSet<usize> = objects.iter().map(|o| o.addr().get()).collect();
    assert_eq!(distinct.len(), count);
    // CPU 1 frees what CPU 0 allocated, far past what its magazines and the depot hold.
    run_on(1);
    for (freed, object) in objects.iter().enumerate() {
        // SAFETY: allocated above, freed once.
        unsafe { cache.deallocate(*object, &pages) }.unwrap();
        assert_eq!(cache.stats().objects_in_use, count - freed - 1);
    }
    let stats = cache.stats();
    assert!(stats.objects_cached <= (2 * 2 + DEPOT_MAGAZINES) * MAGAZINE_ROUNDS);
    assert_eq!(
        stats.objects_cached + stats.objects_free,
        stats.total_objects()
    );
    // CPU 1 now allocates from its own magazines: no object twice.
    let again: Vec<NonNull<u8>> = (0..count)
        .map(|_| cache.allocate(&pages).unwrap())
        .collect();
    let distinct: HashSet<usize> = again.iter().map(|o| o.addr().get()).collect();
    assert_eq!(distinct.len(), count);
    run_on(0);
    for object in again {
        // SAFETY: allocated above, freed once.
        unsafe { cache.deallocate(object, &pages) }.unwrap();
    }
    assert_eq!(cache.stats().objects_in_use, 0);
    cache.shrink(&pages);
    assert_eq!(pages.pages_out(), 0);
}

#[test]
fn shrink_flushes_every_magazine_and_returns_every_page() {
    let pages = TrackingPages::new();
    let cache = per_cpu(100, Hardening::DEFAULT);
    for cpu in [0, 1, 5] {
        run_on(cpu);
        let objects: Vec<_> = (0..200).map(|_| cache.allocate(&pages).unwrap()).collect();
        run_on((cpu + 1) % 2);
        for object in objects {
            // SAFETY: allocated above, freed once.
            unsafe { cache.deallocate(object, &pages) }.unwrap();
        }
    }
    run_on(0);
    assert_eq!(cache.stats().objects_in_use, 0);
    assert!(cache.shrink(&pages) > 0);
    let stats = cache.stats();
    assert_eq!(
        (stats.slabs, stats.objects_cached, stats.pages_held),
        (0, 0, 0)
    );
    assert_eq!(pages.pages_out(), 0);
}

#[test]
fn immediate_double_free_into_a_magazine_is_reported() {
    let pages = TrackingPages::new();
    let cache = per_cpu(64, Hardening::DEFAULT);
    let a = cache.allocate(&pages).unwrap();
    // SAFETY: allocated above; the second free is the misuse under test.
    unsafe { cache.deallocate(a, &pages) }.unwrap();
    let before = cache.stats();
    // SAFETY: as above.
    let outcome = unsafe { cache.deallocate(a, &pages) };
    assert_eq!(outcome, Err(FreeError::DoubleFree));
    assert_eq!(cache.stats(), before);
    assert_eq!(cache.allocate(&pages).unwrap(), a);
    assert_ne!(cache.allocate(&pages).unwrap(), a);
}

#[test]
fn debug_checks_catch_every_misuse_at_free_time() {
    let pages = TrackingPages::new();
    let cache = per_cpu(48, Hardening::DEBUG);
    let a = cache.allocate(&pages).unwrap();
    let b = cache.allocate(&pages).unwrap();
    // SAFETY: allocated above; later frees of `a` are the misuse under test.
    unsafe { cache.deallocate(a, &pages) }.unwrap();
    // SAFETY: as above.
    unsafe { cache.deallocate(b, &pages) }.unwrap();
    let before = cache.stats();
    // SAFETY: as above.
    let outcome = unsafe { cache.deallocate(a, &pages) };
    assert_eq!(outcome, Err(FreeError::DoubleFree));
    let c = cache.allocate(&pages).unwrap();
    // SAFETY: `c` is ours; a misaligned pointer into it must be refused.
    let outcome = unsafe { cache.deallocate(c.byte_add(8), &pages) };
    assert_eq!(outcome, Err(FreeError::Misaligned));
    // SAFETY: the test plays a caller overrunning `c`.
    unsafe { c.byte_add(48).write(7) };
    // SAFETY: as above.
    let outcome = unsafe { cache.deallocate(c, &pages) };
    assert_eq!(outcome, Err(FreeError::Corrupted));
    // SAFETY: repair, then free properly.
    unsafe {
        c.byte_add(48).write(crate::RED_ZONE_BYTE);
        cache.deallocate(c, &pages).unwrap();
    }
    assert_eq!(cache.stats().objects_in_use, before.objects_in_use);
    cache.shrink(&pages);
    assert_eq!(pages.pages_out(), 0);
}

#[test]
fn write_after_free_in_a_magazine_is_caught_on_reallocation() {
    static REPORTS: AtomicUsize = AtomicUsize::new(0);
    fn on_corruption(error: FreeError, _: *mut u8) {
        assert_eq!(error, FreeError::Corrupted);
        REPORTS.fetch_add(1, Ordering::SeqCst);
    }
    let pages = TrackingPages::new();
    let cache: Cache = PerCpuCache::new(
        SlabConfig::new(64, 8)
            .with_hardening(Hardening::POISON)
            .with_corruption_handler(on_corruption),
        current_cpu as fn() -> usize,
    )
    .unwrap();
    let a = cache.allocate(&pages).unwrap();
    // SAFETY: allocated above.
    unsafe { cache.deallocate(a, &pages) }.unwrap();
    // SAFETY: the test plays a caller writing after free.
    unsafe { a.byte_add(32).write(0) };
    let b = cache.allocate(&pages).unwrap();
    assert_ne!(a, b);
    assert_eq!(REPORTS.load(Ordering::SeqCst), 1);
    let stats = cache.stats();
    assert_eq!((stats.objects_in_use, stats.objects_quarantined), (1, 1));
}

#[test]
fn cpu_index_past_the_last_cpu_goes_through_the_depot() {
    let pages = TrackingPages::new();
    let cache = per_cpu(16, Hardening::DEFAULT);
    run_on(9);
    let a = cache.allocate(&pages).unwrap();
    assert_eq!(cache.stats().objects_cached, 0);
    // SAFETY: allocated above; the second free is the misuse under test.
    unsafe { cache.deallocate(a, &pages) }.unwrap();
    // SAFETY: as above.
    let outcome = unsafe { cache.deallocate(a, &pages) };
    assert_eq!(outcome, Err(FreeError::DoubleFree));
    run_on(0);
    assert_eq!(cache.shrink(&pages), 1);
    assert_eq!(pages.pages_out(), 0);
}

#[test]
fn exhaustion_is_reported_and_nothing_is_lost() {
    let pages = TrackingPages::with_limit(1);
    let cache = per_cpu(512, Hardening::DEFAULT);
    let mut objects = Vec::new();
    let error = loop {
        match cache.allocate(&pages) {
            Ok(object) => objects.push(object),
            Err(error) => break error,
        }
    };
    assert_eq!(error, AllocError::OutOfMemory);
    assert_eq!(objects.len(), cache.stats().objects_per_slab);
    for object in objects {
        // SAFETY: allocated above, freed once.
        unsafe { cache.deallocate(object, &pages) }.unwrap();
    }
    assert_eq!(cache.stats().objects_in_use, 0);
    cache.shrink(&pages);
    assert_eq!(pages.pages_out(), 0);
}

#[test]
fn bad_configuration_is_refused() {
    let cache: Result<Cache, _> =
        PerCpuCache::new(SlabConfig::new(0, 8), current_cpu as fn() -> usize);
    assert_eq!(cache.err(), Some(AllocError::ZeroSize));
}

/// An object pointer handed between threads.
struct Handed(NonNull<u8>);
// SAFETY: whoever holds a `Handed` owns the object alone.
unsafe impl Send for Handed {}

#[test]
fn threads_sharing_objects_never_get_one_twice() {
    let pages = TrackingPages::new();
    let cache: PerCpuCache<fn() -> usize, 4> = PerCpuCache::new(
        SlabConfig::new(64, 8).with_hardening(Hardening::DEFAULT),
        current_cpu as fn() -> usize,
    )
    .unwrap();
    let threads = if cfg!(miri) { 2 } else { 4 };
    let steps = if cfg!(miri) { 150 } else { 20_000 };
    // Objects handed between threads and freed by whoever takes them: cross-CPU frees.
    let shared: StdMutex<Vec<Handed>> = StdMutex::new(Vec::new());
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let (cache, pages, shared) = (&cache, &pages, &shared);
            scope.spawn(move || {
                run_on(thread);
                let mut rng = XorShift(0x9e37 + thread as u64);
                let mut mine: Vec<NonNull<u8>> = Vec::new();
                let stamp = thread as u64 + 1;
                for _ in 0..steps {
                    match rng.below(4) {
                        0 | 1 => {
                            let object = cache.allocate(pages).unwrap();
                            // SAFETY: ours alone; a second owner would overwrite the stamp.
                            unsafe { object.cast::<u64>().write(stamp) };
                            mine.push(object);
                        }
                        2 if !mine.is_empty() => {
                            let object = mine.swap_remove(rng.below(mine.len()));
                            // SAFETY: still ours.
                            assert_eq!(unsafe { object.cast::<u64>().read() }, stamp);
                            // SAFETY: as above; the next owner checks for this mark.
                            unsafe { object.cast::<u64>().write(u64::MAX) };
                            shared.lock().unwrap().push(Handed(object));
                        }
                        _ => {
                            let popped = shared.lock().unwrap().pop();
                            if let Some(Handed(object)) = popped {
                                // SAFETY: handed to us; nobody else may have written it.
                                assert_eq!(unsafe { object.cast::<u64>().read() }, u64::MAX);
                                // SAFETY: allocated by some thread, freed once, here.
                                unsafe { cache.deallocate(object, pages) }.unwrap();
                            }
                        }
                    }
                }
                for object in mine {
                    // SAFETY: allocated above, freed once.
                    unsafe { cache.deallocate(object, pages) }.unwrap();
                }
            });
        }
    });
    for Handed(object) in shared.into_inner().unwrap() {
        // SAFETY: handed over and never freed.
        unsafe { cache.deallocate(object, &pages) }.unwrap();
    }
    let stats = cache.stats();
    assert_eq!((stats.objects_in_use, stats.corruptions), (0, 0));
    cache.shrink(&pages);
    assert_eq!(pages.pages_out(), 0);
}

#[test]
fn reap_gives_back_slabs_a_burst_left_behind_after_an_idle_period() {
    let pages = TrackingPages::new();
    let cache = per_cpu(512, Hardening::DEFAULT);
    run_on(0);
    // More than the magazines and depot can cache, so most go back to slabs.
    let count = (2 + DEPOT_MAGAZINES) * MAGAZINE_ROUNDS * 2;
    let objects: Vec<_> = (0..count)
        .map(|_| cache.allocate(&pages).unwrap())
        .collect();
    for object in objects {
        // SAFETY: allocated above, freed once.
        unsafe { cache.deallocate(object, &pages) }.unwrap();
    }
    let held = pages.pages_out();
    assert_eq!(
        cache.reap(&pages),
        0,
        "the burst used every slab in this period"
    );
    assert!(cache.reap(&pages) > 0);
    assert!(pages.pages_out() < held);
    assert_eq!(cache.stats().objects_in_use, 0);
    cache.shrink(&pages);
    assert_eq!(pages.pages_out(), 0);
}

#[test]
fn a_burst_is_absorbed_by_stored_magazines_and_reap_returns_them() {
    let pages = TrackingPages::new();
    let cache = per_cpu(128, Hardening::DEFAULT);
    run_on(0);
    // A magazine short of what the CPU and the depot hold: the CPU's last
    // refill may leave a few objects in its magazines before the frees.
    let count = (1 + DEPOT_MAGAZINES) * MAGAZINE_ROUNDS;
    let objects: Vec<_> = (0..count)
        .map(|_| cache.allocate(&pages).unwrap())
        .collect();
    for object in objects {
        // SAFETY: allocated above, freed once.
        unsafe { cache.deallocate(object, &pages) }.unwrap();
    }
    let stats = cache.stats();
    assert_eq!(stats.objects_in_use, 0);
    assert!(
        (count..count + MAGAZINE_ROUNDS).contains(&stats.objects_cached),
        "every object freed cached, with what the last refill left: {stats:?}"
    );
    assert!(stats.magazine_pages > 0, "{stats:?}");
    assert_eq!(
        stats.pages_held,
        stats.slabs * stats.pages_per_slab + stats.magazine_pages
    );
    assert_eq!(stats.pages_held, pages.pages_out());
    // The next burst comes from the stored magazines, not the slabs.
    let again: Vec<_> = (0..count)
        .map(|_| cache.allocate(&pages).unwrap())
        .collect();
    let distinct: HashSet<usize> = again.iter().map(|o| o.addr().get()).collect();
    assert_eq!(distinct.len(), count);
    assert_eq!(cache.stats().slabs, stats.slabs, "no slab was added");
    for object in again {
        // SAFETY: allocated above, freed once.
        unsafe { cache.deallocate(object, &pages) }.unwrap();
    }
    cache.reap(&pages);
    let reaped = cache.stats();
    assert!(
        reaped.objects_cached <= (2 + INLINE_MAGAZINES) * MAGAZINE_ROUNDS,
        "{reaped:?}"
    );
    assert_eq!(reaped.objects_in_use, 0);
    cache.shrink(&pages);
    assert_eq!(pages.pages_out(), 0);
}
