//! A callback receiver on 127.0.0.1 that records every request it gets.
//!
//! The receiver is a real hyper 1.x HTTP server on a port the kernel picks.
//! What it answers is scripted per path: the n-th request to a path gets
//! the n-th [`Reply`] of that path's script, and the last reply repeats.
//! Paths without a script answer `200 OK` at once. Every request is
//! recorded as a [`Hit`], with its arrival time, so tests can check bodies,
//! headers and the gaps between attempts.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::unix_ms;

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Hit {
    /// When the request head arrived (monotonic), for measuring gaps.
    pub at: Instant,
    /// The same moment as wall-clock unix milliseconds, for comparing with
    /// the daemon's persisted due times.
    pub wall_ms: u64,
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Hit {
    /// A header's value as text; panics when it is missing, naming it.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("the callback has no {name} header: {:?}", self.headers))
            .to_str()
            .expect("header value is text")
    }

    /// The `webhook-id` header: the delivery id.
    pub fn webhook_id(&self) -> &str {
        self.header("webhook-id")
    }
}

/// What the receiver does with one request.
#[derive(Clone, Debug)]
pub struct Reply {
    status: u16,
    /// Time to wait after reading the request before answering.
    delay: Duration,
    headers: Vec<(String, String)>,
    body: String,
    /// Hold the request open and never answer.
    never: bool,
    /// Send the head and the body's first bytes, then never finish.
    stall_body: bool,
}

impl Reply {
    /// Answers `code` at once with an empty body.
    pub fn status(code: u16) -> Reply {
        Reply {
            status: code,
            delay: Duration::ZERO,
            headers: Vec::new(),
            body: String::new(),
            never: false,
            stall_body: false,
        }
    }

    /// Answers `200 OK` at once.
    pub fn ok() -> Reply {
        Reply::status(200)
    }

    /// Reads the request and then never answers.
    pub fn never() -> Reply {
        Reply { never: true, ..Reply::ok() }
    }

    /// Answers `200 OK` with the first bytes of a body, then never sends
    /// the rest: a receiver that trickles its body.
    pub fn stall_body() -> Reply {
        Reply { stall_body: true, body: "partial".to_owned(), ..Reply::ok() }
    }

    /// Waits this long before answering.
    pub fn after(self, delay: Duration) -> Reply {
        Reply { delay, ..self }
    }

    /// Adds a response header, such as `Retry-After`.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the response body.
    pub fn body(self, body: &str) -> Reply {
        Reply { body: body.to_owned(), ..self }
    }
}

/// A running receiver; it stops when dropped.
pub struct Receiver {
    address: SocketAddr,
    shared: Arc<Shared>,
    /// The accept loop; aborted on drop so the port closes with the test.
    accept_task: JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    /// Every request, in the order their bodies finished arriving.
    hits: Mutex<Vec<Hit>>,
    /// Scripted replies per path.
    scripts: Mutex<HashMap<String, Vec<Reply>>>,
    /// How many requests each path has started to get; picks the reply.
    arrivals: Mutex<HashMap<String, usize>>,
    /// Woken on every recorded hit, for the waiting helpers.
    recorded: Notify,
    /// Requests being answered right now, and the most there ever were.
    active: AtomicUsize,
    most_active: AtomicUsize,
}

/// Counts one request as active until dropped.
struct Active<'a>(&'a Shared);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Receiver {
    /// Binds 127.0.0.1 on a free port and starts serving.
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the receiver");
        let address = listener.local_addr().expect("receiver address");
        let shared = Arc::new(Shared::default());

