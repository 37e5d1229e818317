//! The timer wheel: hands out each pending delivery at its due time.
//!
//! Time is kept by tokio-util's [`DelayQueue`], a hierarchical hashed timing
//! wheel with O(1) insert and remove (ARCHITECTURE.md says why it was chosen
//! over a home-made one). This module adds what a durable scheduler needs
//! on top of it: a bounded *window* onto the store's due-time index.
//!
//! # The window
//!
//! Only deliveries due within [`HORIZON`] are held in memory, and at most
//! [`CAPACITY`] of them counting those handed out and not yet finished. The
//! invariant that makes this safe is about `scan_from`, a position in the
//! due index:
//!
//! > every pending delivery whose due key is below `scan_from` is either
//! > waiting in the queue or handed out to the dispatcher.
//!
//! A refill scans the index from `scan_from` up to now + horizon and loads
//! what it finds, moving `scan_from` forward. A newly scheduled delivery
//! below `scan_from` goes straight into the queue; when the window is full,
//! `scan_from` is moved back to it instead, and a later refill picks it up
//! (skipping what is already loaded). Start-up begins with `scan_from` at
//! zero, so overdue deliveries are loaded first, in due order, and nothing
//! is read beyond one window.
//!
//! The wheel does no IO but reading the due index through [`Store`]; it never
//! touches records or receivers.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;
use tokio_util::time::delay_queue;
use tracing::{debug, error};

use crate::clock;
use crate::id::DeliveryId;
use crate::store::{DueKey, Store};

/// Deliveries due within this much of now are held in memory.
pub const HORIZON: Duration = Duration::from_secs(60);

/// The most deliveries held in memory at once (waiting plus handed out).
pub const CAPACITY: usize = 100_000;

/// How often the window is refilled when nothing else asks for it.
const REFILL_EVERY: Duration = Duration::from_millis(500);

/// A refill reads the index in chunks of this many keys.
const SCAN_CHUNK: usize = 4096;

/// What other tasks tell the wheel.
#[derive(Debug)]
enum Command {
    /// A delivery is pending with this due key (new, or retried by hand).
    Schedule(DueKey),
    /// A delivery stopped being pending (cancelled); forget its timer.
    Unschedule(DeliveryId),
    /// The dispatcher is done with a delivery it was handed; `next` is its
    /// next due key when it is still pending.
    Finished { id: DeliveryId, next: Option<DueKey> },
    /// Answered from inside the wheel loop: proof that it is turning.
    Probe(oneshot::Sender<WindowSize>),
}

/// How many deliveries the wheel holds in memory.
#[derive(Clone, Copy, Debug, Default)]
pub struct WindowSize {
    /// Loaded and waiting for their due time.
    pub waiting: usize,
    /// Handed to the dispatcher, outcome not yet recorded.
    pub handed_out: usize,
}

/// How the API and the dispatcher talk to the wheel. Cheap to clone.
#[derive(Clone)]
pub struct WheelHandle {
    /// Read by the wheel task; sending fails only once it has stopped,
    /// which happens at shutdown, when the store keeps the due time anyway.
    commands: mpsc::UnboundedSender<Command>,
}

impl WheelHandle {
    pub fn schedule(&self, key: DueKey) {
        let _ = self.commands.send(Command::Schedule(key));
    }

    /// Schedules several, for example the deliveries a commit promoted to
    /// the head of their key's queue.
    pub fn schedule_all(&self, keys: &[DueKey]) {
        keys.iter().for_each(|key| self.schedule(*key));
    }

    pub fn unschedule(&self, id: DeliveryId) {
        let _ = self.commands.send(Command::Unschedule(id));
    }

    pub fn finished(&self, id: DeliveryId, next: Option<DueKey>) {
        let _ = self.commands.send(Command::Finished { id, next });
    }

    /// Asks the wheel loop to answer; `None` when it has stopped.
    pub async fn probe(&self) -> Option<WindowSize> {
        let (answer, wait) = oneshot::channel();
        self.commands.send(Command::Probe(answer)).ok()?;
        wait.await.ok()
    }
}

