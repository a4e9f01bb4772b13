//! The interactive TUI.
//!
//! Four parts kept apart, as in tokio-console:
//! - **input** ([`input`]): keys become [`input::Intent`]s;
//! - **connection** ([`fetch`], [`conn`]): a thread fetches what the screens
//!   want and reports each round; [`conn::Connection`] says whether the
//!   collector answers;
//! - **state** ([`app`]): each screen's own state, changed by intents;
//! - **views** ([`view`] and the screens): drawing is a pure function of
//!   the state, so every screen is snapshot-tested on fixed data.
//!
//! The loop below is the only code that touches the terminal. ratatui's
//! `init` installs a panic hook that restores the terminal before the
//! panic message is printed; logs go to a file, never to the screen.

mod app;
mod conn;
mod console;
mod cursor;
mod fetch;
mod incident;
mod incidents;
mod input;
mod mesh;
mod profiling;
mod service;
mod theme;
mod view;
mod widgets;
mod window;

#[cfg(test)]
mod recorded_tests;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use anyhow::Context;
use ratatui::crossterm::event::{self, Event};

use crate::client::ApiClient;
use crate::collectors::Collectors;

/// How often the collector is asked for news.
const REFRESH: Duration = Duration::from_secs(1);
/// How long the loop waits for a key before redrawing.
const TICK: Duration = Duration::from_millis(100);

pub(crate) use meshwatch_api::now_ms;

/// Runs the TUI over `collectors` until the person quits or `deadline`
/// passes.
///
/// # Errors
///
/// When the terminal cannot be set up or written to.
pub fn run(collectors: Collectors, deadline: Option<Instant>) -> anyhow::Result<()> {
    let theme = theme::Theme::from_env();
    let mut app = app::App::new(&collectors.label(), now_ms());
    let fetcher = fetch::Fetcher::spawn(collectors.clone(), REFRESH)
        .context("cannot start the fetcher thread")?;
    let mut terminal =
        ratatui::try_init().context("cannot set up the terminal (is this a TTY?)")?;
    let result = event_loop(
        &mut terminal,
        &mut app,
        &fetcher,
        &collectors,
        theme,
        deadline,
    );
    ratatui::restore();
    result
}

fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut app::App,
    fetcher: &fetch::Fetcher,
    collectors: &Collectors,
    theme: theme::Theme,
    deadline: Option<Instant>,
) -> anyhow::Result<()> {
    let mut wanted = Vec::new();
    let mut profiling: Option<profiling::ProfileRun> = None;
    loop {
        app.now_ms = now_ms();
        while let Some(message) = fetcher.try_recv() {
            app.on_message(message);
        }
        while let Some(update) = profiling.as_ref().and_then(profiling::ProfileRun::try_recv) {
            app.on_profile(update);
        }
        let wants = app.wants();
        if wants != wanted {
            fetcher.want(wants.clone());
            wanted = wants;
        }
        terminal
            .draw(|frame| view::render(frame, app, theme))
            .context("cannot draw")?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
        if !event::poll(TICK).context("cannot read the terminal")? {
            continue;
        }
        if let Event::Key(key) = event::read().context("cannot read the terminal")?
            && let Some(intent) = input::intent(key, app.mode())
        {
            match app.apply(intent) {
                app::Flow::Continue => {}
                app::Flow::Quit => return Ok(()),
                app::Flow::OpenConsole(address) => {
                    ratatui::restore();
                    app.notice = console::run(&address).err();
                    *terminal = ratatui::try_init().context("cannot set the terminal up again")?;
                }
                app::Flow::Profile {
                    service,
                    instance_id,
                } => match profiling::ProfileRun::start(
                    owner(collectors, app, &instance_id).clone(),
                    &service,
                    &instance_id,
                ) {
                    Ok(run) => profiling = Some(run),
                    Err(err) => app.on_profile(profiling::ProfileUpdate {
                        instance_id,
                        panel: profiling::ProfilePanel::Failed(format!(
                            "cannot start the profiling thread: {err}"
                        )),
                    }),
                },
            }
        }
    }
}

/// The collector that reported `instance_id`, where its profile is asked.
fn owner<'a>(collectors: &'a Collectors, app: &app::App, instance_id: &str) -> &'a ApiClient {
    collectors.member(app.data.instance(instance_id).map_or(0, |i| i.collector))
}
