//! Every bound of this crate, with its reason.

/// Sessions asked of the store per page of a fan-out
/// ([`McpSessions::notify_resource_updated`](crate::McpSessions::notify_resource_updated)):
/// one page is one store call (one round trip on Redis), and its ids are
/// held at once (16 bytes each: 16 KiB a page).
pub const FANOUT_PAGE: usize = 1_024;

/// Pages one fan-out reads at most: 1,024 pages of 1,024 is a million
/// subscribers, far past any one resource's; the bound turns a listing that
/// never ends (a backend bug) into an error instead of a loop.
pub const FANOUT_PAGES_MAX: usize = 1_024;

/// How long a fan-out waits for one client served here to take a
/// notification (rmcp's send completes once the session's worker has
/// queued it for the client's stream, at once for a client reading it):
/// a client that stopped reading (its stream's buffer full) is counted as
/// not delivered after this, and holds up no other (they are sent at once,
/// up to [`SENDS_IN_FLIGHT_MAX`]).
pub const NOTIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Clients remembered for fan-outs (`McpSessions::register_peer`) at
/// which a registration first drops those whose worker has ended; after
/// that, each time the count doubles. A scan of the map each time it
/// doubles costs a registration O(1) on average, and at most twice as many
/// clients are remembered as were ever served at once.
pub const PEERS_PRUNE_MIN: usize = 64;

/// Sends one fan-out has under way at once, across its pages (one task
/// each, holding the client's handle and the notification: some hundred
/// bytes). A stalled client holds one of them for [`NOTIFY_TIMEOUT`]
/// while the next pages are read and sent to, so up to this many stalled
/// clients, wherever they fall, hold the fan-out up by one timeout in all;
/// each further this many, one timeout more. Pages waited for their own
/// sends before: a stalled client on each of a hundred pages took a hundred
/// timeouts.
pub const SENDS_IN_FLIGHT_MAX: usize = 1_024;

/// The default touch interval is the session timeout divided by this: a
/// client whose requests are less than three quarters of the timeout apart
/// is never expired (see the crate docs, "Touch coalescing").
pub const TOUCH_INTERVAL_DIVISOR: u64 = 4;

/// After a touch by an open stream's task fails, the task tries again
/// after the touch interval divided by this: often enough that a store
/// back from a short outage is touched well before the session's timeout,
/// rarely enough not to hammer one that is down.
pub const HOLD_RETRIES_PER_INTERVAL: u32 = 8;

/// How long a request for a session whose worker is being restored here
/// waits for that restore (rmcp's replayed handshake) before it is answered
/// "not here" as if none were under way: far longer than a restore takes
/// (one store read and the handshake in process), and a bound for one that
/// was abandoned (its request cancelled between the worker's start and the
/// replayed `notifications/initialized`), whose worker otherwise stays
/// until `local_keep_alive` ends it.
pub const RESTORE_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// After [`RESTORE_WAIT_MAX`] has closed an abandoned restore's worker, how
/// long to wait for that worker's task to report its close (rmcp's worker
/// task calls `close_session` as it ends, within a few task hops) before
/// ending the restore's mark without it (no task was started).
pub const RESTORE_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The first byte of a stored record (the layout of `record.rs`); a record
/// with another is refused, not guessed at.
pub const RECORD_VERSION: u8 = 1;

/// Ids drawn for one new session before giving up: a taken 128-bit id is
/// already a broken random source, three in a row a certain one.
pub const ID_DRAWS_MAX: usize = 3;

/// After a `DELETE` whose store delete failed (or the write of a session's
/// restore state, after its handshake, that the store failed), how long to
/// wait before trying again (doubling up to [`DELETE_RETRY_MAX`]), until
/// the store has it, the session is gone, or its timeout has passed.
pub const DELETE_RETRY_MIN: std::time::Duration = std::time::Duration::from_millis(100);

/// Most sessions whose failed delete this process retries in the
/// background at once (a client's `DELETE`s of any ids during a store
/// outage would otherwise grow its tasks without bound). Past it a failed
/// delete is not retried: its error stands, and the store ends the session
/// on its timeout; the ended sessions tracked are bounded with it.
pub const DELETE_RETRIES_MAX: usize = 10_000;

/// Most sessions whose failed restore-state write this process retries in
/// the background at once, for the same reason as [`DELETE_RETRIES_MAX`]
/// (`initialize` needs no credentials). Past it a failed write is not
/// retried: its error stands, and the session cannot be restored in
/// another process until a later write of its state succeeds.
pub const STATE_RETRIES_MAX: usize = 10_000;

/// How long a process remembers a session a client deleted through it, so
/// that a restore of that session already under way here (rmcp's `load`
/// found it just before the `DELETE`) does not start a worker for it:
/// far longer than the gap between a restore's `load` and its
/// `restore_session` (one store read).
pub const DELETED_REMEMBERED: std::time::Duration = std::time::Duration::from_secs(60);

/// Most deleted sessions remembered at once (a client's `DELETE`s of any
/// ids). Past it the expired ones are dropped, and if none had expired a
/// new one is not remembered: for that one, a restore racing its delete
/// here can serve it until its next touch finds it gone.
pub const DELETED_REMEMBERED_MAX: usize = 10_000;

/// The longest wait between two tries of a failed delete.
pub const DELETE_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// The deepest nesting of a stored record's JSON (the record's own object
/// counts one): serde_json reads no deeper (its recursion limit of 128),
/// so a record nested deeper is refused when written rather than stored
/// unreadable.
pub const JSON_DEPTH_MAX: usize = 127;
