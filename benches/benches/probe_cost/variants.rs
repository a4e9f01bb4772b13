//! The variants measured, as data, and how to start a server in one.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Which build of the hello-world server a variant runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// `hello-plain`: the system allocator.
    Plain,
    /// `hello-tracked`: meshwatch's tracking allocator.
    Tracked,
    /// `hello-plain` built with `--cfg tokio_unstable` and the `console`
    /// feature, in a target directory of its own.
    Console,
}

/// One configuration of the server.
#[derive(Debug)]
pub struct Variant {
    /// Its name in the report and in `VARIANTS=...`.
    pub name: &'static str,
    /// The build it runs.
    pub binary: Binary,
    /// The server's mode argument (see `meshwatch_benches::hello::Mode`).
    pub mode: &'static str,
    /// Extra environment.
    pub envs: &'static [(&'static str, &'static str)],
    /// Whether it reports to the collector (`MESHWATCH_COLLECTOR`).
    pub reports: bool,
    /// What it stands for, for the report's legend.
    pub what: &'static str,
    /// A CPU profile at this rate runs through the measured window (asked
    /// of the probe through the collector, as `meshwatch profile` does).
    pub profile_hz: Option<u32>,
}

/// The baseline every ratio is against; always measured first in a round.
pub const PLAIN: &str = "plain";

/// Every variant, in the order each round runs them.
pub const VARIANTS: &[Variant] = &[
    Variant {
        name: PLAIN,
        binary: Binary::Plain,
        mode: "bare",
        envs: &[],
        reports: false,
        what: "no meshwatch at all: system allocator, no probe",
        profile_hz: None,
    },
    Variant {
        name: "probe",
        binary: Binary::Tracked,
        mode: "probe",
        envs: &[],
        reports: true,
        what: "tracking allocator + probe at default settings (heap sampling at 512 KiB), reporting to a collector",
        profile_hz: None,
    },
    Variant {
        name: "probe-heap-off",
        binary: Binary::Tracked,
        mode: "probe",
        envs: &[("MESHWATCH_HEAP_SAMPLE_BYTES", "0")],
        reports: true,
        what: "the same with MESHWATCH_HEAP_SAMPLE_BYTES=0",
        profile_hz: None,
    },
    Variant {
        name: "probe-profiling",
        binary: Binary::Tracked,
        mode: "probe",
        envs: &[],
        reports: true,
        what: "the probe at its defaults while a CPU profile at 99 Hz runs through the window",
        profile_hz: Some(99),
    },
    Variant {
        name: "probe-prof-999hz",
        binary: Binary::Tracked,
        mode: "probe",
        envs: &[],
        reports: true,
        what: "the same with the profile at 999 Hz",
        profile_hz: Some(999),
    },
    Variant {
        name: "alloc-only",
        binary: Binary::Tracked,
        mode: "bare",
        envs: &[],
        reports: false,
        what: "tracking allocator installed, no probe started",
        profile_hz: None,
    },
    Variant {
        name: "tokio-metrics",
        binary: Binary::Plain,
        mode: "tokio-metrics",
        envs: &[],
        reports: false,
        what: "system allocator; every connection in one tokio_metrics::TaskMonitor, read every second",
        profile_hz: None,
    },
    Variant {
        name: "console",
        binary: Binary::Console,
        mode: "console",
        // An ephemeral port, so a console elsewhere on the machine is no
        // conflict; nobody connects to it, as in a service left running.
        envs: &[("TOKIO_CONSOLE_BIND", "127.0.0.1:0")],
        reports: false,
        what: "console-subscriber with its defaults (--cfg tokio_unstable), no console attached",
        profile_hz: None,
    },
];

/// Where each build of the server is.
#[derive(Debug)]
pub struct Binaries {
    /// `hello-plain`, built by cargo along with this benchmark.
    pub plain: PathBuf,
    /// `hello-tracked`, likewise.
    pub tracked: PathBuf,
    /// The console build, when it built.
    pub console: Option<PathBuf>,
}

impl Binaries {
    /// The binary a variant runs, if it was built.
    pub fn path(&self, binary: Binary) -> Option<&Path> {
        match binary {
            Binary::Plain => Some(&self.plain),
            Binary::Tracked => Some(&self.tracked),
            Binary::Console => self.console.as_deref(),
        }
    }
}

/// Builds the console variant: `RUSTFLAGS="--cfg tokio_unstable" cargo
/// build --release --features console` into `TARGET/console`, so the
/// normal build's artifacts are not rebuilt with other flags. Returns the
/// binary, or why it could not be built.
pub fn build_console() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|err| format!("own path: {err}"))?;
    // target/release/deps/probe_cost-HASH → target
    let target = exe
        .ancestors()
        .nth(3)
        .ok_or("cannot find the target directory")?
        .join("console");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--quiet", "-p", "meshwatch-benches"])
        .args(["--features", "console", "--bin", "hello-plain"])
        .arg("--target-dir")
        .arg(&target)
        .env("RUSTFLAGS", "--cfg tokio_unstable")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    eprintln!("probe_cost: building the console variant: {cmd:?}");
    let status = cmd
        .status()
        .map_err(|err| format!("cannot run cargo: {err}"))?;
    if !status.success() {
        return Err(format!("cargo build --features console failed ({status})"));
    }
    Ok(target.join("release").join("hello-plain"))
}

/// A server process pinned to one core, killed when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// Its address, `127.0.0.1:PORT`.
    pub addr: String,
}

impl Server {
    /// Starts `variant` from `binary` pinned to `core`, reporting to
    /// `ingest`, and waits for its `listening ADDR` line.
    pub fn start(
        variant: &Variant,
        binary: &Path,
        core: usize,
        ingest: &str,
    ) -> std::io::Result<Self> {
        Self::start_under(&[], variant, binary, core, ingest)
    }

    /// Like [`Server::start`], with the server run by `wrapper` (a
    /// command and its arguments, such as valgrind), which must exec or run
    /// it in the same process.
    pub fn start_under(
        wrapper: &[&str],
        variant: &Variant,
        binary: &Path,
        core: usize,
        ingest: &str,
    ) -> std::io::Result<Self> {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", &core.to_string()])
            .args(wrapper)
            .arg(binary)
            .arg(variant.mode)
            .envs(variant.envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if variant.reports {
            cmd.env("MESHWATCH_COLLECTOR", ingest);
        }
        let mut child = cmd.spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let mut server = Self {
            child,
            addr: String::new(),
        };
        // taskset execs the server, so the pid is the server's. The server
        // prints nothing after this line, so the pipe may be dropped.
        for line in BufReader::new(stdout).lines() {
            if let Some(addr) = line?.strip_prefix("listening ") {
                server.addr = addr.trim().to_owned();
                return Ok(server);
            }
        }
        Err(std::io::Error::other(format!(
            "{} exited without announcing its address",
            variant.name
        )))
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited (crashed: it never exits by itself).
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The variants named in `VARIANTS` (comma-separated; all by default),
/// always with plain first.
pub fn selected() -> Vec<&'static Variant> {
    let wanted = std::env::var("VARIANTS").unwrap_or_default();
    let wanted: Vec<&str> = wanted
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    VARIANTS
        .iter()
        .filter(|v| v.name == PLAIN || wanted.is_empty() || wanted.contains(&v.name))
        .collect()
}
