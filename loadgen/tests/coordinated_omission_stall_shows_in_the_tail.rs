//! A backend stall must show in the latency tail of an open-loop run: every
//! operation scheduled during the stall is late by the rest of it. A naive
//! measurement (service time, or a closed loop) sees one slow sample only.

mod support;

use loadgen::schedule::Pace;
use support::{gets, run_sim, SimStore, SimTime};

const MS: u64 = 1_000_000;

#[test]
fn open_loop_charges_the_stall_to_every_operation_scheduled_during_it() {
    // 1,000 ops/s for 1 s, 10 us each; operation 500 freezes for 100 ms.
    let store = SimStore::new(SimTime::default(), 10_000, 500, 100 * MS);
    let pace = Pace::Open {
        period_ns: 1e6,
        offset_ns: 0.0,
    };
    let (hists, summary) = run_sim(&store, pace, 1_000 * MS, u64::MAX);
    let h = gets(&hists);
    assert_eq!(summary.ops, 1_000, "every scheduled operation ran");
    assert_eq!(summary.unsent, 0);
    // About 100 operations were due during the stall: ~10% of the run is late,
    // by 100 ms, 99 ms, ... down to ~0. So p95 is tens of ms and p99 ~90 ms.
    assert!(
        h.value_at_quantile(0.95) > 40 * MS,
        "p95 {}",
        h.value_at_quantile(0.95)
    );
    assert!(
        h.value_at_quantile(0.99) > 85 * MS,
        "p99 {}",
        h.value_at_quantile(0.99)
    );
    assert!(h.max() >= 100 * MS);
    assert!(
        h.value_at_quantile(0.5) < 20_000,
        "the median stays at the service time"
    );
    let late = h
        .iter_recorded()
        .filter(|v| v.value_iterated_to() > MS)
        .map(|v| v.count_at_value())
        .sum::<u64>();
    assert!(
        (95..=105).contains(&late),
        "{late} operations late by more than 1 ms"
    );

    // What the backend itself measured: one slow operation in a thousand.
    let service = store.service.lock();
    assert!(
        service.value_at_quantile(0.99) < 20_000,
        "service p99 {}",
        service.value_at_quantile(0.99)
    );
}

#[test]
fn closed_loop_sees_the_stall_once_which_is_why_it_is_not_for_latency() {
    let store = SimStore::new(SimTime::default(), 10_000, 500, 100 * MS);
    let (hists, summary) = run_sim(&store, Pace::Closed, 1_000 * MS, 1_000);
    let h = gets(&hists);
    assert_eq!(summary.ops, 1_000);
    assert!(h.max() >= 100 * MS, "the stalled operation itself");
    assert!(
        h.value_at_quantile(0.99) < 20_000,
        "closed loop hides the stall: p99 {}",
        h.value_at_quantile(0.99)
    );
}
