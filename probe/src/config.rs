//! The probe's settings: a builder, filled from the environment first.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `MESHWATCH_COLLECTOR` | the collector's ingest address, `host:port` | `127.0.0.1:6740` |
//! | `MESHWATCH_TOKEN` | the shared token, when the collector requires one | none |
//! | `MESHWATCH_SERVICE` | overrides the service name given in code | the name in code |
//! | `MESHWATCH_INTERVAL_MS` | how often to sample and send a snapshot | `1000` |
//! | `MESHWATCH_STUCK_POLL_MS` | how long a poll may run before the watchdog flags it | `1000` |
//! | `MESHWATCH_HEAP_SAMPLE_BYTES` | mean bytes allocated between two heap samples (stack captured); `0` turns heap sampling off | `524288` (512 KiB) |
//! | `MESHWATCH_TLS_CA` | a PEM file of the CA that issued the collector's certificate; setting it turns TLS on (the `tls` feature) | none: plain TCP |
//! | `MESHWATCH_TLS_CERT`, `MESHWATCH_TLS_KEY` | PEM files of this probe's certificate and key, for a collector that asks for client certificates (`--tls-client-ca`) | none |
//! | `MESHWATCH_DISABLE` | `1` or `true` turns the probe off entirely | off |
//!
//! Over TLS the collector's certificate must name the host of
//! `MESHWATCH_COLLECTOR` (a DNS name, or an IP address in its subject
//! alternative names).
//!
//! A variable that does not parse is reported through `tracing` and ignored,
//! never a panic: a typo in the environment must not take the service down.

use std::path::PathBuf;
use std::time::Duration;

use crate::ProbeError;
use crate::handle::ProbeHandle;

/// The default collector address: the collector's default ingest port on
/// loopback, where a per-host collector listens.
pub const DEFAULT_COLLECTOR: &str = "127.0.0.1:6740";

/// How long a poll may run before the watchdog flags it, by default.
const DEFAULT_STUCK_POLL_THRESHOLD: Duration = Duration::from_secs(1);
/// The shortest threshold accepted: the watchdog ticks every 10 ms at best.
const MIN_STUCK_POLL_THRESHOLD: Duration = Duration::from_millis(10);

/// Everything the probe's threads need to know, fixed at start.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub service: String,
    pub collector: String,
    pub token: Option<String>,
    pub interval: Duration,
    pub stuck_poll_threshold: Duration,
    pub buffer_capacity: usize,
    pub max_frame_len: usize,
    pub disabled: bool,
    /// Mean bytes between heap samples; 0 turns sampling off.
    pub heap_sample_interval: u64,
    /// TLS to the collector, when configured.
    #[cfg(feature = "tls")]
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// Where the probe's TLS files are, as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct TlsFiles {
    /// The CA to verify the collector against; `Some` turns TLS on.
    ca: Option<PathBuf>,
    /// This probe's certificate and key, for mutual TLS.
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// Entry point of the explicit configuration: `Probe::builder()`.
///
/// `Probe` holds no state; it exists so the API reads as
/// `Probe::builder().service("checkout").start()`.
#[derive(Debug)]
pub struct Probe {
    _private: (),
}

impl Probe {
    /// A builder preloaded from the environment (see the module docs); calls on
    /// it override the environment, except `MESHWATCH_SERVICE` and
    /// `MESHWATCH_DISABLE`, which operators use to override the code.
    pub fn builder() -> ProbeBuilder {
        ProbeBuilder::from_env(|key| std::env::var(key).ok())
    }
}

/// Explicit control over the probe's settings.
///
/// ```no_run
/// # use std::time::Duration;
/// let handle = meshwatch_probe::Probe::builder()
///     .service("checkout")
///     .collector("127.0.0.1:6740")
///     .interval(Duration::from_millis(500))
///     .start()
///     .expect("valid probe settings");
/// # drop(handle);
/// ```
#[derive(Debug, Clone)]
pub struct ProbeBuilder {
    service: Option<String>,
    service_override: Option<String>,
    collector: String,
    token: Option<String>,
    interval: Duration,
    stuck_poll_threshold: Duration,
    buffer_capacity: usize,
    disabled: bool,
    heap_sample_interval: u64,
    tls: TlsFiles,
}

