//! Submitting deliveries: the request bodies and the concurrent clients.
//!
//! [`submit`] runs a number of client tasks, each on its own keep-alive
//! connection to the daemon's socket, that take the next indices from one
//! shared counter and POST them singly (`/v1/deliveries`) or in batches
//! (`/v1/deliveries/batch`). Every accepted delivery's id is kept by its
//! index, every request's latency and acknowledgement time too; every
//! refusal is counted and the first one kept for the report. Payloads are
//! image-generation task callbacks of exactly [`PAYLOAD_BYTES`] bytes.
//! Choosing counts and judging results is left to the workloads.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use serde::Deserialize;
use tokio::task::JoinSet;

use crate::client::{self, Connection, REQUEST_TIMEOUT};

/// Every payload's length in bytes, so data-dir size per payload byte is
/// exact.
pub const PAYLOAD_BYTES: usize = 600;

/// Deliveries per batch request: the daemon's `max_batch`.
pub const BATCH_SIZE: usize = 1_000;

/// Connections that submit batches (W1b, and every workload's setup).
pub const BATCH_CONNECTIONS: usize = 4;

/// Connections that submit single deliveries (W1a).
pub const SINGLE_CONNECTIONS: usize = 64;

/// Longest error text kept for the report.
const ERROR_EXCERPT: usize = 400;

/// When the deliveries are due, by their index.
#[derive(Clone, Copy, Debug)]
pub enum Due {
    /// All at the same unix millisecond.
    Fixed(u64),
    /// Index `i` at `first_ms + i * step_ms`.
    Stepped { first_ms: u64, step_ms: u64 },
}

impl Due {
    pub fn of(&self, index: usize) -> u64 {
        match *self {
            Due::Fixed(at) => at,
            Due::Stepped { first_ms, step_ms } => first_ms + index as u64 * step_ms,
        }
    }
}

/// What to submit, how, and for how long.
#[derive(Clone, Debug)]
pub struct Submission<'a> {
    pub socket: &'a Path,
    pub url: &'a str,
    pub total: usize,
    /// 1 for single requests, else deliveries per batch.
    pub batch: usize,
    pub connections: usize,
    pub due: Due,
    /// After this long no new request starts; not a failure.
    pub budget: Option<Duration>,
    /// Reaching this fails the submission.
    pub deadline: Duration,
}

/// One request's timing.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// The index of its first delivery, and how many it carried.
    pub first: usize,
    pub count: usize,
    pub latency: Duration,
    /// When its reply arrived.
    pub acked: Instant,
}

/// What a submission achieved.
#[derive(Debug)]
pub struct Submitted {
    /// The id of each index's delivery; `None` if refused or never sent.
    pub ids: Vec<Option<Box<str>>>,
    pub timings: Vec<Timing>,
    pub accepted: usize,
    /// Deliveries refused or lost to a failed request.
    pub errors: usize,
    pub first_error: Option<String>,
    /// From the first request sent to the last reply.
    pub elapsed: Duration,
    pub finished: Instant,
}

