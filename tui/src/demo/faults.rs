//! The demo's fault schedule: at set times after the start, ask a demo
//! service to misbehave through its HTTP fault switch, so that a newcomer
//! sees incidents open within a minute without doing anything.
//!
//! Services announce their HTTP address on stdout
//! (`mesh-service listening http=ADDR`); [`Addresses`] collects them, and
//! [`run_schedule`] fires each [`Fault`] when its time comes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use meshwatch_examples::service::LISTENING_PREFIX;

/// The example service's switch that starts a runaway loop.
pub const LOOP_TRIGGER: &str = "/fault/loop";
/// The example service's switch that starts a memory leak.
pub const LEAK_TRIGGER: &str = "/fault/leak";

/// How long a trigger request may take. A switch that starts a loop inside
/// its own handler never answers, which is success, not failure.
const TRIGGER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait for a service to announce its address.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(30);

/// One scheduled fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// When, after the demo started.
    pub after: Duration,
    /// Which demo service.
    pub service: &'static str,
    /// The HTTP path (and query) that switches the fault on.
    pub path: &'static str,
}

/// The demo's schedule: the leak early (a trend needs time to show), the
/// loop soon after.
pub const SCHEDULE: &[Fault] = &[
    Fault {
        after: Duration::from_secs(5),
        service: "inventory",
        path: LEAK_TRIGGER,
    },
    Fault {
        after: Duration::from_secs(20),
        service: "checkout",
        path: LOOP_TRIGGER,
    },
];

/// The HTTP addresses the demo services announced, by service name.
#[derive(Debug, Clone, Default)]
pub struct Addresses(Arc<(Mutex<HashMap<String, SocketAddr>>, Condvar)>);

impl Addresses {
    /// Reads `stdout` of service `name` on a thread: records its address
    /// when announced, then drains the rest so the child never blocks.
    pub fn watch(&self, name: &str, stdout: impl Read + Send + 'static) {
        let (label, name, addresses) = (name.to_owned(), name.to_owned(), self.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("demo-{name}-stdout"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(addr) = line
                        .strip_prefix(LISTENING_PREFIX)
                        .and_then(|a| a.trim().parse().ok())
                    {
                        addresses.insert(&name, addr);
                    }
                }
            });
        if let Err(err) = spawned {
            tracing::warn!("cannot watch the output of demo service {label}: {err}");
        }
    }

    fn insert(&self, name: &str, addr: SocketAddr) {
        let (map, announced) = &*self.0;
        if let Ok(mut map) = map.lock() {
            map.insert(name.to_owned(), addr);
            announced.notify_all();
        }
    }

    /// The address of `name`, waiting up to `timeout` for it.
    pub fn wait_for(&self, name: &str, timeout: Duration) -> Option<SocketAddr> {
        let (map, announced) = &*self.0;
        let guard = map.lock().ok()?;
        let (guard, _) = announced
            .wait_timeout_while(guard, timeout, |map| !map.contains_key(name))
            .ok()?;
        guard.get(name).copied()
    }
}

/// What came of one fault, in one line: `Ok` when it was switched on.
pub type Outcome = Result<String, String>;

/// Fires `schedule` relative to `started`, telling `report` what happened
/// to each fault. Runs until the last fault has fired.
pub fn run_schedule(
    schedule: &[Fault],
    started: Instant,
    addresses: &Addresses,
    report: &mut dyn FnMut(Outcome),
) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(TRIGGER_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    for fault in schedule {
        if let Some(wait) = (started + fault.after).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let Some(addr) = addresses.wait_for(fault.service, ANNOUNCE_TIMEOUT) else {
            report(Err(format!(
                "fault {}: {} never announced its address",
                fault.path, fault.service
            )));
            continue;
        };
        report(fire(&agent, fault, addr));
    }
}

/// Sends one trigger (POST, or GET when the switch only takes GET); says
/// what came of it in one line.
fn fire(agent: &ureq::Agent, fault: &Fault, addr: SocketAddr) -> Outcome {
    let url = format!("http://{addr}{}", fault.path);
    let answer = match agent.post(&url).send_empty() {
        Ok(response) if response.status() == 405 => agent.get(&url).call(),
        other => other,
    };
    let what = format!("fault {} on {}", fault.path, fault.service);
    match answer {
        Ok(response) if response.status().is_success() => Ok(format!("{what}: switched on")),
        Ok(response) => Err(format!("{what}: refused with HTTP {}", response.status())),
        Err(ureq::Error::Timeout(_)) => Ok(format!(
            "{what}: switched on (the handler is stuck, as intended)"
        )),
        Err(err) => Err(format!("{what}: failed: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-request HTTP server that records the request line.
    fn one_shot_server() -> (SocketAddr, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(stream.try_clone().unwrap())
                .read_line(&mut line)
                .unwrap();
            std::io::Write::write_all(
                &mut stream,
                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .unwrap();
            line
        });
        (addr, handle)
    }

    #[test]
    fn learns_addresses_from_announcements_and_fires_on_schedule() {
        let (addr, server) = one_shot_server();
        let addresses = Addresses::default();
        let output = format!("starting\n{LISTENING_PREFIX}{addr}\nmore output\n");
        addresses.watch("checkout", std::io::Cursor::new(output.into_bytes()));
        assert_eq!(
            addresses.wait_for("checkout", Duration::from_secs(5)),
            Some(addr)
        );

        let schedule = [Fault {
            after: Duration::from_millis(50),
            service: "checkout",
            path: "/fault/loop",
        }];
        let mut reports = Vec::new();
        let started = Instant::now();
        run_schedule(&schedule, started, &addresses, &mut |line| {
            reports.push(line)
        });
        assert!(
            started.elapsed() >= Duration::from_millis(50),
            "waited for the fault's time"
        );
        assert_eq!(server.join().unwrap().trim(), "POST /fault/loop HTTP/1.1");
        assert_eq!(
            reports,
            vec![Ok("fault /fault/loop on checkout: switched on".to_owned())]
        );
    }

    #[test]
    fn a_service_that_never_announces_is_reported() {
        let addresses = Addresses::default();
        assert_eq!(addresses.wait_for("ghost", Duration::from_millis(10)), None);
    }
}
