//! Shared workloads and peer adapters for the kalloc benchmarks.
