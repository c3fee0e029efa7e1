//! The open-loop schedule: operation i is intended at start + offset + i ×
//! period, whatever the backend does; the closed loop runs back to back; a
//! client too far behind gives up after the grace and counts what it never sent.

mod support;

use loadgen::limits::BACKLOG_GRACE_NS;
use loadgen::schedule::Pace;
use support::{gets, run_sim, SimStore, SimTime};

const MS: u64 = 1_000_000;

#[test]
fn intended_start_times_follow_the_rate() {
    let pace = Pace::Open {
        period_ns: 250.0,
        offset_ns: 100.0,
    };
    assert_eq!(pace.intended_ns(0), Some(100));
    assert_eq!(pace.intended_ns(4), Some(1_100));
    // Fractional periods do not drift: 3 ops per 1000 ns for a million ops.
    let third = Pace::Open {
        period_ns: 1_000.0 / 3.0,
        offset_ns: 0.0,
    };
    assert_eq!(third.intended_ns(3_000_000), Some(1_000_000_000));
    assert_eq!(Pace::Closed.intended_ns(5), None);
}

#[test]
fn a_fast_backend_gets_exactly_the_offered_load_at_service_latency() {
    let store = SimStore::new(SimTime::default(), 2_000, u64::MAX, 0);
    let pace = Pace::Open {
        period_ns: 10_000.0,
        offset_ns: 0.0,
    };
    let (hists, summary) = run_sim(&store, pace, 100 * MS, u64::MAX);
    assert_eq!(summary.ops, 10_000, "100 ms at one op per 10 us");
    let h = gets(&hists);
    assert_eq!(h.min(), 2_000);
    assert_eq!(h.max(), 2_000, "never queued: each op starts on time");
    // The client idled until each intended start, so the run ends on schedule.
    assert!(store.time.0.load(std::sync::atomic::Ordering::SeqCst) <= 100 * MS + 2_000);
}

#[test]
fn an_overloaded_backend_builds_a_queue_that_the_latency_shows() {
    // Offered one op per 10 us; each takes 15 us: the queue grows linearly.
    let store = SimStore::new(SimTime::default(), 15_000, u64::MAX, 0);
    let pace = Pace::Open {
        period_ns: 10_000.0,
        offset_ns: 0.0,
    };
    let (hists, summary) = run_sim(&store, pace, 10 * MS, u64::MAX);
    assert_eq!(summary.unsent, 0, "the backlog cleared within the grace");
    assert_eq!(summary.ops, 1_000);
    // The last op was intended at ~10 ms and completes at ~15 ms.
    let h = gets(&hists);
    assert!(h.max() > 4 * MS && h.max() < 6 * MS, "max {}", h.max());
}

#[test]
fn past_the_grace_the_rest_is_counted_as_unsent() {
    // Each op takes 1 s against a 1 ms schedule for 1 s: hopeless.
    let store = SimStore::new(SimTime::default(), 1_000 * MS, u64::MAX, 0);
    let pace = Pace::Open {
        period_ns: 1e6,
        offset_ns: 0.0,
    };
    let (_, summary) = run_sim(&store, pace, 1_000 * MS, u64::MAX);
    let issued = summary.ops;
    assert!(issued <= BACKLOG_GRACE_NS / (1_000 * MS) + 2, "issued {issued}");
    assert_eq!(
        issued + summary.unsent,
        1_000,
        "every scheduled op is either issued or unsent"
    );
}

/// With `--ops`, what a client that gave up never sent counts the
/// warm-up's operations in full and the measured ones up to the limit, as
/// the limit itself does: 500 due in the warm-up, 100 of the 500 after it.
#[test]
fn unsent_counts_the_warm_up_beside_the_ops_limit() {
    let store = SimStore::new(SimTime::default(), 1_000 * MS, u64::MAX, 0);
    let pace = Pace::Open {
        period_ns: 1e6,
        offset_ns: 0.0,
    };
    let (_, summary) = support::run_sim_measured_from(&store, pace, 1_000 * MS, 100, 500 * MS);
    assert_eq!(summary.ops + summary.unsent, 500 + 100);
}

#[test]
fn closed_loop_runs_back_to_back_until_the_end_or_the_count() {
    let store = SimStore::new(SimTime::default(), 1_000, u64::MAX, 0);
    let (_, summary) = run_sim(&store, Pace::Closed, 10 * MS, u64::MAX);
    assert_eq!(summary.ops, 10_000);
    let store = SimStore::new(SimTime::default(), 1_000, u64::MAX, 0);
    let (_, summary) = run_sim(&store, Pace::Closed, 10 * MS, 123);
    assert_eq!(summary.ops, 123);
}
