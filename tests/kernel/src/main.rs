//! A bare-metal RISC-V test kernel for QEMU `virt` that boots on the whole
//! kalloc stack and checks it from the inside.
//!
//! Hart 0 reads the device tree, builds the memory map and runs the
//! self-tests; with more harts, all of them then allocate concurrently and
//! hart 0 checks that no two ever held the same memory. The run ends through
//! the QEMU test device, so QEMU's exit status is the verdict: 0 after
//! [`PASS_LINE`] is printed, nonzero on any failed check, panic or trap.
//! `run.sh` in this folder builds the kernel and boots it.
#![no_std]
#![no_main]

mod devicetree;
mod entry;
mod frame_tests;
mod global;
mod machine;
mod memory;
mod rng;
mod selftest;
mod slab_tests;
mod smp;
mod stack;
mod uart;

use core::panic::PanicInfo;

use machine::FailCode;

/// Printed as the last line of a run in which every self-test passed.
pub const PASS_LINE: &str = "KALLOC SELF-TEST PASS";
/// Printed when a run fails, before QEMU exits with a nonzero status.
pub const FAIL_LINE: &str = "KALLOC SELF-TEST FAIL";

/// Hart 0's Rust entry, called by the boot code with a cleared `.bss`.
#[unsafe(no_mangle)]
pub extern "C" fn kernel_main(hart: usize, device_tree: usize) -> ! {
    let booted_us = machine::micros();
    uart::init();
    entry::plant_stack_canary();
    println!("kalloc test kernel on hart {hart}, device tree at {device_tree:#x}");
    selftest::run(device_tree, booted_us);
    machine::exit_success()
}

/// Every other hart's Rust entry.
#[unsafe(no_mangle)]
pub extern "C" fn secondary_main(hart: usize, _device_tree: usize) -> ! {
    entry::plant_stack_canary();
    smp::secondary(hart)
}

/// Reports a CPU exception and fails the run (called from the trap vector).
#[unsafe(no_mangle)]
pub extern "C" fn trap_handler(cause: usize, pc: usize, value: usize, hart: usize) -> ! {
    uart::print_panic(format_args!(
        "\ntrap on hart {hart}: mcause {cause:#x} at pc {pc:#x}, mtval {value:#x}\n{FAIL_LINE}\n"
    ));
    machine::exit_failure(FailCode::Trap)
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    uart::print_panic(format_args!(
        "\npanic on hart {}: {info}\n{FAIL_LINE}\n",
        entry::hart_id()
    ));
    machine::exit_failure(FailCode::Panic)
}
