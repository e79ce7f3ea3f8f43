use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::vec::Vec;

use kalloc_api::{AllocError, FreeError, PAGE_SIZE};

use super::SlabCache;
use crate::config::{Hardening, SlabConfig};
use crate::stats::CacheStats;
use crate::test_support::{TrackingPages, XorShift};

fn cache(size: usize, align: usize, hardening: Hardening) -> SlabCache {
    SlabCache::new(SlabConfig::new(size, align).with_hardening(hardening)).unwrap()
}

/// Every slot accounted for, and page counts consistent.
fn assert_consistent(stats: &CacheStats, pages: &TrackingPages) {
    assert_eq!(
        stats.objects_in_use
            + stats.objects_cached
            + stats.objects_free
            + stats.objects_quarantined,
        stats.total_objects(),
        "{stats:?}"
    );
    assert_eq!(
        stats.slabs,
        stats.full_slabs + stats.partial_slabs + stats.empty_slabs + stats.quarantined_slabs
    );
    assert_eq!(stats.pages_held, pages.pages_out());
    assert!(stats.peak_objects_out >= stats.objects_in_use + stats.objects_cached);
}

#[test]
fn peak_counts_the_most_objects_out_at_once() {
    let pages = TrackingPages::new();
    let mut cache = cache(64, 8, Hardening::DEFAULT);
    let mut objects: Vec<_> = (0..10).map(|_| cache.allocate(&pages).unwrap()).collect();
    for object in objects.drain(4..) {
        // SAFETY: allocated above, freed once.
        unsafe { cache.deallocate(object, &pages) }.unwrap();
    }
    objects.extend((0..3).map(|_| cache.allocate(&pages).unwrap()));
    let stats = cache.stats();
    assert_eq!((stats.objects_in_use, stats.peak_objects_out), (7, 10));
    for object in objects {
        // SAFETY: allocated above, freed once.
        unsafe { cache.deallocate(object, &pages) }.unwrap();
    }
    cache.shrink(0, &pages);
    assert_eq!(
        cache.stats().peak_objects_out,
        10,
        "the peak outlives the slabs"
    );
}

#[test]
fn objects_are_aligned_distinct_and_inside_owned_slabs() {
    let pages = TrackingPages::new();
    let mut cache = cache(48, 16, Hardening::DEFAULT);
    let count = cache.objects_per_slab() * 3 + 1;
    let mut objects: Vec<usize> = (0..count)
        .map(|_| cache.allocate(&pages).unwrap().addr().get())
        .collect();
    for &object in &objects {
        assert_eq!(object % 16, 0);
        assert!(pages.owns(object, 48));
    }
    objects.sort_unstable();
    for pair in objects.windows(2) {
        assert!(pair[0] + 48 <= pair[1], "objects overlap");
    }
    let stats = cache.stats();
    assert_eq!(stats.objects_in_use, count);
    assert_eq!(stats.slabs, 4);
    assert_eq!(stats.full_slabs, 3);
    assert_consistent(&stats, &pages);
}

#[test]
fn every_page_comes_back_after_shrink_on_an_empty_cache() {
    let pages = TrackingPages::new();
    let mut cache = SlabCache::new(
        SlabConfig::new(700, 8)
            .with_hardening(Hardening::DEBUG)
            .with_max_empty_slabs(usize::MAX),
    )
    .unwrap();
    let objects: Vec<_> = (0..100).map(|_| cache.allocate(&pages).unwrap()).collect();
    let held = cache.stats().slabs;
    assert!(held > 1);
    for object in objects {
        // SAFETY: allocated above, freed once.
        unsafe { cache.deallocate(object, &pages) }.unwrap();
    }
    assert_eq!(cache.stats().empty_slabs, held);
    assert_eq!(cache.shrink(1, &pages), held - 1);
    assert_eq!(cache.shrink(0, &pages), 1);
    assert_eq!(pages.pages_out(), 0);
    let stats = cache.stats();
    assert_eq!(
        (stats.slabs, stats.pages_held, stats.objects_free),
        (0, 0, 0)
    );
}

