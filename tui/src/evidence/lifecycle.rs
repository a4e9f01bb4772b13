//! `crash_loop` and `service_down` as a person reads them: how often the
//! service died and over how long, or since when it has been down, then
//! how its instances lived and ended.

use meshwatch_api::evidence::{CrashLoopEvidence, InstanceLife, ServiceDownEvidence};

use super::generic::{Field, Section};
use crate::format;

/// The sections of a crash loop's or an outage's evidence; `None` for
/// another kind.
pub(super) fn sections(evidence: &meshwatch_api::Evidence, now_ms: i64) -> Option<Vec<Section>> {
    Some(match evidence {
        meshwatch_api::Evidence::CrashLoop(e) => crash_loop(e, now_ms),
        meshwatch_api::Evidence::ServiceDown(e) => service_down(e, now_ms),
        _ => return None,
    })
}

fn crash_loop(e: &CrashLoopEvidence, now_ms: i64) -> Vec<Section> {
    let fields = vec![
        Field::new("deaths", e.deaths.to_string()),
        Field::new(
            "over",
            format::duration_ms(e.window_seconds as f64 * 1000.0),
        ),
        Field::new("restarts", e.restarts.to_string()),
        Field::new(
            "median life",
            format::duration_ms(e.median_lifetime_seconds * 1000.0),
        ),
        Field::new(
            "an instance up now",
            if e.instance_up { "yes" } else { "no" }.to_owned(),
        ),
    ];
    let mut sections = vec![Section::Fields(fields)];
    if !e.lives.is_empty() {
        sections.push(lives_table("lives, oldest first", &e.lives, now_ms));
    }
    sections
}

fn service_down(e: &ServiceDownEvidence, now_ms: i64) -> Vec<Section> {
    let mut fields = vec![
        Field::new("down since", format::relative(now_ms, e.down_since_at_ms)),
        Field::new(
            "after a grace of",
            format::duration_ms(e.grace_seconds as f64 * 1000.0),
        ),
        Field::new("instances known", e.instances_known.to_string()),
    ];
    if let Some(last) = &e.last_instance {
        fields.push(Field::new(
            "last instance",
            last.instance_id.chars().take(8).collect(),
        ));
        fields.push(Field::new(
            "it ended",
            last.ending
                .map_or("-", |ending| ending.describe())
                .to_owned(),
        ));
        fields.push(Field::new(
            "after living",
            format::duration_ms(last.lived_ms() as f64),
        ));
    }
    vec![Section::Fields(fields)]
}

/// The instances of a service as a table: id, state, started, lived, how
/// it ended.
pub(super) fn lives_table(title: &str, lives: &[InstanceLife], now_ms: i64) -> Section {
    Section::Table {
        title: title.to_owned(),
        columns: ["instance", "state", "started", "lived", "ending"]
            .map(str::to_owned)
            .to_vec(),
        rows: lives
            .iter()
            .map(|life| {
                vec![
                    life.instance_id.chars().take(8).collect(),
                    life.state.as_str().to_owned(),
                    format::relative(now_ms, life.started_at_ms),
                    format::duration_ms(life.lived_ms() as f64),
                    life.ending.map_or("-", |e| e.describe()).to_owned(),
                ]
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwatch_api::evidence::Ending;

    #[test]
    fn a_crash_loop_reads_how_often_over_how_long_then_the_lives() {
        let evidence = meshwatch_api::Evidence::CrashLoop(CrashLoopEvidence {
            window_seconds: 600,
            deaths: 4,
            restarts: 4,
            median_lifetime_seconds: 5.0,
            lives: vec![InstanceLife {
                instance_id: "0123456789abcdef".to_owned(),
                ending: Some(Ending::Disconnected),
                lived_seconds: 5,
                ..InstanceLife::default()
            }],
            ..CrashLoopEvidence::default()
        });
        let found = sections(&evidence, 0).unwrap();
        let Section::Fields(fields) = &found[0] else {
            panic!("fields first: {found:?}");
        };
        let shown: Vec<(&str, &str)> = fields
            .iter()
            .map(|f| (f.name.as_str(), f.value.as_str()))
            .collect();
        assert_eq!(
            shown[..4],
            [
                ("deaths", "4"),
                ("over", "10m00s"),
                ("restarts", "4"),
                ("median life", "5.0s")
            ]
        );
        assert!(matches!(&found[1], Section::Table { rows, .. }
            if rows[0][4] == "connection lost without a goodbye"));
    }

    #[test]
    fn a_service_down_says_since_when_and_how_its_last_instance_ended() {
        let evidence = meshwatch_api::Evidence::ServiceDown(ServiceDownEvidence {
            down_since_at_ms: 0,
            grace_seconds: 30,
            last_instance: Some(InstanceLife {
                instance_id: "0123456789abcdef".to_owned(),
                ending: Some(Ending::MissedHeartbeats),
                started_at_ms: 1_000,
                last_seen_at_ms: 3_601_500,
                lived_seconds: 3600,
                ..InstanceLife::default()
            }),
            instances_known: 1,
        });
        let found = sections(&evidence, 120_000).unwrap();
        let Section::Fields(fields) = &found[0] else {
            panic!("fields: {found:?}");
        };
        assert_eq!(fields[0].name, "down since");
        assert!(fields[0].value.contains("2m"), "{:?}", fields[0]);
        assert!(
            fields
                .iter()
                .any(|f| f.value == "went silent (missed heartbeats)")
        );
        assert!(
            fields
                .iter()
                .any(|f| f.name == "after living" && f.value.starts_with("1h")),
            "{fields:?}"
        );
        assert!(sections(&meshwatch_api::Evidence::Other(serde_json::json!({})), 0).is_none());
    }
}
