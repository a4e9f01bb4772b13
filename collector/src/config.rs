//! What a collector is told at start: where to listen, where to keep its data,
//! the shared token, and the limits that keep one bad probe from hurting the
//! others.
//!
//! The binary fills a [`Config`] from its flags; in-process users (the TUI's
//! `meshwatch demo`, tests) start from [`Config::new`] and change the fields
//! they care about.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use meshwatch_proto::DEFAULT_MAX_FRAME_LEN;

use crate::detect::leaks::LeakSettings;
use crate::detect::memory::MemorySettings;

/// The default address for probes: loopback, so nothing is exposed unless asked.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 6740);

/// The default address of the HTTP API, loopback for the same reason.
pub const DEFAULT_HTTP: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 6741);

/// Everything a running collector needs to know, with defaults that suit one
/// host's mesh.
///
/// Non-exhaustive so that settings can be added without breaking callers:
/// build it with [`Config::new`] and assign the fields to change.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Where probes connect (TCP, meshwatch frames).
    pub listen: SocketAddr,
    /// Where the HTTP API and `/metrics` are served.
    pub http: SocketAddr,
    /// The collector's own directory. It is created when missing and locked,
    /// so two collectors never write the same history.
    pub data_dir: PathBuf,
    /// The shared secret probes must present in their Hello; `None` accepts
    /// any probe, which is only allowed on loopback unless
    /// [`Config::allow_no_token`] is set.
    pub token: Option<String>,
    /// Accept probes without a token on a non-loopback address. Off by
    /// default, because anyone who can reach the port could then feed the
    /// collector.
    pub allow_no_token: bool,
    /// The largest frame accepted from a probe; larger ones close the
    /// connection before their body is buffered.
    pub max_frame_len: usize,
    /// How long a new connection has to send its Hello before it is closed,
    /// so idle sockets cannot hold connection slots.
    pub hello_timeout: Duration,
    /// Points kept per series per instance: 900 is 15 minutes at 1 Hz.
    pub series_capacity: usize,
    /// How many snapshot intervals may pass without a snapshot before an
    /// instance is shown `down`.
    pub down_after_missed: u32,
    /// How long a restarted instance shows `restarted` before `up`, so a
    /// person looking now and then still notices the restart.
    pub restarted_display: Duration,
    /// How long an instance that is down (its connection gone) is kept
    /// before it is forgotten, with its in-memory history; a service whose
    /// instances are all forgotten leaves the mesh. Service names that carry
    /// a pod's or a deploy's name thus do not pile up.
    pub down_retention: Duration,
    /// The most probe connections served at once; more are refused, so a
    /// connection flood cannot exhaust the collector's file descriptors.
    pub max_connections: usize,
    /// The finest time step of the persistent history: at most one stored
    /// sample per instance per step. The in-memory series keep every sample
    /// of the recent past; the store keeps days at this resolution.
    pub history_resolution: Duration,
    /// How long the persistent history keeps a sample.
    pub history_retention: Duration,
    /// How often the detectors run over every service. Not on every
    /// snapshot: their cost is then bounded by the number of services.
    pub detect_interval: Duration,
    /// The `memory_growth` detector's window and thresholds.
    pub memory: MemorySettings,
    /// The socket, fd and task leak and crash loop detectors' window and
    /// thresholds.
    pub leaks: LeakSettings,
    /// Directories searched first, by build ID, for the debug info that
    /// names the probes' stacks (`.build-id/ab/cdef….debug`, or a debuginfod
    /// cache's `abcdef…/debuginfo`): how stripped binaries, and binaries
    /// of other hosts or images, get function, file and line.
    pub debuginfo_dirs: Vec<PathBuf>,
    /// Processes of this host watched from outside (`--watch`,
    /// `--watch-pid`): services in other languages, with no code change.
    pub watch: Vec<crate::WatchRule>,
    /// TLS on both listeners; `None` serves plain TCP (fine on loopback).
    pub tls: Option<crate::TlsSettings>,
    /// Where to export the mesh's series and incidents over OTLP/HTTP
    /// (`--otlp-endpoint`); `None` exports nothing.
    pub otlp_export: Option<crate::OtlpExport>,
}

