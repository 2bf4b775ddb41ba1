//! Server-side sessions in Redis, named by a signed cookie.
//!
//! The cookie holds only a random session id, signed with `APP_SESSION_SECRET`; the session
//! itself (which user) lives in Redis under `session:{id}`, and each user's session ids in
//! `user-sessions:{user id}`, so logout removes one session and a password change all of them.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use redis::AsyncCommands as _;

use crate::redis::{Redis, RedisError};

/// The session cookie's name.
pub const COOKIE_NAME: &str = "platform_session";
/// How long a session lives without being used.
pub const SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

fn session_key(id: &str) -> String {
    format!("session:{id}")
}

fn user_key(user_id: i64) -> String {
    format!("user-sessions:{user_id}")
}

/// Creates a session for `user_id` and returns its id: 32 random bytes, base64url.
///
/// # Errors
///
/// Fails when Redis does.
pub async fn create(redis: &Redis, user_id: i64) -> Result<String, RedisError> {
    let mut bytes = [0_u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let id = URL_SAFE_NO_PAD.encode(bytes);
    let ttl = SESSION_TTL.as_secs();
    let mut conn = redis.get().await?;
    redis::pipe()
        .atomic()
        .set_ex(session_key(&id), user_id, ttl)
        .ignore()
        .sadd(user_key(user_id), &id)
        .ignore()
        .expire(user_key(user_id), i64::try_from(ttl).unwrap_or(i64::MAX))
        .ignore()
        .query_async::<()>(&mut *conn)
        .await
        .map_err(RedisError::Command)?;
    Ok(id)
}

/// Returns the user of session `id`, if it exists, and extends its life.
///
/// # Errors
///
/// Fails when Redis does.
pub async fn user_of(redis: &Redis, id: &str) -> Result<Option<i64>, RedisError> {
    let mut conn = redis.get().await?;
    let user: Option<i64> = redis::cmd("GETEX")
        .arg(session_key(id))
        .arg("EX")
        .arg(SESSION_TTL.as_secs())
        .query_async(&mut *conn)
        .await
        .map_err(RedisError::Command)?;
    Ok(user)
}

/// Ends session `id`.
///
/// # Errors
///
/// Fails when Redis does.
pub async fn delete(redis: &Redis, id: &str) -> Result<(), RedisError> {
    let mut conn = redis.get().await?;
    let user: Option<i64> = conn.get(session_key(id)).await.map_err(RedisError::Command)?;
    let mut pipe = redis::pipe();
    pipe.atomic().del(session_key(id)).ignore();
    if let Some(user) = user {
        pipe.srem(user_key(user), id).ignore();
    }
    pipe.query_async::<()>(&mut *conn).await.map_err(RedisError::Command)
}

/// Ends every session of `user_id`, as a password change must.
///
/// # Errors
///
/// Fails when Redis does.
pub async fn delete_all(redis: &Redis, user_id: i64) -> Result<(), RedisError> {
    let mut conn = redis.get().await?;
    let ids: Vec<String> = conn.smembers(user_key(user_id)).await.map_err(RedisError::Command)?;
    let mut pipe = redis::pipe();
    pipe.atomic();
    for id in &ids {
        pipe.del(session_key(id)).ignore();
    }
    pipe.del(user_key(user_id)).ignore();
    pipe.query_async::<()>(&mut *conn).await.map_err(RedisError::Command)
}
