//! The durable store: the only module that touches sled.
//!
//! # Layout
//!
//! One sled tree holds every key space, told apart by their first byte (see
//! [`keys`]): records, the due-time index, the ordering queues of keys, the
//! idempotency index and metadata. Keeping them in one tree lets every
//! change go in as one sled batch, which sled applies atomically: a record
//! and its index entries can never be seen (or survive a crash) one without
//! the other.
//!
//! # Writes and durability
//!
//! Every change goes through [`Store::commit`], which hands it to a single
//! writer thread ([`writer`]). The writer takes all changes that are waiting, applies
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

use tokio::sync::{oneshot, watch};
use tracing::debug;

use crate::clock::UnixMs;
use crate::id::DeliveryId;
use crate::record::{self, CodecError, Delivery, State};

mod keys;
mod space;
mod witness;
mod writer;

/// The longest a commit may take before its caller is told it failed.
pub const COMMIT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// The layout version of the key spaces above (records carry their own).
const STORE_FORMAT: u8 = 1;

/// A position in the due-time index. Orders by due time, then by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DueKey {
    pub due: UnixMs,
    pub id: DeliveryId,
}

/// How the store is opened.
#[derive(Clone, Copy, Debug)]
pub struct StoreOptions {
    /// Bound on sled's page cache (its own default is 1 GiB).
    pub cache_capacity_bytes: u64,
    /// New deliveries are refused (`storage_full`) rather than take the
    /// data dir's disk below this many free bytes; 0 turns that off.
    pub min_free_bytes: u64,
}

impl StoreOptions {
    /// Small settings for tests: a 1 MiB cache, no free-space reserve.
    pub fn small() -> StoreOptions {
        StoreOptions::small_with_cache(1 << 20)
    }

    /// No free-space reserve and a cache of `cache_capacity_bytes`, for
    /// tests and benchmarks.
    pub fn small_with_cache(cache_capacity_bytes: u64) -> StoreOptions {
        StoreOptions { cache_capacity_bytes, min_free_bytes: 0 }
    }
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
    /// A new delivery. If its idempotency key is already taken nothing is
    /// written and the outcome names the delivery that has it. `supersede`
    /// holds older deliveries of its key, already set `superseded`, that it
    /// replaces (coalescing); they are written only with the insert.
    Insert { delivery: Box<Delivery>, supersede: Vec<Delivery> },
    /// Create or replace a delivery record; the indexes follow it.
    Put(Box<Delivery>),
    /// Remove a delivery and its index entries.
    Delete(DeliveryId),
}

/// What one change did.
#[derive(Debug)]
pub enum Outcome {
    /// The delivery as stored: the ordering queue may have cleared its due
    /// time (it waits behind an earlier delivery of its key).
    Stored(Box<Delivery>),
    /// The idempotency key belongs to this delivery; nothing was written.
    Existing(DeliveryId),
    Deleted,
}

/// The answer to one [`Store::commit`].
#[derive(Debug, Default)]
pub struct Committed {
    /// One per change, in order.
    pub outcomes: Vec<Outcome>,
    /// Deliveries that became first of their key and got a due time; the
    /// caller must tell the wheel.
    pub promoted: Vec<DueKey>,
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
    #[error(
        "the database in {path} is damaged: its files hold data, but not hookd's layout marker; restore it from a backup, or move it away to start empty"
    )]
    Damaged { path: PathBuf },
    #[error(
        "the database in {path} has reached write round {reached}, but round {witnessed} was flushed before: sled cut its log short at damage, and acknowledged deliveries may be missing; restore it from a backup, or move it away to start empty"
    )]
    RolledBack { path: PathBuf, reached: u64, witnessed: u64 },
    #[error(
        "the data dir's disk has {} MiB free, and new deliveries must leave {} MiB (storage.min_free_mb)",
        free >> 20,
        min_free >> 20
    )]
    LowSpace { free: u64, min_free: u64 },
    #[error("database error: {0}")]
    Sled(#[from] sled::Error),
    #[error("delivery {id}: {source}")]
    Codec { id: String, source: CodecError },
    #[error("the store's writer has stopped")]
    WriterGone,
    #[error("the store did not finish a write within {} s; is the disk full or hung?", COMMIT_DEADLINE.as_secs())]
    Stalled,
    /// The round this change was part of did not reach the disk; every
    /// caller of the round shares the one cause.
    #[error("the write did not reach the disk: {0}")]
    Write(Arc<StoreError>),
}

