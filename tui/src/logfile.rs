//! The TUI's log file, opened so that another local user cannot aim it
//! elsewhere.
//!
//! A fixed name in the shared temporary directory, opened to create or
//! append, lets anyone who creates that name first (as a symlink to a file
//! of yours, or a file of theirs) decide where your log goes. So the default
//! is in your own state directory, the file is never followed through a
//! symlink, is created readable by you alone, and must be yours.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// `$XDG_STATE_HOME/meshwatch/tui.log`, else `~/.local/state/meshwatch/tui.log`,
/// else a directory of this user's own in the temporary directory.
pub fn default_path() -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".local/state")));
    match state {
        Some(dir) => dir.join("meshwatch").join("tui.log"),
        None => std::env::temp_dir()
            .join(format!("meshwatch-{}", effective_uid()))
            .join("tui.log"),
    }
}

/// Opens `path` to append, creating it (mode 0600) and its directory
/// (mode 0700) when missing.
///
/// # Errors
///
/// When the directory or the file cannot be created or opened, when the
/// file is a symlink, or when it belongs to another user.
pub fn open(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let owner = file.metadata()?.uid();
    if owner != effective_uid() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} belongs to another user (uid {owner})", path.display()),
        ));
    }
    Ok(file)
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_the_file_for_this_user_alone_in_a_private_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/meshwatch/tui.log");
        open(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        // Opened again, it appends.
        std::io::Write::write_all(&mut open(&path).unwrap(), b"x").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
    }

    #[test]
    fn never_follows_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("someone-elses-file");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.path().join("tui.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(open(&link).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }
}
