//! Free space under the data dir, and the refusal that keeps sled off a
//! full disk.
//!
//! sled 0.34 does not come back from a failed write in the same process:
//! after ENOSPC it keeps a sticky error or blocks the next flush (see
//! ARCHITECTURE.md, failure modes). So the writer never lets a new
//! delivery take the disk below `storage.min_free_mb`: submissions are
//! refused with `storage_full` while there is still room, and that room is
//! what outcomes, retries and deletions of the deliveries already stored
//! keep writing into. When space comes back, submissions are taken again.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

/// A guess at what one new delivery adds to the database beyond its
/// payload: the record's other fields, its index entries and sled's
/// framing. Overestimating only refuses a little earlier.
const OVERHEAD_PER_DELIVERY: u64 = 1024;

/// Bytes available to an unprivileged writer on the file system that holds
/// `path` (`statvfs`'s `f_bavail` blocks, so the root reserve is not
/// counted).
pub fn available(path: &Path) -> io::Result<u64> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::zeroed();

    // SAFETY: `path` is a valid NUL-terminated string and `stats` points to
    // writable memory of the right type; statvfs fills it or fails.
    let status = unsafe { libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) };
    if status != 0 {
        return Err(io::Error::last_os_error());
    }

    // SAFETY: statvfs returned 0, so it wrote the whole struct.
    let stats = unsafe { stats.assume_init() };
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// What a round would add: payload bytes plus the per-delivery overhead.
pub fn estimate(payload_bytes: u64, deliveries: u64) -> u64 {
    payload_bytes.saturating_add(deliveries.saturating_mul(OVERHEAD_PER_DELIVERY))
}

/// The writer's view of free space: decides whether new deliveries fit and
/// logs once when that answer changes.
pub struct Reserve {
    dir: PathBuf,
    min_free: u64,
    /// Whether the last check refused; logged on each change only.
    low: bool,
}

impl Reserve {
    /// A reserve of `min_free` bytes on the disk that holds `dir`; zero
    /// turns the check off.
    pub fn new(dir: PathBuf, min_free: u64) -> Reserve {
        Reserve { dir, min_free, low: false }
    }

    /// `Ok` when `incoming` more bytes leave at least the reserve free,
    /// else the bytes free now. A disk whose free space cannot be read is
    /// taken as having room: the write itself will tell.
    pub fn admit(&mut self, incoming: u64) -> Result<(), u64> {
        if self.min_free == 0 {
            return Ok(());
        }
        let free = match available(&self.dir) {
            Ok(free) => free,
            Err(error) => {
                warn!(%error, dir = %self.dir.display(), "cannot read free space");
                return Ok(());
            }
        };

        let fits = free >= self.min_free.saturating_add(incoming);
        if fits && self.low {
            info!(free_mb = free >> 20, "disk has room again; taking submissions");
        } else if !fits && !self.low {
            warn!(
                free_mb = free >> 20,
                min_free_mb = self.min_free >> 20,
                "disk nearly full; refusing submissions until space is freed"
            );
        }
        self.low = !fits;
        if fits { Ok(()) } else { Err(free) }
    }

    pub fn min_free(&self) -> u64 {
        self.min_free
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn available_space_of_a_real_directory_is_read() {
        let dir = tempfile::tempdir().unwrap();
        assert!(available(dir.path()).unwrap() > 0);
        assert!(available(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn a_reserve_larger_than_the_disk_refuses_and_zero_admits() {
        let dir = tempfile::tempdir().unwrap();
        let free = available(dir.path()).unwrap();

        let mut huge = Reserve::new(dir.path().to_owned(), u64::MAX / 2);
        assert!(huge.admit(1).is_err_and(|seen| seen > 0 && seen <= free.saturating_mul(2)));
        let mut off = Reserve::new(dir.path().to_owned(), 0);
        assert!(off.admit(u64::MAX).is_ok());
        let mut small = Reserve::new(dir.path().to_owned(), 1);
        assert!(small.admit(estimate(100, 1)).is_ok());
    }
}
