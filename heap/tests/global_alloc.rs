//! The heap as the `#[global_allocator]` of a real program: a std workload of
//! Vec, String, BTreeMap and HashMap churn on several threads, checking its
//! results, then checking that the heap's figures return to where they were.
//!
//! `harness = false`: the test harness's own threads would otherwise allocate
//! while the baseline is taken.

use std::collections::{BTreeMap, HashMap};
use std::thread;

use kalloc_api::ThreadCpuId;
use kalloc_heap::{PerCpuHeap, SystemPages};

/// Room for the main thread and both rounds of workload threads.
const CPUS: usize = 16;

#[global_allocator]
static HEAP: PerCpuHeap<SystemPages, ThreadCpuId, CPUS> =
    match PerCpuHeap::with_pages(ThreadCpuId, SystemPages) {
        Ok(heap) => heap,
        Err(_) => panic!("the size classes are valid slab configurations"),
    };

const THREADS: usize = 4;

fn workload(seed: u64, rounds: usize) -> u64 {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // Miri runs every byte through its interpreter: a tenth of the work.
    let scale = if cfg!(miri) { 10 } else { 1 };
    let mut checksum = 0u64;
    for round in 0..rounds {
        // Vec growth through every size class and into mid-size blocks.
        let mut numbers: Vec<u64> = Vec::new();
        let count = (next() % (4000 / scale)) as usize;
        for i in 0..count {
            numbers.push(i as u64 * 3);
        }
        assert_eq!(
            numbers.iter().sum::<u64>(),
            3 * (count as u64 * count.saturating_sub(1) as u64) / 2
        );
        numbers.truncate(count / 2);
        numbers.shrink_to_fit();
        checksum = checksum.wrapping_add(numbers.len() as u64);

        // Strings of many lengths.
        let mut text = String::new();
        for word in 0..(next() % (200 / scale)) {
            text.push_str(&format!("{word}-{round};"));
        }
        let words = text.split(';').filter(|w| !w.is_empty()).count();
        checksum = checksum.wrapping_add(words as u64);

        // Ordered map churn: insert, overwrite, remove half.
        let mut tree = BTreeMap::new();
        for _ in 0..(next() % (500 / scale)) {
            let key = next() % 1000;
            tree.insert(key, vec![key as u8; (key % 300) as usize]);
        }
        tree.retain(|key, _| key % 2 == 0);
        for (key, value) in &tree {
            assert_eq!(value.len(), (key % 300) as usize);
            assert!(value.iter().all(|b| *b == *key as u8));
        }
        checksum = checksum.wrapping_add(tree.len() as u64);

        // Hash map churn with String keys.
        let mut map: HashMap<String, usize> = HashMap::new();
        for i in 0..(next() % (300 / scale)) as usize {
            *map.entry(format!("key{}", i % 97)).or_default() += i;
        }
        let total: usize = map.values().sum();
        checksum = checksum.wrapping_add(total as u64);
    }
    checksum
}

fn run_threads(rounds: usize) -> Vec<u64> {
    let handles: Vec<_> = (0..THREADS)
        .map(|t| thread::spawn(move || workload(t as u64 + 1, rounds)))
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn main() {
    let rounds = if cfg!(miri) { 1 } else { 200 };
    // A first run lets std set up whatever it keeps for the program's life.
    drop(run_threads(1));
    let before = HEAP.stats();

    let sums = run_threads(rounds);
    // The same seeds single-threaded give the same results.
    for (t, sum) in sums.iter().enumerate() {
        assert_eq!(*sum, workload(t as u64 + 1, rounds), "thread {t}");
    }
    drop(sums);

    let after = HEAP.stats();
    // The per-CPU front counts only mid-size and large allocations (the
    // vectors that grew past 1 KiB).
    assert!(after.total.allocations > before.total.allocations);
    HEAP.shrink();
    let shrunk = HEAP.stats();
    // Nothing leaked; std may free a few bytes of its own thread bookkeeping
    // from the warm-up run lazily, so the figure may also drop a little.
    assert!(
        shrunk.total.bytes_in_use <= before.total.bytes_in_use
            && before.total.bytes_in_use - shrunk.total.bytes_in_use <= 256,
        "bytes in use {} after, {} before",
        shrunk.total.bytes_in_use,
        before.total.bytes_in_use
    );
    assert!(
        shrunk.total.bytes_held <= before.total.bytes_held + 256 * 1024,
        "held {} after shrink, {} before",
        shrunk.total.bytes_held,
        before.total.bytes_held
    );
    assert_eq!(shrunk.large.bytes_in_use, before.large.bytes_in_use);
    // stderr, unbuffered: stdout's first line would allocate its buffer
    // (1 KiB, a mid-size block) from this heap for good, which miri reports
    // as a leak of the chunk under it.
    eprintln!(
        "global_alloc: ok ({} mid/large allocations, {} bytes held after shrink)",
        shrunk.total.allocations, shrunk.total.bytes_held
    );
}