impl StoreError {
    /// Whether the disk under the data dir is full.
    ///
    /// sled's error type does not expose its `io::Error` through
    /// `source()`, so this looks inside it directly.
    pub fn is_storage_full(&self) -> bool {
        match self {
            StoreError::Write(inner) => inner.is_storage_full(),
            StoreError::LowSpace { .. } => true,
            StoreError::Sled(sled::Error::Io(io))
            | StoreError::Open { source: sled::Error::Io(io), .. }
            | StoreError::DataDir { source: io, .. } => {
                io.kind() == io::ErrorKind::StorageFull || io.raw_os_error() == Some(libc::ENOSPC)
            }
            _ => false,
        }
    }
}

/// A handle to the store; cheap to clone, shared by every task.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    tree: sled::Db,
    activity: Arc<Activity>,
    /// Set once, when a write or flush failed or stalled: sled does not
    /// recover from that in process (see [`Store::failed`]).
    failure: Arc<watch::Sender<Option<String>>>,
    /// Where commits go; the writer thread holds the receiving end and ends
    /// when this is dropped. `None` only while the store is closing.
    jobs: Option<mpsc::Sender<Job>>,
    /// The writer thread, joined on close so that its database handle (and
    /// sled's file lock) is gone when the last `Store` is.
    writer: Option<thread::JoinHandle<()>>,
    counts: Arc<AtomicCounts>,
    /// Held for as long as the store is open: an advisory lock that keeps a
    /// second hookd off this data dir.
    _lock: File,
}

struct Job {
    changes: Vec<Change>,
    /// Answered once the changes are on disk, or failed.
    done: oneshot::Sender<Result<Committed, StoreError>>,
}

#[derive(Default)]
struct AtomicCounts([AtomicU64; 5]);

/// How much the writer has done since the store was opened.
#[derive(Default)]
struct Activity {
    /// Rounds written and flushed: one fsync each.
    flushes: AtomicU64,
    /// Commits those rounds carried; commits per flush is the group-commit
    /// factor.
    commits: AtomicU64,
}

