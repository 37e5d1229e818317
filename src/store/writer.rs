//! The single writer thread: applies every change and flushes.
//!
//! A round takes every job that is waiting, applies their changes through
//! an [`Overlay`] (so a change sees the ones before it in the same round),
//! writes the overlay as one atomic `sled::Batch`, flushes once, and
//! answers every job. The rules that keep the indexes right live here:
//!
//! - a record has a due entry exactly when its `next_attempt_at` is set;
//! - a pending record with an ordering key has one queue entry; only the
//!   first of its key's queue may have a due time, the rest wait with none;
//! - when a queued record becomes final its entry goes, and the next one of
//!   the key is *promoted*: it gets its due time in the same batch;
//! - an insert whose idempotency key is taken writes nothing and names the
//!   delivery that has it;
//! - the state counters and the queue sequence move with each change;
//! - every round carries its number, and the [`witness`](super::witness)
//!   learns the numbers of flushed rounds;
//! - new deliveries that would take the disk below the free-space reserve
//!   are refused before anything is written ([`space`](super::space)).

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Arc, atomic::AtomicU64, atomic::Ordering};

use tokio::sync::watch;
use tracing::{debug, error};

use super::space::{self, Reserve};
use super::witness::Witness;
use super::{
    Activity, AtomicCounts, Change, Committed, DueKey, Job, Outcome, StoreError, keys, state_index,
};
use crate::clock;
use crate::id::DeliveryId;
use crate::record::{self, Delivery};

/// At most this many jobs are applied in one batch and one flush.
const MAX_JOBS_PER_ROUND: usize = 8192;

pub(super) struct Writer {
    pub tree: sled::Db,
    pub counts: Arc<AtomicCounts>,
    /// The last queue sequence number handed out; persisted with each round.
    pub sequence: Arc<AtomicU64>,
    /// The number of the last round flushed; persisted with each round.
    pub round: u64,
    pub witness: Witness,
    pub reserve: Reserve,
    /// Told the cause when a write fails: sled will not recover in process.
    pub failure: Arc<watch::Sender<Option<String>>>,
    pub activity: Arc<Activity>,
}

impl Writer {
    pub fn run(mut self, jobs: mpsc::Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            let mut round = vec![first];
            while round.len() < MAX_JOBS_PER_ROUND {
                match jobs.try_recv() {
                    Ok(job) => round.push(job),
                    Err(_) => break,
                }
            }

            let mut round = self.refuse_what_does_not_fit(round);
            if round.is_empty() {
                continue;
            }

            let changes: Vec<Vec<Change>> =
                round.iter_mut().map(|job| std::mem::take(&mut job.changes)).collect();
            match self.apply(changes) {
                Ok(answers) => {
                    self.activity.flushes.fetch_add(1, Ordering::Relaxed);
                    self.activity.commits.fetch_add(round.len() as u64, Ordering::Relaxed);
                    for (job, answer) in round.into_iter().zip(answers) {
                        let _ = job.done.send(Ok(answer));
                    }
                    self.witness.flushed(self.round, false);
                }
                Err(error) => {
                    error!(%error, jobs = round.len(), "store write failed");
                    if matches!(error, StoreError::Sled(_)) {
                        self.failure.send_if_modified(|failure| {
                            failure.get_or_insert_with(|| error.to_string());
                            true
                        });
                    }
                    let error = Arc::new(error);
                    for job in round {
                        let _ = job.done.send(Err(StoreError::Write(error.clone())));
                    }
                }
            }
        }

