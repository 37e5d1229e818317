//! The durable store: the only module that touches sled.
//!
//! # Layout
//!
//! One sled tree holds three key spaces, told apart by their first byte:
//!
//! | key | value |
//! | --- | --- |
//! | `d` + id (16 bytes) | the [`Delivery`] record ([`crate::record`] codec) |
//! | `t` + due ms (8 bytes, big-endian) + id | empty: the due-time index |
//! | `m` + name | store metadata: format version, state counters |
//!
//! Keeping them in one tree lets every change go in as one sled batch, which
//! sled applies atomically: a record and its index entry can never be seen
//! (or survive a crash) one without the other.
//!
//! # Writes and durability
//!
//! Every change goes through [`Store::commit`], which hands it to a single
//! writer thread. The writer takes all changes that are waiting, applies
//! them as one batch, calls sled's blocking `flush()` once, and only then
//! answers each caller. That is the group commit: a thousand concurrent
//! submissions cost one fsync, and `commit` returning `Ok` means the change
//! is on disk. A single writer also steps around the deadlock of concurrent
//! `flush_async` calls in sled 0.34, keeps the state counters exact without
//! transactions, and lets the writer read old records without races.
//!
//! Callers must not change the same delivery concurrently; that is what
//! [`crate::claims`] is for. The store keeps the index and counters right
//! whatever it is given.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;

use tokio::sync::oneshot;
use tracing::{debug, error};

use crate::clock::UnixMs;
use crate::id::{DeliveryId, ID_LEN};
use crate::record::{self, CodecError, Delivery, State};

const RECORD: u8 = b'd';
const DUE: u8 = b't';
const META: u8 = b'm';

/// The layout version of the key spaces above (records carry their own).
const STORE_FORMAT: u8 = 1;

/// At most this many commits are applied in one batch and one flush.
const MAX_JOBS_PER_ROUND: usize = 8192;

/// A position in the due-time index. Orders by due time, then by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DueKey {
    pub due: UnixMs,
    pub id: DeliveryId,
}

/// How many deliveries are in each state, kept exact by the writer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub pending: u64,
    pub delivered: u64,
    pub dead: u64,
    pub cancelled: u64,
    pub superseded: u64,
}

/// One change to the store.
#[derive(Debug)]
pub enum Change {
    /// Create or replace a delivery record; the index follows its
    /// `next_attempt_at`.
    Put(Box<Delivery>),
    /// Remove a delivery and its index entry.
    Delete(DeliveryId),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "data dir {path} is in use by another hookd (it holds {lock}); stop that one or pick another --data-dir"
    )]
    InUse { path: PathBuf, lock: PathBuf },
    #[error("cannot prepare data dir {path}: {source}")]
    DataDir { path: PathBuf, source: io::Error },
    #[error("cannot open the database in {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("the database in {path} has layout {found}, which this hookd does not know")]
    UnknownLayout { path: PathBuf, found: u8 },
    #[error("database error: {0}")]
    Sled(#[from] sled::Error),
    #[error("delivery {id}: {source}")]
    Codec { id: String, source: CodecError },
    #[error("the store's writer has stopped")]
    WriterGone,
    /// The round this change was part of did not reach the disk; every
    /// caller of the round shares the one cause.
    #[error("the write did not reach the disk: {0}")]
    Write(Arc<StoreError>),
}

/// A handle to the store; cheap to clone, shared by every task.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    tree: sled::Db,
    /// Where commits go; the writer thread holds the receiving end and ends
    /// when every handle is dropped.
    jobs: mpsc::Sender<Job>,
    counts: Arc<AtomicCounts>,
    /// Held for as long as the store is open: an advisory lock that keeps a
    /// second hookd off this data dir.
    _lock: File,
}

struct Job {
    changes: Vec<Change>,
    /// Answered once the changes are on disk, or failed.
    done: oneshot::Sender<Result<(), StoreError>>,
}

