//! The background sweeper reclaims expired sessions without being asked,
//! and stops with the engine (no leaked thread).

use std::time::{Duration, Instant};

use session_engine::{Clock, Config, Engine, ManualClock, Timeout};

/// The tests count threads process-wide, so they must not overlap (cargo
/// runs a file's tests in parallel): each holds this while it runs.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .map(|s| s.trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn sweeper_reclaims_and_shuts_down() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let clock = ManualClock::new(0);
    let engine = Engine::open(
        Config::default()
            .sweep_interval(Duration::from_millis(5))
            .clock(clock.clock()),
    )
    .unwrap();
    for _ in 0..10_000 {
        engine.create(b"x", Timeout::from_ms(100)).unwrap();
    }
    let keep = engine.create(b"keep", Timeout::Never).unwrap();
    clock.advance_ms(100);
    // Behaviour, not timing: allow the sweeper generous real time to run.
    let give_up = Instant::now() + Duration::from_secs(20);
    while engine.len() > 1 && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(engine.len(), 1, "sweeper reclaimed the expired sessions");
    assert!(engine.get(&keep).is_ok());
    assert!(thread_names().iter().any(|n| n == "session-sweeper"));
    engine.close().unwrap();
    // A joined thread can linger in /proc for an instant after `join`.
    eventually(|| count("session-sweeper") == 0, "sweeper thread joined");
}

fn count(name: &str) -> usize {
    thread_names().iter().filter(|n| *n == name).count()
}

/// Waits up to 20 s (a loaded machine) for `done`; fails with `what`.
fn eventually(mut done: impl FnMut() -> bool, what: &str) {
    let give_up = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < give_up, "{what}: not within 20 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn no_thread_without_a_sweeper() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // The engine's threads, named or not yet: a new thread has its
    // creator's name (this test's thread's) until it names itself, and
    // would slip past a count of the engine's names. The test harness's
    // threads for other tests are neither.
    let own = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
    let own = own.trim();
    let threads = || {
        thread_names()
            .iter()
            .filter(|n| n.starts_with("session-") || n.as_str() == own)
            .count()
    };
    // The threads of the engines the tests before this one closed end on
    // their own time: counted at the start and gone by the end, or not
    // there yet at the start, they would make the count move by itself.
    // (A thread spawned late still has its creator's name, another test's,
    // until it names itself: the process's threads must also hold still.)
    let mut last = thread_names();
    let mut still = 0;
    eventually(
        || {
            let now = thread_names();
            still = if now == last { still + 1 } else { 0 };
            last = now;
            still >= 20 && last.iter().all(|n| !n.starts_with("session-"))
        },
        "the earlier tests' engine threads ended",
    );
    let before = threads();
    let engine = Engine::open(Config::default().without_sweeper().clock(Clock::precise())).unwrap();
    assert_eq!(
        threads(),
        before,
        "an engine without a sweeper started a thread: {:?} before, {:?} after",
        last,
        thread_names()
    );
    drop(engine);
}

#[test]
fn the_default_clock_ticks_in_a_thread_that_stops_with_the_engine() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let before = count("session-clock");
    let engine = Engine::open(Config::default().without_sweeper()).unwrap();
    // A new thread names itself once it runs.
    eventually(
        || count("session-clock") == before + 1,
        "one clock thread started",
    );
    let id = engine.create(b"x", Timeout::from_ms(30)).unwrap();
    // Behaviour, not timing: the clock moves on by itself and the session
    // expires on it, however slowly this machine runs the clock's thread.
    let give_up = Instant::now() + Duration::from_secs(20);
    while engine.contains(&id) {
        assert!(Instant::now() < give_up, "the engine's time stood still");
        std::thread::sleep(Duration::from_millis(5));
    }
    engine.close().unwrap();
    eventually(|| count("session-clock") == before, "clock thread joined");
}

