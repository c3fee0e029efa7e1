//! Durations and rates as people write them in flags and TOML files
//! (`"250us"`, `"20s"`, `"interval:1000"`), and as the reports print them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written with a unit: `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`.
/// Fractions are allowed (`"1.5ms"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

/// Why a duration, rate or option string did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what} {text:?}: {reason}")]
pub struct ParseError {
    /// What was being parsed ("duration", "rate", ...).
    pub what: &'static str,
    /// The offending text.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ParseError {
    pub(crate) fn new(what: &'static str, text: &str, reason: impl Into<String>) -> Self {
        Self {
            what,
            text: text.to_owned(),
            reason: reason.into(),
        }
    }
}

const UNITS_NS: [(&str, f64); 7] = [
    ("ns", 1.0),
    ("us", 1e3),
    ("µs", 1e3),
    ("ms", 1e6),
    ("s", 1e9),
    ("m", 60e9),
    ("h", 3600e9),
];

impl Dur {
    /// Whole nanoseconds (saturating).
    #[must_use]
    pub fn as_ns(self) -> u64 {
        u64::try_from(self.0.as_nanos()).unwrap_or(u64::MAX)
    }

    /// A duration of `ms` milliseconds.
    #[must_use]
    pub const fn from_ms(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }
}

impl FromStr for Dur {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let text = s.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| ParseError::new("duration", s, "needs a unit: ns, us, ms, s, m or h"))?;
        let (number, unit) = text.split_at(split);
        let value: f64 = number
            .parse()
            .map_err(|_| ParseError::new("duration", s, "not a number followed by a unit"))?;
        let scale_ns = UNITS_NS
            .iter()
            .find(|(name, _)| *name == unit.trim())
            .map(|(_, scale)| *scale)
            .ok_or_else(|| ParseError::new("duration", s, "unknown unit (use ns, us, ms, s, m or h)"))?;
        let ns = value * scale_ns;
        if !ns.is_finite() || ns > 1e18 {
            return Err(ParseError::new("duration", s, "out of range"));
        }
        // Rounded to whole nanoseconds, which is the resolution of everything here.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(Dur(Duration::from_nanos(ns.round() as u64)))
    }
}

/// Exactly, in the largest unit of `s`, `ms`, `us` and `ns` it reaches,
/// with as many decimals as it needs (`1.234s`, `12.5ms`, `850ns`): a
/// scenario's times as they ran, which `result.json` records and
/// [`Dur::from_str`] reads back unchanged (rounded to 3 significant
/// digits, as [`format_ns`] prints a measurement, a 1234 ms timeout was
/// recorded as `1.23s`, and a 10.025 s run as `10s`).
impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.as_ns();
        let (scale, digits, unit) = match ns {
            1_000_000_000.. => (1_000_000_000, 9, "s"),
            1_000_000.. => (1_000_000, 6, "ms"),
            1_000.. => (1_000, 3, "us"),
            _ => return write!(f, "{ns}ns"),
        };
        let (whole, part) = (ns / scale, ns % scale);
        if part == 0 {
            return write!(f, "{whole}{unit}");
        }
        let fraction = format!("{part:0digits$}");
        write!(f, "{whole}.{}{unit}", fraction.trim_end_matches('0'))
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A nanosecond figure in the shortest exact-enough unit: `850ns`, `12.3us`,
/// `4.56ms`, `1.2s`. Round-trips through [`Dur::from_str`] to 3 significant digits.
#[must_use]
pub fn format_ns(ns: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let value = ns as f64;
    let (scaled, unit) = if ns < 1_000 {
        return format!("{ns}ns");
    } else if ns < 1_000_000 {
        (value / 1e3, "us")
    } else if ns < 1_000_000_000 {
        (value / 1e6, "ms")
    } else {
        (value / 1e9, "s")
    };
    let text = if scaled >= 100.0 {
        format!("{scaled:.0}")
    } else if scaled >= 10.0 {
        format!("{scaled:.1}")
    } else {
        format!("{scaled:.2}")
    };
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    };
    format!("{text}{unit}")
}

/// The load a scenario offers: a target rate (open loop) or as fast as the
/// backend answers (closed loop).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Rate {
    /// Closed loop: each client starts its next operation when the previous
    /// one returns. Measures peak throughput; latencies are service times.
    #[default]
    Max,
    /// Open loop: operations are scheduled at this many per second in total,
    /// whatever the backend does, and latency runs from the scheduled start.
    PerSec(f64),
}

