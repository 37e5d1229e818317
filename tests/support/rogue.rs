//! Receivers that misbehave below HTTP, on 127.0.0.1: they hang, reset the
//! connection, trickle their body or answer with bytes that are not HTTP.
//!
//! [`super::Receiver`] is a well-behaved hyper server whose replies are
//! scripted; a [`Rogue`] is a bare TCP listener, so it can do what no HTTP
//! server library would. Every connection is held by the listener's task
//! and closed when the `Rogue` is dropped.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// What a [`Rogue`] does with every connection it accepts.
#[derive(Clone, Copy, Debug)]
pub enum Misbehaviour {
    /// Reads the request and never answers; the connection stays open
    /// until the client closes it.
    Hang,
    /// Reads the request head, then resets the connection (RST, by a zero
    /// linger time) without a byte of reply.
    Reset,
    /// Reads the request head, then closes the connection (FIN) without a
    /// byte of reply.
    Close,
    /// Sends a `200 OK` head announcing a 64-byte body, then the body one
    /// byte per `interval`.
    Trickle { interval: Duration },
    /// Answers the first bytes it gets (a request head or a TLS client
    /// hello) with bytes that are neither HTTP nor TLS, then closes.
    Garbage,
}

/// The announced body length of [`Misbehaviour::Trickle`].
const TRICKLE_BYTES: usize = 64;

/// A running misbehaving listener; it stops when dropped.
pub struct Rogue {
    address: SocketAddr,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    /// Connections open right now, and the most there ever were.
    open: Arc<AtomicUsize>,
    most_open: Arc<AtomicUsize>,
    /// The accept loop; it owns every connection's task, so aborting it on
    /// drop closes them all.
    accept_task: JoinHandle<()>,
}

impl Rogue {
    /// Binds 127.0.0.1 on a free port and starts misbehaving.
    pub async fn start(misbehaviour: Misbehaviour) -> Rogue {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the rogue receiver");
        let address = listener.local_addr().expect("rogue receiver address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let most_open = Arc::new(AtomicUsize::new(0));

        let counters = (accepted.clone(), open.clone(), most_open.clone());
        let accept_task = tokio::spawn(async move {
            let (accepted, open, most_open) = counters;
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                accepted.fetch_add(1, Ordering::SeqCst);
                let now_open = open.fetch_add(1, Ordering::SeqCst) + 1;
                most_open.fetch_max(now_open, Ordering::SeqCst);
                let open = open.clone();
                connections.spawn(async move {
                    misbehave(stream, misbehaviour).await;
                    open.fetch_sub(1, Ordering::SeqCst);
                });
                // Reap finished connections so the set stays small.
                while connections.try_join_next().is_some() {}
            }
        });
        Rogue { address, accepted, open, most_open, accept_task }
    }

    /// An `http://` URL of `path` on this listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// An `https://` URL of `path` on this listener, which speaks no TLS.
    pub fn https_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.address)
    }

    /// How many connections were accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The most connections that were open at the same moment.
    pub fn most_open(&self) -> usize {
        self.most_open.load(Ordering::SeqCst)
    }

    /// How many connections are open right now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for Rogue {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

/// One connection's misbehaviour; returns when the connection is done.
async fn misbehave(mut stream: TcpStream, misbehaviour: Misbehaviour) {
    match misbehaviour {
        Misbehaviour::Hang => {
            // Keep reading so the client's writes never block; the request
            // is never answered, and the connection ends only when the
            // client gives up and closes it.
            let mut sink = [0u8; 4096];
            while matches!(stream.read(&mut sink).await, Ok(read) if read > 0) {}
        }
        Misbehaviour::Reset => {
            read_head(&mut stream).await;
            reset(stream);
        }
        Misbehaviour::Close => {
            read_head(&mut stream).await;
            let _ = stream.shutdown().await;
        }
        Misbehaviour::Trickle { interval } => {
            read_head(&mut stream).await;
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {TRICKLE_BYTES}\r\n\r\n");
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for _ in 0..TRICKLE_BYTES {
                tokio::time::sleep(interval).await;
                if stream.write_all(b"x").await.is_err() {
                    return;
                }
            }
        }
        Misbehaviour::Garbage => {
            let mut first = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut first)).await;
            let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.6 not http at all\r\n\r\n").await;
            let _ = stream.shutdown().await;
        }
    }
}

/// Reads until the end of a request head (or the client stops sending).
async fn read_head(stream: &mut TcpStream) {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while !seen.windows(4).any(|window| window == b"\r\n\r\n") && seen.len() < 64 * 1024 {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await {
            Ok(Ok(read)) if read > 0 => seen.extend_from_slice(&buffer[..read]),
            _ => return,
        }
    }
}

/// Closes the connection with a RST instead of a FIN.
fn reset(stream: TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on a socket this function owns, with a pointer to
    // a live `linger` and its exact size.
    let result = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(result, 0, "set SO_LINGER to reset the connection");
    drop(stream);
}
