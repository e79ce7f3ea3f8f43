//! A buddy allocator of power-of-two frame blocks with out-of-band metadata,
//! and a byte-granular buddy heap.
#![no_std]
#![warn(missing_docs)]
