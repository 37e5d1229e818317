//! The dispatcher: runs attempts for due deliveries, within the in-flight
//! limits, and records each outcome before the next attempt is scheduled.
//!
//! For every due key the wheel hands out, one task:
//!
//! 1. waits for a slot of the destination (`max_in_flight_per_host`, per
//!    scheme://host:port), then for a global slot (`max_in_flight`). The host
//!    slot comes first so that tasks queued behind one slow host hold no
//!    global slot and cannot starve the other hosts;
//! 2. takes the delivery's [claim](crate::claims) and re-reads the record:
//!    a delivery cancelled meanwhile is skipped;
//! 3. makes the attempt through [`Sender`]. Both slots are kept until the
//!    outcome is on disk: giving the host slot back when the exchange ends
//!    let a timed-out attempt's connection still be open while the next
//!    one to that host started (so a host got more than its slots), and
//!    gained no measurable speed (BENCHMARKS.md);
//! 4. asks [`schedule::decide`] what comes next, commits the attempt and the
//!    new state in one durable write, and only then tells the wheel the next
//!    due time. A crash before the commit costs a repeated attempt, never a
//!    lost one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::attempt::{AttemptReport, Sender};
use crate::claims::Claims;
use crate::clock;
use crate::config::DeliverySettings;
use crate::id::DeliveryId;
use crate::metrics::Metrics;
use crate::record::{Attempt, Delivery, State};
use crate::schedule::{self, Next};
use crate::store::{Change, DueKey, Outcome, Store, StoreError};
use crate::wheel::WheelHandle;

/// After a failed store write, the delivery is tried again this much later
/// rather than at once, so a broken disk does not become a hot loop.
const STORE_FAILURE_BACKOFF: Duration = Duration::from_secs(5);

/// Shared state of all attempt tasks.
pub struct Dispatcher {
    store: Store,
    sender: Sender,
    claims: Arc<Claims>,
    wheel: WheelHandle,
    /// `max_in_flight` slots over all destinations.
    global: Arc<Semaphore>,
    /// One semaphore of `per_host` slots for each destination that has
    /// attempts queued or running; removed when nobody holds it.
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
    per_host: usize,
    retry_after_cap: Duration,
    /// Attempts running right now (a gauge for health and status lines).
    in_flight: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl Dispatcher {
    /// `limits` gives `max_in_flight`, `max_in_flight_per_host` and
    /// `retry_after_cap`.
    pub fn new(
        store: Store,
        sender: Sender,
        claims: Arc<Claims>,
        wheel: WheelHandle,
        limits: &DeliverySettings,
        metrics: Arc<Metrics>,
    ) -> Arc<Dispatcher> {
        Arc::new(Dispatcher {
            store,
            sender,
            claims,
            wheel,
            global: Arc::new(Semaphore::new(limits.max_in_flight)),
            hosts: Mutex::new(HashMap::new()),
            per_host: limits.max_in_flight_per_host,
            retry_after_cap: limits.retry_after_cap,
            in_flight: AtomicUsize::new(0),
            metrics,
        })
    }

    /// How many attempts are running.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Starts a task for every due key until `shutdown`; the tasks are
    /// tracked by `tasks` so shutdown can wait for them.
    pub async fn run(
        self: Arc<Self>,
        mut due: mpsc::UnboundedReceiver<DueKey>,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) {
        loop {
            let key = tokio::select! {
                () = shutdown.cancelled() => break,
                key = due.recv() => match key {
                    Some(key) => key,
                    None => break,
                },
            };
            let dispatcher = self.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move { dispatcher.deliver(key, shutdown).await });
        }
    }

    /// Everything that happens to one due key.
    async fn deliver(self: Arc<Self>, key: DueKey, shutdown: CancellationToken) {
        // Only the host is kept while waiting for slots, not the record: a
        // backlog of many waiting tasks then costs little memory.
        let host = match self.read_pending(key) {
            Ok(Some(first_look)) => host_key(&first_look.url),
            unready => return self.put_back(key, unready.err()),
        };

        // Waiting for slots ends with shutdown: the delivery stays pending
        // on disk and goes out after the restart.
        let slots = tokio::select! {
            () = shutdown.cancelled() => return,
            slots = self.slots(&host) => slots,
        };

        let claim = self.claims.claim(key.id).await;
        let delivery = match self.read_pending(key) {
            Ok(Some(delivery)) => delivery,
            unready => {
                drop(claim);
                drop(slots);
                self.release_host(&host);
                return self.put_back(key, unready.err());
            }
        };

        let next = self.attempt(delivery, key.due, &host).await;

        drop(claim);
        drop(slots);
        self.release_host(&host);
        self.wheel.finished(key.id, next);
    }

