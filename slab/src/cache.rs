//! `SlabCache`: objects of one size carved from slabs, `&mut self` core.
//!
//! Slabs sit on three intrusive lists threaded through their headers: full,
//! partial and empty. Allocation pops the first object of the first partial
//! slab. A full slab that gets an object back goes to the *front* of the
//! partial list, so the front is (nearly) always the most used partial slab:
//! allocations fill slabs up and leave the others to drain and be reclaimed,
//! which is what keeps fragmentation low. When the only partial slab
//! empties it stays where it is (the *idle* slab, counted as empty), so a
//! caller cycling one object moves no slab between lists.
//!
//! Empty slabs wait on their list for reuse, which spares the page source
//! and the formatting of new slabs when a burst of allocations returns. A
//! free gives an emptied slab back only when the empty slabs outnumber the
//! most slabs the cache had in use at once (its *busy peak*) or
//! [`max_empty_slabs`](crate::SlabConfig::with_max_empty_slabs): since empty
//! slabs are reused before new ones are made, a cache never holds more slabs
//! than at its busiest. [`SlabCache::reap`], called from a periodic timer,
//! gives back the slabs that stayed empty for the whole period (Bonwick's
//! working set) and lowers the peak to what is held after it;
//! [`SlabCache::shrink`] gives back every empty slab at once.

use core::mem::ManuallyDrop;
use core::ptr::NonNull;

use intrusive_collections::{LinkedList, UnsafeRef};
use kalloc_api::{AllocError, FreeError, PageSource};

use crate::checks;
use crate::config::SlabConfig;
use crate::geometry::Geometry;
use crate::slab::{Rng, SlabAdapter, SlabFormat, SlabHeader, SlabState, list_ref};
use crate::stats::CacheStats;

/// A cache of objects of one size and alignment, growing by slabs of pages
/// from a [`PageSource`] passed to each call (so one source can feed many
/// caches).
///
/// The cache holds no memory of its own beyond this struct: slab headers,
/// free lists and bitmaps live inside the slabs. Dropping a cache that still
/// holds slabs leaks their pages; call [`shrink`](Self::shrink)`(0, ..)` once
/// every object is back.
///
/// ```
/// # #[cfg(feature = "std")] {
/// use kalloc_slab::{HostPages, SlabCache, SlabConfig};
///
/// let pages = HostPages::new();
/// let mut cache = SlabCache::new(SlabConfig::new(64, 16)).unwrap();
/// let object = cache.allocate(&pages).unwrap();
/// assert_eq!(object.as_ptr() as usize % 16, 0);
/// // SAFETY: `object` came from this cache.
/// unsafe { cache.deallocate(object, &pages) }.unwrap();
/// assert_eq!(cache.shrink(0, &pages), 1);
/// assert_eq!(pages.pages_out(), 0);
/// # }
/// ```
pub struct SlabCache {
    format: SlabFormat,
    rng: Rng,
    max_empty_slabs: usize,
    // `ManuallyDrop`: dropping a cache leaks its slabs (see above), so the
    // lists need not be walked, and the cache has no drop glue, which lets
    // `const` code match on `SlabCache::new`'s result.
    full: ManuallyDrop<LinkedList<SlabAdapter>>,
    partial: ManuallyDrop<LinkedList<SlabAdapter>>,
    empty: ManuallyDrop<LinkedList<SlabAdapter>>,
    full_slabs: usize,
    partial_slabs: usize,
    empty_slabs: usize,
    quarantined_slabs: usize,
    /// The most slabs holding objects at once since the last reap or shrink:
    /// the empty slabs kept are bounded by it.
    busy_peak: usize,
    /// The fewest empty slabs since the last reap: slabs no allocation
    /// needed in that period.
    empty_low: usize,
    /// A slab on the partial list with no object in use, kept there rather
    /// than moved to the empty list because it was the only partial slab:
    /// a cache cycling one object moves no slab between lists. Null if none.
    idle: *mut SlabHeader,
    /// Free objects on the lists of slabs that are not quarantined.
    objects_free: usize,
    /// Objects taken off free lists and not put back (held by callers, cached
    /// in magazines, or quarantined one by one).
    objects_taken: usize,
    /// The most objects taken at once.
    peak_objects_taken: usize,
    /// Taken objects withheld because they failed a check.
    quarantined_objects: usize,
    /// Objects of quarantined slabs that are not held by callers.
    quarantined_slab_objects: usize,
    failed_allocations: u64,
    corruptions: u64,
}

