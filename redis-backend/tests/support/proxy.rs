//! A loopback TCP proxy that the test controls, to put a client or a
//! replication link into states a real network reaches only by chance:
//!
//! - [`Proxy::wedge`]: every connection opened before stops forwarding (its
//!   sockets stay open, so the peer sees no error, only silence), while
//!   connections opened after work normally — a client left waiting on a
//!   connection that will never answer, or a replica whose link to its
//!   master is frozen. [`Proxy::black_hole`] holds new connections too: a
//!   server that accepts and never answers.
//! - [`Proxy::lose_reply`]: the next request containing a marker reaches the
//!   server, and once the server starts answering, the client's connection
//!   is closed instead: a write applied whose reply was lost.
//! - [`Proxy::refuse`]: the next request containing a marker never reaches
//!   the server; the proxy answers each of its commands with an error reply
//!   (`-TRYAGAIN`, say): a request the server did not run.
//! - [`Proxy::lose_reply_then_hold`]: as `lose_reply`, and the next request
//!   containing the marker after that (the client's resend) is held at the
//!   proxy until [`Proxy::release`]: the test acts between a write that
//!   applied and its resend ([`Proxy::held`] says when the resend is held).
//! - [`Proxy::delay`]: every request waits this long before it is forwarded.
//!
//! Markers are matched against one read from the client (a pipeline sent in
//! one write arrives in one read on loopback).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// A fault armed for the next request that contains `marker`.
#[derive(Clone, Debug)]
enum Fault {
    LoseReply,
    /// `LoseReply`, then `Hold` armed for the same marker.
    LoseReplyThenHold,
    Hold,
    Refuse(String),
}

#[derive(Default)]
struct Control {
    epoch: AtomicU64,
    black_hole: AtomicBool,
    delay_ms: AtomicU64,
    armed: Mutex<Option<(Vec<u8>, Fault)>>,
    fired: AtomicU64,
    reads: AtomicU64,
    accepted: AtomicU64,
    held: AtomicU64,
    released: AtomicBool,
}

impl Control {
    /// Takes the armed fault if `chunk` contains its marker.
    fn take_fault(&self, chunk: &[u8]) -> Option<Fault> {
        let mut armed = self.armed.lock().unwrap();
        let hit = armed
            .as_ref()
            .is_some_and(|(marker, _)| chunk.windows(marker.len()).any(|w| w == marker.as_slice()));
        if !hit {
            return None;
        }
        self.fired.fetch_add(1, Ordering::SeqCst);
        let (marker, fault) = armed.take()?;
        if matches!(fault, Fault::LoseReplyThenHold) {
            // Armed in the same step: the resend cannot slip through.
            *armed = Some((marker, Fault::Hold));
            return Some(Fault::LoseReply);
        }
        Some(fault)
    }
}

