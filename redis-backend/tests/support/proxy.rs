//! A loopback TCP proxy that can wedge the connections it carries: after
//! [`Proxy::wedge`], every connection opened before stops forwarding (its
//! sockets stay open, so the client sees no error, only silence), while
//! connections opened after work normally — the state a client is left in
//! when a server vanishes without a reset, or when a client's own state
//! machine hangs. [`Proxy::black_hole`] holds new connections too: a server
//! that accepts and never answers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    pub addr: SocketAddr,
    epoch: Arc<AtomicU64>,
    black_hole: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream_port`.
    pub async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let epoch = Arc::new(AtomicU64::new(0));
        let black_hole = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = {
            let epoch = Arc::clone(&epoch);
            let black_hole = Arc::clone(&black_hole);
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    // Born in the past: wedged from its first byte.
                    let born = epoch.load(Ordering::SeqCst) + u64::from(black_hole.load(Ordering::SeqCst));
                    let epoch = Arc::clone(&epoch);
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
                            return;
                        };
                        let (cr, cw) = client.into_split();
                        let (sr, sw) = server.into_split();
                        let up = tokio::spawn(pump(cr, sw, Arc::clone(&epoch), born));
                        let down = tokio::spawn(pump(sr, cw, epoch, born));
                        let _ = tokio::join!(up, down);
                    });
                }
            })
        };
        Self {
            addr,
            epoch,
            black_hole,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Wedges every connection open now.
    pub fn wedge(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Wedges every connection, open now or opened later.
    pub fn black_hole(&self) {
        self.black_hole.store(true, Ordering::SeqCst);
        self.wedge();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    epoch: Arc<AtomicU64>,
    born: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while epoch.load(Ordering::SeqCst) != born {
            // Wedged: hold the bytes and both sockets, say nothing.
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
