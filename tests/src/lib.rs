//! Support for the end-to-end tests: build and run the real binaries on
//! loopback with ephemeral ports, read their announcements, query the API.
//!
//! Every process is started in its own temporary directory with its stderr
//! captured to a file, and is killed when its handle drops, so a failing test
//! leaves nothing running and can print what each process logged.
#![allow(clippy::expect_used)] // test support: a failed expectation is a failed test

pub mod foreign;
pub mod load;
pub mod otlp_sink;
pub mod recorded;
pub mod synthetic;

pub use foreign::Foreign;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a process may take to announce its address. Generous: CI
/// machines are slow and shared.
pub(crate) const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The directory holding the workspace's binaries, built once per test run
/// with the same profile as the tests themselves.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        // target/<profile>/deps/e2e-HASH → target/<profile>
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in target/<profile>/deps")
            .to_path_buf();
        build_binaries(&dir);
        dir
    })
}

/// Builds the binaries the tests run, so they are never stale. Cargo does not
/// build other packages' binaries for a test, and artifact dependencies are
/// unstable, so the tests ask cargo themselves (cargo releases its build lock
/// before running tests).
fn build_binaries(profile_dir: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--bins"]).args([
        "-p",
        "meshwatch-collector",
        "-p",
        "meshwatch-examples",
        "-p",
        "meshwatch",
    ]);
    if profile_dir
        .file_name()
        .is_some_and(|name| name == "release")
    {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "building the binaries failed");
}

/// A child process killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Process {
    child: Option<Child>,
    name: String,
    stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Process {
    /// Starts `bin` (a binary of the workspace) with `args` and `envs`, and
    /// waits for the first stdout line starting with `announce_prefix`.
    /// Returns the process and the rest of that line.
    pub fn start(
        bin: &str,
        args: &[&str],
        envs: &[(&str, &str)],
        announce_prefix: &str,
    ) -> (Self, String) {
        Self::spawn(bin, args, envs, announce_prefix, None)
    }

    /// [`Process::start`], with the open-file limit (soft and hard) set to
    /// `fd_limit` (soft, hard) in the child when given.
    fn spawn(
        bin: &str,
        args: &[&str],
        envs: &[(&str, &str)],
        announce_prefix: &str,
        fd_limit: Option<(u64, u64)>,
    ) -> (Self, String) {
        let dir = tempfile::tempdir().expect("temp dir");
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr log");
        let mut command = Command::new(bin_dir().join(bin));
        if let Some((soft, hard)) = fd_limit {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            // SAFETY: setrlimit is async-signal-safe, and the closure
            // touches nothing but its own copy of `limit`.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command
            .args(args)
            .envs(envs.iter().copied())
            .env("MESHWATCH_LOG", "debug")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {bin}: {err}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let process = Self {
            child: Some(child),
            name: bin.to_owned(),
            stderr_path,
            _dir: dir,
        };
        let announcement = process.wait_for_line(stdout, announce_prefix);
        (process, announcement)
    }

    /// Reads stdout on a helper thread until a line with `prefix` appears,
    /// then keeps draining it so the child never blocks on a full pipe.
    fn wait_for_line(&self, stdout: std::process::ChildStdout, prefix: &str) -> String {
        let (tx, rx) = mpsc::channel();
        let prefix = prefix.to_owned();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && let Some(rest) = line.strip_prefix(&prefix) {
                    let _ = tx.send(rest.to_owned());
                    sent = true;
                }
            }
        });
        rx.recv_timeout(STARTUP_TIMEOUT).unwrap_or_else(|_| {
            panic!(
                "{} did not announce itself within {STARTUP_TIMEOUT:?}; stderr:\n{}",
                self.name,
                self.stderr()
            )
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What the process has written to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Kills the process with SIGKILL and reaps it: the crash a probe must
    /// survive being the victim of.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- stderr of {} ---\n{}", self.name, self.stderr());
        }
        self.kill();
    }
}

/// A running `meshwatch-collector` on ephemeral loopback ports.
#[derive(Debug)]
pub struct Collector {
    /// The collector process.
    pub process: Process,
    /// Where probes connect.
    pub ingest: String,
    /// The HTTP API's base URL.
    pub http: String,
    /// The token probes must present, if the collector requires one.
    pub token: Option<String>,
    _data_dir: tempfile::TempDir,
}

impl Collector {
    /// Starts a collector with no token.
    pub fn start() -> Self {
        Self::start_with_token(None)
    }

    /// Starts a collector that requires `token` (from a token file), if given.
    pub fn start_with_token(token: Option<&str>) -> Self {
        Self::launch(tempfile::tempdir().expect("data dir"), token, &[])
    }

    /// Starts a collector with `extra` flags (a short `--memory-window-secs`,
    /// say) and, if given, a required `token`.
    pub fn start_with(token: Option<&str>, extra: &[&str]) -> Self {
        Self::launch(tempfile::tempdir().expect("data dir"), token, extra)
    }