#[test]
fn frees_beyond_the_empty_slab_limit_give_slabs_back() {
    let pages = TrackingPages::new();
    let mut cache = SlabCache::new(SlabConfig::new(1024, 8).with_max_empty_slabs(1)).unwrap();
    let per_slab = cache.objects_per_slab();
    let objects: Vec<_> = (0..per_slab * 3)
        .map(|_| cache.allocate(&pages).unwrap())
        .collect();
    for object in objects {
        // SAFETY: allocated above, freed once.
        unsafe { cache.deallocate(object, &pages) }.unwrap();
    }
    let stats = cache.stats();
    assert_eq!((stats.slabs, stats.empty_slabs), (1, 1));
    assert_eq!(pages.pages_out(), cache.slab_pages());
}

/// Allocates `count` objects, then frees them in order.
fn burst(cache: &mut SlabCache, count: usize, pages: &TrackingPages) {
    let objects: Vec<_> = (0..count).map(|_| cache.allocate(pages).unwrap()).collect();
    for object in objects {
        // SAFETY: allocated above, freed once.
        unsafe { cache.deallocate(object, pages) }.unwrap();
    }
}

#[test]
fn a_repeated_burst_reuses_its_slabs_without_the_page_source() {
    let pages = TrackingPages::new();
    let mut cache = cache(256, 8, Hardening::DEFAULT);
    let count = cache.objects_per_slab() * 10;
    burst(&mut cache, count, &pages);
    let held = pages.pages_out();
    assert_eq!(
        held,
        10 * cache.slab_pages(),
        "every slab of the burst is kept"
    );
    for _ in 0..5 {
        burst(&mut cache, count, &pages);
        assert_eq!(pages.pages_out(), held);
    }
    // A smaller use after a bigger burst keeps no more than the peak.
    burst(&mut cache, count / 2, &pages);
    assert!(pages.pages_out() <= held);
    assert_consistent(&cache.stats(), &pages);
}

#[test]
fn reap_gives_back_only_slabs_idle_for_a_whole_period() {
    let pages = TrackingPages::new();
    let mut cache = cache(256, 8, Hardening::DEFAULT);
    let per_slab = cache.objects_per_slab();
    burst(&mut cache, per_slab * 8, &pages);
    assert_eq!(cache.stats().slabs, 8);
    assert_eq!(
        cache.reap(&pages),
        0,
        "the burst used every slab in this period"
    );
    // Next period: only three slabs' worth is needed.
    burst(&mut cache, per_slab * 3, &pages);
    let released = cache.reap(&pages);
    assert_eq!(released, 5, "five slabs stayed empty all period");
    assert_eq!(cache.stats().slabs, 3);
    assert_consistent(&cache.stats(), &pages);
    assert_eq!(
        cache.reap(&pages),
        2,
        "a period without use drains all but the idle slab"
    );
    assert_eq!(cache.stats().slabs, 1);
    cache.shrink(0, &pages);
    assert_eq!(pages.pages_out(), 0);
}

#[test]
fn allocation_prefers_the_most_used_partial_slab() {
    let pages = TrackingPages::new();
    let mut cache = cache(256, 8, Hardening::NONE);
    let per_slab = cache.objects_per_slab();
    let first: Vec<_> = (0..per_slab)
        .map(|_| cache.allocate(&pages).unwrap())
        .collect();
    // A second slab, barely used.
    let second = cache.allocate(&pages).unwrap();
    let slab_of = |p: NonNull<u8>| p.addr().get() & !(cache.slab_pages() * PAGE_SIZE - 1);
    assert_ne!(slab_of(first[0]), slab_of(second));
    // The full first slab gets one object back: it is now the most used partial slab.
    // SAFETY: allocated above, freed once.
    unsafe { cache.deallocate(first[3], &pages) }.unwrap();
    let next = cache.allocate(&pages).unwrap();
    assert_eq!(next, first[3]);
    assert_eq!(cache.stats().partial_slabs, 1);
}

