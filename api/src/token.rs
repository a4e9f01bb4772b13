//! The shared token: where the collector and its clients find it.
//!
//! Probes, the collector and the `meshwatch` CLI read the same secret the
//! same way: from a file named on the command line, else from the
//! `MESHWATCH_TOKEN` environment variable. One function, so the two ends
//! cannot disagree on whitespace or on which source wins.

use std::path::{Path, PathBuf};

/// The environment variable holding the token when no file is given.
pub const TOKEN_ENV: &str = "MESHWATCH_TOKEN";

/// Why a token file gave no token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read.
    #[error("cannot read the token file {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file holds only whitespace.
    #[error("the token file {0} is empty; put the shared token in it, or drop --token-file")]
    Empty(PathBuf),
}

/// The token: the contents of `file` when given (surrounding whitespace
/// ignored), else `MESHWATCH_TOKEN` when set and not blank, else none.
///
/// # Errors
///
/// When `file` is given but cannot be read or is empty: a token asked for
/// and not found is a mistake to report, not a reason to run without one.
pub fn read_token(file: Option<&Path>) -> Result<Option<String>, TokenError> {
    if let Some(path) = file {
        let contents = std::fs::read_to_string(path).map_err(|source| TokenError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        let token = contents.trim();
        if token.is_empty() {
            return Err(TokenError::Empty(path.to_owned()));
        }
        return Ok(Some(token.to_owned()));
    }
    Ok(std::env::var(TOKEN_ENV)
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_trimmed_and_an_empty_or_missing_one_is_an_error() {
        let dir = std::env::temp_dir().join(format!("meshwatch-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "  s3cret\n").unwrap();
        assert_eq!(read_token(Some(&file)).unwrap().as_deref(), Some("s3cret"));
        std::fs::write(&file, " \n").unwrap();
        assert!(matches!(read_token(Some(&file)), Err(TokenError::Empty(_))));
        let missing = dir.join("missing");
        assert!(matches!(
            read_token(Some(&missing)),
            Err(TokenError::Unreadable { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
