use core::ptr::NonNull;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::vec::Vec;

use kalloc_api::{FreeError, PinnedCpu};

use super::PinnedPerCpuCache;
use crate::config::{Hardening, SlabConfig};
use crate::magazine::{DEPOT_MAGAZINES, MAGAZINE_ROUNDS};
use crate::test_support::{TrackingPages, XorShift};

type Cache = PinnedPerCpuCache<2>;

fn pinned(size: usize, hardening: Hardening) -> Cache {
    PinnedPerCpuCache::new(SlabConfig::new(size, 8).with_hardening(hardening)).unwrap()
}

/// A token for `index`.
fn cpu(index: usize) -> PinnedCpu {
    // SAFETY: each test uses a cache of its own from one thread (or, in the
    // threaded test, one thread per index), so no two contexts share a slot.
    unsafe { PinnedCpu::new(index) }
}

/// Flushes every CPU's magazines and shrinks: every page must come back.
fn drain(cache: &Cache, pages: &TrackingPages) {
    for index in 0..2 {
        cache.flush_cpu(&cpu(index), pages);
    }
    cache.shrink(pages);
    let stats = cache.stats();
    assert_eq!((stats.slabs, stats.objects_cached), (0, 0), "{stats:?}");
    assert_eq!(pages.pages_out(), 0);
}

#[test]
fn fast_path_returns_the_last_freed_object() {
    let pages = TrackingPages::new();
    let cache = pinned(64, Hardening::DEFAULT);
    let zero = cpu(0);
    let a = cache.allocate(&zero, &pages).unwrap();
    let b = cache.allocate(&zero, &pages).unwrap();
    // SAFETY: allocated above, freed once.
    unsafe { cache.deallocate(&zero, a, &pages) }.unwrap();
    assert_eq!(cache.allocate(&zero, &pages).unwrap(), a);
    // SAFETY: as above.
    unsafe { cache.deallocate(&zero, b, &pages) }.unwrap();
    // SAFETY: as above.
    unsafe { cache.deallocate(&zero, a, &pages) }.unwrap();
    let stats = cache.stats();
    assert_eq!(stats.objects_in_use, 0);
    assert!(stats.objects_cached >= 2);
    drain(&cache, &pages);
}

#[test]
fn fast_entry_points_pop_and_push_and_send_everything_else_to_the_full_paths() {
    let pages = TrackingPages::new();
    let cache = pinned(64, Hardening::DEFAULT);
    let zero = cpu(0);
    assert_eq!(cache.allocate_fast(&zero), None, "nothing cached yet");
    let a = cache.allocate(&zero, &pages).unwrap();
    let b = cache.allocate(&zero, &pages).unwrap();
    // SAFETY: allocated above, freed once.
    assert!(unsafe { cache.deallocate_fast(&zero, a) });
    // SAFETY: `a` is already on the magazine: refused, nothing changes.
    assert!(!unsafe { cache.deallocate_fast(&zero, a) });
    // SAFETY: as above; the full path reports what the fast one refused.
    let again = unsafe { cache.deallocate(&zero, a, &pages) };
    assert_eq!(again, Err(FreeError::DoubleFree));
    // SAFETY: allocated above, freed once.
    assert!(unsafe { cache.deallocate_fast(&zero, b) });
    assert_eq!(cache.allocate_fast(&zero), Some(b));
    assert_eq!(cache.allocate_fast(&zero), Some(a));
    // A CPU without a slot always takes the full paths.
    let beyond = cpu(2);
    assert_eq!(cache.allocate_fast(&beyond), None);
    // SAFETY: allocated above, freed once (the fast path refuses it).
    assert!(!unsafe { cache.deallocate_fast(&beyond, a) });
    // SAFETY: as above.
    unsafe { cache.deallocate(&beyond, a, &pages) }.unwrap();
    // SAFETY: as above.
    unsafe { cache.deallocate(&zero, b, &pages) }.unwrap();
    assert_eq!(cache.stats().objects_in_use, 0);
    drain(&cache, &pages);
}

