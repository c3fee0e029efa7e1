//! Choosing the backend at run time: [`DynSessionStore`], the
//! dyn-compatible twin of [`SessionStore`] (boxed futures, implemented for
//! every store that is `Debug`), and [`AnyStore`], a cheap handle over any
//! of them that is itself a `SessionStore`.
//!
//! `SessionStore`'s methods return `impl Future`, which keeps the engine's
//! calls free of allocation but makes the trait unusable as `dyn`. Code that
//! picks its backend from configuration holds an `AnyStore` instead: every
//! call costs one boxed future, and closures (`update`, `try_update`,
//! `get_with`, `peek_with`) are boxed or passed by reference too.
//! [`AnyStore::open`] opens the embedded engine from a URL; the Redis
//! crate's `session_redis::open_url` adds `redis://` and
//! `redis+cluster://`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, Durability, SyncScope};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::session::{Cursor, Op, Page, Session, SessionRef, Timeout, Updated};
use crate::state::{Bucket, RateDecision, SessionState, TopicCursor, TopicPage};
use crate::store::SessionStore;

/// A boxed future, as [`DynSessionStore`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The error a dyn `try_update` closure refuses with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The update closure of [`DynSessionStore::update`].
pub type UpdateFn<'a> = Box<dyn FnMut(&[u8]) -> Vec<u8> + Send + 'a>;

/// The closure of [`DynSessionStore::read_with`], called once if the read
/// finds the session.
pub type ReadFn<'a> = &'a mut (dyn FnMut(SessionRef<'_>) + Send + 'a);

/// The closure of [`DynSessionStore::try_update`].
pub type TryUpdateFn<'a> = Box<dyn FnMut(&[u8]) -> std::result::Result<Op, BoxError> + Send + 'a>;

/// [`SessionStore`] and [`SessionState`] with boxed futures, so that `dyn
/// DynSessionStore` exists. Every `SessionState` store that is also `Debug`
/// (to name itself in `AnyStore`'s `Debug`) implements it; the semantics are
/// the same.
#[allow(missing_docs)] // each method is its SessionStore namesake
pub trait DynSessionStore: Send + Sync {
    fn create<'a>(&'a self, metadata: &'a [u8], timeout: Timeout) -> BoxFuture<'a, Result<SessionId>>;
    fn insert<'a>(&'a self, id: SessionId, metadata: &'a [u8], timeout: Timeout)
        -> BoxFuture<'a, Result<()>>;
    fn put<'a>(&'a self, id: SessionId, metadata: &'a [u8], timeout: Timeout) -> BoxFuture<'a, Result<()>>;
    fn rotate<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<SessionId>>;
    fn get<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<Session>>;
    fn peek<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<Session>>;
    fn get_many<'a>(&'a self, ids: &'a [SessionId]) -> BoxFuture<'a, Vec<Result<Session>>>;
    /// `get_many_with`: `f` borrows each live session, in the order of
    /// `ids` (the store's own, not the trait's default of snapshots).
    fn read_many_with<'a>(&'a self, ids: &'a [SessionId], f: ReadFn<'a>) -> BoxFuture<'a, Vec<Result<()>>>;
    /// `get_with` (`slide`) or `peek_with`: `f` borrows the session.
    fn read_with<'a>(&'a self, id: &'a SessionId, slide: bool, f: ReadFn<'a>) -> BoxFuture<'a, Result<()>>;
    fn update<'a>(&'a self, id: &'a SessionId, f: UpdateFn<'a>) -> BoxFuture<'a, Result<Session>>;
    fn try_update<'a>(
        &'a self,
        id: &'a SessionId,
        f: TryUpdateFn<'a>,
    ) -> BoxFuture<'a, Result<std::result::Result<Updated, BoxError>>>;
    fn touch<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<()>>;
    fn delete<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<()>>;
    fn set_ttl<'a>(&'a self, id: &'a SessionId, timeout: Timeout) -> BoxFuture<'a, Result<()>>;
    fn set_lifetime<'a>(&'a self, id: &'a SessionId, lifetime: Timeout) -> BoxFuture<'a, Result<()>>;
    fn contains<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<bool>>;
    fn len(&self) -> BoxFuture<'_, Result<usize>>;
    fn is_empty(&self) -> BoxFuture<'_, Result<bool>>;
    fn list(&self, cursor: Cursor, limit: usize) -> BoxFuture<'_, Result<Page>>;
    fn cleanup_expired(&self) -> BoxFuture<'_, Result<usize>>;
    fn subscribe<'a>(&'a self, id: &'a SessionId, topic: &'a str) -> BoxFuture<'a, Result<bool>>;
    fn unsubscribe<'a>(&'a self, id: &'a SessionId, topic: &'a str) -> BoxFuture<'a, Result<bool>>;
    fn topics<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<Vec<String>>>;
    fn subscribers<'a>(
        &'a self,
        topic: &'a str,
        cursor: TopicCursor,
        limit: usize,
    ) -> BoxFuture<'a, Result<TopicPage>>;
    fn rate_limit<'a>(
        &'a self,
        id: &'a SessionId,
        bucket: Bucket,
        cost: u32,
    ) -> BoxFuture<'a, Result<RateDecision>>;
    /// What the store is, for `Debug` (`"Engine { .. }"`, a Redis address).
    fn describe(&self) -> String;
}

