//! `meshwatch status`: the mesh, once, as a table or as JSON.

use meshwatch_api::{InstanceView, ServicesView};

use crate::collectors::{Merged, Unreachable};
use crate::format;

/// Reads one cell of the table from an instance.
type Cell = fn(&InstanceView) -> String;

/// The table's columns: header and how to read a cell from an instance.
const COLUMNS: &[(&str, Cell)] = &[
    ("SERVICE", |i| i.service.clone()),
    ("INSTANCE", |i| i.instance_id.chars().take(8).collect()),
    ("RUNTIME", |i| {
        // `node*`: watched from outside, not by a linked probe.
        let outside = if i.watched_from_outside { "*" } else { "" };
        format!("{}{outside}", i.runtime)
    }),
    ("PID", |i| i.pid.to_string()),
    ("STATE", |i| i.state.as_str().to_owned()),
    ("UPTIME", |i| format::uptime(i.uptime_seconds)),
    ("CPU", |i| {
        format::percent(i.headline.as_ref().and_then(|h| h.cpu_percent))
    }),
    ("RSS", |i| sized(i, |h| h.rss_bytes)),
    ("HEAP", |i| sized(i, |h| h.heap_live_bytes)),
    ("THREADS", |i| {
        format::count(i.headline.as_ref().and_then(|h| h.threads))
    }),
    ("TASKS", |i| {
        format::count(i.headline.as_ref().and_then(|h| h.tasks_alive))
    }),
    ("FDS", |i| {
        format::count(i.headline.as_ref().and_then(|h| h.fds_open))
    }),
    ("TCP", |i| {
        format::count(i.headline.as_ref().and_then(|h| h.tcp_established))
    }),
    ("CLOSE_WAIT", |i| {
        format::count(i.headline.as_ref().and_then(|h| h.tcp_close_wait))
    }),
    ("RESTARTS", |i| i.restarts.to_string()),
    ("INCIDENTS", |i| incident_flags(i)),
];

fn sized(instance: &InstanceView, figure: fn(&meshwatch_api::Headline) -> Option<u64>) -> String {
    instance
        .headline
        .as_ref()
        .and_then(figure)
        .map_or_else(|| "-".to_owned(), format::bytes)
}

