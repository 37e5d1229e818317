//! One attempt: a POST to the receiver and what came back.
//!
//! [`Sender`] owns the hyper client (connection reuse, rustls with HTTP/1.1
//! and HTTP/2 by ALPN, the guarded resolver) and turns a [`Delivery`] into
//! a request with the contract's headers. One deadline, the delivery's
//! timeout, covers connecting, TLS, sending, the response head and reading
//! the body up to [`BODY_CAP_BYTES`]: a receiver that answers late or
//! trickles its body fails the attempt. Redirects are not followed.
//!
//! This module does not decide what happens next; it reports an
//! [`AttemptReport`] and [`crate::schedule`] decides.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::clock::{self, UnixMs};
use crate::guard::{Denied, DnsFailed, Guard, GuardedResolver};
use crate::metrics::AttemptClass;
use crate::record::Delivery;
use crate::schedule::{self, Outcome};
use crate::signing::{self, Secret};

/// The response body is read up to this many bytes, then dropped.
pub const BODY_CAP_BYTES: usize = 16 * 1024;

/// This many bytes of the response body are kept with the attempt.
pub const EXCERPT_BYTES: usize = 256;

/// Idle keep-alive connections are closed after this long: below the 5 s
/// default of common servers (Node), so hookd rarely reuses a connection
/// the server is closing at that moment.
const POOL_IDLE: Duration = Duration::from_secs(4);

type HttpsClient = Client<HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>;

/// Sends callbacks; one per daemon, shared by every attempt.
pub struct Sender {
    client: HttpsClient,
    guard: Arc<Guard>,
    /// Configured secrets; a delivery's own secret replaces them.
    secrets: Vec<Secret>,
    user_agent: HeaderValue,
}

/// What one attempt did.
#[derive(Clone, Debug)]
pub struct AttemptReport {
    pub started_at: UnixMs,
    pub duration: Duration,
    pub outcome: Outcome,
    /// The outcome as the metrics count it.
    pub class: AttemptClass,
    pub status: Option<u16>,
    /// Why it failed, when no usable status came back.
    pub error: Option<String>,
    pub excerpt: Option<String>,
}

impl Sender {
    pub fn new(guard: Arc<Guard>, secrets: Vec<Secret>) -> Sender {
        let mut http = HttpConnector::new_with_resolver(GuardedResolver::new(guard.clone()));
        http.enforce_http(false);
        http.set_nodelay(true);

        // The Mozilla roots compiled into the binary (webpki-roots): they work
        // the same in a hardened unit with no view of /etc/ssl, in a minimal
        // image, and on every distribution.
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);

        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .timer(TokioTimer::new())
            .build(https);