impl<T: SessionState + fmt::Debug> DynSessionStore for T {
    fn create<'a>(&'a self, metadata: &'a [u8], timeout: Timeout) -> BoxFuture<'a, Result<SessionId>> {
        Box::pin(SessionStore::create(self, metadata, timeout))
    }
    fn insert<'a>(
        &'a self,
        id: SessionId,
        metadata: &'a [u8],
        timeout: Timeout,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(SessionStore::insert(self, id, metadata, timeout))
    }
    fn put<'a>(&'a self, id: SessionId, metadata: &'a [u8], timeout: Timeout) -> BoxFuture<'a, Result<()>> {
        Box::pin(SessionStore::put(self, id, metadata, timeout))
    }
    fn rotate<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<SessionId>> {
        Box::pin(SessionStore::rotate(self, id))
    }
    fn get<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<Session>> {
        Box::pin(SessionStore::get(self, id))
    }
    fn peek<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<Session>> {
        Box::pin(SessionStore::peek(self, id))
    }
    fn get_many<'a>(&'a self, ids: &'a [SessionId]) -> BoxFuture<'a, Vec<Result<Session>>> {
        Box::pin(SessionStore::get_many(self, ids))
    }
    fn read_many_with<'a>(&'a self, ids: &'a [SessionId], f: ReadFn<'a>) -> BoxFuture<'a, Vec<Result<()>>> {
        Box::pin(SessionStore::get_many_with(self, ids, f))
    }
    fn read_with<'a>(&'a self, id: &'a SessionId, slide: bool, f: ReadFn<'a>) -> BoxFuture<'a, Result<()>> {
        if slide {
            Box::pin(SessionStore::get_with(self, id, f))
        } else {
            Box::pin(SessionStore::peek_with(self, id, f))
        }
    }
    fn update<'a>(&'a self, id: &'a SessionId, f: UpdateFn<'a>) -> BoxFuture<'a, Result<Session>> {
        Box::pin(SessionStore::update(self, id, f))
    }
    fn try_update<'a>(
        &'a self,
        id: &'a SessionId,
        f: TryUpdateFn<'a>,
    ) -> BoxFuture<'a, Result<std::result::Result<Updated, BoxError>>> {
        Box::pin(SessionStore::try_update(self, id, f))
    }
    fn touch<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<()>> {
        Box::pin(SessionStore::touch(self, id))
    }
    fn delete<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<()>> {
        Box::pin(SessionStore::delete(self, id))
    }
    fn set_ttl<'a>(&'a self, id: &'a SessionId, timeout: Timeout) -> BoxFuture<'a, Result<()>> {
        Box::pin(SessionStore::set_ttl(self, id, timeout))
    }
    fn set_lifetime<'a>(&'a self, id: &'a SessionId, lifetime: Timeout) -> BoxFuture<'a, Result<()>> {
        Box::pin(SessionStore::set_lifetime(self, id, lifetime))
    }
    fn contains<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<bool>> {
        Box::pin(SessionStore::contains(self, id))
    }
    fn len(&self) -> BoxFuture<'_, Result<usize>> {
        Box::pin(SessionStore::len(self))
    }
    fn is_empty(&self) -> BoxFuture<'_, Result<bool>> {
        Box::pin(SessionStore::is_empty(self))
    }
    fn list(&self, cursor: Cursor, limit: usize) -> BoxFuture<'_, Result<Page>> {
        Box::pin(SessionStore::list(self, cursor, limit))
    }
    fn cleanup_expired(&self) -> BoxFuture<'_, Result<usize>> {
        Box::pin(SessionStore::cleanup_expired(self))
    }
    fn subscribe<'a>(&'a self, id: &'a SessionId, topic: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(SessionState::subscribe(self, id, topic))
    }
    fn unsubscribe<'a>(&'a self, id: &'a SessionId, topic: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(SessionState::unsubscribe(self, id, topic))
    }
    fn topics<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(SessionState::topics(self, id))
    }
    fn subscribers<'a>(
        &'a self,
        topic: &'a str,
        cursor: TopicCursor,
        limit: usize,
    ) -> BoxFuture<'a, Result<TopicPage>> {
        Box::pin(SessionState::subscribers(self, topic, cursor, limit))
    }
    fn rate_limit<'a>(
        &'a self,
        id: &'a SessionId,
        bucket: Bucket,
        cost: u32,
    ) -> BoxFuture<'a, Result<RateDecision>> {
        Box::pin(SessionState::rate_limit(self, id, bucket, cost))
    }
    fn describe(&self) -> String {
        format!("{self:?}")
    }
}