// SAFETY: the slabs the lists point into are owned by this cache alone; the
// `Cell`s in their headers are only touched through `&mut self` (and the
// per-CPU front's lock), never from two threads at once.
unsafe impl Send for SlabCache {}

impl SlabCache {
    /// An empty cache for `config`'s objects; it takes no pages until the
    /// first allocation.
    ///
    /// # Errors
    /// [`AllocError::ZeroSize`] for zero-size objects,
    /// [`AllocError::BadAlignment`] for an alignment that is not a power of
    /// two or exceeds a page, [`AllocError::Overflow`] for objects too large
    /// for a slab of [`MAX_SLAB_BYTES`](crate::MAX_SLAB_BYTES).
    pub const fn new(config: SlabConfig) -> Result<Self, AllocError> {
        let geometry = match Geometry::new(config.object_size, config.align, config.hardening) {
            Ok(geometry) => geometry,
            Err(error) => return Err(error),
        };
        Ok(Self {
            format: SlabFormat::new(
                geometry,
                config.hardening,
                config.secret,
                config.on_corruption,
            ),
            rng: Rng::new(config.seed),
            max_empty_slabs: config.max_empty_slabs,
            full: ManuallyDrop::new(LinkedList::new(SlabAdapter::NEW)),
            partial: ManuallyDrop::new(LinkedList::new(SlabAdapter::NEW)),
            empty: ManuallyDrop::new(LinkedList::new(SlabAdapter::NEW)),
            full_slabs: 0,
            partial_slabs: 0,
            empty_slabs: 0,
            quarantined_slabs: 0,
            busy_peak: 0,
            empty_low: 0,
            idle: core::ptr::null_mut(),
            objects_free: 0,
            objects_taken: 0,
            peak_objects_taken: 0,
            quarantined_objects: 0,
            quarantined_slab_objects: 0,
            failed_allocations: 0,
            corruptions: 0,
        })
    }

    /// Bytes a caller may use in each object.
    pub const fn object_size(&self) -> usize {
        self.format.geometry.object_size
    }

    /// Alignment of every object (at least a word).
    pub const fn align(&self) -> usize {
        self.format.geometry.align
    }

    /// Pages in each slab (also each slab's alignment, in pages).
    pub const fn slab_pages(&self) -> usize {
        self.format.geometry.slab_pages
    }

    /// Objects in each slab.
    pub const fn objects_per_slab(&self) -> usize {
        self.format.geometry.capacity
    }

    pub(crate) const fn format(&self) -> &SlabFormat {
        &self.format
    }

    /// Allocates one object.
    ///
    /// # Errors
    /// [`AllocError::OutOfMemory`] (or the page source's error) when no slab
    /// has a free object and the source gives no new slab; nothing changes.
    #[inline]
    pub fn allocate<P: PageSource + ?Sized>(
        &mut self,
        pages: &P,
    ) -> Result<NonNull<u8>, AllocError> {
        let object = self.take(pages)?;
        if self.format.checks_objects() {
            return self.check_handout(object, pages);
        }
        Ok(object)
    }

    /// Gives an object back.
    ///
    /// # Errors
    /// Nothing changes when an error is returned:
    /// - [`FreeError::DoubleFree`]: the object is already free (always caught
    ///   when it heads its slab's free list or its slab is empty; always with
    ///   [`Hardening::DOUBLE_FREE_BITMAP`](crate::Hardening::DOUBLE_FREE_BITMAP));
    /// - [`FreeError::NotOwned`]: the address lies in a slab of another cache;
    /// - [`FreeError::Misaligned`]: the address is not the start of an object;
    /// - [`FreeError::Corrupted`]: the object's red zone was overwritten.
    ///
    /// # Safety
    /// `object` is an address inside a slab this cache still holds (normally
    /// a pointer [`allocate`](Self::allocate) returned, freed since or not), or
    /// at least one for which the `SlabHeader`-sized bytes at `object` rounded
    /// down to this cache's slab size are readable, such as an address inside
    /// a slab of another cache whose slabs are no smaller. The caller no
    /// longer uses the object once this returns `Ok`.
    #[inline]
    pub unsafe fn deallocate<P: PageSource + ?Sized>(
        &mut self,
        object: NonNull<u8>,
        pages: &P,
    ) -> Result<(), FreeError> {
        // SAFETY: (caller) the header under `object` is readable.
        let (header, index) = unsafe { self.format.locate(object) }?;
        if self.format.checks_objects() {
            // SAFETY: `locate` proved `object` is slot `index` of our slab `header`.
            return unsafe { self.checked_free(header, index, object, pages) };
        }
        // SAFETY: as above.
        unsafe { self.put_located(header, object, pages) }
    }

