//! Snapshots of every screen on fixed data, drawn with ratatui's
//! `TestBackend`, and the navigation between them driven by intents.
#![allow(clippy::unwrap_used)]

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::Modifier;

use super::app::{App, Detail, Flow, Tab};
use super::fetch::{Data, Message};
use super::input::{Intent, Mode};
use super::theme::Theme;
use super::view;
use crate::fixtures::{self, NOW_MS};

/// An app showing the fixture mesh, with history for every series it wants.
fn app() -> App {
    let mut app = App::new("http://127.0.0.1:6741", NOW_MS);
    let data = Data {
        at_ms: NOW_MS,
        instances: fixtures::mesh(),
        incidents: vec![
            fixtures::socket_leak(),
            fixtures::runaway(),
            fixtures::growth(),
        ],
        series: Default::default(),
        unreachable: Vec::new(),
    };
    app.on_message(Message::Fetched(Box::new(data)));
    fill_series(&mut app);
    app
}

/// Gives every wanted series a minute of history, as the fetcher would.
fn fill_series(app: &mut App) {
    for req in app.wants() {
        let series = app
            .data
            .instances
            .iter()
            .filter(|i| i.view.service == req.service && i.view.headline.is_some())
            .flat_map(|i| fixtures::history(&i.view.instance_id, req.metric))
            .collect();
        app.data.series.insert(req, series);
    }
}

fn apply(app: &mut App, intents: &[Intent]) {
    for intent in intents {
        assert_eq!(app.apply(*intent), Flow::Continue, "{intent:?} quit");
        fill_series(app);
    }
}

pub(super) fn draw(app: &App, width: u16, height: u16, theme: Theme) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal
        .draw(|frame| view::render(frame, app, theme))
        .unwrap();
    terminal
}

pub(super) fn screen(app: &App, width: u16, height: u16) -> String {
    draw(app, width, height, Theme::new(true))
        .backend()
        .to_string()
}

#[test]
fn mesh_at_80x24_puts_the_incidents_first() {
    let app = app();
    insta::assert_snapshot!(screen(&app, 80, 24));
    let rows: Vec<&str> = app
        .mesh
        .rows(&app.data)
        .iter()
        .map(|i| i.view.service.as_str())
        .collect();
    assert_eq!(rows, vec!["checkout", "inventory", "billing", "gateway"]);
}

#[test]
fn mesh_wide() {
    insta::assert_snapshot!(screen(&app(), 120, 16));
}

#[test]
fn mesh_over_several_collectors_shows_hosts_and_the_unreachable() {
    let mut app = app();
    app.collector = "3 collectors".to_owned();
    for (n, instance) in app.data.instances.iter_mut().enumerate() {
        instance.collector = n % 2;
        instance.view.host = format!("host-{}", ["a", "b"][n % 2]);
    }
    app.data.unreachable = vec![crate::collectors::Unreachable {
        collector: "http://host-c:6741".to_owned(),
        error: "connection refused".to_owned(),
    }];
    let screen = screen(&app, 120, 16);
    insta::assert_snapshot!(screen);
    assert!(
        screen.contains("3 collectors · unreachable: http://host-c:6741"),
        "{screen}"
    );
    let header = screen
        .lines()
        .find(|l| l.contains("SERVICE"))
        .unwrap_or_default();
    let words: Vec<&str> = header.trim_matches('"').split_whitespace().collect();
    assert_eq!(words[..3], ["SERVICE", "HOST", "STATE"], "{header}");
}

#[test]
fn mesh_filtered_and_sorted() {
    let mut app = app();
    apply(&mut app, &[Intent::StartFilter]);
    assert_eq!(app.mode(), Mode::Filtering);
    apply(
        &mut app,
        &[Intent::FilterChar('u'), Intent::FilterChar('p')],
    );
    apply(&mut app, &[Intent::FilterDone, Intent::NextSort]);
    assert_eq!(app.mode(), Mode::Normal);
    insta::assert_snapshot!(screen(&app, 80, 12));
    let rows: Vec<&str> = app
        .mesh
        .rows(&app.data)
        .iter()
        .map(|i| i.view.service.as_str())
        .collect();
    assert_eq!(
        rows,
        vec!["checkout", "gateway", "inventory"],
        "filtered on 'up', sorted by name"
    );
    // Esc clears the filter before it quits.
    assert_eq!(app.apply(Intent::Back), Flow::Continue);
    assert_eq!(app.mesh.rows(&app.data).len(), 4);
    assert_eq!(app.apply(Intent::Back), Flow::Quit);
}

