//! The process's TCP sockets: `/proc/self/fd` joined with
//! `/proc/self/net/tcp` and `tcp6` by inode.
//!
//! The kernel's tables list every socket of the network namespace; only the
//! inodes the process holds an fd for are its own. Connection ages come from
//! when the probe first saw each inode, kept in a map that is pruned to the
//! sockets open now, so it never outgrows the process's own socket count.
//!
//! Both reads are written by hand rather than through `procfs`, for speed
//! measured at 10,000 sockets (`benches/benches/socket_scan.rs`): `procfs`
//! opens, reads and stats every fd (four system calls each) where one
//! `readlink` says whether it is a socket, and it parses every field of every
//! line of the namespace's tables, other processes' sockets included, where
//! the inode column alone says whether a line is ours.
//!
//! The kernel's own cost remains: generating the tables takes time in
//! proportion to every socket of the namespace (about 8 µs a socket here),
//! and reading a link per fd. So the scan keeps to a budget: when one scan
//! costs more than [`SCAN_BUDGET`] of the snapshot interval, the next scans
//! are skipped and the last result is sent again, so that on average the
//! scan never takes more than that share of a core. Leaks show over minutes,
//! so a scan every few seconds loses nothing that matters.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use meshwatch_proto::v1::{AgeBucket, PeerCount, PortCount, SocketStats, StateCount};
use procfs::net::TcpState;

/// Upper bounds of the connection-age buckets, in seconds; a last bucket
/// (bound 0) holds everything older.
const AGE_BOUNDS_SECS: [u64; 5] = [1, 10, 60, 600, 3600];
/// Remote hosts reported, most connections first.
const TOP_PEERS: usize = 10;
/// The share of the snapshot interval the scan may take on average.
const SCAN_BUDGET: f64 = 0.01;
/// Bytes of a tcp table read at a time. The table lists every socket of the
/// network namespace (tens of thousands of TIME_WAIT ones on a host that
/// makes short connections), so it is streamed through this buffer rather
/// than read whole: the probe's memory must not follow the host's sockets.
const TABLE_BUFFER: usize = 64 * 1024;

/// The most snapshots in a row that reuse one scan.
const MAX_REUSE: u32 = 30;

/// One socket of the kernel's table, reduced to what the aggregation needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SocketEntry {
    pub inode: u64,
    pub state: TcpState,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub rx_queue: u32,
    pub tx_queue: u32,
}

/// Scans the process's sockets once per snapshot.
#[derive(Debug)]
pub(crate) struct SocketSampler {
    fd_dir: PathBuf,
    tcp: PathBuf,
    tcp6: PathBuf,
    first_seen: HashMap<u64, Instant>,
    /// What a scan may cost, per snapshot, on average.
    budget: Duration,
    /// The last scan, sent again while `reuse` snapshots remain.
    last: Option<SocketStats>,
    reuse: u32,
}

impl SocketSampler {
    /// A sampler of this process's sockets, taking snapshots every
    /// `interval`.
    pub fn new(interval: Duration) -> Self {
        Self::under(Path::new("/proc/self"), interval)
    }

    /// A sampler of another process's sockets (`/proc/PID`), watched from
    /// outside.
    #[cfg(feature = "external")]
    pub fn for_pid(pid: u32, interval: Duration) -> Self {
        Self::under(&Path::new("/proc").join(pid.to_string()), interval)
    }

    fn under(proc_dir: &Path, interval: Duration) -> Self {
        Self {
            fd_dir: proc_dir.join("fd"),
            tcp: proc_dir.join("net/tcp"),
            tcp6: proc_dir.join("net/tcp6"),
            first_seen: HashMap::new(),
            budget: interval.mul_f64(SCAN_BUDGET),
            last: None,
            reuse: 0,
        }
    }

    /// The sockets now, or the last scan's while the budget says to skip.
    pub fn sample(&mut self, errors: &mut u64) -> SocketStats {
        if let Some(last) = self.last.as_ref().filter(|_| self.reuse > 0) {
            self.reuse -= 1;
            return last.clone();
        }
        let stats = self.scan(errors);
        let took = Duration::from_nanos(stats.scan_duration_ns);
        self.reuse = reuses_for(took, self.budget);
        self.last = Some(stats.clone());
        stats
    }