impl Store {
    /// Opens (or creates) the store in `data_dir`.
    ///
    /// Refuses a database that is damaged in a way hookd can see: one
    /// without its layout marker although a store existed here, or one
    /// that has fallen behind the round its [`witness`] recorded.
    pub fn open(data_dir: &Path, options: &StoreOptions) -> Result<Store, StoreError> {
        let lock = lock_data_dir(data_dir)?;

        let db_path = data_dir.join("db");
        let witness_path = data_dir.join(witness::FILE);
        let witnessed = witness::read(&witness_path)
            .map_err(|source| StoreError::DataDir { path: witness_path.clone(), source })?;
        let had_data = witnessed.is_some()
            || std::fs::metadata(db_path.join("db")).is_ok_and(|file| file.len() > 0);
        let tree = sled::Config::new()
            .path(&db_path)
            .cache_capacity(options.cache_capacity_bytes)
            .flush_every_ms(None)
            .open()
            .map_err(|source| StoreError::Open { path: db_path.clone(), source })?;

        check_layout(&tree, &db_path, had_data)?;
        let round = read_u64(&tree, b"round")?;
        let witnessed_round = witnessed.map_or(0, |witnessed| witnessed.round);
        if round < witnessed_round {
            return Err(StoreError::RolledBack {
                path: db_path,
                reached: round,
                witnessed: witnessed_round,
            });
        }
        let current = witness::Witnessed { layout: STORE_FORMAT, round };
        witness::write(&witness_path, current)
            .map_err(|source| StoreError::DataDir { path: witness_path.clone(), source })?;

        let counts = Arc::new(AtomicCounts::load(&tree)?);
        let sequence = read_u64(&tree, b"sequence")?;
        let failure = Arc::new(watch::Sender::new(None));
        let activity = Arc::new(Activity::default());
        let (jobs, receiver) = mpsc::channel();
        let writer = writer::Writer {
            tree: tree.clone(),
            counts: counts.clone(),
            sequence: Arc::new(AtomicU64::new(sequence)),
            round,
            witness: witness::Witness::new(witness_path, STORE_FORMAT, round),
            reserve: space::Reserve::new(data_dir.to_owned(), options.min_free_bytes),
            failure: failure.clone(),
            activity: activity.clone(),
        };
        let writer = thread::Builder::new()
            .name("hookd-store-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|source| StoreError::DataDir { path: data_dir.to_owned(), source })?;

        Ok(Store {
            inner: Arc::new(Inner {
                tree,
                activity,
                failure,
                jobs: Some(jobs),
                writer: Some(writer),
                counts,
                _lock: lock,
            }),
        })
    }

    /// Resolves, with the cause, once the store has failed: a write or
    /// flush returned an error, or a commit stalled past
    /// [`COMMIT_DEADLINE`]. sled 0.34 does not come back from that in the
    /// same process (a sticky error or a flush that never returns), so the
    /// daemon's answer is to exit and be restarted; everything acknowledged
    /// is on disk.
    pub async fn failed(&self) -> String {
        let mut failure = self.inner.failure.subscribe();
        let cause = failure.wait_for(Option::is_some).await.ok().and_then(|cause| cause.clone());
        match cause {
            Some(cause) => cause,
            None => std::future::pending().await,
        }
    }

    /// Applies `changes` atomically and returns once they are on disk.
    ///
    /// A commit that has not returned within [`COMMIT_DEADLINE`] fails with
    /// [`StoreError::Stalled`]: sled can block a flush forever after a full
    /// disk, and a caller must get an answer. The changes may still land
    /// later (at least once, never lost).
    pub async fn commit(&self, changes: Vec<Change>) -> Result<Committed, StoreError> {
        let (done, wait) = oneshot::channel();
        let jobs = self.inner.jobs.as_ref().ok_or(StoreError::WriterGone)?;
        jobs.send(Job { changes, done }).map_err(|_| StoreError::WriterGone)?;
        match tokio::time::timeout(COMMIT_DEADLINE, wait).await {
            Ok(answer) => answer.map_err(|_| StoreError::WriterGone)?,
            Err(_) => {
                self.inner.failure.send_if_modified(|failure| {
                    failure.get_or_insert_with(|| StoreError::Stalled.to_string());
                    true
                });
                Err(StoreError::Stalled)
            }
        }
    }

    /// Forces a flush of everything written so far.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.commit(Vec::new()).await.map(drop)
    }

