//! `meshwatch` with no command: the status table, refreshed every second,
//! until the interactive TUI replaces it.

use std::time::Duration;

use crate::client::ApiClient;
use crate::status;

const REFRESH: Duration = Duration::from_secs(1);

/// Prints the mesh every second until interrupted. A collector that goes
/// away is reported once and then waited for.
pub fn run(client: &ApiClient) -> anyhow::Result<()> {
    let mut connected = true;
    loop {
        match client.services() {
            Ok(view) => {
                connected = true;
                // Clear the screen and home the cursor, then draw.
                print!("\x1b[2J\x1b[H{}", status::render_table(&view));
            }
            Err(err) if connected => {
                connected = false;
                eprintln!("disconnected, retrying: {err:#}");
            }
            Err(_) => {}
        }
        std::thread::sleep(REFRESH);
    }
}
