//! With the `tracing` feature the rare events reach the subscriber once
//! each, and operations log nothing: a failed log sync (writes refused from
//! then on) is one warning however many writes meet the refusal, and a
//! repair that skipped damage at open is one warning. Run by
//! `cargo test -p session-engine --features tracing --test rare_events_are_logged`.
#![cfg(feature = "tracing")]
mod support;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use session_engine::{Config, Durability, Engine, Error, RecoveryMode, SessionId, Timeout};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Every event's level and message.
#[derive(Clone, Default)]
struct Capture {
    events: Arc<Mutex<Vec<(Level, String)>>>,
    next_span: Arc<AtomicU64>,
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        self.events
            .lock()
            .unwrap()
            .push((*event.metadata().level(), message.0));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

impl Capture {
    fn take(&self) -> Vec<(Level, String)> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

fn config(dir: &Path) -> Config {
    Config::default()
        .shards(1)
        .data_dir(dir)
        .durability(Durability::Always)
        .segment_size_bytes(64 * 1024)
        .metadata_bytes_max(1024)
        .without_sweeper()
}

/// One test: the subscriber is global (the flusher thread logs), and
/// each part takes the events it caused.
#[test]
fn rare_events_are_logged_once_and_operations_never() {
    let capture = Capture::default();
    tracing::subscriber::set_global_default(capture.clone()).unwrap();

    // Operations log nothing.
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    let mut ids = Vec::new();
    for i in 0..300u32 {
        let id = engine.create(&[i as u8; 150], Timeout::Never).unwrap();
        engine.get(&id).unwrap();
        engine.update(&id, |m| m.to_vec()).unwrap();
        ids.push(id);
    }
    engine.delete(&ids[0]).unwrap();
    assert_eq!(capture.take(), [], "operations logged");

    // A failed sync: one warning, however many writes meet the refusal.
    engine.debug_fail_syncs();
    for _ in 0..3 {
        assert!(matches!(
            engine.create(b"x", Timeout::Never),
            Err(Error::OutcomeUnknown { .. } | Error::WritesRefused { .. } | Error::Io { .. })
        ));
    }
    let events = capture.take();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, Level::WARN);
    assert!(events[0].1.contains("refuses writes"), "{events:?}");
    drop(engine);
    capture.take();

    // Damage skipped by a repair at open: one warning.
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path()).durability(Durability::Never)).unwrap();
    for i in 0..600u32 {
        let mut id = [0xA5; 16];
        id[..4].copy_from_slice(&i.to_le_bytes());
        engine
            .insert(SessionId::from_bytes(id), &[i as u8 | 1; 200], Timeout::Never)
            .unwrap();
    }
    engine.close().unwrap();
    let segments = support::segment_files(&dir.path().join("L00000001/S0000"));
    assert!(segments.len() >= 2, "{segments:?}");
    // Garble the middle of a sealed segment: damage a crash cannot cause.
    let mut bytes = std::fs::read(&segments[0]).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 64] {
        *b ^= 0x5A;
    }
    std::fs::write(&segments[0], bytes).unwrap();
    capture.take();
    let engine = Engine::open(config(dir.path()).recovery_mode(RecoveryMode::Repair)).unwrap();
    let report = engine.recovery_report().unwrap();
    assert!(report.corrupt_skipped > 0 && report.rewritten, "{report:?}");
    let events = capture.take();
    let warnings: Vec<_> = events.iter().filter(|(l, _)| *l == Level::WARN).collect();
    assert_eq!(warnings.len(), 1, "{events:?}");
    assert!(warnings[0].1.contains("repair skipped"), "{events:?}");
}
