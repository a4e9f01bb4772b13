//! The demo's Node.js service, when `node` is installed: a small HTTP
//! server whose session list keeps growing, watched from outside by the
//! collector (`--watch`), with no meshwatch code in it. It shows a service
//! of another language beside the Rust ones, its memory climbing.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use meshwatch_collector::WatchRule;

/// The service name it is watched as.
pub const SERVICE: &str = "sessions";

/// An argument that marks the process, for the watch rule.
const MARKER: &str = "meshwatch-demo-sessions";

/// The server: keeps 256 KiB per half second of "sessions" (up to 48 MiB,
/// then flat), and answers every request.
const SCRIPT: &str = r#"
const http = require('http');
const sessions = [];
setInterval(() => {
  if (sessions.length < 192) sessions.push(Buffer.alloc(256 * 1024, sessions.length % 251));
}, 500);
http.createServer((req, res) => res.end('ok\n')).listen(0, '127.0.0.1');
"#;

/// The rule that watches it.
pub fn watch_rule() -> anyhow::Result<WatchRule> {
    Ok(WatchRule::command(&format!("{MARKER}={SERVICE}"))?)
}

/// Starts it when `node` runs; `None`, saying so, when it does not.
pub fn spawn(data_dir: &Path) -> anyhow::Result<Option<Child>> {
    let installed = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !installed {
        println!(
            "meshwatch demo: node is not installed, so the Node.js service ({SERVICE}) is skipped"
        );
        return Ok(None);
    }
    let log_path = data_dir.join(format!("{SERVICE}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let child = Command::new("node")
        .args(["-e", SCRIPT, MARKER])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start the demo's Node.js service")?;
    Ok(Some(child))
}