#[test]
fn fast_push_stops_at_a_full_magazine() {
    let pages = TrackingPages::new();
    let cache = pinned(64, Hardening::DEFAULT);
    let zero = cpu(0);
    let objects: Vec<_> = (0..=MAGAZINE_ROUNDS)
        .map(|_| cache.allocate(&zero, &pages).unwrap())
        .collect();
    let mut refused = Vec::new();
    for &object in &objects {
        // SAFETY: allocated above, each freed once (here or below).
        if !unsafe { cache.deallocate_fast(&zero, object) } {
            refused.push(object);
        }
    }
    // More frees than a magazine holds: the fast path turned some away.
    assert!(!refused.is_empty());
    for object in refused {
        // SAFETY: refused by the fast path, so still ours to free.
        unsafe { cache.deallocate(&zero, object, &pages) }.unwrap();
    }
    assert_eq!(cache.stats().objects_in_use, 0);
    drain(&cache, &pages);
}

#[test]
fn fast_entry_points_stand_aside_when_objects_are_checked() {
    let pages = TrackingPages::new();
    let cache = pinned(64, Hardening::DEFAULT.union(Hardening::DOUBLE_FREE_BITMAP));
    let zero = cpu(0);
    let object = cache.allocate(&zero, &pages).unwrap();
    // SAFETY: allocated above; refused, so freed once below.
    assert!(!unsafe { cache.deallocate_fast(&zero, object) });
    // SAFETY: as above.
    unsafe { cache.deallocate(&zero, object, &pages) }.unwrap();
    assert_eq!(cache.allocate_fast(&zero), None);
    drain(&cache, &pages);
}

#[test]
fn shrink_leaves_cpu_magazines_until_each_cpu_flushes() {
    let pages = TrackingPages::new();
    let cache = pinned(64, Hardening::DEFAULT);
    let zero = cpu(0);
    let object = cache.allocate(&zero, &pages).unwrap();
    // SAFETY: allocated above, freed once.
    unsafe { cache.deallocate(&zero, object, &pages) }.unwrap();
    cache.shrink(&pages);
    assert!(pages.pages_out() > 0, "cached objects keep their slab");
    assert!(cache.stats().objects_cached > 0);
    cache.flush_cpu(&zero, &pages);
    cache.shrink(&pages);
    assert_eq!(pages.pages_out(), 0);
}

#[test]
fn cross_cpu_frees_and_overflow_keep_stats_exact() {
    let pages = TrackingPages::new();
    let cache = pinned(32, Hardening::DEFAULT);
    let count = (2 * 2 + DEPOT_MAGAZINES + 3) * MAGAZINE_ROUNDS;
    let (zero, one) = (cpu(0), cpu(1));
    let objects: Vec<NonNull<u8>> = (0..count)
        .map(|_| cache.allocate(&zero, &pages).unwrap())
        .collect();
    let distinct: HashSet<usize> = objects.iter().map(|o| o.addr().get()).collect();
    assert_eq!(distinct.len(), count);
    for (freed, object) in objects.iter().enumerate() {
        // SAFETY: allocated above on CPU 0, freed once on CPU 1.
        unsafe { cache.deallocate(&one, *object, &pages) }.unwrap();
        assert_eq!(cache.stats().objects_in_use, count - freed - 1);
    }
    let stats = cache.stats();
    assert!(stats.objects_cached <= (2 * 2 + DEPOT_MAGAZINES) * MAGAZINE_ROUNDS);
    assert_eq!(
        stats.objects_cached + stats.objects_free,
        stats.total_objects()
    );
    let again: Vec<NonNull<u8>> = (0..count)
        .map(|_| cache.allocate(&one, &pages).unwrap())
        .collect();
    let distinct: HashSet<usize> = again.iter().map(|o| o.addr().get()).collect();
    assert_eq!(distinct.len(), count);
    for object in again {
        // SAFETY: allocated above, freed once.
        unsafe { cache.deallocate(&zero, object, &pages) }.unwrap();
    }
    assert_eq!(cache.stats().objects_in_use, 0);
    drain(&cache, &pages);
}