impl Config {
    /// The defaults, keeping data in `data_dir`: the only setting without a
    /// sensible default, because sharing one would break the lock.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            http: DEFAULT_HTTP,
            data_dir: data_dir.into(),
            token: None,
            allow_no_token: false,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            hello_timeout: Duration::from_secs(5),
            series_capacity: 900,
            down_after_missed: 3,
            restarted_display: Duration::from_secs(5 * 60),
            down_retention: Duration::from_secs(24 * 3600),
            max_connections: 4096,
            history_resolution: Duration::from_secs(10),
            history_retention: Duration::from_secs(7 * 24 * 3600),
            detect_interval: Duration::from_secs(5),
            memory: MemorySettings::default(),
            leaks: LeakSettings::default(),
            debuginfo_dirs: Vec::new(),
            watch: Vec::new(),
            tls: None,
            otlp_export: None,
        }
    }

    /// The listener this configuration would open to strangers: an address
    /// other than loopback, for probes or for the HTTP API, with neither a
    /// token nor client certificates (`--tls-client-ca`), and no
    /// `allow_no_token`.
    pub fn exposed_without_token(&self) -> Option<SocketAddr> {
        if self.allow_no_token {
            return None;
        }
        self.unguarded().first().map(|&(_, addr)| addr)
    }

    /// The listeners beyond loopback that nothing guards, neither a token
    /// nor client certificates (`--tls-client-ca`), each with what it
    /// serves: refused at start unless `allow_no_token`, and then warned
    /// about, one by one.
    pub fn unguarded(&self) -> Vec<(&'static str, SocketAddr)> {
        let client_certificates = self.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        if self.token.is_some() || client_certificates {
            return Vec::new();
        }
        [("probes", self.listen), ("the HTTP API", self.http)]
            .into_iter()
            .filter(|(_, addr)| !addr.ip().is_loopback())
            .collect()
    }

    /// Whether the HTTP API asks for the token: when it listens beyond
    /// loopback and the collector has one. Loopback is trusted, as it is
    /// for probes.
    pub fn http_requires_token(&self) -> bool {
        self.token.is_some() && !self.http.ip().is_loopback()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_without_token_is_fine_elsewhere_needs_token_or_consent() {
        let anywhere: SocketAddr = "0.0.0.0:6740".parse().unwrap_or(DEFAULT_LISTEN);
        let mut config = Config::new("/tmp/x");
        assert_eq!(config.exposed_without_token(), None);
        config.listen = anywhere;
        assert_eq!(config.exposed_without_token(), Some(anywhere));
        config.token = Some("s3cret".to_owned());
        assert_eq!(config.exposed_without_token(), None);
        config.token = None;
        config.allow_no_token = true;
        assert_eq!(config.exposed_without_token(), None);
        assert_eq!(
            config.unguarded(),
            [("probes", anywhere)],
            "forced, and warned about"
        );
    }

    #[test]
    fn the_http_api_beyond_loopback_needs_a_token_too() {
        let anywhere: SocketAddr = "0.0.0.0:6741".parse().unwrap_or(DEFAULT_HTTP);
        let mut config = Config::new("/tmp/x");
        config.http = anywhere;
        assert_eq!(config.exposed_without_token(), Some(anywhere));
        assert!(!config.http_requires_token(), "no token to ask for");
        config.token = Some("s3cret".to_owned());
        assert_eq!(config.exposed_without_token(), None);
        assert!(config.http_requires_token());
        config.http = DEFAULT_HTTP;
        assert!(!config.http_requires_token(), "loopback is trusted");
    }
}
