//! Boot-time memory for kernels: a memblock-like allocator over the firmware
//! memory map, and a lock-free bump arena for the early heap.
#![no_std]
#![warn(missing_docs)]