/// Any store behind one type, chosen at run time: a cheap `Clone` handle
/// (an `Arc`) that implements [`SessionStore`] by forwarding to a
/// [`DynSessionStore`]. One boxed future per call.
#[derive(Clone)]
pub struct AnyStore {
    inner: Arc<dyn DynSessionStore>,
}

impl fmt::Debug for AnyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AnyStore({})", self.inner.describe())
    }
}

impl AnyStore {
    /// Wraps a store.
    pub fn new(store: impl SessionState + fmt::Debug + 'static) -> Self {
        Self {
            inner: Arc::new(store),
        }
    }

    /// The store behind the handle.
    #[must_use]
    pub fn inner(&self) -> &dyn DynSessionStore {
        &*self.inner
    }

    /// Opens the embedded engine a URL names:
    ///
    /// - `memory:` an in-memory engine with the default configuration
    ///   (`?shards=<n>` too; a durability is refused: nothing is kept);
    /// - `engine:<dir>` (or `engine://<dir>` with `<dir>` absolute: an
    ///   empty host) the engine persisted in `<dir>`, percent-escapes
    ///   decoded, a relative `<dir>` from the working directory (a host,
    ///   a fragment or a `~` is refused),
    ///   with `?durability=always|never|<n>ms` (default: the engine's, a
    ///   flush every second), `&shards=<n>` and `&sync=logs|filesystem`
    ///   ([`SyncScope`](crate::SyncScope); default `logs`), each at most
    ///   once.
    ///
    /// `session_redis::open_url` adds the Redis schemes.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for another scheme or a bad parameter, and
    /// the errors of [`Engine::open`].
    pub fn open(url: &str) -> Result<Self> {
        Ok(Self::new(Engine::open(engine_config(url)?)?))
    }