#[test]
fn immediate_double_free_is_reported_and_nothing_is_lost() {
    let pages = TrackingPages::new();
    let mut cache = cache(32, 8, Hardening::DEFAULT);
    let a = cache.allocate(&pages).unwrap();
    let _b = cache.allocate(&pages).unwrap();
    // SAFETY: allocated above; the second free is the misuse under test.
    unsafe { cache.deallocate(a, &pages) }.unwrap();
    let before = cache.stats();
    // SAFETY: as above.
    let outcome = unsafe { cache.deallocate(a, &pages) };
    assert_eq!(outcome, Err(FreeError::DoubleFree));
    assert_eq!(cache.stats(), before);
    // The free list is intact: `a` comes back exactly once.
    let again = cache.allocate(&pages).unwrap();
    assert_eq!(again, a);
    assert_ne!(cache.allocate(&pages).unwrap(), a);
    assert_consistent(&cache.stats(), &pages);
}

#[test]
fn double_free_into_an_empty_slab_is_reported() {
    let pages = TrackingPages::new();
    let mut cache = cache(32, 8, Hardening::NONE);
    let a = cache.allocate(&pages).unwrap();
    let b = cache.allocate(&pages).unwrap();
    // SAFETY: allocated above; the third free is the misuse under test.
    unsafe { cache.deallocate(a, &pages) }.unwrap();
    // SAFETY: as above.
    unsafe { cache.deallocate(b, &pages) }.unwrap();
    // SAFETY: as above.
    let outcome = unsafe { cache.deallocate(a, &pages) };
    assert_eq!(outcome, Err(FreeError::DoubleFree));
    assert_eq!(cache.stats().objects_in_use, 0);
    assert_eq!(cache.stats().empty_slabs, 1);
}

#[test]
fn any_double_free_is_caught_by_the_bitmap() {
    let pages = TrackingPages::new();
    let mut cache = cache(64, 8, Hardening::DOUBLE_FREE_BITMAP);
    let objects: Vec<_> = (0..4).map(|_| cache.allocate(&pages).unwrap()).collect();
    // SAFETY: allocated above; the repeated free of objects[0] is the misuse under test.
    unsafe {
        cache.deallocate(objects[0], &pages).unwrap();
        cache.deallocate(objects[1], &pages).unwrap();
    }
    let before = cache.stats();
    // Not the free-list head any more: only the bitmap can tell.
    // SAFETY: as above.
    let outcome = unsafe { cache.deallocate(objects[0], &pages) };
    assert_eq!(outcome, Err(FreeError::DoubleFree));
    assert_eq!(cache.stats(), before);
    let a = cache.allocate(&pages).unwrap();
    let b = cache.allocate(&pages).unwrap();
    let c = cache.allocate(&pages).unwrap();
    assert!(a != b && b != c && a != c);
    assert_eq!(cache.stats().objects_in_use, 5);
}

#[test]
fn foreign_address_is_reported() {
    let pages = TrackingPages::new();
    let mut ours = cache(64, 8, Hardening::NONE);
    let mut theirs = cache(96, 8, Hardening::NONE);
    assert_eq!(ours.slab_pages(), theirs.slab_pages());
    let _mine = ours.allocate(&pages).unwrap();
    let stranger = theirs.allocate(&pages).unwrap();
    let before = ours.stats();
    // SAFETY: the slab under `stranger` is as large as ours, so the header read is in bounds.
    let outcome = unsafe { ours.deallocate(stranger, &pages) };
    assert_eq!(outcome, Err(FreeError::NotOwned));
    assert_eq!(ours.stats(), before);
    // SAFETY: as above.
    let outcome = unsafe { ours.check_object(stranger) };
    assert_eq!(outcome, Err(FreeError::NotOwned));
    // SAFETY: `stranger` is theirs.
    unsafe { theirs.deallocate(stranger, &pages) }.unwrap();
}

