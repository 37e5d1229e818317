//! HTTP/1.1 clients: keep-alive connections over the daemon's unix socket
//! or over TCP to the receiver.
//!
//! A [`Connection`] is one hyper `client::conn::http1` handshake on one
//! stream, reused for every request of the task that owns it, as a busy
//! task runner would. [`Api`] wraps a connection for the daemon's read-only
//! endpoints (`/v1/stats`, `/v1/health`) and reconnects when it breaks.
//! What to submit and how to count replies is left to `submit`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio::task::JoinHandle;

/// The longest one request may take, reply body included. A batch of 1000
/// on a loaded debug build stays far below it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a readiness probe may take; W5 probes every 5 ms.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// One status and body, as received.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

/// One keep-alive HTTP/1.1 connection.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    /// Drives the connection's IO; aborted when the connection is dropped,
    /// which closes the stream.
    driver: JoinHandle<()>,
}

impl Connection {
    /// Connects to the daemon's API socket.
    pub async fn unix(socket: &Path) -> anyhow::Result<Connection> {
        let stream = UnixStream::connect(socket)
            .await
            .with_context(|| format!("connect to {}", socket.display()))?;
        Connection::over(stream).await
    }

    /// Connects to a TCP address, with Nagle off as hookd's client has it.
    pub async fn tcp(address: SocketAddr) -> anyhow::Result<Connection> {
        let stream =
            TcpStream::connect(address).await.with_context(|| format!("connect to {address}"))?;
        stream.set_nodelay(true).context("set TCP_NODELAY")?;
        Connection::over(stream).await
    }

    async fn over<S>(stream: S) -> anyhow::Result<Connection>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (sender, connection) =
            http1::handshake(TokioIo::new(stream)).await.context("HTTP/1.1 handshake")?;
        let driver = tokio::spawn(async move {
            // A connection error also fails the request that was using it,
            // which reports it; nothing to add here.
            let _ = connection.await;
        });
        Ok(Connection { sender, driver })
    }

    /// Sends one request and reads the whole reply, within `timeout`.
    pub async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> anyhow::Result<Reply> {
        let exchange = async {
            self.sender.ready().await.context("connection closed")?;
            let response = self.sender.send_request(request).await.context("send request")?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.context("read reply body")?;
            Ok(Reply { status, body: body.to_bytes() })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| bail!("no reply within {timeout:?}"))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// A POST of a JSON body, with `extra` headers.
pub fn post(
    path: &str,
    body: Bytes,
    extra: &[(&str, &str)],
) -> anyhow::Result<Request<Full<Bytes>>> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(HOST, "localhost")
        .header(CONTENT_TYPE, "application/json");
    for (name, value) in extra {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(body)).with_context(|| format!("build POST {path}"))
}

/// A GET without a body.
pub fn get(path: &str) -> anyhow::Result<Request<Full<Bytes>>> {
    Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(HOST, "localhost")
        .body(Full::new(Bytes::new()))
        .with_context(|| format!("build GET {path}"))
}

/// The counts of `GET /v1/stats` that the workloads check; the other
/// fields are ignored.
#[derive(Clone, Copy, Debug, Deserialize)]
pub struct Stats {
    pub pending: u64,
    pub in_flight: u64,
    pub delivered: u64,
    pub dead: u64,
}

/// The daemon's read-only endpoints over one reused connection.
pub struct Api {
    socket: PathBuf,
    /// `None` until the first call and after a failed one.
    connection: Option<Connection>,
}

impl Api {
    pub fn new(socket: &Path) -> Api {
        Api { socket: socket.to_owned(), connection: None }
    }

    /// `GET /v1/stats`.
    pub async fn stats(&mut self) -> anyhow::Result<Stats> {
        let reply = self.get("/v1/stats").await?;
        if reply.status != 200 {
            bail!(
                "GET /v1/stats answered {}: {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            );
        }
        serde_json::from_slice(&reply.body).context("parse /v1/stats")
    }

    /// The value of one unlabelled sample in `GET /metrics`, for example
    /// `hookd_store_flushes_total`.
    pub async fn metric(&mut self, name: &str) -> anyhow::Result<f64> {
        let reply = self.get("/metrics").await?;
        if reply.status != 200 {
            bail!("GET /metrics answered {}", reply.status);
        }
        let text = String::from_utf8_lossy(&reply.body);
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .with_context(|| format!("no {name} sample in /metrics"))
    }

    /// Rounds the store flushed and commits they carried, so far.
    pub async fn store_activity(&mut self) -> anyhow::Result<(f64, f64)> {
        let flushes = self.metric("hookd_store_flushes_total").await?;
        Ok((flushes, self.metric("hookd_store_commits_total").await?))
    }

    /// Whether `GET /v1/health` answers 200 on a fresh connection within a
    /// short time: the readiness probe.
    pub async fn probe_health(socket: &Path) -> bool {
        let attempt = async {
            let mut connection = Connection::unix(socket).await?;
            connection.send(get("/v1/health")?, PROBE_TIMEOUT).await
        };
        matches!(attempt.await, Ok(reply) if reply.status == 200)
    }

    /// A GET on the kept connection; a broken connection is replaced once,
    /// which is safe because a GET changes nothing.
    async fn get(&mut self, path: &str) -> anyhow::Result<Reply> {
        if let Some(connection) = self.connection.as_mut() {
            match connection.send(get(path)?, REQUEST_TIMEOUT).await {
                Ok(reply) => return Ok(reply),
                Err(_) => self.connection = None,
            }
        }

        let mut connection = Connection::unix(&self.socket).await?;
        let reply = connection.send(get(path)?, REQUEST_TIMEOUT).await;
        self.connection = Some(connection);
        reply.with_context(|| format!("GET {path}"))
    }
}
