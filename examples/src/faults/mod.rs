//! Faults the example services can be told to have, to show (and test)
//! what meshwatch finds.

pub mod session_leak;

/// A fault to inject, chosen with `--fault`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// The proxy's session cache never evicts closed sessions: memory
    /// climbs at `--sessions-per-sec` × `--session-bytes`.
    Leak,
}
