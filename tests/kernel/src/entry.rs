//! The first instructions every hart runs, and what the rest of the kernel
//! needs to know about harts: their ids and their stacks.
//!
//! QEMU `virt` started with `-bios none` jumps every hart to the first byte of
//! RAM in machine mode, with its hart id in `a0` and the device-tree address in
//! `a1`. Each hart takes its own stack, keeps its id in `tp` (so [`hart_id`]
//! costs one register read), and installs a trap vector that reports the fault
//! and fails the boot. Hart 0 clears `.bss` and enters [`kernel_main`]; the
//! others wait until `.bss` is clear and enter [`secondary_main`]. Harts with
//! ids of [`MAX_HARTS`] or more have no stack and park for good.
//!
//! [`kernel_main`]: crate::kernel_main
//! [`secondary_main`]: crate::secondary_main

use core::arch::global_asm;

/// The most harts the kernel gives a stack to; `linker.ld` reserves as many.
pub const MAX_HARTS: usize = 8;

/// Bytes of boot stack per hart; `linker.ld` uses the same number.
pub const HART_STACK_BYTES: usize = 0x1_0000;

/// Bytes of the separate per-hart stack the trap handler runs on, so a fault
/// caused by a broken stack pointer can still be reported.
pub const TRAP_STACK_BYTES: usize = 0x1000;

/// Written at the lowest word of every boot stack and checked at the end: a
/// stack that grew past its end would have overwritten it.
const STACK_CANARY: u64 = 0x6b61_6c6c_6f63_2121;

global_asm!(
    r#"
    .section .text.entry, "ax"
    .globl _start
_start:
    csrw mie, zero
    la t0, kalloc_trap_entry
    csrw mtvec, t0
    /* Floating point starts Off in machine mode; core::fmt may use it. */
    li t0, 0x2000
    csrs mstatus, t0

    li t0, {max_harts}
    bgeu a0, t0, 9f
    mv tp, a0

    /* Hart h uses [end - (h + 1) * size, end - h * size) as its stack. */
    la sp, __stacks_end
    li t0, {stack_bytes}
    mul t1, a0, t0
    sub sp, sp, t1

    la t0, __trap_stacks_end
    li t2, {trap_stack_bytes}
    mul t1, a0, t2
    sub t0, t0, t1
    csrw mscratch, t0

    bnez a0, 3f

    /* Hart 0 clears .bss, then lets the others in. */
    la t0, __bss_start
    la t1, __bss_end
1:  bgeu t0, t1, 2f
    sd zero, 0(t0)
    addi t0, t0, 8
    j 1b
2:  fence rw, rw
    la t0, kalloc_bss_cleared
    li t1, 1
    sw t1, 0(t0)
    call {kernel_main}
    j 9f

3:  la t0, kalloc_bss_cleared
4:  lw t1, 0(t0)
    beqz t1, 4b
    fence r, rw
    call {secondary_main}

9:  wfi
    j 9b

    .section .data.entry, "aw"
    .balign 4
kalloc_bss_cleared:
    .word 0

    .section .text.trap, "ax"
    .balign 4
kalloc_trap_entry:
    csrrw sp, mscratch, sp
    csrr a0, mcause
    csrr a1, mepc
    csrr a2, mtval
    mv a3, tp
    call {trap_handler}
5:  wfi
    j 5b
"#,
    max_harts = const MAX_HARTS,
    stack_bytes = const HART_STACK_BYTES,
    trap_stack_bytes = const TRAP_STACK_BYTES,
    kernel_main = sym crate::kernel_main,
    secondary_main = sym crate::secondary_main,
    trap_handler = sym crate::trap_handler,
);

/// The id of the hart running the caller, kept in `tp` since the entry code.
#[inline]
pub fn hart_id() -> usize {
    let id: usize;
    // SAFETY: reads a register the entry code set and nothing else writes.
    unsafe { core::arch::asm!("mv {}, tp", out(reg) id, options(nomem, nostack, preserves_flags)) };
    id
}

/// The lowest word of `hart`'s boot stack, where its canary lives.
fn stack_canary_slot(hart: usize) -> *mut u64 {
    unsafe extern "C" {
        static __stacks_end: u8;
    }
    let end = core::ptr::addr_of!(__stacks_end) as usize;
    let bottom = end - (hart + 1) * HART_STACK_BYTES;
    core::ptr::with_exposed_provenance_mut(bottom)
}

/// Marks the bottom of the calling hart's stack, for [`stack_canary_intact`].
pub fn plant_stack_canary() {
    let hart = hart_id();
    assert!(hart < MAX_HARTS);
    // SAFETY: the slot is the lowest word of this hart's own stack, far below
    // the frames in use this early, and no other hart touches it.
    unsafe { stack_canary_slot(hart).write_volatile(STACK_CANARY) };
}

/// Whether `hart`'s stack canary is still in place (the stack never overflowed).
pub fn stack_canary_intact(hart: usize) -> bool {
    assert!(hart < MAX_HARTS);
    // SAFETY: the slot is inside the linker-reserved stack area; a plain read
    // of an aligned word races with nothing but the owning hart's overflow.
    unsafe { stack_canary_slot(hart).read_volatile() == STACK_CANARY }
}
