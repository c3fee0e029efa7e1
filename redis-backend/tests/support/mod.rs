//! Test harness: real `redis-server` processes on free loopback ports, each
//! in its own temporary directory, stopped (SIGKILL, then reaped) when their
//! guard drops — also when a test panics. Only the PIDs started here are ever
//! signalled.
//!
//! `redis-server` and `redis-cli` must be on the PATH (`scripts/ensure-redis.sh`
//! installs them; `scripts/test.sh` runs it first). A missing binary is a
//! test failure with that advice, never a skip.

#![allow(dead_code)] // each test binary uses a different part

pub mod fake;
pub mod proxy;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The loopback address every server binds to; nothing else is contacted.
pub const HOST: &str = "127.0.0.1";

/// How long a server may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Cluster bus ports are the client port + 10000.
const BUS_PORT_OFFSET: u16 = 10_000;

/// Panics with install advice if a Redis binary is missing.
pub fn require_redis() {
    for bin in ["redis-server", "redis-cli"] {
        let found = Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "`{bin}` not found: run `bash scripts/ensure-redis.sh` (installs Debian's redis-server); \
             these tests never skip"
        );
    }
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// A port free now (and, for a cluster node, its bus port too).
fn free_port(with_bus: bool) -> u16 {
    loop {
        let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).expect("bind :0");
        let port = listener.local_addr().expect("local addr").port();
        drop(listener);
        if !with_bus {
            return port;
        }
        if port < u16::MAX - BUS_PORT_OFFSET && port_free(port + BUS_PORT_OFFSET) {
            return port;
        }
    }
}

