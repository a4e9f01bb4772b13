//! The TUI's state and how intents change it. Each screen keeps its own
//! state and handles its own intents; this module only routes them and
//! keeps the navigation (which tab, which details are open).

use super::conn::Connection;
use super::fetch::{Data, Message, SeriesReq};
use super::incident::IncidentDetail;
use super::incidents::IncidentList;
use super::input::{Intent, Mode};
use super::mesh::MeshTable;
use super::profiling::{ProfilePanel, ProfileUpdate};
use super::service::ServiceDetail;

/// The top-level screens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tab {
    /// One row per instance.
    #[default]
    Mesh,
    /// Open and recent incidents.
    Incidents,
}

/// A detail opened over a tab; Esc closes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    /// An instance in depth.
    Service(ServiceDetail),
    /// An incident and its evidence.
    Incident(IncidentDetail),
}

/// Whether the loop goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    /// Keep running.
    Continue,
    /// Restore the terminal and leave.
    Quit,
    /// Hand the terminal to tokio-console on this address, then come back.
    OpenConsole(String),
    /// Take a CPU profile of this instance of this service.
    Profile {
        service: String,
        instance_id: String,
    },
}

/// Everything the screen shows.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    /// The collector's URL.
    pub collector: String,
    /// Whether the collector answers.
    pub conn: Connection,
    /// The latest data.
    pub data: Data,
    /// The clock the views use (ms since the Unix epoch).
    pub now_ms: i64,
    /// The tab shown when no detail is open.
    pub tab: Tab,
    /// The mesh table's state.
    pub mesh: MeshTable,
    /// The incident list's state.
    pub incidents: IncidentList,
    /// Open details, innermost last.
    pub details: Vec<Detail>,
    /// Whether the help is shown over the rest.
    pub help: bool,
    /// A sentence for the person, shown in the footer until the next key.
    pub notice: Option<String>,
    /// The latest CPU profile taken from the instance view, or being taken.
    pub profile: Option<ProfileUpdate>,
}

impl App {
    /// A fresh screen for the collector at `collector`.
    pub fn new(collector: &str, now_ms: i64) -> Self {
        Self {
            collector: collector.to_owned(),
            conn: Connection::Connecting,
            data: Data::default(),
            now_ms,
            tab: Tab::Mesh,
            mesh: MeshTable::default(),
            incidents: IncidentList::default(),
            details: Vec::new(),
            help: false,
            notice: None,
            profile: None,
        }
    }

    /// How keys are read now.
    pub fn mode(&self) -> Mode {
        if self.details.is_empty() && self.tab == Tab::Mesh && self.mesh.filtering && !self.help {
            Mode::Filtering
        } else {
            Mode::Normal
        }
    }

    /// Takes in a report of the fetcher.
    pub fn on_message(&mut self, message: Message) {
        match message {
            Message::Fetched(data) => {
                self.conn.succeeded();
                self.data = *data;
            }
            Message::Failed { error, retry_in } => self.conn.failed(error, retry_in, self.now_ms),
        }
    }

    /// Applies an intent.
    pub fn apply(&mut self, intent: Intent) -> Flow {
        self.notice = None;
        if self.help {
            if intent == Intent::Quit {
                return Flow::Quit;
            }
            self.help = false;
            return Flow::Continue;
        }
        match intent {
            Intent::Quit => return Flow::Quit,
            Intent::Help => self.help = true,
            Intent::TokioConsole => return self.tokio_console(),
            Intent::Profile => return self.start_profile(),
            Intent::Back if self.details.pop().is_some() => {}
            Intent::Back if self.tab == Tab::Mesh && self.mesh.has_filter() => {
                self.mesh.clear_filter()
            }
            Intent::Back => return Flow::Quit,
            Intent::ShowMesh => self.show(Tab::Mesh),
            Intent::ShowIncidents => self.show(Tab::Incidents),
            Intent::NextTab => self.show(match self.tab {
                Tab::Mesh => Tab::Incidents,
                Tab::Incidents => Tab::Mesh,
            }),
            other => self.route(other),
        }
        Flow::Continue
    }

