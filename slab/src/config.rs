//! `SlabConfig` and `Hardening`: what a cache is asked to build.

use core::fmt;

use kalloc_api::FreeError;

/// Called when a cache finds its metadata or an object's guard bytes
/// overwritten where no error can be returned (during an allocation, or while
/// a per-CPU front flushes a magazine), and by a `GlobalAlloc` wrapper for any
/// refused free. The pointer is the object or slot involved.
///
/// A kernel typically panics or halts here; returning lets the cache carry on
/// around the damage (the slot or slab involved is quarantined, never reused).
pub type CorruptionHandler = fn(FreeError, *mut u8);

/// Hardening switches of one cache, combined with [`union`](Self::union).
///
/// The immediate double-free check (freeing the object that heads the free
/// list or tops the magazine) is always on and is not a flag.
///
/// ```
/// use kalloc_slab::Hardening;
///
/// let checks = Hardening::FREELIST_HARDENED.union(Hardening::POISON);
/// assert!(checks.contains(Hardening::POISON));
/// assert!(!checks.contains(Hardening::RED_ZONE));
/// assert!(Hardening::DEBUG.contains(checks));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hardening(u8);

impl Hardening {
    /// No hardening beyond the always-on immediate double-free check.
    pub const NONE: Self = Self(0);
    /// Free-list links stored as `next ^ secret ^ slot_address` (Linux's
    /// `SLAB_FREELIST_HARDENED`), and every decoded link checked to be a slot
    /// of the same slab before use.
    pub const FREELIST_HARDENED: Self = Self(1 << 0);
    /// New slabs thread their free list in a random order drawn from the
    /// caller's seed (Linux's `SLAB_FREELIST_RANDOM`).
    pub const FREELIST_RANDOM: Self = Self(1 << 1);
    /// A bit per object in the slab header says whether a caller holds it, so
    /// every double free is caught, not only the immediate one.
    pub const DOUBLE_FREE_BITMAP: Self = Self(1 << 2);
    /// Freed objects are filled with [`POISON_FREE_BYTE`](crate::POISON_FREE_BYTE)
    /// and the poison is checked when they are handed out again, catching
    /// writes after free.
    pub const POISON: Self = Self(1 << 3);
    /// At least [`RED_ZONE_BYTES`](crate::RED_ZONE_BYTES) of guard bytes after
    /// each object, checked on free and on allocation, catching overruns.
    pub const RED_ZONE: Self = Self(1 << 4);
    /// The cheap checks: what `SlabConfig::new` uses with the `hardened` feature.
    pub const DEFAULT: Self = Self(Self::FREELIST_HARDENED.0 | Self::FREELIST_RANDOM.0);
    /// Every check this crate has.
    pub const DEBUG: Self =
        Self(Self::DEFAULT.0 | Self::DOUBLE_FREE_BITMAP.0 | Self::POISON.0 | Self::RED_ZONE.0);
    /// The checks that look at each object as callers take and return it.
    pub(crate) const OBJECT_CHECKS: Self =
        Self(Self::DOUBLE_FREE_BITMAP.0 | Self::POISON.0 | Self::RED_ZONE.0);

    /// What `SlabConfig::new` starts from, chosen by the cargo features
    /// `hardened` (on by default) and `debug-checks`.
    pub const FEATURE_DEFAULT: Self = {
        let mut flags = Self::NONE;
        if cfg!(feature = "hardened") {
            flags = flags.union(Self::DEFAULT);
        }
        if cfg!(feature = "debug-checks") {
            flags = flags.union(Self::DEBUG);
        }
        flags
    };

    /// Both sets of switches.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// These switches less `other`'s.
    #[must_use]
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// Whether every switch in `other` is on here.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any switch in `other` is on here.
    pub(crate) const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }
}

impl fmt::Debug for Hardening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(Hardening, &str); 5] = [
            (Hardening::FREELIST_HARDENED, "FREELIST_HARDENED"),
            (Hardening::FREELIST_RANDOM, "FREELIST_RANDOM"),
            (Hardening::DOUBLE_FREE_BITMAP, "DOUBLE_FREE_BITMAP"),
            (Hardening::POISON, "POISON"),
            (Hardening::RED_ZONE, "RED_ZONE"),
        ];
        let mut set = f.debug_set();
        for (flag, name) in NAMES {
            if self.contains(flag) {
                set.entry(&format_args!("{name}"));
            }
        }
        set.finish()
    }
}

