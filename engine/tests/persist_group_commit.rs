//! `Always` mode under concurrency: many writers share each flush (group
//! commit), every acknowledged write is in the log, and nobody hangs.

use std::collections::HashSet;
use std::sync::Mutex;

mod support;

use session_engine::{Engine, SessionId, Timeout};

const WRITERS: usize = 24;
const WRITES_EACH: usize = 40;

#[test]
fn concurrent_writers_share_flushes_and_every_ack_survives() {
    let _watchdog = support::Watchdog::start();
    for shards in [1, 4] {
        let dir = tempfile::tempdir().unwrap();
        let acked = Mutex::new(HashSet::new());
        let syncs = {
            let engine = Engine::open(support::always_config(dir.path(), shards)).unwrap();
            std::thread::scope(|s| {
                for w in 0..WRITERS {
                    let (engine, acked) = (&engine, &acked);
                    s.spawn(move || {
                        let mut mine = Vec::new();
                        for i in 0..WRITES_EACH {
                            let meta = format!("writer {w} write {i}");
                            let id = engine.create(meta.as_bytes(), Timeout::from_secs(3600)).unwrap();
                            // Every other one is updated too: two waits per session.
                            if i.is_multiple_of(2) {
                                engine.update(&id, |m| [m, b" updated"].concat()).unwrap();
                            }
                            mine.push(id);
                        }
                        acked.lock().unwrap().extend(mine);
                    });
                }
            });
            let stats = engine.stats();
            assert_eq!(stats.created_total, (WRITERS * WRITES_EACH) as u64);
            stats.log_syncs
        };
        let writes = (WRITERS * WRITES_EACH * 3 / 2) as u64;
        assert!(syncs > 0, "{shards} shards: no flush counted");
        assert!(
            syncs < writes,
            "{shards} shards: {syncs} flushes for {writes} writes: no flush was shared"
        );

        // Reopen: every acknowledged session is there with its last metadata.
        let engine = Engine::open(support::always_config(dir.path(), shards)).unwrap();
        let acked: HashSet<SessionId> = acked.into_inner().unwrap();
        assert_eq!(engine.len(), acked.len());
        for id in &acked {
            let session = engine.peek(id).unwrap();
            let text = String::from_utf8(session.metadata().to_vec()).unwrap();
            let i: usize = text.split(' ').nth(3).unwrap().parse().unwrap();
            assert_eq!(text.ends_with(" updated"), i.is_multiple_of(2), "{text}");
        }
    }
}
