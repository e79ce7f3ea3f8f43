//! `TypedCache<T>`: a slab cache of `T`s handing out owned handles.

use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use kalloc_api::{AllocError, FreeError, PageSource};

use crate::cache::SlabCache;
use crate::config::SlabConfig;
use crate::stats::CacheStats;

/// Hands out cache identities, so a handle can only go back to its own cache.
/// A plain `core` atomic: touched once per cache, never on a fast path.
static NEXT_CACHE_ID: AtomicUsize = AtomicUsize::new(1);

/// A cache of `T` values: [`allocate`](Self::allocate) moves a value into a
/// slab object and returns a [`SlabBox`] that derefs to it;
/// [`free`](Self::free) drops the value and returns the object.
///
/// ```
/// # #[cfg(feature = "std")] {
/// use kalloc_slab::{HostPages, TypedCache};
///
/// struct Task { id: u32, name: [u8; 16] }
///
/// let pages = HostPages::new();
/// let mut tasks = TypedCache::<Task>::new().unwrap();
/// let mut task = tasks.allocate(Task { id: 7, name: [0; 16] }, &pages).unwrap();
/// task.id += 1;
/// assert_eq!(task.id, 8);
/// let task = tasks.take(task, &pages).unwrap();
/// assert_eq!(task.name, [0; 16]);
/// tasks.shrink(0, &pages);
/// assert_eq!(pages.pages_out(), 0);
/// # }
/// ```
pub struct TypedCache<T> {
    cache: SlabCache,
    /// Identity stamped into handles; 0 until the first allocation.
    id: usize,
    _values: PhantomData<T>,
}

impl<T> TypedCache<T> {
    /// A cache of `T`s with the default [`SlabConfig`].
    ///
    /// # Errors
    /// [`AllocError::ZeroSize`] for zero-sized `T`, or as [`SlabCache::new`].
    pub const fn new() -> Result<Self, AllocError> {
        Self::with_config(SlabConfig::new(size_of::<T>(), align_of::<T>()))
    }

    /// A cache of `T`s with `config`'s hardening, secret and seed; the object
    /// size and alignment are `T`'s whatever `config` says.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub const fn with_config(config: SlabConfig) -> Result<Self, AllocError> {
        let mut config = config;
        config.object_size = size_of::<T>();
        config.align = align_of::<T>();
        match SlabCache::new(config) {
            Ok(cache) => Ok(Self {
                cache,
                id: 0,
                _values: PhantomData,
            }),
            Err(error) => Err(error),
        }
    }

    /// Moves `value` into a new object. On failure `value` is dropped.
    ///
    /// # Errors
    /// As [`SlabCache::allocate`].
    pub fn allocate<P: PageSource + ?Sized>(
        &mut self,
        value: T,
        pages: &P,
    ) -> Result<SlabBox<T>, AllocError> {
        if self.id == 0 {
            self.id = NEXT_CACHE_ID.fetch_add(1, Ordering::Relaxed);
        }
        let object = self.cache.allocate(pages)?.cast::<T>();
        // SAFETY: the object is sized and aligned for `T` and ours alone.
        unsafe { object.write(value) };
        Ok(SlabBox {
            object,
            cache: self.id,
            _value: PhantomData,
        })
    }

    /// Moves the value out of `object` and frees the object.
    ///
    /// # Errors
    /// [`FreeError::NotOwned`] when `object` came from another cache; the
    /// handle is leaked then (its value is neither dropped nor freed).
    pub fn take<P: PageSource + ?Sized>(
        &mut self,
        object: SlabBox<T>,
        pages: &P,
    ) -> Result<T, FreeError> {
        let ptr = self.claim(object)?;
        // SAFETY: the handle owned an initialised `T`; it is moved out once.
        let value = unsafe { ptr.read() };
        // SAFETY: the object came from this cache (checked by `claim`).
        unsafe { self.cache.deallocate(ptr.cast(), pages) }?;
        Ok(value)
    }

    /// Drops the value in `object` and frees the object.
    ///
    /// # Errors
    /// As [`take`](Self::take).
    pub fn free<P: PageSource + ?Sized>(
        &mut self,
        object: SlabBox<T>,
        pages: &P,
    ) -> Result<(), FreeError> {
        let ptr = self.claim(object)?;
        // SAFETY: the handle owned an initialised `T`; it is dropped once.
        unsafe { ptr.drop_in_place() };
        // SAFETY: the object came from this cache (checked by `claim`).
        unsafe { self.cache.deallocate(ptr.cast(), pages) }
    }

    /// As [`SlabCache::shrink`].
    pub fn shrink<P: PageSource + ?Sized>(&mut self, keep_empty_slabs: usize, pages: &P) -> usize {
        self.cache.shrink(keep_empty_slabs, pages)
    }

    /// As [`SlabCache::reap`].
    pub fn reap<P: PageSource + ?Sized>(&mut self, pages: &P) -> usize {
        self.cache.reap(pages)
    }

    /// As [`SlabCache::stats`].
    pub fn stats(&self) -> CacheStats {
        self.cache.stats()
    }

    fn claim(&self, object: SlabBox<T>) -> Result<NonNull<T>, FreeError> {
        if object.cache != self.id || self.id == 0 {
            return Err(FreeError::NotOwned);
        }
        Ok(SlabBox::into_raw(object))
    }
}

