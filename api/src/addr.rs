//! Physical and virtual address newtypes with checked arithmetic.

use core::fmt;

use crate::error::AddrError;

/// Whether `value` is a power of two (zero is not).
#[inline]
pub const fn is_power_of_two(value: u64) -> bool {
    value != 0 && value & (value - 1) == 0
}

/// Rounds `value` up to a multiple of `align`, a power of two.
///
/// Returns `None` when `align` is not a power of two or the result would not fit
/// in a `u64`.
///
/// ```
/// assert_eq!(kalloc_api::align_up(5, 4), Some(8));
/// assert_eq!(kalloc_api::align_up(u64::MAX, 4), None);
/// ```
#[inline]
pub const fn align_up(value: u64, align: u64) -> Option<u64> {
    if !is_power_of_two(align) {
        return None;
    }
    let mask = align - 1;
    match value.checked_add(mask) {
        Some(bumped) => Some(bumped & !mask),
        None => None,
    }
}

/// Rounds `value` down to a multiple of `align`, a power of two.
///
/// Returns `None` when `align` is not a power of two.
///
/// ```
/// assert_eq!(kalloc_api::align_down(4097, 4096), Some(4096));
/// ```
#[inline]
pub const fn align_down(value: u64, align: u64) -> Option<u64> {
    if !is_power_of_two(align) {
        return None;
    }
    Some(value & !(align - 1))
}

/// A physical memory address.
///
/// Physical addresses are 64-bit on every target: a 32-bit kernel with PAE or a
/// RISC-V Sv39 kernel still sees physical memory above 4 GiB.
///
/// ```
/// use kalloc_api::PhysAddr;
///
/// let addr = PhysAddr::new(0x1234);
/// assert_eq!(addr.align_down(0x1000)?, PhysAddr::new(0x1000));
/// assert_eq!(addr.align_up(0x1000)?, PhysAddr::new(0x2000));
/// assert!(PhysAddr::new(u64::MAX).align_up(0x1000).is_err());
/// # Ok::<(), kalloc_api::AddrError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct PhysAddr(u64);

impl PhysAddr {
    /// The address zero.
    pub const ZERO: Self = Self(0);

    /// Wraps a raw physical address.
    #[inline]
    pub const fn new(addr: u64) -> Self {
        Self(addr)
    }

    /// The raw address.
    #[inline]
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Whether the address is a multiple of `align` (which must be a power of two;
    /// any other `align` answers `false`).
    #[inline]
    pub const fn is_aligned(self, align: u64) -> bool {
        is_power_of_two(align) && self.0 & (align - 1) == 0
    }

    /// Rounds up to a multiple of `align`.
    ///
    /// # Errors
    /// [`AddrError::BadAlignment`] if `align` is not a power of two,
    /// [`AddrError::Overflow`] if the result does not fit in a `u64`.
    #[inline]
    pub const fn align_up(self, align: u64) -> Result<Self, AddrError> {
        if !is_power_of_two(align) {
            return Err(AddrError::BadAlignment);
        }
        match align_up(self.0, align) {
            Some(addr) => Ok(Self(addr)),
            None => Err(AddrError::Overflow),
        }
    }

    /// Rounds down to a multiple of `align`.
    ///
    /// # Errors
    /// [`AddrError::BadAlignment`] if `align` is not a power of two.
    #[inline]
    pub const fn align_down(self, align: u64) -> Result<Self, AddrError> {
        match align_down(self.0, align) {
            Some(addr) => Ok(Self(addr)),
            None => Err(AddrError::BadAlignment),
        }
    }

    /// `self + bytes`, or `None` on overflow.
    #[inline]
    pub const fn checked_add(self, bytes: u64) -> Option<Self> {
        match self.0.checked_add(bytes) {
            Some(addr) => Some(Self(addr)),
            None => None,
        }
    }

    /// `self - bytes`, or `None` below zero.
    #[inline]
    pub const fn checked_sub(self, bytes: u64) -> Option<Self> {
        match self.0.checked_sub(bytes) {
            Some(addr) => Some(Self(addr)),
            None => None,
        }
    }

    /// Bytes from `earlier` up to `self`, or `None` if `earlier` is above `self`.
    #[inline]
    pub const fn offset_from(self, earlier: Self) -> Option<u64> {
        self.0.checked_sub(earlier.0)
    }
}

impl fmt::Debug for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhysAddr({:#x})", self.0)
    }
}

impl fmt::Display for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::LowerHex for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

/// A virtual address in the kernel's address space.
///
/// ```
/// use kalloc_api::VirtAddr;
///
/// let value = 7u32;
/// let addr = VirtAddr::from_ptr(&value);
/// assert!(addr.is_aligned(4));
/// assert_eq!(addr.as_ptr::<u32>(), &value as *const u32);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct VirtAddr(usize);

impl VirtAddr {
    /// Wraps a raw virtual address.
    #[inline]
    pub const fn new(addr: usize) -> Self {
        Self(addr)
    }