#[derive(Default)]
struct AtomicCounts([AtomicU64; 5]);

impl Store {
    /// Opens (or creates) the store in `data_dir`.
    ///
    /// `cache_capacity_bytes` bounds sled's page cache (its default is 1 GiB).
    pub fn open(data_dir: &Path, cache_capacity_bytes: u64) -> Result<Store, StoreError> {
        let lock = lock_data_dir(data_dir)?;

        let db_path = data_dir.join("db");
        let tree = sled::Config::new()
            .path(&db_path)
            .cache_capacity(cache_capacity_bytes)
            .flush_every_ms(None)
            .open()
            .map_err(|source| StoreError::Open { path: db_path.clone(), source })?;

        check_layout(&tree, &db_path)?;
        let counts = Arc::new(AtomicCounts::load(&tree)?);

        let (jobs, receiver) = mpsc::channel();
        let writer = Writer { tree: tree.clone(), counts: counts.clone() };
        thread::Builder::new()
            .name("hookd-store-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|source| StoreError::DataDir { path: data_dir.to_owned(), source })?;

        Ok(Store { inner: Arc::new(Inner { tree, jobs, counts, _lock: lock }) })
    }

    /// Applies `changes` atomically and returns once they are on disk.
    pub async fn commit(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.inner.jobs.send(Job { changes, done }).map_err(|_| StoreError::WriterGone)?;
        wait.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Forces a flush of everything written so far.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.commit(Vec::new()).await
    }

    /// One delivery, if it exists.
    pub fn get(&self, id: DeliveryId) -> Result<Option<Delivery>, StoreError> {
        match self.inner.tree.get(record_key(id))? {
            Some(bytes) => decode(id, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Up to `limit` index entries at or after `from` and due no later than
    /// `until`, in due order.
    pub fn scan_due(
        &self,
        from: DueKey,
        until: UnixMs,
        limit: usize,
    ) -> Result<Vec<DueKey>, StoreError> {
        let end = due_key(DueKey { due: until, id: DeliveryId::from_bytes([0xff; ID_LEN]) });
        let mut found = Vec::new();
        for entry in self.inner.tree.range(due_key(from)..=end).keys().take(limit) {
            if let Some(key) = parse_due_key(&entry?) {
                found.push(key);
            }
        }
        Ok(found)
    }

    /// The earliest index entry, if any delivery is pending.
    pub fn first_due(&self) -> Result<Option<DueKey>, StoreError> {
        let start = due_key(DueKey { due: 0, id: DeliveryId::from_bytes([0; ID_LEN]) });
        match self.inner.tree.range(start.as_slice()..[DUE + 1].as_slice()).keys().next() {
            Some(key) => Ok(parse_due_key(&key?)),
            None => Ok(None),
        }
    }

    /// Deliveries newest first, starting after `before` (exclusive), keeping
    /// those `keep` accepts, until `limit` are found. Returns them and
    /// whether more records remain beyond the last one returned.
    pub fn list(
        &self,
        before: Option<DeliveryId>,
        limit: usize,
        mut keep: impl FnMut(&Delivery) -> bool,
    ) -> Result<(Vec<Delivery>, bool), StoreError> {
        let end = match before {
            Some(id) => record_key(id).to_vec(),
            None => vec![RECORD + 1],
        };

        let mut found = Vec::new();
        for entry in self.inner.tree.range([RECORD].as_slice()..end.as_slice()).rev() {
            let (key, bytes) = entry?;
            let Some(id) = DeliveryId::from_slice(&key[1..]) else { continue };
            let delivery = decode(id, &bytes)?;
            if !keep(&delivery) {
                continue;
            }
            if found.len() == limit {
                return Ok((found, true));
            }
            found.push(delivery);
        }
        Ok((found, false))
    }

    /// How many deliveries are in each state.
    pub fn counts(&self) -> Counts {
        self.inner.counts.snapshot()
    }

    /// Bytes the database takes on disk, as sled reports it.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.inner.tree.size_on_disk()?)
    }
}

/// Creates the data dir (mode 0700) and takes its lock file.
fn lock_data_dir(data_dir: &Path) -> Result<File, StoreError> {
    let dir_error = |source| StoreError::DataDir { path: data_dir.to_owned(), source };

    if !data_dir.exists() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(data_dir).map_err(dir_error)?;
    }
    let metadata = fs::metadata(data_dir).map_err(dir_error)?;
    if !metadata.is_dir() {
        return Err(dir_error(io::Error::other("it is not a directory")));
    }
    if metadata.permissions().mode() & 0o077 != 0 {
        debug!(path = %data_dir.display(), "data dir is readable by others; hookd creates it 0700");
    }

    let lock_path = data_dir.join("hookd.lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(dir_error)?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(fs::TryLockError::WouldBlock) => {
            Err(StoreError::InUse { path: data_dir.to_owned(), lock: lock_path })
        }
        Err(fs::TryLockError::Error(source)) => Err(dir_error(source)),
    }
}

/// Writes the layout byte into a new store, or checks it in an old one.
fn check_layout(tree: &sled::Db, path: &Path) -> Result<(), StoreError> {
    let key = meta_key(b"layout");
    match tree.get(&key)? {
        Some(found) if found.as_ref() == [STORE_FORMAT] => Ok(()),
        Some(found) => Err(StoreError::UnknownLayout {
            path: path.to_owned(),
            found: found.first().copied().unwrap_or(0),
        }),
        None => {
            tree.insert(key, &[STORE_FORMAT])?;
            tree.flush()?;
            Ok(())
        }
    }
}

/// The single thread that applies and flushes every change.
struct Writer {
    tree: sled::Db,
    counts: Arc<AtomicCounts>,
}

impl Writer {
    fn run(self, jobs: mpsc::Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            let mut round = vec![first];
            while round.len() < MAX_JOBS_PER_ROUND {
                match jobs.try_recv() {
                    Ok(job) => round.push(job),
                    Err(_) => break,
                }
            }

            let result = self.apply(&round).map_err(Arc::new);
            if let Err(error) = &result {
                error!(%error, jobs = round.len(), "store write failed");
            }
            for job in round {
                let _ = job.done.send(result.clone().map_err(StoreError::Write));
            }
        }
        debug!("store writer stopped");
    }