    /// Scans and aggregates; `errors` counts the sources that failed.
    fn scan(&mut self, errors: &mut u64) -> SocketStats {
        let started = Instant::now();
        let owned = match socket_inodes(&self.fd_dir) {
            Ok(owned) => owned,
            Err(_) => {
                *errors += 1;
                HashSet::new()
            }
        };
        let mut entries = Vec::with_capacity(owned.len());
        // Without a socket of its own, the process has nothing to find in
        // the namespace's tables.
        let tables = if owned.is_empty() {
            Vec::new()
        } else {
            vec![(&self.tcp, true), (&self.tcp6, false)]
        };
        for (table, required) in tables {
            let mut found = Vec::new();
            let read = std::fs::File::open(table).and_then(|file| {
                let reader = BufReader::with_capacity(TABLE_BUFFER, file);
                read_tcp_table(reader, &owned, &mut found)
            });
            match read {
                // A table that failed partway is left out whole.
                Ok(()) => entries.append(&mut found),
                // A kernel without IPv6 has no tcp6 table; that is no error
                // worth reporting every second, but a missing tcp table is.
                Err(_) if !required => {}
                Err(_) => *errors += 1,
            }
        }
        let now = Instant::now();
        track_first_seen(&mut self.first_seen, &entries, now);
        let mut stats = aggregate(&entries, &self.first_seen, now);
        stats.scan_duration_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        stats
    }
}

/// The inodes of the sockets among the process's fds: one `readlink` per
/// fd, whose target reads `socket:[INODE]` for a socket.
fn socket_inodes(fd_dir: &Path) -> std::io::Result<HashSet<u64>> {
    let mut inodes = HashSet::new();
    for entry in std::fs::read_dir(fd_dir)? {
        // An fd closed between the listing and the readlink is skipped.
        let Ok(target) = entry.and_then(|e| std::fs::read_link(e.path())) else {
            continue;
        };
        if let Some(inode) = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse().ok())
        {
            inodes.insert(inode);
        }
    }
    Ok(inodes)
}

/// Appends to `out` the lines of a `/proc/net/tcp` or `tcp6` table whose
/// inode is `owned`, reading it line by line into one reused buffer.
///
/// Each socket is kept once: the kernel generates the table a read at a
/// time and resumes by position, so while other sockets come and go a line
/// can be listed twice (seen in this crate's tests, under other tests'
/// churn).
fn read_tcp_table(
    mut reader: impl BufRead,
    owned: &HashSet<u64>,
    out: &mut Vec<SocketEntry>,
) -> std::io::Result<()> {
    let mut line = String::with_capacity(256);
    let mut header = true;
    let mut seen = HashSet::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if std::mem::take(&mut header) {
            continue;
        }
        if let Some(entry) = parse_tcp_line(&line, owned)
            && seen.insert(entry.inode)
        {
            out.push(entry);
        }
    }
}

