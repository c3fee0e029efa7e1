//! Random damage across every segment, header and record of a real log,
//! checked against a replay of the records the damage left untouched.
//!
//! A two-shard log with several segments per shard (rolled segments ending
//! in seals, a compaction base, the active segment, every record type) is
//! damaged once per trial: a flipped bit, a zeroed stretch, random bytes, or
//! a file cut short, anywhere in a segment that holds data. Then:
//! - `Strict` opens only if the damage is what a crash can leave (a suffix of
//!   the shard's records in its last segment with data, or bytes after the
//!   end of the data) and then holds exactly the replay of the untouched
//!   records; otherwise it fails naming the damaged file (and, for a damaged
//!   record, its offset);
//! - `Repair` always opens, holds exactly the replay of the untouched records
//!   (a damaged header loses none), and leaves a log that the next `Strict`
//!   open reads without complaint.
//!
//! The seed is printed; `SESSION_DAMAGE_SEED=<n>` replays a run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use session_engine::log_format::{decode, shard_salt, Decoded, Record, SEGMENT_HEADER_LEN};

mod support;
use session_engine::{
    CompactionStep, Config, Durability, Engine, Error, ManualClock, RecoveryMode, SessionId, Timeout,
};

const SHARDS: usize = 2;
const TRIALS: usize = 150;
const NOW_MS: u64 = 1_700_000_000_000;

