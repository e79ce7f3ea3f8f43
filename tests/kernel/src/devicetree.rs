//! What the kernel learns from the device tree the firmware hands it: RAM,
//! reserved memory, the harts, and where the tree itself lies.

use fdt::Fdt;

/// The most RAM or reserved ranges the kernel keeps from the tree.
pub const MAX_RANGES: usize = 16;

/// A physical byte range `[start, start + len)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysRange {
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

/// A fixed-capacity list of ranges (the kernel has no heap yet when it reads them).
#[derive(Clone, Copy, Debug)]
pub struct Ranges {
    items: [PhysRange; MAX_RANGES],
    len: usize,
}

impl Ranges {
    const fn new() -> Self {
        Self {
            items: [PhysRange { start: 0, len: 0 }; MAX_RANGES],
            len: 0,
        }
    }

    fn push(&mut self, range: PhysRange) -> Result<(), DeviceTreeError> {
        let slot = self
            .items
            .get_mut(self.len)
            .ok_or(DeviceTreeError::TooManyRanges)?;
        *slot = range;
        self.len += 1;
        Ok(())
    }

    /// The ranges, in the order the tree lists them.
    pub fn as_slice(&self) -> &[PhysRange] {
        &self.items[..self.len]
    }
}

/// The machine as the device tree describes it.
#[derive(Clone, Copy, Debug)]
pub struct Platform {
    /// RAM, from the `/memory` nodes.
    pub ram: Ranges,
    /// Memory the kernel must not use: the tree's reservation block and
    /// `/reserved-memory` children.
    pub reserved: Ranges,
    /// The device-tree blob itself.
    pub blob: PhysRange,
    /// Harts listed under `/cpus`.
    pub harts: usize,
}

/// Why the device tree could not be read.
#[derive(Clone, Copy, Debug)]
pub enum DeviceTreeError {
    /// The header is missing or malformed.
    BadHeader(fdt::FdtError),
    /// No `/memory` node with a sized region.
    NoMemory,
    /// More ranges than [`MAX_RANGES`].
    TooManyRanges,
}

impl core::fmt::Display for DeviceTreeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadHeader(error) => write!(f, "bad device-tree header: {error}"),
            Self::NoMemory => f.write_str("the device tree lists no RAM"),
            Self::TooManyRanges => write!(f, "more than {MAX_RANGES} memory ranges"),
        }
    }
}

/// Reads the tree at physical address `blob`.
///
/// # Safety
/// `blob` is the address the firmware passed in `a1`: a device tree that stays
/// mapped and unchanged while the kernel runs.
pub unsafe fn read(blob: usize) -> Result<Platform, DeviceTreeError> {
    // SAFETY: the caller promises a device tree at `blob`; `from_ptr` reads the
    // header first and the rest within the size it states.
    let tree = unsafe { Fdt::from_ptr(core::ptr::with_exposed_provenance(blob)) }
        .map_err(DeviceTreeError::BadHeader)?;

    let mut ram = Ranges::new();
    for node in tree.all_nodes().filter(|node| is_memory_node(node.name)) {
        for region in node.reg().into_iter().flatten() {
            if let Some(len) = region.size.filter(|len| *len > 0) {
                ram.push(PhysRange {
                    start: region.starting_address as u64,
                    len: len as u64,
                })?;
            }
        }
    }
    if ram.len == 0 {
        return Err(DeviceTreeError::NoMemory);
    }

    let mut reserved = Ranges::new();
    for reservation in tree.memory_reservations() {
        if reservation.size() > 0 {
            reserved.push(PhysRange {
                start: reservation.address() as u64,
                len: reservation.size() as u64,
            })?;
        }
    }
    if let Some(node) = tree.find_node("/reserved-memory") {
        for child in node.children() {
            for region in child.reg().into_iter().flatten() {
                if let Some(len) = region.size.filter(|len| *len > 0) {
                    reserved.push(PhysRange {
                        start: region.starting_address as u64,
                        len: len as u64,
                    })?;
                }
            }
        }
    }

    Ok(Platform {
        ram,
        reserved,
        blob: PhysRange {
            start: blob as u64,
            len: tree.total_size() as u64,
        },
        harts: tree.find_node("/cpus").map_or(0, |cpus| {
            cpus.children()
                .filter(|child| child.name.split('@').next() == Some("cpu"))
                .count()
        }),
    })
}

/// Whether a node named `name` describes RAM (`memory` or `memory@<address>`).
fn is_memory_node(name: &str) -> bool {
    name.split('@').next() == Some("memory")
}
