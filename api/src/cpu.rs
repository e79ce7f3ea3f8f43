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
