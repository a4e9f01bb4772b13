//! End-to-end tests: the real `meshwatch-collector`, real instrumented
//! services (`mesh-service`) and the real `meshwatch` CLI, talking over
//! loopback sockets on ephemeral ports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backtest;
mod bad_input;
mod cli_help;
mod event_loops;
mod full_disk;
mod history;
mod leaks;
mod limits;
mod memory;
mod naming;
mod otlp;
mod otlp_export;
mod profile;
mod prometheus;
mod registry;
mod status_cli;
mod stuck;
mod tls;
mod tui;
mod watched;
mod ws_proxy;
