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

/// Password-reset mails per account: 3 per hour.
pub const RESETS_PER_ACCOUNT: Limit = Limit { max: 3, window: Duration::from_secs(3600) };
/// Password-reset and registration requests per client address: 10 per hour.
pub const MAILS_PER_ADDRESS: Limit = Limit { max: 10, window: Duration::from_secs(3600) };

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

/// Counts an attempt against every key of `limits` in one atomic step, before its secret is
/// checked, so that simultaneous attempts cannot all pass a check none of them has counted yet.
/// Each window starts at its key's first attempt. Returns how long to wait when any key is over
/// its limit (the attempt is then not to be tried), else `None`.
///
/// A successful attempt gives its count back with [`attempt_succeeded`].
///
/// # Errors
///
/// Fails when Redis does.
pub async fn count_attempt(
    redis: &Redis,
    limits: &[(&str, Limit)],
) -> Result<Option<Duration>, RedisError> {
    // KEYS: the counters; ARGV: each one's limit and window, in pairs.
    const SCRIPT: &str = r"
        local wait = 0
        for i, key in ipairs(KEYS) do
          local count = redis.call('INCR', key)
          if redis.call('TTL', key) < 0 then redis.call('EXPIRE', key, ARGV[2 * i]) end
          if count > tonumber(ARGV[2 * i - 1]) then
            wait = math.max(wait, redis.call('TTL', key), 1)
          end
        end
        return wait
    ";
    let script = redis::Script::new(SCRIPT);
    let mut invocation = script.prepare_invoke();
    for (key, limit) in limits {
        invocation.key(*key).arg(limit.max).arg(limit.window.as_secs().max(1));
    }
    let mut conn = redis.get().await?;
    let wait: u64 = invocation.invoke_async(&mut *conn).await.map_err(RedisError::Command)?;
    Ok((wait > 0).then(|| Duration::from_secs(wait)))
}

/// After [`count_attempt`] for an attempt that succeeded: `account` starts over, and the attempt
/// is taken off `address` (a client address signing in often is never limited for it).
///
/// # Errors
///
/// Fails when Redis does.
pub async fn attempt_succeeded(
    redis: &Redis,
    account: &str,
    address: &str,
) -> Result<(), RedisError> {
    const SCRIPT: &str = r"
        redis.call('DEL', KEYS[1])
        if redis.call('GET', KEYS[2]) then redis.call('DECR', KEYS[2]) end
        return 0
    ";
    let mut conn = redis.get().await?;
    redis::Script::new(SCRIPT)
        .key(account)
        .key(address)
        .invoke_async::<i64>(&mut *conn)
        .await
        .map(drop)
        .map_err(RedisError::Command)
}

/// Takes one attempt off `key`, if it is still counted.
///
/// # Errors
///
/// Fails when Redis does.
pub async fn give_back(redis: &Redis, key: &str) -> Result<(), RedisError> {
    const SCRIPT: &str = r"
        if redis.call('GET', KEYS[1]) then redis.call('DECR', KEYS[1]) end
        return 0
    ";
    let mut conn = redis.get().await?;
    redis::Script::new(SCRIPT)
        .key(key)
        .invoke_async::<i64>(&mut *conn)
        .await
        .map(drop)
        .map_err(RedisError::Command)
}
