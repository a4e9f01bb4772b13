//! Whether the process runs a tokio-console server, and where.
//!
//! Many tokio services already run `console-subscriber`; meshwatch points
//! at it rather than duplicating it (the TUI opens `tokio-console` on it).
//! console-subscriber serves on `TOKIO_CONSOLE_BIND`, 127.0.0.1:6669 by
//! default; the process runs one when it listens there. A service that
//! configures another address in code is not recognized.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// console-subscriber's own variable for its address.
const BIND_ENV: &str = "TOKIO_CONSOLE_BIND";
/// console-subscriber's default address.
const DEFAULT_BIND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 6669);

/// Where a console server of this process would listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConsoleBind(SocketAddr);

impl Default for ConsoleBind {
    /// console-subscriber's default address.
    fn default() -> Self {
        Self(DEFAULT_BIND)
    }
}

impl ConsoleBind {
    /// From the environment, as console-subscriber reads it; the default
    /// when unset or unparsable.
    pub fn from_env() -> Self {
        Self::parse(std::env::var(BIND_ENV).ok().as_deref())
    }

    fn parse(value: Option<&str>) -> Self {
        value
            .and_then(|v| v.parse().ok())
            .map_or_else(Self::default, Self)
    }

    /// The address to connect a console to, when the process listens on
    /// the console's port (at its address, or on every address): a
    /// wildcard bind is reached through loopback.
    pub fn serving(&self, listening: &[String]) -> Option<String> {
        let wanted = self.0;
        listening
            .iter()
            .filter_map(|l| l.parse::<SocketAddr>().ok())
            .find(|l| {
                l.port() == wanted.port() && (l.ip() == wanted.ip() || l.ip().is_unspecified())
            })
            .map(|l| {
                let ip = if l.ip().is_unspecified() {
                    loopback_like(l.ip())
                } else {
                    l.ip()
                };
                SocketAddr::new(ip, l.port()).to_string()
            })
    }
}

/// The loopback address of `ip`'s family.
fn loopback_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_console_this_process_serves_through_the_socket_scan() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let bind = ConsoleBind(address);
        let mut sampler =
            super::super::sockets::SocketSampler::new(std::time::Duration::from_secs(1));
        let stats = sampler.sample(&mut 0);
        assert_eq!(bind.serving(&stats.listening), Some(address.to_string()));
        drop(listener);
    }

    fn listening(addrs: &[&str]) -> Vec<String> {
        addrs.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn finds_the_console_at_its_default_or_configured_address() {
        let default = ConsoleBind::parse(None);
        assert_eq!(
            default.serving(&listening(&["0.0.0.0:8080", "127.0.0.1:6669"])),
            Some("127.0.0.1:6669".to_owned())
        );
        assert_eq!(default.serving(&listening(&["0.0.0.0:8080"])), None);
        let configured = ConsoleBind::parse(Some("0.0.0.0:7000"));
        assert_eq!(
            configured.serving(&listening(&["0.0.0.0:7000"])),
            Some("127.0.0.1:7000".to_owned()),
            "a wildcard bind is reached through loopback"
        );
        assert_eq!(configured.serving(&listening(&["127.0.0.1:6669"])), None);
        assert_eq!(
            ConsoleBind::parse(Some("not an address")),
            default,
            "as console-subscriber, a bad value means the default"
        );
    }
}