fn config(dir: &Path, mode: RecoveryMode, clock: &ManualClock) -> Config {
    Config::default()
        .shards(SHARDS)
        .data_dir(dir)
        .durability(Durability::Never)
        .segment_size_bytes(64 * 1024)
        .metadata_bytes_max(1024)
        .touch_persist_fraction(0.001)
        .recovery_mode(mode)
        .without_sweeper()
        .clock(clock.clock())
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A session as replay leaves it: metadata, created, last access, timeout.
type Model = BTreeMap<SessionId, (Vec<u8>, u64, u64, Option<u64>)>;

/// One record of the pristine log, owned.
#[derive(Clone, Debug)]
enum Op {
    Put(SessionId, Vec<u8>, u64, u64, Option<u64>),
    Update(SessionId, Vec<u8>, u64),
    Timeout(SessionId, u64, Option<u64>),
    Touch(SessionId, u64),
    Delete(SessionId),
    Rotate(SessionId, SessionId, u64),
    Seal,
}

fn timeout_of(ms: u64) -> Option<u64> {
    (ms != u64::MAX).then_some(ms)
}

impl Op {
    fn of(record: Record<'_>) -> Self {
        match record {
            Record::Put {
                id,
                created_ms,
                last_access_ms,
                timeout_ms,
                lifetime_ms: _,
                metadata,
            } => Op::Put(
                id,
                metadata.to_vec(),
                created_ms,
                last_access_ms,
                timeout_of(timeout_ms),
            ),
            Record::Update {
                id,
                last_access_ms,
                metadata,
            } => Op::Update(id, metadata.to_vec(), last_access_ms),
            Record::Timeout {
                id,
                last_access_ms,
                timeout_ms,
                lifetime_ms: _,
            } => Op::Timeout(id, last_access_ms, timeout_of(timeout_ms)),
            Record::Touch { id, last_access_ms } => Op::Touch(id, last_access_ms),
            Record::Delete { id } => Op::Delete(id),
            Record::Rotate {
                id,
                new_id,
                last_access_ms,
            } => Op::Rotate(id, new_id, last_access_ms),
            Record::Seal { .. } => Op::Seal,
            Record::Subscribe { .. } | Record::Unsubscribe { .. } => {
                unreachable!("the suite makes no subscriptions")
            }
        }
    }

    /// `FORMAT.md`'s replay rules.
    fn apply(&self, model: &mut Model) {
        match self {
            Op::Put(id, meta, created, last, timeout) => {
                model.insert(*id, (meta.clone(), *created, *last, *timeout));
            }
            Op::Update(id, meta, last) => {
                if let Some(s) = model.get_mut(id) {
                    s.0.clone_from(meta);
                    s.2 = s.2.max(*last);
                }
            }
            Op::Timeout(id, last, timeout) => {
                if let Some(s) = model.get_mut(id) {
                    s.3 = *timeout;
                    s.2 = s.2.max(*last);
                }
            }
            Op::Touch(id, last) => {
                if let Some(s) = model.get_mut(id) {
                    s.2 = s.2.max(*last);
                }
            }
            Op::Delete(id) => {
                model.remove(id);
            }
            Op::Rotate(id, new_id, last) => {
                // A new id already held came from a base listed after the
                // rotate: the old id just goes.
                if let (Some(mut s), false) = (model.remove(id), model.contains_key(new_id)) {
                    s.2 = s.2.max(*last);
                    model.insert(*new_id, s);
                }
            }
            Op::Seal => {}
        }
    }
}

struct Rec {
    start: usize,
    end: usize,
    op: Op,
}

struct Segment {
    /// Relative to the data directory.
    path: PathBuf,
    bytes: Vec<u8>,
    records: Vec<Rec>,
    data_end: usize,
    sealed: bool,
}

/// The pristine log, shard by shard, segment by segment.
struct Log {
    dir: tempfile::TempDir,
    shards: Vec<Vec<Segment>>,
}

fn build(rng: &mut Rng) -> Log {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let engine = Engine::open(config(dir.path(), RecoveryMode::Strict, &clock)).unwrap();
    let mut live: Vec<SessionId> = Vec::new();
    for n in 0..3_000u32 {
        clock.advance_ms(40);
        let meta: Vec<u8> = (0..40 + rng.below(360))
            .map(|i| (n as usize + i) as u8 | 1)
            .collect();
        match rng.below(10) {
            0..=3 => {
                let timeout = if rng.below(4) == 0 {
                    Timeout::Never
                } else {
                    Timeout::from_secs(3_600 + rng.below(3_600) as u64)
                };
                live.push(engine.create(&meta, timeout).unwrap());
            }
            4 | 5 if !live.is_empty() => {
                let id = live[rng.below(live.len())];
                engine.update(&id, |_| meta.clone()).unwrap();
            }
            6 if !live.is_empty() => {
                let id = live.swap_remove(rng.below(live.len()));
                engine.delete(&id).unwrap();
            }
            7 if !live.is_empty() => {
                let at = rng.below(live.len());
                let id = live[at];
                match rng.below(3) {
                    0 => engine.set_ttl(&id, Timeout::from_secs(7_200)).unwrap(),
                    1 => engine.put(id, &meta, Timeout::from_secs(5_400)).unwrap(),
                    _ => live[at] = engine.rotate(&id).unwrap(),
                }
            }
            _ if !live.is_empty() => {
                let id = live[rng.below(live.len())];
                engine.get(&id).unwrap();
            }
            _ => {}
        }
        if n == 1_500 {
            engine.debug_compact(0, CompactionStep::Done).unwrap();
        }
    }
    engine.close().unwrap();
    let manifest = std::fs::read(dir.path().join("MANIFEST")).unwrap();
    let mut shards = Vec::new();
    for shard in 0..SHARDS {
        let salt = shard_salt(&manifest, shard as u32).unwrap();
        let relative = PathBuf::from(format!("L00000001/S{shard:04}"));
        let mut names: Vec<_> = std::fs::read_dir(dir.path().join(&relative))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        let mut segments = Vec::new();
        for name in names {
            let path = relative.join(name);
            let bytes = std::fs::read(dir.path().join(&path)).unwrap();
            let mut records = Vec::new();
            let mut pos = SEGMENT_HEADER_LEN;
            let mut sealed = false;
            while let Decoded::Record(record, len) = decode(&bytes[pos..], salt) {
                records.push(Rec {
                    start: pos,
                    end: pos + len,
                    op: Op::of(record),
                });
                pos += len;
                if matches!(record, Record::Seal { .. }) {
                    sealed = true;
                    break;
                }
            }
            assert!(sealed || bytes[pos..].iter().all(|&b| b == 0), "pristine log");
            segments.push(Segment {
                path,
                bytes,
                records,
                data_end: pos,
                sealed,
            });
        }
        shards.push(segments);
    }
    let data_segments: usize = shards.iter().flatten().filter(|s| !s.records.is_empty()).count();
    assert!(data_segments >= 5, "the log spans several segments per shard");
    Log { dir, shards }
}

#[derive(Debug)]
enum Damage {
    Flip { at: usize, bit: u8 },
    Zero { from: usize, to: usize },
    Garbage { from: usize, to: usize, seed: u64 },
    Truncate { at: usize },
}

/// What a trial must see.
#[derive(Debug, PartialEq, Eq)]
enum Strict {
    Opens,
    Refuses { offset: Option<usize> },
}

fn open(dir: &Path, mode: RecoveryMode) -> Result<(Model, session_engine::RecoveryReport), Error> {
    let clock = ManualClock::new(NOW_MS + 3_600_000);
    let engine = Engine::open(config(dir, mode, &clock))?;
    let model = engine
        .list_all()
        .into_iter()
        .map(|s| {
            let timeout = s.timeout().as_ms();
            (
                s.id(),
                (s.metadata().to_vec(), s.created_ms(), s.last_access_ms(), timeout),
            )
        })
        .collect();
    Ok((model, engine.recovery_report().unwrap().clone()))
}

#[test]
fn random_damage_is_refused_by_strict_and_repaired_exactly() {
    let seed = std::env::var("SESSION_DAMAGE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("seed {seed} (replay: SESSION_DAMAGE_SEED={seed})");
    let mut rng = Rng(seed);
    let log = build(&mut rng);
    let full: Model = {
        let mut m = Model::new();
        for rec in log.shards.iter().flatten().flat_map(|s| &s.records) {
            rec.op.apply(&mut m);
        }
        m
    };
    assert_eq!(
        open(log.dir.path(), RecoveryMode::Strict).unwrap().0,
        full,
        "the model replays the log"
    );
    let mut refused = 0;
    for trial in 0..TRIALS {
        let shard = rng.below(SHARDS);
        let data: Vec<usize> = (0..log.shards[shard].len())
            .filter(|&i| !log.shards[shard][i].records.is_empty())
            .collect();
        // One trial in five leaves what a crash leaves: the end of the
        // shard's last segment with data zeroed from inside a record on.
        let crash_like = rng.below(5) == 0;
        let index = if crash_like {
            *data.last().unwrap()
        } else {
            data[rng.below(data.len())]
        };
        let segment = &log.shards[shard][index];
        let len = segment.bytes.len();
        // Mostly where the data is; sometimes the header, sometimes past the data.
        let at = match rng.below(10) {
            0 => rng.below(SEGMENT_HEADER_LEN),
            1 => segment.data_end + rng.below(len - segment.data_end),
            _ => SEGMENT_HEADER_LEN + rng.below(segment.data_end - SEGMENT_HEADER_LEN),
        }
        .min(len - 1);
        let tail_from = segment.records[segment.records.len().saturating_sub(3)].start;
        let damage = match if crash_like { 4 } else { rng.below(4) } {
            4 => Damage::Zero {
                from: tail_from + rng.below(segment.data_end - tail_from),
                to: segment.data_end,
            },
            0 => Damage::Flip {
                at,
                bit: rng.below(8) as u8,
            },
            1 => Damage::Zero {
                from: at,
                to: (at + 1 + rng.below(600)).min(len),
            },
            2 => Damage::Garbage {
                from: at,
                to: (at + 1 + rng.below(64)).min(len),
                seed: rng.next(),
            },
            _ => Damage::Truncate { at },
        };
        let mut bytes = segment.bytes.clone();
        match damage {
            Damage::Flip { at, bit } => bytes[at] ^= 1 << bit,
            Damage::Zero { from, to } => bytes[from..to].fill(0),
            Damage::Garbage { from, to, seed } => {
                let mut g = Rng(seed | 1);
                for b in &mut bytes[from..to] {
                    *b = g.next() as u8;
                }
            }
            Damage::Truncate { at } => bytes.truncate(at),
        }
        // Which bytes changed, and what that damaged.
        let cut = bytes.len();
        let changed = |from: usize, to: usize| (from..to).any(|i| i >= cut || bytes[i] != segment.bytes[i]);
        let header_damaged = changed(0, SEGMENT_HEADER_LEN);
        let damaged: Vec<bool> = segment.records.iter().map(|r| changed(r.start, r.end)).collect();
        let truncated = cut < len;
        // The expected outcomes.
        let mut survivors = Model::new();
        for (i, s) in log.shards.iter().enumerate() {
            for (j, seg) in s.iter().enumerate() {
                for (k, rec) in seg.records.iter().enumerate() {
                    if !(i == shard && j == index && damaged[k]) {
                        rec.op.apply(&mut survivors);
                    }
                }
            }
        }
        let first_damaged = damaged.iter().position(|&d| d);
        let last_data = *data.last().unwrap();
        let strict = if truncated || header_damaged {
            Strict::Refuses { offset: None }
        } else if let Some(k) = first_damaged {
            // A torn tail: every record from the first damaged one on is
            // damaged, in the shard's last segment with data.
            let suffix = damaged[k..].iter().all(|&d| d);
            if suffix && index == last_data {
                Strict::Opens
            } else {
                Strict::Refuses {
                    offset: Some(segment.records[k].start),
                }
            }
        } else {
            Strict::Opens
        };
        let expect_strict_state = if strict == Strict::Opens {
            Some(&survivors)
        } else {
            None
        };

        let copy = tempfile::tempdir().unwrap();
        support::copy_dir(log.dir.path(), copy.path());
        std::fs::write(copy.path().join(&segment.path), &bytes).unwrap();
        let label = format!(
            "seed {seed} trial {trial}: {damage:?} in {} (data ends at {}, sealed {})",
            segment.path.display(),
            segment.data_end,
            segment.sealed
        );
        match (open(copy.path(), RecoveryMode::Strict), &strict) {
            (Ok((model, _)), Strict::Opens) => {
                assert!(
                    Some(&model) == expect_strict_state,
                    "{label}: strict opened with the wrong sessions"
                );
            }
            (Err(Error::Corrupt { path, offset, reason }), Strict::Refuses { offset: want }) => {
                refused += 1;
                assert!(
                    path.ends_with(&segment.path),
                    "{label}: refused naming {}",
                    path.display()
                );
                if let Some(want) = want {
                    assert_eq!(offset as usize, *want, "{label}: {reason}");
                }
            }
            (got, want) => panic!(
                "{label}: strict gave {:?}, expected {want:?}",
                got.map(|(m, r)| (m.len(), r))
            ),
        }
        let (model, report) =
            open(copy.path(), RecoveryMode::Repair).unwrap_or_else(|e| panic!("{label}: repair failed: {e}"));
        assert!(
            model == survivors,
            "{label}: repair kept {} sessions, {} expected",
            model.len(),
            survivors.len()
        );
        if matches!(strict, Strict::Refuses { .. }) {
            assert!(
                report.rewritten && report.corrupt_skipped > 0,
                "{label}: {report:?}"
            );
        }
        let (again, report) = open(copy.path(), RecoveryMode::Strict)
            .unwrap_or_else(|e| panic!("{label}: strict open after the repair: {e}"));
        assert!(again == survivors, "{label}: the repair did not last");
        assert_eq!(
            (report.torn_tails, report.corrupt_skipped),
            (0, 0),
            "{label}: {report:?}"
        );
    }
    println!("{TRIALS} trials, {refused} refused by Strict");
    assert!(
        refused > TRIALS / 4 && refused < TRIALS,
        "the trials cover both outcomes"
    );
}
