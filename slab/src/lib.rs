//! Slab object caches for kernel objects of one size, with per-CPU magazines
//! and hardening.
#![no_std]
#![warn(missing_docs)]
