//! The witness: a small file beside the database that remembers how far
//! the database is known to have reached.
//!
//! sled cannot tell damage inside its log from the torn tail of a crash:
//! it cuts the log at the first bad record and opens what is left, so a
//! damaged store would open as an older one, short of deliveries that were
//! acknowledged. Every round the writer commits carries a round number
//! inside the database; the witness keeps the number of a round that was
//! flushed, written (and synced) at most once a second and at every clean
//! stop. At start the database must have reached at least the witnessed
//! round: a crash only loses rounds that were never flushed, so it never
//! falls behind, and one that does was damaged and is refused.
//!
//! The witness also says that a store existed here at all, which catches
//! an emptied or removed log that sled would open as a new, empty one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::warn;

/// The file's name in the data dir.
pub const FILE: &str = "hookd-store";

/// How often the writer brings the witness up to date, at most.
const EVERY: Duration = Duration::from_secs(1);

/// What the witness file says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Witnessed {
    pub layout: u8,
    /// A round known to be flushed; 0 for files written before rounds
    /// were counted.
    pub round: u64,
}

/// Reads the witness; `None` when there is none.
pub fn read(path: &Path) -> io::Result<Option<Witnessed>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };

    let mut witnessed = Witnessed { layout: 0, round: 0 };
    for line in text.lines() {
        if let Some(layout) = line.strip_prefix("hookd store layout ") {
            witnessed.layout = layout.trim().parse().unwrap_or(0);
        } else if let Some(round) = line.strip_prefix("round ") {
            witnessed.round = round.trim().parse().map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, format!("bad round line {line:?}"))
            })?;
        }
    }
    Ok(Some(witnessed))
}

/// Replaces the witness with `witnessed`, durably: a synced temporary file
/// renamed over the old one, then the directory synced. A crash leaves the
/// old file or the new one, never a torn one.
pub fn write(path: &Path, witnessed: Witnessed) -> io::Result<()> {
    let temporary = path.with_extension("new");
    let mut file = File::create(&temporary)?;
    write!(file, "hookd store layout {}\nround {}\n", witnessed.layout, witnessed.round)?;
    file.sync_all()?;
    drop(file);

    fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The writer's side: brings the witness up to date after flushed rounds,
/// at most once every [`EVERY`].
pub struct Witness {
    path: PathBuf,
    layout: u8,
    /// The last round written to the file.
    written: u64,
    last_write: Instant,
}

impl Witness {
    pub fn new(path: PathBuf, layout: u8, written: u64) -> Witness {
        Witness { path, layout, written, last_write: Instant::now() }
    }

    /// Round `round` is flushed; writes it down if the last write is old
    /// enough (or `now_anyway`, at a clean stop).
    ///
    /// A failed write (a full disk, say) is logged and leaves the older
    /// witness, which is still true, in place.
    pub fn flushed(&mut self, round: u64, now_anyway: bool) {
        if round <= self.written || (!now_anyway && self.last_write.elapsed() < EVERY) {
            return;
        }
        match write(&self.path, Witnessed { layout: self.layout, round }) {
            Ok(()) => self.written = round,
            Err(error) => warn!(%error, path = %self.path.display(), "cannot update the witness"),
        }
        self.last_write = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_witness_reads_back_and_old_files_read_as_round_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        assert_eq!(read(&path).unwrap(), None);

        write(&path, Witnessed { layout: 1, round: 42 }).unwrap();
        assert_eq!(read(&path).unwrap(), Some(Witnessed { layout: 1, round: 42 }));

        fs::write(&path, "hookd store layout 1\n").unwrap();
        assert_eq!(read(&path).unwrap(), Some(Witnessed { layout: 1, round: 0 }));
        fs::write(&path, "hookd store layout 1\nround x\n").unwrap();
        assert!(read(&path).is_err());
    }

    #[test]
    fn witness_writes_at_most_once_a_second_unless_told() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let mut witness = Witness::new(path.clone(), 1, 0);

        witness.flushed(5, false);
        assert_eq!(read(&path).unwrap(), None, "written sooner than a second after the start");
        witness.flushed(6, true);
        assert_eq!(read(&path).unwrap().map(|w| w.round), Some(6));
        witness.flushed(7, false);
        assert_eq!(read(&path).unwrap().map(|w| w.round), Some(6));
    }
}
