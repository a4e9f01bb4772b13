//! Finds the file to read a module's names from.
//!
//! A probe describes each object its addresses fall in by the path its
//! loader opened, the GNU build ID and the load bias. The file is looked for,
//! in order:
//!
//! 1. in each `--debuginfo-dir`, by build ID, in the layouts that tools
//!    already write: `.build-id/ab/cdef….debug` (GDB, distributions' debug
//!    packages, `objcopy --only-keep-debug` set up by hand) and
//!    `ab…/debuginfo` (a debuginfod cache). This is how stripped binaries and
//!    services on other hosts get names;
//! 2. at the path inside the process's root, `/proc/PID/root/PATH`, which
//!    reaches into a container that shares the host's PID namespace;
//! 3. as the process's executable, `/proc/PID/exe`, which still opens a
//!    binary that a deploy deleted or replaced while the process runs;
//! 4. at the path as given.
//!
//! A file found at a path is used only if its build ID is the one the probe
//! loaded: a binary replaced on disk by a deploy while the old process runs
//! would otherwise give wrong names, which is worse than none. So a module
//! without a build ID is not looked for at a path at all, only absolute
//! paths without `..` are joined, and only regular files are opened: a probe
//! cannot point the collector at a device, a FIFO or a file of its choosing
//! that is not the build it claims.

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

/// Why no file could be found for a module, for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LocateError {
    /// Neither a debug-info directory nor the path had the file.
    #[error(
        "no file for {path} (build ID {build_id}) in the debug-info directories or at its path"
    )]
    NotFound { path: String, build_id: String },
    /// A file was at the path, but it is another build than the one loaded.
    #[error("{path} on disk is not the build the process loaded (build ID {build_id})")]
    OtherBuild { path: String, build_id: String },
    /// The module has no build ID, so no file can be proved to be it.
    #[error("{path} has no build ID, so no file on disk can be proved to be the one loaded")]
    NoBuildId { path: String },
    /// The path is not absolute, or climbs with `..`.
    #[error("{path:?} is not a plain absolute path")]
    BadPath { path: String },
}

/// The build ID as lowercase hex, the form debug-info layouts use.
pub(crate) fn hex(build_id: &[u8]) -> String {
    let mut out = String::with_capacity(build_id.len() * 2);
    for byte in build_id {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// The file to name `path`'s addresses from, for a process `pid` that
/// loaded it with `build_id` (empty when the object has none).
pub(crate) fn locate(
    path: &str,
    build_id: &[u8],
    pid: u32,
    debuginfo_dirs: &[PathBuf],
) -> Result<PathBuf, LocateError> {
    let id = hex(build_id);
    if id.len() > 2 {
        let (head, tail) = id.split_at(2);
        for dir in debuginfo_dirs {
            for candidate in [
                dir.join(".build-id")
                    .join(head)
                    .join(format!("{tail}.debug")),
                dir.join(&id).join("debuginfo"),
            ] {
                if is_regular_file(&candidate) {
                    return Ok(candidate);
                }
            }
        }
    }
    let plain = Path::new(path);
    if !plain.is_absolute() || plain.components().any(|c| c == Component::ParentDir) {
        return Err(LocateError::BadPath {
            path: path.to_owned(),
        });
    }
    if build_id.is_empty() {
        return Err(LocateError::NoBuildId {
            path: path.to_owned(),
        });
    }
    let proc = Path::new("/proc").join(pid.to_string());
    let mut other_build = false;
    for candidate in [
        proc.join("root").join(path.trim_start_matches('/')),
        proc.join("exe"),
        PathBuf::from(path),
    ] {
        if !is_regular_file(&candidate) {
            continue;
        }
        if build_id_of(&candidate).as_deref() == Some(build_id) {
            return Ok(candidate);
        }
        other_build = true;
    }
    let (path, build_id) = (path.to_owned(), id);
    Err(if other_build {
        LocateError::OtherBuild { path, build_id }
    } else {
        LocateError::NotFound { path, build_id }
    })
}

fn is_regular_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

fn build_id_of(path: &Path) -> Option<Vec<u8>> {
    blazesym::helper::read_elf_build_id(&path)
        .ok()
        .flatten()
        .map(|id| id.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_build_id() -> Vec<u8> {
        let exe = std::env::current_exe().unwrap();
        build_id_of(&exe).expect("the test binary has a build ID")
    }

    #[test]
    fn finds_a_loaded_file_at_its_path_when_the_build_matches() {
        let exe = std::env::current_exe().unwrap();
        let path = exe.display().to_string();
        let found = locate(&path, &own_build_id(), std::process::id(), &[]).unwrap();
        // Through this process's root, which is the same file.
        assert!(found.ends_with(exe.strip_prefix("/").unwrap()), "{found:?}");
        assert_eq!(build_id_of(&found), Some(own_build_id()));
    }

    #[test]
    fn refuses_a_file_of_another_build() {
        let exe = std::env::current_exe().unwrap().display().to_string();
        let error = locate(&exe, &[1, 2, 3, 4], std::process::id(), &[]).unwrap_err();
        assert!(matches!(error, LocateError::OtherBuild { .. }), "{error}");
        assert!(error.to_string().contains("01020304"), "{error}");
    }

    #[test]
    fn finds_debug_info_by_build_id_in_both_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let id = [0xab, 0xcd, 0xef, 0x01];
        let gdb = dir.path().join(".build-id/ab/cdef01.debug");
        std::fs::create_dir_all(gdb.parent().unwrap()).unwrap();
        std::fs::write(&gdb, b"elf").unwrap();
        let dirs = [dir.path().to_owned()];
        assert_eq!(locate("/gone/svc", &id, 0, &dirs), Ok(gdb.clone()));

        std::fs::remove_file(&gdb).unwrap();
        let cache = dir.path().join("abcdef01/debuginfo");
        std::fs::create_dir_all(cache.parent().unwrap()).unwrap();
        std::fs::write(&cache, b"elf").unwrap();
        assert_eq!(locate("/gone/svc", &id, 0, &dirs), Ok(cache));
    }

    #[test]
    fn a_missing_file_or_a_directory_is_not_found() {
        let error = locate("/gone/svc", &[0xab, 0xcd], 0, &[]).unwrap_err();
        assert_eq!(
            error,
            LocateError::NotFound {
                path: "/gone/svc".to_owned(),
                build_id: "abcd".to_owned()
            }
        );
        assert!(locate("/tmp", &[1], 0, &[]).is_err());
        assert!(matches!(
            locate("relative/path", &[1], 0, &[]),
            Err(LocateError::BadPath { .. })
        ));
        assert!(matches!(
            locate("/proc/self/root/../../etc/passwd", &[1], 0, &[]),
            Err(LocateError::BadPath { .. })
        ));
        // Without a build ID nothing on disk can be proved to be the binary.
        let exe = std::env::current_exe().unwrap().display().to_string();
        assert!(matches!(
            locate(&exe, &[], std::process::id(), &[]),
            Err(LocateError::NoBuildId { .. })
        ));
    }
}
