// Used by the watchdog and the heap profiler, which land next.
#![allow(dead_code, unused_imports)]
//! Stacks: the return addresses of a thread, and their names.
//!
//! Capturing and naming are split on purpose. Capture happens where time and
//! safety are short (inside the allocator, or for another thread); naming
//! needs the debug info and memory, and happens later on a probe thread,
//! through a [`Symbolizer`] with a cache.

mod symbolize;

pub(crate) use symbolize::{AddressKind, Symbolizer};
