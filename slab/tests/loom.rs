//! loom models of the per-CPU magazine front: objects freed on another CPU
//! than the one that allocated them, magazines traded through the depot.
//! The pinned front is modelled too: CPUs use their magazines with no lock
//! while other threads read stats and reap. Under loom a magazine holds 4
//! objects and the depot 1 magazine, so a few operations reach every path.
#![cfg(loom)]

use std::alloc::{Layout, alloc, dealloc};
use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

use kalloc_api::{AllocError, FreeError, PAGE_SIZE, PageSource, PinnedCpu};
use kalloc_slab::{Hardening, PerCpuCache, PinnedPerCpuCache, SlabConfig};
use loom::sync::{Arc, Mutex};
use loom::thread;

/// Pages from the host allocator, counted. Only called under the depot lock,
/// so plain atomics suffice.
struct CountedPages {
    out: AtomicUsize,
}

// SAFETY: runs come from `std::alloc` with the promised size and alignment
// and are freed with the same layout.
unsafe impl PageSource for CountedPages {
    fn allocate_pages(&self, count: usize, align_pages: usize) -> Result<NonNull<u8>, AllocError> {
        let layout = Layout::from_size_align(count * PAGE_SIZE, align_pages.max(count) * PAGE_SIZE)
            .map_err(|_| AllocError::BadAlignment)?;
        // SAFETY: non-zero size.
        let pages = NonNull::new(unsafe { alloc(layout) }).ok_or(AllocError::OutOfMemory)?;
        self.out.fetch_add(count, Ordering::Relaxed);
        Ok(pages)
    }

    unsafe fn deallocate_pages(&self, pages: NonNull<u8>, count: usize) -> Result<(), FreeError> {
        let layout = Layout::from_size_align(count * PAGE_SIZE, count * PAGE_SIZE).unwrap();
        // SAFETY: (caller) slabs are allocated with align == count.
        unsafe { dealloc(pages.as_ptr(), layout) };
        self.out.fetch_sub(count, Ordering::Relaxed);
        Ok(())
    }
}

loom::thread_local! {
    static CPU: Cell<usize> = Cell::new(0);
}

fn current_cpu() -> usize {
    CPU.with(Cell::get)
}

type Cache = PerCpuCache<fn() -> usize, 2>;

fn new_cache() -> Cache {
    PerCpuCache::new(
        SlabConfig::new(32, 8).with_hardening(Hardening::DEFAULT),
        current_cpu as fn() -> usize,
    )
    .unwrap()
}

/// An object pointer moved between threads.
struct Handed(NonNull<u8>);
// SAFETY: whoever holds a `Handed` owns the object alone.
unsafe impl Send for Handed {}

fn stamp(object: NonNull<u8>, owner: u64) {
    // SAFETY: the caller owns the object, at least 8 bytes.
    unsafe { object.cast::<u64>().write(owner) };
}

fn stamped(object: NonNull<u8>) -> u64 {
    // SAFETY: as above.
    unsafe { object.cast::<u64>().read() }
}

#[test]
fn object_freed_on_another_cpu_is_never_handed_out_twice() {
    loom::model(|| {
        let pages = Arc::new(CountedPages {
            out: AtomicUsize::new(0),
        });
        let cache = Arc::new(new_cache());
        let handoff: Arc<Mutex<Option<Handed>>> = Arc::new(Mutex::new(None));

        let a = {
            let (cache, pages, handoff) = (cache.clone(), pages.clone(), handoff.clone());
            thread::spawn(move || {
                CPU.with(|c| c.set(0));
                let x = cache.allocate(&*pages).unwrap();
                stamp(x, 0xa);
                *handoff.lock().unwrap() = Some(Handed(x));
                let y = cache.allocate(&*pages).unwrap();
                stamp(y, 0xa);
                Handed(y)
            })
        };
        let b = {
            let (cache, pages, handoff) = (cache.clone(), pages.clone(), handoff.clone());
            thread::spawn(move || {
                CPU.with(|c| c.set(1));
                let x = loop {
                    if let Some(Handed(x)) = handoff.lock().unwrap().take() {
                        break x;
                    }
                    thread::yield_now();
                };
                assert_eq!(stamped(x), 0xa);
                // SAFETY: allocated on CPU 0, freed once, here on CPU 1.
                unsafe { cache.deallocate(x, &*pages) }.unwrap();
                let z = cache.allocate(&*pages).unwrap();
                stamp(z, 0xb);
                Handed(z)
            })
        };
        let Handed(y) = a.join().unwrap();
        let Handed(z) = b.join().unwrap();
        assert_ne!(y, z);
        assert_eq!((stamped(y), stamped(z)), (0xa, 0xb));
        assert_eq!(cache.stats().objects_in_use, 2);
        // SAFETY: allocated above, freed once each.
        unsafe {
            cache.deallocate(y, &*pages).unwrap();
            cache.deallocate(z, &*pages).unwrap();
        }
        let stats = cache.stats();
        assert_eq!(stats.objects_in_use, 0);
        assert_eq!(
            stats.objects_cached + stats.objects_free,
            stats.total_objects()
        );
        cache.shrink(&*pages);
        assert_eq!(cache.stats().slabs, 0);
        assert_eq!(pages.out.load(Ordering::Relaxed), 0);
    });
}

