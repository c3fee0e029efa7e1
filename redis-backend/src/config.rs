//! Backend configuration: where the servers are, how long to wait, what a
//! write waits for, and the presets.

use std::time::Duration;

use redis::io::tcp::socket2::TcpKeepalive;
use redis::io::tcp::TcpSettings;
use session_engine::limits::{METADATA_BYTES_MAX_DEFAULT, METADATA_BYTES_MAX_LIMIT, TIMEOUT_MS_MAX};
use session_engine::{redact_url, Error, Result, Timeout};

use crate::keys::KeySpace;
use crate::limits::{
    CONNECT_TIMEOUT_DEFAULT, PRESET_SESSION_TIMEOUT, PRESET_WAIT_TIMEOUT, REQUEST_TIMEOUT_DEFAULT,
    REQUEST_TIMEOUT_MAX, REQUEST_TIMEOUT_MIN, SESSION_TIMEOUT_DEFAULT, STUCK_AFTER_DEFAULT, STUCK_AFTER_MIN,
    TCP_KEEPALIVE_DEFAULT, TCP_KEEPALIVE_MAX, TCP_KEEPALIVE_MIN, TCP_KEEPALIVE_PROBES, WAIT_REPLICAS_MAX,
};

/// The URL scheme [`RedisConfig::from_url`] reads as a cluster.
pub const CLUSTER_URL_SCHEME: &str = "redis+cluster://";

/// Where the servers are. `Debug` shows the URLs without their
/// passwords.
#[derive(Clone, PartialEq, Eq)]
pub enum Deployment {
    /// One server (`redis://host:port[/db]`); no failover of its own.
    Standalone(String),
    /// A Redis Cluster: the URLs of some of its nodes (`redis://host:port`);
    /// any one that answers is enough to discover the rest.
    Cluster(Vec<String>),
}

/// Why a URL with an `@` after its host's first `/` or `?` is refused.
const CREDENTIAL_NOT_ENCODED: &str = "an `@` after the host's first `/` or `?`: a `/`, `?`, `#` or `@` in a \
     user name or password must be percent-encoded (%2F, %3F, %23, %40)";

/// Refuses what the `redis` crate would read otherwise than the user
/// meant, after a server URL's host: a database that is not a number (or
/// not 0 in a cluster, which has only database 0), and query parameters
/// but one `protocol` (it ignores the rest: `?db=3` wrote to database 0).
fn check_url_tail(url: &str, cluster: bool) -> Result<()> {
    let bad = |why: String| {
        Err(Error::InvalidConfig(format!(
            "server URL {:?}: {why}",
            redact_url(url)
        )))
    };
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    // The host part (credentials included) ends at the path or the query.
    let tail = rest.find(['/', '?']).map_or("", |at| &rest[at..]);
    if tail.contains('@') {
        // A credential holding `/` or `?` unencoded: what follows it would
        // be quoted as a database or a parameter, password and all.
        return bad(CREDENTIAL_NOT_ENCODED.into());
    }
    let (before_query, _) = tail.split_once('?').unwrap_or((tail, ""));
    let db = before_query.strip_prefix('/').unwrap_or("");
    if !db.is_empty() {
        match db.parse::<u32>() {
            Err(_) => return bad(format!("database {db:?} is not a number")),
            Ok(n) if cluster && n != 0 => {
                return bad(format!("database {n}: a Redis Cluster has database 0 only"));
            }
            Ok(_) => {}
        }
    }
    let mut protocol = false;
    for key in query_keys(url) {
        match key {
            "protocol" if !protocol => protocol = true,
            "protocol" => return bad("protocol is given twice".into()),
            other => {
                return bad(format!(
                    "unknown parameter {other:?} (the only one read is protocol; the database goes in the path: /3)"
                ))
            }
        }
    }
    Ok(())
}

/// The keys of a server URL's query parameters (after the host's first `?`).
fn query_keys(url: &str) -> impl Iterator<Item = &str> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let query = rest.find('?').map_or("", |at| &rest[at + 1..]);
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| pair.split_once('=').map_or(pair, |(key, _)| key))
}

