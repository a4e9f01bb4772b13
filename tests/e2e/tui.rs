//! The interactive TUI, driven in tmux like a person would: keys in with
//! `send-keys`, the screen read back with `capture-pane`, against a real
//! collector and real services.

use std::process::Command;
use std::time::{Duration, Instant};

use meshwatch_e2e::{Collector, Process, Service, bin_dir, wait_for};

/// How long the screen may take to show something. Generous: CI is slow.
const SCREEN_TIMEOUT: Duration = Duration::from_secs(30);

/// A private tmux server running one `meshwatch` TUI; killed when dropped.
struct Tmux {
    socket: String,
    /// The TUI's working directory, which holds its log and what it
    /// writes (profiles).
    dir: tempfile::TempDir,
}

impl Tmux {
    /// Starts `meshwatch --collector URL` in a `width`x`height` terminal,
    /// in a directory of its own.
    fn start(collector: &str, width: u16, height: u16) -> Self {
        let logs = tempfile::tempdir().unwrap();
        let socket = format!("meshwatch-e2e-{}-{}", std::process::id(), rand_suffix());
        let command = format!(
            "{} --collector {collector} --log-file {}",
            bin_dir().join("meshwatch").display(),
            logs.path().join("tui.log").display()
        );
        let tmux = Self { socket, dir: logs };
        let cwd = tmux.dir.path().to_str().unwrap().to_owned();
        let status = tmux
            .cmd(&[
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "tui",
                "-c",
                &cwd,
            ])
            .args([
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
                &command,
            ])
            .status()
            .expect("tmux is installed (the CI script installs it)");
        assert!(status.success(), "tmux new-session failed");
        tmux
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.args(["-L", &self.socket]).args(args);
        cmd
    }

    /// Types `keys` (tmux key names: `Enter`, `Escape`, `Tab`, `q`, …).
    fn keys(&self, keys: &[&str]) {
        let status = self
            .cmd(&["send-keys", "-t", "tui"])
            .args(keys)
            .status()
            .unwrap();
        assert!(status.success(), "tmux send-keys {keys:?} failed");
    }