/// An owned `T` living in a [`TypedCache`]'s slab. Give it back with
/// [`TypedCache::free`] or [`TypedCache::take`]; dropping the handle leaks
/// the object without running `T`'s destructor.
#[must_use = "dropping a SlabBox leaks its object; give it back to its TypedCache"]
pub struct SlabBox<T> {
    object: NonNull<T>,
    cache: usize,
    _value: PhantomData<T>,
}

// SAFETY: a `SlabBox` owns its `T` exclusively, like `Box<T>`.
unsafe impl<T: Send> Send for SlabBox<T> {}
// SAFETY: shared access to a `SlabBox` only gives `&T`.
unsafe impl<T: Sync> Sync for SlabBox<T> {}

impl<T> SlabBox<T> {
    /// The object's address, giving up the handle (the object stays allocated).
    pub fn into_raw(this: Self) -> NonNull<T> {
        this.object
    }
}

impl<T> Deref for SlabBox<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the handle owns an initialised `T` until given back.
        unsafe { self.object.as_ref() }
    }
}

impl<T> DerefMut for SlabBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above, and `&mut self` makes the access exclusive.
        unsafe { self.object.as_mut() }
    }
}

impl<T: fmt::Debug> fmt::Debug for SlabBox<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use core::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::test_support::TrackingPages;

    static DROPS: AtomicUsize = AtomicUsize::new(0);

    #[derive(Debug, PartialEq)]
    struct Node {
        key: u64,
        links: [usize; 3],
    }

    impl Drop for Node {
        fn drop(&mut self) {
            DROPS.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn values_move_in_and_out_and_drop_once() {
        let pages = TrackingPages::new();
        let mut nodes = TypedCache::<Node>::new().unwrap();
        let mut a = nodes
            .allocate(
                Node {
                    key: 1,
                    links: [0; 3],
                },
                &pages,
            )
            .unwrap();
        let b = nodes
            .allocate(
                Node {
                    key: 2,
                    links: [9; 3],
                },
                &pages,
            )
            .unwrap();
        a.key += 10;
        assert_eq!(a.key, 11);
        assert_eq!(b.links, [9; 3]);
        let before = DROPS.load(Ordering::SeqCst);
        nodes.free(a, &pages).unwrap();
        assert_eq!(DROPS.load(Ordering::SeqCst), before + 1);
        let value = nodes.take(b, &pages).unwrap();
        assert_eq!(value.key, 2);
        drop(value);
        assert_eq!(nodes.stats().objects_in_use, 0);
        nodes.shrink(0, &pages);
        assert_eq!(pages.pages_out(), 0);
    }

    #[test]
    fn handle_from_another_cache_is_refused() {
        let pages = TrackingPages::new();
        let mut ours = TypedCache::<u64>::new().unwrap();
        let mut theirs = TypedCache::<u64>::new().unwrap();
        let mine = ours.allocate(5, &pages).unwrap();
        let stranger = theirs.allocate(6, &pages).unwrap();
        assert_eq!(ours.free(stranger, &pages), Err(FreeError::NotOwned));
        assert_eq!(ours.stats().objects_in_use, 1);
        assert_eq!(theirs.stats().objects_in_use, 1);
        assert_eq!(ours.take(mine, &pages), Ok(5));
    }

    #[test]
    fn zero_sized_types_are_refused() {
        assert_eq!(TypedCache::<()>::new().err(), Some(AllocError::ZeroSize));
    }
}
