//! The self-tests, in boot order.

extern crate alloc;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use kalloc_api::Region;

use crate::devicetree::{self, PhysRange};
use crate::rng::XorShift;
use crate::{
    PASS_LINE, entry, frame_tests, global, machine, memory, println, slab_tests, smp, stack,
};

/// Times the boot phases on the machine timer.
struct Clock {
    booted_us: u64,
    last_us: u64,
}

impl Clock {
    fn new(booted_us: u64) -> Self {
        Self {
            booted_us,
            last_us: booted_us,
        }
    }

    /// Prints how long the phase that just ended took.
    fn lap(&mut self, phase: &str) {
        let now = machine::micros();
        println!("time      {phase}: {} us", now - self.last_us);
        self.last_us = now;
    }

    fn total_us(&self) -> u64 {
        machine::micros() - self.booted_us
    }
}

/// Runs every self-test on hart 0; returns only if all of them passed.
pub fn run(device_tree: usize, booted_us: u64) {
    let mut clock = Clock::new(booted_us);
    // SAFETY: `device_tree` is the address QEMU passed in a1; the blob lies in
    // RAM the kernel never writes (boot memory reserves it before any allocation).
    let platform = unsafe { devicetree::read(device_tree) }
        .unwrap_or_else(|error| panic!("device tree: {error}"));
    for ram in platform.ram.as_slice() {
        println!("ram       {:#x}..{:#x}", ram.start, ram.start + ram.len);
    }
    let image = memory::kernel_image();
    println!(
        "kernel    {:#x}..{:#x}",
        image.start,
        image.start + image.len
    );
    println!(
        "dtb       {:#x}..{:#x}",
        platform.blob.start,
        platform.blob.start + platform.blob.len
    );
    println!("harts     {}", platform.harts);
    clock.lap("device tree");

    // Before any frame allocator exists, the global allocator is the bump arena.
    let early_ram: Vec<PhysRange> = platform.ram.as_slice().to_vec();
    let early_text = alloc::format!("{} RAM range(s)", early_ram.len());
    let early_bytes = global::early_used();
    assert!(early_bytes > 0, "the early heap served nothing");

    let mut storage = [Region::EMPTY; memory::MAP_CAPACITY];
    let map = memory::firmware_map(&platform, &mut storage)
        .unwrap_or_else(|error| panic!("memory map: {error:?}"));
    let ram_bytes: u64 = platform.ram.as_slice().iter().map(|r| r.len).sum();
    println!(
        "map       {} KiB usable of {} KiB RAM",
        map.usable_bytes() >> 10,
        ram_bytes >> 10
    );
    let stack = stack::bring_up(&map, image, platform.blob);
    println!(
        "windows   bitmap {:?}, atomic bitmap {:?}, buddy {:?}",
        stack.bitmap_window, stack.atomic_window, stack.buddy_window
    );
    global::switch_to_main(stack.pages());
    println!(
        "early     {early_bytes} bytes from the bump arena ({early_text}), still readable after the switch"
    );
    assert_eq!(early_ram.as_slice(), platform.ram.as_slice());
    drop(early_ram);
    drop(early_text);
    clock.lap("bring-up");

    frame_tests::exercise("bitmap", &stack.bitmap, stack.bitmap_window);
    frame_tests::exercise("atomic bitmap", &stack.atomic, stack.atomic_window);
    frame_tests::exercise("buddy/per-hart", &stack.buddy, stack.buddy_window);
    clock.lap("frame tests");

    heap_churn();
    report_heap();
    clock.lap("heap churn");

    slab_tests::run(stack);
    clock.lap("slab tests");

    let harts = platform.harts.clamp(1, entry::MAX_HARTS);
    smp::check_replay_catches_overlaps();
    smp::run(stack, harts);
    clock.lap("smp test and replay");

    for hart in 0..harts {
        assert!(
            entry::stack_canary_intact(hart),
            "hart {hart} overflowed its stack"
        );
    }
    println!("boot      all self-tests in {} ms", clock.total_us() / 1000);
    println!("{PASS_LINE}");
}

/// Vec, Box, BTreeMap and String through the global allocator, checked.
fn heap_churn() {
    let mut rng = XorShift::new(0xc0ffee);
    let mut map: BTreeMap<u64, Box<[u64]>> = BTreeMap::new();
    let mut text = String::new();
    let mut vectors: Vec<Vec<u32>> = Vec::new();
    for round in 0..2_000u64 {
        let key = rng.next_u64() % 512;
        let len = 1 + rng.below(64);
        let boxed: Box<[u64]> = (0..len as u64).map(|i| key ^ i).collect();
        if let Some(old) = map.insert(key, boxed) {
            assert!(old.iter().enumerate().all(|(i, v)| *v == key ^ i as u64));
        }
        if rng.below(3) == 0 {
            let victim = rng.next_u64() % 512;
            map.remove(&victim);
        }
        write!(text, "{round},").expect("string write");
        if text.len() > 4096 {
            text.clear();
        }
        vectors.push((0..rng.below(300) as u32).collect());
        if vectors.len() > 64 {
            let gone = vectors.swap_remove(rng.below(vectors.len()));
            assert!(gone.iter().enumerate().all(|(i, v)| *v == i as u32));
        }
    }
    for (key, values) in &map {
        assert!(values.iter().enumerate().all(|(i, v)| *v == key ^ i as u64));
    }
    let big: Vec<u8> = alloc::vec![0xa5; 1 << 20];
    assert!(big.iter().all(|b| *b == 0xa5));
    println!(
        "heap      churn: {} map entries, {} vectors, {} bytes of text",
        map.len(),
        vectors.len(),
        text.len()
    );
}

/// Prints the heap's statistics and checks that shrinking gives pages back.
fn report_heap() {
    let stats = global::stats();
    println!(
        "heap      in use {} B (small {} B, mid {} B, large {} B), held {} B, peak {} B, mid fragmentation {} permille",
        stats.total.bytes_in_use,
        stats.small.bytes_in_use,
        stats.mid.bytes_in_use,
        stats.large.bytes_in_use,
        stats.total.bytes_held,
        stats.total.peak_bytes_in_use,
        stats.fragmentation_permille()
    );
    assert!(stats.total.bytes_held >= stats.total.bytes_in_use);
    let released = global::shrink();
    let after = global::stats();
    println!(
        "heap      shrink gave back {released} B; {} B held now",
        after.total.bytes_held
    );
    assert!(after.total.bytes_held <= stats.total.bytes_held);
}