impl ProbeBuilder {
    fn from_env(var: impl Fn(&str) -> Option<String>) -> Self {
        let mut builder = Self {
            service: None,
            service_override: var("MESHWATCH_SERVICE").filter(|s| !s.trim().is_empty()),
            collector: DEFAULT_COLLECTOR.to_owned(),
            token: var("MESHWATCH_TOKEN").filter(|t| !t.is_empty()),
            interval: Duration::from_secs(1),
            stuck_poll_threshold: DEFAULT_STUCK_POLL_THRESHOLD,
            buffer_capacity: 64,
            disabled: false,
            heap_sample_interval: crate::heap::DEFAULT_SAMPLE_INTERVAL,
            tls: TlsFiles {
                ca: var("MESHWATCH_TLS_CA")
                    .filter(|p| !p.trim().is_empty())
                    .map(PathBuf::from),
                cert: var("MESHWATCH_TLS_CERT")
                    .filter(|p| !p.trim().is_empty())
                    .map(PathBuf::from),
                key: var("MESHWATCH_TLS_KEY")
                    .filter(|p| !p.trim().is_empty())
                    .map(PathBuf::from),
            },
        };
        if let Some(addr) = var("MESHWATCH_COLLECTOR").filter(|a| !a.trim().is_empty()) {
            builder.collector = addr.trim().to_owned();
        }
        if let Some(ms) = var("MESHWATCH_INTERVAL_MS") {
            match ms.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => builder.interval = Duration::from_millis(ms),
                _ => tracing::warn!(
                    value = %ms,
                    "meshwatch: ignoring MESHWATCH_INTERVAL_MS: expected a positive number of milliseconds"
                ),
            }
        }
        if let Some(ms) = var("MESHWATCH_STUCK_POLL_MS") {
            match ms.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => builder.stuck_poll_threshold = Duration::from_millis(ms),
                _ => tracing::warn!(
                    value = %ms,
                    "meshwatch: ignoring MESHWATCH_STUCK_POLL_MS: expected a positive number of milliseconds"
                ),
            }
        }
        if let Some(bytes) = var("MESHWATCH_HEAP_SAMPLE_BYTES") {
            match bytes.trim().parse::<u64>() {
                Ok(bytes) => builder.heap_sample_interval = bytes,
                Err(_) => tracing::warn!(
                    value = %bytes,
                    "meshwatch: ignoring MESHWATCH_HEAP_SAMPLE_BYTES: expected a number of bytes (0 turns heap sampling off)"
                ),
            }
        }
        if let Some(flag) = var("MESHWATCH_DISABLE") {
            builder.disabled = matches!(flag.trim(), "1" | "true" | "yes" | "on");
        }
        builder
    }

    /// The service's name, shared by all its instances and kept across
    /// restarts. `MESHWATCH_SERVICE` overrides it.
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.service = Some(name.into());
        self
    }

    /// The collector's ingest address, `host:port`.
    pub fn collector(mut self, addr: impl Into<String>) -> Self {
        self.collector = addr.into();
        self
    }

    /// The shared token the collector checks.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// How often to sample and send a snapshot (default 1 s). Snapshots are
    /// also the heartbeat: the collector marks an instance down after three
    /// missed intervals.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// How long one poll may run before the watchdog reports it as stuck
    /// (default 1 s). Below about 0.3 s, a healthy worker running a series
    /// of long polls can look stuck: tokio publishes its counters only every
    /// 61 scheduler ticks.
    pub fn stuck_poll_threshold(mut self, threshold: Duration) -> Self {
        self.stuck_poll_threshold = threshold;
        self
    }

    /// How many messages to hold while the collector is away (default 64).
    /// When full, the oldest snapshot is dropped and counted.
    pub fn buffer_capacity(mut self, messages: usize) -> Self {
        self.buffer_capacity = messages;
        self
    }

    /// The mean number of bytes allocated between two heap samples (default
    /// 512 KiB, as jemalloc's profiler); 0 turns heap sampling off.
    ///
    /// Sampling is Poisson on bytes: each byte is equally likely to be
    /// picked, and an allocation holding a picked byte has its stack
    /// captured and is followed until it is freed. Smaller means more
    /// precise per-site figures at more cost; the unsampled path costs the
    /// same either way. Needs the [`TrackingAllocator`](crate::TrackingAllocator)
    /// as the global allocator; stacks are named with the `stacks` feature.
    pub fn heap_sample_interval(mut self, bytes: u64) -> Self {
        self.heap_sample_interval = bytes;
        self
    }

    /// Connects over TLS, verifying the collector's certificate against the
    /// CA certificates in the PEM file `ca` (as `MESHWATCH_TLS_CA`). Needs
    /// the `tls` feature; without it, [`start`](Self::start) refuses rather
    /// than send in clear.
    pub fn tls_ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.tls.ca = Some(ca.into());
        self
    }

    /// Presents this certificate chain and key (PEM files) to a collector
    /// that asks for client certificates, as `MESHWATCH_TLS_CERT` and
    /// `MESHWATCH_TLS_KEY`.
    pub fn tls_client_identity(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.tls.cert = Some(cert.into());
        self.tls.key = Some(key.into());
        self
    }

    /// Starts the probe's threads.
    ///
    /// Called inside a tokio runtime, the probe watches that runtime; add
    /// others with [`ProbeHandle::watch_runtime`]. A collector that is down is
    /// not an error: the probe retries in the background.
    ///
    /// # Errors
    ///
    /// [`ProbeError::InvalidConfig`] for settings that cannot work (an empty
    /// service name, a zero interval), [`ProbeError::Spawn`] when the OS
    /// refuses a thread.
    pub fn start(self) -> Result<ProbeHandle, ProbeError> {
        let config = self.into_config()?;
        ProbeHandle::start(config)
    }

    /// Watches process `pid` of this host from outside, as an instance of
    /// this builder's service: its process, thread and socket figures go
    /// to the collector until the process is gone. For the collector's
    /// `--watch`: services in any language, with no code change.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start), and [`ProbeError::NoSuchProcess`] when
    /// the process is gone or its `/proc` entry unreadable.
    #[cfg(feature = "external")]
    pub fn watch_process(self, pid: u32) -> Result<ProbeHandle, ProbeError> {
        let config = self.into_config()?;
        let runtime = crate::external::runtime_of(pid);
        let identity = crate::identity::Identity::of_process(pid, runtime)
            .ok_or(ProbeError::NoSuchProcess { pid })?;
        ProbeHandle::start_external(config, pid, identity)
    }

    fn into_config(self) -> Result<Config, ProbeError> {
        let service = self
            .service_override
            .or(self.service)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .ok_or(ProbeError::InvalidConfig(
                "the service name is empty; pass one to init() or set MESHWATCH_SERVICE",
            ))?;
        if self.interval.is_zero() {
            return Err(ProbeError::InvalidConfig(
                "the snapshot interval must be positive",
            ));
        }
        if self.stuck_poll_threshold < MIN_STUCK_POLL_THRESHOLD {
            return Err(ProbeError::InvalidConfig(
                "the stuck poll threshold must be at least 10 ms",
            ));
        }
        if self.buffer_capacity == 0 {
            return Err(ProbeError::InvalidConfig(
                "the buffer capacity must be at least 1",
            ));
        }
        if self.collector.trim().is_empty() {
            return Err(ProbeError::InvalidConfig("the collector address is empty"));
        }
        #[cfg(feature = "tls")]
        let tls = self.tls.client_config(&self.collector)?;
        #[cfg(not(feature = "tls"))]
        if self.tls != TlsFiles::default() {
            return Err(ProbeError::InvalidConfig(
                "MESHWATCH_TLS_CA (or a client certificate) is set, but this probe was built without its `tls` feature; it will not send in clear",
            ));
        }
        Ok(Config {
            service,
            collector: self.collector,
            token: self.token,
            interval: self.interval,
            stuck_poll_threshold: self.stuck_poll_threshold,
            buffer_capacity: self.buffer_capacity,
            max_frame_len: meshwatch_proto::DEFAULT_MAX_FRAME_LEN,
            disabled: self.disabled,
            heap_sample_interval: self.heap_sample_interval,
            #[cfg(feature = "tls")]
            tls,
        })
    }
}

