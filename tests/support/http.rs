//! A minimal HTTP/1.1 client over the daemon's unix socket.
//!
//! One connection per request, as a script or `curl --unix-socket` would
//! do it. Every call is bounded by [`REQUEST_TIMEOUT`].

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

/// The longest one API request may take in a test.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends one request over `socket`; the error says which step failed.
pub async fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, Bytes), String> {
    let method = Method::from_bytes(method.as_bytes()).map_err(|error| error.to_string())?;
    let exchange = async {
        let stream =
            UnixStream::connect(socket).await.map_err(|error| format!("connect: {error}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| format!("handshake: {error}"))?;
        tokio::spawn(connection);

        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "localhost")
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| format!("build: {error}"))?;
        let response =
            sender.send_request(request).await.map_err(|error| format!("send: {error}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| format!("read body: {error}"))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no reply within {REQUEST_TIMEOUT:?}")))
}

/// A reply body as JSON; a body that is not JSON becomes a JSON string so
/// that assertions show it.
pub fn parse_body(body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}
