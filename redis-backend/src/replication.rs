//! Replication lag, read from the masters: each master's `INFO
//! replication` gives its replication offset (`master_repl_offset`, the
//! bytes of write stream it has produced) and, per replica, the offset the
//! replica last acknowledged (`slaveN:...,offset=N,...`; replicas
//! acknowledge about once a second, and at once after each `WAIT`). A
//! replica's lag is the difference, in bytes of write stream: 0 when it has
//! acknowledged everything, growing while its link is slow or stopped.
//!
//! Cost: one `INFO replication` per master, all masters concurrently,
//! within one request timeout; nothing on any operation's path (the caller
//! asks, [`RedisStore::replication_lag`](crate::RedisStore::replication_lag)).

use std::fmt::{self, Write};

use session_engine::{Error, OpenMetricsWriter, Result};

use crate::conn::Shard;
use crate::error::protocol;
use crate::list::{probed_pipe, send_probed};
use crate::reply::{self, info_field};
use crate::request::{join_all, Inner, Kind};
use redis::Value;

/// The replication state of every master, as each reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicationLag {
    /// One per master, in slot order (one for a single server).
    pub masters: Vec<MasterLag>,
}

/// One master's replication offset and its replicas'.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MasterLag {
    /// The master's address (`host:port`, as the topology or the
    /// configuration names it).
    pub master: String,
    /// Bytes of write stream the master has produced (`master_repl_offset`).
    pub offset_bytes: u64,
    /// Its replicas, as the master sees them.
    pub replicas: Vec<ReplicaLag>,
}

/// One replica, as its master sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicaLag {
    /// The replica's address (`ip:port`, as it announced itself).
    pub address: String,
    /// The link's state (`online` once synced; `wait_bgsave`,
    /// `send_bulk` while a full sync runs).
    pub state: String,
    /// Bytes of write stream the replica last acknowledged.
    pub offset_bytes: u64,
    /// `offset_bytes` behind the master's offset.
    pub lag_bytes: u64,
}

impl MasterLag {
    /// The largest lag among its replicas; `None` if it has none (then
    /// every write there is lost with the master).
    #[must_use]
    pub fn lag_bytes(&self) -> Option<u64> {
        self.replicas.iter().map(|r| r.lag_bytes).max()
    }
}

impl ReplicationLag {
    /// The largest lag of any replica of any master; `None` if no master
    /// has a replica.
    #[must_use]
    pub fn lag_bytes_max(&self) -> Option<u64> {
        self.masters.iter().filter_map(MasterLag::lag_bytes).max()
    }

    /// Writes the lag as a complete OpenMetrics exposition (ending in
    /// `# EOF`): `<prefix>_replication_lag_bytes{master="host:port"}` (the
    /// largest lag of each master's replicas; a master without replicas
    /// has no sample) and `<prefix>_replicas{master=...}` (replicas each
    /// master sees). To serve it beside other families (the store's
    /// [`RedisStats`](crate::RedisStats), an engine's `Stats`), use
    /// [`write_openmetrics_families`](Self::write_openmetrics_families)
    /// and end with one `# EOF`.
    ///
    /// # Errors
    /// Those of `out` (none for a `String`).
    ///
    /// # Panics
    /// If `prefix` is neither empty nor `[a-zA-Z_][a-zA-Z0-9_]*`.
    pub fn write_openmetrics(&self, out: &mut impl Write, prefix: &str) -> fmt::Result {
        let mut w = OpenMetricsWriter::new(out, prefix);
        self.families(&mut w)?;
        w.eof()
    }

    /// The families of [`write_openmetrics`](Self::write_openmetrics),
    /// without the closing `# EOF`.
    ///
    /// # Errors
    /// Those of `out`.
    ///
    /// # Panics
    /// If `prefix` is neither empty nor `[a-zA-Z_][a-zA-Z0-9_]*`.
    pub fn write_openmetrics_families(&self, out: &mut impl Write, prefix: &str) -> fmt::Result {
        self.families(&mut OpenMetricsWriter::new(out, prefix))
    }