        self.witness.flushed(self.round, true);
        debug!(round = self.round, "store writer stopped");
    }

    /// Answers the jobs that insert new deliveries with
    /// [`StoreError::LowSpace`] when the round's new deliveries would take
    /// the disk below the reserve; returns the jobs that go ahead.
    fn refuse_what_does_not_fit(&mut self, round: Vec<Job>) -> Vec<Job> {
        let (mut payload_bytes, mut deliveries) = (0u64, 0u64);
        for change in round.iter().flat_map(|job| &job.changes) {
            if let Change::Insert { delivery, .. } = change {
                payload_bytes += delivery.payload.len() as u64;
                deliveries += 1;
            }
        }
        if deliveries == 0 {
            return round;
        }

        let Err(free) = self.reserve.admit(space::estimate(payload_bytes, deliveries)) else {
            return round;
        };
        let min_free = self.reserve.min_free();
        let (refused, admitted): (Vec<Job>, Vec<Job>) = round.into_iter().partition(|job| {
            job.changes.iter().any(|change| matches!(change, Change::Insert { .. }))
        });
        for job in refused {
            let _ = job.done.send(Err(StoreError::LowSpace { free, min_free }));
        }
        admitted
    }

    /// One round: apply, write one batch, flush; then publish the counters.
    fn apply(&mut self, jobs: Vec<Vec<Change>>) -> Result<Vec<Committed>, StoreError> {
        let mut round = Round {
            overlay: Overlay::new(&self.tree),
            delta: [0; 5],
            sequence: self.sequence.load(Ordering::Relaxed),
            now: clock::now_ms(),
        };

        let mut answers = Vec::with_capacity(jobs.len());
        for changes in jobs {
            let mut committed = Committed::default();
            for change in changes {
                crate::crash::point("store.mid_round");
                let outcome = round.change(change, &mut committed.promoted)?;
                committed.outcomes.push(outcome);
            }
            answers.push(committed);
        }

        let counts = self.counts.moved_by(&round.delta);
        round.overlay.put(keys::meta(b"counts"), counts.to_bytes());
        round.overlay.put(keys::meta(b"sequence"), round.sequence.to_be_bytes().to_vec());
        let number = self.round + 1;
        round.overlay.put(keys::meta(b"round"), number.to_be_bytes().to_vec());
        self.tree.apply_batch(round.overlay.into_batch())?;
        crate::crash::point("store.before_flush");

        // Reads see the batch from here on, before it is flushed; the
        // counters follow at once so that they agree with what reads see.
        self.counts.store(&counts);
        self.sequence.store(round.sequence, Ordering::Relaxed);
        self.tree.flush()?;
        self.round = number;
        Ok(answers)
    }
}

/// The state of one round while its changes are applied.
struct Round<'a> {
    overlay: Overlay<'a>,
    delta: [i64; 5],
    sequence: u64,
    now: clock::UnixMs,
}

