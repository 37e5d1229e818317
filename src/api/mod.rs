//! The submission API: HTTP/1.1 with JSON over the unix socket.
//!
//! This module routes requests, reads bodies within their limits, and turns
//! every failure into the contract's error shape. It changes deliveries
//! only through [`Store::commit`] under a [claim](crate::claims), and tells
//! the [wheel](crate::wheel) about new due times; it never talks to
//! receivers.
//!
//! A submission is answered `201` only after its commit returned, which
//! means the record and its due-index entry are flushed to disk.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

mod filter;

use crate::claims::{Claim, Claims};
use crate::clock;
use crate::config::Settings;
use crate::dispatch::Dispatcher;
use crate::guard::Guard;
use crate::id::DeliveryId;
use crate::metrics::{Metrics, Snapshot};
use crate::record::{Delivery, State};
use crate::store::{Change, Committed, DueKey, Outcome, Store, StoreError};
use crate::submission::{self, Rules};
use crate::view::{
    Accepted, ApiError, DeliveryView, Health, LastMinute, OldestPending, Page, Stats,
};
use crate::wheel::WheelHandle;
use filter::ListQuery;

/// A client must send its request head within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A client must send its whole body within this time.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Room for the fields around the payload in a single submission, bytes.
const ENVELOPE_BYTES: usize = 64 * 1024;

/// How long open API connections get to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an API change waits for an attempt that is recording its
/// outcome.
const CLAIM_WAIT: Duration = Duration::from_secs(2);

/// `hookd_due_now` counts at most this many overdue deliveries per scrape.
const DUE_NOW_CAP: usize = 100_000;

/// What request handlers share.
pub struct Api {
    pub store: Store,
    pub claims: Arc<Claims>,
    pub wheel: WheelHandle,
    pub dispatcher: Arc<Dispatcher>,
    pub settings: Arc<Settings>,
    pub guard: Arc<Guard>,
    pub metrics: Arc<Metrics>,
}

type Reply = Response<Full<Bytes>>;

/// Serves connections until `shutdown`, then lets open ones finish their
/// current request (up to [`DRAIN_TIMEOUT`]).
pub async fn serve(listener: UnixListener, api: Arc<Api>, shutdown: CancellationToken) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    // half_close: a client that sends its request and then shuts down its
    // writing side (socat, `nc -N`) still gets its reply.
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).half_close(true);
    let connections = Arc::new(Semaphore::new(api.settings.limits.max_connections));

    loop {
        // Past `max_connections`, new clients wait in the listen backlog.
        let (permit, stream) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = accept(&listener, &connections) => accepted,
        };

        let allowed = api.peer_allowed(&stream);
        let api = api.clone();
        let service = service_fn(move |request| {
            let api = api.clone();
            async move {
                let reply = match allowed {
                    true => api.handle(request).await,
                    false => forbidden(),
                };
                Ok::<_, Infallible>(reply)
            }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%error, "API connection ended with an error");
            }
            drop(permit);
        });
    }

    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        warn!("API connections still open after the drain timeout; closing them");
    }
    info!("API stopped");
}