/// True if a server URL chooses the protocol (`?protocol=resp2`); the
/// store speaks RESP3 otherwise (see [`RedisConfig`]).
pub(crate) fn names_protocol(url: &str) -> bool {
    query_keys(url).any(|key| key == "protocol")
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Standalone(url) => f.debug_tuple("Standalone").field(&redact_url(url)).finish(),
            Self::Cluster(urls) => f
                .debug_tuple("Cluster")
                .field(&urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// What an acknowledged write has waited for. Redis replicates
/// asynchronously: a master acknowledges a write before any replica has it.
///
/// | setting | an acknowledged write is lost when | cost per write |
/// | --- | --- | --- |
/// | `Async` | the master fails before the write reached its replica (typically well under 1 ms of writes on a LAN, more under replication lag), or a partitioned master accepted it during the node timeout | none |
/// | `Wait { replicas: 1, .. }` | the master *and* every replica that acknowledged it fail, or the replica promoted is not one that acknowledged (only possible with 2+ replicas per master), or the servers lose memory together without persistence | one replica round trip (`WAIT`) |
///
/// Neither setting makes Redis a consensus store: even with `WAIT`, a write
/// that reports an error may or may not be there afterwards. With `Wait`, a
/// write that reached the master but not enough replicas in time returns
/// [`Error::OutcomeUnknown`] (it *is* applied on the master, and survives
/// unless that master fails before replicating it). `WAIT` covers every
/// write (create, insert, update, `touch`, `set_ttl`, delete), on every path
/// (first try and resends), not the deadline slide of `get`, a read (a lost
/// slide only makes a session expire earlier). `WAIT` blocks the connection
/// it is sent on until the replicas answer: writes therefore take
/// connections of their own (reads never wait behind a `WAIT`), and writes
/// to one master take turns on the store's connection to it.
///
/// On a master left without a replica (its old master died and was not
/// replaced), `Async` costs nothing visible; with `Wait`, each write there
/// waits the whole `timeout`, applies, and reports `OutcomeUnknown`: about
/// `1 / timeout` writes per second per store on that master, reads
/// unaffected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Replication {
    /// Acknowledge once the master has applied the write (the default).
    #[default]
    Async,
    /// After each write, `WAIT replicas timeout`: acknowledge only once
    /// `replicas` replicas have it; otherwise [`Error::OutcomeUnknown`].
    Wait {
        /// Replicas that must acknowledge (1 to 16).
        replicas: u32,
        /// How long to wait for them: at least 1 ms (`WAIT` takes whole
        /// milliseconds, rounded up here, and 0 would wait forever), less
        /// than the request timeout.
        timeout: Duration,
    },
}

/// How a [`RedisStore`](crate::RedisStore) connects and behaves. Start from
/// [`RedisConfig::standalone`], [`RedisConfig::cluster`], the preset
/// [`RedisConfig::multi_node_cluster`] or [`RedisConfig::from_url`], then
/// chain the setters.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    pub(crate) deployment: Deployment,
    pub(crate) key_prefix: String,
    pub(crate) request_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) stuck_after: Duration,
    pub(crate) replication: Replication,
    pub(crate) metadata_bytes_max: usize,
    pub(crate) default_timeout: Timeout,
    pub(crate) max_lifetime: Timeout,
    pub(crate) tcp_keepalive: Option<Duration>,
    /// Tests: every request through the `redis` crate's cluster client, as
    /// while the direct routes are being rebuilt.
    pub(crate) direct_routes: bool,
}

impl RedisConfig {
    /// One server at `url` (`redis://host:port[/db]`), asynchronous
    /// replication, 1 s request timeout, 30-minute default session timeout.
    #[must_use]
    pub fn standalone(url: impl Into<String>) -> Self {
        Self::new(Deployment::Standalone(url.into()))
    }

    /// A Redis Cluster reached through `nodes` (any that answers is enough),
    /// asynchronous replication (no `WAIT`), 1 s request timeout, 30-minute
    /// default session timeout. See [`RedisConfig::multi_node_cluster`] for
    /// the preset.
    #[must_use]
    pub fn cluster<I, S>(nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(Deployment::Cluster(nodes.into_iter().map(Into::into).collect()))
    }