    /// A borrowing read across the dyn boundary: the caller's `FnOnce`
    /// and its result wait here, the boxed call gets a `FnMut` over them.
    async fn read_with<R, F>(&self, id: &SessionId, slide: bool, f: F) -> Result<R>
    where
        F: FnOnce(SessionRef<'_>) -> R + Send,
        R: Send,
    {
        let mut f = Some(f);
        let mut out = None;
        self.inner
            .read_with(id, slide, &mut |session| {
                if let Some(f) = f.take() {
                    out = Some(f(session));
                }
            })
            .await?;
        Ok(out.expect("a read that found the session called its closure"))
    }
}

/// The directory an `engine:` URL's path names: `/<path>`, `///<path>` (an
/// empty host) or a path relative to the working directory, its
/// percent-escapes decoded. A host (`//name/...`), a fragment, a `~` (no
/// shell expands it here), the file system's root or a bad escape is
/// refused: each would name a directory nobody meant, which the engine
/// would create, empty (or fill, for the root).
fn engine_dir(path: &str) -> std::result::Result<std::path::PathBuf, String> {
    let path = match path.strip_prefix("//") {
        Some(rest) if rest.starts_with('/') => rest,
        Some(_) => {
            // Not echoed: a user and password may come before the host,
            // and one holding a `/` or `?` cannot be told from it here.
            return Err(
                "engine://<host>/... names a host; the engine keeps its data on this machine: \
                        engine:/<dir> or engine:///<dir>"
                    .into(),
            );
        }
        None => path,
    };
    if path.is_empty() {
        return Err("engine: needs a data directory (engine:/var/lib/sessions)".into());
    }
    if path.contains('#') {
        return Err("a fragment (#...) has no meaning in a store URL (write a # in a name as %23)".into());
    }
    // A URL read with its newline, or written `engine: /dir`, names another
    // directory (relative, or with the newline in its name), which the
    // engine would create, empty.
    let mut chars = path.chars();
    let ends = [chars.next(), chars.next_back()];
    if ends.into_iter().flatten().any(char::is_whitespace) {
        return Err(
            "the data directory starts or ends with white space (a space meant in a name is written %20)"
                .into(),
        );
    }
    if path.chars().any(char::is_control) {
        return Err(
            "the data directory holds a control character (one meant in a name is written %XX)".into(),
        );
    }
    let dir = decode_path(path)?;
    if dir.to_string_lossy().starts_with('~') {
        return Err("~ is not expanded in a store URL: give the directory's full path".into());
    }
    if dir.has_root() && dir.parent().is_none() {
        return Err("the file system's root is not a data directory: engine:/<dir>".into());
    }
    // `Path::parent` of `/..` is `/`: a `..` could lead to the root past
    // the check above, or anywhere else the URL does not show.
    if dir.components().any(|c| c == std::path::Component::ParentDir) {
        return Err("a data directory is named without `..`: give the directory's own path".into());
    }
    Ok(dir)
}

/// `path` with its percent-escapes decoded, as a path.
fn decode_path(path: &str) -> std::result::Result<std::path::PathBuf, String> {
    let mut bytes = Vec::with_capacity(path.len());
    let mut rest = path.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = tail
                .get(..2)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("a bad percent-escape at {:?}", String::from_utf8_lossy(rest)))?;
            bytes.push(hex);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes)
        .map(std::path::PathBuf::from)
        .map_err(|_| "the decoded path is not UTF-8".into())
}

