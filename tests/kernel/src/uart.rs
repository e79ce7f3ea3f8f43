//! Console output on the 16550 UART of QEMU `virt`, and the `print!` macros.

use core::fmt::{self, Write};

use kalloc_api::sync::Mutex;

/// MMIO base of the first 16550 UART on QEMU `virt`.
const UART_BASE: usize = 0x1000_0000;
/// Transmit holding register (write side of offset 0).
const THR_OFFSET: usize = 0;
/// FIFO control register.
const FCR_OFFSET: usize = 2;
/// Line control register.
const LCR_OFFSET: usize = 3;
/// Line status register.
const LSR_OFFSET: usize = 5;
/// LSR bit: the transmit holding register can take a byte.
const LSR_THR_EMPTY: u8 = 1 << 5;
/// LCR value: 8 data bits, no parity, one stop bit.
const LCR_8N1: u8 = 0b11;
/// FCR value: enable and clear both FIFOs.
const FCR_ENABLE_AND_CLEAR: u8 = 0b111;
/// How many times a panicking hart tries the console lock before writing anyway.
const PANIC_LOCK_ATTEMPTS: usize = 1_000_000;

/// The UART, one writer at a time so lines from different harts do not mix.
static CONSOLE: Mutex<Uart> = Mutex::new(Uart);

/// The 16550 at [`UART_BASE`]; a zero-sized handle to the device registers.
struct Uart;

impl Uart {
    fn register(offset: usize) -> *mut u8 {
        core::ptr::with_exposed_provenance_mut(UART_BASE + offset)
    }

    fn init(&mut self) {
        // SAFETY: QEMU `virt` maps a 16550 at UART_BASE; byte writes to its
        // LCR and FCR only configure the line.
        unsafe {
            Self::register(LCR_OFFSET).write_volatile(LCR_8N1);
            Self::register(FCR_OFFSET).write_volatile(FCR_ENABLE_AND_CLEAR);
        }
    }

    fn put(&mut self, byte: u8) {
        // SAFETY: as in `init`; reading LSR has no side effect and writing THR
        // sends one byte.
        unsafe {
            while Self::register(LSR_OFFSET).read_volatile() & LSR_THR_EMPTY == 0 {
                core::hint::spin_loop();
            }
            Self::register(THR_OFFSET).write_volatile(byte);
        }
    }
}

impl Write for Uart {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for byte in text.bytes() {
            if byte == b'\n' {
                self.put(b'\r');
            }
            self.put(byte);
        }
        Ok(())
    }
}

/// Sets the line up; output works without it on QEMU, but real 16550s need it.
pub fn init() {
    CONSOLE.lock().init();
}

/// Writes formatted text under the console lock (used by the macros).
pub fn print(args: fmt::Arguments<'_>) {
    // The UART never fails, so the result carries nothing.
    let _ = CONSOLE.lock().write_fmt(args);
}

/// Writes formatted text from the panic handler: takes the console lock if it
/// can, and writes without it otherwise, since the panicking hart may itself be
/// holding it.
pub fn print_panic(args: fmt::Arguments<'_>) {
    for _ in 0..PANIC_LOCK_ATTEMPTS {
        if let Some(mut console) = CONSOLE.try_lock() {
            let _ = console.write_fmt(args);
            return;
        }
        core::hint::spin_loop();
    }
    let _ = Uart.write_fmt(args);
}

/// Prints to the UART.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::uart::print(format_args!($($arg)*)) };
}

/// Prints a line to the UART.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::uart::print(format_args!("{}\n", format_args!($($arg)*))) };
}
