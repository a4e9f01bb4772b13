//! The store on a full disk: the collector keeps serving from memory, keeps
//! the rows it could not write, and writes them once space returns.
//!
//! The disk is a 16 MiB tmpfs mounted for the test, filled by a file and
//! then freed. Mounting needs root (as in CI); elsewhere the test says so
//! and passes without running.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use meshwatch_e2e::{Collector, wait_for};

use crate::bad_input::{connect, hello_as, now_ms, snapshot_at};

/// Raw probes that say hello and then send a snapshot a second each: enough
/// rows (one per probe per second at `--history-resolution 1`) that the
/// store needs new pages within seconds of the disk filling.
const PROBES: usize = 60;

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` when this process may not mount (not root).
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|status| status.success());
        mounted.then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes zeros to `path` until the file system says it is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("filler file");
    let chunk = vec![0u8; 64 * 1024];
    while file
        .write_all(&chunk)
        .and_then(|()| file.sync_data())
        .is_ok()
    {}
}

/// The probes' sender: each probe one snapshot a second until `stop`.
fn send_until(collector: &Collector, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let mut probes: Vec<TcpStream> = (0..PROBES)
        .map(|n| {
            let mut probe = connect(collector);
            let id = format!("{n:032x}");
            probe
                .write_all(&hello_as(&format!("disk-{n}"), &id, 20_000 + n as u32))
                .unwrap();
            let mut welcome = [0u8; 64];
            let _ = probe.read(&mut welcome);
            probe
        })
        .collect();
    std::thread::spawn(move || {
        let mut seq = 1;
        while !stop.load(Ordering::Relaxed) {
            for (n, probe) in probes.iter_mut().enumerate() {
                let rss = 10_000_000 + seq * 1000 + n as u64;
                let _ = probe.write_all(&snapshot_at(seq, now_ms(), rss));
            }
            seq += 1;
            std::thread::sleep(Duration::from_secs(1));
        }
    })
}

/// The times of the points of `disk-0`'s RSS the collector serves.
fn point_times(collector: &Collector) -> (Vec<i64>, serde_json::Value) {
    let body = collector.get_json("/api/v1/series?service=disk-0&metric=rss_bytes");
    let times = body["series"][0]["points"]
        .as_array()
        .map(|points| points.iter().filter_map(|p| p[0].as_i64()).collect())
        .unwrap_or_default();
    (times, body)
}

#[test]
fn a_full_disk_keeps_history_in_memory_and_stores_it_once_space_returns() {
    let Some(tmpfs) = Tmpfs::mount("16m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let data = tempfile::Builder::new()
        .tempdir_in(tmpfs.path())
        .expect("data dir on the tmpfs");
    let collector = Collector::start_in(data, &["--history-resolution", "1"]);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = send_until(&collector, Arc::clone(&stop));
    wait_for("rows stored", Duration::from_secs(30), || {
        collector
            .metric("meshwatch_collector_history_rows_written_total")
            .filter(|&n| n >= 2.0 * PROBES as f64)
    });

    let filler: PathBuf = tmpfs.path().join("filler");
    fill(&filler);
    let full_at = now_ms();
    wait_for("the store fails", Duration::from_secs(120), || {
        collector
            .metric("meshwatch_collector_history_store_up")
            .filter(|&up| up == 0.0)
    });
    // Serving goes on from memory: the API answers with the recent past,
    // and the rows wait.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        meshwatch_e2e::http_get(&collector.http, "/healthz").trim(),
        "ok"
    );
    let (times, body) = point_times(&collector);
    assert!(
        times.last().is_some_and(|&t| t > full_at),
        "recent points served on a full disk: {body}"
    );
    let waiting = collector
        .metric("meshwatch_collector_history_rows_waiting")
        .unwrap_or(0.0);
    assert!(waiting >= PROBES as f64, "{waiting} rows waiting");

    std::fs::remove_file(&filler).expect("free the disk");
    let freed_at = now_ms();
    wait_for(
        "the store takes writes again",
        Duration::from_secs(90),
        || {
            collector
                .metric("meshwatch_collector_history_store_up")
                .filter(|&up| up == 1.0)
        },
    );
    wait_for("the waiting rows written", Duration::from_secs(30), || {
        collector
            .metric("meshwatch_collector_history_rows_waiting")
            .filter(|&n| n < PROBES as f64)
    });
    assert_eq!(
        collector.metric("meshwatch_collector_history_rows_dropped_total"),
        Some(0.0),
        "no row lost"
    );
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();

    // A collector restarted on the store serves the outage from it alone.
    let collector = collector.crash_and_restart_in_place(&["--history-resolution", "1"]);
    let (times, body) = point_times(&collector);
    let outage: Vec<i64> = times
        .iter()
        .copied()
        .filter(|t| (full_at - 2000..=freed_at + 2000).contains(t))
        .collect();
    let widest_gap = outage
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(i64::MAX);
    assert!(
        outage.len() as i64 >= (freed_at - full_at) / 1000,
        "{} stored points over the {} ms on a full disk: {body}",
        outage.len(),
        freed_at - full_at
    );
    assert!(
        widest_gap <= 2500,
        "a gap of {widest_gap} ms in the stored outage"
    );
}