/// The default free-list secret when the caller gives none. Kernels should
/// pass a boot-time random value through [`SlabConfig::with_secret`]; the
/// slot address still varies the key per slot without one.
const DEFAULT_SECRET: u64 = 0x9e37_79b9_7f4a_7c15;
/// The default seed of the free-list shuffle when the caller gives none.
const DEFAULT_SEED: u64 = 0x2545_f491_4f6c_dd1d;
/// The default cap on empty slabs a cache keeps for reuse: none of its own,
/// so a cache keeps as many as it had slabs in use at its busiest since the
/// last [`reap`](crate::SlabCache::reap) or [`shrink`](crate::SlabCache::shrink).
pub const DEFAULT_MAX_EMPTY_SLABS: usize = usize::MAX;

/// What a [`SlabCache`](crate::SlabCache) is asked to build: object size and
/// alignment, hardening switches, secret and seed. Built with `const`
/// builder methods so caches can live in `static`s.
///
/// ```
/// use kalloc_slab::{Hardening, SlabCache, SlabConfig};
///
/// const INODES: SlabConfig = SlabConfig::new(200, 8)
///     .with_hardening(Hardening::DEFAULT.union(Hardening::POISON))
///     .with_secret(0x5eed_1234)
///     .with_seed(42);
/// let cache = SlabCache::new(INODES).unwrap();
/// assert_eq!(cache.object_size(), 200);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct SlabConfig {
    pub(crate) object_size: usize,
    pub(crate) align: usize,
    pub(crate) hardening: Hardening,
    pub(crate) secret: usize,
    pub(crate) seed: u64,
    pub(crate) max_empty_slabs: usize,
    pub(crate) on_corruption: Option<CorruptionHandler>,
}

impl SlabConfig {
    /// Objects of `object_size` bytes aligned to `align` (a power of two, at
    /// most [`PAGE_SIZE`](kalloc_api::PAGE_SIZE)), with
    /// [`Hardening::FEATURE_DEFAULT`]. Invalid values are reported by
    /// [`SlabCache::new`](crate::SlabCache::new).
    pub const fn new(object_size: usize, align: usize) -> Self {
        Self {
            object_size,
            align,
            hardening: Hardening::FEATURE_DEFAULT,
            secret: DEFAULT_SECRET as usize,
            seed: DEFAULT_SEED,
            max_empty_slabs: DEFAULT_MAX_EMPTY_SLABS,
            on_corruption: None,
        }
    }

    /// Replaces the hardening switches.
    #[must_use]
    pub const fn with_hardening(mut self, hardening: Hardening) -> Self {
        self.hardening = hardening;
        self
    }

    /// The secret mixed into stored free-list links (use a random value from boot).
    #[must_use]
    pub const fn with_secret(mut self, secret: usize) -> Self {
        self.secret = secret;
        self
    }

    /// The seed of the free-list shuffle in new slabs.
    #[must_use]
    pub const fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// At most how many empty slabs the cache keeps for reuse, below its
    /// busy peak; frees give further emptied slabs back to the page source
    /// ([`shrink`](crate::SlabCache::shrink) gives back the rest). Kernels
    /// short of memory cap it; `0` keeps none.
    #[must_use]
    pub const fn with_max_empty_slabs(mut self, slabs: usize) -> Self {
        self.max_empty_slabs = slabs;
        self
    }

    /// A handler for this cache's corruption reports, instead of the global one
    /// set by [`set_corruption_handler`](crate::set_corruption_handler).
    #[must_use]
    pub const fn with_corruption_handler(mut self, handler: CorruptionHandler) -> Self {
        self.on_corruption = Some(handler);
        self
    }

    /// The object size asked for.
    pub const fn object_size(&self) -> usize {
        self.object_size
    }

    /// The alignment asked for.
    pub const fn align(&self) -> usize {
        self.align
    }

    /// The hardening switches.
    pub const fn hardening(&self) -> Hardening {
        self.hardening
    }
}
