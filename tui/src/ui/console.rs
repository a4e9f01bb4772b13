//! Hands the terminal to tokio-console, for services that run
//! console-subscriber: meshwatch says which task is stuck or leaking,
//! tokio-console shows every task's polls and wakers live.

use std::process::Command;

/// The program, looked up on `PATH`.
const PROGRAM: &str = "tokio-console";

/// Runs tokio-console on the server at `address` (`ip:port`) until the
/// person quits it. The terminal must be restored first. The error is a
/// sentence for the footer: how to install it, or how it ended.
pub fn run(address: &str) -> Result<(), String> {
    match Command::new(PROGRAM).arg(format!("http://{address}")).status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("tokio-console on {address} ended: {status}")),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(
            "tokio-console is not installed: `cargo install --locked tokio-console`, then press c again"
                .to_owned(),
        ),
        Err(error) => Err(format!("cannot start tokio-console: {error}")),
    }
}
