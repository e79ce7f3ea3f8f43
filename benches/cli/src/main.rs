//! `kalloc-bench`: the side-by-side allocator benchmark.

fn main() {}