impl FromStr for Rate {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let text = s.trim();
        if text.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        let digits: String = text.chars().filter(|c| *c != '_').collect();
        let (number, scale) = match digits.strip_suffix(['k', 'K']) {
            Some(n) => (n.to_owned(), 1e3),
            None => match digits.strip_suffix(['m', 'M']) {
                Some(n) => (n.to_owned(), 1e6),
                None => (digits, 1.0),
            },
        };
        let value: f64 = number.parse().map_err(|_| {
            ParseError::new(
                "rate",
                s,
                "expected ops per second (e.g. 200000, 200k) or \"max\"",
            )
        })?;
        let value = value * scale;
        // At least 1 op/s: slower schedules push each client's next
        // intended start beyond any run (and its arithmetic past u64 ns).
        if !(value.is_finite() && (1.0..=1e9).contains(&value)) {
            return Err(ParseError::new(
                "rate",
                s,
                "must be between 1 and 1e9 ops/s, or \"max\"",
            ));
        }
        Ok(Rate::PerSec(value))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Max => f.write_str("max"),
            Rate::PerSec(r) => write!(f, "{r}"),
        }
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Rate::Max => serializer.serialize_str("max"),
            Rate::PerSec(r) => serializer.serialize_f64(*r),
        }
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Rate::from_str(&n.to_string()).map_err(serde::de::Error::custom),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!("250us".parse::<Dur>().unwrap().as_ns(), 250_000);
        assert_eq!("250µs".parse::<Dur>().unwrap().as_ns(), 250_000);
        assert_eq!("1.5ms".parse::<Dur>().unwrap().as_ns(), 1_500_000);
        assert_eq!("20s".parse::<Dur>().unwrap().as_ns(), 20_000_000_000);
        assert_eq!("2m".parse::<Dur>().unwrap().0, Duration::from_secs(120));
        assert_eq!("800ns".parse::<Dur>().unwrap().as_ns(), 800);
    }

    #[test]
    fn durations_without_a_known_unit_are_refused() {
        for bad in ["20", "ms", "3 parsecs", "1e3ms", "", "-1s"] {
            assert!(bad.parse::<Dur>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn format_picks_a_readable_unit_and_round_trips() {
        assert_eq!(format_ns(850), "850ns");
        assert_eq!(format_ns(12_345), "12.3us");
        assert_eq!(format_ns(1_000_000), "1ms");
        assert_eq!(format_ns(4_560_000), "4.56ms");
        assert_eq!(format_ns(123_456_789_000), "123s");
        for ns in [1, 999, 1_000, 10_000, 999_999, 10_000_000, 60_000_000_000] {
            let back = format_ns(ns).parse::<Dur>().unwrap().as_ns();
            let error = back.abs_diff(ns) as f64 / ns as f64;
            assert!(error < 0.01, "{ns} -> {} -> {back}", format_ns(ns));
        }
    }

    /// A scenario's times are recorded as they ran: `result.json` and the
    /// headline printed 1234 ms as `1.23s`, and a 10.025 s run as `10s`.
    #[test]
    fn a_duration_prints_and_serializes_exactly() {
        for (text, shown) in [
            ("1234ms", "1.234s"),
            ("10.025s", "10.025s"),
            ("12.5ms", "12.5ms"),
            ("2us", "2us"),
            ("850ns", "850ns"),
            ("30m", "1800s"),
            ("1.000001s", "1.000001s"),
        ] {
            let d: Dur = text.parse().unwrap();
            assert_eq!(d.to_string(), shown);
            assert_eq!(shown.parse::<Dur>().unwrap(), d);
            let back: Dur = serde_json::from_value(serde_json::to_value(d).unwrap()).unwrap();
            assert_eq!(back, d, "{text}");
        }
        for ns in [1, 999, 1_001, 123_456_789, 3_600_000_000_001] {
            let d = Dur(Duration::from_nanos(ns));
            assert_eq!(d.to_string().parse::<Dur>().unwrap(), d, "{d}");
        }
    }

    #[test]
    fn rates_parse() {
        assert_eq!("max".parse::<Rate>().unwrap(), Rate::Max);
        assert_eq!("200k".parse::<Rate>().unwrap(), Rate::PerSec(200_000.0));
        assert_eq!("1_000".parse::<Rate>().unwrap(), Rate::PerSec(1_000.0));
        assert_eq!("2M".parse::<Rate>().unwrap(), Rate::PerSec(2e6));
        assert!("0".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
        // Below 1 op/s the schedule's arithmetic would run off the end.
        assert!("0.5".parse::<Rate>().is_err() && "5e-11".parse::<Rate>().is_err());
        assert_eq!("1".parse::<Rate>().unwrap(), Rate::PerSec(1.0));
    }
}