#[test]
fn incidents_list() {
    let mut app = app();
    apply(&mut app, &[Intent::NextTab]);
    assert_eq!(app.tab, Tab::Incidents);
    insta::assert_snapshot!(screen(&app, 80, 24));
}

#[test]
fn runaway_loop_detail_highlights_the_hot_frame() {
    let mut app = app();
    apply(&mut app, &[Intent::ShowIncidents, Intent::Open]);
    assert!(matches!(app.details.last(), Some(Detail::Incident(d)) if d.id == "7"));
    insta::assert_snapshot!(screen(&app, 80, 24));
    let folded = screen(&app, 80, 24);
    assert!(folded.contains("… 3 frames of tokio, std"), "{folded}");
    assert!(!folded.contains("catch_unwind"), "{folded}");
    apply(&mut app, &[Intent::Fold]);
    let whole = screen(&app, 100, 30);
    assert!(
        whole.contains("std::panicking::catch_unwind  std/src/panicking.rs:544"),
        "library frames unfolded, with their paths from their crate: {whole}"
    );
    assert!(
        whole.contains("tokio-1.54.1/src/runtime/task/harness.rs:473"),
        "{whole}"
    );
    apply(&mut app, &[Intent::Fold]);
    for color in [true, false] {
        let terminal = draw(&app, 80, 24, Theme::new(color));
        let buffer = terminal.backend().buffer();
        let row = (0..24)
            .find(|y| {
                (0..80)
                    .map(|x| buffer[(x, *y)].symbol())
                    .collect::<String>()
                    .contains("▶  1 mesh_service::faults::parse_header")
            })
            .expect("the hot frame is on screen");
        let cell = &buffer[(6, row)];
        assert!(
            cell.modifier.contains(Modifier::BOLD),
            "hot frame is bold (color {color})"
        );
        if !color {
            assert!(
                cell.modifier.contains(Modifier::REVERSED),
                "without colour the hot frame is reversed"
            );
        }
    }
}

#[test]
fn memory_growth_and_socket_leak_details() {
    let cases = [
        (
            "memory_growth_detail_shows_the_chart_trend_and_sites",
            Intent::Down,
            "8",
            100,
            34,
        ),
        (
            "socket_leak_detail_reads_what_how_fast_and_how_sure",
            Intent::Bottom,
            "9",
            80,
            24,
        ),
    ];
    for (name, select, id, width, height) in cases {
        let mut app = app();
        apply(&mut app, &[Intent::ShowIncidents, select, Intent::Open]);
        assert!(matches!(app.details.last(), Some(Detail::Incident(d)) if d.id == id));
        insta::assert_snapshot!(name, screen(&app, width, height));
    }
}

#[test]
fn service_detail_with_charts_and_unknown_sections() {
    let mut app = app();
    // gateway sorts last; it has socket figures and a sockets section.
    apply(&mut app, &[Intent::Bottom, Intent::Open]);
    assert!(
        matches!(app.details.last(), Some(Detail::Service(d)) if d.instance_id.starts_with("fedcba98"))
    );
    insta::assert_snapshot!(screen(&app, 100, 30));
}

#[test]
fn service_detail_at_80x24_zoomed_and_panned() {
    let mut app = app();
    apply(
        &mut app,
        &[
            Intent::Open,
            Intent::ZoomIn,
            Intent::ZoomIn,
            Intent::PanBack,
        ],
    );
    insta::assert_snapshot!(screen(&app, 80, 24));
    // Enter opens the instance's incident; Esc walks back.
    apply(&mut app, &[Intent::Live, Intent::Open]);
    assert!(matches!(app.details.last(), Some(Detail::Incident(d)) if d.id == "7"));
    apply(&mut app, &[Intent::Back, Intent::Back]);
    assert!(app.details.is_empty());
}

#[test]
fn help_over_the_mesh() {
    let mut app = app();
    apply(&mut app, &[Intent::Help]);
    insta::assert_snapshot!(screen(&app, 80, 24));
    apply(&mut app, &[Intent::Down]);
    assert!(!app.help, "any key closes the help");
}