    /// Checks that `object` is the start of an object in a slab of this
    /// cache, without freeing it.
    ///
    /// # Errors
    /// [`FreeError::NotOwned`] or [`FreeError::Misaligned`], as for
    /// [`deallocate`](Self::deallocate).
    ///
    /// # Safety
    /// As for [`deallocate`](Self::deallocate), except that the object stays the caller's.
    #[inline]
    pub unsafe fn check_object(&self, object: NonNull<u8>) -> Result<(), FreeError> {
        // SAFETY: (caller).
        unsafe { self.format.locate(object) }.map(|_| ())
    }

    /// Gives empty slabs back to `pages` until at most `keep_empty_slabs`
    /// remain; returns how many slabs were given back. A slab the source
    /// refuses to take is kept.
    pub fn shrink<P: PageSource + ?Sized>(&mut self, keep_empty_slabs: usize, pages: &P) -> usize {
        let mut released = 0;
        while self.empty_slabs > keep_empty_slabs {
            if !self.release_coldest_empty(pages) {
                break;
            }
            released += 1;
        }
        if let Some(idle) = NonNull::new(self.idle)
            && self.empty_slabs + 1 > keep_empty_slabs
        {
            // Move the idle slab to the empty list and give it back from there.
            self.unlink(idle);
            // SAFETY: the header is live.
            unsafe { idle.as_ref() }.state.set(SlabState::Empty);
            self.empty.push_back(list_ref(idle));
            self.empty_slabs += 1;
            if self.release_coldest_empty(pages) {
                released += 1;
            }
        }
        self.busy_peak = self.busy_slabs();
        self.empty_low = self.empty_slabs;
        released
    }

    /// Gives back the empty slabs that no allocation needed since the
    /// previous reap, and lowers the busy peak to the slabs still held, so
    /// memory a burst left behind drains over two periods. Returns how many
    /// slabs were given back. Kernels call this from a periodic timer, as
    /// Linux's slab reaper runs every few seconds.
    ///
    /// ```
    /// # #[cfg(feature = "std")] {
    /// use kalloc_slab::{HostPages, SlabCache, SlabConfig};
    ///
    /// let pages = HostPages::new();
    /// let mut cache = SlabCache::new(SlabConfig::new(512, 8)).unwrap();
    /// let burst: Vec<_> = (0..100).map(|_| cache.allocate(&pages).unwrap()).collect();
    /// for object in burst {
    ///     // SAFETY: allocated above, freed once.
    ///     unsafe { cache.deallocate(object, &pages) }.unwrap();
    /// }
    /// let held = cache.stats().slabs;
    /// assert!(held > 1, "the burst's slabs are kept for the next one");
    /// assert_eq!(cache.reap(&pages), 0, "they were needed in this period");
    /// assert_eq!(cache.reap(&pages), held - 1, "but not in the next");
    /// # }
    /// ```
    pub fn reap<P: PageSource + ?Sized>(&mut self, pages: &P) -> usize {
        let unneeded = self.empty_low;
        let mut released = 0;
        while released < unneeded && self.release_coldest_empty(pages) {
            released += 1;
        }
        self.empty_low = self.empty_slabs;
        self.busy_peak = self.full_slabs + self.partial_slabs + self.empty_slabs;
        released
    }

    /// Slabs holding at least one object (quarantined slabs aside).
    fn busy_slabs(&self) -> usize {
        self.full_slabs + self.partial_slabs - usize::from(!self.idle.is_null())
    }

    /// A snapshot of the cache's usage.
    pub fn stats(&self) -> CacheStats {
        let g = &self.format.geometry;
        let slabs =
            self.full_slabs + self.partial_slabs + self.empty_slabs + self.quarantined_slabs;
        let idle = usize::from(!self.idle.is_null());
        CacheStats {
            object_size: g.object_size,
            slot_bytes: g.stride,
            objects_per_slab: g.capacity,
            pages_per_slab: g.slab_pages,
            objects_in_use: self.objects_taken - self.quarantined_objects,
            peak_objects_out: self.peak_objects_taken,
            objects_cached: 0,
            objects_free: self.objects_free,
            objects_quarantined: self.quarantined_objects + self.quarantined_slab_objects,
            slabs,
            full_slabs: self.full_slabs,
            partial_slabs: self.partial_slabs - idle,
            empty_slabs: self.empty_slabs + idle,
            quarantined_slabs: self.quarantined_slabs,
            pages_held: slabs * g.slab_pages,
            magazine_pages: 0,
            waste_bytes: slabs * g.waste_per_slab(),
            failed_allocations: self.failed_allocations,
            corruptions: self.corruptions,
        }
    }

