//! The collector's data directory, and the lock that makes it its own.
//!
//! Two collectors writing one history would corrupt it, so the first takes
//! an exclusive lock on `collector.lock` inside the directory and holds it
//! until it stops; the operating system drops the lock if the process dies,
//! so a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::StartError;

/// The lock file's name inside the data directory.
const LOCK_FILE: &str = "collector.lock";

/// An exclusively locked data directory, unlocked on drop.
#[derive(Debug)]
pub(crate) struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Creates `dir` when missing and locks it.
    ///
    /// # Errors
    ///
    /// [`StartError::DataDir`] when the directory or lock file cannot be
    /// made, [`StartError::DataDirLocked`] when another collector holds it.
    pub(crate) fn acquire(dir: &Path) -> Result<Self, StartError> {
        let data_dir_error = |source| StartError::DataDir {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(data_dir_error)?;
        let path: PathBuf = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(data_dir_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(StartError::DataDirLocked { path }),
            Err(TryLockError::Error(source)) => return Err(data_dir_error(source)),
        }
        // The pid is a courtesy for whoever finds the lock held; failing to
        // write it does not weaken the lock.
        let _ = file
            .set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn creates_the_dir_and_refuses_a_second_lock_until_released() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested").join("data");
        let first = DataDirLock::acquire(&dir).unwrap();
        assert!(dir.join(LOCK_FILE).exists());
        let second = DataDirLock::acquire(&dir);
        assert!(
            matches!(second, Err(StartError::DataDirLocked { .. })),
            "{second:?}"
        );
        drop(first);
        DataDirLock::acquire(&dir).unwrap();
    }
}
