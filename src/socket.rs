//! The API's unix socket file: creating it safely and removing it.
//!
//! A socket file left behind by a crash is replaced, but one that a live
//! daemon still answers on is not stolen: binding first tries to connect,
//! and only a refused connection marks the file as stale.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("socket {0} is in use by a running hookd; stop it or pick another --socket")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; remove it or pick another --socket")]
    NotASocket(PathBuf),
    #[error("cannot create socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
}

/// Binds the API socket at `path` with permission bits `mode`.
pub async fn bind(path: &Path, mode: u32) -> Result<UnixListener, SocketError> {
    let bind_error = |source| SocketError::Bind { path: path.to_owned(), source };

    match std::fs::symlink_metadata(path) {
        Ok(metadata) if !metadata.file_type().is_socket() => {
            return Err(SocketError::NotASocket(path.to_owned()));
        }
        Ok(_) => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return Err(SocketError::InUse(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(bind_error)?;
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(bind_error(error)),
    }

    if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(bind_error)?;
    }
    let listener = UnixListener::bind(path).map_err(bind_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(bind_error)?;
    Ok(listener)
}

/// Removes the socket file on the way out; a missing file is fine.
pub fn remove(path: &Path) {
    if let Err(error) = std::fs::remove_file(path)
        && error.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), %error, "cannot remove the socket file");
    }
}