/// Sends one command over a fresh connection and returns the raw reply
/// (enough RESP for `PING` and `INFO`-style bulk replies).
pub fn raw_command(port: u16, args: &[&str]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(
        &SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(500),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(req.as_bytes())?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        if complete(&reply) {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// True once `reply` holds one whole simple, error, integer or bulk reply.
fn complete(reply: &[u8]) -> bool {
    let Some(line_end) = reply.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    match reply.first() {
        Some(b'$') => {
            let len: i64 = std::str::from_utf8(&reply[1..line_end])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            len < 0 || reply.len() >= line_end + 2 + usize::try_from(len).unwrap_or(0) + 2
        }
        _ => true,
    }
}

/// One `redis-server` process.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    args: Vec<String>,
}

impl Server {
    /// A standalone server (no persistence).
    pub fn standalone() -> Self {
        Self::start(&[], false)
    }

    /// A standalone replica of the server listening on `master_port` (the
    /// master itself, or a proxy in front of it).
    pub fn replica_of(master_port: u16) -> Self {
        Self::start(&["--replicaof", HOST, &master_port.to_string()], false)
    }

    /// A cluster-enabled node with the given node timeout.
    pub fn cluster_node(node_timeout_ms: u64) -> Self {
        let timeout = node_timeout_ms.to_string();
        Self::start(
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                &timeout,
                // Fail over even if the replica lost its link a while ago
                // (repeated kills in one test).
                "--cluster-replica-validity-factor",
                "0",
                // Keep serving the slots that have a master while others
                // have none (Redis' default, `yes`, answers CLUSTERDOWN for
                // every key then: one failing shard stalls all of them).
                "--cluster-require-full-coverage",
                "no",
            ],
            true,
        )
    }

    fn start(extra: &[&str], cluster: bool) -> Self {
        require_redis();
        for _ in 0..20 {
            let dir = tempfile::Builder::new()
                .prefix("session-redis-")
                .tempdir()
                .expect("temp dir");
            let port = free_port(cluster);
            let mut args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                HOST,
                "--save",
                "",
                "--appendonly",
                "no",
                "--repl-diskless-sync",
                "yes",
                "--repl-diskless-sync-delay",
                "0",
                "--logfile",
                "redis.log",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            args.extend(extra.iter().map(|s| (*s).to_owned()));
            let mut server = Self {
                child: None,
                port,
                dir,
                args,
            };
            if server.spawn() {
                return server;
            }
            // Dropped here: its directory goes; try another port.
        }
        panic!("could not start redis-server on a free loopback port after 20 tries");
    }

    /// Starts the process with the stored arguments; true once it answers.
    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(&self.args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None; // exited (port taken?): caller retries
                    return false;
                }
            }
            if raw_command(self.port, &["PING"]).is_ok_and(|r| r.starts_with("+PONG")) {
                // The port was free when drawn, not reserved: another
                // test's server may have bound it first, and this one then
                // exits while that one answers. Ours only if it says so.
                if self.answering_pid() == self.pid() {
                    return true;
                }
                self.kill9();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server on port {} did not answer within {START_TIMEOUT:?}; log:\n{}",
            self.port,
            self.log()
        );
    }

    pub fn url(&self) -> String {
        format!("redis://{HOST}:{}", self.port)
    }

    pub fn addr(&self) -> String {
        format!("{HOST}:{}", self.port)
    }

    /// The PID of the server answering on this port (`INFO server`).
    fn answering_pid(&self) -> Option<u32> {
        let info = raw_command(self.port, &["INFO", "server"]).ok()?;
        info.lines()
            .find_map(|line| line.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// `kill -9` this server (its own PID only) and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL on Unix
            let _ = child.wait();
        }
    }

    /// Freezes this server (SIGSTOP to its own PID): it keeps its
    /// connections open and answers nothing until [`Server::resume`].
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server run again (SIGCONT): it answers what waited.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        self::signal(self.pid().expect("a running server"), signal);
    }

    /// Starts it again on the same port and directory (a cluster node
    /// rejoins with its `nodes.conf`).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running server");
        for _ in 0..50 {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100)); // port still held?
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    fn stop(&mut self) {
        self.kill9();
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// `redis-cli -p <port> args...`, stdout as text.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }

    /// A field of `INFO <section>`.
    pub fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let text = self.cli(&["INFO", section]);
        text.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{field}:")).map(str::to_owned))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `redis-cli -h 127.0.0.1 -p <port> args...`, stdout as text ("" on failure).
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", HOST, "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `check` every 20 ms until it holds; panics with `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug)]
pub struct NodeLine {
    pub id: String,
    pub port: u16,
    pub flags: String,
    pub master_id: String,
    pub connected: bool,
    pub first_slot: Option<u32>,
}

impl NodeLine {
    pub fn is_master(&self) -> bool {
        self.flags.split(',').any(|f| f == "master")
    }

    pub fn failed(&self) -> bool {
        self.flags.split(',').any(|f| f == "fail" || f == "fail?")
    }
}

fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() < 8 {
                return None;
            }
            let port = parts[1].split(['@', ':']).nth(1)?.parse().ok()?;
            let first_slot = parts[8..]
                .iter()
                .filter(|r| !r.starts_with('['))
                .filter_map(|r| r.split('-').next()?.parse().ok())
                .min();
            Some(NodeLine {
                id: parts[0].to_owned(),
                port,
                flags: parts[2].to_owned(),
                master_id: parts[3].to_owned(),
                connected: parts[7] == "connected",
                first_slot,
            })
        })
        .collect()
}

/// Sends `signal` (`-STOP`, `-CONT`) to process `pid`: what
/// [`Server::freeze`] and [`Server::resume`] do, for a thread that holds no
/// `Server`.
pub fn signal(pid: u32, signal: &str) {
    let pid = pid.to_string();
    // The shell's built-in `kill`: a minimal machine may lack procps.
    let status = Command::new("sh")
        .args(["-c", "kill \"$0\" \"$1\"", signal, &pid])
        .status()
        .expect("run sh -c kill");
    assert!(status.success(), "kill {signal} {pid} failed");
}

/// A 6-node Redis Cluster: 3 masters, 3 replicas.
pub struct Cluster {
    pub nodes: Vec<Server>,
    pub node_timeout_ms: u64,
}

impl Cluster {
    /// Starts 6 nodes, creates the cluster with `redis-cli --cluster create
    /// --cluster-replicas 1`, and waits until it is ok and every replica has
    /// finished its first sync.
    pub fn start(node_timeout_ms: u64) -> Self {
        let nodes: Vec<Server> = (0..6).map(|_| Server::cluster_node(node_timeout_ms)).collect();
        let addrs: Vec<String> = nodes.iter().map(Server::addr).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("All 16384 slots covered"),
            "redis-cli --cluster create failed:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self {
            nodes,
            node_timeout_ms,
        };
        cluster.wait_healthy(Duration::from_secs(30));
        cluster
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Server::url).collect()
    }

    /// Moves `key` of `slot` from the master at node `from` to the one at
    /// node `to`, by hand as `redis-cli --cluster reshard` would; then, if
    /// `finish`, the slot too (otherwise the slot stays migrating: `from`
    /// answers `ASK` for the key).
    pub fn migrate_key(&self, slot: u16, key: &str, from: usize, to: usize, finish: bool) {
        self.move_slot(slot, Some(key), from, to, finish);
    }

    /// Marks `slot` migrating from the master at node `from` to the one at
    /// node `to`, moving no key (`from` answers `ASK` for a key it lacks).
    pub fn begin_migration(&self, slot: u16, from: usize, to: usize) {
        let lines = self.node_lines();
        let id_of = |node: usize| self.node_id(&lines, node);
        let slot = slot.to_string();
        let ok = |reply: String| assert_eq!(reply.trim(), "OK", "migration step");
        ok(self.nodes[to].cli(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &id_of(from)]));
        ok(self.nodes[from].cli(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &id_of(to)]));
    }

    /// Ends [`Cluster::begin_migration`] with the slot where it was.
    pub fn cancel_migration(&self, slot: u16, from: usize, to: usize) {
        let slot = slot.to_string();
        for node in [from, to] {
            assert_eq!(
                self.nodes[node]
                    .cli(&["CLUSTER", "SETSLOT", &slot, "STABLE"])
                    .trim(),
                "OK"
            );
        }
    }

    /// Moves `slot`, which holds no key, from the master at node `from` to
    /// the one at node `to`, and tells every running master.
    pub fn move_empty_slot(&self, slot: u16, from: usize, to: usize) {
        self.move_slot(slot, None, from, to, true);
    }

    /// Node `node`'s cluster id, from `CLUSTER NODES` lines.
    fn node_id(&self, lines: &[NodeLine], node: usize) -> String {
        lines
            .iter()
            .find(|l| l.port == self.nodes[node].port)
            .expect("node line")
            .id
            .clone()
    }

    fn move_slot(&self, slot: u16, key: Option<&str>, from: usize, to: usize, finish: bool) {
        let lines = self.node_lines();
        let id_of = |node: usize| self.node_id(&lines, node);
        let (from_id, to_id) = (id_of(from), id_of(to));
        let slot = slot.to_string();
        let ok = |reply: String| assert_eq!(reply.trim(), "OK", "resharding step");
        ok(self.nodes[to].cli(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]));
        ok(self.nodes[from].cli(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]));
        if let Some(key) = key {
            let port = self.nodes[to].port.to_string();
            ok(self.nodes[from].cli(&["MIGRATE", HOST, &port, "", "0", "5000", "KEYS", key]));
        }
        if !finish {
            return;
        }
        for node in [to, from] {
            ok(self.nodes[node].cli(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]));
        }
        if key.is_none() {
            let others = lines
                .iter()
                .filter(|l| l.is_master() && !l.failed() && l.id != to_id && l.id != from_id);
            for other in others {
                let node = self.index_of_port(other.port);
                ok(self.nodes[node].cli(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]));
            }
        }
    }

    /// `CLUSTER NODES` as some running node sees it.
    pub fn node_lines(&self) -> Vec<NodeLine> {
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            let lines = parse_nodes(&node.cli(&["CLUSTER", "NODES"]));
            if !lines.is_empty() {
                return lines;
            }
        }
        Vec::new()
    }

    fn index_of_port(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .expect("a node of ours")
    }

    /// True if every running node says `cluster_state:ok`, every slot range
    /// has a running master, and every running replica is synced.
    pub fn healthy(&self) -> bool {
        let running: Vec<&Server> = self.nodes.iter().filter(|n| n.is_running()).collect();
        let ok = running
            .iter()
            .all(|n| n.info_field_cluster("cluster_state").as_deref() == Some("ok"));
        if !ok {
            return false;
        }
        let lines = self.node_lines();
        let masters: Vec<&NodeLine> = lines
            .iter()
            .filter(|l| l.is_master() && l.first_slot.is_some() && !l.failed())
            .collect();
        if masters.len() != 3 || masters.iter().any(|m| !running.iter().any(|n| n.port == m.port)) {
            return false;
        }
        // A replica counts once it is synced and once the node whose view
        // `node_lines` reads lists it under its master: right after
        // `--cluster create` that view can lag the replicas' own state by
        // a gossip round, and `replica_of` would find no replica.
        running.iter().all(|n| {
            let role = n.info_field("replication", "role");
            role.as_deref() == Some("master")
                || (n.info_field("replication", "master_link_status").as_deref() == Some("up")
                    && n.info_field("replication", "master_sync_in_progress").as_deref() == Some("0")
                    && lines
                        .iter()
                        .any(|l| l.port == n.port && masters.iter().any(|m| m.id == l.master_id)))
        })
    }

    pub fn wait_healthy(&self, limit: Duration) -> Duration {
        wait_for("cluster ok with synced replicas", limit, || self.healthy())
    }

    /// The running master serving `slot`'s range (by first slot), as node index.
    pub fn master_of(&self, first_slot: u32) -> Option<usize> {
        self.node_lines()
            .iter()
            .find(|l| l.is_master() && !l.failed() && l.first_slot == Some(first_slot))
            .map(|l| self.index_of_port(l.port))
    }

    /// Masters' first slots, sorted.
    pub fn first_slots(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .node_lines()
            .iter()
            .filter(|l| l.is_master() && !l.failed())
            .filter_map(|l| l.first_slot)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// True if this master has a connected, synced replica (a failover can
    /// then promote it).
    pub fn has_synced_replica(&self, master: usize) -> bool {
        let port = self.nodes[master].port;
        let lines = self.node_lines();
        let Some(me) = lines.iter().find(|l| l.port == port) else {
            return false;
        };
        lines.iter().filter(|l| l.master_id == me.id).any(|l| {
            let i = self.index_of_port(l.port);
            self.nodes[i].is_running()
                && self.nodes[i]
                    .info_field("replication", "master_link_status")
                    .as_deref()
                    == Some("up")
        })
    }

    /// A replica of this master, as node index (running or not).
    pub fn replica_of(&self, master: usize) -> Option<usize> {
        let port = self.nodes[master].port;
        let lines = self.node_lines();
        let me = lines.iter().find(|l| l.port == port)?;
        lines
            .iter()
            .find(|l| l.master_id == me.id)
            .map(|l| self.index_of_port(l.port))
    }

    /// Waits until a running node other than `old` is the master of
    /// `first_slot` and the cluster is ok everywhere; returns how long.
    pub fn wait_promoted(&self, first_slot: u32, old: usize, limit: Duration) -> Duration {
        wait_for("replica promotion", limit, || {
            self.master_of(first_slot).is_some_and(|m| m != old)
                && self
                    .nodes
                    .iter()
                    .filter(|n| n.is_running())
                    .all(|n| n.info_field_cluster("cluster_state").as_deref() == Some("ok"))
        })
    }
}