    /// The "cluster" preset, mirroring the seed's multi-node preset (three
    /// nodes, `disc_copies` on each, 1-hour sessions, expiry handled by the
    /// store): a Redis Cluster reached through `nodes`, sessions of 1 hour by
    /// default, and every write acknowledged by one replica (`WAIT 1 100`),
    /// the nearest Redis has to a synchronous copy on another node. Cleanup
    /// needs no setting: Redis expires keys itself.
    ///
    /// Mind what `WAIT` means once a master has lost its replica (a failover
    /// with the old master left dead): writes there still apply on the new
    /// master but each waits the full 100 ms and reports
    /// [`Error::OutcomeUnknown`] until a replica is back (about 10 writes a
    /// second per store on that master; reads are not slowed). The servers
    /// must run with `cluster-require-full-coverage no` (see the crate docs).
    #[must_use]
    pub fn multi_node_cluster<I, S>(nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::cluster(nodes)
            .default_timeout(Timeout::After(PRESET_SESSION_TIMEOUT))
            .replication(Replication::Wait {
                replicas: 1,
                timeout: PRESET_WAIT_TIMEOUT,
            })
    }

    /// Reads a URL: `redis://[user:pass@]host:port[/db]` is one server,
    /// `redis+cluster://[user:pass@]host:port,host:port,...[/db][?options]`
    /// a cluster (as [`RedisConfig::cluster`]: no `WAIT` unless chained on;
    /// the database and options apply to every node). The one option read
    /// is `protocol`: the store speaks RESP3 (Redis 6 and later; RESP2 to a
    /// server or proxy that refuses `HELLO`) unless it names one. With `?protocol=resp2`
    /// a connection the server closes while idle is found closed only by
    /// the next request, and a write then is [`Error::OutcomeUnknown`].
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for another scheme or an empty node list.
    pub fn from_url(url: &str) -> Result<Self> {
        // A scheme is read in any case (RFC 3986); the rest as written.
        let scheme_len = url.find("://").map_or(0, |at| at + 3);
        let scheme = url[..scheme_len].to_ascii_lowercase();
        if scheme.starts_with("rediss") {
            return Err(Error::InvalidConfig(format!(
                "{:?}: TLS (rediss://) is not supported by this build",
                redact_url(url)
            )));
        }
        if scheme == CLUSTER_URL_SCHEME {
            let rest = &url[scheme_len..];
            // A database or options after the list are every node's; the
            // credentials end at the authority's last `@` (one in the
            // options is theirs).
            let (authority, suffix) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
            if suffix.contains('@') {
                return Err(Error::InvalidConfig(format!(
                    "{:?}: {CREDENTIAL_NOT_ENCODED}",
                    redact_url(url)
                )));
            }
            let (auth, hosts) = match authority.rsplit_once('@') {
                Some((auth, _)) if auth.contains(',') => {
                    return Err(Error::InvalidConfig(format!(
                        "{:?}: one credential serves every node (user:password@host,host); a `,` in it \
                         reads as a node list: percent-encode it as %2C",
                        redact_url(url)
                    )));
                }
                Some((auth, hosts)) => (format!("{auth}@"), hosts),
                None => (String::new(), authority),
            };
            let nodes: Vec<String> = hosts
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(|h| format!("redis://{auth}{h}{suffix}"))
                .collect();
            if nodes.is_empty() {
                return Err(Error::InvalidConfig(format!(
                    "{:?}: no cluster node listed",
                    redact_url(url)
                )));
            }
            return Ok(Self::cluster(nodes));
        }
        if scheme == "redis://" {
            return Ok(Self::standalone(format!("redis://{}", &url[scheme_len..])));
        }
        Err(Error::InvalidConfig(format!(
            "{:?}: expected redis://host:port or {CLUSTER_URL_SCHEME}host:port,host:port",
            redact_url(url)
        )))
    }

    fn new(deployment: Deployment) -> Self {
        Self {
            deployment,
            key_prefix: "session:".to_owned(),
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            stuck_after: STUCK_AFTER_DEFAULT,
            replication: Replication::Async,
            metadata_bytes_max: METADATA_BYTES_MAX_DEFAULT,
            default_timeout: Timeout::After(SESSION_TIMEOUT_DEFAULT),
            max_lifetime: Timeout::Never,
            tcp_keepalive: Some(TCP_KEEPALIVE_DEFAULT),
            direct_routes: true,
        }
    }

