//! The demo mesh: small instrumented tokio services.
//!
//! Each service is an HTTP server that links `meshwatch-probe` the way a real
//! service would. They serve the demo (`meshwatch demo` runs them as child
//! processes), the end-to-end tests and the benchmarks, so all three watch
//! the same code.
#![warn(missing_docs)]

pub mod cache_sawtooth;
pub mod faults;
pub mod service;
pub mod signals;
