//! Opening any backend from a URL: the embedded engine's (`memory:`,
//! `engine:<dir>`, see [`AnyStore::open`]) and Redis' (`redis://`,
//! `redis+cluster://`, see [`RedisConfig::from_url`]).

use session_engine::{AnyStore, Result};

use crate::config::RedisConfig;
use crate::store::RedisStore;

/// Opens the store a URL names, behind one type: `memory:`,
/// `engine:<dir>[?durability=always|never|<n>ms&shards=<n>]`,
/// `redis://host:port[/db]` or `redis+cluster://host:port,host:port`
/// (Redis with the defaults of [`RedisConfig`]; connect with
/// [`RedisStore::connect`] and wrap it in [`AnyStore::new`] to set more).
///
/// # Errors
/// `InvalidConfig` for a URL neither backend reads; the errors of opening
/// the engine or connecting to Redis.
pub async fn open_url(url: &str) -> Result<AnyStore> {
    let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
    if ["redis", "rediss", "redis+cluster", "rediss+cluster"]
        .iter()
        .any(|s| scheme.eq_ignore_ascii_case(s))
    {
        let store = RedisStore::connect(RedisConfig::from_url(url)?).await?;
        return Ok(AnyStore::new(store));
    }
    AnyStore::open(url)
}
