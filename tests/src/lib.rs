//! The reference model and adapters that drive every kalloc allocator through
//! the same operation sequences.