    /// Makes the attempt and stores its outcome; returns the next due key.
    async fn attempt(
        &self,
        mut delivery: Delivery,
        due: clock::UnixMs,
        host: &str,
    ) -> Option<DueKey> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let report = self.sender.send(&delivery).await;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);

        let late_ms = report.started_at.saturating_sub(due);
        self.metrics.attempted(
            report.class,
            report.duration.as_secs_f64(),
            late_ms as f64 / 1000.0,
        );

        let ended_at = clock::now_ms();
        let delays: Vec<Duration> =
            delivery.retry_delays_ms.iter().map(|&ms| Duration::from_millis(ms)).collect();
        let number = delivery.attempts.len() as u32 + 1;
        delivery.attempts.push(attempt_record(number, &report));
        let next = schedule::decide(
            report.outcome,
            delivery.attempts_in_round(),
            &delays,
            self.retry_after_cap,
            ended_at,
        );
        apply(&mut delivery, next, ended_at);
        log_outcome(&Logged { id: delivery.id, attempt: number, host }, &report, next, ended_at);
        match next {
            Next::Delivered => self.metrics.finished("delivered"),
            Next::Dead(_) => self.metrics.finished("dead"),
            Next::Retry { .. } => {}
        }

        let id = delivery.id;
        crate::crash::point("dispatch.before_record");
        match self.store.commit(vec![Change::Put(Box::new(delivery))]).await {
            Ok(committed) => {
                crate::crash::point("dispatch.before_schedule");
                // A final delivery lets the next one of its key go.
                self.wheel.schedule_all(&committed.promoted);
                committed.outcomes.into_iter().find_map(|outcome| match outcome {
                    Outcome::Stored(stored) => stored.next_attempt_at.map(|due| DueKey { due, id }),
                    _ => None,
                })
            }
            Err(error) => {
                // The store still holds the record as it was before this
                // attempt, pending; try it again a little later.
                error!(%error, "cannot record the attempt; it will be made again");
                Some(DueKey { due: clock::after(ended_at, STORE_FAILURE_BACKOFF), id })
            }
        }
    }

    /// The record, if it is still pending and due (not waiting behind an
    /// earlier delivery of its key).
    fn read_pending(&self, key: DueKey) -> Result<Option<Delivery>, StoreError> {
        let delivery = self.store.get(key.id)?;
        Ok(delivery.filter(|delivery| {
            delivery.state == State::Pending && delivery.next_attempt_at.is_some()
        }))
    }

    /// Hands a due key back to the wheel without an attempt: for good when
    /// the delivery is no longer due, or for a later try when its record
    /// could not be read (a read error must not strand a delivery).
    fn put_back(&self, key: DueKey, error: Option<StoreError>) {
        let later = error.map(|error| {
            error!(delivery_id = %key.id, %error, "cannot read a due delivery; will try it again");
            DueKey { due: clock::after(clock::now_ms(), STORE_FAILURE_BACKOFF), id: key.id }
        });
        self.wheel.finished(key.id, later);
    }

    /// A host slot, then a global slot (see the module docs for the order).
    async fn slots(&self, host: &str) -> (OwnedSemaphorePermit, OwnedSemaphorePermit) {
        let host_slots = {
            let mut hosts = self.hosts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            hosts
                .entry(host.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_host)))
                .clone()
        };

        // Neither semaphore is ever closed, so acquiring cannot fail.
        let host_permit = host_slots.acquire_owned().await.expect("host semaphore is never closed");
        let global_permit =
            self.global.clone().acquire_owned().await.expect("global semaphore is never closed");
        (host_permit, global_permit)
    }

    /// Forgets a host's semaphore once no task holds or waits for it.
    fn release_host(&self, host: &str) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if hosts.get(host).is_some_and(|slots| Arc::strong_count(slots) == 1) {
            hosts.remove(host);
        }
    }
}

fn attempt_record(number: u32, report: &AttemptReport) -> Attempt {
    Attempt {
        number,
        started_at: report.started_at,
        duration_ms: report.duration.as_millis() as u64,
        status: report.status,
        error: report.error.clone(),
        response_excerpt: report.excerpt.clone(),
    }
}

/// Moves the delivery to the state `next` says.
fn apply(delivery: &mut Delivery, next: Next, now: clock::UnixMs) {
    delivery.updated_at = now;
    match next {
        Next::Delivered => {
            delivery.state = State::Delivered;
            delivery.next_attempt_at = None;
        }
        Next::Retry { at } => {
            delivery.state = State::Pending;
            delivery.next_attempt_at = Some(at);
        }
        Next::Dead(reason) => {
            delivery.state = State::Dead;
            delivery.next_attempt_at = None;
            delivery.dead_reason = Some(reason);
        }
    }
}

/// Which attempt an outcome event is about.
struct Logged<'a> {
    id: DeliveryId,
    attempt: u32,
    host: &'a str,
}

/// One event per attempt: delivered at info, a retry at warn, dead at
/// error, each with the delivery id, attempt number and host as fields.
///
/// The ids are fields of the event, not of a span around the attempt: an
/// info span per attempt cost about a tenth of the CPU per delivery, the
/// event alone nothing measurable (BENCHMARKS.md).
fn log_outcome(about: &Logged, report: &AttemptReport, next: Next, now: clock::UnixMs) {
    let Logged { id, attempt, host } = about;
    let elapsed_ms = report.duration.as_millis() as u64;
    let status = report.status;
    let error = report.error.as_deref();
    match next {
        Next::Delivered => {
            info!(delivery_id = %id, attempt, host, status, elapsed_ms, "delivered")
        }
        Next::Retry { at } => {
            let retry_in_ms = at.saturating_sub(now);
            warn!(
                delivery_id = %id, attempt, host, status, error, elapsed_ms, retry_in_ms,
                "attempt failed; retry scheduled"
            )
        }
        Next::Dead(reason) => {
            error!(
                delivery_id = %id, attempt, host, status, error, elapsed_ms,
                reason = reason.as_str(), "delivery is dead"
            )
        }
    }
    debug!(delivery_id = %id, excerpt = report.excerpt.as_deref(), "response body");
}

/// `scheme://host:port`, the unit of `max_in_flight_per_host`.
pub fn host_key(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => format!(
            "{}://{}:{}",
            parsed.scheme(),
            parsed.host_str().unwrap_or(""),
            parsed.port_or_known_default().unwrap_or(0)
        ),
        Err(_) => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys_name_scheme_host_and_port() {
        assert_eq!(host_key("https://example.com/a?b"), "https://example.com:443");
        assert_eq!(host_key("http://example.com/"), "http://example.com:80");
        assert_eq!(host_key("http://127.0.0.1:8080/x"), "http://127.0.0.1:8080");
    }
}