    fn families<W: Write>(&self, w: &mut OpenMetricsWriter<'_, W>) -> fmt::Result {
        w.gauge_labelled(
            "replication_lag_bytes",
            Some("bytes"),
            "Write stream bytes the furthest-behind replica of each master has not acknowledged.",
            "master",
            self.masters
                .iter()
                .filter_map(|m| Some((&m.master, m.lag_bytes()?))),
        )?;
        w.gauge_labelled(
            "replicas",
            None,
            "Replicas each master sees.",
            "master",
            self.masters.iter().map(|m| (&m.master, m.replicas.len() as u64)),
        )
    }
}

/// Reads `INFO replication` from every master, concurrently, within one
/// request timeout. In a cluster each read follows a probe of its master's
/// first slot ([`probed_pipe`]): the cluster client sends a command for a
/// master it is not connected to (down, failing over) to any node, whose
/// figures would then be reported under that master's name.
pub(crate) async fn lag(inner: &Inner) -> Result<ReplicationLag> {
    let deadline = inner.deadline();
    let shards = inner.topology(deadline).await?;
    let replies = join_all(
        shards
            .iter()
            .map(|shard| async move {
                let (mut pipe, probe) = probed_pipe(inner, shard);
                pipe.cmd("INFO").arg("replication");
                let pipe = &pipe;
                inner
                    .run(Kind::Read, deadline, |conn, _| {
                        send_probed(inner, conn, (pipe, probe), shard, deadline)
                    })
                    .await
            })
            .collect(),
    )
    .await;
    let mut masters = Vec::with_capacity(shards.len());
    for (shard, reply) in shards.iter().zip(replies) {
        let mut values = reply?.value;
        let value = values.pop().unwrap_or(Value::Nil);
        let text = reply::text(&value).ok_or_else(|| protocol("INFO replication", &value, false))?;
        masters.push(parse(&text, master_name(inner, shard))?);
    }
    Ok(ReplicationLag { masters })
}

/// A master's name: its address in the topology, the configured one for a
/// single server.
fn master_name(inner: &Inner, shard: &Shard) -> String {
    if shard.host.is_empty() {
        inner.server_address()
    } else {
        format!("{}:{}", shard.host, shard.port)
    }
}