        let user_agent = HeaderValue::from_static(concat!("hookd/", env!("CARGO_PKG_VERSION")));
        Sender { client, guard, secrets, user_agent }
    }

    /// Makes one attempt; never fails, every failure is in the report.
    pub async fn send(&self, delivery: &Delivery) -> AttemptReport {
        let started_at = clock::now_ms();
        let started = Instant::now();
        let timeout = Duration::from_millis(delivery.timeout_ms);

        let result = match self.request(delivery, started_at) {
            Ok(request) => match tokio::time::timeout(timeout, self.exchange(request)).await {
                Ok(result) => result,
                Err(_) => Err(("timeout".to_owned(), AttemptClass::Timeout)),
            },
            Err(error) => Err(error),
        };

        let duration = started.elapsed();
        match result {
            Ok(response) => AttemptReport {
                started_at,
                duration,
                outcome: Outcome::Status {
                    code: response.status,
                    retry_after: response.retry_after,
                },
                class: match response.status {
                    200..=299 => AttemptClass::Success,
                    _ => AttemptClass::HttpError,
                },
                status: Some(response.status),
                error: None,
                excerpt: response.excerpt,
            },
            Err((error, class)) => AttemptReport {
                started_at,
                duration,
                outcome: Outcome::Failed,
                class,
                status: None,
                error: Some(error),
                excerpt: None,
            },
        }
    }

    /// Builds the POST with the contract's headers.
    fn request(&self, delivery: &Delivery, now: UnixMs) -> Result<Request<Full<Bytes>>, Failure> {
        let malformed = |what: &str| (what.to_owned(), AttemptClass::ConnectError);
        let uri: hyper::Uri = delivery.url.parse().map_err(|_| malformed("invalid url"))?;
        if let Some(address) = literal_host(&uri)
            && !self.guard.permits(address)
        {
            let reason = format!("destination denied: {address} is an internal address");
            return Err((reason, AttemptClass::Denied));
        }

        let id = delivery.id.to_string();
        let timestamp = now / 1000;
        let mut builder = Request::post(uri)
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, self.user_agent.clone())
            .header("webhook-id", id.as_str())
            .header("webhook-timestamp", timestamp.to_string());

        let own_secret;
        let secrets = match &delivery.signing_secret {
            Some(text) => {
                own_secret = [Secret::parse(text).map_err(|_| malformed("bad signing secret"))?];
                &own_secret[..]
            }
            None => &self.secrets[..],
        };
        if let Some(signature) =
            signing::signature_header(secrets, &id, timestamp, &delivery.payload)
        {
            builder = builder.header("webhook-signature", signature);
        }

        // A submitted header replaces one hookd set (only User-Agent can be
        // given; the rest are refused at submission), never doubles it.
        if let Some(headers) = builder.headers_mut() {
            for (name, value) in &delivery.headers {
                let name =
                    HeaderName::try_from(name.as_str()).map_err(|_| malformed("bad header"))?;
                let value =
                    HeaderValue::try_from(value.as_str()).map_err(|_| malformed("bad header"))?;
                headers.insert(name, value);
            }
        }

        builder
            .body(Full::new(Bytes::copy_from_slice(&delivery.payload)))
            .map_err(|error| malformed(&format!("cannot build request: {error}")))
    }

    /// Sends the request and reads the head and the capped body.
    async fn exchange(&self, request: Request<Full<Bytes>>) -> Result<Response, Failure> {
        let response = self.client.request(request).await.map_err(|error| describe(&error))?;

        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| schedule::parse_retry_after(value, SystemTime::now()));

        let mut body = response.into_body();
        let mut kept = Vec::new();
        while kept.len() < BODY_CAP_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        kept.extend_from_slice(data);
                    }
                }
                Some(Err(error)) => {
                    let (reason, class) = describe(&error);
                    return Err((format!("response body: {reason}"), class));
                }
                None => break,
            }
        }

        let excerpt = (!kept.is_empty())
            .then(|| String::from_utf8_lossy(&kept[..kept.len().min(EXCERPT_BYTES)]).into_owned());
        Ok(Response { status, retry_after, excerpt })
    }
}

/// Why an attempt failed, and how the metrics count it.
type Failure = (String, AttemptClass);

struct Response {
    status: u16,
    retry_after: Option<Duration>,
    excerpt: Option<String>,
}

/// The host of `uri` when it is an IP literal: hyper's connector dials
/// those without asking the resolver, so the guard checks them here.
fn literal_host(uri: &hyper::Uri) -> Option<std::net::IpAddr> {
    let host = uri.host()?;
    let bare = host.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).unwrap_or(host);
    bare.parse().ok()
}

/// A short reason for a failed exchange, from the deepest known cause.
fn describe(error: &(dyn StdError + 'static)) -> Failure {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    let mut deepest = error.to_string();
    while let Some(cause) = current {
        if let Some(denied) = cause.downcast_ref::<Denied>() {
            return (denied.to_string(), AttemptClass::Denied);
        }
        if let Some(dns) = cause.downcast_ref::<DnsFailed>() {
            return (dns.to_string(), AttemptClass::ConnectError);
        }
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return (format!("tls error: {tls}"), AttemptClass::TlsError);
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            let reason = match io.kind() {
                std::io::ErrorKind::ConnectionRefused => Some("connection refused"),
                std::io::ErrorKind::ConnectionReset => Some("connection reset"),
                std::io::ErrorKind::ConnectionAborted => Some("connection aborted"),
                std::io::ErrorKind::TimedOut => {
                    return ("timeout".into(), AttemptClass::Timeout);
                }
                _ => None,
            };
            if let Some(reason) = reason {
                return (reason.into(), AttemptClass::ConnectError);
            }
        }
        if let Some(hyper_error) = cause.downcast_ref::<hyper::Error>()
            && hyper_error.is_incomplete_message()
        {
            return ("connection closed before the response".into(), AttemptClass::ConnectError);
        }
        deepest = cause.to_string();

        // An io::Error's `source()` skips the error it wraps (rustls wraps
        // its errors in io::Errors, sometimes twice), so step into it.
        current = match cause.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
            None => cause.source(),
        };
    }
    (deepest, AttemptClass::ConnectError)
}