#[test]
fn a_cpu_without_a_slot_is_served_through_the_depot() {
    let pages = TrackingPages::new();
    let cache = pinned(48, Hardening::DEFAULT);
    let beyond = cpu(7);
    let objects: Vec<_> = (0..100)
        .map(|_| cache.allocate(&beyond, &pages).unwrap())
        .collect();
    assert_eq!(cache.stats().objects_in_use, 100);
    for object in objects {
        // SAFETY: allocated above, freed once.
        unsafe { cache.deallocate(&beyond, object, &pages) }.unwrap();
    }
    assert_eq!(cache.stats().objects_cached, 0, "nothing cached for it");
    drain(&cache, &pages);
}

#[test]
fn immediate_double_free_is_reported_and_nothing_is_lost() {
    let pages = TrackingPages::new();
    let cache = pinned(64, Hardening::DEFAULT);
    let zero = cpu(0);
    let object = cache.allocate(&zero, &pages).unwrap();
    // SAFETY: allocated above, freed once.
    unsafe { cache.deallocate(&zero, object, &pages) }.unwrap();
    let before = cache.stats();
    // SAFETY: the slab is held, so the header is readable; the second free is refused.
    let again = unsafe { cache.deallocate(&zero, object, &pages) };
    assert_eq!(again, Err(FreeError::DoubleFree));
    let after = cache.stats();
    assert_eq!(after.objects_in_use, 0);
    assert_eq!(
        after.objects_cached, before.objects_cached,
        "nothing cached twice"
    );
    let first = cache.allocate(&zero, &pages).unwrap();
    let second = cache.allocate(&zero, &pages).unwrap();
    assert_eq!(first, object);
    assert_ne!(second, object, "handed out once");
    for object in [first, second] {
        // SAFETY: allocated above, freed once.
        unsafe { cache.deallocate(&zero, object, &pages) }.unwrap();
    }
    drain(&cache, &pages);
}

#[test]
fn per_object_checks_catch_a_double_free_deep_in_a_magazine() {
    let pages = TrackingPages::new();
    let cache = pinned(64, Hardening::DEBUG);
    let zero = cpu(0);
    let a = cache.allocate(&zero, &pages).unwrap();
    let b = cache.allocate(&zero, &pages).unwrap();
    // SAFETY: allocated above, freed once each.
    unsafe {
        cache.deallocate(&zero, a, &pages).unwrap();
        cache.deallocate(&zero, b, &pages).unwrap();
    }
    // SAFETY: `a` is under `b` in the magazine; the bitmap sees the double free.
    let again = unsafe { cache.deallocate(&zero, a, &pages) };
    assert_eq!(again, Err(FreeError::DoubleFree));
    assert_eq!(cache.stats().objects_in_use, 0);
    drain(&cache, &pages);
}

#[test]
fn per_object_checks_bypass_the_magazines_and_catch_a_write_after_free() {
    static REPORTS: AtomicUsize = AtomicUsize::new(0);
    fn on_corruption(_: FreeError, _: *mut u8) {
        REPORTS.fetch_add(1, Ordering::SeqCst);
    }
    let pages = TrackingPages::new();
    let config = SlabConfig::new(64, 8)
        .with_hardening(Hardening::DEBUG)
        .with_corruption_handler(on_corruption);
    let cache: Cache = PinnedPerCpuCache::new(config).unwrap();
    let zero = cpu(0);
    let objects: Vec<_> = (0..3 * MAGAZINE_ROUNDS)
        .map(|_| cache.allocate(&zero, &pages).unwrap())
        .collect();
    for &object in &objects {
        // SAFETY: allocated above, freed once.
        unsafe { cache.deallocate(&zero, object, &pages) }.unwrap();
    }
    // Every free went to the slabs, checked: no magazine holds anything.
    let stats = cache.stats();
    assert_eq!((stats.objects_in_use, stats.objects_cached), (0, 0));
    let victim = cache.allocate(&zero, &pages).unwrap();
    // SAFETY: allocated above, freed once.
    unsafe { cache.deallocate(&zero, victim, &pages) }.unwrap();
    // SAFETY: the test plays a buggy caller writing after free.
    unsafe { victim.byte_add(24).write(0x5a) };
    let next = cache.allocate(&zero, &pages).unwrap();
    assert_ne!(next, victim, "a poisoned object is not handed out again");
    assert_eq!(REPORTS.load(Ordering::SeqCst), 1);
    assert_eq!(cache.stats().objects_quarantined, 1);
    // SAFETY: allocated above, freed once.
    unsafe { cache.deallocate(&zero, next, &pages) }.unwrap();
}