#[test]
fn misaligned_address_is_reported() {
    let pages = TrackingPages::new();
    let mut cache = cache(64, 8, Hardening::DEFAULT);
    let object = cache.allocate(&pages).unwrap();
    let before = cache.stats();
    // SAFETY: inside our own slab; the free is refused.
    let inside = unsafe { object.byte_add(8) };
    // SAFETY: as above.
    let outcome = unsafe { cache.deallocate(inside, &pages) };
    assert_eq!(outcome, Err(FreeError::Misaligned));
    let header = object.map_addr(|a| {
        core::num::NonZeroUsize::new(a.get() & !(cache.slab_pages() * PAGE_SIZE - 1)).unwrap()
    });
    // SAFETY: the slab start is readable; the free is refused.
    let outcome = unsafe { cache.deallocate(header, &pages) };
    assert_eq!(outcome, Err(FreeError::Misaligned));
    assert_eq!(cache.stats(), before);
    // SAFETY: allocated above.
    unsafe { cache.deallocate(object, &pages) }.unwrap();
}

#[test]
fn bad_configurations_are_refused() {
    assert_eq!(
        SlabCache::new(SlabConfig::new(0, 8)).err(),
        Some(AllocError::ZeroSize)
    );
    assert_eq!(
        SlabCache::new(SlabConfig::new(8, 12)).err(),
        Some(AllocError::BadAlignment)
    );
    assert_eq!(
        SlabCache::new(SlabConfig::new(usize::MAX, 8)).err(),
        Some(AllocError::Overflow)
    );
    assert_eq!(
        SlabCache::new(SlabConfig::new(crate::MAX_SLAB_BYTES, 8)).err(),
        Some(AllocError::Overflow)
    );
}

#[test]
fn exhaustion_is_reported_and_recovers_after_a_free() {
    let pages = TrackingPages::with_limit(1);
    let mut cache = cache(128, 8, Hardening::DEFAULT);
    let per_slab = cache.objects_per_slab();
    let objects: Vec<_> = (0..per_slab)
        .map(|_| cache.allocate(&pages).unwrap())
        .collect();
    assert_eq!(cache.allocate(&pages), Err(AllocError::OutOfMemory));
    let stats = cache.stats();
    assert_eq!(
        (stats.failed_allocations, stats.objects_in_use),
        (1, per_slab)
    );
    assert_consistent(&stats, &pages);
    // SAFETY: allocated above.
    unsafe { cache.deallocate(objects[5], &pages) }.unwrap();
    assert_eq!(cache.allocate(&pages).unwrap(), objects[5]);
}

#[test]
fn corrupted_free_list_link_is_caught_before_use() {
    static REPORTS: AtomicUsize = AtomicUsize::new(0);
    fn on_corruption(error: FreeError, _: *mut u8) {
        assert_eq!(error, FreeError::Corrupted);
        REPORTS.fetch_add(1, Ordering::SeqCst);
    }
    let pages = TrackingPages::new();
    let mut cache = SlabCache::new(
        SlabConfig::new(64, 8)
            .with_hardening(Hardening::FREELIST_HARDENED)
            .with_corruption_handler(on_corruption),
    )
    .unwrap();
    let a = cache.allocate(&pages).unwrap();
    let b = cache.allocate(&pages).unwrap();
    // SAFETY: allocated above.
    unsafe { cache.deallocate(a, &pages) }.unwrap();
    // A use-after-free write aims the link at a target of the attacker's choice.
    let target = core::ptr::addr_of!(REPORTS).addr();
    // SAFETY: the test plays the attacker, writing into the freed object.
    unsafe { a.cast::<usize>().write(target) };
    let c = cache.allocate(&pages).unwrap();
    assert_eq!(REPORTS.load(Ordering::SeqCst), 1);
    assert!(pages.owns(c.addr().get(), 64));
    assert_ne!(c, a);
    let stats = cache.stats();
    assert_eq!((stats.quarantined_slabs, stats.corruptions), (1, 1));
    assert_eq!(stats.objects_in_use, 2);
    assert_consistent(&stats, &pages);
    // Objects of the quarantined slab may still be freed; the slab is never reused.
    // SAFETY: `b` was allocated above.
    unsafe { cache.deallocate(b, &pages) }.unwrap();
    assert_eq!(cache.stats().objects_in_use, 1);
    assert_consistent(&cache.stats(), &pages);
}