/// The kinds of the instance's open incidents, or `-`.
fn incident_flags(instance: &InstanceView) -> String {
    if instance.open_incidents.is_empty() {
        return "-".to_owned();
    }
    instance
        .open_incidents
        .iter()
        .map(|incident| incident.kind.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// The HOST column, shown when the mesh spans several collectors.
const HOST: (&str, Cell) = ("HOST", |i| i.host.clone());

/// Renders the mesh of one or several collectors: the table, then each
/// collector that could not be reached. With several collectors the table
/// has a HOST column.
pub fn render_mesh(mesh: &Merged<ServicesView>, collectors: usize) -> String {
    let mut out = if mesh.value.services.is_empty() {
        "no services have reported to these collectors yet\n".to_owned()
    } else {
        render_table(&mesh.value, collectors > 1)
    };
    for Unreachable { collector, error } in &mesh.unreachable {
        out.push_str(&format!("unreachable: {collector}: {error}\n"));
    }
    out
}

/// Renders the mesh as an aligned plain-text table, one instance a row;
/// `hosts` adds the HOST column after SERVICE.
pub fn render_table(view: &ServicesView, hosts: bool) -> String {
    if view.services.is_empty() {
        return "no services have reported to this collector yet\n".to_owned();
    }
    let mut columns = COLUMNS.to_vec();
    if hosts {
        columns.insert(1, HOST);
    }
    let rows: Vec<Vec<String>> = view
        .services
        .iter()
        .map(|instance| columns.iter().map(|(_, cell)| cell(instance)).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(c, (header, _))| {
            rows.iter()
                .map(|row| row[c].chars().count())
                .chain([header.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let mut push_row = |cells: &mut dyn Iterator<Item = &str>| {
        let line: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    };
    push_row(&mut columns.iter().map(|(header, _)| *header));
    for row in &rows {
        push_row(&mut row.iter().map(String::as_str));
    }
    if view.services.iter().any(|i| i.watched_from_outside) {
        out.push_str("* watched from outside by the collector (--watch): no runtime, heap or stuck-poll figures\n");
    }
    out.push_str(&render_sockets(view));
    out
}

/// Each instance's TCP sockets by state and by age, under the table: the
/// evidence of a socket leak (CLOSE_WAIT) or of long-held connections.
fn render_sockets(view: &ServicesView) -> String {
    let mut out = String::new();
    for instance in &view.services {
        let Some(sockets) = instance.sockets.as_ref().filter(|s| s.total > 0) else {
            continue;
        };
        if out.is_empty() {
            out.push_str("\nSOCKETS\n");
        }
        let states: Vec<String> = sockets
            .by_state
            .iter()
            .map(|c| format!("{} {}", c.name, c.count))
            .collect();
        let ages: Vec<String> = sockets
            .ages
            .iter()
            .filter(|b| b.count > 0)
            .map(|b| match b.le_seconds {
                Some(le) => format!("<{} {}", format::uptime(le), b.count),
                None => format!("older {}", b.count),
            })
            .collect();
        let id: String = instance.instance_id.chars().take(8).collect();
        out.push_str(&format!(
            "{} {id}  {}  ages: {}\n",
            instance.service,
            states.join(", "),
            if ages.is_empty() {
                "-".to_owned()
            } else {
                ages.join(", ")
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two instances, built from the API's types: one with every figure and
    /// its sockets, one watched from outside with none.
    fn mesh() -> ServicesView {
        use crate::fixtures::{headline, named, view};
        use meshwatch_api::{AgeBucketView, Headline, InstanceState, SocketsView};

        let mut checkout = view(
            "checkout",
            "0123456789abcdef0123456789abcdef",
            InstanceState::Up,
            vec![],
        );
        checkout.uptime_seconds = 303;
        checkout.headline = Some(Headline {
            threads: Some(7),
            fds_open: Some(14),
            tcp_established: Some(5),
            tcp_close_wait: Some(2),
            ..headline(12.5, 30 << 20, 2 << 20, 12)
        });
        checkout.sockets = Some(SocketsView {
            total: 8,
            by_state: vec![
                named("ESTABLISHED", 5),
                named("CLOSE_WAIT", 2),
                named("LISTEN", 1),
            ],
            by_listen_port: vec![],
            top_peers: vec![],
            ages: [(Some(1), 3), (Some(60), 0), (None, 4)]
                .into_iter()
                .map(|(le_seconds, count)| AgeBucketView { le_seconds, count })
                .collect(),
            rx_queue_bytes: 0,
            tx_queue_bytes: 0,
            scan_duration_ns: 1,
            listening: vec![],
        });
        let mut gateway = view(
            "gateway",
            "fedcba9876543210fedcba9876543210",
            InstanceState::Restarted,
            vec![],
        );
        gateway.pid = 77;
        gateway.runtime = "node".to_owned();
        gateway.watched_from_outside = true;
        gateway.uptime_seconds = 4;
        gateway.restarts = 3;
        ServicesView {
            services: vec![checkout, gateway],
        }
    }

    #[test]
    fn renders_aligned_rows_with_units_and_unknowns() {
        let table = render_table(&mesh(), false);
        let expected = "\
SERVICE   INSTANCE  RUNTIME  PID   STATE      UPTIME  CPU    RSS       HEAP     THREADS  TASKS  FDS  TCP  CLOSE_WAIT  RESTARTS  INCIDENTS
checkout  01234567  rust     4242  up         5m03s   12.5%  30.0 MiB  2.0 MiB  7        12     14   5    2           0         -
gateway   fedcba98  node*    77    restarted  4s      -      -         -        -        -      -    -    -           3         -
* watched from outside by the collector (--watch): no runtime, heap or stuck-poll figures

SOCKETS
checkout 01234567  ESTABLISHED 5, CLOSE_WAIT 2, LISTEN 1  ages: <1s 3, older 4
";
        assert_eq!(table, expected);
    }

    #[test]
    fn says_so_when_the_mesh_is_empty() {
        let table = render_table(&ServicesView { services: vec![] }, false);
        assert!(table.contains("no services"));
    }

    #[test]
    fn several_collectors_add_a_host_column_and_name_the_unreachable() {
        let mut view = mesh();
        view.services[0].host = "host-a".to_owned();
        view.services[1].host = "host-b".to_owned();
        let merged = Merged {
            value: view,
            unreachable: vec![Unreachable {
                collector: "http://host-c:6741".to_owned(),
                error: "connection refused".to_owned(),
            }],
        };
        let out = render_mesh(&merged, 3);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("SERVICE   HOST    INSTANCE"), "{out}");
        assert!(lines[1].starts_with("checkout  host-a  01234567"), "{out}");
        assert!(lines[2].starts_with("gateway   host-b  fedcba98"), "{out}");
        assert_eq!(
            lines.last(),
            Some(&"unreachable: http://host-c:6741: connection refused")
        );
    }
}