/// The engine configuration an `engine:` or `memory:` URL describes.
///
/// # Errors
/// [`Error::InvalidConfig`] naming what is wrong.
pub fn engine_config(url: &str) -> Result<Config> {
    let bad =
        |why: String| Error::InvalidConfig(format!("store URL {:?}: {why}", crate::error::redact_url(url)));
    let (scheme, rest) = url
        .split_once(':')
        .ok_or_else(|| bad("no scheme (memory:, engine:<dir>)".into()))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut config = Config::default();
    // Schemes are case-insensitive, as in every URL.
    let scheme = scheme.to_ascii_lowercase();
    let scheme = scheme.as_str();
    match scheme {
        "memory" if path.is_empty() => {}
        "memory" => return Err(bad("memory: takes no path".into())),
        "engine" => config = config.data_dir(engine_dir(path).map_err(bad)?),
        other => {
            return Err(bad(format!(
                "unknown scheme {other:?}: memory:, engine:<dir> (redis:// and redis+cluster:// through session_redis::open_url)"
            )))
        }
    }
    let mut seen: Vec<&str> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            // Not echoed: a stray token may be a secret pasted in the
            // wrong place.
            .ok_or_else(|| {
                bad("a query parameter is not key=value (durability=..., shards=..., sync=...)".into())
            })?;
        if seen.contains(&key) {
            return Err(bad(format!("{key} is given twice")));
        }
        seen.push(key);
        config = match key {
            "durability" if scheme == "memory" => {
                return Err(bad(
                    "durability applies only with a data directory (engine:<dir>); memory: keeps nothing"
                        .into(),
                ))
            }
            "durability" => config.durability(match value {
                "always" => Durability::Always,
                "never" => Durability::Never,
                ms => Durability::Interval(Duration::from_millis(
                    ms.strip_suffix("ms")
                        .and_then(|n| n.parse().ok())
                        .ok_or_else(|| bad(format!("durability={ms}: always, never or <n>ms")))?,
                )),
            }),
            "shards" => config.shards(
                value
                    .parse()
                    .map_err(|e| bad(format!("shards={value}: a number of shards ({e})")))?,
            ),
            "sync" if scheme == "memory" => {
                return Err(bad(
                    "sync applies only with a data directory (engine:<dir>); memory: syncs nothing".into(),
                ))
            }
            "sync" => config.sync_scope(match value {
                "logs" => SyncScope::Logs,
                "filesystem" => SyncScope::FileSystem,
                other => return Err(bad(format!("sync={other}: logs or filesystem"))),
            }),
            other => {
                return Err(bad(format!(
                    "unknown parameter {other:?} (durability, shards, sync)"
                )))
            }
        };
    }
    Ok(config)
}

