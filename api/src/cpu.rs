//! Which CPU is running: supplied by the kernel to per-CPU allocator fronts.

/// Tells a per-CPU allocator front which CPU (or hart) the caller runs on.
///
/// The answer must be below the front's CPU count and must not change while the
/// caller is inside one allocator call: kernels call it with preemption (or
/// migration) disabled, or accept that a migrated call uses another CPU's cache
/// under that cache's lock, which stays correct but slower. A plain
/// `fn() -> usize` is a `CpuId`, so a `static` front can name its function type.
///
/// ```
/// use kalloc_api::CpuId;
///
/// fn boot_cpu() -> usize { 0 }
/// let cpu: fn() -> usize = boot_cpu;
/// assert_eq!(cpu.current_cpu(), 0);
/// ```
pub trait CpuId: Sync {
    /// The index of the CPU running the caller.
    fn current_cpu(&self) -> usize;
}

impl<F: Fn() -> usize + Sync> CpuId for F {
    #[inline]
    fn current_cpu(&self) -> usize {
        self()
    }
}

/// Proof that the calling context has a CPU to itself: the token for the
/// lock-free per-CPU paths (such as `kalloc_slab::PinnedPerCpuCache`), which
/// touch that CPU's state with no lock and no atomic read-modify-write.
///
/// A kernel makes one after disabling preemption, the way Linux's
/// `this_cpu` operations rely on it, and drops it before enabling it again.
/// The token is neither `Send` nor `Sync`, so it stays in the context that
/// made it.
///
/// ```
/// use kalloc_api::PinnedCpu;
///
/// # fn preempt_disable() {}
/// # fn preempt_enable() {}
/// # fn this_cpu() -> usize { 0 }
/// preempt_disable();
/// // SAFETY: preemption is off, so this context stays on `this_cpu()`, and
/// // no interrupt handler of this kernel allocates through pinned paths.
/// let cpu = unsafe { PinnedCpu::new(this_cpu()) };
/// assert_eq!(cpu.index(), 0);
/// drop(cpu);
/// preempt_enable();
/// ```
#[derive(Debug)]
pub struct PinnedCpu {
    index: usize,
    /// Not `Send` or `Sync`: the token belongs to the context that made it.
    _context: core::marker::PhantomData<*const ()>,
}

impl PinnedCpu {
    /// A token for CPU `index`.
    ///
    /// # Safety
    /// Until the token is dropped, no other context uses CPU `index`'s
    /// per-CPU allocator state: no other token for `index` exists on another
    /// thread or CPU, and no interrupt or signal handler that can run in the
    /// meantime makes one and calls a pinned path with it. In a kernel:
    /// preemption (migration) is off from before this call to after the drop,
    /// and interrupt handlers do not allocate through pinned paths, or
    /// interrupts are off too. An index no front has a slot for is allowed;
    /// fronts serve it through their shared, locked path.
    #[inline]
    pub const unsafe fn new(index: usize) -> Self {
        Self {
            index,
            _context: core::marker::PhantomData,
        }
    }

    /// The CPU this token pins.
    #[inline]
    pub const fn index(&self) -> usize {
        self.index
    }
}

/// A host stand-in for a CPU id: each thread gets the next index on first use,
/// so threads spread over per-CPU caches as CPUs would. Test and bench use only.
#[cfg(feature = "std")]
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadCpuId;

#[cfg(feature = "std")]
impl CpuId for ThreadCpuId {
    fn current_cpu(&self) -> usize {
        use core::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        std::thread_local! {
            static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
        }
        INDEX.with(|index| *index)
    }
}
