//! Counting failed attempts in Redis, to slow down password guessing.

use std::time::Duration;

use crate::redis::{Redis, RedisError};

/// At most `max` failures per `window`, counted from the first failure.
#[derive(Clone, Copy, Debug)]
pub struct Limit {
    /// Failures allowed within the window.
    pub max: u32,
    /// How long failures are remembered.
    pub window: Duration,
}

/// Failed logins allowed per account: 5 per 15 minutes.
pub const PER_ACCOUNT: Limit = Limit { max: 5, window: Duration::from_secs(15 * 60) };
/// Failed logins allowed per client address: 30 per 15 minutes.
pub const PER_ADDRESS: Limit = Limit { max: 30, window: Duration::from_secs(15 * 60) };

/// Returns how long to wait when `key` has used up `limit`, or `None` when attempts may go on.
///
/// # Errors
///
/// Fails when Redis does.
pub async fn blocked_for(
    redis: &Redis,
    key: &str,
    limit: Limit,
) -> Result<Option<Duration>, RedisError> {
    let mut conn = redis.get().await?;
    let (count, ttl): (Option<u32>, i64) = redis::pipe()
        .get(key)
        .ttl(key)
        .query_async(&mut *conn)
        .await
        .map_err(RedisError::Command)?;
    Ok(match count {
        Some(count) if count >= limit.max => {
            Some(Duration::from_secs(u64::try_from(ttl.max(1)).unwrap_or(1)))
        }
        _ => None,
    })
}

/// Counts one failure against `key`; the window starts at its first failure.
///
/// # Errors
///
/// Fails when Redis does.
pub async fn record_failure(redis: &Redis, key: &str, limit: Limit) -> Result<(), RedisError> {
    let mut conn = redis.get().await?;
    redis::pipe()
        .atomic()
        .incr(key, 1)
        .ignore()
        .cmd("EXPIRE")
        .arg(key)
        .arg(limit.window.as_secs())
        .arg("NX")
        .ignore()
        .query_async::<()>(&mut *conn)
        .await
        .map_err(RedisError::Command)
}

/// Forgets the failures counted against `key`.
///
/// # Errors
///
/// Fails when Redis does.
pub async fn reset(redis: &Redis, key: &str) -> Result<(), RedisError> {
    let mut conn = redis.get().await?;
    redis::cmd("DEL").arg(key).query_async::<()>(&mut *conn).await.map_err(RedisError::Command)
}