trait ClusterInfo {
    fn info_field_cluster(&self, field: &str) -> Option<String>;
}

impl ClusterInfo for Server {
    fn info_field_cluster(&self, field: &str) -> Option<String> {
        let text = self.cli(&["CLUSTER", "INFO"]);
        text.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{field}:")).map(str::to_owned))
    }
}

/// A unique key prefix per use, so cases sharing a server never meet.
pub fn unique_prefix(tag: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("t-{tag}-{}-{n}:", std::process::id())
}

/// Where test artefacts (timings) may be written for a human to read.
pub fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target")
}

/// `WAIT`'s timeout in [`cluster_preset`]: the preset's 100 ms is what a
/// server on a LAN needs, and a replica of a loaded 2-core test machine
/// sometimes takes longer, which made a test whose subject is not
/// replication fail with `OutcomeUnknown`.
pub const TEST_WAIT_TIMEOUT: Duration = Duration::from_secs(2);

/// `RedisConfig::multi_node_cluster` (`WAIT` for one replica), with a
/// `WAIT` timeout and a request budget for a loaded test machine: for the
/// tests of what a cluster store does, not of how long `WAIT` takes.
pub fn cluster_preset(urls: Vec<String>) -> session_redis::RedisConfig {
    session_redis::RedisConfig::multi_node_cluster(urls)
        .request_timeout(5 * TEST_WAIT_TIMEOUT)
        .replication(session_redis::Replication::Wait {
            replicas: 1,
            timeout: TEST_WAIT_TIMEOUT,
        })
}