/// Waits for a connection slot, then for a connection.
async fn accept(
    listener: &UnixListener,
    connections: &Arc<Semaphore>,
) -> (OwnedSemaphorePermit, UnixStream) {
    // The semaphore is never closed.
    let permit = connections.clone().acquire_owned().await.expect("never closed");
    loop {
        match listener.accept().await {
            Ok((stream, _)) => return (permit, stream),
            Err(error) => {
                warn!(%error, "cannot accept an API connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn forbidden() -> Reply {
    let error = ApiError::new(
        403,
        "forbidden",
        "this user may not use hookd's API; ask its operator to add your uid or gid to allowed_uids or allowed_gids",
    );
    json(error.status, &error.body())
}

impl Api {
    /// Whether the peer's credentials pass `allowed_uids`/`allowed_gids`;
    /// everyone passes when both are empty.
    fn peer_allowed(&self, stream: &UnixStream) -> bool {
        let (uids, gids) = (&self.settings.allowed_uids, &self.settings.allowed_gids);
        if uids.is_empty() && gids.is_empty() {
            return true;
        }
        match stream.peer_cred() {
            Ok(peer) => {
                let allowed = uids.contains(&peer.uid()) || gids.contains(&peer.gid());
                if !allowed {
                    warn!(
                        uid = peer.uid(),
                        gid = peer.gid(),
                        "API connection refused: peer not allowed"
                    );
                }
                allowed
            }
            Err(error) => {
                warn!(%error, "cannot read the peer credentials of an API connection; refusing it");
                false
            }
        }
    }

    async fn handle(&self, request: Request<Incoming>) -> Reply {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or("").to_owned();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();

        let result = match (&method, segments.as_slice()) {
            (&Method::POST, ["v1", "deliveries"]) => self.submit_one(request).await,
            (&Method::POST, ["v1", "deliveries", "batch"]) => self.submit_batch(request).await,
            (&Method::GET, ["v1", "deliveries"]) => self.list(&query),
            (&Method::GET, ["v1", "deliveries", id]) => self.get(id),
            (&Method::DELETE, ["v1", "deliveries", id]) => self.cancel(id).await,
            (&Method::POST, ["v1", "deliveries", id, "retry"]) => self.retry(id).await,
            (&Method::GET, ["v1", "health"]) => self.health(),
            (&Method::GET, ["v1", "stats"]) => self.stats(),
            (&Method::GET, ["metrics"]) => self.metrics_text(),
            (_, ["v1", "deliveries"] | ["v1", "deliveries", _] | ["v1", "health" | "stats"])
            | (_, ["v1", "deliveries", _, "retry"]) => Err(ApiError::new(
                405,
                "method_not_allowed",
                format!("{method} is not allowed on {path}"),
            )),
            _ => Err(ApiError::new(404, "not_found", format!("no such endpoint: {path}"))),
        };

        result.unwrap_or_else(|error| {
            debug!(%method, %path, code = error.code, status = error.status, "request refused");
            json(error.status, &error.body())
        })
    }

    async fn submit_one(&self, request: Request<Incoming>) -> Result<Reply, ApiError> {
        let limit = self.settings.limits.max_payload_bytes + ENVELOPE_BYTES;
        let body = read_body(request, limit).await?;
        let delivery = submission::parse_one(&body, &self.rules(), clock::now_ms())?;

        if let Some(existing) = self.existing(&delivery)? {
            return Ok(json(200, &Accepted::of(&existing)));
        }
        let (change, claims) = self.insert(delivery)?;
        let committed = self.store.commit(vec![change]).await.map_err(storage)?;
        crate::crash::point("api.before_reply");
        if matches!(committed.outcomes.first(), Some(Outcome::Stored(_))) {
            claims.iter().for_each(|_| self.metrics.finished("superseded"));
        }
        match self.settle(committed)?.into_iter().next() {
            Some((status, accepted)) => Ok(json(status, &accepted)),
            None => Err(ApiError::new(500, "internal", "the store did not answer the submission")),
        }
    }

    async fn submit_batch(&self, request: Request<Incoming>) -> Result<Reply, ApiError> {
        let body = read_body(request, self.settings.limits.max_batch_bytes).await?;
        let parsed = submission::parse_batch(&body, &self.rules(), clock::now_ms())?;

        let mut changes = Vec::new();
        let mut claims = Vec::new();
        let mut results: Vec<Option<serde_json::Value>> = Vec::with_capacity(parsed.len());
        for result in parsed {
            match result.and_then(|delivery| Ok((self.existing(&delivery)?, delivery))) {
                Ok((Some(existing), _)) => results.push(Some(to_value(&Accepted::of(&existing)))),
                Ok((None, delivery)) => {
                    let (change, held) = self.insert(delivery)?;
                    changes.push(change);
                    claims.extend(held);
                    results.push(None);
                }
                Err(error) => results.push(Some(to_value(&error.body()))),
            }
        }

        let committed = self.store.commit(changes).await.map_err(storage)?;
        crate::crash::point("api.before_reply");
        claims.iter().for_each(|_| self.metrics.finished("superseded"));
        drop(claims);
        let mut stored = self.settle(committed)?.into_iter();
        let results: Vec<serde_json::Value> = results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| {
                    stored
                        .next()
                        .map_or(serde_json::Value::Null, |(_, accepted)| to_value(&accepted))
                })
            })
            .collect();
        Ok(json(200, &serde_json::json!({ "results": results })))
    }

    /// The delivery an idempotency key already points to, if any.
    fn existing(&self, delivery: &Delivery) -> Result<Option<Delivery>, ApiError> {
        let Some(key) = &delivery.idempotency_key else { return Ok(None) };
        match self.store.idempotent(key).map_err(storage)? {
            Some(id) => Ok(self.store.get(id).map_err(storage)?),
            None => Ok(None),
        }
    }

    /// The insert for a new delivery. With `coalesce`, older deliveries of
    /// its key that no attempt has touched are superseded; their claims are
    /// held until the commit is done, so no attempt can start on them
    /// meanwhile, and one whose claim is taken (in flight) keeps its place.
    fn insert(&self, delivery: Delivery) -> Result<(Change, Vec<Claim>), ApiError> {
        let mut supersede = Vec::new();
        let mut claims = Vec::new();
        if let (true, Some(key)) = (delivery.coalesce, &delivery.key) {
            for id in self.store.queue_of(key).map_err(storage)? {
                let Some(claim) = self.claims.try_claim(id) else { continue };
                let Some(mut older) = self.store.get(id).map_err(storage)? else { continue };
                if older.state != State::Pending || !older.attempts.is_empty() {
                    continue;
                }
                older.state = State::Superseded;
                older.next_attempt_at = None;
                older.updated_at = delivery.created_at;
                supersede.push(older);
                claims.push(claim);
            }
        }
        Ok((Change::Insert { delivery: Box::new(delivery), supersede }, claims))
    }

    /// After inserts were committed: tells the wheel about every new due
    /// time and answers each insert with its status (`201` for a new
    /// delivery, `200` for one found by its idempotency key).
    fn settle(&self, committed: Committed) -> Result<Vec<(u16, Accepted)>, ApiError> {
        self.wheel.schedule_all(&committed.promoted);

        let mut answers = Vec::with_capacity(committed.outcomes.len());
        for outcome in committed.outcomes {
            match outcome {
                Outcome::Stored(delivery) => {
                    self.schedule(&delivery);
                    self.metrics.submitted(1);
                    answers.push((201, Accepted::of(&delivery)));
                }
                Outcome::Existing(id) => answers.push((200, Accepted::of(&self.load(id)?))),
                Outcome::Deleted => {}
            }
        }
        Ok(answers)
    }

    fn get(&self, id: &str) -> Result<Reply, ApiError> {
        let id = parse_id(id)?;
        let delivery = self.load(id)?;
        Ok(json(200, &DeliveryView::of(&delivery, self.claims.is_claimed(id), true)))
    }

    fn list(&self, query: &str) -> Result<Reply, ApiError> {
        let query = ListQuery::parse(query)?;
        let claims = &self.claims;
        let (found, more) = self
            .store
            .list(query.cursor, query.limit, |delivery| query.matches(delivery, claims))
            .map_err(storage)?;

        let next_cursor =
            if more { found.last().map(|delivery| delivery.id.to_string()) } else { None };
        let deliveries = found
            .iter()
            .map(|delivery| DeliveryView::of(delivery, claims.is_claimed(delivery.id), false))
            .collect();
        Ok(json(200, &Page { deliveries, next_cursor }))
    }

    async fn cancel(&self, id: &str) -> Result<Reply, ApiError> {
        let id = parse_id(id)?;
        let _claim = self.claim(id).await?;
        let mut delivery = self.load(id)?;
        if delivery.state != State::Pending {
            return Err(ApiError::new(
                409,
                "invalid_state",
                format!(
                    "delivery {id} is {} and can no longer be cancelled",
                    delivery.state.as_str()
                ),
            ));
        }

        delivery.state = State::Cancelled;
        delivery.next_attempt_at = None;
        delivery.updated_at = clock::now_ms();
        let committed = self
            .store
            .commit(vec![Change::Put(Box::new(delivery.clone()))])
            .await
            .map_err(storage)?;
        self.wheel.unschedule(id);
        self.wheel.schedule_all(&committed.promoted);
        self.metrics.finished("cancelled");
        info!(delivery_id = %id, "delivery cancelled");
        Ok(json(200, &DeliveryView::of(&delivery, false, false)))
    }

    async fn retry(&self, id: &str) -> Result<Reply, ApiError> {
        let id = parse_id(id)?;
        let _claim = self.claim(id).await?;
        let mut delivery = self.load(id)?;
        if !matches!(delivery.state, State::Dead | State::Delivered) {
            return Err(ApiError::new(
                409,
                "invalid_state",
                format!(
                    "delivery {id} is {}; only dead or delivered deliveries can be retried",
                    delivery.state.as_str()
                ),
            ));
        }

        let now = clock::now_ms();
        delivery.state = State::Pending;
        delivery.next_attempt_at = Some(now);
        delivery.round_start = delivery.attempts.len() as u32;
        delivery.dead_reason = None;
        delivery.updated_at = now;
        let committed =
            self.store.commit(vec![Change::Put(Box::new(delivery))]).await.map_err(storage)?;
        self.wheel.schedule_all(&committed.promoted);
        let Some(Outcome::Stored(stored)) = committed.outcomes.into_iter().next() else {
            return Err(ApiError::new(500, "internal", "the store did not answer the retry"));
        };
        self.schedule(&stored);
        info!(delivery_id = %id, "delivery requeued by hand");
        Ok(json(200, &DeliveryView::of(&stored, false, false)))
    }

    fn health(&self) -> Result<Reply, ApiError> {
        let counts = self.store.counts();
        let next_due_at = self.store.first_due().map_err(storage)?.map(|key| key.due);
        Ok(json(
            200,
            &Health {
                status: "ok",
                version: crate::VERSION,
                pending: counts.pending,
                in_flight: self.dispatcher.in_flight(),
                dead: counts.dead,
                delivered: counts.delivered,
                cancelled: counts.cancelled,
                superseded: counts.superseded,
                next_due_at,
            },
        ))
    }

    fn stats(&self) -> Result<Reply, ApiError> {
        let counts = self.store.counts();
        let [submitted, delivered, failed_attempts] = self.metrics.recent.last_minute();
        let oldest_pending = match self.store.first_due().map_err(storage)? {
            Some(first) => {
                self.store.get(first.id).map_err(storage)?.map(|delivery| OldestPending {
                    id: delivery.id.to_string(),
                    created_at: delivery.created_at,
                    next_attempt_at: first.due,
                })
            }
            None => None,
        };

        Ok(json(
            200,
            &Stats {
                version: crate::VERSION,
                pending: counts.pending,
                in_flight: self.dispatcher.in_flight(),
                delivered: counts.delivered,
                dead: counts.dead,
                cancelled: counts.cancelled,
                superseded: counts.superseded,
                last_minute: LastMinute { submitted, delivered, failed_attempts },
                oldest_pending,
                store_size_bytes: self.store.size_on_disk().map_err(storage)?,
            },
        ))
    }

    fn metrics_text(&self) -> Result<Reply, ApiError> {
        let start = DueKey { due: 0, id: DeliveryId::from_bytes([0; 16]) };
        let due_now = self.store.scan_due(start, clock::now_ms(), DUE_NOW_CAP).map_err(storage)?;
        let text = self.metrics.render(Snapshot {
            counts: self.store.counts(),
            in_flight: self.dispatcher.in_flight(),
            due_now: due_now.len() as u64,
            store_bytes: self.store.size_on_disk().map_err(storage)?,
            store_activity: self.store.activity(),
        });

        let mut response = Response::new(Full::new(Bytes::from(text)));
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        Ok(response)
    }

    /// The claim on `id` for a change made by the API.
    ///
    /// While an attempt runs the answer is `409 in_flight`. But an attempt
    /// that has just ended holds its claim until its outcome is flushed,
    /// and its new state is readable a moment before that; a caller who saw
    /// that state and acts on it waits for the claim (up to
    /// [`CLAIM_WAIT`]) instead of being refused.
    async fn claim(&self, id: DeliveryId) -> Result<Claim, ApiError> {
        if let Some(claim) = self.claims.try_claim(id) {
            return Ok(claim);
        }
        let finishing = self.load(id)?.state.is_final();
        if !finishing {
            return Err(in_flight(id));
        }
        tokio::time::timeout(CLAIM_WAIT, self.claims.claim(id)).await.map_err(|_| in_flight(id))
    }

    fn rules(&self) -> Rules<'_> {
        Rules { settings: &self.settings, guard: &self.guard }
    }

    fn schedule(&self, delivery: &Delivery) {
        if let Some(due) = delivery.next_attempt_at {
            self.wheel.schedule(DueKey { due, id: delivery.id });
        }
    }

    fn load(&self, id: DeliveryId) -> Result<Delivery, ApiError> {
        self.store
            .get(id)
            .map_err(storage)?
            .ok_or_else(|| ApiError::new(404, "not_found", format!("no delivery with id {id}")))
    }
}

