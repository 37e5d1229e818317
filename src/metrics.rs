//! Prometheus metrics, served at `GET /metrics`.
//!
//! Counters and histograms are updated where the work happens (the API
//! counts submissions, the dispatcher attempts and their timing); gauges
//! that mirror stored state (pending, dead, store size) are read from the
//! store when scraped, so they cannot drift. Labels are a few fixed words,
//! never a URL, host or id, so the series count stays constant.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::recent::{Event, Recent};
use crate::store::Counts;

/// How an attempt ended, as the `outcome` label says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptClass {
    Success,
    HttpError,
    Timeout,
    ConnectError,
    TlsError,
    Denied,
}

impl AttemptClass {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptClass::Success => "success",
            AttemptClass::HttpError => "http_error",
            AttemptClass::Timeout => "timeout",
            AttemptClass::ConnectError => "connect_error",
            AttemptClass::TlsError => "tls_error",
            AttemptClass::Denied => "denied",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// Every metric hookd exports.
pub struct Metrics {
    registry: Registry,
    submissions: Counter,
    attempts: Family<OutcomeLabel, Counter>,
    finished: Family<StateLabel, Counter>,
    attempt_seconds: Histogram,
    lateness_seconds: Histogram,
    pending: Gauge,
    in_flight: Gauge,
    dead: Gauge,
    due_now: Gauge,
    store_bytes: Gauge<u64, AtomicU64>,
    store_flushes: Counter,
    store_commits: Counter,
    /// Serialises scrapes: the store counters are brought up to date by
    /// adding what changed since the last scrape.
    scrape: std::sync::Mutex<()>,
    /// The last minute's submissions, deliveries and failed attempts.
    pub recent: Recent,
}

/// Values read when a scrape comes in.
pub struct Snapshot {
    pub counts: Counts,
    pub in_flight: usize,
    /// Pending deliveries whose due time has passed (capped by the caller).
    pub due_now: u64,
    pub store_bytes: u64,
    /// [`crate::store::Store::activity`]: rounds flushed, commits carried.
    pub store_activity: (u64, u64),
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("hookd");
        let submissions = Counter::default();
        let attempts = Family::<OutcomeLabel, Counter>::default();
        let finished = Family::<StateLabel, Counter>::default();
        // 1 ms to about 65 s: attempts end by their timeout (at most 60 s).
        let attempt_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        // 1 ms to about 16 s late.
        let lateness_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let pending = Gauge::default();
        let in_flight = Gauge::default();
        let dead = Gauge::default();
        let due_now = Gauge::default();
        let store_bytes = Gauge::<u64, AtomicU64>::default();
        let store_flushes = Counter::default();
        let store_commits = Counter::default();

        registry.register("submissions", "Deliveries accepted (stored)", submissions.clone());
        registry.register("attempts", "Attempts by outcome", attempts.clone());
        registry.register(
            "deliveries_finished",
            "Deliveries that reached a final state",
            finished.clone(),
        );
        registry.register(
            "attempt_duration_seconds",
            "How long attempts took",
            attempt_seconds.clone(),
        );
        registry.register(
            "schedule_lateness_seconds",
            "How late attempts started after their due time",
            lateness_seconds.clone(),
        );
        registry.register("pending", "Deliveries waiting for an attempt", pending.clone());
        registry.register("in_flight", "Attempts running now", in_flight.clone());
        registry.register("dead", "Deliveries kept as dead", dead.clone());
        registry.register("due_now", "Pending deliveries already due", due_now.clone());
        registry.register("store_size_bytes", "Size of the database on disk", store_bytes.clone());
        registry.register(
            "store_flushes",
            "Durable writes of the store, one fsync each",
            store_flushes.clone(),
        );
        registry.register(
            "store_commits",
            "Commits those writes carried (per flush: the group-commit factor)",
            store_commits.clone(),
        );

        // Every label value exists from the start, so a scrape shows zeros
        // rather than missing series.
        for class in [
            AttemptClass::Success,
            AttemptClass::HttpError,
            AttemptClass::Timeout,
            AttemptClass::ConnectError,
            AttemptClass::TlsError,
            AttemptClass::Denied,
        ] {
            drop(attempts.get_or_create(&OutcomeLabel { outcome: class.as_str() }));
        }
        for state in ["delivered", "dead", "cancelled", "superseded"] {
            drop(finished.get_or_create(&StateLabel { state }));
        }

        Metrics {
            registry,
            submissions,
            attempts,
            finished,
            attempt_seconds,
            lateness_seconds,
            pending,
            in_flight,
            dead,
            due_now,
            store_bytes,
            store_flushes,
            store_commits,
            scrape: std::sync::Mutex::new(()),
            recent: Recent::default(),
        }
    }

    pub fn submitted(&self, count: u64) {
        self.submissions.inc_by(count);
        self.recent.record(Event::Submitted, count);
    }

    /// One attempt: its outcome, how long it took, how late it started.
    pub fn attempted(&self, class: AttemptClass, seconds: f64, late_seconds: f64) {
        self.attempts.get_or_create(&OutcomeLabel { outcome: class.as_str() }).inc();
        let event = match class {
            AttemptClass::Success => Event::Delivered,
            _ => Event::AttemptFailed,
        };
        self.recent.record(event, 1);
        self.attempt_seconds.observe(seconds);
        self.lateness_seconds.observe(late_seconds.max(0.0));
    }

    /// A delivery reached a final state (`delivered`, `dead`, ...).
    pub fn finished(&self, state: &'static str) {
        self.finished.get_or_create(&StateLabel { state }).inc();
    }

    /// The text exposition, with the gauges set from `snapshot`.
    pub fn render(&self, snapshot: Snapshot) -> String {
        let _one_scrape = self.scrape.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (flushes, commits) = snapshot.store_activity;
        self.store_flushes.inc_by(flushes.saturating_sub(self.store_flushes.get()));
        self.store_commits.inc_by(commits.saturating_sub(self.store_commits.get()));
        self.pending.set(snapshot.counts.pending as i64);
        self.dead.set(snapshot.counts.dead as i64);
        self.in_flight.set(snapshot.in_flight as i64);
        self.due_now.set(snapshot.due_now as i64);
        self.store_bytes.set(snapshot.store_bytes);

        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