/// The wheel task's state.
pub struct Wheel {
    store: Store,
    queue: DelayQueue<DueKey>,
    /// Deliveries waiting in `queue`, with their queue keys for removal.
    waiting: HashMap<DeliveryId, delay_queue::Key>,
    /// Deliveries handed to the dispatcher whose `Finished` has not come.
    handed_out: HashSet<DeliveryId>,
    /// See the module docs: everything pending below this is in memory.
    scan_from: DueKey,
    /// Set when the last refill stopped because the window was full.
    backlogged: bool,
    /// The most deliveries held at once; [`CAPACITY`] outside tests.
    capacity: usize,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Due deliveries go here; the dispatcher holds the receiver.
    due: mpsc::UnboundedSender<DueKey>,
}

impl Wheel {
    /// A wheel over `store`, its handle, and the stream of due deliveries.
    pub fn new(store: Store) -> (Wheel, WheelHandle, mpsc::UnboundedReceiver<DueKey>) {
        Wheel::with_capacity(store, CAPACITY)
    }

    /// As [`Wheel::new`], holding at most `capacity` deliveries in memory.
    pub fn with_capacity(
        store: Store,
        capacity: usize,
    ) -> (Wheel, WheelHandle, mpsc::UnboundedReceiver<DueKey>) {
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let (due, due_rx) = mpsc::unbounded_channel();
        let wheel = Wheel {
            store,
            queue: DelayQueue::new(),
            waiting: HashMap::new(),
            handed_out: HashSet::new(),
            scan_from: DueKey { due: 0, id: DeliveryId::from_bytes([0; 16]) },
            backlogged: false,
            capacity: capacity.max(1),
            commands,
            due,
        };
        (wheel, WheelHandle { commands: commands_tx }, due_rx)
    }

    /// Runs until `shutdown` is cancelled or the dispatcher goes away.
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.refill();
        let mut ticker = tokio::time::interval(REFILL_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(command) = self.commands.recv() => self.handle(command),
                Some(expired) = self.queue.next(), if !self.queue.is_empty() => {
                    if !self.hand_out(expired.into_inner()) {
                        break;
                    }
                }
                _ = ticker.tick() => self.refill(),
            }
        }
        debug!(waiting = self.waiting.len(), handed_out = self.handed_out.len(), "wheel stopped");
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Schedule(key) => self.schedule(key),
            Command::Unschedule(id) => {
                if let Some(queue_key) = self.waiting.remove(&id) {
                    self.queue.remove(&queue_key);
                }
            }
            Command::Probe(answer) => {
                let size =
                    WindowSize { waiting: self.waiting.len(), handed_out: self.handed_out.len() };
                let _ = answer.send(size);
            }
            Command::Finished { id, next } => {
                self.handed_out.remove(&id);
                if let Some(key) = next {
                    self.schedule(key);
                }
                if self.backlogged && self.room() >= SCAN_CHUNK.min(self.capacity.div_ceil(4)) {
                    self.refill();
                }
            }
        }
    }

    /// Passes a due delivery to the dispatcher; false once it is gone.
    fn hand_out(&mut self, key: DueKey) -> bool {
        self.waiting.remove(&key.id);
        self.handed_out.insert(key.id);
        self.due.send(key).is_ok()
    }

    fn schedule(&mut self, key: DueKey) {
        if self.handed_out.contains(&key.id) {
            // Its `Finished` will carry the next due key.
            return;
        }
        if let Some(queue_key) = self.waiting.remove(&key.id) {
            self.queue.remove(&queue_key);
        }

        if key >= self.scan_from {
            return;
        }
        if self.room() > 0 {
            self.load(key);
        } else {
            self.scan_from = key;
            self.backlogged = true;
        }
    }

    /// Loads due keys from the index into the window, in due order.
    fn refill(&mut self) {
        crate::crash::point("wheel.refill");
        let until = clock::after(clock::now_ms(), HORIZON);
        let mut exhausted = false;

        while self.room() > 0 {
            let chunk = match self.store.scan_due(self.scan_from, until, SCAN_CHUNK) {
                Ok(chunk) => chunk,
                Err(error) => {
                    error!(%error, "cannot read the due index; will try again");
                    return;
                }
            };

            let complete = chunk.len() < SCAN_CHUNK;
            for key in chunk {
                if self.room() == 0 {
                    break;
                }
                if !self.waiting.contains_key(&key.id) && !self.handed_out.contains(&key.id) {
                    self.load(key);
                }
                self.scan_from = successor(key);
            }
            if complete && self.room() > 0 {
                exhausted = true;
                break;
            }
        }

        if exhausted {
            self.scan_from = self
                .scan_from
                .max(DueKey { due: until.saturating_add(1), id: DeliveryId::from_bytes([0; 16]) });
        }
        self.backlogged = !exhausted;
    }

    fn load(&mut self, key: DueKey) {
        let deadline = Instant::now() + clock::until(key.due, clock::now_ms());
        let queue_key = self.queue.insert_at(key, deadline);
        self.waiting.insert(key.id, queue_key);
    }

    fn room(&self) -> usize {
        self.capacity.saturating_sub(self.waiting.len() + self.handed_out.len())
    }
}

