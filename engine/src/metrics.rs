//! The statistics as OpenMetrics text (the Prometheus exposition format's
//! standard successor), without a metrics crate: [`Stats::write_openmetrics`]
//! and the small writer it uses, which other backends (`session-redis`)
//! share so that their text follows the same rules.
//!
//! The rules kept (OpenMetrics 1.0, "Text format"): every family is
//! introduced by `# TYPE` and `# HELP` (and `# UNIT` when its name carries
//! one, which must then end the name); a counter family's name has no
//! `_total`, its one sample does; each family appears once, its samples
//! together; label values escape `\`, `"` and newlines; the exposition
//! ends with `# EOF`. Values are integers, or seconds written as exact
//! decimals (never a float's rounding).

use std::fmt::{self, Display, Write};

use crate::session::Stats;

/// Writes metric families in OpenMetrics text to `out`, each name
/// prefixed with `prefix_`. Finish with [`eof`](Self::eof) once per
/// exposition (after every backend's families, when several share one).
pub struct OpenMetricsWriter<'a, W: Write> {
    out: &'a mut W,
    prefix: &'a str,
}

/// True for a name OpenMetrics accepts: `[a-zA-Z_][a-zA-Z0-9_]*` (the
/// colon it also allows is reserved for recording rules).
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Milliseconds as seconds, exactly (`1234` → `1.234`).
struct Seconds(u64);

impl Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}

impl<'a, W: Write> OpenMetricsWriter<'a, W> {
    /// A writer of families named `<prefix>_<name>` (`<name>` alone if
    /// `prefix` is empty).
    ///
    /// # Panics
    /// If `prefix` is neither empty nor a valid metric name
    /// (`[a-zA-Z_][a-zA-Z0-9_]*`): a programming error, not a runtime one.
    pub fn new(out: &'a mut W, prefix: &'a str) -> Self {
        assert!(
            prefix.is_empty() || valid_name(prefix),
            "metric prefix {prefix:?} is not [a-zA-Z_][a-zA-Z0-9_]*"
        );
        Self { out, prefix }
    }

    /// Writes a family's header, or nothing and `fmt::Error` if its name
    /// breaks the rules (see [`OpenMetricsWriter::counter`]).
    fn header(&mut self, name: &str, kind: &str, unit: Option<&str>, help: &str) -> fmt::Result {
        let named_right = valid_name(name)
            && unit.is_none_or(|u| name.strip_suffix(u).is_some_and(|n| n.ends_with('_')))
            && (kind != "counter" || !name.ends_with("_total"));
        if !named_right {
            return Err(fmt::Error);
        }
        let sep = if self.prefix.is_empty() { "" } else { "_" };
        let prefix = self.prefix;
        writeln!(self.out, "# TYPE {prefix}{sep}{name} {kind}")?;
        if let Some(unit) = unit {
            writeln!(self.out, "# UNIT {prefix}{sep}{name} {unit}")?;
        }
        write!(self.out, "# HELP {prefix}{sep}{name} ")?;
        escape(self.out, help)?;
        self.out.write_char('\n')
    }

    fn sample(
        &mut self,
        name: &str,
        suffix: &str,
        label: Option<(&str, &str)>,
        value: impl Display,
    ) -> fmt::Result {
        let sep = if self.prefix.is_empty() { "" } else { "_" };
        write!(self.out, "{}{sep}{name}{suffix}", self.prefix)?;
        if let Some((key, value)) = label {
            write!(self.out, "{{{key}=\"")?;
            escape(self.out, value)?;
            self.out.write_str("\"}")?;
        }
        writeln!(self.out, " {value}")
    }

    /// A counter family `name` (no `_total`: its sample gets it).
    ///
    /// # Errors
    /// Those of `out`; `fmt::Error`, with nothing written, if `name` is not
    /// a metric name (`[a-zA-Z_][a-zA-Z0-9_]*`), ends with `_total`, or (for
    /// the families with a unit) does not end with `_<unit>`; the same for
    /// every family below, and for a label name.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        self.header(name, "counter", None, help)?;
        self.sample(name, "_total", None, value)
    }

    /// A gauge family `name` with one sample.
    ///
    /// # Errors
    /// Those of `out`.
    pub fn gauge(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        self.header(name, "gauge", None, help)?;
        self.sample(name, "", None, value)
    }

    /// A gauge family in bytes: `name` must end with `_bytes`.
    ///
    /// # Errors
    /// Those of `out`.
    pub fn gauge_bytes(&mut self, name: &str, help: &str, bytes: u64) -> fmt::Result {
        self.header(name, "gauge", Some("bytes"), help)?;
        self.sample(name, "", None, bytes)
    }

    /// A gauge family in seconds, given in milliseconds (written exactly):
    /// `name` must end with `_seconds`.
    ///
    /// # Errors
    /// Those of `out`.
    pub fn gauge_seconds(&mut self, name: &str, help: &str, ms: u64) -> fmt::Result {
        self.header(name, "gauge", Some("seconds"), help)?;
        self.sample(name, "", None, Seconds(ms))
    }

    /// A gauge family with one sample per value of the label `label` (an
    /// empty family if `samples` is).
    ///
    /// # Errors
    /// Those of `out`.
    pub fn gauge_labelled<L: Display>(
        &mut self,
        name: &str,
        unit: Option<&str>,
        help: &str,
        label: &str,
        samples: impl IntoIterator<Item = (L, u64)>,
    ) -> fmt::Result {
        if !valid_name(label) {
            return Err(fmt::Error);
        }
        self.header(name, "gauge", unit, help)?;
        let mut text = String::new();
        for (value_of_label, value) in samples {
            text.clear();
            write!(text, "{value_of_label}")?;
            self.sample(name, "", Some((label, &text)), value)?;
        }
        Ok(())
    }

    /// Ends the exposition (`# EOF`): once, after the last family.
    ///
    /// # Errors
    /// Those of `out`.
    pub fn eof(self) -> fmt::Result {
        self.out.write_str("# EOF\n")
    }
}

