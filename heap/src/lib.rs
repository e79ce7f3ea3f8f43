//! A `GlobalAlloc` kernel heap: fine size classes on slab caches, mid sizes on
//! a low-waste segregated fit, large requests on whole pages.
#![no_std]
#![warn(missing_docs)]