    /// Tests: a cluster store that never routes straight to a slot's master
    /// and sends every request through the `redis` crate's cluster client,
    /// as it does while its direct routes are being rebuilt (which a test
    /// cannot time).
    #[doc(hidden)]
    #[must_use]
    pub fn debug_without_direct_routes(mut self) -> Self {
        self.direct_routes = false;
        self
    }

    /// The text before `{<id>}` in every key (default `session:`); printable
    /// ASCII without spaces or braces, at most 64 bytes. Stores with different
    /// prefixes share a server without seeing each other's sessions.
    #[must_use]
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// The most one operation may take, its retries included (default 1 s,
    /// 10 ms to 60 s); past it the operation fails with
    /// [`Error::TimedOut`].
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The most one connection attempt may take (default 1 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long every request may fail, while a fresh connection finds the
    /// servers serving and the current one does not answer, before the store
    /// replaces its client (default 2 s, at least 100 ms). Guards against a
    /// client left wedged by a failover.
    #[must_use]
    pub fn stuck_after(mut self, after: Duration) -> Self {
        self.stuck_after = after;
        self
    }

    /// TCP keepalive on every connection to the servers: after `idle` with
    /// no traffic the kernel probes the server every third of that (at
    /// least 1 s), and drops the connection after
    /// [`TCP_KEEPALIVE_PROBES`](crate::limits::TCP_KEEPALIVE_PROBES)
    /// unanswered probes. The probes keep a quiet connection alive through
    /// a load balancer, NAT gateway or firewall that forgets idle flows
    /// without telling either end; and a flow dropped anyway is found dead
    /// by the kernel and replaced before a request is sent on it (a request
    /// sent on it would time out, and a write would be
    /// [`Error::OutcomeUnknown`]). Default 30 s; from 1 s to 32,767 s
    /// (whole seconds); `None` sends no probes.
    #[must_use]
    pub fn tcp_keepalive(mut self, idle: Option<Duration>) -> Self {
        self.tcp_keepalive = idle;
        self
    }

    /// What a write waits for before it is acknowledged (see [`Replication`]).
    #[must_use]
    pub fn replication(mut self, replication: Replication) -> Self {
        self.replication = replication;
        self
    }

    /// Largest metadata accepted, in bytes (default 64 KiB, at most 16 MiB,
    /// as for the embedded engine).
    #[must_use]
    pub fn metadata_bytes_max(mut self, bytes: usize) -> Self {
        self.metadata_bytes_max = bytes;
        self
    }

    /// The timeout [`RedisStore::create_default`](crate::RedisStore::create_default) uses.
    #[must_use]
    pub fn default_timeout(mut self, timeout: Timeout) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// A lifetime cap every new session gets (`create`, `insert`, a `put`
    /// of a new id), as the engine's `Config::max_lifetime`: it expires this
    /// long after its creation however active it is (every activity script
    /// arms the key's TTL at the earlier of the inactivity deadline and the
    /// cap). Default `Timeout::Never`: no cap. Per session:
    /// [`RedisStore::set_lifetime`](crate::RedisStore::set_lifetime).
    #[must_use]
    pub fn max_lifetime(mut self, lifetime: Timeout) -> Self {
        self.max_lifetime = lifetime;
        self
    }

    /// The deployment this config connects to.
    #[must_use]
    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    /// The configured replication acknowledgement.
    #[must_use]
    pub fn get_replication(&self) -> Replication {
        self.replication
    }

    /// The configured request timeout.
    #[must_use]
    pub fn get_request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The configured TCP keepalive idle time (`None`: no probes).
    #[must_use]
    pub fn get_tcp_keepalive(&self) -> Option<Duration> {
        self.tcp_keepalive
    }

    /// The TCP settings of every connection the store makes.
    pub(crate) fn tcp_settings(&self) -> TcpSettings {
        let settings = TcpSettings::default();
        match self.tcp_keepalive {
            Some(idle) => settings.set_keepalive(
                TcpKeepalive::new()
                    .with_time(idle)
                    .with_interval((idle / 3).max(TCP_KEEPALIVE_MIN))
                    .with_retries(TCP_KEEPALIVE_PROBES),
            ),
            None => settings,
        }
    }

    /// Checks every value; returns the key space.
    pub(crate) fn validate(&self) -> Result<KeySpace> {
        let invalid = |msg: String| Err(Error::InvalidConfig(msg));
        match &self.deployment {
            Deployment::Standalone(url) if url.is_empty() => {
                return invalid("standalone URL is empty".into())
            }
            Deployment::Cluster(nodes) if nodes.is_empty() => {
                return invalid("cluster node list is empty".into())
            }
            Deployment::Standalone(url) => check_url_tail(url, false)?,
            Deployment::Cluster(nodes) => {
                for url in nodes {
                    check_url_tail(url, true)?;
                }
            }
        }
        if !(REQUEST_TIMEOUT_MIN..=REQUEST_TIMEOUT_MAX).contains(&self.request_timeout) {
            return invalid(format!(
                "request_timeout = {:?}: must be between {REQUEST_TIMEOUT_MIN:?} and {REQUEST_TIMEOUT_MAX:?}",
                self.request_timeout
            ));
        }
        if self.connect_timeout.is_zero() || self.connect_timeout > REQUEST_TIMEOUT_MAX {
            return invalid(format!(
                "connect_timeout = {:?}: must be above zero and at most {REQUEST_TIMEOUT_MAX:?}",
                self.connect_timeout
            ));
        }
        if let Some(idle) = self.tcp_keepalive {
            if !(TCP_KEEPALIVE_MIN..=TCP_KEEPALIVE_MAX).contains(&idle) || idle.subsec_nanos() != 0 {
                return invalid(format!(
                    "tcp_keepalive = {idle:?}: must be whole seconds from {TCP_KEEPALIVE_MIN:?} to \
                     {TCP_KEEPALIVE_MAX:?} (or None: no probes)"
                ));
            }
        }
        if self.stuck_after < STUCK_AFTER_MIN {
            return invalid(format!(
                "stuck_after = {:?}: must be at least {STUCK_AFTER_MIN:?}",
                self.stuck_after
            ));
        }
        if let Replication::Wait { replicas, timeout } = self.replication {
            if replicas == 0 || replicas > WAIT_REPLICAS_MAX {
                return invalid(format!(
                    "replication Wait {{ replicas: {replicas} }}: must be 1 to {WAIT_REPLICAS_MAX} (Async for none)"
                ));
            }
            if timeout < Duration::from_millis(1) {
                return invalid(format!(
                    "replication Wait {{ timeout: {timeout:?} }}: WAIT takes whole milliseconds, and 0 waits \
                     forever: at least 1 ms"
                ));
            }
            if timeout >= self.request_timeout {
                return invalid(format!(
                    "replication Wait {{ timeout: {timeout:?} }}: must be above zero and below request_timeout ({:?})",
                    self.request_timeout
                ));
            }
        }
        if self.metadata_bytes_max > METADATA_BYTES_MAX_LIMIT {
            return invalid(format!(
                "metadata_bytes_max = {}: must be at most {METADATA_BYTES_MAX_LIMIT} (16 MiB)",
                self.metadata_bytes_max
            ));
        }
        if let Some(ms) = self.default_timeout.as_ms() {
            if ms == 0 || ms > TIMEOUT_MS_MAX {
                return invalid(format!(
                    "default_timeout = {ms} ms: must be 1 to {TIMEOUT_MS_MAX} ms"
                ));
            }
        }
        if let Some(ms) = self.max_lifetime.as_ms() {
            if ms == 0 || ms > TIMEOUT_MS_MAX {
                return invalid(format!(
                    "max_lifetime = {ms} ms: must be 1 to {TIMEOUT_MS_MAX} ms"
                ));
            }
        }
        KeySpace::new(&self.key_prefix).map_err(Error::InvalidConfig)
    }

    /// The seed URLs to connect with.
    pub(crate) fn seeds(&self) -> Vec<String> {
        match &self.deployment {
            Deployment::Standalone(url) => vec![url.clone()],
            Deployment::Cluster(nodes) => nodes.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_protocol_parameter_names_the_protocol() {
        assert!(names_protocol("redis://h:1/0?protocol=resp2"));
        assert!(names_protocol("redis://h:1?protocol=resp3"));
        assert!(!names_protocol("redis://h:1/0"));
        assert!(!names_protocol("redis://user:pass@h:1/0?db=1"));
        assert!(!names_protocol("redis://h:1/protocol"));
    }

    #[test]
    fn urls_select_the_deployment() {
        let one = RedisConfig::from_url("redis://127.0.0.1:6379").unwrap();
        assert_eq!(
            one.deployment,
            Deployment::Standalone("redis://127.0.0.1:6379".into())
        );
        assert_eq!(one.replication, Replication::Async);
        let many = RedisConfig::from_url("redis+cluster://u:p@127.0.0.1:7000, 127.0.0.1:7001").unwrap();
        assert_eq!(
            many.deployment,
            Deployment::Cluster(vec![
                "redis://u:p@127.0.0.1:7000".into(),
                "redis://u:p@127.0.0.1:7001".into()
            ])
        );
        assert_eq!(many.replication, Replication::Async, "WAIT is off by default");
        let preset = RedisConfig::multi_node_cluster(["redis://127.0.0.1:7000"]);
        assert!(matches!(
            preset.replication,
            Replication::Wait { replicas: 1, .. }
        ));
        assert_eq!(preset.default_timeout, Timeout::from_secs(3600));
        assert!(preset.validate().is_ok());
        // A database or options after the node list apply to every node.
        let opts = RedisConfig::from_url("redis+cluster://h1:7000,h2:7001/0?protocol=resp3").unwrap();
        assert_eq!(
            opts.deployment,
            Deployment::Cluster(vec![
                "redis://h1:7000/0?protocol=resp3".into(),
                "redis://h2:7001/0?protocol=resp3".into()
            ])
        );
        // An `@` after the node list's `/` or `?` is a credential that
        // needed encoding (or a typo): refused, not read either way.
        assert!(RedisConfig::from_url("redis+cluster://u:p@h1:7000,h2:7001/0?client=a@b").is_err());
        assert!(RedisConfig::from_url("redis+cluster://u:x/y@h1:7000,h2:7001").is_err());
        assert!(RedisConfig::from_url("redis+cluster://").is_err());
        assert!(RedisConfig::from_url("redis+cluster:///0").is_err());
        assert!(RedisConfig::from_url("http://x").is_err());
    }

    #[test]
    fn out_of_range_values_name_the_setting() {
        let base = RedisConfig::standalone("redis://127.0.0.1:1");
        assert!(base.clone().validate().is_ok());
        let msg = |c: RedisConfig| c.validate().unwrap_err().to_string();
        assert!(msg(base.clone().request_timeout(Duration::ZERO)).contains("request_timeout"));
        assert!(msg(base.clone().stuck_after(Duration::from_millis(1))).contains("stuck_after"));
        assert!(msg(base.clone().key_prefix("a{")).contains("key_prefix"));
        assert!(msg(base.clone().metadata_bytes_max(usize::MAX)).contains("metadata_bytes_max"));
        let wait = |replicas, ms| {
            base.clone().replication(Replication::Wait {
                replicas,
                timeout: Duration::from_millis(ms),
            })
        };
        assert!(msg(wait(0, 10)).contains("replicas"));
        assert!(msg(wait(1, 5_000)).contains("below request_timeout"));
        assert!(wait(1, 10).validate().is_ok());
        // `WAIT n 0` waits forever: a wait under a millisecond is refused,
        // not rounded down to that.
        let sub_ms = base.clone().replication(Replication::Wait {
            replicas: 1,
            timeout: Duration::from_micros(500),
        });
        assert!(msg(sub_ms).contains("whole milliseconds"));
        assert!(msg(base.clone().default_timeout(Timeout::from_ms(0))).contains("default_timeout"));
        assert!(msg(RedisConfig::cluster(Vec::<String>::new())).contains("empty"));
    }
}