    /// One round: every change of every job in one atomic batch, then one
    /// flush. The counters move only once the batch is applied.
    fn apply(&self, round: &[Job]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let mut delta = [0i64; 5];
        let mut latest: std::collections::HashMap<DeliveryId, Option<(State, Option<UnixMs>)>> =
            std::collections::HashMap::new();

        for change in round.iter().flat_map(|job| &job.changes) {
            let id = match change {
                Change::Put(delivery) => delivery.id,
                Change::Delete(id) => *id,
            };
            let old = match latest.get(&id) {
                Some(known) => *known,
                None => self.current(id)?,
            };
            if let Some((state, due)) = old {
                delta[state_index(state)] -= 1;
                if let Some(due) = due {
                    batch.remove(due_key(DueKey { due, id }).as_slice());
                }
            }

            match change {
                Change::Put(delivery) => {
                    let bytes = record::encode(delivery)
                        .map_err(|source| StoreError::Codec { id: id.to_string(), source })?;
                    batch.insert(record_key(id).as_slice(), bytes);
                    if let Some(due) = delivery.next_attempt_at {
                        batch.insert(due_key(DueKey { due, id }).as_slice(), &[]);
                    }
                    delta[state_index(delivery.state)] += 1;
                    latest.insert(id, Some((delivery.state, delivery.next_attempt_at)));
                }
                Change::Delete(_) => {
                    batch.remove(record_key(id).as_slice());
                    latest.insert(id, None);
                }
            }
        }

        let counts = self.counts.moved_by(&delta);
        batch.insert(meta_key(b"counts"), counts.to_bytes().as_slice());
        self.tree.apply_batch(batch)?;
        self.counts.store(&counts);
        self.tree.flush()?;
        Ok(())
    }