/// One master's `INFO replication` text.
fn parse(text: &str, master: String) -> Result<MasterLag> {
    let bad = |what: &str| Error::Unavailable {
        reason: format!("protocol error: INFO replication of {master}: {what}"),
    };
    match info_field(text, "role") {
        Some("master") => {}
        role => {
            // A failover between reading the topology and asking.
            return Err(Error::Unavailable {
                reason: format!(
                    "{master} answers role {role:?}, not master (a failover under way?): ask again"
                ),
            });
        }
    }
    let offset_bytes: u64 = info_field(text, "master_repl_offset")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("no master_repl_offset"))?;
    let mut replicas = Vec::new();
    for line in text.lines().map(str::trim) {
        // `slave<N>:ip=...,port=...,state=...,offset=...,lag=...`
        let Some((name, fields)) = line.split_once(':') else {
            continue;
        };
        let is_replica = name
            .strip_prefix("slave")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !is_replica {
            continue;
        }
        let field = |key: &str| {
            fields
                .split(',')
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        };
        let (Some(ip), Some(port), Some(offset)) = (field("ip"), field("port"), field("offset")) else {
            return Err(bad(&format!("replica line {line:?}")));
        };
        let offset_of_replica: u64 = offset
            .parse()
            .map_err(|_| bad(&format!("replica offset {offset:?}")))?;
        replicas.push(ReplicaLag {
            address: format!("{ip}:{port}"),
            state: field("state").unwrap_or("").to_owned(),
            offset_bytes: offset_of_replica,
            lag_bytes: offset_bytes.saturating_sub(offset_of_replica),
        });
    }
    Ok(MasterLag {
        master,
        offset_bytes,
        replicas,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_REPLICAS: &str = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
        slave0:ip=127.0.0.1,port=7003,state=online,offset=1000,lag=0\r\n\
        slave1:ip=10.0.0.2,port=7004,state=wait_bgsave,offset=0,lag=1\r\n\
        master_failover_state:no-failover\r\nmaster_replid:abc\r\nmaster_repl_offset:1234\r\n\
        second_repl_offset:-1\r\nrepl_backlog_active:1\r\n";

    #[test]
    fn lag_is_the_master_offset_less_the_replicas() {
        let m = parse(TWO_REPLICAS, "m:1".into()).unwrap();
        assert_eq!(m.offset_bytes, 1234);
        assert_eq!(m.replicas.len(), 2);
        assert_eq!(
            (
                m.replicas[0].address.as_str(),
                m.replicas[0].state.as_str(),
                m.replicas[0].lag_bytes
            ),
            ("127.0.0.1:7003", "online", 234)
        );
        assert_eq!(m.replicas[1].lag_bytes, 1234);
        assert_eq!(m.lag_bytes(), Some(1234));
    }

    #[test]
    fn a_master_without_replicas_has_no_lag() {
        let m = parse(
            "role:master\nconnected_slaves:0\nmaster_repl_offset:0\n",
            "m:1".into(),
        )
        .unwrap();
        assert_eq!((m.replicas.len(), m.lag_bytes()), (0, None));
        let all = ReplicationLag { masters: vec![m] };
        assert_eq!(all.lag_bytes_max(), None);
        let mut text = String::new();
        all.write_openmetrics(&mut text, "r").unwrap();
        assert!(!text.contains("r_replication_lag_bytes{"), "{text}");
        assert!(text.contains("r_replicas{master=\"m:1\"} 0\n"), "{text}");
    }

    #[test]
    fn a_replica_or_a_garbled_reply_is_an_error() {
        let replica = "role:slave\nmaster_host:x\nmaster_repl_offset:5\n";
        assert!(matches!(
            parse(replica, "m".into()),
            Err(Error::Unavailable { .. })
        ));
        let no_offset = "role:master\nconnected_slaves:0\n";
        let Err(Error::Unavailable { reason }) = parse(no_offset, "m".into()) else {
            panic!("accepted")
        };
        assert!(reason.contains("master_repl_offset"), "{reason}");
        let bad_line = "role:master\nslave0:ip=1.2.3.4,state=online\nmaster_repl_offset:5\n";
        assert!(parse(bad_line, "m".into()).is_err());
    }

    #[test]
    fn openmetrics_has_each_masters_largest_lag() {
        let all = ReplicationLag {
            masters: vec![
                parse(TWO_REPLICAS, "a:1".into()).unwrap(),
                parse(&TWO_REPLICAS.replace("offset=0", "offset=1234"), "b:2".into()).unwrap(),
            ],
        };
        assert_eq!(all.lag_bytes_max(), Some(1234));
        let mut text = String::new();
        all.write_openmetrics(&mut text, "session_redis").unwrap();
        assert_eq!(
            text,
            "# TYPE session_redis_replication_lag_bytes gauge\n\
             # UNIT session_redis_replication_lag_bytes bytes\n\
             # HELP session_redis_replication_lag_bytes Write stream bytes the furthest-behind replica of each master has not acknowledged.\n\
             session_redis_replication_lag_bytes{master=\"a:1\"} 1234\n\
             session_redis_replication_lag_bytes{master=\"b:2\"} 234\n\
             # TYPE session_redis_replicas gauge\n\
             # HELP session_redis_replicas Replicas each master sees.\n\
             session_redis_replicas{master=\"a:1\"} 2\n\
             session_redis_replicas{master=\"b:2\"} 2\n\
             # EOF\n"
        );
    }
}
