//! A CPU profile taken from the instance view (`p`): a thread asks the
//! collector for it, reports how far it got, writes the files, and the
//! view shows the top functions when it is in.
//!
//! The UI loop never waits on it: it polls [`ProfileRun::try_recv`] each
//! tick, as it does the fetcher.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver};

use crate::client::ApiClient;
use crate::profile::take_cpu_profile;
use crate::profile::top::TopFunction;

/// How long the TUI samples: short enough to wait for during an incident.
pub const SECONDS: u64 = 5;
/// pprof's usual rate.
pub const HZ: u32 = 99;
/// Functions shown.
const TOP: usize = 8;

/// What the instance view shows of its profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfilePanel {
    /// The probe samples; `waited` seconds so far.
    Sampling { waited: u64 },
    /// In, and written to `dir`.
    Done {
        summary: String,
        /// What makes it partial, if anything.
        notes: Vec<String>,
        top: Vec<TopFunction>,
        dir: PathBuf,
    },
    /// No profile, and why.
    Failed(String),
}

/// A report of the profiling thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileUpdate {
    /// The instance profiled.
    pub instance_id: String,
    pub panel: ProfilePanel,
}

/// A profile being taken.
#[derive(Debug)]
pub struct ProfileRun {
    updates: Receiver<ProfileUpdate>,
}

impl ProfileRun {
    /// Starts profiling `instance_id` of `service`, writing the files into
    /// `meshwatch-profile/SERVICE-ID-TIME/` under the working directory.
    ///
    /// # Errors
    ///
    /// When the thread cannot be started.
    pub fn start(client: ApiClient, service: &str, instance_id: &str) -> std::io::Result<Self> {
        let (tx, updates) = mpsc::channel();
        let utc = crate::format::utc(meshwatch_api::now_ms());
        let stamp = utc
            .trim_end_matches(" UTC")
            .replace(' ', "T")
            .replace([':', '-'], "");
        let dir = PathBuf::from("meshwatch-profile").join(format!(
            "{service}-{}-{stamp}Z",
            instance_id.get(..8).unwrap_or(instance_id),
        ));
        let instance_id = instance_id.to_owned();
        std::thread::Builder::new()
            .name("meshwatch-profile".to_owned())
            .spawn(move || {
                let send = |panel| {
                    let _ = tx.send(ProfileUpdate {
                        instance_id: instance_id.clone(),
                        panel,
                    });
                };
                let taken = take_cpu_profile(&client, &instance_id, SECONDS, HZ, |waited| {
                    send(ProfilePanel::Sampling { waited });
                })
                .and_then(|profile| {
                    profile.write(&dir)?;
                    Ok(profile)
                });
                send(match taken {
                    Ok(profile) => ProfilePanel::Done {
                        summary: profile.headline(),
                        notes: profile.notes(),
                        top: profile.top(TOP),
                        dir,
                    },
                    Err(err) => ProfilePanel::Failed(format!("{err:#}")),
                });
            })?;
        Ok(Self { updates })
    }

    /// The next report, if one came.
    pub fn try_recv(&self) -> Option<ProfileUpdate> {
        self.updates.try_recv().ok()
    }
}