    /// tokio-console for the service detail in front, or a notice saying
    /// why not.
    fn tokio_console(&mut self) -> Flow {
        let instance = match self.details.last() {
            Some(Detail::Service(detail)) => self.data.instance(&detail.instance_id),
            _ => {
                self.notice =
                    Some("open a service (⏎ on the mesh) to attach tokio-console to it".to_owned());
                return Flow::Continue;
            }
        };
        match instance.and_then(|i| i.view.tokio_console.clone()) {
            Some(address) => Flow::OpenConsole(address),
            None => {
                self.notice = Some(
                    "this instance serves no tokio-console: its service would run console-subscriber (TOKIO_CONSOLE_BIND, default 127.0.0.1:6669)"
                        .to_owned(),
                );
                Flow::Continue
            }
        }
    }

    /// A CPU profile of the service detail in front, or a notice saying
    /// why not.
    fn start_profile(&mut self) -> Flow {
        let Some(Detail::Service(detail)) = self.details.last() else {
            self.notice = Some("open a service (⏎ on the mesh) to profile it".to_owned());
            return Flow::Continue;
        };
        if matches!(&self.profile, Some(p) if matches!(p.panel, ProfilePanel::Sampling { .. })) {
            self.notice =
                Some("a profile is being taken already; it shows here when it is in".to_owned());
            return Flow::Continue;
        }
        self.profile = Some(ProfileUpdate {
            instance_id: detail.instance_id.clone(),
            panel: ProfilePanel::Sampling { waited: 0 },
        });
        Flow::Profile {
            service: detail.service().to_owned(),
            instance_id: detail.instance_id.clone(),
        }
    }

    /// Takes in a report of the profiling thread.
    pub fn on_profile(&mut self, update: ProfileUpdate) {
        self.profile = Some(update);
    }

    /// The profile to show with `instance_id`'s detail, if it has one.
    pub fn profile_of(&self, instance_id: &str) -> Option<&ProfilePanel> {
        self.profile
            .as_ref()
            .filter(|p| p.instance_id == instance_id)
            .map(|p| &p.panel)
    }

    fn show(&mut self, tab: Tab) {
        self.details.clear();
        self.tab = tab;
    }

    /// Hands an intent to the screen in front, and opens what it asks for.
    fn route(&mut self, intent: Intent) {
        let (data, now_ms) = (&self.data, self.now_ms);
        let opened = match (self.details.last_mut(), self.tab) {
            (Some(Detail::Service(detail)), _) => detail
                .handle(intent, data, now_ms)
                .and_then(|id| data.incident(&id))
                .map(|i| Detail::Incident(IncidentDetail::new(i, now_ms))),
            (Some(Detail::Incident(detail)), _) => {
                detail.handle(intent, now_ms);
                None
            }
            (None, Tab::Mesh) => self
                .mesh
                .handle(intent, data)
                .and_then(|id| data.instance(&id))
                .map(|i| Detail::Service(ServiceDetail::new(i))),
            (None, Tab::Incidents) => self
                .incidents
                .handle(intent, data)
                .and_then(|id| data.incident(&id))
                .map(|i| Detail::Incident(IncidentDetail::new(i, now_ms))),
        };
        self.details.extend(opened);
    }

    /// The series the screens in view need.
    pub fn wants(&self) -> Vec<SeriesReq> {
        let mut wants = MeshTable::wants(&self.data);
        match self.details.last() {
            Some(Detail::Service(detail)) => wants.extend(detail.wants()),
            Some(Detail::Incident(detail)) => wants.extend(detail.wants(&self.data)),
            None => {}
        }
        wants
    }

    /// The keys of the screen in front, for the footer.
    pub fn keys(&self) -> &'static [(&'static str, &'static str)] {
        match (self.details.last(), self.tab) {
            _ if self.help => &[("any key", "close the help")],
            (Some(Detail::Service(d)), _) => d.keys(),
            (Some(Detail::Incident(d)), _) => d.keys(),
            (None, Tab::Mesh) => self.mesh.keys(),
            (None, Tab::Incidents) => self.incidents.keys(),
        }
    }
}
