//! Instructions per allocate + free pair, counted with callgrind.
//!
//! Runs `PAIRS` pairs of one 64-byte object on the object cache named on the
//! command line, after a warm-up, so that the difference between two runs
//! with different pair counts, divided by the difference in pairs, is the
//! cost of one pair with setup and warm-up cancelled out:
//!
//! ```sh
//! cargo build --release -p kalloc-benches --example pair_instructions
//! for n in 100000 200000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/pair_instructions kalloc-slab-pcp $n 2>&1 | grep 'Collected'
//! done
//! ```
//!
//! `loop` runs the same loop on a cache that hands out one fixed pointer and
//! does nothing else: its count is the driver's own share (the loop and
//! `black_box`), to subtract from the others'.

use std::hint::black_box;
use std::ptr::NonNull;

use kalloc_benches::host::Host;
use kalloc_benches::object::{
    KallocPerCpuSlab, KallocPinnedSlab, KallocSlab, ObjectCacheBench, SlabmallocPeer,
};

const OBJECT_BYTES: usize = 64;
const WARM_UP_PAIRS: usize = 1_000;

fn run<C: ObjectCacheBench>(pairs: usize) {
    // Boxed, as a kernel's caches live in statics: a cache in this stack
    // frame would cost its address an extra add on every call.
    let mut cache = Box::new(C::new(OBJECT_BYTES));
    for _ in 0..WARM_UP_PAIRS + pairs {
        let object = cache.alloc().expect("object");
        // SAFETY: just allocated from this cache, freed once.
        unsafe { cache.free(black_box(object)) };
    }
}

/// The driver's own cost: a "cache" that does no work.
struct EmptyLoop;

impl ObjectCacheBench for EmptyLoop {
    const NAME: &'static str = "loop";
    const OURS: bool = false;

    fn new(_object_size: usize) -> Self {
        Self
    }

    #[inline]
    fn alloc(&mut self) -> Option<NonNull<u8>> {
        Some(NonNull::dangling())
    }

    #[inline]
    unsafe fn free(&mut self, _object: NonNull<u8>) {}
}

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "kalloc-slab-pcp".into());
    let pairs: usize = args
        .next()
        .map_or(100_000, |n| n.parse().expect("pair count"));
    match name.as_str() {
        "kalloc-slab" => run::<KallocSlab>(pairs),
        "kalloc-slab-pcp" => run::<KallocPerCpuSlab>(pairs),
        "kalloc-slab-pinned" => run::<KallocPinnedSlab>(pairs),
        "slabmalloc" => run::<SlabmallocPeer>(pairs),
        "mimalloc" => run::<Host<mimalloc::MiMalloc>>(pairs),
        "System" => run::<Host<std::alloc::System>>(pairs),
        "loop" => run::<EmptyLoop>(pairs),
        other => panic!(
            "unknown cache {other}: kalloc-slab, kalloc-slab-pcp, kalloc-slab-pinned, slabmalloc, mimalloc, System, loop"
        ),
    }
}
