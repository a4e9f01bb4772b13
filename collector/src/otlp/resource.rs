//! Who sent an OTLP export: the service and instance, from the resource's
//! attributes as the OpenTelemetry semantic conventions name them.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// The longest service name or instance id taken from an export: the same
/// bound a probe's Hello is held to.
const MAX_NAME: usize = 128;

/// The instance an export comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    /// `service.name`.
    pub service: String,
    /// `service.instance.id`, else `host.name` and `process.pid` joined.
    pub instance_id: String,
    /// `process.pid`; 0 when not given.
    pub pid: u32,
    /// `host.name`; empty when not given.
    pub host: String,
    /// `node`, `python`, or the runtime's own name.
    pub runtime: String,
    /// The SDK that sent it (`telemetry.sdk.name` and `.version`).
    pub sdk: String,
}

/// Why an export's resource cannot name an instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SourceError {
    /// No `service.name`.
    #[error(
        "the resource has no service.name: set OTEL_SERVICE_NAME (or the SDK's resource) to the service's name"
    )]
    NoService,
    /// Neither `service.instance.id` nor `process.pid` with `host.name`.
    #[error(
        "the resource of service {0:?} names no instance: give service.instance.id, or process.pid and host.name (the SDK's process and host resource detectors add them)"
    )]
    NoInstance(String),
    /// A name or id longer than [`MAX_NAME`], or with control characters.
    #[error("the resource's {0} is not a name meshwatch keeps: at most 128 printable characters")]
    BadName(&'static str),
}

impl Source {
    /// Reads the instance from `resource`'s attributes.
    pub fn from_resource(resource: Option<&Resource>) -> Result<Self, SourceError> {
        let attributes = resource.map_or(&[][..], |r| &r.attributes[..]);
        let text = |key: &str| attribute(attributes, key).and_then(as_text);
        let service = text("service.name")
            .filter(|s| !s.is_empty())
            .ok_or(SourceError::NoService)?;
        checked(&service, "service.name")?;
        let pid = attribute(attributes, "process.pid")
            .and_then(as_int)
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0);
        let host = text("host.name").unwrap_or_default();
        let instance_id = match text("service.instance.id").filter(|s| !s.is_empty()) {
            Some(id) => id,
            None if pid != 0 && !host.is_empty() => format!("{host}:{pid}"),
            None => return Err(SourceError::NoInstance(service)),
        };
        checked(&instance_id, "service.instance.id")?;
        checked(&host, "host.name")?;
        let runtime = runtime(
            text("process.runtime.name").as_deref(),
            text("telemetry.sdk.language").as_deref(),
        );
        let sdk = [text("telemetry.sdk.name"), text("telemetry.sdk.version")]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Self {
            service,
            instance_id,
            pid,
            host,
            runtime,
            sdk,
        })
    }
}

/// meshwatch's name for the runtime: `node` and `python` as a watched
/// process's are named, else what the resource says.
fn runtime(runtime_name: Option<&str>, sdk_language: Option<&str>) -> String {
    let name = runtime_name
        .or(sdk_language)
        .unwrap_or("")
        .to_ascii_lowercase();
    match name.as_str() {
        "nodejs" | "node" | "node.js" => "node".to_owned(),
        "cpython" | "pypy" | "python" => "python".to_owned(),
        _ => name,
    }
}

/// Refuses names a person could not read in a table: too long, or with
/// control characters.
fn checked(name: &str, what: &'static str) -> Result<(), SourceError> {
    if name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(SourceError::BadName(what));
    }
    Ok(())
}

/// The value of attribute `key`, if present.
pub(super) fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

/// A string attribute, or an integer one written out.
pub(super) fn as_text(value: &any_value::Value) -> Option<String> {
    match value {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

/// An integer attribute, or a string one that holds an integer (some SDKs
/// send the pid as a string).
fn as_int(value: &any_value::Value) -> Option<i64> {
    match value {
        any_value::Value::IntValue(i) => Some(*i),
        any_value::Value::StringValue(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// One attribute.
    fn attribute(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(value) }),
            ..KeyValue::default()
        }
    }

    /// Attributes with these string values.
    pub(crate) fn string_attributes(pairs: &[(&str, &str)]) -> Vec<KeyValue> {
        pairs
            .iter()
            .map(|(k, v)| attribute(k, any_value::Value::StringValue((*v).to_owned())))
            .collect()
    }

    /// A resource with these string attributes, and `process.pid` when given.
    pub(crate) fn resource(attributes: &[(&str, &str)], pid: Option<i64>) -> Resource {
        let mut attributes = string_attributes(attributes);
        if let Some(pid) = pid {
            attributes.push(attribute("process.pid", any_value::Value::IntValue(pid)));
        }
        Resource {
            attributes,
            ..Resource::default()
        }
    }

    #[test]
    fn names_the_instance_by_its_id_else_by_host_and_pid() {
        let with_id = resource(
            &[
                ("service.name", "proxy"),
                ("service.instance.id", "abc"),
                ("process.runtime.name", "nodejs"),
            ],
            Some(42),
        );
        let source = Source::from_resource(Some(&with_id)).unwrap();
        assert_eq!(source.instance_id, "abc");
        assert_eq!(source.runtime, "node");
        assert_eq!(source.pid, 42);
        let by_pid = resource(
            &[
                ("service.name", "billing"),
                ("host.name", "h1"),
                ("telemetry.sdk.language", "python"),
            ],
            Some(7),
        );
        let source = Source::from_resource(Some(&by_pid)).unwrap();
        assert_eq!(source.instance_id, "h1:7");
        assert_eq!(source.runtime, "python");
    }

    #[test]
    fn says_what_is_missing() {
        assert_eq!(
            Source::from_resource(None).unwrap_err(),
            SourceError::NoService
        );
        let anonymous = resource(&[("service.name", "proxy")], None);
        let error = Source::from_resource(Some(&anonymous)).unwrap_err();
        assert!(error.to_string().contains("service.instance.id"), "{error}");
        let long = "x".repeat(200);
        let too_long = resource(&[("service.name", &long)], Some(1));
        assert_eq!(
            Source::from_resource(Some(&too_long)).unwrap_err(),
            SourceError::BadName("service.name")
        );
    }
}