#[test]
fn disconnected_keeps_the_last_data_and_says_it_retries() {
    let mut app = app();
    app.on_message(Message::Failed {
        error: "Connection refused (os error 111)".to_owned(),
        retry_in: std::time::Duration::from_secs(2),
    });
    insta::assert_snapshot!(screen(&app, 80, 8));
    app.on_message(Message::Fetched(Box::new(app.data.clone())));
    assert!(screen(&app, 80, 8).contains("connected"));
}

#[test]
fn an_empty_collector_says_so() {
    let mut app = App::new("http://127.0.0.1:6741", NOW_MS);
    app.on_message(Message::Fetched(Box::default()));
    insta::assert_snapshot!(screen(&app, 80, 8));
}

#[test]
fn c_opens_tokio_console_where_the_service_serves_it_and_says_why_not_elsewhere() {
    let mut app = app();
    assert_eq!(app.apply(Intent::TokioConsole), Flow::Continue);
    assert!(
        app.notice.as_deref().unwrap().starts_with("open a service"),
        "{:?}",
        app.notice
    );
    apply(&mut app, &[Intent::Open]);
    let Some(Detail::Service(detail)) = app.details.last() else {
        panic!("a service detail is open");
    };
    let id = detail.instance_id.clone();
    assert_eq!(app.apply(Intent::TokioConsole), Flow::Continue);
    assert!(
        screen(&app, 120, 20).contains("serves no tokio-console"),
        "the footer says why"
    );
    let instance = app
        .data
        .instances
        .iter_mut()
        .find(|i| i.view.instance_id == id)
        .unwrap();
    instance.view.tokio_console = Some("127.0.0.1:6669".to_owned());
    assert!(screen(&app, 120, 30).contains("tokio-console at 127.0.0.1:6669"));
    assert_eq!(
        app.apply(Intent::TokioConsole),
        Flow::OpenConsole("127.0.0.1:6669".to_owned())
    );
    assert_eq!(app.notice, None, "a key clears the notice");
}

#[test]
fn p_profiles_the_service_shown_and_the_detail_shows_its_top_functions() {
    use super::profiling::{ProfilePanel, ProfileUpdate};
    use crate::profile::top::TopFunction;

    let mut app = app();
    assert_eq!(app.apply(Intent::Profile), Flow::Continue);
    assert!(app.notice.as_deref().unwrap().starts_with("open a service"));
    apply(&mut app, &[Intent::Open]);
    let Some(Detail::Service(detail)) = app.details.last() else {
        panic!("a service detail is open");
    };
    let (id, service) = (detail.instance_id.clone(), detail.service().to_owned());
    assert_eq!(
        app.apply(Intent::Profile),
        Flow::Profile {
            service,
            instance_id: id.clone()
        }
    );
    assert!(screen(&app, 120, 30).contains("CPU profile: sampling, 0 of 5 s"));
    assert_eq!(app.apply(Intent::Profile), Flow::Continue, "one at a time");
    assert!(
        app.notice
            .as_deref()
            .unwrap()
            .contains("being taken already")
    );

    let long = "<std::sys::pal::unix::time::Timespec as core::cmp::PartialOrd>::partial_cmp";
    app.on_profile(ProfileUpdate {
        instance_id: id.clone(),
        panel: ProfilePanel::Done {
            summary: "300 samples over 5.0s at 99 Hz".to_owned(),
            notes: vec!["some stacks could not be taken".to_owned()],
            top: vec![
                TopFunction {
                    function: "checkout::price::{{closure}}".to_owned(),
                    own: 1_200_000_000,
                    total: 3_000_000_000,
                },
                TopFunction {
                    function: long.to_owned(),
                    own: 90_000_000,
                    total: 90_000_000,
                },
            ],
            dir: "meshwatch-profile/checkout-x".into(),
        },
    });
    let shown = screen(&app, 120, 30);
    assert!(shown.contains("CPU PROFILE"), "{shown}");
    assert!(
        shown.contains("1.2s     3.0s  checkout::price::{{closure}}"),
        "{shown}"
    );
    assert!(
        shown.contains("…") && shown.contains("PartialOrd>::partial_cmp"),
        "a long name keeps its end on one line: {shown}"
    );
    assert!(shown.contains("some stacks could not be taken"), "{shown}");
    assert!(shown.contains("meshwatch-profile/checkout-x"), "{shown}");
    // Another instance's detail does not show it.
    apply(&mut app, &[Intent::Back, Intent::Down, Intent::Open]);
    assert!(!screen(&app, 120, 30).contains("CPU PROFILE"));
}
