//! The QEMU `virt` devices besides the UART: the test device that ends the
//! run with an exit status, and the machine timer used to time the boot.

/// MMIO address of the `sifive,test` device that powers QEMU off.
const TEST_DEVICE: usize = 0x10_0000;
/// Written to the test device: exit QEMU with status 0.
const TEST_PASS: u32 = 0x5555;
/// Low half written to the test device: exit with the status in the high half.
const TEST_FAIL: u32 = 0x3333;
/// MMIO address of the CLINT's 64-bit `mtime` counter.
const MTIME: usize = 0x0200_bff8;
/// `mtime` ticks per second on QEMU `virt` (its device tree says the same).
const MTIME_HZ: u64 = 10_000_000;

/// Why the kernel failed, as the QEMU exit status the runner sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FailCode {
    /// A self-test check or other Rust panic.
    Panic = 1,
    /// A CPU exception (bad access, illegal instruction, ...).
    Trap = 2,
}

fn write_test_device(value: u32) -> ! {
    let device: *mut u32 = core::ptr::with_exposed_provenance_mut(TEST_DEVICE);
    // SAFETY: QEMU `virt` maps the test device here; the write ends the run.
    unsafe { device.write_volatile(value) };
    // Only reached on a machine without the device.
    loop {
        // SAFETY: waiting for an interrupt has no memory effects.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
    }
}

/// Ends the run with exit status 0.
pub fn exit_success() -> ! {
    write_test_device(TEST_PASS)
}

/// Ends the run with a nonzero exit status naming the cause.
pub fn exit_failure(code: FailCode) -> ! {
    write_test_device((u32::from(code as u8) << 16) | TEST_FAIL)
}

/// Microseconds since the machine started.
pub fn micros() -> u64 {
    let mtime: *const u64 = core::ptr::with_exposed_provenance(MTIME);
    // SAFETY: the CLINT's mtime register is an always-readable 64-bit counter.
    let ticks = unsafe { mtime.read_volatile() };
    ticks / (MTIME_HZ / 1_000_000)
}