    /// Starts a collector whose data directory is `store` inside `dir`, a
    /// directory the test prepared (a small tmpfs mounted there, say).
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Self {
        Self::launch(dir, None, extra)
    }

    /// Starts a collector whose open-file limit (soft and hard) is
    /// `fd_limit`, as `ulimit -n` in its shell would set it.
    pub fn start_with_fd_limit(fd_limit: u64, extra: &[&str]) -> Self {
        Self::start_with_fd_limits(fd_limit, fd_limit, extra)
    }

    /// Starts a collector whose open-file limit is `soft`, and may be
    /// raised up to `hard`.
    pub fn start_with_fd_limits(soft: u64, hard: u64, extra: &[&str]) -> Self {
        Self::launch_limited(
            tempfile::tempdir().expect("data dir"),
            None,
            extra,
            Some((soft, hard)),
        )
    }

    /// Kills this collector with SIGKILL and starts a new one on the same
    /// data directory (on new ports), as an operator's restart after a crash.
    pub fn crash_and_restart(mut self, args: &[&str]) -> Self {
        self.process.kill();
        let token = self.token.take();
        // `self` drops after the new process has the directory; the old
        // process is dead already, so dropping it only cleans up.
        let data_dir = std::mem::replace(&mut self._data_dir, tempfile::tempdir().expect("dir"));
        Self::launch(data_dir, token.as_deref(), args)
    }

    /// Kills this collector with SIGKILL and starts a new one on the same
    /// data directory and the same ports at once, as a supervisor restarts
    /// a crashed daemon: its probes reconnect to the address they know.
    pub fn crash_and_restart_in_place(mut self, args: &[&str]) -> Self {
        self.process.kill();
        let ingest = self.ingest.clone();
        let http = self.http.trim_start_matches("http://").to_owned();
        let mut args = args.to_vec();
        args.extend(["--listen", &ingest, "--http", &http]);
        let token = self.token.take();
        let data_dir = std::mem::replace(&mut self._data_dir, tempfile::tempdir().expect("dir"));
        Self::launch(data_dir, token.as_deref(), &args)
    }

    fn launch(data_dir: tempfile::TempDir, token: Option<&str>, extra: &[&str]) -> Self {
        Self::launch_limited(data_dir, token, extra, None)
    }

    fn launch_limited(
        data_dir: tempfile::TempDir,
        token: Option<&str>,
        extra: &[&str],
        fd_limit: Option<(u64, u64)>,
    ) -> Self {
        let data = data_dir.path().join("store");
        let token_file = data_dir.path().join("token");
        let data = data.to_str().expect("utf-8 temp path");
        let token_file = token_file.to_str().expect("utf-8 temp path");
        let mut args = vec!["--data-dir", data];
        // Loopback on ephemeral ports, unless the test chose the addresses.
        if !extra.contains(&"--listen") {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        if !extra.contains(&"--http") {
            args.extend(["--http", "127.0.0.1:0"]);
        }
        if let Some(token) = token {
            std::fs::write(token_file, format!("{token}\n")).expect("write token file");
            args.extend(["--token-file", token_file]);
        }
        args.extend_from_slice(extra);
        let (process, line) = Process::spawn(
            "meshwatch-collector",
            &args,
            &[],
            "meshwatch-collector listening ",
            fd_limit,
        );
        let mut ingest = None;
        let mut http = None;
        for field in line.split_whitespace() {
            if let Some(addr) = field.strip_prefix("ingest=") {
                ingest = Some(addr.to_owned());
            } else if let Some(addr) = field.strip_prefix("http=") {
                http = Some(format!("http://{addr}"));
            }
        }
        Self {
            process,
            ingest: ingest.expect("ingest address in announcement"),
            http: http.expect("http address in announcement"),
            token: token.map(str::to_owned),
            _data_dir: data_dir,
        }
    }

    /// Its data directory (the `--data-dir` it was given).
    pub fn data_dir(&self) -> std::path::PathBuf {
        self._data_dir.path().join("store")
    }

    /// GETs `path` from the API and parses the JSON body.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let body = http_get(&self.http, path);
        serde_json::from_str(&body).unwrap_or_else(|err| panic!("GET {path}: bad JSON: {err}"))
    }