#[test]
fn a_listener_may_drop_the_last_handle_on_the_sweeper_thread() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let clock = ManualClock::new(0);
    let slot: Arc<Mutex<Option<Engine>>> = Arc::new(Mutex::new(None));
    let dropped = Arc::new(AtomicBool::new(false));
    let (slot2, dropped2) = (Arc::clone(&slot), Arc::clone(&dropped));
    let engine = Engine::open(
        Config::default()
            .sweep_interval(Duration::from_millis(5))
            .clock(clock.clock())
            .listener(move |_, _| {
                // The sweeper thread calls this; the engine goes here.
                let taken = slot2.lock().unwrap().take();
                if let Some(engine) = taken {
                    drop(engine);
                    dropped2.store(true, Ordering::Release);
                }
            }),
    )
    .unwrap();
    engine.create(b"x", Timeout::from_ms(10)).unwrap();
    *slot.lock().unwrap() = Some(engine);
    clock.advance_ms(10);
    eventually(
        || dropped.load(Ordering::Acquire),
        "the listener dropped the engine",
    );
    eventually(|| count("session-sweeper") == 0, "the sweeper thread ended");
}

/// A listener on the sweeper thread closes a handle while another thread
/// is closing the engine (and so waits for the sweeper): neither waits for
/// the other forever.
#[test]
fn a_listener_may_close_while_another_thread_closes() {
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let clock = ManualClock::new(0);
    let slot: Arc<Mutex<Option<Engine>>> = Arc::new(Mutex::new(None));
    let (in_listener, listener_entered) = mpsc::channel::<()>();
    let (go_on, closing_started) = mpsc::channel::<()>();
    let (listener_closed, closed_in_listener) = mpsc::channel::<bool>();
    let slot2 = Arc::clone(&slot);
    let (go_on_rx, in_listener, listener_closed) = (
        Mutex::new(closing_started),
        Mutex::new(in_listener),
        Mutex::new(listener_closed),
    );
    let engine = Engine::open(
        Config::default()
            .sweep_interval(Duration::from_millis(5))
            .clock(clock.clock())
            .listener(move |_, _| {
                let Some(engine) = slot2.lock().unwrap().take() else {
                    return;
                };
                let _ = in_listener.lock().unwrap().send(());
                // The other thread is in `close` by now, waiting for this one.
                let _ = go_on_rx.lock().unwrap().recv();
                std::thread::sleep(Duration::from_millis(50));
                let ok = engine.close().is_ok();
                let _ = listener_closed.lock().unwrap().send(ok);
            }),
    )
    .unwrap();
    engine.create(b"x", Timeout::from_ms(10)).unwrap();
    *slot.lock().unwrap() = Some(engine.clone());
    clock.advance_ms(10);
    listener_entered
        .recv_timeout(Duration::from_secs(30))
        .expect("the sweeper calls the listener");
    let (closed, closed_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = closed.send(engine.close().is_ok());
    });
    std::thread::sleep(Duration::from_millis(50));
    go_on.send(()).unwrap();
    assert_eq!(
        closed_in_listener.recv_timeout(Duration::from_secs(30)),
        Ok(true),
        "the listener's close returns while another thread closes"
    );
    assert_eq!(
        closed_rx.recv_timeout(Duration::from_secs(30)),
        Ok(true),
        "the other thread's close returns once the listener has"
    );
}

/// A panic in a sweep (a bug) is counted and the sweeper goes on: expired
/// sessions are still reclaimed, and with a data directory the `Interval`
/// flushes it runs go on too, whether or not the sweeps keep panicking.
#[test]
fn the_sweeper_survives_a_panic_in_a_pass() {
    use session_engine::Durability;
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let engine = Engine::open(
        Config::default()
            .shards(1)
            .data_dir(dir.path())
            .durability(Durability::Interval(Duration::from_millis(5)))
            .sweep_interval(Duration::from_millis(5))
            .clock(clock.clock()),
    )
    .unwrap();
    engine.debug_panic_in_next_pass(false);
    eventually(|| engine.stats().background_panics == 1, "the panic is counted");
    let synced = engine.stats().log_syncs;
    for _ in 0..100 {
        engine.create(b"x", Timeout::from_ms(100)).unwrap();
    }
    eventually(|| engine.stats().log_syncs > synced, "the Interval flushes go on");
    clock.advance_ms(100);
    eventually(|| engine.is_empty(), "the sweeper still reclaims");
    assert_eq!(count("session-sweeper"), 1);
    assert_eq!(engine.stats().background_panics, 1);
    engine.close().unwrap();
}

