//! The engine's one error type. Every variant names what was wrong and, where
//! a limit was hit, the limit and the setting that controls it. Programmer
//! bugs (broken internal invariants) are assertions, not errors.

use crate::id::ParseIdError;

/// Result alias for engine operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in a session operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No live session has this id: it never existed, was deleted, or its
    /// inactivity timeout passed (expired sessions are never returned, even
    /// before the sweeper reclaims them).
    #[error("session not found (unknown id, deleted, or expired)")]
    NotFound,

    /// `insert` was given an id that a live session already has. Ids are
    /// never silently overwritten.
    #[error("a live session with this id already exists")]
    AlreadyExists,

    /// The engine holds `sessions_max` sessions (after reclaiming expired ones).
    #[error("session capacity exceeded: the engine already holds its maximum of {sessions_max} sessions (Config::sessions_max)")]
    CapacityExceeded {
        /// The configured maximum.
        sessions_max: usize,
    },

    /// Metadata longer than `Config::metadata_bytes_max`.
    #[error("metadata of {len} bytes exceeds the limit of {max} bytes (Config::metadata_bytes_max)")]
    ValueTooLarge {
        /// Length of the rejected metadata.
        len: usize,
        /// The configured limit.
        max: usize,
    },

    /// A timeout that is zero or longer than the longest finite timeout.
    #[error("invalid timeout of {timeout_ms} ms: a finite timeout must be between 1 ms and {max_ms} ms (400 days); use Timeout::Never for sessions that never expire")]
    InvalidTimeout {
        /// The rejected timeout, in milliseconds (saturated at `u64::MAX`).
        timeout_ms: u64,
        /// The longest finite timeout, [`TIMEOUT_MS_MAX`](crate::limits::TIMEOUT_MS_MAX).
        max_ms: u64,
    },

    /// Text that is not a session id.
    #[error(transparent)]
    InvalidId(#[from] ParseIdError),

    /// A list cursor that no listing of this backend produced.
    #[error("invalid list cursor: {reason}")]
    InvalidCursor {
        /// What is wrong with it.
        reason: String,
    },

    /// A list page size of zero or above the limit.
    #[error("invalid page size {limit}: must be between 1 and {max}")]
    InvalidPageSize {
        /// The rejected size.
        limit: usize,
        /// The largest page, [`LIST_PAGE_MAX`](crate::limits::LIST_PAGE_MAX).
        max: usize,
    },

    /// A per-session state bound of [`limits`](crate::limits) was reached:
    /// a topic longer than `TOPIC_LEN_MAX` bytes, a session subscribed to
    /// `TOPICS_PER_SESSION_MAX` topics, or holding `TIMERS_PER_SESSION_MAX`
    /// timers. Nothing was changed.
    #[error("{what}: {len} exceeds the limit of {max} (session_engine::limits)")]
    LimitExceeded {
        /// Which bound, naming its constant in `limits`.
        what: &'static str,
        /// What the call asked for (the topic's length, the count it would reach).
        len: usize,
        /// The bound.
        max: usize,
    },

    /// An argument no call accepts: an empty topic, a token bucket with a
    /// zero capacity or refill, a charge larger than the bucket can ever
    /// hold, a timer's delay past `limits::TIMEOUT_MS_MAX`. Nothing was
    /// changed.
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What is wrong with it.
        reason: String,
    },

    /// A configuration value out of range; the message names the setting.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// The operating system's random source failed to produce an id.
    #[error("the operating system's random source failed: {0}")]
    Entropy(getrandom::Error),

    /// A file operation of the persistence layer failed (disk full, read-only
    /// file system, permissions...). The operation was not applied.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What the engine was doing, naming the file.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A log or manifest holds bytes that are not what the format allows
    /// (see `engine/FORMAT.md`), or a file or directory the MANIFEST names
    /// is missing; recovery in `RecoveryMode::Strict` stops here. The
    /// reason says whether `RecoveryMode::Repair` can skip the damage
    /// (damaged records) or cannot (a damaged MANIFEST, a missing layout or
    /// shard directory: restore the directory instead).
    #[error("corrupt data in {} at byte offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The damaged file.
        path: std::path::PathBuf,
        /// Offset of the first bad byte.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },

    /// Another engine (in this or another process) has the data directory open.
    #[error("data directory {} is already open in another engine (its LOCK file is held)", path.display())]
    DirectoryLocked {
        /// The directory.
        path: std::path::PathBuf,
    },

    /// An earlier sync of this shard's log failed, so the shard no longer
    /// accepts writes (reads still work; other shards' logs go on until a
    /// sync of theirs fails); reopen the engine once the disk is healthy.
    #[error("writes are refused after an earlier I/O failure ({reason}); reads still work")]
    WritesRefused {
        /// The failure that started it.
        reason: String,
    },

    /// An `update` lost the race to concurrent writers of the same session
    /// this many times in a row and gave up (remote backends; the embedded
    /// engine falls back to running the closure under its lock instead).
    /// Nothing was changed by this call.
    #[error("update gave up after losing {tries} races in a row to concurrent writers of this session")]
    Contended {
        /// Optimistic attempts made.
        tries: u32,
    },

    /// A remote backend could not be reached or refused service; the
    /// operation was not applied.
    #[error("session backend unavailable: {reason}")]
    Unavailable {
        /// What the backend or the client said.
        reason: String,
    },

    /// A remote backend did not answer within the request timeout.
    #[error("session backend timed out after {after_ms} ms; the outcome is unknown")]
    TimedOut {
        /// The request timeout that elapsed.
        after_ms: u64,
    },

    /// A write to a remote backend failed in a way that leaves open whether it
    /// was applied (for example the connection broke after sending).
    #[error("outcome unknown: {reason}")]
    OutcomeUnknown {
        /// What happened.
        reason: String,
    },
}