#[test]
fn magazines_traded_through_the_depot_stay_exact() {
    loom::model(|| {
        let pages = Arc::new(CountedPages {
            out: AtomicUsize::new(0),
        });
        let cache = Arc::new(new_cache());
        let workers: Vec<_> = (0..2u64)
            .map(|cpu| {
                let (cache, pages) = (cache.clone(), pages.clone());
                thread::spawn(move || {
                    CPU.with(|c| c.set(cpu as usize));
                    // More than a magazine: the second allocation phase and
                    // the frees go through swaps and the depot.
                    let objects: Vec<_> =
                        (0..6).map(|_| cache.allocate(&*pages).unwrap()).collect();
                    for object in &objects {
                        stamp(*object, cpu + 1);
                    }
                    for object in objects {
                        assert_eq!(stamped(object), cpu + 1, "object handed out twice");
                        // SAFETY: allocated above, freed once.
                        unsafe { cache.deallocate(object, &*pages) }.unwrap();
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        let stats = cache.stats();
        assert_eq!(stats.objects_in_use, 0);
        assert_eq!(
            stats.objects_cached + stats.objects_free,
            stats.total_objects()
        );
        cache.shrink(&*pages);
        assert_eq!(pages.out.load(Ordering::Relaxed), 0);
    });
}

/// A [`PinnedCpu`] token for a loom thread.
fn pinned(index: usize) -> PinnedCpu {
    // SAFETY: each model thread uses its own index, and the main thread
    // makes tokens only after joining them.
    unsafe { PinnedCpu::new(index) }
}

#[test]
fn pinned_front_trades_through_the_depot_while_stats_and_reap_run() {
    loom::model(|| {
        let pages = Arc::new(CountedPages {
            out: AtomicUsize::new(0),
        });
        let cache: Arc<PinnedPerCpuCache<2>> = Arc::new(
            PinnedPerCpuCache::new(SlabConfig::new(32, 8).with_hardening(Hardening::DEFAULT))
                .unwrap(),
        );
        let handoff: Arc<Mutex<Option<Handed>>> = Arc::new(Mutex::new(None));
        let a = {
            let (cache, pages, handoff) = (cache.clone(), pages.clone(), handoff.clone());
            thread::spawn(move || {
                let cpu = pinned(0);
                // More than a magazine, so the frees below spill to the depot.
                let objects: Vec<_> = (0..5)
                    .map(|_| cache.allocate(&cpu, &*pages).unwrap())
                    .collect();
                for object in &objects {
                    stamp(*object, 0xa);
                }
                *handoff.lock().unwrap() = Some(Handed(objects[0]));
                for object in &objects[1..] {
                    assert_eq!(stamped(*object), 0xa, "object handed out twice");
                    // SAFETY: allocated above, freed once.
                    unsafe { cache.deallocate(&cpu, *object, &*pages) }.unwrap();
                }
            })
        };
        let b = {
            let (cache, pages, handoff) = (cache.clone(), pages.clone(), handoff.clone());
            thread::spawn(move || {
                let cpu = pinned(1);
                let mine = cache.allocate(&cpu, &*pages).unwrap();
                stamp(mine, 0xb);
                let x = loop {
                    if let Some(Handed(x)) = handoff.lock().unwrap().take() {
                        break x;
                    }
                    thread::yield_now();
                };
                assert_eq!(stamped(x), 0xa);
                assert_eq!(stamped(mine), 0xb, "object handed out twice");
                // SAFETY: allocated on CPU 0 (`x`) and 1 (`mine`), freed once, here.
                unsafe {
                    cache.deallocate(&cpu, x, &*pages).unwrap();
                    cache.deallocate(&cpu, mine, &*pages).unwrap();
                }
            })
        };
        // Housekeeping runs meanwhile; it never touches the CPUs' magazines.
        // Objects moving between a magazine and the slabs may count as in
        // use until the CPU publishes its counts, never beyond the slabs.
        let stats = cache.stats();
        assert!(stats.objects_in_use <= stats.total_objects());
        cache.reap(&*pages);
        a.join().unwrap();
        b.join().unwrap();
        let stats = cache.stats();
        assert_eq!(stats.objects_in_use, 0);
        assert_eq!(
            stats.objects_cached + stats.objects_free,
            stats.total_objects()
        );
        for index in 0..2 {
            cache.flush_cpu(&pinned(index), &*pages);
        }
        cache.shrink(&*pages);
        assert_eq!(pages.out.load(Ordering::Relaxed), 0);
    });
}