    /// The screen as text.
    fn screen(&self) -> String {
        let out = self
            .cmd(&["capture-pane", "-p", "-t", "tui"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen contains every one of `texts`; returns it.
    fn wait_for_text(&self, texts: &[&str]) -> String {
        let deadline = Instant::now() + SCREEN_TIMEOUT;
        loop {
            let screen = self.screen();
            if texts.iter().all(|t| screen.contains(t)) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {texts:?} on screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the TUI is still running.
    fn running(&self) -> bool {
        self.cmd(&["has-session", "-t", "tui"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- screen ---\n{}", self.screen());
        }
        let _ = self.cmd(&["kill-server"]).status();
    }
}

/// Tells concurrent tests' tmux servers apart.
fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// Starts a collector whose HTTP API listens on `http` (host:port), as a
/// restarted collector would.
fn collector_on(http: &str, data_dir: &std::path::Path) -> Process {
    let data = data_dir.to_str().unwrap();
    let (process, _) = Process::start(
        "meshwatch-collector",
        &[
            "--listen",
            "127.0.0.1:0",
            "--http",
            http,
            "--data-dir",
            data,
        ],
        &[],
        "meshwatch-collector listening ",
    );
    process
}

#[test]
fn tui_shows_the_mesh_opens_details_and_survives_the_collector_going_away() {
    let mut collector = Collector::start();
    let service = Service::start(&collector, "inventory", 2);
    collector.wait_for_instance("inventory with a snapshot", |i| {
        i["service"] == "inventory" && !i["headline"].is_null()
    });
    let tmux = Tmux::start(&collector.http, 80, 24);

    // The mesh view at 80x24: the row, its state, the column headers, the keys.
    let screen = tmux.wait_for_text(&["inventory", "no open incidents", "connected", "q quit"]);
    for column in [
        "SERVICE", "STATE", "CPU", "RSS", "HEAP", "TASKS", "SOCK", "FDS", "RST", "FLAGS",
    ] {
        assert!(screen.contains(column), "no {column} column:\n{screen}");
    }
    let row = screen.lines().find(|l| l.starts_with("inventory")).unwrap();
    assert!(row.contains(" up "), "{row}");

    // Enter opens the service detail: its pid and its threads.
    tmux.keys(&["Enter"]);
    tmux.wait_for_text(&[
        &format!("pid {}", service.process.pid()),
        "THREAD",
        "tokio-rt-worker",
        "history: last 5m00s, live",
    ]);
    // Zoom in, then back to live.
    tmux.keys(&["+"]);
    tmux.wait_for_text(&["history: last 2m30s, live"]);
    tmux.keys(&["["]);
    tmux.wait_for_text(&["ending 1m15s ago"]);
    tmux.keys(&["L"]);
    tmux.wait_for_text(&["history: last 2m30s, live"]);

    // Esc back to the mesh (alone: Esc and a key at once reads as Alt+key);
    // vim keys move; Tab shows the incidents.
    tmux.keys(&["Escape"]);
    tmux.wait_for_text(&["SERVICE", "FLAGS"]);
    tmux.keys(&["j", "k"]);
    tmux.keys(&["Tab"]);
    tmux.wait_for_text(&["incidents: 0 open, 0 resolved"]);
    tmux.keys(&["?"]);
    tmux.wait_for_text(&["back to live", "this help"]);
    tmux.keys(&["Escape"]);
    tmux.wait_for_text(&["incidents: 0 open, 0 resolved"]);
    tmux.keys(&["1"]);
    tmux.wait_for_text(&["mesh: 1 of 1 instances"]);

    // The collector goes away: the screen says so, keeps the last data, and
    // comes back when a collector answers on the same address.
    let http = collector.http.trim_start_matches("http://").to_owned();
    collector.process.kill();
    tmux.wait_for_text(&["disconnected, retrying", "inventory"]);
    let data_dir = tempfile::tempdir().unwrap();
    let _restarted = collector_on(&http, data_dir.path());
    tmux.wait_for_text(&["connected", "no services have reported"]);

    tmux.keys(&["q"]);
    wait_for("the TUI to quit on q", SCREEN_TIMEOUT, || {
        (!tmux.running()).then_some(())
    });
}

/// The function the watchdog names for the loop: the first frame of the
/// example's own code among the frames common to every sample, else the
/// innermost common frame.
fn looping_function(incident: &serde_json::Value) -> String {
    let frames = incident["evidence"]["frames"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let functions: Vec<String> = frames
        .iter()
        .filter_map(|f| f["function"].as_str().map(str::to_owned))
        .collect();
    functions
        .iter()
        .find(|f| f.contains("meshwatch_examples"))
        .or_else(|| functions.first())
        .cloned()
        .expect("the runaway loop's evidence has a stack")
}

/// Starts a looping service, waits for the collector's `runaway_loop`, and
/// asserts the TUI flags it in the mesh, names the function, and opens its
/// stack on Enter.
fn assert_runaway_loop_is_flagged_and_opens_its_stack() {
    let collector = Collector::start();
    let service = Service::start_with(&collector, "checkout", 2, &["--fault", "loop"], &[]);
    collector.wait_for_instance("checkout reporting", |i| {
        i["service"] == "checkout" && !i["headline"].is_null()
    });
    // The parser spins until the service is killed.
    service.get("/fault/loop");
    // The incident opens at once and gains its stack when the first sample
    // is named.
    let incident = wait_for(
        "a runaway_loop incident with a stack",
        SCREEN_TIMEOUT,
        || {
            collector.get_json("/api/v1/incidents?state=open")["incidents"]
                .as_array()?
                .iter()
                .find(|i| {
                    i["kind"] == "runaway_loop"
                        && i["evidence"]["frames"]
                            .as_array()
                            .is_some_and(|f| !f.is_empty())
                })
                .cloned()
        },
    );
    let function = looping_function(&incident);
    let tmux = Tmux::start(&collector.http, 160, 40);
    let screen = tmux.wait_for_text(&["LOOP", "checkout"]);
    let row = screen.lines().find(|l| l.starts_with("checkout")).unwrap();
    assert!(row.contains("LOOP"), "the mesh row is flagged:\n{screen}");

    tmux.keys(&["2"]);
    tmux.wait_for_text(&["runaway_loop", "critical"]);
    tmux.keys(&["Enter"]);
    tmux.wait_for_text(&["stack, innermost first", "▶", &function, "stuck"]);
}

#[test]
fn tui_flags_a_runaway_loop_and_opens_its_stack() {
    assert_runaway_loop_is_flagged_and_opens_its_stack();
}

#[test]
fn p_in_a_service_view_takes_a_cpu_profile_and_shows_its_hot_function() {
    let collector = Collector::start();
    let service = Service::start(&collector, "hot", 2);
    collector.wait_for_instance("hot connected", |i| i["service"] == "hot");
    let load = meshwatch_e2e::load::Load::start(&service.http, 2, 1);
    let tmux = Tmux::start(&collector.http, 120, 40);
    tmux.wait_for_text(&["hot"]);
    tmux.keys(&["Enter"]);
    tmux.wait_for_text(&["THREAD"]);
    tmux.keys(&["p"]);
    tmux.wait_for_text(&["CPU profile: sampling"]);
    let screen = tmux.wait_for_text(&["CPU PROFILE", "self", "service::work"]);
    load.stop();
    assert!(screen.contains("written to"), "{screen}");
    let written: Vec<_> = std::fs::read_dir(tmux.dir.path().join("meshwatch-profile"))
        .expect("the profile's directory")
        .flatten()
        .collect();
    assert_eq!(written.len(), 1, "{written:?}");
    for file in ["profile.pb.gz", "flame.svg"] {
        assert!(written[0].path().join(file).is_file(), "{file} written");
    }
}

#[test]
fn one_tui_over_three_collectors_shows_hosts_and_names_the_one_that_goes_away() {
    let mut collectors: Vec<Collector> = (0..3).map(|_| Collector::start()).collect();
    let names = ["orders", "payments", "ledger"];
    let _services: Vec<Service> = collectors
        .iter()
        .zip(names)
        .map(|(collector, name)| Service::start(collector, name, 1))
        .collect();
    let urls: Vec<String> = collectors.iter().map(|c| c.http.clone()).collect();
    // `--collector` given three times.
    let tmux = Tmux::start(&urls.join(" --collector "), 120, 30);
    let screen = tmux.wait_for_text(&["HOST", "orders", "payments", "ledger", "3 collectors"]);
    assert!(!screen.contains("unreachable"), "{screen}");

    collectors[1].process.kill();
    let screen = tmux.wait_for_text(&["unreachable", &urls[1]["http://".len()..]]);
    assert!(
        screen.contains("orders") && screen.contains("ledger"),
        "the others stay on screen:\n{screen}"
    );
    assert!(tmux.running());
}