impl Round<'_> {
    fn change(
        &mut self,
        change: Change,
        promoted: &mut Vec<DueKey>,
    ) -> Result<Outcome, StoreError> {
        match change {
            Change::Insert { delivery, supersede } => {
                if let Some(key) = &delivery.idempotency_key {
                    let taken = self.overlay.get(&keys::idempotency(key))?;
                    if let Some(id) = taken.as_deref().and_then(DeliveryId::from_slice) {
                        return Ok(Outcome::Existing(id));
                    }
                }

                for older in supersede {
                    self.put(older, promoted)?;
                }
                let id = delivery.id;
                if let Some(key) = &delivery.idempotency_key {
                    self.overlay.put(keys::idempotency(key), id.to_bytes().to_vec());
                }
                let stored = self.put(*delivery, promoted)?;
                Ok(Outcome::Stored(Box::new(stored)))
            }
            Change::Put(delivery) => {
                let stored = self.put(*delivery, promoted)?;
                Ok(Outcome::Stored(Box::new(stored)))
            }
            Change::Delete(id) => {
                self.delete(id, promoted)?;
                Ok(Outcome::Deleted)
            }
        }
    }

    /// Writes `delivery`, moving its index entries and the counters; returns
    /// it as stored (the queue may have taken its due time away).
    fn put(
        &mut self,
        mut delivery: Delivery,
        promoted: &mut Vec<DueKey>,
    ) -> Result<Delivery, StoreError> {
        let id = delivery.id;
        let old = self.overlay.record(id)?;
        if let Some(old) = &old {
            self.forget_indexes(old);
        }

        let was_queued = old.as_ref().is_some_and(is_queued);
        let queued = is_queued(&delivery);
        let key = delivery.key.clone().unwrap_or_default();
        match (was_queued, queued) {
            (false, true) => {
                self.sequence += 1;
                delivery.key_seq = Some(self.sequence);
                self.overlay.put(keys::queue(&key, self.sequence), id.to_bytes().to_vec());
                if self.first_of(&key)? != Some(id) {
                    delivery.next_attempt_at = None;
                }
            }
            (true, true) => delivery.key_seq = old.as_ref().and_then(|old| old.key_seq),
            (true, false) => {
                if let Some(seq) = old.as_ref().and_then(|old| old.key_seq) {
                    self.overlay.remove(keys::queue(&key, seq));
                }
                delivery.key_seq = None;
            }
            (false, false) => delivery.key_seq = None,
        }

        self.write(&delivery)?;
        if was_queued && !queued {
            self.promote(&key, promoted)?;
        }
        Ok(delivery)
    }

    fn delete(&mut self, id: DeliveryId, promoted: &mut Vec<DueKey>) -> Result<(), StoreError> {
        let Some(old) = self.overlay.record(id)? else { return Ok(()) };
        self.forget_indexes(&old);
        self.overlay.remove(keys::record(id));

        if let Some(key) = &old.idempotency_key {
            let index = keys::idempotency(key);
            if self.overlay.get(&index)?.as_deref() == Some(&id.to_bytes()[..]) {
                self.overlay.remove(index);
            }
        }
        if let (true, Some(key), Some(seq)) = (is_queued(&old), &old.key, old.key_seq) {
            self.overlay.remove(keys::queue(key, seq));
            self.promote(key, promoted)?;
        }
        Ok(())
    }

    /// Gives the first delivery of `key` its due time if it has none.
    fn promote(&mut self, key: &str, promoted: &mut Vec<DueKey>) -> Result<(), StoreError> {
        let Some(id) = self.first_of(key)? else { return Ok(()) };
        let Some(mut next) = self.overlay.record(id)? else { return Ok(()) };
        if next.state.is_final() || next.next_attempt_at.is_some() {
            return Ok(());
        }

        self.forget_indexes(&next);
        let due = next.not_before.max(self.now);
        next.next_attempt_at = Some(due);
        self.write(&next)?;
        promoted.push(DueKey { due, id });
        Ok(())
    }

    /// Removes the due entry of a stored record and takes it off the counts.
    fn forget_indexes(&mut self, old: &Delivery) {
        self.delta[state_index(old.state)] -= 1;
        if let Some(due) = old.next_attempt_at {
            self.overlay.remove(keys::due(DueKey { due, id: old.id }));
        }
    }

    /// Writes the record and its due entry and counts it.
    fn write(&mut self, delivery: &Delivery) -> Result<(), StoreError> {
        let bytes = record::encode(delivery)
            .map_err(|source| StoreError::Codec { id: delivery.id.to_string(), source })?;
        self.overlay.put(keys::record(delivery.id), bytes);
        if let Some(due) = delivery.next_attempt_at {
            self.overlay.put(keys::due(DueKey { due, id: delivery.id }), Vec::new());
        }
        self.delta[state_index(delivery.state)] += 1;
        Ok(())
    }

    fn first_of(&self, key: &str) -> Result<Option<DeliveryId>, StoreError> {
        let first = self.overlay.first_with_prefix(&keys::queue_prefix(key))?;
        Ok(first.and_then(|value| DeliveryId::from_slice(&value)))
    }
}

/// A pending delivery with an ordering key stands in its key's queue.
fn is_queued(delivery: &Delivery) -> bool {
    delivery.key.is_some() && !delivery.state.is_final()
}

/// Writes of the current round over the tree: reads see both, the round's
/// own writes first.
struct Overlay<'a> {
    tree: &'a sled::Db,
    /// `Some` is a pending insert, `None` a pending removal.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> Overlay<'a> {
    fn new(tree: &'a sled::Db) -> Overlay<'a> {
        Overlay { tree, writes: BTreeMap::new() }
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.writes.get(key) {
            Some(write) => Ok(write.clone()),
            None => Ok(self.tree.get(key)?.map(|value| value.to_vec())),
        }
    }

    fn record(&self, id: DeliveryId) -> Result<Option<Delivery>, StoreError> {
        match self.get(&keys::record(id))? {
            Some(bytes) => super::decode(id, &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    fn remove(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    /// The value of the smallest live key starting with `prefix`.
    fn first_with_prefix(&self, prefix: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let mut from_tree = None;
        for entry in self.tree.scan_prefix(prefix) {
            let (key, value) = entry?;
            match self.writes.get(key.as_ref()) {
                Some(None) => continue,
                Some(Some(newer)) => from_tree = Some((key.to_vec(), newer.clone())),
                None => from_tree = Some((key.to_vec(), value.to_vec())),
            }
            break;
        }

        let from_round = self
            .writes
            .range(prefix.to_vec()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .find_map(|(key, value)| value.as_ref().map(|value| (key.clone(), value.clone())));

        let first = match (from_tree, from_round) {
            (Some(tree), Some(round)) => Some(if tree.0 <= round.0 { tree } else { round }),
            (tree, round) => tree.or(round),
        };
        Ok(first.map(|(_, value)| value))
    }

    fn into_batch(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (key, write) in self.writes {
            match write {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        batch
    }
}