/// Every page of `topic`'s fan-out at `limit` per page: the ids in listing
/// order and the number of pages.
pub async fn list_all(
    store: &session_redis::RedisStore,
    topic: &str,
    limit: usize,
) -> (Vec<session_engine::SessionId>, usize) {
    let mut ids = Vec::new();
    let mut pages = 0;
    let mut cursor = session_engine::TopicCursor::START;
    loop {
        let page = store
            .subscribers(topic, cursor, limit)
            .await
            .expect("subscribers");
        assert!(
            page.ids.len() <= limit,
            "{} ids in a page of {limit}",
            page.ids.len()
        );
        pages += 1;
        ids.extend(page.ids);
        match page.next {
            Some(next) => cursor = next,
            None => return (ids, pages),
        }
        assert!(pages < 10_000, "the listing does not end");
    }
}

/// Which master's range (by its first slot, from [`Cluster::first_slots`])
/// holds `slot`.
pub fn shard_of(firsts: &[u32], slot: u16) -> u32 {
    *firsts
        .iter()
        .rev()
        .find(|f| **f <= u32::from(slot))
        .expect("slot 0 starts the first range")
}

/// Connects a store whose short request budget is what a test is about.
/// `RedisStore::connect` asks the server `INFO` within that budget, which a
/// loaded test machine can outlast: a connect that finds no answer
/// (`Unavailable`) is tried again, for up to 30 s.
pub async fn connect_short(config: session_redis::RedisConfig) -> session_redis::RedisStore {
    let started = Instant::now();
    loop {
        match session_redis::RedisStore::connect(config.clone()).await {
            Ok(store) => return store,
            Err(e @ session_engine::Error::Unavailable { .. }) => {
                assert!(started.elapsed() < Duration::from_secs(30), "connect: {e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("connect: {e:?}"),
        }
    }
}

/// Creates `n` sessions (timeout 10 minutes) whose metadata names them:
/// `s0`, `s1`, ...
pub async fn create_named(store: &session_redis::RedisStore, n: usize) -> Vec<session_engine::SessionId> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(
            store
                .create(
                    format!("s{i}").as_bytes(),
                    session_engine::Timeout::from_secs(600),
                )
                .await
                .expect("create"),
        );
    }
    ids
}

