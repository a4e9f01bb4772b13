//! `socket_leak`, `fd_leak` and `task_leak` as a person reads them: what
//! leaks and how much is held now, how fast it grows, over how long, when
//! it runs out (file descriptors), where it comes from (spawn sites), then
//! the figures that give it scale and how sure the detector is.

use meshwatch_api::evidence::{
    CountTrend, FdLeakEvidence, SocketLeakEvidence, SpawnSite, TaskLeakEvidence,
};

use super::generic::{Field, Section};
use crate::format;

/// The sections of a leak's evidence; `None` for another kind.
pub(super) fn sections(evidence: &meshwatch_api::Evidence) -> Option<Vec<Section>> {
    Some(match evidence {
        meshwatch_api::Evidence::SocketLeak(e) => socket_leak(e),
        meshwatch_api::Evidence::FdLeak(e) => fd_leak(e),
        meshwatch_api::Evidence::TaskLeak(e) => task_leak(e),
        _ => return None,
    })
}

fn socket_leak(e: &SocketLeakEvidence) -> Vec<Section> {
    let mut fields = vec![Field::new(
        "sockets in CLOSE_WAIT",
        e.tcp_close_wait.to_string(),
    )];
    fields.extend(growth(&e.close_wait_trend, "sockets", e.window_seconds));
    fields.extend(
        e.tcp_established
            .map(|n| Field::new("established connections", n.to_string())),
    );
    fields.extend(e.fds_open.map(|n| Field::new("open fds", n.to_string())));
    fields.push(certainty(&e.close_wait_trend));
    fields.push(Field::new("instance", e.instance.clone()));
    vec![Section::Fields(fields)]
}

fn fd_leak(e: &FdLeakEvidence) -> Vec<Section> {
    let mut fields = vec![Field::new("open fds", e.fds_open.to_string())];
    fields.extend(growth(&e.fds_trend, "fds", e.window_seconds));
    fields.extend(e.fds_limit.map(|n| Field::new("fd limit", n.to_string())));
    fields.extend(
        e.projected_time_to_limit_seconds
            .map(|s| Field::new("limit reached in", format::duration_ms(s * 1000.0))),
    );
    fields.extend(
        e.tcp_sockets
            .map(|n| Field::new("of which TCP sockets", n.to_string())),
    );
    fields.push(certainty(&e.fds_trend));
    fields.push(Field::new("instance", e.instance.clone()));
    vec![Section::Fields(fields)]
}

fn task_leak(e: &TaskLeakEvidence) -> Vec<Section> {
    let mut fields = vec![Field::new("tasks alive", e.tasks_alive.to_string())];
    fields.extend(growth(&e.tasks_trend, "tasks", e.window_seconds));
    fields.extend(
        e.cpu_percent
            .map(|cpu| Field::new("process CPU", format::percent(Some(cpu)))),
    );
    fields.extend(
        e.spawn_site_note
            .as_ref()
            .filter(|_| e.spawn_sites.is_empty())
            .map(|note| Field::new("spawn sites", note.clone())),
    );
    fields.push(certainty(&e.tasks_trend));
    fields.push(Field::new("instance", e.instance.clone()));
    let mut sections = vec![Section::Fields(fields)];
    if !e.spawn_sites.is_empty() {
        sections.push(spawn_sites(&e.spawn_sites));
    }
    sections
}

/// How fast the count's floor grows, and over what: the window's rate, the
/// recent one, what it gained, and the time judged.
fn growth(trend: &CountTrend, what: &str, window_seconds: i64) -> Vec<Field> {
    vec![
        Field::new("growth", format!("{:+.1} {what}/min", trend.per_minute)),
        Field::new(
            "recent growth",
            format!("{:+.1} {what}/min", trend.recent_per_minute),
        ),
        Field::new(
            "gained over the window",
            format!("{:+.0} {what}", trend.growth_over_window),
        ),
        Field::new(
            "window",
            format::duration_ms(window_seconds as f64 * 1000.0),
        ),
    ]
}

/// How sure the detector is that the floor rises: the sign test.
fn certainty(trend: &CountTrend) -> Field {
    let test = &trend.sign_test;
    Field::new(
        "rising pairs",
        format!(
            "{} of {} (p = {:.3})",
            test.rising, test.pairs, test.p_value
        ),
    )
}

fn spawn_sites(sites: &[SpawnSite]) -> Section {
    Section::Table {
        title: "spawn sites, most alive tasks first".to_owned(),
        columns: vec!["location".to_owned(), "alive".to_owned()],
        rows: sites
            .iter()
            .map(|site| vec![site.location.clone(), site.alive.to_string()])
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_leak_reads_what_how_fast_over_how_long_then_scale_and_certainty() {
        let evidence = crate::fixtures::socket_leak().evidence;
        let found = sections(&evidence).unwrap();
        let [Section::Fields(fields)] = found.as_slice() else {
            panic!("one section of fields: {found:?}");
        };
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "sockets in CLOSE_WAIT",
                "growth",
                "recent growth",
                "gained over the window",
                "window",
                "established connections",
                "open fds",
                "rising pairs",
                "instance"
            ]
        );
        assert_eq!(fields[1].value, "+24.0 sockets/min");
        assert_eq!(fields[4].value, "5m00s");
        assert!(sections(&meshwatch_api::Evidence::Other(serde_json::json!({}))).is_none());
    }

    #[test]
    fn an_fd_leak_says_when_the_limit_is_reached_and_a_task_leak_where_tasks_come_from() {
        let fd = meshwatch_api::Evidence::FdLeak(FdLeakEvidence {
            fds_open: 900,
            fds_limit: Some(1024),
            projected_time_to_limit_seconds: Some(600.0),
            ..FdLeakEvidence::default()
        });
        let Some(Section::Fields(fields)) = sections(&fd).and_then(|s| s.into_iter().next()) else {
            panic!("fields");
        };
        let limit = fields
            .iter()
            .position(|f| f.name == "limit reached in")
            .unwrap();
        assert_eq!(fields[limit].value, "10m00s");
        assert!(limit > fields.iter().position(|f| f.name == "growth").unwrap());

        let tasks = meshwatch_api::Evidence::TaskLeak(TaskLeakEvidence {
            tasks_alive: 5000,
            spawn_sites: vec![SpawnSite {
                location: "src/handler.rs:42:5".to_owned(),
                alive: 4900,
            }],
            ..TaskLeakEvidence::default()
        });
        let sections = sections(&tasks).unwrap();
        assert!(
            matches!(&sections[1], Section::Table { rows, .. } if rows[0][0] == "src/handler.rs:42:5")
        );
    }
}