    /// Takes a free object off the slabs, without per-object checks (the
    /// per-CPU front runs those when it hands objects to callers).
    #[inline(always)]
    pub(crate) fn take<P: PageSource + ?Sized>(
        &mut self,
        pages: &P,
    ) -> Result<NonNull<u8>, AllocError> {
        loop {
            let header = match self.partial.front().clone_pointer() {
                Some(slab) => {
                    // SAFETY: list pointers come from `list_ref` of non-null headers.
                    unsafe { NonNull::new_unchecked(UnsafeRef::into_raw(slab)) }
                }
                None => self.add_partial_slab(pages)?,
            };
            // SAFETY: `header` heads a slab on our partial list.
            if let Some(object) = unsafe { self.pop(header) } {
                return Ok(object);
            }
        }
    }

    /// Pops the first free object of the partial slab `header`; `None` when
    /// the free list is found corrupted (the slab is quarantined then).
    ///
    /// # Safety
    /// `header` heads a slab on the partial list.
    #[inline(always)]
    unsafe fn pop(&mut self, header: NonNull<SlabHeader>) -> Option<NonNull<u8>> {
        // SAFETY: (caller) the header is live; its fields are `Cell`s.
        let slab = unsafe { header.as_ref() };
        let head = slab.free.get();
        let in_use = slab.in_use.get();
        let capacity = self.format.geometry.capacity;
        let next = if head.is_null() || in_use as usize >= capacity {
            None
        } else {
            // SAFETY: `head` is a free slot of this slab (checked when linked).
            unsafe { self.format.load_link(header.addr().get(), head) }
        };
        let Some(next) = next else {
            self.quarantine_slab(header, head);
            return None;
        };
        slab.free.set(head.with_addr(next));
        slab.in_use.set(in_use + 1);
        if in_use == 0 && self.idle == header.as_ptr() {
            self.idle = core::ptr::null_mut();
        }
        self.objects_free -= 1;
        self.objects_taken += 1;
        self.peak_objects_taken = self.peak_objects_taken.max(self.objects_taken);
        if next == 0 {
            self.partial_became_full(header);
        }
        // SAFETY: `head` was checked non-null above.
        Some(unsafe { NonNull::new_unchecked(head) })
    }

    /// Puts `object`, slot of the slab `header`, back on that slab's free list.
    ///
    /// # Errors
    /// [`FreeError::DoubleFree`] when the object heads the free list or the slab is empty.
    ///
    /// # Safety
    /// `header` heads a live slab of this cache and `object` is one of its slots.
    #[inline]
    pub(crate) unsafe fn put_located<P: PageSource + ?Sized>(
        &mut self,
        header: NonNull<SlabHeader>,
        object: NonNull<u8>,
        pages: &P,
    ) -> Result<(), FreeError> {
        // SAFETY: (caller) the header is live.
        let slab = unsafe { header.as_ref() };
        let head = slab.free.get();
        let in_use = slab.in_use.get();
        if head == object.as_ptr() || in_use == 0 {
            return Err(FreeError::DoubleFree);
        }
        slab.in_use.set(in_use - 1);
        self.objects_taken -= 1;
        if slab.state.get() == SlabState::Quarantined {
            self.quarantined_slab_objects += 1;
            return Ok(());
        }
        // SAFETY: (caller) the slot is ours again; its first word takes the link.
        unsafe { self.format.store_link(object.as_ptr(), head.addr()) };
        slab.free.set(object.as_ptr());
        self.objects_free += 1;
        if in_use == 1 {
            if self.partial_slabs == 1
                && self.idle.is_null()
                && self.max_empty_slabs > 0
                && slab.state.get() == SlabState::Partial
            {
                self.idle = header.as_ptr();
            } else {
                self.became_empty(header, pages);
            }
        } else if head.is_null() {
            self.full_became_partial(header);
        }
        Ok(())
    }