impl SessionStore for AnyStore {
    async fn create(&self, metadata: &[u8], timeout: Timeout) -> Result<SessionId> {
        self.inner.create(metadata, timeout).await
    }
    async fn insert(&self, id: SessionId, metadata: &[u8], timeout: Timeout) -> Result<()> {
        self.inner.insert(id, metadata, timeout).await
    }
    async fn put(&self, id: SessionId, metadata: &[u8], timeout: Timeout) -> Result<()> {
        self.inner.put(id, metadata, timeout).await
    }
    async fn rotate(&self, id: &SessionId) -> Result<SessionId> {
        self.inner.rotate(id).await
    }
    async fn get(&self, id: &SessionId) -> Result<Session> {
        self.inner.get(id).await
    }
    async fn peek(&self, id: &SessionId) -> Result<Session> {
        self.inner.peek(id).await
    }
    async fn get_many(&self, ids: &[SessionId]) -> Vec<Result<Session>> {
        self.inner.get_many(ids).await
    }
    async fn get_many_with<R, F>(&self, ids: &[SessionId], mut f: F) -> Vec<Result<R>>
    where
        F: FnMut(SessionRef<'_>) -> R + Send,
        R: Send,
    {
        // `f`'s values cannot cross the dyn boundary: they wait here, one
        // per live session in the order of `ids`, as the store lends them.
        let mut values = Vec::with_capacity(ids.len());
        let results = self
            .inner
            .read_many_with(ids, &mut |session| values.push(f(session)))
            .await;
        let mut values = values.into_iter();
        results
            .into_iter()
            .map(|result| result.map(|()| values.next().expect("the store lends each live session once")))
            .collect()
    }
    async fn get_with<R, F>(&self, id: &SessionId, f: F) -> Result<R>
    where
        F: FnOnce(SessionRef<'_>) -> R + Send,
        R: Send,
    {
        self.read_with(id, true, f).await
    }
    async fn peek_with<R, F>(&self, id: &SessionId, f: F) -> Result<R>
    where
        F: FnOnce(SessionRef<'_>) -> R + Send,
        R: Send,
    {
        self.read_with(id, false, f).await
    }
    async fn update<F>(&self, id: &SessionId, f: F) -> Result<Session>
    where
        F: FnMut(&[u8]) -> Vec<u8> + Send,
    {
        self.inner.update(id, Box::new(f)).await
    }
    async fn try_update<F, E>(&self, id: &SessionId, mut f: F) -> Result<std::result::Result<Updated, E>>
    where
        F: FnMut(&[u8]) -> std::result::Result<Op, E> + Send,
        E: Send,
    {
        // The caller's error type cannot cross the dyn boundary: it waits
        // here, and the boxed closure refuses with a marker.
        let mut refused = None;
        let outcome = self
            .inner
            .try_update(
                id,
                Box::new(|m| match f(m) {
                    Ok(op) => Ok(op),
                    Err(e) => {
                        refused = Some(e);
                        Err(Box::new(Refused) as BoxError)
                    }
                }),
            )
            .await?;
        Ok(match outcome {
            Ok(updated) => Ok(updated),
            Err(_) => Err(refused.expect("the closure refused")),
        })
    }
    async fn touch(&self, id: &SessionId) -> Result<()> {
        self.inner.touch(id).await
    }
    async fn delete(&self, id: &SessionId) -> Result<()> {
        self.inner.delete(id).await
    }
    async fn set_ttl(&self, id: &SessionId, timeout: Timeout) -> Result<()> {
        self.inner.set_ttl(id, timeout).await
    }
    async fn set_lifetime(&self, id: &SessionId, lifetime: Timeout) -> Result<()> {
        self.inner.set_lifetime(id, lifetime).await
    }
    async fn contains(&self, id: &SessionId) -> Result<bool> {
        self.inner.contains(id).await
    }
    async fn len(&self) -> Result<usize> {
        self.inner.len().await
    }
    async fn is_empty(&self) -> Result<bool> {
        self.inner.is_empty().await
    }
    async fn list(&self, cursor: Cursor, limit: usize) -> Result<Page> {
        self.inner.list(cursor, limit).await
    }
    async fn cleanup_expired(&self) -> Result<usize> {
        self.inner.cleanup_expired().await
    }
}

impl SessionState for AnyStore {
    async fn subscribe(&self, id: &SessionId, topic: &str) -> Result<bool> {
        self.inner.subscribe(id, topic).await
    }
    async fn unsubscribe(&self, id: &SessionId, topic: &str) -> Result<bool> {
        self.inner.unsubscribe(id, topic).await
    }
    async fn topics(&self, id: &SessionId) -> Result<Vec<String>> {
        self.inner.topics(id).await
    }
    async fn subscribers(&self, topic: &str, cursor: TopicCursor, limit: usize) -> Result<TopicPage> {
        self.inner.subscribers(topic, cursor, limit).await
    }
    async fn rate_limit(&self, id: &SessionId, bucket: Bucket, cost: u32) -> Result<RateDecision> {
        self.inner.rate_limit(id, bucket, cost).await
    }
}

/// The marker a forwarded `try_update` closure refuses with.
#[derive(Debug)]
struct Refused;

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the closure refused")
    }
}

impl std::error::Error for Refused {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store whose `get_many` must not be called: `get_many_with`
    /// through `AnyStore` reaches its `read_many_with` (it took the trait's
    /// default, snapshots from `get_many`, whatever the store).
    #[derive(Debug)]
    struct Lends(Session);

