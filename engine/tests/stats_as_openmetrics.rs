//! `Stats::write_openmetrics` writes valid OpenMetrics text: read back line
//! by line, each family is introduced once (`# TYPE`, `# UNIT` when its
//! name ends with one, `# HELP`), its samples follow it and carry its name
//! (`_total` on counters), the text ends with `# EOF`, and every value is
//! the statistic it names.

use std::collections::{BTreeMap, HashSet};

use session_engine::{Config, Engine, ManualClock, Stats, Timeout};

/// The samples of an exposition, by name with labels, after checking its
/// structure.
fn parse(text: &str) -> BTreeMap<String, String> {
    let mut families = HashSet::new();
    let mut family: Option<(String, String)> = None; // (name, type)
    let mut helped = false;
    let mut samples = BTreeMap::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line == "# EOF" {
            assert!(lines.peek().is_none(), "text after # EOF");
            assert!(text.ends_with("# EOF\n"));
            return samples;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name type");
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            assert!(families.insert(name.to_owned()), "family {name} twice");
            if kind == "counter" {
                assert!(!name.ends_with("_total"), "counter family {name}");
            }
            family = Some((name.to_owned(), kind.to_owned()));
            helped = false;
        } else if let Some(rest) = line.strip_prefix("# UNIT ") {
            let (name, unit) = rest.split_once(' ').expect("UNIT name unit");
            assert_eq!(Some(name), family.as_ref().map(|f| f.0.as_str()), "{line}");
            assert!(name.ends_with(&format!("_{unit}")), "{line}");
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert_eq!(Some(name), family.as_ref().map(|f| f.0.as_str()), "{line}");
            assert!(!help.is_empty() && !helped, "{line}");
            helped = true;
        } else {
            assert!(!line.starts_with('#'), "unknown line {line}");
            let (name_labels, value) = line.rsplit_once(' ').expect("sample value");
            let name = name_labels.split('{').next().unwrap();
            let (fam, kind) = family.as_ref().expect("a sample before any TYPE");
            let expected = if kind == "counter" {
                format!("{fam}_total")
            } else {
                fam.clone()
            };
            assert_eq!(name, expected, "{line}");
            assert!(helped, "{line} before its HELP");
            if let Some(labels) = name_labels.strip_prefix(name) {
                assert!(labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')));
            }
            assert!(
                value.parse::<u64>().is_ok() || value.parse::<f64>().is_ok(),
                "{line}: not a number"
            );
            let previous = samples.insert(name_labels.to_owned(), value.to_owned());
            assert!(previous.is_none(), "{name_labels} twice");
        }
    }
    panic!("no # EOF");
}

fn busy_stats() -> Stats {
    let clock = ManualClock::new(1_700_000_000_000);
    let engine = Engine::open(Config::default().shards(2).clock(clock.clock()).without_sweeper()).unwrap();
    let mut ids = Vec::new();
    for i in 0..50u32 {
        ids.push(
            engine
                .create(&i.to_le_bytes(), Timeout::from_ms(u64::from(i) + 10))
                .unwrap(),
        );
        clock.advance_ms(7);
    }
    engine.delete(&ids[49]).unwrap();
    clock.advance_ms(30);
    engine.cleanup_expired();
    let stats = engine.stats();
    assert!(stats.expired_total > 0 && stats.sessions > 0 && !stats.average_age_ms.is_multiple_of(1000));
    stats
}

#[test]
fn every_family_once_with_its_value() {
    let stats = busy_stats();
    let mut text = String::new();
    stats.write_openmetrics(&mut text, "session").unwrap();
    let samples = parse(&text);
    let value = |name: &str| -> &str {
        samples
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    let int = |name: &str| value(name).parse::<u64>().unwrap();
    assert_eq!(int("session_sessions"), stats.sessions as u64);
    assert_eq!(int("session_sessions_max"), stats.sessions_max as u64);
    for (shard, &n) in stats.sessions_per_shard.iter().enumerate() {
        assert_eq!(
            int(&format!("session_shard_sessions{{shard=\"{shard}\"}}")),
            n as u64
        );
    }
    assert_eq!(int("session_created_total"), stats.created_total);
    assert_eq!(int("session_deleted_total"), stats.deleted_total);
    assert_eq!(int("session_expired_total"), stats.expired_total);
    assert_eq!(int("session_sweeps_total"), stats.sweeps_total);
    assert_eq!(int("session_expired_last_sweep"), stats.expired_last_sweep);
    assert_eq!(
        value("session_average_age_seconds"),
        format!(
            "{}.{:03}",
            stats.average_age_ms / 1000,
            stats.average_age_ms % 1000
        )
    );
    let seconds: f64 = value("session_average_age_seconds").parse().unwrap();
    assert!((seconds * 1000.0 - stats.average_age_ms as f64).abs() < 0.5);
    assert_eq!(int("session_metadata_bytes"), stats.metadata_bytes);
    assert_eq!(int("session_memory_bytes"), stats.memory_bytes);
    assert_eq!(int("session_wheel_entries"), stats.wheel_entries as u64);
    assert_eq!(int("session_listener_panics_total"), stats.listener_panics);
    assert_eq!(int("session_rehashes_total"), stats.rehashes_total);
    assert_eq!(int("session_log_bytes"), stats.log_bytes);
    assert_eq!(int("session_log_live_bytes"), stats.log_live_bytes);
    assert_eq!(int("session_log_syncs_total"), stats.log_syncs);
    assert_eq!(
        int("session_log_syncs_by_file_system_total"),
        stats.log_syncs_by_file_system
    );
    assert_eq!(int("session_compaction_errors_total"), stats.compaction_errors);
    assert_eq!(int("session_background_panics_total"), stats.background_panics);
    assert_eq!(int("session_touches_dropped_total"), stats.touches_dropped);
    // Nothing else: a new field gets its family and its line above.
    assert_eq!(samples.len(), 20 + stats.sessions_per_shard.len(), "{text}");
}

#[test]
fn families_without_eof_combine_with_others() {
    let stats = busy_stats();
    let mut text = String::new();
    stats.write_openmetrics_families(&mut text, "a").unwrap();
    assert!(!text.contains("# EOF"));
    stats.write_openmetrics_families(&mut text, "b").unwrap();
    text.push_str("# EOF\n");
    let samples = parse(&text);
    assert_eq!(samples["a_created_total"], samples["b_created_total"]);
    // An empty prefix names the families bare.
    let mut bare = String::new();
    stats.write_openmetrics(&mut bare, "").unwrap();
    assert!(parse(&bare).contains_key("created_total"));
}