    /// Puts an object back that the per-CPU front cached, finding its slab.
    ///
    /// # Safety
    /// As for [`deallocate`](Self::deallocate).
    pub(crate) unsafe fn put<P: PageSource + ?Sized>(
        &mut self,
        object: NonNull<u8>,
        pages: &P,
    ) -> Result<(), FreeError> {
        // SAFETY: (caller).
        let (header, _) = unsafe { self.format.locate(object) }?;
        // SAFETY: `locate` proved `object` is a slot of our slab `header`.
        unsafe { self.put_located(header, object, pages) }
    }

    /// Withholds a taken object that failed a check, and reports it.
    pub(crate) fn quarantine_object(&mut self, object: NonNull<u8>, error: FreeError) {
        self.quarantined_objects += 1;
        self.corruptions += 1;
        self.format.report(error, object.as_ptr());
    }

    /// Counts and reports corruption found outside the slab lists.
    pub(crate) fn report(&mut self, error: FreeError, at: *mut u8) {
        self.corruptions += 1;
        self.format.report(error, at);
    }

    /// Allocation with per-object checks: objects failing them are
    /// quarantined and reported, and another object is tried.
    #[cold]
    fn check_handout<P: PageSource + ?Sized>(
        &mut self,
        mut object: NonNull<u8>,
        pages: &P,
    ) -> Result<NonNull<u8>, AllocError> {
        loop {
            // SAFETY: `object` was just taken off one of our slabs.
            match unsafe { handout_checks(&self.format, object) } {
                Ok(()) => return Ok(object),
                Err(error) => self.quarantine_object(object, error),
            }
            object = self.take(pages)?;
        }
    }

    /// Free with per-object checks.
    ///
    /// # Safety
    /// `object` is slot `index` of our live slab `header`.
    #[cold]
    unsafe fn checked_free<P: PageSource + ?Sized>(
        &mut self,
        header: NonNull<SlabHeader>,
        index: usize,
        object: NonNull<u8>,
        pages: &P,
    ) -> Result<(), FreeError> {
        // SAFETY: (caller).
        unsafe { checks::begin_free(&self.format, header, index, object) }?;
        // Poison before the object goes back: its slab may be given back below.
        // SAFETY: (caller) the caller gave the object up.
        unsafe { checks::poison(&self.format, object) };
        // SAFETY: (caller).
        let result = unsafe { self.put_located(header, object, pages) };
        if result.is_err() {
            // SAFETY: (caller) the object stays the caller's.
            unsafe { checks::undo_free(&self.format, header, index) };
        }
        result
    }

    /// Makes a partial slab from an empty one or fresh pages; returns it.
    #[cold]
    fn add_partial_slab<P: PageSource + ?Sized>(
        &mut self,
        pages: &P,
    ) -> Result<NonNull<SlabHeader>, AllocError> {
        let header = match self.empty.pop_front() {
            Some(slab) => {
                self.empty_slabs -= 1;
                self.empty_low = self.empty_low.min(self.empty_slabs);
                // SAFETY: list pointers come from `list_ref` of non-null headers.
                unsafe { NonNull::new_unchecked(UnsafeRef::into_raw(slab)) }
            }
            None => self
                .grow(pages)
                .inspect_err(|_| self.failed_allocations += 1)?,
        };
        // SAFETY: `header` heads a live slab we own, on no list now.
        unsafe { header.as_ref() }.state.set(SlabState::Partial);
        self.partial.push_front(list_ref(header));
        self.partial_slabs += 1;
        self.busy_peak = self.busy_peak.max(self.busy_slabs());
        Ok(header)
    }

    /// Takes and formats a new slab.
    fn grow<P: PageSource + ?Sized>(
        &mut self,
        pages: &P,
    ) -> Result<NonNull<SlabHeader>, AllocError> {
        let g = self.format.geometry;
        let memory = pages.allocate_pages(g.slab_pages, g.slab_pages)?;
        if memory.addr().get() & !g.slab_mask() != 0 {
            // Masking would not find the header: refuse a source that breaks its promise.
            // SAFETY: the pages came from `pages` just now and were not used.
            let _ = unsafe { pages.deallocate_pages(memory, g.slab_pages) };
            return Err(AllocError::BadAlignment);
        }
        // SAFETY: the source promises `slab_bytes` writable bytes, exclusively
        // ours, aligned as checked above.
        let header = unsafe { self.format.format(memory, &mut self.rng) };
        self.objects_free += g.capacity;
        Ok(header)
    }