    /// The state and due time of a stored delivery.
    fn current(&self, id: DeliveryId) -> Result<Option<(State, Option<UnixMs>)>, StoreError> {
        match self.tree.get(record_key(id))? {
            Some(bytes) => {
                let delivery = decode(id, &bytes)?;
                Ok(Some((delivery.state, delivery.next_attempt_at)))
            }
            None => Ok(None),
        }
    }
}

impl AtomicCounts {
    fn load(tree: &sled::Db) -> Result<AtomicCounts, StoreError> {
        let counts = AtomicCounts::default();
        if let Some(bytes) = tree.get(meta_key(b"counts"))? {
            counts.store(&Counts::from_bytes(&bytes));
        }
        Ok(counts)
    }

    fn snapshot(&self) -> Counts {
        let [pending, delivered, dead, cancelled, superseded] =
            self.0.each_ref().map(|count| count.load(Ordering::Relaxed));
        Counts { pending, delivered, dead, cancelled, superseded }
    }

    fn moved_by(&self, delta: &[i64; 5]) -> Counts {
        let mut values = self.snapshot().to_array();
        for (value, change) in values.iter_mut().zip(delta) {
            *value = value.saturating_add_signed(*change);
        }
        Counts::from_array(values)
    }

    fn store(&self, counts: &Counts) {
        for (slot, value) in self.0.iter().zip(counts.to_array()) {
            slot.store(value, Ordering::Relaxed);
        }
    }
}

impl Counts {
    fn to_array(self) -> [u64; 5] {
        [self.pending, self.delivered, self.dead, self.cancelled, self.superseded]
    }

    fn from_array([pending, delivered, dead, cancelled, superseded]: [u64; 5]) -> Counts {
        Counts { pending, delivered, dead, cancelled, superseded }
    }

    fn to_bytes(self) -> Vec<u8> {
        self.to_array().iter().flat_map(|value| value.to_be_bytes()).collect()
    }

    /// Missing or short bytes read as zero counts.
    fn from_bytes(bytes: &[u8]) -> Counts {
        let mut values = [0u64; 5];
        for (value, chunk) in values.iter_mut().zip(bytes.chunks_exact(8)) {
            *value = u64::from_be_bytes(chunk.try_into().unwrap_or([0; 8]));
        }
        Counts::from_array(values)
    }
}

fn state_index(state: State) -> usize {
    match state {
        State::Pending => 0,
        State::Delivered => 1,
        State::Dead => 2,
        State::Cancelled => 3,
        State::Superseded => 4,
    }
}

fn decode(id: DeliveryId, bytes: &[u8]) -> Result<Delivery, StoreError> {
    record::decode(bytes).map_err(|source| StoreError::Codec { id: id.to_string(), source })
}

fn record_key(id: DeliveryId) -> [u8; 1 + ID_LEN] {
    let mut key = [RECORD; 1 + ID_LEN];
    key[1..].copy_from_slice(&id.to_bytes());
    key
}

fn due_key(entry: DueKey) -> [u8; 1 + 8 + ID_LEN] {
    let mut key = [DUE; 1 + 8 + ID_LEN];
    key[1..9].copy_from_slice(&entry.due.to_be_bytes());
    key[9..].copy_from_slice(&entry.id.to_bytes());
    key
}

fn parse_due_key(key: &[u8]) -> Option<DueKey> {
    if key.len() != 1 + 8 + ID_LEN || key[0] != DUE {
        return None;
    }
    let due = u64::from_be_bytes(key[1..9].try_into().ok()?);
    let id = DeliveryId::from_slice(&key[9..])?;
    Some(DueKey { due, id })
}

fn meta_key(name: &[u8]) -> Vec<u8> {
    let mut key = vec![META];
    key.extend_from_slice(name);
    key
}