/// A session (metadata `moving`) whose key a test moved by hand is read,
/// updated and read in a batch with `others` through the redirects.
pub async fn assert_moved_session_serves(
    store: &session_redis::RedisStore,
    moved: &session_engine::SessionId,
    others: &[session_engine::SessionId],
) {
    let got = store.get(moved).await;
    assert_eq!(
        got.as_ref().map(session_engine::Session::metadata).ok(),
        Some(&b"moving"[..]),
        "{got:?}"
    );
    let updated = store.update(moved, |_| b"moved".to_vec()).await;
    assert!(updated.is_ok(), "{updated:?}");
    for result in store.get_many(others).await {
        assert!(result.is_ok(), "{result:?}");
    }
}

/// A read's metadata, if it found the session.
pub fn metadata(result: &Result<session_engine::Session, session_engine::Error>) -> Option<&[u8]> {
    result.as_ref().ok().map(session_engine::Session::metadata)
}

/// Each of `results` (a batch read of sessions from [`create_named`]) holds
/// its name, `s<n>`, except the one at `moved`, which holds `value`.
pub fn assert_named_except(
    results: &[Result<session_engine::Session, session_engine::Error>],
    moved: usize,
    value: &[u8],
) {
    for (n, result) in results.iter().enumerate() {
        let expected = if n == moved {
            value.to_vec()
        } else {
            format!("s{n}").into_bytes()
        };
        assert_eq!(metadata(result), Some(&expected[..]), "{n}: {result:?}");
    }
}
