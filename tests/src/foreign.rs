//! Programs in other languages that the tests run (Node.js and Python
//! services), and the pinned packages they need, installed once per run
//! from the project's own lock files.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, mpsc};

use crate::STARTUP_TIMEOUT;

/// The Node programs' directory.
pub fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("node")
}

/// The Python program's directory.
pub fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// Runs `steps` in `dir` once per test run, unless the file `marker` in
/// `dir` says `.ci/run` (or an earlier run) did them; then leaves `marker`.
/// With `pinned` (a file of `dir`, the pins the steps install), the marker
/// holds a copy of it, so changed pins install again. A step's program
/// with a slash in it is a path within `dir`.
fn install_once(
    done: &Mutex<bool>,
    dir: &Path,
    marker: &str,
    pinned: Option<&str>,
    steps: &[(&str, &[&str])],
) {
    let mut done = done.lock().unwrap_or_else(|e| e.into_inner());
    let marker = dir.join(marker);
    let pins = pinned.map(|file| std::fs::read(dir.join(file)).expect("read the pinned packages"));
    let current = marker.exists()
        && pins
            .as_ref()
            .is_none_or(|pins| std::fs::read(&marker).ok().as_ref() == Some(pins));
    if *done || current {
        *done = true;
        return;
    }
    for &(program, args) in steps {
        let program = if program.contains('/') {
            dir.join(program)
        } else {
            PathBuf::from(program)
        };
        let status = Command::new(&program)
            .args(args)
            .current_dir(dir)
            .status()
            .unwrap_or_else(|err| panic!("{} does not run: {err}", program.display()));
        assert!(status.success(), "{} {args:?} failed", program.display());
    }
    match pins {
        Some(pins) => std::fs::write(&marker, pins).expect("mark the packages installed"),
        None if !marker.exists() => {
            std::fs::write(&marker, "").expect("mark the packages installed");
        }
        None => {}
    }
    *done = true;
}

/// Installs the Node programs' pinned OpenTelemetry packages (`npm ci`).
pub fn install_node_packages() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let steps: &[(&str, &[&str])] = &[("npm", &["ci", "--no-audit", "--no-fund"])];
    install_once(
        &DONE,
        &node_dir(),
        "node_modules/.meshwatch-installed",
        Some("package-lock.json"),
        steps,
    );
}

/// Installs the Python program's pinned packages into `tests/python/.venv`.
pub fn install_python_packages() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let steps: &[(&str, &[&str])] = &[
        ("python3", &["-m", "venv", ".venv"]),
        (
            ".venv/bin/pip",
            &["install", "-q", "-r", "requirements.txt"],
        ),
    ];
    install_once(
        &DONE,
        &python_dir(),
        ".venv/installed",
        Some("requirements.txt"),
        steps,
    );
}

/// A program in another language that a test runs (a Python or Node.js
/// service), its output discarded; killed (SIGKILL) and reaped when
/// dropped. Started without a working directory of its own, it runs in a
/// scratch one removed with it, so what it writes there (V8's
/// `isolate-*.log` under `--perf-basic-prof`) goes too.
#[derive(Debug)]
pub struct Foreign {
    child: Child,
    _scratch: Option<tempfile::TempDir>,
}

impl Foreign {
    /// Starts `command`; `what` says what it is when it cannot start (the
    /// interpreter missing, say).
    pub fn spawn(command: &mut Command, what: &str) -> Self {
        Self::start(command.stdout(Stdio::null()), what)
    }

    fn start(command: &mut Command, what: &str) -> Self {
        let scratch = command
            .get_current_dir()
            .is_none()
            .then(|| tempfile::tempdir().expect("a scratch directory"));
        if let Some(dir) = &scratch {
            command.current_dir(dir.path());
        }
        let child = command
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("{what} does not start: {err}"));
        Self {
            child,
            _scratch: scratch,
        }
    }

    /// Starts `command` and waits for the `port N` line a test service
    /// prints once it listens: the service and its port.
    pub fn spawn_listening(command: &mut Command, what: &str) -> (Self, u16) {
        let mut service = Self::start(command.stdout(Stdio::piped()), what);
        let stdout = service.child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let port = BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .find_map(|line| line.strip_prefix("port ")?.trim().parse::<u16>().ok());
            let _ = tx.send(port);
        });
        match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Some(port)) => (service, port),
            _ => panic!("{what} never said which port it listens on"),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it now, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `GET path` to the test service on `port` on a thread of its own,
/// for a request whose answer comes only once the service's event loop
/// turns again (a spin, a block); the answer is dropped.
pub fn request_in_background(port: u16, path: &str) -> std::thread::JoinHandle<()> {
    let url = format!("http://127.0.0.1:{port}{path}");
    std::thread::spawn(move || {
        let _ = ureq::get(&url).call();
    })
}