fn parse_id(text: &str) -> Result<DeliveryId, ApiError> {
    text.parse().map_err(|_| {
        ApiError::new(
            404,
            "not_found",
            format!("{text:?} is not a delivery id, so no delivery has it"),
        )
    })
}

fn in_flight(id: DeliveryId) -> ApiError {
    ApiError::new(
        409,
        "in_flight",
        format!("delivery {id} has an attempt running right now; try again in a moment"),
    )
}

fn storage(error: StoreError) -> ApiError {
    if error.is_storage_full() {
        // The writer logs when the disk fills up and when it has room again.
        debug!(%error, "submission refused: storage full");
        let cause = match error {
            StoreError::LowSpace { .. } => error.to_string(),
            _ => "the data dir's disk is full".to_owned(),
        };
        return ApiError::new(
            507,
            "storage_full",
            format!("{cause}; nothing was stored. Free space and submit again"),
        );
    }
    warn!(%error, "store error while serving the API");
    ApiError::new(503, "storage_error", format!("the store failed, nothing was changed: {error}"))
}

/// Reads a request body of at most `limit` bytes; larger ones are refused
/// with 413 as soon as that is known, without being read whole.
async fn read_body(request: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            413,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }

    let collect = Limited::new(request.into_body(), limit).collect();
    match tokio::time::timeout(BODY_READ_TIMEOUT, collect).await {
        Err(_) => {
            Err(ApiError::new(408, "request_timeout", "the request body did not arrive in time"))
        }
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(error)) => {
            Err(ApiError::new(400, "bad_request", format!("cannot read the request body: {error}")))
        }
    }
}

fn to_value(body: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(body).unwrap_or(serde_json::Value::Null)
}

fn json(status: u16, body: &impl Serialize) -> Reply {
    let mut bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    bytes.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
