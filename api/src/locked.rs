//! `Locked<T>`: share a `&mut self` allocator between CPUs behind the sync shim's mutex.

use crate::error::{AllocError, FreeError};
use crate::frame::FrameRange;
use crate::frame_allocator::FrameAllocator;
use crate::sync::{Mutex, MutexGuard};

/// An allocator behind a spin lock (a `loom` mutex under `cfg(loom)`).
///
/// `Locked<T>` and `&Locked<T>` implement [`FrameAllocator`] whenever `T` does,
/// so one allocator can be shared by every CPU: each call takes the lock for the
/// duration of one operation.
///
/// ```
/// use kalloc_api::{AllocError, FrameAllocator, FrameRange, FreeError, Locked};
/// # struct Never;
/// # impl FrameAllocator for Never {
/// #     fn allocate(&mut self, _: usize, _: usize) -> Result<FrameRange, AllocError> { Err(AllocError::OutOfMemory) }
/// #     fn deallocate(&mut self, _: FrameRange) -> Result<(), FreeError> { Err(FreeError::NotOwned) }
/// #     fn free_frames(&self) -> usize { 0 }
/// #     fn total_frames(&self) -> usize { 0 }
/// # }
/// static FRAMES: Locked<Never> = Locked::new(Never);
///
/// fn on_any_cpu() -> Result<(), AllocError> {
///     let mut frames = &FRAMES; // `&Locked<T>` is itself a frame allocator
///     let frame = frames.allocate_frame()?;
///     # let _ = frame;
///     Ok(())
/// }
/// assert_eq!(on_any_cpu(), Err(AllocError::OutOfMemory));
/// ```
pub struct Locked<T> {
    inner: Mutex<T>,
}

impl<T> Locked<T> {
    /// Wraps `value`.
    #[cfg(not(loom))]
    pub const fn new(value: T) -> Self {
        Self {
            inner: Mutex::new(value),
        }
    }

    /// Wraps `value`.
    #[cfg(loom)]
    pub fn new(value: T) -> Self {
        Self {
            inner: Mutex::new(value),
        }
    }

    /// Takes the lock, spinning until it is free.
    #[inline]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.inner.lock()
    }

    /// The inner value, without locking (exclusive access proves nobody holds the lock).
    #[inline]
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }

    /// Unwraps the inner value.
    #[inline]
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }
}

impl<T: Default> Default for Locked<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T: FrameAllocator> FrameAllocator for Locked<T> {
    #[inline]
    fn allocate(&mut self, count: usize, frame_align: usize) -> Result<FrameRange, AllocError> {
        self.get_mut().allocate(count, frame_align)
    }

    #[inline]
    fn deallocate(&mut self, range: FrameRange) -> Result<(), FreeError> {
        self.get_mut().deallocate(range)
    }

    #[inline]
    fn free_frames(&self) -> usize {
        self.lock().free_frames()
    }

    #[inline]
    fn total_frames(&self) -> usize {
        self.lock().total_frames()
    }
}

impl<T: FrameAllocator> FrameAllocator for &Locked<T> {
    #[inline]
    fn allocate(&mut self, count: usize, frame_align: usize) -> Result<FrameRange, AllocError> {
        self.lock().allocate(count, frame_align)
    }

    #[inline]
    fn deallocate(&mut self, range: FrameRange) -> Result<(), FreeError> {
        self.lock().deallocate(range)
    }

    #[inline]
    fn free_frames(&self) -> usize {
        self.lock().free_frames()
    }

    #[inline]
    fn total_frames(&self) -> usize {
        self.lock().total_frames()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::frame::Frame;

    /// Frames 0..4, one at a time; enough to see the wrapper forward and lock.
    struct FourFrames(u8);

    impl FrameAllocator for FourFrames {
        fn allocate(&mut self, count: usize, _: usize) -> Result<FrameRange, AllocError> {
            if count != 1 {
                return Err(AllocError::OutOfMemory);
            }
            let free = (!self.0 & 0xf).trailing_zeros();
            if free >= 4 {
                return Err(AllocError::OutOfMemory);
            }
            self.0 |= 1 << free;
            Ok(FrameRange::new(Frame::from_number(free.into()), 1))
        }
        fn deallocate(&mut self, range: FrameRange) -> Result<(), FreeError> {
            let bit = 1u8 << range.start().number();
            if self.0 & bit == 0 {
                return Err(FreeError::DoubleFree);
            }
            self.0 &= !bit;
            Ok(())
        }
        fn free_frames(&self) -> usize {
            4 - self.0.count_ones() as usize
        }
        fn total_frames(&self) -> usize {
            4
        }
    }

    #[test]
    fn shared_reference_allocates_under_the_lock() {
        let locked = Locked::new(FourFrames(0));
        let mut a = &locked;
        let mut b = &locked;
        let first = a.allocate_frame().unwrap();
        let second = b.allocate_frame().unwrap();
        assert_ne!(first, second);
        assert_eq!(locked.free_frames(), 2);
        assert_eq!(a.used_frames(), 2);
        b.deallocate_frame(first).unwrap();
        assert_eq!(a.deallocate_frame(first), Err(FreeError::DoubleFree));
        assert_eq!(locked.into_inner().free_frames(), 3);
    }

    #[test]
    fn owned_wrapper_forwards_without_locking() {
        let mut locked = Locked::new(FourFrames(0));
        let _guard_free = locked.allocate(1, 1).unwrap();
        assert_eq!(locked.get_mut().free_frames(), 3);
        assert_eq!(locked.allocate(2, 1), Err(AllocError::OutOfMemory));
    }

    #[test]
    fn threads_share_one_locked_allocator() {
        extern crate std;
        let locked = Locked::new(FourFrames(0));
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    let mut frames = &locked;
                    for _ in 0..1000 {
                        if let Ok(frame) = frames.allocate_frame() {
                            frames.deallocate_frame(frame).unwrap();
                        }
                    }
                });
            }
        });
        assert_eq!(locked.free_frames(), 4);
    }
}
