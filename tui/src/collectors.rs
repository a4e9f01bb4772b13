//! One mesh over several collectors: `--collector URL` given more than
//! once, or the config file's `collectors`. Each host runs its own
//! collector; the CLI asks them all at once, merges their answers into one
//! mesh, and names each collector it could not reach while showing what the
//! others said.

use anyhow::bail;
use meshwatch_api::{Incident, InstanceSeries, ServicesView};
use serde_json::Value;

use crate::client::{ApiClient, Range};
use crate::model::Instance;

/// The collectors of one mesh.
#[derive(Debug, Clone)]
pub struct Collectors {
    members: Vec<ApiClient>,
}

/// A collector that did not answer, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    /// Its base URL.
    pub collector: String,
    /// What went wrong, in one line.
    pub error: String,
}

/// The collectors' answers merged, with those that gave none.
#[derive(Debug, Clone)]
pub struct Merged<T> {
    /// What the reachable collectors said, together.
    pub value: T,
    /// The collectors that did not answer.
    pub unreachable: Vec<Unreachable>,
}

impl Collectors {
    /// The mesh of `members`, in the order given.
    ///
    /// # Panics
    ///
    /// Never with at least one member, which the CLI always has (it falls
    /// back to the default collector).
    pub fn new(members: Vec<ApiClient>) -> Self {
        assert!(!members.is_empty(), "a mesh has at least one collector");
        Self { members }
    }

    /// How many collectors the mesh has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// The only collector, for the commands that talk to one; an error
    /// that says so when several were given.
    pub fn single(&self, command: &str) -> anyhow::Result<&ApiClient> {
        match self.members.as_slice() {
            [one] => Ok(one),
            many => bail!(
                "{command} talks to one collector; {} were given ({}): pick the host's with --collector",
                many.len(),
                many.iter()
                    .map(ApiClient::base)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Asks every collector at once with `ask`, and returns each answer
    /// with its collector's place in the list, in order, and the
    /// collectors that failed.
    fn ask<T: Send>(
        &self,
        ask: impl Fn(&ApiClient) -> anyhow::Result<T> + Sync,
    ) -> (Vec<(usize, T)>, Vec<Unreachable>) {
        let answers: Vec<anyhow::Result<T>> = std::thread::scope(|scope| {
            let asking: Vec<_> = self
                .members
                .iter()
                .map(|client| scope.spawn(|| ask(client)))
                .collect();
            asking
                .into_iter()
                .map(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("the request panicked")))
                })
                .collect()
        });
        let mut answered = Vec::new();
        let mut unreachable = Vec::new();
        for (index, (client, answer)) in self.members.iter().zip(answers).enumerate() {
            match answer {
                Ok(value) => answered.push((index, value)),
                Err(err) => unreachable.push(Unreachable {
                    collector: client.base().to_owned(),
                    error: format!("{err:#}"),
                }),
            }
        }
        (answered, unreachable)
    }

    /// The collector at `index` (as given), for a request about one of
    /// its instances; the first when there is no such place.
    pub fn member(&self, index: usize) -> &ApiClient {
        // `new` makes sure there is at least one member.
        &self.members[index.min(self.members.len() - 1)]
    }

    /// The collector an incident id points to, and the id it knows the
    /// incident by: with several collectors, ids read `N:ID` (see
    /// [`incidents`](Self::incidents)).
    ///
    /// # Errors
    ///
    /// When several collectors are given and `id` does not name one.
    pub fn for_incident(&self, id: &str) -> anyhow::Result<(&ApiClient, String)> {
        if let [one] = self.members.as_slice() {
            return Ok((one, id.to_owned()));
        }
        let place = id
            .split_once(':')
            .and_then(|(place, id)| Some((place.parse::<usize>().ok()?, id)))
            .filter(|(place, id)| (1..=self.members.len()).contains(place) && !id.is_empty());
        match place {
            Some((place, id)) => Ok((self.member(place - 1), id.to_owned())),
            None => bail!(
                "with {} collectors an incident is named N:ID, N the collector's place in the list (1 to {}), as the TUI and its incident list show it; {id:?} is not",
                self.members.len(),
                self.members.len()
            ),
        }
    }

    /// How the mesh is named on screen: the collector's URL, or how many.
    pub fn label(&self) -> String {
        match self.members.as_slice() {
            [one] => one.base().to_owned(),
            many => format!("{} collectors", many.len()),
        }
    }

    /// Every instance of every collector, sorted by service then host,
    /// each knowing which collector it came from.
    ///
    /// # Errors
    ///
    /// When no collector answered.
    pub fn instances(&self) -> anyhow::Result<Merged<Vec<Instance>>> {
        let (answered, unreachable) = self.ask(ApiClient::instances);
        none_answered(answered.is_empty(), &unreachable)?;
        let several = self.members.len() > 1;
        let mut instances: Vec<Instance> = answered
            .into_iter()
            .flat_map(|(index, list)| {
                list.into_iter().map(move |mut instance| {
                    instance.collector = index;
                    if several {
                        for incident in &mut instance.view.open_incidents {
                            incident.id = mesh_id(index, &incident.id);
                        }
                    }
                    instance
                })
            })
            .collect();
        instances
            .sort_by(|a, b| (&a.view.service, &a.view.host).cmp(&(&b.view.service, &b.view.host)));
        Ok(Merged {
            value: instances,
            unreachable,
        })
    }