impl Stats {
    /// Writes these statistics as a complete OpenMetrics exposition (ending
    /// in `# EOF`), each family named `<prefix>_<name>`; see the engine
    /// README ("Metrics") for the families. To serve them beside other
    /// families, use [`write_openmetrics_families`](Self::write_openmetrics_families)
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
        let count = |n: usize| n as u64;
        w.gauge(
            "sessions",
            "Sessions held, expired ones not yet swept included.",
            count(self.sessions),
        )?;
        w.gauge(
            "sessions_max",
            "The configured cap on sessions.",
            count(self.sessions_max),
        )?;
        w.gauge_labelled(
            "shard_sessions",
            None,
            "Sessions held by each shard.",
            "shard",
            self.sessions_per_shard
                .iter()
                .enumerate()
                .map(|(i, &n)| (i, count(n))),
        )?;
        w.counter(
            "created",
            "Sessions created (insert included).",
            self.created_total,
        )?;
        w.counter("deleted", "Sessions removed by delete.", self.deleted_total)?;
        w.counter("expired", "Sessions removed by expiry.", self.expired_total)?;
        w.counter("sweeps", "Sweep passes.", self.sweeps_total)?;
        w.gauge(
            "expired_last_sweep",
            "Sessions the last sweep pass expired.",
            self.expired_last_sweep,
        )?;
        w.gauge_seconds(
            "average_age_seconds",
            "Mean age of the sessions held (since creation).",
            self.average_age_ms,
        )?;
        w.gauge_bytes(
            "metadata_bytes",
            "Metadata bytes of the sessions held.",
            self.metadata_bytes,
        )?;
        w.gauge_bytes(
            "memory_bytes",
            "Estimated memory of the sessions: blocks, tables and wheel links, before allocator rounding.",
            self.memory_bytes,
        )?;
        w.gauge(
            "wheel_entries",
            "Sessions scheduled in the timer wheels.",
            count(self.wheel_entries),
        )?;
        w.counter(
            "listener_panics",
            "Panics caught in the removal listener and the timer listener.",
            self.listener_panics,
        )?;
        w.counter(
            "rehashes",
            "Table rebuilds (each an O(n) pause of one shard's writers).",
            self.rehashes_total,
        )?;
        w.gauge_bytes("log_bytes", "Bytes in the logs.", self.log_bytes)?;
        w.gauge_bytes(
            "log_live_bytes",
            "Bytes the live sessions would take in a freshly compacted log.",
            self.log_live_bytes,
        )?;
        w.counter(
            "log_syncs",
            "Successful log flushes that synced something.",
            self.log_syncs,
        )?;
        w.counter(
            "log_syncs_by_file_system",
            "Of the log flushes, those a syncfs of the logs' file system made.",
            self.log_syncs_by_file_system,
        )?;
        w.counter(
            "compaction_errors",
            "Background compactions that failed.",
            self.compaction_errors,
        )?;
        w.counter(
            "background_panics",
            "Panics caught in a pass of the sweeper or the compactor thread.",
            self.background_panics,
        )?;
        w.counter(
            "touches_dropped",
            "Touches a read could not queue for its log.",
            self.touches_dropped,
        )
    }
}

/// OpenMetrics 1.0's escaped string (HELP text and label values alike):
/// `\`, `"` and a newline escaped.
fn escape(out: &mut impl Write, text: &str) -> fmt::Result {
    for c in text.chars() {
        match c {
            '\\' => out.write_str("\\\\")?,
            '"' => out.write_str("\\\"")?,
            '\n' => out.write_str("\\n")?,
            c => out.write_char(c)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_exact_decimals() {
        for (ms, text) in [(0, "0.000"), (7, "0.007"), (1_234, "1.234"), (60_000, "60.000")] {
            assert_eq!(Seconds(ms).to_string(), text);
        }
    }

    #[test]
    fn help_and_label_values_are_escaped() {
        let mut out = String::new();
        let mut w = OpenMetricsWriter::new(&mut out, "");
        // OpenMetrics 1.0: HELP text escapes `"` as label values do.
        w.gauge_labelled("x", None, "a \\ b\nc \"q\"", "node", [("a\"b\\c\nd", 1)])
            .unwrap();
        w.eof().unwrap();
        assert_eq!(
            out,
            "# TYPE x gauge\n# HELP x a \\\\ b\\nc \\\"q\\\"\nx{node=\"a\\\"b\\\\c\\nd\"} 1\n# EOF\n"
        );
    }

    #[test]
    #[should_panic(expected = "is not")]
    fn a_bad_prefix_is_a_programming_error() {
        let mut out = String::new();
        let _ = OpenMetricsWriter::new(&mut out, "session-engine");
    }

    #[test]
    fn a_bad_name_writes_nothing_and_fails() {
        let mut out = String::new();
        let mut w = OpenMetricsWriter::new(&mut out, "p");
        assert!(w.counter("a b\n# EOF", "h", 1).is_err());
        assert!(w.gauge_bytes("size", "not ending with its unit", 1).is_err());
        assert!(w.counter("requests_total", "the sample adds _total", 1).is_err());
        assert!(w.gauge_labelled("x", None, "h", "bad key", [("v", 1)]).is_err());
        assert_eq!(out, "", "a family written in part");
    }

    #[test]
    fn names_follow_the_rules() {
        assert!(valid_name("session_engine") && valid_name("_x1"));
        assert!(!valid_name("") && !valid_name("1x") && !valid_name("a-b") && !valid_name("a:b"));
    }
}
