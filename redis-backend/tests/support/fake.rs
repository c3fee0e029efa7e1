//! A server that speaks the Redis protocol but is not Redis: it parses each
//! request (an array of bulk strings) and answers what the test's function
//! says, on a free loopback port. For checking that the backend validates
//! replies instead of reading meaning into whatever comes back. It refuses
//! `HELLO` as Redis 5 does, so the store speaks RESP2 to it.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Builds the raw reply (RESP bytes) to one command (its arguments, the
/// command name first).
pub type Responder = Arc<dyn Fn(&[Vec<u8>]) -> Vec<u8> + Send + Sync>;

pub struct FakeServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    /// A fake that refuses `HELLO` as Redis 5 does.
    pub async fn start(respond: Responder) -> Self {
        Self::start_raw(Arc::new(move |args: &[Vec<u8>]| {
            if name(args) == "HELLO" {
                // As Redis 5 answers: the store speaks RESP2.
                return b"-ERR unknown command `HELLO`, with args beginning with: `3`, \r\n".to_vec();
            }
            respond(args)
        }))
        .await
    }

    /// A fake whose `respond` answers every command, `HELLO` included; an
    /// empty answer closes the connection.
    pub async fn start_raw(respond: Responder) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake server");
        let addr = listener.local_addr().expect("fake server addr");
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let respond = Arc::clone(&respond);
                tokio::spawn(async move {
                    let mut pending: Vec<u8> = Vec::new();
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        pending.extend_from_slice(&buf[..n]);
                        let mut out = Vec::new();
                        while let Some((args, used)) = parse_request(&pending) {
                            pending.drain(..used);
                            let reply = respond(&args);
                            if reply.is_empty() {
                                return;
                            }
                            out.extend(reply);
                        }
                        if socket.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, task }
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The command name of `args`, upper-cased.
pub fn name(args: &[Vec<u8>]) -> String {
    args.first()
        .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
        .unwrap_or_default()
}

/// A bulk string reply.
pub fn bulk(text: &str) -> Vec<u8> {
    format!("${}\r\n{text}\r\n", text.len()).into_bytes()
}

/// One whole request at the start of `buf`: its arguments and its length.
fn parse_request(buf: &[u8]) -> Option<(Vec<Vec<u8>>, usize)> {
    let line = |from: usize| -> Option<(usize, usize)> {
        let end = buf.get(from..)?.windows(2).position(|w| w == b"\r\n")? + from;
        let n = std::str::from_utf8(&buf[from + 1..end]).ok()?.parse().ok()?;
        Some((n, end + 2))
    };
    if buf.first() != Some(&b'*') {
        return None;
    }
    let (count, mut at) = line(0)?;
    let mut args = Vec::with_capacity(count);
    for _ in 0..count {
        if buf.get(at) != Some(&b'$') {
            return None;
        }
        let (len, start) = line(at)?;
        let end = start + len;
        if buf.len() < end + 2 {
            return None;
        }
        args.push(buf[start..end].to_vec());
        at = end + 2;
    }
    Some((args, at))
}