    /// Every collector's incidents, oldest first. With several collectors
    /// an incident's id becomes `N:ID`, N the collector's place (from 1) in
    /// the list, since each collector counts its own ids from 1.
    ///
    /// # Errors
    ///
    /// When no collector answered.
    pub fn incidents(&self) -> anyhow::Result<Merged<Vec<Incident>>> {
        let (answered, unreachable) = self.ask(ApiClient::incidents);
        none_answered(answered.is_empty(), &unreachable)?;
        let several = self.members.len() > 1;
        let mut incidents: Vec<Incident> = answered
            .into_iter()
            .flat_map(|(index, list)| {
                list.into_iter().map(move |mut incident| {
                    if several {
                        incident.id = mesh_id(index, &incident.id);
                    }
                    incident
                })
            })
            .collect();
        incidents.sort_by_key(|i| i.opened_at_ms);
        Ok(Merged {
            value: incidents,
            unreachable,
        })
    }

    /// `metric` of every instance of `service` over `range`, from every
    /// collector that answers; `None` when none knows the service or the
    /// metric.
    pub fn series(&self, service: &str, metric: &str, range: Range) -> Option<Vec<InstanceSeries>> {
        let (answered, _) = self.ask(|client| client.series(service, metric, range));
        let found: Vec<Vec<InstanceSeries>> = answered
            .into_iter()
            .filter_map(|(_, series)| series)
            .collect();
        (!found.is_empty()).then(|| found.into_iter().flatten().collect())
    }

    /// Every instance of every collector, sorted by service then host.
    ///
    /// # Errors
    ///
    /// When no collector answered: the mesh is unknown.
    pub fn services(&self) -> anyhow::Result<Merged<ServicesView>> {
        let (answered, unreachable) = self.ask(ApiClient::services);
        none_answered(answered.is_empty(), &unreachable)?;
        let mut services: Vec<_> = answered
            .into_iter()
            .flat_map(|(_, view)| view.services)
            .collect();
        services.sort_by(|a, b| (&a.service, &a.host).cmp(&(&b.service, &b.host)));
        Ok(Merged {
            value: ServicesView { services },
            unreachable,
        })
    }

    /// `/api/v1/services` of every collector as one JSON document: the
    /// instances together, each with the `collector` it came from, and the
    /// collectors that did not answer under `unreachable`.
    ///
    /// # Errors
    ///
    /// When no collector answered.
    pub fn services_json(&self) -> anyhow::Result<Value> {
        let (answered, unreachable) = self.ask(|client| client.raw("/api/v1/services"));
        none_answered(answered.is_empty(), &unreachable)?;
        let mut services = Vec::new();
        for (index, mut raw) in answered {
            let collector = self.member(index).base();
            if let Some(Value::Array(list)) = raw.get_mut("services").map(Value::take) {
                services.extend(list.into_iter().map(|mut instance| {
                    if let Value::Object(fields) = &mut instance {
                        fields.insert("collector".to_owned(), Value::from(collector));
                    }
                    instance
                }));
            }
        }
        let unreachable: Vec<Value> = unreachable
            .into_iter()
            .map(|u| serde_json::json!({"collector": u.collector, "error": u.error}))
            .collect();
        Ok(serde_json::json!({ "services": services, "unreachable": unreachable }))
    }
}

/// An incident's id in a mesh of several collectors: `N:ID`, N the place
/// (from 1) of the collector at `index`.
fn mesh_id(index: usize, id: &str) -> String {
    format!("{}:{id}", index + 1)
}

/// The error when no collector answered, naming each and why.
fn none_answered(none: bool, unreachable: &[Unreachable]) -> anyhow::Result<()> {
    if none {
        let why: Vec<String> = unreachable
            .iter()
            .map(|u| format!("{}: {}", u.collector, u.error))
            .collect();
        bail!("no collector answered: {}", why.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(urls: &[&str]) -> Collectors {
        Collectors::new(urls.iter().map(|u| ApiClient::new(u)).collect())
    }

    #[test]
    fn an_incident_id_names_its_collector_when_there_are_several() {
        let one = mesh(&["http://a:6741"]);
        let (client, id) = one.for_incident("17").unwrap();
        assert_eq!((client.base(), id.as_str()), ("http://a:6741", "17"));

        let three = mesh(&["http://a:6741", "http://b:6741", "http://c:6741"]);
        let (client, id) = three.for_incident("2:17").unwrap();
        assert_eq!((client.base(), id.as_str()), ("http://b:6741", "17"));
        for bad in ["17", "0:17", "4:17", "2:", "x:1"] {
            let err = format!("{:#}", three.for_incident(bad).unwrap_err());
            assert!(err.contains("N:ID"), "{bad}: {err}");
        }
    }

    #[test]
    fn one_collector_away_leaves_the_others_answers_and_none_is_an_error() {
        // Port 9 (discard) refuses on loopback: nothing listens there.
        let away = mesh(&["http://127.0.0.1:9", "http://127.0.0.1:9/"]);
        let err = format!("{:#}", away.services().unwrap_err());
        assert!(err.starts_with("no collector answered"), "{err}");
        assert!(err.contains("http://127.0.0.1:9"), "{err}");
        assert_eq!(away.label(), "2 collectors");
    }
}
