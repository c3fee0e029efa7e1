//! Failover: sessions written with `WAIT` survive repeated `kill -9` of a
//! master, and the same store object serves them again after each
//! promotion — with the old master left dead, and with it restarted.
//!
//! Each round: wait until the cluster is ok and every replica synced; kill
//! one master; poll a session on that master through the store until a read
//! and a write both succeed (the recovery time, printed and written to
//! `target/redis-failover.txt`); then check every acknowledged session and
//! that no acknowledged update was lost.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use session_engine::{Error, SessionId, Timeout};
use session_redis::{RedisConfig, RedisStore};
use support::Cluster;

const NODE_TIMEOUT_MS: u64 = 1_000;
/// Sessions written before the first kill.
const SESSIONS: usize = 120;
/// Longest acceptable recovery (the target is node timeout + 3 s; CI
/// machines are noisy, so the hard limit is looser and the figure recorded).
const RECOVERY_LIMIT: Duration = Duration::from_secs(12);

/// What we know about one session's counter: every value the store
/// acknowledged, and the highest value any attempt may have written.
#[derive(Clone, Copy, Debug, Default)]
struct Known {
    acked: u64,
    attempted: u64,
}

type Ledger = Arc<Mutex<HashMap<SessionId, Known>>>;

fn counter(meta: &[u8]) -> u64 {
    std::str::from_utf8(meta).unwrap().parse().unwrap()
}

/// Increments the counter; records the outcome in the ledger. A `WAIT`
/// shortfall (`OutcomeUnknown`) after the old master stays dead counts as
/// attempted, not acknowledged.
async fn bump(store: &RedisStore, ledger: &Ledger, id: SessionId) -> Result<(), Error> {
    let mut wrote = 0;
    let r = store
        .update(&id, |m| {
            wrote = counter(m) + 1;
            // Recorded before the commit is sent, so that a concurrent
            // check never sees a value above "attempted".
            let mut map = ledger.lock().unwrap();
            let known = map.get_mut(&id).unwrap();
            known.attempted = known.attempted.max(wrote);
            wrote.to_string().into_bytes()
        })
        .await;
    let mut map = ledger.lock().unwrap();
    let known = map.get_mut(&id).unwrap();
    if let Ok(session) = &r {
        let v = counter(session.metadata());
        assert_eq!(v, wrote, "update returns what it wrote");
        known.acked = known.acked.max(v);
    }
    r.map(drop)
}