impl Submitted {
    /// Accepted deliveries per second.
    pub fn rate(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Fails unless every one of `total` deliveries was accepted.
    pub fn ensure_all(&self, total: usize) -> anyhow::Result<()> {
        if self.errors > 0 || self.accepted != total {
            bail!(
                "{} of {total} submissions accepted, {} refused; first error: {}",
                self.accepted,
                self.errors,
                self.first_error.as_deref().unwrap_or("none")
            );
        }
        Ok(())
    }

    /// Accepted deliveries as (index, id).
    pub fn accepted_ids(&self) -> impl Iterator<Item = (usize, &str)> {
        self.ids.iter().enumerate().filter_map(|(index, id)| Some((index, id.as_deref()?)))
    }
}

/// Runs the submission; fails only if it cannot start or misses its
/// deadline. Refusals are counted in the result, not returned as errors.
pub async fn submit(submission: Submission<'_>) -> anyhow::Result<Submitted> {
    // Connect before the clock starts, so connecting is not measured.
    let mut connections = Vec::with_capacity(submission.connections);
    for _ in 0..submission.connections {
        connections.push(Connection::unix(submission.socket).await?);
    }

    let started = Instant::now();
    let work = Arc::new(Work {
        socket: submission.socket.to_owned(),
        url: submission.url.to_owned(),
        total: submission.total,
        batch: submission.batch.max(1),
        due: submission.due,
        next: AtomicUsize::new(0),
        stop_at: submission.budget.map(|budget| started + budget),
        created_s: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    });
    let mut workers = JoinSet::new();
    for connection in connections {
        workers.spawn(work.clone().run(connection));
    }

    let mut submitted = Submitted {
        ids: vec![None; submission.total],
        timings: Vec::new(),
        accepted: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        finished: started,
    };
    let collect = async {
        while let Some(joined) = workers.join_next().await {
            submitted.absorb(joined.context("a submitting task panicked")?);
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(submission.deadline, collect).await.map_err(|_| {
        anyhow::anyhow!("timed out: submissions did not finish within {:?}", submission.deadline)
    })??;

    submitted.finished =
        submitted.timings.iter().map(|timing| timing.acked).max().unwrap_or(started);
    submitted.elapsed = submitted.finished.duration_since(started);
    Ok(submitted)
}

impl Submitted {
    fn absorb(&mut self, done: WorkerResult) {
        for (index, id) in done.ids {
            self.ids[index] = Some(id);
            self.accepted += 1;
        }
        self.timings.extend(done.timings);
        self.errors += done.errors;
        if self.first_error.is_none() {
            self.first_error = done.first_error;
        }
    }
}

/// What every client task shares.
struct Work {
    socket: std::path::PathBuf,
    url: String,
    total: usize,
    batch: usize,
    due: Due,
    /// The next index no task has taken yet.
    next: AtomicUsize,
    /// When the time budget ends, if there is one.
    stop_at: Option<Instant>,
    /// The `created` field of every payload, unix seconds.
    created_s: u64,
}

/// What one client task did.
#[derive(Default)]
struct WorkerResult {
    ids: Vec<(usize, Box<str>)>,
    timings: Vec<Timing>,
    errors: usize,
    first_error: Option<String>,
}

impl WorkerResult {
    fn refuse(&mut self, count: usize, error: String) {
        self.errors += count;
        if self.first_error.is_none() {
            self.first_error = Some(error.chars().take(ERROR_EXCERPT).collect());
        }
    }
}

impl Work {
    /// One client task: takes indices until none are left or the budget
    /// ends. A broken connection is replaced; if that fails the task ends
    /// and the deliveries it did not send stay unsent.
    async fn run(self: Arc<Self>, mut connection: Connection) -> WorkerResult {
        let mut done = WorkerResult::default();
        loop {
            if self.stop_at.is_some_and(|stop_at| Instant::now() >= stop_at) {
                return done;
            }
            let first = self.next.fetch_add(self.batch, Ordering::Relaxed);
            if first >= self.total {
                return done;
            }
            let count = self.batch.min(self.total - first);

            let (path, body) = self.request_body(first, count);
            let sent = Instant::now();
            let reply = match client::post(path, body, &[]) {
                Ok(request) => connection.send(request, REQUEST_TIMEOUT).await,
                Err(error) => Err(error),
            };
            let acked = Instant::now();
            done.timings.push(Timing { first, count, latency: acked - sent, acked });

            match reply {
                Ok(reply) => self.read_reply(path, first, count, &reply, &mut done),
                Err(error) => {
                    done.refuse(count, format!("POST {path}: {error:#}"));
                    match Connection::unix(&self.socket).await {
                        Ok(fresh) => connection = fresh,
                        Err(error) => {
                            done.refuse(0, format!("reconnect: {error:#}"));
                            return done;
                        }
                    }
                }
            }
        }
    }

    /// The path and body for `count` deliveries from index `first`.
    fn request_body(&self, first: usize, count: usize) -> (&'static str, Bytes) {
        if self.batch == 1 {
            let body = delivery_json(&self.url, self.due.of(first), first, self.created_s);
            return ("/v1/deliveries", Bytes::from(body));
        }
        let mut body = String::with_capacity(count * (PAYLOAD_BYTES + 120) + 20);
        body.push_str(r#"{"deliveries":["#);
        for index in first..first + count {
            if index > first {
                body.push(',');
            }
            body.push_str(&delivery_json(&self.url, self.due.of(index), index, self.created_s));
        }
        body.push_str("]}");
        ("/v1/deliveries/batch", Bytes::from(body))
    }

    /// Takes the ids out of a reply, or counts its refusals.
    fn read_reply(
        &self,
        path: &str,
        first: usize,
        count: usize,
        reply: &client::Reply,
        done: &mut WorkerResult,
    ) {
        let expected = if self.batch == 1 { [200, 201].as_slice() } else { [200].as_slice() };
        if !expected.contains(&reply.status) {
            let body = String::from_utf8_lossy(&reply.body);
            done.refuse(count, format!("POST {path} answered {}: {body}", reply.status));
            return;
        }

        if self.batch == 1 {
            match serde_json::from_slice::<Created>(&reply.body) {
                Ok(created) => done.ids.push((first, created.id.into())),
                Err(error) => done.refuse(1, format!("POST {path}: unreadable reply: {error}")),
            }
            return;
        }
        let results = match serde_json::from_slice::<BatchReply>(&reply.body) {
            Ok(parsed) if parsed.results.len() == count => parsed.results,
            Ok(parsed) => {
                let error = format!("{} results for {count} deliveries", parsed.results.len());
                return done.refuse(count, format!("POST {path}: {error}"));
            }
            Err(error) => return done.refuse(count, format!("POST {path}: unreadable: {error}")),
        };
        for (offset, result) in results.into_iter().enumerate() {
            match (result.id, result.error) {
                (Some(id), None) => done.ids.push((first + offset, id.into())),
                (_, error) => done.refuse(1, format!("batch element refused: {error:?}")),
            }
        }
    }
}

/// The `201` body of a single submission; other fields are ignored.
#[derive(Deserialize)]
struct Created {
    id: String,
}

#[derive(Deserialize)]
struct BatchReply {
    results: Vec<BatchResult>,
}

/// One element of a batch reply: an accepted delivery or an error.
#[derive(Deserialize)]
struct BatchResult {
    id: Option<String>,
    error: Option<serde_json::Value>,
}

/// One submission object: the receiver's URL, the due time and a payload.
fn delivery_json(url: &str, deliver_at: u64, index: usize, created_s: u64) -> String {
    format!(
        r#"{{"url":"{url}","deliver_at":{deliver_at},"payload":{}}}"#,
        payload(index, created_s)
    )
}

/// The callback of a finished image-generation task, padded to exactly
/// [`PAYLOAD_BYTES`]: the kind of body hookd carries in service.
pub fn payload(index: usize, created_s: u64) -> String {
    let task = format!("task_{index:012}");
    let seed = (index as u64).wrapping_mul(2_654_435_761) % 4_294_967_296;
    let mut text = format!(
        concat!(
            r#"{{"id":"{task}","object":"image.generation","status":"succeeded","#,
            r#""created":{created},"model":"imagine-xl-2.1","#,
            r#""prompt":"a lighthouse on a cliff at dusk, volumetric fog, 35mm film","#,
            r#""output":{{"images":[{{"url":"https://cdn.example.com/generations/{task}/0.png","#,
            r#""width":1024,"height":1024,"seed":{seed}}}]}},"#,
            r#""usage":{{"steps":30,"gpu_ms":{gpu},"credits":4}},"#,
            r#""metadata":{{"user":"user_{user:06}","request_id":"req_{index:016x}","pad":""#
        ),
        task = task,
        created = created_s,
        seed = seed,
        gpu = 3_000 + index % 2_000,
        user = index % 1_000_000,
        index = index,
    );
    const CLOSING: &str = r#""}}"#;
    let pad = PAYLOAD_BYTES.saturating_sub(text.len() + CLOSING.len());
    text.extend(std::iter::repeat_n('x', pad));
    text.push_str(CLOSING);
    text
}