/// The smallest due key after `key`.
fn successor(key: DueKey) -> DueKey {
    let id = u128::from_be_bytes(key.id.to_bytes());
    match id.checked_add(1) {
        Some(next) => DueKey { due: key.due, id: DeliveryId::from_bytes(next.to_be_bytes()) },
        None => DueKey { due: key.due.saturating_add(1), id: DeliveryId::from_bytes([0; 16]) },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::record::{Delivery, State};
    use crate::store::Change;

    #[test]
    fn successor_is_the_next_key() {
        let id = DeliveryId::from_bytes([0xff; 16]);
        let key = DueKey { due: 5, id };
        assert_eq!(successor(key), DueKey { due: 6, id: DeliveryId::from_bytes([0; 16]) });

        let mut bytes = [0; 16];
        bytes[15] = 1;
        let key = DueKey { due: 5, id: DeliveryId::from_bytes([0; 16]) };
        assert_eq!(successor(key), DueKey { due: 5, id: DeliveryId::from_bytes(bytes) });
        assert!(successor(key) > key);
    }

    fn pending(due: clock::UnixMs) -> Delivery {
        crate::record::pending_for_test(None, due)
    }

    /// Plays the whole life of a wheel over a real store: `stored` offsets
    /// (ms from now, negative = overdue) are in the store before the wheel
    /// starts, `live` ones are submitted while it runs. Each delivery must
    /// be handed out exactly once and never before its due time, whatever
    /// the capacity of the window.
    async fn every_delivery_is_handed_out_once_and_on_time(
        stored: Vec<i64>,
        live: Vec<i64>,
        capacity: usize,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &crate::store::StoreOptions::small()).unwrap();
        let now = clock::now_ms() as i64;

        let mut expected: HashMap<DeliveryId, clock::UnixMs> = HashMap::new();
        let records: Vec<Delivery> =
            stored.iter().map(|offset| pending((now + offset).max(0) as u64)).collect();
        for record in &records {
            expected.insert(record.id, record.next_attempt_at.unwrap());
        }
        store
            .commit(records.into_iter().map(|r| Change::Put(Box::new(r))).collect())
            .await
            .unwrap();

        let (wheel, handle, mut due) = Wheel::with_capacity(store.clone(), capacity);
        let stop = CancellationToken::new();
        let task = tokio::spawn(wheel.run(stop.clone()));

        for offset in &live {
            let record = pending((clock::now_ms() as i64 + offset).max(0) as u64);
            let key = DueKey { due: record.next_attempt_at.unwrap(), id: record.id };
            expected.insert(record.id, key.due);
            store.commit(vec![Change::Put(Box::new(record))]).await.unwrap();
            handle.schedule(key);
        }

        let mut seen = HashMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while seen.len() < expected.len() {
            let key = tokio::time::timeout_at(deadline, due.recv())
                .await
                .expect("every delivery is handed out within 10 s")
                .unwrap();
            assert!(clock::now_ms() + 1 >= key.due, "handed out before its due time");
            assert_eq!(expected.get(&key.id), Some(&key.due));
            assert!(seen.insert(key.id, key.due).is_none(), "handed out twice");

            // Play the dispatcher: the delivery is done, take it off the index.
            let mut record = store.get(key.id).unwrap().unwrap();
            record.state = State::Delivered;
            record.next_attempt_at = None;
            store.commit(vec![Change::Put(Box::new(record))]).await.unwrap();
            handle.finished(key.id, None);
        }

        // Nothing more comes out once everything was handed out.
        let extra = tokio::time::timeout(Duration::from_millis(300), due.recv()).await;
        assert!(extra.is_err(), "a delivery came out twice: {extra:?}");
        stop.cancel();
        task.await.unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

        #[test]
        fn wheel_hands_out_each_delivery_once_on_time(
            stored in proptest::collection::vec(-2000i64..400, 0..40),
            live in proptest::collection::vec(-500i64..400, 0..40),
            capacity in 1usize..12,
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(every_delivery_is_handed_out_once_and_on_time(stored, live, capacity));
        }
    }
}