/// Every session readable, none below the value acknowledged before the
/// read began, none above what was attempted by the time it ended (the
/// background writer keeps going meanwhile).
async fn check_all(store: &RedisStore, ledger: &Ledger, round: &str) {
    let ids: Vec<SessionId> = ledger.lock().unwrap().keys().copied().collect();
    for id in ids {
        let acked_before = ledger.lock().unwrap()[&id].acked;
        let session = match store.peek(&id).await {
            Ok(s) => s,
            Err(e) => panic!("{round}: acknowledged session {id} unreadable: {e}"),
        };
        let attempted_after = ledger.lock().unwrap()[&id].attempted;
        let v = counter(session.metadata());
        assert!(
            v >= acked_before && v <= attempted_after,
            "{round}: session {id} holds {v}, acknowledged {acked_before}, attempted up to {attempted_after}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_sessions_survive_repeated_master_kills() {
    let mut cluster = Cluster::start(NODE_TIMEOUT_MS);
    // The cluster preset: WAIT for 1 replica.
    let config =
        RedisConfig::multi_node_cluster(cluster.urls()).key_prefix(support::unique_prefix("failover"));
    let store = RedisStore::connect(config).await.expect("connect");

    let ledger: Ledger = Arc::default();
    for _ in 0..SESSIONS {
        let id = store
            .create(b"0", Timeout::from_secs(600))
            .await
            .expect("create with WAIT");
        ledger.lock().unwrap().insert(id, Known::default());
    }
    let ids: Vec<SessionId> = ledger.lock().unwrap().keys().copied().collect();
    for id in &ids[..30] {
        bump(&store, &ledger, *id).await.expect("update with WAIT");
    }

    // Background writer through the same store for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let background = {
        let (store, ledger, stop, ids) = (store.clone(), Arc::clone(&ledger), Arc::clone(&stop), ids.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                match bump(&store, &ledger, ids[i % ids.len()]).await {
                    Ok(()) => ok += 1,
                    Err(_) => failed += 1,
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, failed)
        })
    };

    // (label, restart the killed master afterwards?)
    let rounds = [
        ("kill 1, old master left dead", false),
        ("kill 2, old master restarted", true),
        ("kill 3, same shard again, restarted", true),
        ("kill 4, old master left dead", false),
    ];
    let mut report = Vec::new();
    let mut last_shard: Option<u32> = None;
    for (n, (label, restart)) in rounds.iter().enumerate() {
        tokio::task::block_in_place(|| cluster.wait_healthy(Duration::from_secs(30)));
        // Victim: a master that has a synced replica (round 3 reuses round
        // 2's shard, whose restarted old master is now that replica).
        let firsts = cluster.first_slots();
        let victim_slot = firsts
            .iter()
            .copied()
            .filter(|s| {
                if n == 2 {
                    Some(*s) == last_shard
                } else {
                    Some(*s) != last_shard
                }
            })
            .find(|s| {
                cluster
                    .master_of(*s)
                    .is_some_and(|m| cluster.has_synced_replica(m))
            })
            .unwrap_or_else(|| panic!("{label}: no master with a synced replica"));
        let victim = cluster.master_of(victim_slot).unwrap();
        // A probe session on the victim's shard.
        let probe = *ids
            .iter()
            .find(|id| {
                let slot: u32 = cluster.nodes[victim]
                    .cli(&["CLUSTER", "KEYSLOT", &store.key(id)])
                    .trim()
                    .parse()
                    .unwrap();
                firsts.iter().rev().find(|f| **f <= slot) == Some(&victim_slot)
            })
            .expect("a session on the victim's shard");

        let killed_at = Instant::now();
        cluster.nodes[victim].kill9();
        let poller = {
            let (store, ledger) = (store.clone(), Arc::clone(&ledger));
            tokio::spawn(async move {
                loop {
                    let read = store.get(&probe).await;
                    let write = bump(&store, &ledger, probe).await;
                    let write_ok = matches!(write, Ok(()) | Err(Error::OutcomeUnknown { .. }));
                    if read.is_ok() && write_ok {
                        return killed_at.elapsed();
                    }
                    assert!(
                        killed_at.elapsed() < RECOVERY_LIMIT,
                        "no recovery: {read:?} / {write:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let promoted = tokio::task::block_in_place(|| {
            cluster.wait_promoted(victim_slot, victim, Duration::from_secs(30))
        });
        let recovered = poller.await.expect("poller");
        assert!(
            recovered <= RECOVERY_LIMIT,
            "{label}: recovered after {recovered:?}, limit {RECOVERY_LIMIT:?}"
        );
        check_all(&store, &ledger, label).await;
        // Writable again, through the same store, on every shard.
        for id in ids.iter().step_by(12) {
            match bump(&store, &ledger, *id).await {
                Ok(()) | Err(Error::OutcomeUnknown { .. }) => {}
                Err(e) => panic!("{label}: session {id} not writable after recovery: {e}"),
            }
        }
        check_all(&store, &ledger, label).await;
        if *restart {
            cluster.nodes[victim].restart();
        }
        let line = format!(
            "{label}: replica promoted after {} ms, store serving again after {} ms (node timeout {NODE_TIMEOUT_MS} ms), client rebuilds so far {}",
            promoted.as_millis(),
            recovered.as_millis(),
            store.stats().client_rebuilds
        );
        println!("{line}");
        report.push((line, recovered));
        last_shard = Some(victim_slot);
    }

    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = background.await.expect("background writer");
    check_all(&store, &ledger, "end").await;
    let stats = store.stats();
    let summary =
        format!("background updates: {ok} acknowledged, {failed} failed during failovers; {stats:?}");
    println!("{summary}");
    assert!(ok > 0, "the background writer made progress");
    let mut text: String = report.iter().map(|(l, _)| format!("{l}\n")).collect();
    text.push_str(&summary);
    text.push('\n');
    let _ = std::fs::write(support::target_dir().join("redis-failover.txt"), text);
}