impl Error {
    /// True for [`Error::NotFound`].
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound)
    }
}

/// Untrusted text as an error shows it: quoted, and cut after
/// [`SHOWN_CHARS_MAX`] characters (a hostile cursor of megabytes is not
/// copied into its error).
pub(crate) fn shown(text: &str) -> String {
    match text.char_indices().nth(SHOWN_CHARS_MAX) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}... ({} bytes)", &text[..end], text.len()),
    }
}

/// How much of an untrusted text an error quotes.
const SHOWN_CHARS_MAX: usize = 64;

/// A store URL as messages, logs and reports may show it: the password of
/// its credentials (`scheme://user:password@host...`) replaced by `***`,
/// and the value of every query parameter but those known to hold no
/// secret (`durability`, `shards`, `protocol`) too (`?password=...`, a form other
/// clients read), and a bare query token other than those names (a secret
/// pasted in the wrong place); the rest as it was. Everything between the
/// scheme and the URL's last `@` after its first `:` counts as the
/// password, so a password holding `@`, `/` or `,` unencoded is hidden
/// whole. Where the last `@` comes after a `?` and a `:` comes before that
/// `?` (`h:6379?password=p@ss`, or a password holding `?`: the text cannot
/// tell), everything after that `:` is hidden: more than needed, never a
/// secret. A fragment (`#...`) is hidden, and the value of a parameter
/// shown is shown only if it is a short plain word (`always`, `8`,
/// `resp3`).
#[must_use]
pub fn redact_url(url: &str) -> String {
    // The scheme's `://`: only after a scheme's name (a letter, then
    // letters, digits, `+`, `-`, `.`), which holds no `?` (one in a query
    // or a path is not the scheme's: `u:pw@h/x://y` has none).
    let scheme_end = match url.find("://") {
        Some(i) if is_scheme(&url[..i]) => i + 3,
        _ => 0,
    };
    let (scheme, rest) = url.split_at(scheme_end);
    let query = rest.find('?');
    let colon = rest.find(':');
    match (rest.rfind('@'), query) {
        (Some(at), Some(q)) if at > q => {
            if colon.is_some_and(|c| c < q) {
                // The `@` ends a password holding a `?`, or is the query's
                // with a port before it: the text cannot tell.
                let c = colon.unwrap_or(q);
                return format!("{scheme}{}:***", &rest[..c]);
            }
            // No `:` before the `?`: no password there, the query starts.
            redact_query(&url[..=scheme_end + q], &rest[q + 1..])
        }
        (Some(at), _) => {
            let (userinfo, after) = rest.split_at(at);
            let userinfo = match userinfo.find(':') {
                Some(c) => format!("{}:***", &userinfo[..c]),
                None => userinfo.to_owned(),
            };
            let head = format!("{scheme}{userinfo}");
            match after.find('?') {
                Some(q) => redact_query(&format!("{head}{}", &after[..=q]), &after[q + 1..]),
                None => format!("{head}{}", hide_fragment(after)),
            }
        }
        (None, Some(q)) => redact_query(&url[..=scheme_end + q], &rest[q + 1..]),
        (None, None) => hide_fragment(url),
    }
}

/// Whether `name` is a URL scheme's name: a letter, then letters, digits,
/// `+`, `-` or `.`.
fn is_scheme(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
}

/// `text` with what follows its first `#` (a fragment) hidden.
fn hide_fragment(text: &str) -> String {
    match text.find('#') {
        Some(i) => format!("{}#***", &text[..i]),
        None => text.to_owned(),
    }
}