    /// The value of a counter or gauge in `/metrics`, summed over its
    /// labels; `None` when the collector exports no such metric.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let text = http_get(&self.http, "/metrics");
        let values: Vec<f64> = text
            .lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    /// The instances listed by `/api/v1/services`.
    pub fn instances(&self) -> Vec<serde_json::Value> {
        self.get_json("/api/v1/services")["services"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until some instance satisfies `pred`, and returns it.
    pub fn wait_for_instance(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        wait_for(what, Duration::from_secs(30), || {
            self.instances().into_iter().find(|i| pred(i))
        })
    }

    /// Waits up to `timeout` until some incident, open or resolved,
    /// satisfies `pred`, and returns it.
    pub fn wait_for_incident(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        wait_for(what, timeout, || {
            self.get_json("/api/v1/incidents")["incidents"]
                .as_array()?
                .iter()
                .find(|i| pred(i))
                .cloned()
        })
    }
}

/// An example service (`mesh-service`) reporting to a collector.
#[derive(Debug)]
pub struct Service {
    /// The service process.
    pub process: Process,
    /// Its HTTP address.
    pub http: String,
}

impl Service {
    /// Starts `mesh-service --name NAME --workers N` reporting to `collector`
    /// every 200 ms.
    pub fn start(collector: &Collector, name: &str, workers: usize) -> Self {
        Self::start_with(collector, name, workers, &[], &[])
    }

    /// Like [`Service::start`], with extra arguments (`--fault loop`, ...)
    /// and environment variables.
    pub fn start_with(
        collector: &Collector,
        name: &str,
        workers: usize,
        extra_args: &[&str],
        extra_envs: &[(&str, &str)],
    ) -> Self {
        Self::start_binary(
            collector,
            "mesh-service",
            name,
            workers,
            extra_args,
            extra_envs,
        )
    }

    /// Like [`Service::start_with`], running `bin`: a binary of the
    /// workspace by name, or any path (a stripped copy of `mesh-service`).
    pub fn start_binary(
        collector: &Collector,
        bin: &str,
        name: &str,
        workers: usize,
        extra_args: &[&str],
        extra_envs: &[(&str, &str)],
    ) -> Self {
        let workers = workers.to_string();
        let mut envs = vec![
            ("MESHWATCH_COLLECTOR", collector.ingest.as_str()),
            ("MESHWATCH_INTERVAL_MS", "200"),
        ];
        if let Some(token) = &collector.token {
            envs.push(("MESHWATCH_TOKEN", token));
        }
        envs.extend_from_slice(extra_envs);
        let mut args = vec!["--name", name, "--workers", &workers];
        args.extend_from_slice(extra_args);
        let (process, http) = Process::start(bin, &args, &envs, "mesh-service listening http=");
        Self { process, http }
    }

    /// GETs `path` from the service and returns the body.
    pub fn get(&self, path: &str) -> String {
        http_get(&format!("http://{}", self.http), path)
    }
}

/// GETs `base` + `path` and returns the body; panics on any failure.
pub fn http_get(base: &str, path: &str) -> String {
    ureq::get(format!("{base}{path}"))
        .call()
        .unwrap_or_else(|err| panic!("GET {path}: {err}"))
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|err| panic!("GET {path}: {err}"))
}

/// POSTs an empty body to `base` + `path`; returns the status and the
/// body, whatever the status. Panics only when there is no answer.
pub fn http_post(base: &str, path: &str) -> (u16, String) {
    let mut response = ureq::post(format!("{base}{path}"))
        .config()
        .http_status_as_error(false)
        .build()
        .send_empty()
        .unwrap_or_else(|err| panic!("POST {path}: {err}"));
    let body = response
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|err| panic!("POST {path}: {err}"));
    (response.status().as_u16(), body)
}

/// Runs `meshwatch status [--json]` against `collector` and returns what it
/// printed.
pub fn status(collector: &Collector, json: bool) -> String {
    let mut cmd = Command::new(bin_dir().join("meshwatch"));
    cmd.args(["status", "--collector", &collector.http]);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("run meshwatch status");
    assert!(
        out.status.success(),
        "meshwatch status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 status")
}

/// What `meshwatch report` wrote for one incident: its directory (kept
/// while this lives) and the markdown.
#[derive(Debug)]
pub struct Report {
    /// The report's directory: `report.md` and the SVGs.
    pub dir: tempfile::TempDir,
    /// `report.md`.
    pub markdown: String,
}

impl Report {
    /// The SVG named `file` if the report drew it.
    pub fn svg(&self, file: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join(file)).ok()
    }
}

/// Runs `meshwatch report` on `incident` (as the API served it) against
/// `collector`: the same evidence views the TUI shows, rendered from the
/// collector's real answer.
pub fn report(collector: &Collector, incident: &serde_json::Value) -> Report {
    let id = match &incident["id"] {
        serde_json::Value::String(id) => id.clone(),
        other => other.to_string(),
    };
    let dir = tempfile::tempdir().expect("a report directory");
    let ran = Command::new(bin_dir().join("meshwatch"))
        .args(["report", &id, "--collector", &collector.http, "--out"])
        .arg(dir.path())
        .output()
        .expect("run meshwatch report");
    assert!(
        ran.status.success(),
        "meshwatch report {id} failed: {}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let markdown =
        std::fs::read_to_string(dir.path().join("report.md")).expect("report.md was written");
    Report { dir, markdown }
}

/// Polls `probe` every 100 ms until it returns `Some`, or panics after
/// `timeout` naming `what` was awaited.
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