    /// One delivery, if it exists.
    pub fn get(&self, id: DeliveryId) -> Result<Option<Delivery>, StoreError> {
        match self.inner.tree.get(keys::record(id))? {
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
        let mut found = Vec::new();
        let range = keys::due(from)..=keys::due_end(until);
        for entry in self.inner.tree.range(range).keys().take(limit) {
            if let Some(key) = keys::parse_due(&entry?) {
                found.push(key);
            }
        }
        Ok(found)
    }

    /// The earliest index entry, if any delivery is pending.
    pub fn first_due(&self) -> Result<Option<DueKey>, StoreError> {
        match self.inner.tree.scan_prefix([keys::DUE]).keys().next() {
            Some(key) => Ok(keys::parse_due(&key?)),
            None => Ok(None),
        }
    }

    /// The delivery that owns an idempotency key, if any.
    pub fn idempotent(&self, idempotency_key: &str) -> Result<Option<DeliveryId>, StoreError> {
        let found = self.inner.tree.get(keys::idempotency(idempotency_key))?;
        Ok(found.as_deref().and_then(DeliveryId::from_slice))
    }

    /// The pending deliveries of an ordering key, in submission order.
    pub fn queue_of(&self, ordering_key: &str) -> Result<Vec<DeliveryId>, StoreError> {
        let mut ids = Vec::new();
        for entry in self.inner.tree.scan_prefix(keys::queue_prefix(ordering_key)).values() {
            ids.extend(DeliveryId::from_slice(&entry?));
        }
        Ok(ids)
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
            Some(id) => keys::record(id),
            None => vec![keys::RECORD + 1],
        };

        let mut found = Vec::new();
        for entry in self.inner.tree.range(vec![keys::RECORD]..end).rev() {
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

    /// Up to `limit` deliveries in creation order (oldest first), starting
    /// after `after` (exclusive).
    pub fn records_after(
        &self,
        after: Option<DeliveryId>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let start = match after {
            Some(id) => {
                let mut key = keys::record(id);
                key.push(0);
                key
            }
            None => vec![keys::RECORD],
        };

        let mut found = Vec::new();
        for entry in self.inner.tree.range(start..vec![keys::RECORD + 1]).take(limit) {
            let (key, bytes) = entry?;
            if let Some(id) = DeliveryId::from_slice(&key[1..]) {
                found.push(decode(id, &bytes)?);
            }
        }
        Ok(found)
    }

    /// How many deliveries are in each state.
    pub fn counts(&self) -> Counts {
        self.inner.counts.snapshot()
    }

    /// Rounds flushed and commits they carried, since the store opened.
    pub fn activity(&self) -> (u64, u64) {
        let activity = &self.inner.activity;
        (activity.flushes.load(Ordering::Relaxed), activity.commits.load(Ordering::Relaxed))
    }

    /// Bytes the database takes on disk, as sled reports it.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.inner.tree.size_on_disk()?)
    }
}

impl Drop for Inner {
    /// Stops the writer (it finishes the jobs it has) and waits for it.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
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

/// A big-endian counter kept under a metadata key; 0 when absent.
fn read_u64(tree: &sled::Db, name: &[u8]) -> Result<u64, StoreError> {
    Ok(match tree.get(keys::meta(name))? {
        Some(bytes) => u64::from_be_bytes(bytes.as_ref().try_into().unwrap_or([0; 8])),
        None => 0,
    })
}

/// Writes the layout byte into a new store, or checks it in an old one.
///
/// sled may open a damaged database without an error and show it empty. The
/// layout byte is the first thing hookd writes, so a database file with
/// content but no layout byte is damaged (or not hookd's), and is refused
/// rather than silently treated as empty.
fn check_layout(tree: &sled::Db, path: &Path, had_data: bool) -> Result<(), StoreError> {
    let key = keys::meta(b"layout");
    match tree.get(&key)? {
        Some(found) if found.as_ref() == [STORE_FORMAT] => Ok(()),
        Some(found) => Err(StoreError::UnknownLayout {
            path: path.to_owned(),
            found: found.first().copied().unwrap_or(0),
        }),
        None if had_data => Err(StoreError::Damaged { path: path.to_owned() }),
        None => {
            tree.insert(key, &[STORE_FORMAT])?;
            tree.flush()?;
            Ok(())
        }
    }
}

impl AtomicCounts {
    fn load(tree: &sled::Db) -> Result<AtomicCounts, StoreError> {
        let counts = AtomicCounts::default();
        if let Some(bytes) = tree.get(keys::meta(b"counts"))? {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::DeadReason;

    fn delivery(key: Option<&str>, due: UnixMs) -> Delivery {
        crate::record::pending_for_test(key, due)
    }

    fn insert(delivery: &Delivery) -> Change {
        Change::Insert { delivery: Box::new(delivery.clone()), supersede: Vec::new() }
    }

    fn stored(committed: &Committed, index: usize) -> &Delivery {
        match &committed.outcomes[index] {
            Outcome::Stored(delivery) => delivery,
            other => panic!("expected a stored delivery, got {other:?}"),
        }
    }

    fn due_ids(store: &Store) -> Vec<DeliveryId> {
        let from = DueKey { due: 0, id: DeliveryId::from_bytes([0; 16]) };
        store.scan_due(from, u64::MAX, 1000).unwrap().into_iter().map(|key| key.id).collect()
    }

    #[tokio::test]
    async fn deliveries_of_one_key_wait_for_the_first_and_are_promoted_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::small()).unwrap();
        let [a, b, c] = [0, 1, 2].map(|_| delivery(Some("task-1"), 100));
        let other = delivery(Some("task-2"), 100);

        let committed = store.commit(vec![insert(&a), insert(&b)]).await.unwrap();
        assert_eq!(stored(&committed, 0).next_attempt_at, Some(100));
        assert_eq!(stored(&committed, 1).next_attempt_at, None);
        store.commit(vec![insert(&c), insert(&other)]).await.unwrap();
        assert_eq!(due_ids(&store), vec![a.id, other.id]);
        assert_eq!(store.queue_of("task-1").unwrap(), vec![a.id, b.id, c.id]);

        let mut done = store.get(a.id).unwrap().unwrap();
        done.state = State::Delivered;
        done.next_attempt_at = None;
        let committed = store.commit(vec![Change::Put(Box::new(done))]).await.unwrap();
        assert_eq!(committed.promoted.len(), 1);
        assert_eq!(committed.promoted[0].id, b.id);
        assert_eq!(due_ids(&store), vec![other.id, b.id]);
        assert_eq!(store.counts().pending, 3);
        assert_eq!(store.counts().delivered, 1);
    }