        let accept_shared = shared.clone();
        let accept_task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let shared = accept_shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(shared.answer(request).await) }
                    });
                    let _ =
                        http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Receiver { address, shared, accept_task }
    }

    /// The URL of `path` (which starts with `/`) on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// The port, for tests that build URLs by hand.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Scripts the replies for `path`; the last one repeats.
    pub fn script(&self, path: &str, replies: Vec<Reply>) {
        assert!(!replies.is_empty(), "a script needs at least one reply");
        lock(&self.shared.scripts).insert(path.to_owned(), replies);
    }

    /// The most requests that were being answered at the same moment.
    pub fn most_concurrent(&self) -> usize {
        self.shared.most_active.load(Ordering::SeqCst)
    }

    /// Every request so far, to any path.
    pub fn all_hits(&self) -> Vec<Hit> {
        lock(&self.shared.hits).clone()
    }

    /// The requests so far whose path (without the query) is `path`.
    pub fn hits(&self, path: &str) -> Vec<Hit> {
        self.all_hits().into_iter().filter(|hit| path_of(&hit.target) == path).collect()
    }

    /// Waits until `path` has had at least `count` requests; panics at the
    /// deadline with what did arrive.
    pub async fn wait_for_hits(&self, path: &str, count: usize, timeout: Duration) -> Vec<Hit> {
        self.wait_until(timeout, &format!("{count} requests to {path}"), |hits| {
            hits.iter().filter(|hit| path_of(&hit.target) == path).count() >= count
        })
        .await;
        self.hits(path)
    }

    /// Waits until `done` holds for the recorded hits; panics at the deadline.
    pub async fn wait_until(&self, timeout: Duration, what: &str, done: impl Fn(&[Hit]) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register for the wake-up before looking, so a hit recorded in
            // between is not missed.
            let recorded = self.shared.recorded.notified();
            if done(&lock(&self.shared.hits)) {
                return;
            }
            if tokio::time::timeout_at(deadline, recorded).await.is_err() {
                let seen: Vec<String> =
                    self.all_hits().iter().map(|hit| hit.target.clone()).collect();
                panic!("the receiver did not get {what} within {timeout:?}; it got {seen:?}");
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl Shared {
    async fn answer(&self, request: Request<Incoming>) -> Response<ReplyBody> {
        let at = Instant::now();
        let wall_ms = unix_ms(SystemTime::now());
        let target = request.uri().path_and_query().map(|pq| pq.to_string()).unwrap_or_default();
        let path = path_of(&target).to_owned();
        let reply = self.next_reply(&path);
        let now_active = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_active.fetch_max(now_active, Ordering::SeqCst);
        let _active = Active(self);

        let method = request.method().to_string();
        let headers = request.headers().clone();
        let body =
            request.into_body().collect().await.map(|body| body.to_bytes()).unwrap_or_default();
        lock(&self.hits).push(Hit { at, wall_ms, method, target, headers, body });
        self.recorded.notify_waiters();

        if reply.never {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(reply.delay).await;
        let body = Some(Bytes::from(reply.body));
        let body = if reply.stall_body { ReplyBody::Stalled(body) } else { ReplyBody::Whole(body) };
        let mut response = Response::new(body);
        *response.status_mut() = StatusCode::from_u16(reply.status).expect("a valid status");
        for (name, value) in &reply.headers {
            response.headers_mut().append(
                HeaderName::try_from(name.as_str()).expect("a valid header name"),
                HeaderValue::try_from(value.as_str()).expect("a valid header value"),
            );
        }
        response
    }

    fn next_reply(&self, path: &str) -> Reply {
        let number = {
            let mut arrivals = lock(&self.arrivals);
            let count = arrivals.entry(path.to_owned()).or_insert(0);
            *count += 1;
            *count
        };
        match lock(&self.scripts).get(path) {
            Some(script) => script[(number - 1).min(script.len() - 1)].clone(),
            None => Reply::ok(),
        }
    }
}

/// A response body: whole, or its first bytes and then nothing, forever.
enum ReplyBody {
    Whole(Option<Bytes>),
    Stalled(Option<Bytes>),
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ReplyBody::Whole(rest) => Poll::Ready(rest.take().map(|bytes| Ok(Frame::data(bytes)))),
            // Never woken: the connection stays open until the client
            // gives up or the test ends.
            ReplyBody::Stalled(rest) => match rest.take() {
                Some(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                None => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ReplyBody::Whole(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReplyBody::Whole(rest) => {
                SizeHint::with_exact(rest.as_ref().map_or(0, |bytes| bytes.len() as u64))
            }
            ReplyBody::Stalled(_) => SizeHint::default(),
        }
    }
}

fn path_of(target: &str) -> &str {
    target.split('?').next().unwrap_or(target)
}

/// Locks a mutex; a test that panicked while holding it must not hide the
/// first failure behind a poison error.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