/// Under `Interval`, the flush keeps its cadence while a sweep pass runs
/// long: a removal listener that takes 2 ms a session, over 600 sessions
/// expiring at once, makes a pass of over a second. The flush ran only
/// between passes, so writes acknowledged during a long pass stayed
/// unsynced for all of it, past the interval that bounds what a machine
/// crash loses.
#[test]
fn the_interval_flush_runs_during_a_long_sweep_pass() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let calls = Arc::new(AtomicUsize::new(0));
    // The pass's last listener call waits for the test to have seen a
    // flush (60 s at most): the pass cannot end unseen, however long the
    // test's thread is kept off a CPU.
    let seen = Arc::new(AtomicBool::new(false));
    let engine = Engine::open(
        Config::default()
            .data_dir(dir.path())
            .shards(1)
            .durability(session_engine::Durability::Interval(Duration::from_millis(10)))
            .sweep_interval(Duration::from_millis(5))
            .clock(clock.clock())
            .listener({
                let (calls, seen) = (Arc::clone(&calls), Arc::clone(&seen));
                move |_, _| {
                    if calls.fetch_add(1, Ordering::Relaxed) + 1 == EXPIRING {
                        let until = Instant::now() + Duration::from_secs(60);
                        while !seen.load(Ordering::Acquire) && Instant::now() < until {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }),
    )
    .unwrap();
    const EXPIRING: usize = 600;
    for _ in 0..EXPIRING {
        engine.create(b"x", Timeout::from_ms(1)).unwrap();
    }
    clock.advance_ms(2);
    eventually(|| calls.load(Ordering::Relaxed) > 0, "the sweep pass to start");
    let syncs = engine.stats().log_syncs;
    engine
        .create(b"acknowledged during the pass", Timeout::Never)
        .unwrap();
    // Behaviour, not timing: the pass is still running (held in its last
    // call) until the test has seen a flush. The test gives up first (30 s
    // against the hold's 60), so a flush that came only after the pass
    // is never taken for one during it.
    let give_up = Instant::now() + Duration::from_secs(30);
    while engine.stats().log_syncs == syncs {
        assert!(
            Instant::now() < give_up,
            "no log flush during a sweep pass of {EXPIRING} listener calls"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    seen.store(true, Ordering::Release);
}

/// `close` stops the sweeper at the end of the batch it is in, not of its
/// whole pass: a slow removal listener over many expiries would hold the
/// close (and the sweeper's thread) for the pass, here four batches. The
/// listener closes the engine on its first call; the pass then ends with
/// that batch, and the sessions left stay for whoever sweeps next.
#[test]
fn close_stops_a_long_pass_after_its_batch() {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, OnceLock};

    use session_engine::limits::SWEEP_BATCH_MAX;
    use session_engine::WeakEngine;

    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let clock = ManualClock::new(0);
    let handle: Arc<OnceLock<WeakEngine>> = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let pass_closed_in = Arc::new(AtomicU64::new(u64::MAX));
    let (me, heard, pass) = (
        Arc::clone(&handle),
        Arc::clone(&calls),
        Arc::clone(&pass_closed_in),
    );
    let engine = Engine::open(
        Config::default()
            .shards(1)
            .sweep_interval(Duration::from_millis(5))
            .clock(clock.clock())
            .listener(move |_, _| {
                if heard.fetch_add(1, Ordering::SeqCst) == 0 {
                    let engine = me.get().and_then(WeakEngine::upgrade).expect("open");
                    pass.store(engine.stats().sweeps_total, Ordering::SeqCst);
                    engine.close().expect("close");
                }
            }),
    )
    .unwrap();
    let _ = handle.set(engine.downgrade());
    for _ in 0..4 * SWEEP_BATCH_MAX {
        engine.create(b"x", Timeout::from_ms(100)).unwrap();
    }
    clock.advance_ms(100);
    // The pass the close came in has ended once the sweeper counts it.
    eventually(
        || {
            let closed_in = pass_closed_in.load(Ordering::SeqCst);
            closed_in != u64::MAX && engine.stats().sweeps_total > closed_in
        },
        "the pass the close came in ended",
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        SWEEP_BATCH_MAX,
        "the pass went on past the batch the close came in"
    );
    assert_eq!(
        engine.len(),
        3 * SWEEP_BATCH_MAX,
        "the rest stay for the next sweep"
    );
    assert_eq!(engine.cleanup_expired(), 3 * SWEEP_BATCH_MAX);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4 * SWEEP_BATCH_MAX,
        "each heard once"
    );
}
