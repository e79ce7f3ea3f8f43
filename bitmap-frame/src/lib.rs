//! A bitmap physical frame allocator: one bit per 4 KiB frame, a summary level
//! for fast search, contiguous aligned runs, and a lock-free variant.
#![no_std]
#![warn(missing_docs)]