#[test]
fn write_after_free_is_caught_by_poison() {
    static REPORTS: AtomicUsize = AtomicUsize::new(0);
    static AT: AtomicUsize = AtomicUsize::new(0);
    fn on_corruption(_: FreeError, at: *mut u8) {
        REPORTS.fetch_add(1, Ordering::SeqCst);
        AT.store(at.addr(), Ordering::SeqCst);
    }
    let pages = TrackingPages::new();
    let mut cache = SlabCache::new(
        SlabConfig::new(64, 8)
            .with_hardening(Hardening::POISON)
            .with_corruption_handler(on_corruption),
    )
    .unwrap();
    let a = cache.allocate(&pages).unwrap();
    // SAFETY: allocated above.
    unsafe { cache.deallocate(a, &pages) }.unwrap();
    // SAFETY: the test plays a buggy caller writing after free.
    unsafe { a.byte_add(20).write(1) };
    let b = cache.allocate(&pages).unwrap();
    assert_ne!(b, a);
    assert_eq!(REPORTS.load(Ordering::SeqCst), 1);
    assert_eq!(AT.load(Ordering::SeqCst), a.addr().get());
    let stats = cache.stats();
    assert_eq!((stats.objects_in_use, stats.objects_quarantined), (1, 1));
    assert_consistent(&stats, &pages);
}

#[test]
fn overrun_is_caught_by_the_red_zone() {
    let pages = TrackingPages::new();
    let mut cache = cache(
        40,
        8,
        Hardening::RED_ZONE.union(Hardening::DOUBLE_FREE_BITMAP),
    );
    let a = cache.allocate(&pages).unwrap();
    // SAFETY: the test plays a buggy caller writing one byte past the object.
    unsafe { a.byte_add(40).write(0) };
    let before = cache.stats();
    // SAFETY: allocated above.
    let outcome = unsafe { cache.deallocate(a, &pages) };
    assert_eq!(outcome, Err(FreeError::Corrupted));
    assert_eq!(cache.stats(), before);
    // The refused free left the object held: a repaired zone lets it go.
    // SAFETY: restoring the guard byte the test broke.
    unsafe { a.byte_add(40).write(crate::RED_ZONE_BYTE) };
    // SAFETY: allocated above.
    unsafe { cache.deallocate(a, &pages) }.unwrap();
    assert_eq!(cache.stats().objects_in_use, 0);
}

#[test]
fn random_free_list_order_depends_on_the_seed_and_covers_every_slot() {
    let pages = TrackingPages::new();
    let order = |hardening: Hardening, seed: u64| {
        let mut cache = SlabCache::new(
            SlabConfig::new(64, 8)
                .with_hardening(hardening)
                .with_seed(seed),
        )
        .unwrap();
        let per_slab = cache.objects_per_slab();
        let objects: Vec<usize> = (0..per_slab)
            .map(|_| cache.allocate(&pages).unwrap().addr().get())
            .collect();
        let base = objects.iter().min().unwrap();
        let slots: Vec<usize> = objects.iter().map(|o| (o - base) / 64).collect();
        (slots, cache, objects)
    };
    let (plain, ..) = order(Hardening::NONE, 1);
    assert!(
        plain.windows(2).all(|w| w[0] + 1 == w[1]),
        "in order without shuffling"
    );
    let (one, ..) = order(Hardening::DEFAULT, 1);
    let (two, ..) = order(Hardening::DEFAULT, 2);
    let (one_again, ..) = order(Hardening::DEFAULT, 1);
    assert_eq!(one, one_again, "same seed, same order");
    assert_ne!(one, two);
    assert_ne!(one, plain);
    let mut sorted = one.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, plain, "a permutation of every slot");
}

