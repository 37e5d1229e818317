//! Small file systems mounted for one test: a tmpfs of a few MiB to fill
//! up, or a read-only one. The tests run as root, where file modes do not
//! keep anyone out, so a read-only mount is the honest way to refuse
//! writes.
//!
//! A [`Mount`] is unmounted (lazily, so a process that still has files
//! open there cannot keep it busy) when it is dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted on a directory until dropped.
pub struct Mount {
    path: PathBuf,
}

/// Why a mount could not be made.
#[derive(Debug)]
pub enum MountError {
    /// This process may not mount (not root, or no `CAP_SYS_ADMIN` in a
    /// container): the test should skip, saying so.
    NotPermitted(String),
    /// Anything else is a failure of the test's setup.
    Failed(String),
}

impl Mount {
    /// Mounts a tmpfs of `size_mib` MiB on `path` (created if missing).
    pub fn tmpfs(path: &Path, size_mib: u32) -> Result<Mount, MountError> {
        Mount::run(path, &format!("size={size_mib}m,mode=0700"))
    }

    /// Mounts an empty, read-only tmpfs on `path` (created if missing).
    pub fn read_only(path: &Path) -> Result<Mount, MountError> {
        Mount::run(path, "size=1m,ro")
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn run(path: &Path, options: &str) -> Result<Mount, MountError> {
        std::fs::create_dir_all(path).expect("create the mount point");
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(path)
            .output()
            .map_err(|error| MountError::NotPermitted(format!("cannot run mount: {error}")))?;
        if output.status.success() {
            return Ok(Mount { path: path.to_owned() });
        }

        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        let denied =
            ["permission denied", "must be superuser", "only root", "operation not permitted"];
        if denied.iter().any(|words| stderr.to_lowercase().contains(words)) {
            Err(MountError::NotPermitted(stderr))
        } else {
            Err(MountError::Failed(format!("mount -o {options} on {}: {stderr}", path.display())))
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Mounts with `mount`, or returns `None` after saying why the test is
/// skipped when this process may not mount; any other failure panics.
pub fn or_skip(test: &str, mount: Result<Mount, MountError>) -> Option<Mount> {
    match mount {
        Ok(mount) => Some(mount),
        Err(MountError::NotPermitted(why)) => {
            eprintln!("SKIPPED {test}: this process may not mount a tmpfs ({why})");
            None
        }
        Err(MountError::Failed(why)) => panic!("{why}"),
    }
}