    #[tokio::test]
    async fn cancelling_a_waiting_delivery_keeps_the_first_and_skips_it_later() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::small()).unwrap();
        let [a, b, c] = [0, 1, 2].map(|_| delivery(Some("k"), 100));
        store.commit(vec![insert(&a), insert(&b), insert(&c)]).await.unwrap();

        let mut cancelled = store.get(b.id).unwrap().unwrap();
        cancelled.state = State::Cancelled;
        let committed = store.commit(vec![Change::Put(Box::new(cancelled))]).await.unwrap();
        assert!(committed.promoted.is_empty());
        assert_eq!(store.queue_of("k").unwrap(), vec![a.id, c.id]);

        let mut dead = store.get(a.id).unwrap().unwrap();
        dead.state = State::Dead;
        dead.next_attempt_at = None;
        dead.dead_reason = Some(DeadReason::Gone);
        let committed = store.commit(vec![Change::Put(Box::new(dead))]).await.unwrap();
        assert_eq!(committed.promoted.iter().map(|key| key.id).collect::<Vec<_>>(), vec![c.id]);
    }

    #[tokio::test]
    async fn a_taken_idempotency_key_writes_nothing_and_names_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::small()).unwrap();
        let mut first = delivery(None, 100);
        first.idempotency_key = Some("req-1".into());
        let mut second = delivery(None, 100);
        second.idempotency_key = Some("req-1".into());

        let committed = store.commit(vec![insert(&first), insert(&second)]).await.unwrap();
        assert!(matches!(committed.outcomes[1], Outcome::Existing(id) if id == first.id));
        assert!(store.get(second.id).unwrap().is_none());
        assert_eq!(store.counts().pending, 1);

        store.commit(vec![Change::Delete(first.id)]).await.unwrap();
        assert_eq!(store.idempotent("req-1").unwrap(), None);
        assert_eq!(store.counts().pending, 0);
        assert!(due_ids(&store).is_empty());
    }

    #[tokio::test]
    async fn queues_counts_and_sequence_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let [a, b] = [0, 1].map(|_| delivery(Some("k"), 100));
        {
            let store = Store::open(dir.path(), &StoreOptions::small()).unwrap();
            store.commit(vec![insert(&a), insert(&b)]).await.unwrap();
        }
        let store = Store::open(dir.path(), &StoreOptions::small()).unwrap();
        let c = delivery(Some("k"), 100);
        store.commit(vec![insert(&c)]).await.unwrap();

        assert_eq!(store.queue_of("k").unwrap(), vec![a.id, b.id, c.id]);
        assert_eq!(store.counts().pending, 3);
        assert_eq!(due_ids(&store), vec![a.id]);
    }

    #[test]
    fn a_second_open_of_the_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path(), &StoreOptions::small()).unwrap();
        let error = Store::open(dir.path(), &StoreOptions::small()).err().unwrap();
        assert!(matches!(error, StoreError::InUse { .. }), "{error}");
    }
}
