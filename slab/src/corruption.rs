//! The process-wide corruption handler.
//!
//! Checked APIs return a [`FreeError`]; paths that cannot (an allocation that
//! finds a poisoned object overwritten, a magazine flush, a `GlobalAlloc`
//! wrapper) report through a handler instead. A cache configured with
//! [`SlabConfig::with_corruption_handler`](crate::SlabConfig::with_corruption_handler)
//! uses its own; every other cache uses the one set here.

use core::sync::atomic::{AtomicPtr, Ordering};

use kalloc_api::FreeError;

use crate::config::CorruptionHandler;

/// The global handler as a type-erased function pointer (null: none). A plain
/// `core` atomic: it is configured once at boot, not part of any model.
static HANDLER: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Sets (or, with `None`, clears) the handler every cache without its own
/// reports corruption to.
///
/// ```
/// use kalloc_api::FreeError;
///
/// fn halt(error: FreeError, at: *mut u8) {
///     panic!("slab corruption ({error}) at {at:p}");
/// }
/// kalloc_slab::set_corruption_handler(Some(halt));
/// # kalloc_slab::set_corruption_handler(None);
/// ```
pub fn set_corruption_handler(handler: Option<CorruptionHandler>) {
    let erased = handler.map_or(core::ptr::null_mut(), |handler| handler as *mut ());
    HANDLER.store(erased, Ordering::Release);
}

/// Calls the global handler, if one is set, with `error` and the address
/// involved. A `GlobalAlloc` wrapper calls this when a free is refused.
pub fn report_corruption(error: FreeError, at: *mut u8) {
    let erased = HANDLER.load(Ordering::Acquire);
    if erased.is_null() {
        return;
    }
    // SAFETY: only `set_corruption_handler` stores non-null values, and they
    // are `CorruptionHandler` function pointers.
    let handler = unsafe { core::mem::transmute::<*mut (), CorruptionHandler>(erased) };
    handler(error, at);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use core::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn reports_reach_the_global_handler_until_cleared() {
        static REPORTS: AtomicUsize = AtomicUsize::new(0);
        fn count(error: FreeError, at: *mut u8) {
            assert_eq!((error, at.addr()), (FreeError::DoubleFree, 0x40));
            REPORTS.fetch_add(1, Ordering::SeqCst);
        }
        let at = core::ptr::without_provenance_mut(0x40);
        set_corruption_handler(Some(count));
        report_corruption(FreeError::DoubleFree, at);
        set_corruption_handler(None);
        report_corruption(FreeError::DoubleFree, at);
        assert_eq!(REPORTS.load(Ordering::SeqCst), 1);
    }
}