/// `head` (up to and with the `?`), then `query` with every value hidden
/// but a short plain word given to one of [`URL_PARAMETERS_SHOWN`], and
/// every bare token (or key without a value) but those names.
fn redact_query(head: &str, query: &str) -> String {
    if head.contains('#') {
        // The `?` is the fragment's: all of it hidden.
        return hide_fragment(head);
    }
    // A value shown is a word: one carrying a second `?`, a `#` or a `;`
    // (`protocol=resp3?password=...`) could carry a secret along.
    let plain = |value: &str| {
        value.len() <= 32
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, value))
                if URL_PARAMETERS_SHOWN.contains(&key) && (value.is_empty() || plain(value)) =>
            {
                pair.to_owned()
            }
            Some((key, value)) if !value.is_empty() => format!("{key}=***"),
            // A bare token, or a key without a value, may be a secret
            // pasted in the wrong place.
            _ if pair.is_empty() || URL_PARAMETERS_SHOWN.contains(&pair) => pair.to_owned(),
            _ => "***".to_owned(),
        })
        .collect();
    format!("{head}{}", pairs.join("&"))
}

/// Query parameters whose values [`redact_url`] shows: the ones the
/// engine's and the Redis backend's URLs read, none of them a secret.
const URL_PARAMETERS_SHOWN: [&str; 3] = ["durability", "shards", "protocol"];

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn a_urls_password_is_never_shown() {
        for (url, shown) in [
            (
                "redis://:hunter2@127.0.0.1:6379/0",
                "redis://:***@127.0.0.1:6379/0",
            ),
            ("redis://app:hunter2@h:1", "redis://app:***@h:1"),
            (
                "redis+cluster://u:pa@ss,w/rd@h1:7000,h2:7001",
                "redis+cluster://u:***@h1:7000,h2:7001",
            ),
            ("rediss://u:hunter2@h", "rediss://u:***@h"),
            ("redis://user@h:1", "redis://user@h:1"),
            ("redis://h:1/2", "redis://h:1/2"),
            ("engine:/srv/sessions?shards=8", "engine:/srv/sessions?shards=8"),
            (
                "engine:/srv/s?durability=always&shards=2",
                "engine:/srv/s?durability=always&shards=2",
            ),
            (
                "redis://127.0.0.1:6379?password=hunter2&protocol=resp2",
                "redis://127.0.0.1:6379?password=***&protocol=resp2",
            ),
            ("redis://h:1?token=hunter2", "redis://h:1?token=***"),
            // A password holding a `?`: all after its `:` hidden.
            ("redis://u:a?b@h:1?pass=x&flag", "redis://u:***"),
            ("redis://u:p@ss@h:1?pass=x", "redis://u:***@h:1?pass=***"),
            ("engine:/tmp/x?hunter2", "engine:/tmp/x?***"),
            ("engine:/tmp/x?durability", "engine:/tmp/x?durability"),
            // An `@` in the query, no password before it: the query is
            // still the query (its value was shown whole).
            (
                "redis://cache?password=p@ss&protocol=resp3",
                "redis://cache?password=***&protocol=resp3",
            ),
            (
                "redis+unix:///run/redis.sock?pass=s3@cret",
                "redis+unix:///run/redis.sock?pass=***",
            ),
            ("redis://user@h?token=a@b", "redis://user@h?token=***"),
            // An `@` in the query with a port before it: the text cannot
            // tell a query from a password holding `?`; nothing after the
            // port's `:` is shown.
            ("redis://h:6379?user=a@b&password=hunter2", "redis://h:***"),
            ("redis://127.0.0.1:6379?password=p@ss", "redis://127.0.0.1:***"),
            ("redis://user@h:1?token=a@b", "redis://user@h:***"),
            ("redis+unix:///s.sock?pass=a:b@c", "redis+unix:///s.sock?pass=***"),
            // A `://` in the query is not the scheme's, nor one after a
            // path (the real scheme had none).
            (
                "/tmp/x?password=hunter2&next=redis://h",
                "/tmp/x?password=***&next=***",
            ),
            ("u:hunter2@h/x://y", "u:***@h/x://y"),
            ("redis:/u:hunter2@h#redis://x", "redis:***@h#***"),
            // A shown parameter's value is a plain word, or hidden.
            (
                "redis://h:6379?protocol=resp3?password=hunter2",
                "redis://h:6379?protocol=***",
            ),
            ("redis://h?shards=2#password=x", "redis://h?shards=***"),
            (
                "redis://h?durability=always;password=x",
                "redis://h?durability=***",
            ),
            (
                "engine:/d?durability=interval-100ms",
                "engine:/d?durability=interval-100ms",
            ),
            // A key without a value may be a secret; a fragment is hidden.
            ("redis://h?hunter2=", "redis://h?***"),
            ("redis://h:1/0#hunter2", "redis://h:1/0#***"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
