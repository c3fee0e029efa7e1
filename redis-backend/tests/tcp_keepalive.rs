//! Every connection the store makes to the servers carries TCP keepalive
//! (`RedisConfig::tcp_keepalive`, 30 s by default): the kernel probes a
//! quiet connection, which keeps it alive through a middlebox that forgets
//! idle flows silently, and finds a flow dropped anyway dead before a
//! request is sent on it. Checked in the kernel's own table of this
//! process's sockets (`/proc/net/tcp`: an idle socket with keepalive has
//! its keepalive timer pending, one without has no timer), against one
//! server and a 6-node cluster, whose cluster client connects with its own
//! settings, not its seeds'.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use session_engine::Error;
use session_redis::{RedisConfig, RedisStore};
use support::{create_named, Cluster, Server};

/// The idle time the tests set: far from the default and from the
/// kernel's own (two hours), so that the timer's due time shows it.
const IDLE: Duration = Duration::from_secs(7);
/// `/proc/net/tcp` gives a timer's due time in clock ticks (`USER_HZ`).
const TICKS_PER_SEC: u64 = 100;
/// How long the sockets may take to go quiet after the last request (an
/// acknowledgement in flight shows the retransmit timer instead).
const QUIET_LIMIT: Duration = Duration::from_secs(10);

/// One of this process's established TCP sockets to a local port.
#[derive(Debug)]
struct Socket {
    remote_port: u16,
    /// `/proc/net/tcp`'s `tr`: 0 none, 1 retransmit, 2 keepalive, 4 probe.
    timer: u8,
    /// When it is due, in clock ticks.
    due_ticks: u64,
}

/// The inodes of this process's sockets.
fn own_socket_inodes() -> HashSet<u64> {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            target.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// This process's established IPv4 and IPv6 TCP sockets to any of `ports`.
fn own_sockets_to(ports: &[u16]) -> Vec<Socket> {
    let inodes = own_socket_inodes();
    let mut sockets = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            let [_, _, remote, state, _, timer, _, _, _, inode, ..] = fields[..] else {
                continue;
            };
            if state != "01" || !inode.parse().is_ok_and(|i: u64| inodes.contains(&i)) {
                continue;
            }
            let remote_port = u16::from_str_radix(remote.rsplit(':').next().unwrap_or(""), 16).unwrap_or(0);
            if !ports.contains(&remote_port) {
                continue;
            }
            let (kind, due) = timer.split_once(':').expect("tr:tm->when");
            sockets.push(Socket {
                remote_port,
                timer: u8::from_str_radix(kind, 16).expect("timer kind"),
                due_ticks: u64::from_str_radix(due, 16).expect("timer due"),
            });
        }
    }
    sockets
}

/// Waits until this process's sockets to `ports` are quiet (no
/// retransmit timer: every request answered and acknowledged) and returns
/// them, or panics at [`QUIET_LIMIT`].
async fn quiet_sockets_to(ports: &[u16]) -> Vec<Socket> {
    let started = Instant::now();
    loop {
        let sockets = own_sockets_to(ports);
        if !sockets.is_empty() && sockets.iter().all(|s| s.timer != 1) {
            return sockets;
        }
        assert!(
            started.elapsed() < QUIET_LIMIT,
            "the sockets to {ports:?} never went quiet: {sockets:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each socket probes after at most [`IDLE`].
fn assert_keepalive(sockets: &[Socket]) {
    for socket in sockets {
        assert_eq!(socket.timer, 2, "no keepalive timer: {socket:?} of {sockets:?}");
        assert!(
            socket.due_ticks <= IDLE.as_secs() * TICKS_PER_SEC,
            "the first probe is due later than {IDLE:?}: {socket:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_servers_connections_probe_when_idle() {
    let server = Server::standalone();
    let store = RedisStore::connect(
        RedisConfig::standalone(server.url())
            .key_prefix(support::unique_prefix("keepalive"))
            .tcp_keepalive(Some(IDLE)),
    )
    .await
    .expect("connect");
    create_named(&store, 3).await;
    let sockets = quiet_sockets_to(&[server.port]).await;
    assert_keepalive(&sockets);
    // Without keepalive, an idle connection has no timer at all.
    let without = RedisStore::connect(
        RedisConfig::standalone(server.url())
            .key_prefix(support::unique_prefix("keepalive"))
            .tcp_keepalive(None),
    )
    .await
    .expect("connect");
    drop(store);
    create_named(&without, 3).await;
    let sockets = quiet_sockets_to(&[server.port]).await;
    assert!(sockets.iter().all(|s| s.timer == 0), "{sockets:?}");
    // The default probes too.
    drop(without);
    let default = RedisStore::connect(
        RedisConfig::standalone(server.url()).key_prefix(support::unique_prefix("keepalive")),
    )
    .await
    .expect("connect");
    create_named(&default, 3).await;
    let sockets = quiet_sockets_to(&[server.port]).await;
    assert!(sockets.iter().all(|s| s.timer == 2), "{sockets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clusters_connections_probe_when_idle() {
    let cluster = Cluster::start(5_000);
    let store = RedisStore::connect(
        support::cluster_preset(cluster.urls())
            .key_prefix(support::unique_prefix("keepalive"))
            .tcp_keepalive(Some(IDLE)),
    )
    .await
    .expect("connect");
    // Sessions on every master: every direct route and the cluster
    // client's connection to each master are used.
    create_named(&store, 12).await;
    assert!(store.len().await.expect("len") >= 12);
    let ports: Vec<u16> = cluster.nodes.iter().map(|node| node.port).collect();
    let sockets = quiet_sockets_to(&ports).await;
    assert_keepalive(&sockets);
    for slot in cluster.first_slots() {
        let master = cluster.nodes[cluster.master_of(slot).expect("a master")].port;
        let to_master = sockets.iter().filter(|s| s.remote_port == master).count();
        // The direct route and the cluster client's connection.
        assert!(
            to_master >= 2,
            "{to_master} sockets to master {master}: {sockets:?}"
        );
    }
}

#[tokio::test]
async fn a_keepalive_the_kernel_cannot_take_is_refused() {
    for idle in [
        Duration::from_millis(500),
        Duration::from_millis(1_500),
        Duration::from_secs(32_768),
    ] {
        let refused =
            RedisStore::connect(RedisConfig::standalone("redis://127.0.0.1:1").tcp_keepalive(Some(idle)))
                .await;
        match refused {
            Err(Error::InvalidConfig(message)) => assert!(message.contains("tcp_keepalive"), "{message}"),
            other => panic!("{idle:?}: {:?}", other.map(|_| "connected")),
        }
    }
}
