//! The callback receiver: a fast hyper HTTP/1.1 server on 127.0.0.1 that
//! answers at once and records when each delivery arrived.
//!
//! It keeps connections alive, reads each body without parsing it, and
//! answers `200` with an empty body (or `500` for the first `fail_first`
//! attempts of each `webhook-id`). Per id it keeps only the first arrival,
//! the first `200` and the attempt count, so recording a million
//! deliveries costs one map entry each. Times are monotonic [`Instant`]s;
//! [`Clock`] maps them to unix time for comparing with due times. What the
//! arrivals mean (rates, lateness) is left to the workloads.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// How often the waiting helpers look at the counters. Arrival times come
/// from the recorded instants, so this only sets how soon a wait returns.
const WAIT_POLL: Duration = Duration::from_millis(5);

/// What the receiver knows about one delivery id.
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    /// When the first request with this id arrived (its head).
    pub first: Instant,
    /// When the first request answered `200` arrived; `None` while every
    /// attempt was failed on purpose.
    pub delivered: Option<Instant>,
    /// Requests with this id.
    pub attempts: u32,
}

/// A fixed pairing of a monotonic instant with the wall clock, so that
/// recorded instants convert to unix time with microsecond precision.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    instant: Instant,
    unix_us: u64,
}

impl Clock {
    pub fn now() -> Clock {
        let unix_us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros());
        Clock { instant: Instant::now(), unix_us: unix_us as u64 }
    }

    /// `at` as unix milliseconds, with a fraction.
    pub fn unix_ms(&self, at: Instant) -> f64 {
        let offset_us = match at.checked_duration_since(self.instant) {
            Some(after) => after.as_micros() as f64,
            None => -(self.instant.duration_since(at).as_micros() as f64),
        };
        (self.unix_us as f64 + offset_us) / 1000.0
    }
}

/// A running receiver; it stops, with all its connections, when dropped.
pub struct Receiver {
    address: SocketAddr,
    shared: Arc<Shared>,
    clock: Clock,
    /// The accept loop; it owns the connections' tasks, so aborting it
    /// closes them all.
    accept_task: JoinHandle<()>,
}

struct Shared {
    /// Attempts of each id to answer with 500 before answering 200.
    fail_first: u32,
    arrivals: Mutex<HashMap<Box<str>, Arrival>>,
    /// Every request, with or without an id.
    requests: AtomicU64,
    /// Distinct ids answered 200 so far.
    delivered: AtomicU64,
    /// Requests without a readable `webhook-id` header.
    anonymous: AtomicU64,
    /// TCP connections accepted: shows whether the sender reuses them.
    connections: AtomicU64,
}

impl Receiver {
    /// Binds 127.0.0.1 on a free port and serves until dropped.
    pub async fn start(fail_first: u32) -> anyhow::Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("bind the receiver")?;
        let address = listener.local_addr().context("the receiver's address")?;
        let shared = Arc::new(Shared {
            fail_first,
            arrivals: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            anonymous: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        });

        let accept_task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Receiver { address, shared, clock: Clock::now(), accept_task })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The callback URL the workloads submit.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.address)
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Distinct ids answered 200 so far.
    pub fn delivered(&self) -> u64 {
        self.shared.delivered.load(Ordering::Relaxed)
    }

    /// Requests that carried no `webhook-id`.
    pub fn anonymous(&self) -> u64 {
        self.shared.anonymous.load(Ordering::Relaxed)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// A copy of everything recorded so far.
    pub fn arrivals(&self) -> HashMap<Box<str>, Arrival> {
        lock(&self.shared.arrivals).clone()
    }

    /// Waits until `count` distinct ids were answered 200, or fails at the
    /// deadline saying how many had arrived.
    pub async fn wait_delivered(&self, count: u64, deadline: Instant) -> anyhow::Result<()> {
        loop {
            let delivered = self.delivered();
            if delivered >= count {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out: the receiver got {delivered} of {count} deliveries \
                     ({} requests)",
                    self.requests()
                );
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

/// Accepts connections and serves each on its own task until aborted.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        shared.connections.fetch_add(1, Ordering::Relaxed);
        // Small replies on a keep-alive connection: without TCP_NODELAY
        // they can wait for the peer's delayed ACK.
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(shared.answer(request).await) }
            });
            // A connection the client resets is its business, not ours.
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
}

impl Shared {
    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let at = Instant::now();
        self.requests.fetch_add(1, Ordering::Relaxed);
        let status = match request.headers().get("webhook-id").and_then(|v| v.to_str().ok()) {
            Some(id) => self.record(id, at),
            None => {
                self.anonymous.fetch_add(1, Ordering::Relaxed);
                StatusCode::OK
            }
        };

        // Read the body so the connection stays reusable; its content does
        // not matter here.
        let _ = request.into_body().collect().await;

        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = status;
        response
    }

    /// Records one attempt of `id` and decides its answer.
    fn record(&self, id: &str, at: Instant) -> StatusCode {
        let mut arrivals = lock(&self.arrivals);
        // Looked up by `&str` first, so only a new id allocates its key.
        if !arrivals.contains_key(id) {
            arrivals.insert(id.into(), Arrival { first: at, delivered: None, attempts: 0 });
        }
        let Some(arrival) = arrivals.get_mut(id) else { return StatusCode::OK };
        arrival.attempts += 1;

        if arrival.attempts <= self.fail_first {
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
        if arrival.delivered.is_none() {
            arrival.delivered = Some(at);
            self.delivered.fetch_add(1, Ordering::Relaxed);
        }
        StatusCode::OK
    }
}

/// Locks a mutex; a panic elsewhere while it was held must not hide the
/// recorded arrivals behind a poison error.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
