//! A small HTTP/1.1 client for the API socket, used by the CLI verbs.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
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
}

/// A reply from the daemon.
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

/// Sends one request over the socket at `path` and reads the whole reply.
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