    impl DynSessionStore for Lends {
        fn create<'a>(&'a self, _: &'a [u8], _: Timeout) -> BoxFuture<'a, Result<SessionId>> {
            unreachable!()
        }
        fn insert<'a>(&'a self, _: SessionId, _: &'a [u8], _: Timeout) -> BoxFuture<'a, Result<()>> {
            unreachable!()
        }
        fn put<'a>(&'a self, _: SessionId, _: &'a [u8], _: Timeout) -> BoxFuture<'a, Result<()>> {
            unreachable!()
        }
        fn rotate<'a>(&'a self, _: &'a SessionId) -> BoxFuture<'a, Result<SessionId>> {
            unreachable!()
        }
        fn get<'a>(&'a self, _: &'a SessionId) -> BoxFuture<'a, Result<Session>> {
            unreachable!()
        }
        fn peek<'a>(&'a self, _: &'a SessionId) -> BoxFuture<'a, Result<Session>> {
            unreachable!()
        }
        fn get_many<'a>(&'a self, _: &'a [SessionId]) -> BoxFuture<'a, Vec<Result<Session>>> {
            unreachable!("get_many_with took the snapshots' way")
        }
        fn read_many_with<'a>(
            &'a self,
            ids: &'a [SessionId],
            f: ReadFn<'a>,
        ) -> BoxFuture<'a, Vec<Result<()>>> {
            Box::pin(async move {
                ids.iter()
                    .map(|id| {
                        if *id == self.0.id() {
                            f(self.0.view());
                            Ok(())
                        } else {
                            Err(Error::NotFound)
                        }
                    })
                    .collect()
            })
        }
        fn read_with<'a>(&'a self, _: &'a SessionId, _: bool, _: ReadFn<'a>) -> BoxFuture<'a, Result<()>> {
            unreachable!()
        }
        fn update<'a>(&'a self, _: &'a SessionId, _: UpdateFn<'a>) -> BoxFuture<'a, Result<Session>> {
            unreachable!()
        }
        fn try_update<'a>(
            &'a self,
            _: &'a SessionId,
            _: TryUpdateFn<'a>,
        ) -> BoxFuture<'a, Result<std::result::Result<Updated, BoxError>>> {
            unreachable!()
        }
        fn touch<'a>(&'a self, _: &'a SessionId) -> BoxFuture<'a, Result<()>> {
            unreachable!()
        }
        fn delete<'a>(&'a self, _: &'a SessionId) -> BoxFuture<'a, Result<()>> {
            unreachable!()
        }
        fn set_ttl<'a>(&'a self, _: &'a SessionId, _: Timeout) -> BoxFuture<'a, Result<()>> {
            unreachable!()
        }
        fn set_lifetime<'a>(&'a self, _: &'a SessionId, _: Timeout) -> BoxFuture<'a, Result<()>> {
            unreachable!()
        }
        fn contains<'a>(&'a self, _: &'a SessionId) -> BoxFuture<'a, Result<bool>> {
            unreachable!()
        }
        fn len(&self) -> BoxFuture<'_, Result<usize>> {
            unreachable!()
        }
        fn is_empty(&self) -> BoxFuture<'_, Result<bool>> {
            unreachable!()
        }
        fn list(&self, _: Cursor, _: usize) -> BoxFuture<'_, Result<Page>> {
            unreachable!()
        }
        fn cleanup_expired(&self) -> BoxFuture<'_, Result<usize>> {
            unreachable!()
        }
        fn subscribe<'a>(&'a self, _: &'a SessionId, _: &'a str) -> BoxFuture<'a, Result<bool>> {
            unreachable!()
        }
        fn unsubscribe<'a>(&'a self, _: &'a SessionId, _: &'a str) -> BoxFuture<'a, Result<bool>> {
            unreachable!()
        }
        fn topics<'a>(&'a self, _: &'a SessionId) -> BoxFuture<'a, Result<Vec<String>>> {
            unreachable!()
        }
        fn subscribers<'a>(
            &'a self,
            _: &'a str,
            _: TopicCursor,
            _: usize,
        ) -> BoxFuture<'a, Result<TopicPage>> {
            unreachable!()
        }
        fn rate_limit<'a>(
            &'a self,
            _: &'a SessionId,
            _: Bucket,
            _: u32,
        ) -> BoxFuture<'a, Result<RateDecision>> {
            unreachable!()
        }
        fn describe(&self) -> String {
            "Lends".into()
        }
    }

    #[test]
    fn get_many_with_reaches_the_stores_own() {
        let engine = crate::Engine::open(crate::Config::default()).unwrap();
        let id = engine.create(b"lent", Timeout::from_secs(60)).unwrap();
        let session = engine.peek(&id).unwrap();
        let any = AnyStore {
            inner: Arc::new(Lends(session)),
        };
        let missing = SessionId::from_bytes([7; 16]);
        let ids = [missing, id, id];
        let mut read = std::pin::pin!(any.get_many_with(&ids, |s| s.metadata().len()));
        let std::task::Poll::Ready(read) = read
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
        else {
            panic!("ready at once")
        };
        assert!(matches!(read[0], Err(Error::NotFound)), "{read:?}");
        assert_eq!(read[1].as_ref().ok(), Some(&4));
        assert_eq!(read[2].as_ref().ok(), Some(&4));
    }
}