/// One line of a tcp table, when its inode is `owned`. Columns: `sl local
/// rem st tx_queue:rx_queue tr:when retrnsmt uid timeout inode ...`,
/// addresses as hex `ADDR:PORT`. The inode is checked first, so the lines of
/// other processes' sockets cost one split and one parse.
fn parse_tcp_line(line: &str, owned: &HashSet<u64>) -> Option<SocketEntry> {
    let mut fields = [""; 10];
    for (slot, field) in fields.iter_mut().zip(line.split_ascii_whitespace()) {
        *slot = field;
    }
    let inode: u64 = fields[9].parse().ok()?;
    if !owned.contains(&inode) {
        return None;
    }
    let (tx, rx) = fields[4].split_once(':')?;
    Some(SocketEntry {
        inode,
        state: TcpState::from_u8(u8::from_str_radix(fields[3], 16).ok()?)?,
        local: parse_hex_addr(fields[1])?,
        remote: parse_hex_addr(fields[2])?,
        tx_queue: u32::from_str_radix(tx, 16).ok()?,
        rx_queue: u32::from_str_radix(rx, 16).ok()?,
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits (IPv6) and a port: the kernel
/// prints each 32-bit word of the address in host byte order.
fn parse_hex_addr(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| {
        addr.get(i * 8..i * 8 + 8)
            .and_then(|w| u32::from_str_radix(w, 16).ok())
            // The word as it lies in the kernel's memory: network order.
            .map(u32::to_ne_bytes)
    };
    let ip: IpAddr = match addr.len() {
        8 => Ipv4Addr::from(word(0)?).into(),
        32 => {
            let mut octets = [0u8; 16];
            for i in 0..4 {
                octets[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Ipv6Addr::from(octets).into()
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// How many snapshots should reuse a scan that took `took`, so that scans
/// average at most `budget` per snapshot.
fn reuses_for(took: Duration, budget: Duration) -> u32 {
    if budget.is_zero() || took <= budget {
        return 0;
    }
    let ratio = took.as_secs_f64() / budget.as_secs_f64();
    (ratio.ceil() as u32).saturating_sub(1).min(MAX_REUSE)
}

/// Remembers when each socket was first seen and forgets closed ones.
fn track_first_seen(first_seen: &mut HashMap<u64, Instant>, entries: &[SocketEntry], now: Instant) {
    let open: HashSet<u64> = entries.iter().map(|e| e.inode).collect();
    first_seen.retain(|inode, _| open.contains(inode));
    for inode in open {
        first_seen.entry(inode).or_insert(now);
    }
}

/// The kernel's name of a state, as `ss` and `netstat` print it.
fn state_name(state: &TcpState) -> &'static str {
    match state {
        TcpState::Established => "ESTABLISHED",
        TcpState::SynSent => "SYN_SENT",
        TcpState::SynRecv => "SYN_RECV",
        TcpState::FinWait1 => "FIN_WAIT1",
        TcpState::FinWait2 => "FIN_WAIT2",
        TcpState::TimeWait => "TIME_WAIT",
        TcpState::Close => "CLOSE",
        TcpState::CloseWait => "CLOSE_WAIT",
        TcpState::LastAck => "LAST_ACK",
        TcpState::Listen => "LISTEN",
        TcpState::Closing => "CLOSING",
        TcpState::NewSynRecv => "NEW_SYN_RECV",
    }
}

/// Listening addresses a snapshot carries.
const MAX_LISTENING: usize = 16;

/// Counts by state, listening port, peer and age, and the addresses
/// listened on. Pure, for testing.
pub(crate) fn aggregate(
    entries: &[SocketEntry],
    first_seen: &HashMap<u64, Instant>,
    now: Instant,
) -> SocketStats {
    let mut stats = SocketStats {
        total: u32::try_from(entries.len()).unwrap_or(u32::MAX),
        ..SocketStats::default()
    };
    let mut by_state: HashMap<&'static str, u32> = HashMap::new();
    let mut peers: HashMap<std::net::IpAddr, u32> = HashMap::new();
    let mut ages = [0u32; AGE_BOUNDS_SECS.len() + 1];
    let listen_ports: HashSet<u16> = entries
        .iter()
        .filter(|e| e.state == TcpState::Listen)
        .map(|e| e.local.port())
        .collect();
    let mut listening: Vec<std::net::SocketAddr> = entries
        .iter()
        .filter(|e| e.state == TcpState::Listen)
        .map(|e| e.local)
        .collect();
    listening.sort_unstable();
    listening.dedup();
    stats.listening = listening
        .iter()
        .take(MAX_LISTENING)
        .map(ToString::to_string)
        .collect();
    let mut by_port: HashMap<u16, u32> = HashMap::new();

    for entry in entries {
        *by_state.entry(state_name(&entry.state)).or_default() += 1;
        stats.rx_queue_bytes += u64::from(entry.rx_queue);
        stats.tx_queue_bytes += u64::from(entry.tx_queue);
        match entry.state {
            TcpState::Established => stats.established += 1,
            TcpState::CloseWait => stats.close_wait += 1,
            TcpState::TimeWait => stats.time_wait += 1,
            TcpState::Listen => {
                stats.listen += 1;
                continue;
            }
            _ => {}
        }
        *peers.entry(entry.remote.ip()).or_default() += 1;
        if listen_ports.contains(&entry.local.port()) {
            *by_port.entry(entry.local.port()).or_default() += 1;
        }
        let age = first_seen
            .get(&entry.inode)
            .map_or(Duration::ZERO, |seen| now.saturating_duration_since(*seen));
        let bucket = AGE_BOUNDS_SECS
            .iter()
            .position(|&bound| age < Duration::from_secs(bound))
            .unwrap_or(AGE_BOUNDS_SECS.len());
        ages[bucket] += 1;
    }

    stats.by_state = sorted_counts(by_state, |state, count| StateCount {
        state: state.to_owned(),
        count,
    });
    stats.by_listen_port = sorted_counts(by_port, |port, count| PortCount {
        port: u32::from(port),
        count,
    });
    stats.top_peers = sorted_counts(peers, |ip, count| PeerCount {
        address: ip.to_string(),
        count,
    });
    stats.top_peers.truncate(TOP_PEERS);
    stats.ages = AGE_BOUNDS_SECS
        .iter()
        .copied()
        .chain([0])
        .zip(ages)
        .map(|(le_seconds, count)| AgeBucket { le_seconds, count })
        .collect();
    stats
}

/// Most first, then by key, so snapshots are deterministic.
fn sorted_counts<K: Ord + Copy, T>(counts: HashMap<K, u32>, make: impl Fn(K, u32) -> T) -> Vec<T> {
    let mut pairs: Vec<(K, u32)> = counts.into_iter().collect();
    pairs.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    pairs.into_iter().map(|(k, n)| make(k, n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn entry(inode: u64, state: TcpState, local: &str, remote: &str) -> SocketEntry {
        SocketEntry {
            inode,
            state,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            rx_queue: 10,
            tx_queue: 1,
        }
    }

    #[test]
    fn aggregates_states_ports_peers_and_ages() {
        let now = Instant::now();
        let entries = vec![
            entry(1, TcpState::Listen, "0.0.0.0:8080", "0.0.0.0:0"),
            entry(2, TcpState::Established, "10.0.0.1:8080", "10.0.0.9:5000"),
            entry(3, TcpState::CloseWait, "10.0.0.1:8080", "10.0.0.9:5001"),
            entry(4, TcpState::Established, "10.0.0.1:40000", "10.0.0.7:5432"),
        ];
        let first_seen = HashMap::from([
            (2, now - Duration::from_secs(2)),
            (3, now - Duration::from_secs(7200)),
            (4, now),
        ]);
        let stats = aggregate(&entries, &first_seen, now);
        assert_eq!(
            (
                stats.total,
                stats.established,
                stats.close_wait,
                stats.listen
            ),
            (4, 2, 1, 1)
        );
        assert_eq!(
            stats.by_state[0],
            StateCount {
                state: "ESTABLISHED".into(),
                count: 2
            }
        );
        assert_eq!(
            stats.by_listen_port,
            vec![PortCount {
                port: 8080,
                count: 2
            }]
        );
        assert_eq!(stats.listening, ["0.0.0.0:8080"]);
        assert_eq!(
            stats.top_peers[0],
            PeerCount {
                address: "10.0.0.9".into(),
                count: 2
            }
        );
        let ages: Vec<u32> = stats.ages.iter().map(|b| b.count).collect();
        assert_eq!(ages, vec![1, 1, 0, 0, 0, 1], "<1s, <10s, .., >=1h");
        assert_eq!(stats.rx_queue_bytes, 40);
    }

    #[test]
    fn first_seen_is_kept_for_open_sockets_and_forgotten_for_closed() {
        let t0 = Instant::now();
        let mut seen = HashMap::new();
        let a = entry(1, TcpState::Established, "127.0.0.1:1", "127.0.0.1:2");
        let b = entry(2, TcpState::Established, "127.0.0.1:1", "127.0.0.1:3");
        track_first_seen(&mut seen, &[a.clone(), b], t0);
        track_first_seen(&mut seen, &[a], t0 + Duration::from_secs(5));
        assert_eq!(seen, HashMap::from([(1, t0)]));
    }

    #[test]
    fn an_expensive_scan_is_reused_to_stay_within_budget() {
        let budget = Duration::from_millis(10);
        assert_eq!(reuses_for(Duration::from_millis(3), budget), 0);
        assert_eq!(reuses_for(Duration::from_millis(10), budget), 0);
        assert_eq!(reuses_for(Duration::from_millis(25), budget), 2);
        assert_eq!(reuses_for(Duration::from_secs(60), budget), MAX_REUSE);
    }

    #[test]
    fn parses_addresses_as_the_kernel_prints_them() {
        assert_eq!(
            parse_hex_addr("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            parse_hex_addr("00000000000000000000000001000000:0050"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(parse_hex_addr("zz:1"), None);
    }

    #[test]
    fn a_socket_listed_twice_by_the_kernel_is_kept_once() {
        let line = |inode: u64| {
            format!(
                "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
            )
        };
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n{}{}{}",
            line(7),
            line(7),
            line(8)
        );
        let mut out = Vec::new();
        read_tcp_table(table.as_bytes(), &HashSet::from([7, 8]), &mut out).unwrap();
        let inodes: Vec<u64> = out.iter().map(|e| e.inode).collect();
        assert_eq!(inodes, [7, 8]);
        assert_eq!(out[0].local, "127.0.0.1:8080".parse().unwrap());
    }

    #[test]
    fn reads_the_same_sockets_as_procfs() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        // Only this test's sockets: other tests open and close theirs
        // between the two reads.
        let inode = |fd: i32| {
            std::fs::metadata(format!("/proc/self/fd/{fd}"))
                .unwrap()
                .ino()
        };
        let mine: HashSet<u64> = [listener.as_raw_fd(), client.as_raw_fd(), server.as_raw_fd()]
            .into_iter()
            .map(inode)
            .collect();
        let owned: HashSet<u64> = socket_inodes(Path::new("/proc/self/fd"))
            .unwrap()
            .intersection(&mine)
            .copied()
            .collect();
        assert_eq!(owned.len(), 3, "the listing finds this test's sockets");
        let mut ours = Vec::new();
        let table = std::fs::read_to_string("/proc/self/net/tcp").unwrap();
        // A buffer far smaller than the table: lines cross its refills.
        let reader = BufReader::with_capacity(16, table.as_bytes());
        read_tcp_table(reader, &owned, &mut ours).unwrap();
        let mut theirs: Vec<SocketEntry> = procfs::process::Process::myself()
            .unwrap()
            .tcp()
            .unwrap()
            .into_iter()
            .filter(|e| owned.contains(&e.inode))
            .map(|e| SocketEntry {
                inode: e.inode,
                state: e.state,
                local: e.local_address,
                remote: e.remote_address,
                rx_queue: e.rx_queue,
                tx_queue: e.tx_queue,
            })
            .collect();
        ours.sort_by_key(|e| e.inode);
        theirs.sort_by_key(|e| e.inode);
        // procfs reads the same kernel table, which can list a socket twice
        // while other sockets come and go; ours keeps each once.
        theirs.dedup_by_key(|e| e.inode);
        assert_eq!(ours, theirs);
        assert_eq!(ours.len(), 3);
    }

    #[test]
    fn scans_this_process_and_sees_a_close_wait_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        // The peer hangs up; our side (client) is left in CLOSE_WAIT.
        drop(server);
        let mut buf = [0u8; 1];
        assert_eq!(client.read(&mut buf).unwrap(), 0);
        let _ = client.write(b"");

        let mut sampler = SocketSampler::new(Duration::from_secs(1));
        let mut errors = 0;
        let stats = sampler.sample(&mut errors);
        assert_eq!(errors, 0);
        assert!(stats.listen >= 1, "{stats:?}");
        assert!(stats.close_wait >= 1, "{stats:?}");
        assert!(
            stats.by_listen_port.iter().all(|p| p.port != 0),
            "{stats:?}"
        );
    }
}