#[test]
fn random_operations_across_cpus_match_the_model() {
    let steps = if cfg!(miri) { 300 } else { 30_000 };
    let pages = TrackingPages::new();
    let cache = pinned(40, Hardening::DEFAULT);
    let cpus = [cpu(0), cpu(1), cpu(9)];
    let mut rng = XorShift(0x5eed);
    let mut live: Vec<(NonNull<u8>, u8)> = Vec::new();
    for step in 0..steps {
        let here = &cpus[rng.below(cpus.len())];
        if live.is_empty() || rng.below(100) < 52 {
            let object = cache.allocate(here, &pages).unwrap();
            assert_eq!(object.addr().get() % 8, 0);
            assert!(pages.owns(object.addr().get(), 40));
            let tag = rng.next() as u8;
            // SAFETY: the object is ours, 40 bytes.
            unsafe { object.write_bytes(tag, 40) };
            live.push((object, tag));
        } else {
            let (object, tag) = live.swap_remove(rng.below(live.len()));
            // SAFETY: ours; only we wrote it if objects never overlap.
            let intact = unsafe { core::slice::from_raw_parts(object.as_ptr(), 40) }
                .iter()
                .all(|byte| *byte == tag);
            assert!(intact, "object overwritten: objects overlap");
            // SAFETY: allocated above, freed once.
            unsafe { cache.deallocate(here, object, &pages) }.unwrap();
        }
        if step % 97 == 0 {
            assert_eq!(cache.stats().objects_in_use, live.len());
        }
        if step % 4099 == 4098 {
            cache.reap(&pages);
        }
    }
    for (object, _) in live.drain(..) {
        // SAFETY: allocated above, freed once.
        unsafe { cache.deallocate(&cpus[0], object, &pages) }.unwrap();
    }
    assert_eq!(cache.stats().corruptions, 0);
    drain(&cache, &pages);
}

/// An object moved to another thread, which then owns it alone.
struct Handed(NonNull<u8>);
// SAFETY: whoever holds a `Handed` owns the object alone.
unsafe impl Send for Handed {}

#[test]
fn threads_pinned_to_their_own_cpus_free_each_others_objects() {
    let rounds = if cfg!(miri) { 50 } else { 5_000 };
    let pages = TrackingPages::new();
    let cache = pinned(64, Hardening::DEFAULT);
    let (to_one, from_zero) = mpsc::channel::<Handed>();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let zero = cpu(0);
            for round in 0..rounds {
                let object = cache.allocate(&zero, &pages).unwrap();
                // SAFETY: ours until handed over.
                unsafe { object.cast::<usize>().write(round) };
                to_one.send(Handed(object)).unwrap();
            }
            drop(to_one);
            cache.flush_cpu(&zero, &pages);
        });
        scope.spawn(|| {
            let one = cpu(1);
            let mut expected = 0;
            for Handed(object) in from_zero {
                let mine = cache.allocate(&one, &pages).unwrap();
                // SAFETY: handed over by CPU 0, which no longer touches it.
                assert_eq!(unsafe { object.cast::<usize>().read() }, expected);
                expected += 1;
                // SAFETY: allocated on CPU 0 or 1, freed once, on CPU 1.
                unsafe {
                    cache.deallocate(&one, object, &pages).unwrap();
                    cache.deallocate(&one, mine, &pages).unwrap();
                }
            }
            assert_eq!(expected, rounds);
            cache.flush_cpu(&one, &pages);
        });
    });
    assert_eq!(cache.stats().objects_in_use, 0);
    cache.shrink(&pages);
    assert_eq!(pages.pages_out(), 0);
}