#[cfg(feature = "tls")]
impl TlsFiles {
    /// The client configuration these files make, checked now so that a
    /// wrong path fails at start, not at every reconnection.
    fn client_config(
        &self,
        collector: &str,
    ) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>, ProbeError> {
        use meshwatch_proto::tls::{IdentityFiles, client_config, server_name};
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(IdentityFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            _ => {
                return Err(ProbeError::InvalidConfig(
                    "a client certificate needs both MESHWATCH_TLS_CERT and MESHWATCH_TLS_KEY",
                ));
            }
        };
        let Some(ca) = &self.ca else {
            return match identity {
                Some(_) => Err(ProbeError::InvalidConfig(
                    "a client certificate is set without MESHWATCH_TLS_CA to verify the collector with",
                )),
                None => Ok(None),
            };
        };
        server_name(collector)?;
        Ok(Some(client_config(ca, identity.as_ref())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn builder_with(vars: &[(&str, &str)]) -> ProbeBuilder {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ProbeBuilder::from_env(move |key| vars.get(key).cloned())
    }

    #[test]
    fn tls_settings_are_checked_at_start_and_never_fall_back_to_clear() {
        let missing_ca = builder_with(&[("MESHWATCH_TLS_CA", "/nonexistent/ca.pem")])
            .service("svc")
            .into_config();
        #[cfg(feature = "tls")]
        assert!(
            matches!(&missing_ca, Err(ProbeError::Tls(err)) if err.to_string().contains("/nonexistent/ca.pem")),
            "{missing_ca:?}"
        );
        #[cfg(not(feature = "tls"))]
        assert!(
            matches!(&missing_ca, Err(ProbeError::InvalidConfig(why)) if why.contains("`tls` feature")),
            "{missing_ca:?}"
        );
        let half_identity = builder_with(&[
            ("MESHWATCH_TLS_CA", "/nonexistent/ca.pem"),
            ("MESHWATCH_TLS_CERT", "/nonexistent/probe.pem"),
        ])
        .service("svc")
        .into_config();
        assert!(
            matches!(half_identity, Err(ProbeError::InvalidConfig(_))),
            "a certificate without its key"
        );
        let plain = builder_with(&[]).service("svc").into_config();
        assert!(plain.is_ok());
    }

    #[test]
    fn defaults_without_environment() {
        let config = builder_with(&[]).service("svc").into_config().unwrap();
        assert_eq!(config.collector, DEFAULT_COLLECTOR);
        assert_eq!(config.interval, Duration::from_secs(1));
        assert_eq!(config.token, None);
        assert_eq!(config.stuck_poll_threshold, Duration::from_secs(1));
        assert!(!config.disabled);
        assert_eq!(config.heap_sample_interval, 512 * 1024);
    }

    #[test]
    fn heap_sample_interval_from_environment_and_builder() {
        let config = builder_with(&[("MESHWATCH_HEAP_SAMPLE_BYTES", "0")])
            .service("svc")
            .into_config()
            .unwrap();
        assert_eq!(config.heap_sample_interval, 0);
        let config = builder_with(&[("MESHWATCH_HEAP_SAMPLE_BYTES", "lots")])
            .service("svc")
            .heap_sample_interval(4096)
            .into_config()
            .unwrap();
        assert_eq!(config.heap_sample_interval, 4096);
        let config = builder_with(&[("MESHWATCH_HEAP_SAMPLE_BYTES", "lots")])
            .service("svc")
            .into_config()
            .unwrap();
        assert_eq!(config.heap_sample_interval, 512 * 1024);
    }

    #[test]
    fn environment_sets_collector_token_interval_and_disable() {
        let config = builder_with(&[
            ("MESHWATCH_COLLECTOR", "10.0.0.1:7000"),
            ("MESHWATCH_TOKEN", "s3cret"),
            ("MESHWATCH_INTERVAL_MS", "250"),
            ("MESHWATCH_STUCK_POLL_MS", "400"),
            ("MESHWATCH_DISABLE", "1"),
        ])
        .service("svc")
        .into_config()
        .unwrap();
        assert_eq!(config.collector, "10.0.0.1:7000");
        assert_eq!(config.token.as_deref(), Some("s3cret"));
        assert_eq!(config.interval, Duration::from_millis(250));
        assert_eq!(config.stuck_poll_threshold, Duration::from_millis(400));
        assert!(config.disabled);
    }

    #[test]
    fn service_variable_overrides_the_name_in_code() {
        let config = builder_with(&[("MESHWATCH_SERVICE", "from-env")])
            .service("from-code")
            .into_config()
            .unwrap();
        assert_eq!(config.service, "from-env");
    }

    #[test]
    fn bad_interval_variable_is_ignored() {
        let config = builder_with(&[("MESHWATCH_INTERVAL_MS", "soon")])
            .service("svc")
            .into_config()
            .unwrap();
        assert_eq!(config.interval, Duration::from_secs(1));
    }

    #[test]
    fn builder_sets_the_stuck_poll_threshold_and_refuses_a_tiny_one() {
        let config = builder_with(&[("MESHWATCH_STUCK_POLL_MS", "0")])
            .service("svc")
            .into_config()
            .unwrap();
        assert_eq!(config.stuck_poll_threshold, Duration::from_secs(1));
        let config = builder_with(&[])
            .service("svc")
            .stuck_poll_threshold(Duration::from_millis(250))
            .into_config()
            .unwrap();
        assert_eq!(config.stuck_poll_threshold, Duration::from_millis(250));
        let err = builder_with(&[])
            .service("svc")
            .stuck_poll_threshold(Duration::from_millis(1))
            .into_config()
            .unwrap_err();
        assert!(matches!(err, ProbeError::InvalidConfig(_)));
    }

    #[test]
    fn empty_service_name_is_an_error() {
        let err = builder_with(&[]).service("  ").into_config().unwrap_err();
        assert!(matches!(err, ProbeError::InvalidConfig(_)));
    }
}