pub struct Proxy {
    pub addr: SocketAddr,
    control: Arc<Control>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream_port`.
    pub async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let control = Arc::new(Control::default());
        let task = {
            let control = Arc::clone(&control);
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    control.accepted.fetch_add(1, Ordering::SeqCst);
                    // Born in the past: wedged from its first byte.
                    let born = control.epoch.load(Ordering::SeqCst)
                        + u64::from(control.black_hole.load(Ordering::SeqCst));
                    let control = Arc::clone(&control);
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
                            return;
                        };
                        let (cr, cw) = client.into_split();
                        let (sr, sw) = server.into_split();
                        let link = Arc::new(Link {
                            control,
                            born,
                            to_client: tokio::sync::Mutex::new(Some(cw)),
                            cut: AtomicBool::new(false),
                            cut_pending: AtomicBool::new(false),
                        });
                        let up = tokio::spawn(upstream(cr, sw, Arc::clone(&link)));
                        let down = tokio::spawn(downstream(sr, link));
                        let _ = tokio::join!(up, down);
                    });
                }
            })
        };
        Self { addr, control, task }
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Wedges every connection open now.
    pub fn wedge(&self) {
        self.control.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Wedges every connection, open now or opened later.
    pub fn black_hole(&self) {
        self.control.black_hole.store(true, Ordering::SeqCst);
        self.wedge();
    }

    /// The next request containing `marker` reaches the server; its reply
    /// does not reach the client, whose connection is closed instead.
    pub fn lose_reply(&self, marker: &str) {
        *self.control.armed.lock().unwrap() = Some((marker.as_bytes().to_vec(), Fault::LoseReply));
    }

    /// As [`Proxy::lose_reply`]; then the next request containing `marker`
    /// (the resend) waits at the proxy until [`Proxy::release`].
    pub fn lose_reply_then_hold(&self, marker: &str) {
        self.control.released.store(false, Ordering::SeqCst);
        *self.control.armed.lock().unwrap() = Some((marker.as_bytes().to_vec(), Fault::LoseReplyThenHold));
    }

    /// Requests held so far by [`Proxy::lose_reply_then_hold`].
    pub fn held(&self) -> u64 {
        self.control.held.load(Ordering::SeqCst)
    }

    /// Lets a held request (and any later one) go on to the server.
    pub fn release(&self) {
        self.control.released.store(true, Ordering::SeqCst);
    }

    /// The next request containing `marker` does not reach the server; each
    /// of its commands is answered with `-<error>` instead.
    pub fn refuse(&self, marker: &str, error: &str) {
        *self.control.armed.lock().unwrap() =
            Some((marker.as_bytes().to_vec(), Fault::Refuse(error.to_owned())));
    }

    /// True if no fault is armed (the last one armed has fired).
    pub fn fault_fired(&self) -> bool {
        self.control.armed.lock().unwrap().is_none()
    }

    /// Forgets the armed fault.
    pub fn disarm(&self) {
        *self.control.armed.lock().unwrap() = None;
    }

    /// Faults fired so far.
    pub fn faults_fired(&self) -> u64 {
        self.control.fired.load(Ordering::SeqCst)
    }

    /// Connections accepted so far (a client connecting, or reconnecting).
    pub fn connections_accepted(&self) -> u64 {
        self.control.accepted.load(Ordering::SeqCst)
    }

    /// Reads from clients so far, on every connection: a pipeline sent in
    /// one write is one read (on loopback), a request sent alone is one.
    pub fn client_reads(&self) -> u64 {
        self.control.reads.load(Ordering::SeqCst)
    }

    /// Every request from now on waits `delay` before it is forwarded.
    pub fn delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.control.delay_ms.store(ms, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One proxied connection.
struct Link {
    control: Arc<Control>,
    born: u64,
    /// The client's write half; `None` once the connection was cut.
    to_client: tokio::sync::Mutex<Option<OwnedWriteHalf>>,
    /// The client's connection was closed: forward nothing more.
    cut: AtomicBool,
    /// Close the client's connection when the server's next bytes arrive.
    cut_pending: AtomicBool,
}

impl Link {
    /// Holds the caller while this connection is wedged (for good).
    async fn hold_if_wedged(&self) {
        while self.control.epoch.load(Ordering::SeqCst) != self.born {
            // Wedged: hold the bytes and both sockets, say nothing.
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }

    async fn cut_client(&self) {
        self.cut.store(true, Ordering::SeqCst);
        if let Some(mut w) = self.to_client.lock().await.take() {
            let _ = w.shutdown().await;
        }
    }
}

async fn upstream(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, link: Arc<Link>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        link.control.reads.fetch_add(1, Ordering::SeqCst);
        if link.cut.load(Ordering::SeqCst) {
            return;
        }
        link.hold_if_wedged().await;
        let delay_ms = link.control.delay_ms.load(Ordering::SeqCst);
        if delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        match link.control.take_fault(&buf[..n]) {
            Some(Fault::Refuse(error)) => {
                let reply = format!("-{error}\r\n").repeat(count_commands(&buf[..n]));
                if let Some(w) = link.to_client.lock().await.as_mut() {
                    let _ = w.write_all(reply.as_bytes()).await;
                }
                continue;
            }
            Some(Fault::LoseReply) => link.cut_pending.store(true, Ordering::SeqCst),
            Some(Fault::Hold) => {
                link.control.held.fetch_add(1, Ordering::SeqCst);
                while !link.control.released.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            Some(Fault::LoseReplyThenHold) => unreachable!("taken as LoseReply"),
            None => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn downstream(mut from: OwnedReadHalf, link: Arc<Link>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            // The server closed the connection (or died): so does the
            // proxy, as the client's own connection would have been.
            Ok(0) | Err(_) => {
                link.hold_if_wedged().await;
                link.cut_client().await;
                return;
            }
            Ok(n) => n,
        };
        link.hold_if_wedged().await;
        if link.cut_pending.load(Ordering::SeqCst) {
            // The server ran the request and started answering: the
            // answer is lost with the client's connection.
            link.cut_client().await;
            return;
        }
        let mut to = link.to_client.lock().await;
        let Some(w) = to.as_mut() else { return };
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Commands in a chunk of RESP requests (arrays of bulk strings).
fn count_commands(chunk: &[u8]) -> usize {
    let mut count = 0;
    let mut i = 0;
    let line = |from: usize| -> Option<(i64, usize)> {
        let end = chunk[from..].windows(2).position(|w| w == b"\r\n")? + from;
        let n = std::str::from_utf8(&chunk[from + 1..end]).ok()?.parse().ok()?;
        Some((n, end + 2))
    };
    while i < chunk.len() && chunk[i] == b'*' {
        let Some((args, mut at)) = line(i) else { break };
        for _ in 0..args {
            let Some((len, start)) = line(at) else {
                return count;
            };
            at = start + usize::try_from(len).unwrap_or(0) + 2;
        }
        count += 1;
        i = at;
    }
    count.max(1)
}
