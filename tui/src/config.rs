//! The CLI's config file, `~/.config/meshwatch/config.toml`: the collectors
//! of the mesh (one per host) and how to reach them, so that a team's
//! `meshwatch` opens on the whole mesh without a flag.
//!
//! ```toml
//! collectors = ["https://host-a:6741", "https://host-b:6741"]
//! token_file = "/etc/meshwatch/token"
//! tls_ca = "/etc/meshwatch/ca.pem"
//! ```
//!
//! Flags and their environment variables win over the file; the file over
//! the defaults. `MESHWATCH_CONFIG` names another file.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// What the file may set; every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The collectors' HTTP APIs.
    #[serde(default)]
    pub collectors: Vec<String>,
    /// The file holding the collectors' token.
    pub token_file: Option<PathBuf>,
    /// The CA that issued the collectors' certificates.
    pub tls_ca: Option<PathBuf>,
}

/// Where the file is: `MESHWATCH_CONFIG`, else `$XDG_CONFIG_HOME` or
/// `~/.config`, under `meshwatch/config.toml`.
pub fn path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MESHWATCH_CONFIG") {
        return Some(PathBuf::from(path));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".config")))?;
    Some(base.join("meshwatch").join("config.toml"))
}

/// Reads the file; no file is an empty config.
///
/// # Errors
///
/// When the file exists but cannot be read or is not valid (an unknown
/// key, a wrong type): the message names the file and the line.
pub fn load() -> anyhow::Result<FileConfig> {
    let Some(path) = path() else {
        return Ok(FileConfig::default());
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text).with_context(|| format!("in {}", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn parse(text: &str) -> anyhow::Result<FileConfig> {
    Ok(toml::from_str(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_collectors_token_and_ca() {
        let config = parse(
            "collectors = [\"http://a:6741\", \"https://b:6741\"]\ntoken_file = \"/t\"\ntls_ca = \"/ca.pem\"\n",
        )
        .unwrap();
        assert_eq!(config.collectors, ["http://a:6741", "https://b:6741"]);
        assert_eq!(config.token_file.as_deref(), Some(Path::new("/t")));
        assert_eq!(config.tls_ca.as_deref(), Some(Path::new("/ca.pem")));
        assert_eq!(parse("").unwrap(), FileConfig::default());
    }

    #[test]
    fn an_unknown_key_or_a_wrong_type_is_an_error_that_says_where() {
        let err = format!(
            "{:#}",
            parse("collector = \"http://a:6741\"\n").unwrap_err()
        );
        assert!(err.contains("collector"), "{err}");
        let err = format!(
            "{:#}",
            parse("collectors = \"http://a:6741\"\n").unwrap_err()
        );
        assert!(err.contains("line 1"), "{err}");
    }
}
