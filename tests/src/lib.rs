//! The reference model and adapters that drive every kalloc allocator through
//! the same operation sequences.
//!
//! - [`model`]: the set of live ranges and the promises each answer is checked against.
//! - [`op`]: operations, decoded from random bytes ([`RawOp`]) and scaled per
//!   allocator family ([`Profile`]) into [`Op`]s.
//! - [`adapter`]: the [`ModelAllocator`] trait and the [`Rules`] saying what
//!   each hostile operation must return.
//! - [`driver`]: [`run`] feeds a sequence to an adapter and the model and stops
//!   at the first [`Divergence`]; byte heaps get a pattern written into every
//!   block and checked on free, which catches overlaps the address check misses.
//! - [`adapters`]: one adapter per allocator API.
//! - [`families`]: each allocator as a [`Family`] that proptest files and fuzz
//!   targets share: profile, operation mix, and a function running one sequence.
//! - [`host`]: host memory ([`HostArena`]) and a checking page source ([`HostPages`]).
//! - [`reference`](mod@reference): a trivially correct frame allocator with switchable bugs,
//!   on which the harness tests itself.
//! - [`strategy`] (feature `proptest`): seeded proptest runs of a [`Plan`].
//!
//! # Example
//!
//! ```
//! use kalloc_tests::{FrameAdapter, Op, reference::{Bug, GridFrames}, run};
//!
//! let grid = GridFrames::new(16, 8, Bug::ShortRun);
//! let mut frames = FrameAdapter::new(grid.clone(), vec![grid.span()]);
//! let ops = [
//!     Op::Allocate { size: 2 * 4096, align: 4096 },
//!     Op::Allocate { size: 4096, align: 4096 },
//! ];
//! let divergence = run(&mut frames, &ops).unwrap_err();
//! assert_eq!(divergence.step, 0); // one frame too few counted as used
//! ```
#![warn(missing_docs)]

pub mod adapter;
pub mod adapters;
pub mod driver;
pub mod families;
pub mod host;
pub mod model;
pub mod op;
pub mod reference;
#[cfg(feature = "proptest")]
pub mod strategy;

pub use adapter::{Expect, ModelAllocator, Rules};
pub use adapters::{FrameAdapter, GlobalAdapter, HeapHooks};
pub use driver::{Divergence, Summary, run, run_or_panic};
pub use families::Family;
pub use host::{HostArena, HostPages};
pub use model::{Block, Live, Model, Span};
pub use op::{Mix, Op, Profile, RawOp};
#[cfg(feature = "proptest")]
pub use strategy::{Plan, check, first_divergence};

/// The README's code, run as a doctest so that it keeps compiling.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