    /// Removes `header` from the list its state names.
    fn unlink(&mut self, header: NonNull<SlabHeader>) {
        // SAFETY: the header is live; its state names the list it is on.
        let state = unsafe { header.as_ref() }.state.get();
        let (list, count) = match state {
            SlabState::Full => (&mut self.full, &mut self.full_slabs),
            SlabState::Partial => (&mut self.partial, &mut self.partial_slabs),
            SlabState::Empty => (&mut self.empty, &mut self.empty_slabs),
            SlabState::Quarantined => return,
        };
        // SAFETY: the slab is linked into `list`, as its state says.
        unsafe { list.cursor_mut_from_ptr(header.as_ptr()).remove() };
        *count -= 1;
        if self.idle == header.as_ptr() {
            self.idle = core::ptr::null_mut();
        }
    }

    #[cold]
    fn partial_became_full(&mut self, header: NonNull<SlabHeader>) {
        // SAFETY: the header is live.
        let slab = unsafe { header.as_ref() };
        if slab.in_use.get() as usize != self.format.geometry.capacity {
            // The list ended before every object was handed out: it was cut.
            self.quarantine_slab(header, header.as_ptr().cast());
            return;
        }
        self.unlink(header);
        slab.state.set(SlabState::Full);
        self.full.push_front(list_ref(header));
        self.full_slabs += 1;
    }

    #[cold]
    fn full_became_partial(&mut self, header: NonNull<SlabHeader>) {
        self.unlink(header);
        // SAFETY: the header is live.
        unsafe { header.as_ref() }.state.set(SlabState::Partial);
        // The front: a slab one object short of full is the most used partial slab.
        self.partial.push_front(list_ref(header));
        self.partial_slabs += 1;
    }

    #[cold]
    fn became_empty<P: PageSource + ?Sized>(&mut self, header: NonNull<SlabHeader>, pages: &P) {
        self.unlink(header);
        // SAFETY: the header is live.
        unsafe { header.as_ref() }.state.set(SlabState::Empty);
        self.empty.push_front(list_ref(header));
        self.empty_slabs += 1;
        let idle = usize::from(!self.idle.is_null());
        if self.empty_slabs + idle > self.max_empty_slabs.min(self.busy_peak) {
            self.release_coldest_empty(pages);
        }
    }

    /// Gives the least recently emptied slab back; `false` if there is none
    /// or the source refuses it (it stays on the list then).
    fn release_coldest_empty<P: PageSource + ?Sized>(&mut self, pages: &P) -> bool {
        let Some(slab) = self.empty.pop_back() else {
            return false;
        };
        let header = UnsafeRef::into_raw(slab);
        let g = self.format.geometry;
        // SAFETY: `header` is the non-null start of a slab from `pages`.
        let memory = unsafe { NonNull::new_unchecked(header.cast::<u8>()) };
        // SAFETY: the slab came from `pages` with this count; every object is
        // free and it is on no list, so nothing refers to it any more.
        match unsafe { pages.deallocate_pages(memory, g.slab_pages) } {
            Ok(()) => {
                self.empty_slabs -= 1;
                self.empty_low = self.empty_low.min(self.empty_slabs);
                self.objects_free -= g.capacity;
                true
            }
            Err(_) => {
                // SAFETY: still our live slab.
                self.empty.push_back(unsafe { UnsafeRef::from_raw(header) });
                false
            }
        }
    }

    /// Takes a slab whose free list is corrupt off the lists for good.
    #[cold]
    fn quarantine_slab(&mut self, header: NonNull<SlabHeader>, at: *mut u8) {
        self.unlink(header);
        // SAFETY: the header is live.
        let slab = unsafe { header.as_ref() };
        let unreachable = self
            .format
            .geometry
            .capacity
            .saturating_sub(slab.in_use.get() as usize);
        slab.state.set(SlabState::Quarantined);
        slab.free.set(core::ptr::null_mut());
        self.objects_free -= unreachable;
        self.quarantined_slab_objects += unreachable;
        self.quarantined_slabs += 1;
        self.report(FreeError::Corrupted, at);
    }
}

/// Finds `object`'s slab and runs the hand-out checks.
///
/// # Safety
/// `object` was taken off a slab of `format`'s cache and is not on any free
/// list or magazine.
pub(crate) unsafe fn handout_checks(
    format: &SlabFormat,
    object: NonNull<u8>,
) -> Result<(), FreeError> {
    // SAFETY: (caller) the object lies in one of our live slabs.
    let (header, index) = unsafe { format.locate(object) }?;
    // SAFETY: as above.
    unsafe { checks::on_allocate(format, header, index, object) }
}

#[cfg(all(test, not(loom)))]
mod tests;
