//! A small HTTP/1.1 client for the API socket, used by the CLI verbs.
//!
//! It owns talking to the daemon: one connection per request, the whole
//! reply read into memory, and the contract's error shape turned into a
//! typed [`ClientError::Refused`]. What the replies mean, and how they are
//! shown, is left to [`crate::cli`].

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach hookd at {path}: {source} (is `hookd serve` running? set --socket or HOOKD_SOCKET)"
    )]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("the connection to hookd failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("cannot build the request: {0}")]
    Request(#[from] hyper::http::Error),
    /// The daemon answered with an error status; `code` is the stable
    /// snake_case code scripts match on.
    #[error("{message} ({code}, HTTP {status})")]
    Refused { status: u16, code: String, message: String },
    /// The daemon answered 2xx with a body this client does not understand,
    /// which means the daemon and the CLI are of different versions.
    #[error("hookd sent a reply this CLI cannot read ({target}): {source}")]
    BadReply { target: String, source: serde_json::Error },
}

impl ClientError {
    /// Whether the daemon could not be reached at all (exit code 3), as
    /// opposed to refusing or failing one request (exit code 1).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Connect { .. })
    }
}

/// A reply from the daemon.
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Reply {
    /// The body as the daemon sent it, without its trailing newline, for
    /// `--json`: keys keep their order and payloads their bytes.
    pub fn raw_text(&self) -> String {
        String::from_utf8_lossy(self.body.trim_ascii_end()).into_owned()
    }

    /// The body read as `T`; `target` names the request in the error.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self, target: &str) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body)
            .map_err(|source| ClientError::BadReply { target: target.to_owned(), source })
    }
}

/// The daemon behind one socket path.
#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: PathBuf) -> Client {
        Client { socket }
    }

    /// Sends a request and returns a 2xx reply; an error status becomes
    /// [`ClientError::Refused`] with the daemon's code and message.
    pub async fn send(
        &self,
        method: Method,
        target: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Reply, ClientError> {
        let reply = call(&self.socket, method, target, body).await?;
        if reply.status < 400 {
            return Ok(reply);
        }
        Err(refusal(&reply))
    }

    /// `GET target`.
    pub async fn get(&self, target: &str) -> Result<Reply, ClientError> {
        self.send(Method::GET, target, None).await
    }
}

/// The error body of the contract: `{"error": {"code", "message"}}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// Reads an error reply; a body without the contract's shape (a proxy, an
/// older daemon) still gives a readable line.
fn refusal(reply: &Reply) -> ClientError {
    let (code, message) = match serde_json::from_slice::<ErrorBody>(&reply.body) {
        Ok(body) => (body.error.code, body.error.message),
        Err(_) => ("error".to_owned(), "the daemon refused the request".to_owned()),
    };
    ClientError::Refused { status: reply.status, code, message }
}

/// Sends one request over the socket at `path` and reads the whole reply,
/// whatever its status.
pub async fn call(
    path: &Path,
    method: Method,
    target: &str,
    body: Option<Vec<u8>>,
) -> Result<Reply, ClientError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ClientError::Connect { path: path.to_owned(), source })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);

    let request = Request::builder()
        .method(method)
        .uri(target)
        .header(HOST, "localhost")
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let response = sender.send_request(request).await?;

    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Reply { status, body })
}