    /// The address of `ptr`.
    #[inline]
    pub fn from_ptr<T: ?Sized>(ptr: *const T) -> Self {
        Self(ptr.cast::<u8>() as usize)
    }

    /// The raw address.
    #[inline]
    pub const fn as_usize(self) -> usize {
        self.0
    }

    /// The address as a raw pointer (exposed provenance: the pointer may only be
    /// used for memory the kernel has mapped there).
    #[inline]
    pub fn as_ptr<T>(self) -> *const T {
        core::ptr::with_exposed_provenance(self.0)
    }

    /// The address as a mutable raw pointer (see [`as_ptr`](Self::as_ptr)).
    #[inline]
    pub fn as_mut_ptr<T>(self) -> *mut T {
        core::ptr::with_exposed_provenance_mut(self.0)
    }

    /// Whether the address is a multiple of `align` (a power of two).
    #[inline]
    pub const fn is_aligned(self, align: usize) -> bool {
        align.is_power_of_two() && self.0 & (align - 1) == 0
    }

    /// Rounds up to a multiple of `align`.
    ///
    /// # Errors
    /// [`AddrError::BadAlignment`] if `align` is not a power of two,
    /// [`AddrError::Overflow`] if the result does not fit.
    #[inline]
    pub const fn align_up(self, align: usize) -> Result<Self, AddrError> {
        if !align.is_power_of_two() {
            return Err(AddrError::BadAlignment);
        }
        match self.0.checked_add(align - 1) {
            Some(bumped) => Ok(Self(bumped & !(align - 1))),
            None => Err(AddrError::Overflow),
        }
    }

    /// Rounds down to a multiple of `align`.
    ///
    /// # Errors
    /// [`AddrError::BadAlignment`] if `align` is not a power of two.
    #[inline]
    pub const fn align_down(self, align: usize) -> Result<Self, AddrError> {
        if !align.is_power_of_two() {
            return Err(AddrError::BadAlignment);
        }
        Ok(Self(self.0 & !(align - 1)))
    }

    /// `self + bytes`, or `None` on overflow.
    #[inline]
    pub const fn checked_add(self, bytes: usize) -> Option<Self> {
        match self.0.checked_add(bytes) {
            Some(addr) => Some(Self(addr)),
            None => None,
        }
    }
}

impl fmt::Debug for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VirtAddr({:#x})", self.0)
    }
}

impl fmt::Display for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_up_rounds_to_next_multiple() {
        assert_eq!(align_up(0, 8), Some(0));
        assert_eq!(align_up(1, 8), Some(8));
        assert_eq!(align_up(8, 8), Some(8));
        assert_eq!(align_up(9, 8), Some(16));
    }

    #[test]
    fn align_up_reports_overflow_instead_of_wrapping() {
        assert_eq!(align_up(u64::MAX - 2, 8), None);
        assert_eq!(
            PhysAddr::new(u64::MAX).align_up(2),
            Err(AddrError::Overflow)
        );
        assert_eq!(
            VirtAddr::new(usize::MAX).align_up(2),
            Err(AddrError::Overflow)
        );
    }

    #[test]
    fn non_power_of_two_alignment_is_rejected() {
        assert_eq!(align_up(5, 0), None);
        assert_eq!(align_up(5, 3), None);
        assert_eq!(align_down(5, 6), None);
        assert_eq!(PhysAddr::new(5).align_up(3), Err(AddrError::BadAlignment));
        assert_eq!(PhysAddr::new(5).align_down(0), Err(AddrError::BadAlignment));
        assert_eq!(
            VirtAddr::new(5).align_down(12),
            Err(AddrError::BadAlignment)
        );
        assert!(!PhysAddr::new(0).is_aligned(3));
    }

    #[test]
    fn checked_arithmetic_stops_at_the_ends() {
        assert_eq!(PhysAddr::new(u64::MAX).checked_add(1), None);
        assert_eq!(PhysAddr::new(0).checked_sub(1), None);
        assert_eq!(PhysAddr::new(10).offset_from(PhysAddr::new(4)), Some(6));
        assert_eq!(PhysAddr::new(4).offset_from(PhysAddr::new(10)), None);
        assert_eq!(VirtAddr::new(usize::MAX).checked_add(1), None);
    }

    #[test]
    fn addresses_format_as_hex() {
        extern crate std;
        use std::format;
        assert_eq!(format!("{}", PhysAddr::new(0x1000)), "0x1000");
        assert_eq!(format!("{:?}", PhysAddr::new(0x1000)), "PhysAddr(0x1000)");
        assert_eq!(format!("{:?}", VirtAddr::new(0x20)), "VirtAddr(0x20)");
    }
}