/// Random allocations and frees against a model of the live objects.
fn random_operations(size: usize, align: usize, hardening: Hardening, seed: u64) {
    let steps = if cfg!(miri) { 150 } else { 20_000 };
    let pages = TrackingPages::new();
    let mut cache = SlabCache::new(
        SlabConfig::new(size, align)
            .with_hardening(hardening)
            .with_seed(seed),
    )
    .unwrap();
    let mut rng = XorShift(seed);
    let mut live: Vec<(NonNull<u8>, u8)> = Vec::new();
    for step in 0..steps {
        let grow = live.is_empty() || rng.below(100) < 55 - (step * 20 / steps);
        if grow {
            let object = cache.allocate(&pages).unwrap();
            assert_eq!(object.addr().get() % align, 0);
            assert!(pages.owns(object.addr().get(), size));
            let tag = rng.next() as u8;
            // SAFETY: the object is ours; writing all of it proves the size.
            unsafe { object.write_bytes(tag, size) };
            live.push((object, tag));
        } else {
            let (object, tag) = live.swap_remove(rng.below(live.len()));
            // SAFETY: ours; nobody else wrote it if objects never overlap.
            let intact = unsafe { core::slice::from_raw_parts(object.as_ptr(), size) }
                .iter()
                .all(|b| *b == tag);
            assert!(intact, "object overwritten: objects overlap");
            // SAFETY: allocated above, freed once.
            unsafe { cache.deallocate(object, &pages) }.unwrap();
        }
        if step % 64 == 0 {
            let stats = cache.stats();
            assert_eq!(stats.objects_in_use, live.len());
            assert_consistent(&stats, &pages);
        }
        if step % 1024 == 1023 {
            cache.reap(&pages);
            assert_consistent(&cache.stats(), &pages);
        }
    }
    for (object, _) in live.drain(..) {
        // SAFETY: allocated above, freed once.
        unsafe { cache.deallocate(object, &pages) }.unwrap();
    }
    cache.shrink(0, &pages);
    assert_eq!(pages.pages_out(), 0);
    assert_eq!(cache.stats().corruptions, 0);
}

#[test]
fn random_operations_match_the_model() {
    let sizes: &[(usize, usize)] = if cfg!(miri) {
        &[(24, 8), (1000, 64)]
    } else {
        &[
            (1, 1),
            (8, 8),
            (24, 8),
            (64, 64),
            (200, 8),
            (1000, 64),
            (3000, 8),
            (4096, 4096),
        ]
    };
    for &(size, align) in sizes {
        for (index, hardening) in [Hardening::NONE, Hardening::DEFAULT, Hardening::DEBUG]
            .into_iter()
            .enumerate()
        {
            random_operations(
                size,
                align,
                hardening,
                0x1234_5678 + index as u64 * 77 + size as u64,
            );
        }
    }
}

#[test]
fn cycling_one_object_moves_no_slab_between_lists() {
    let pages = TrackingPages::new();
    let mut cache = cache(64, 8, Hardening::DEFAULT);
    for _ in 0..3 {
        let object = cache.allocate(&pages).unwrap();
        let stats = cache.stats();
        assert_eq!((stats.partial_slabs, stats.empty_slabs), (1, 0));
        // SAFETY: allocated above, freed once.
        unsafe { cache.deallocate(object, &pages) }.unwrap();
        let stats = cache.stats();
        assert_eq!(
            (stats.slabs, stats.partial_slabs, stats.empty_slabs),
            (1, 0, 1)
        );
        assert_consistent(&stats, &pages);
    }
    assert_eq!(cache.shrink(1, &pages), 0);
    assert_eq!(cache.shrink(0, &pages), 1);
    assert_eq!(pages.pages_out(), 0);
    // The cache grows again from nothing.
    let object = cache.allocate(&pages).unwrap();
    // SAFETY: allocated above, freed once.
    unsafe { cache.deallocate(object, &pages) }.unwrap();
    assert_eq!(cache.shrink(0, &pages), 1);
}
