//! Server-side sessions in Redis, named by a signed cookie.
//!
//! The cookie holds only a random session id, signed with `APP_SESSION_SECRET`; the session
//! itself (which user, and its CSRF token) lives in a Redis hash under `{namespace}:session:{id}`,
//! and each user's session ids in `{namespace}:user-sessions:{user id}`, so logout removes one session and a password
//! change all of them.

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

fn session_key(namespace: &str, id: &str) -> String {
    format!("{namespace}:session:{id}")
}

fn user_key(namespace: &str, user_id: i64) -> String {
    format!("{namespace}:user-sessions:{user_id}")
}

/// 32 random bytes, base64url: session ids and CSRF tokens.
fn random_token() -> String {
    let mut bytes = [0_u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A signed-in session: whose it is, and the token its cookie-authenticated writes must carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The session's id, as the cookie names it.
    pub id: String,
    /// The user.
    pub user_id: i64,
    /// The anti-CSRF token, sent back in the `X-CSRF-Token` header.
    pub csrf_token: String,
    /// Which password the user signed in with (see [`credential_of`]).
    pub credential: String,
}

/// What a session records of the password it was signed in with: a digest of the password's
/// stored hash, so a new password (always a new hash) leaves older sessions behind.
pub fn credential_of(password_hash: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(password_hash.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// Creates a session for `user_id`, signed in with the password whose stored hash is
/// `password_hash`, with a fresh id and CSRF token.
///
/// # Errors
///
/// Fails when Redis does.
pub async fn create(
    redis: &Redis,
    namespace: &str,
    user_id: i64,
    password_hash: &str,
) -> Result<Session, RedisError> {
    let session = Session {
        id: random_token(),
        user_id,
        csrf_token: random_token(),
        credential: credential_of(password_hash),
    };
    let ttl = SESSION_TTL.as_secs();
    let key = session_key(namespace, &session.id);
    let id = &session.id;
    let mut conn = redis.get().await?;
    redis::pipe()
        .atomic()
        .hset_multiple(
            &key,
            &[
                ("user", user_id.to_string()),
                ("csrf", session.csrf_token.clone()),
                ("credential", session.credential.clone()),
            ],
        )
        .ignore()
        .expire(&key, i64::try_from(ttl).unwrap_or(i64::MAX))
        .ignore()
        .sadd(user_key(namespace, user_id), id)
        .ignore()
        .expire(user_key(namespace, user_id), i64::try_from(ttl).unwrap_or(i64::MAX))
        .ignore()
        .query_async::<()>(&mut *conn)
        .await
        .map_err(RedisError::Command)?;
    Ok(session)
}

/// Returns session `id`, if it exists, and extends its life.
///
/// # Errors
///
/// Fails when Redis does.
pub async fn find(redis: &Redis, namespace: &str, id: &str) -> Result<Option<Session>, RedisError> {
    let key = session_key(namespace, id);
    let mut conn = redis.get().await?;
    let (fields, _): (std::collections::HashMap<String, String>, bool) = redis::pipe()
        .hgetall(&key)
        .expire(&key, i64::try_from(SESSION_TTL.as_secs()).unwrap_or(i64::MAX))
        .query_async(&mut *conn)
        .await
        .map_err(RedisError::Command)?;
    let user_id = fields.get("user").and_then(|u| u.parse().ok());
    Ok(user_id.zip(fields.get("csrf")).map(|(user_id, csrf)| Session {
        id: id.to_owned(),
        user_id,
        csrf_token: csrf.clone(),
        // A session from before credentials were recorded matches no password: signed out.
        credential: fields.get("credential").cloned().unwrap_or_default(),
    }))
}

/// Ends session `id`.
///
/// # Errors
///
/// Fails when Redis does.
pub async fn delete(redis: &Redis, namespace: &str, id: &str) -> Result<(), RedisError> {
    let mut conn = redis.get().await?;
    let user: Option<i64> =
        conn.hget(session_key(namespace, id), "user").await.map_err(RedisError::Command)?;
    let mut pipe = redis::pipe();
    pipe.atomic().del(session_key(namespace, id)).ignore();
    if let Some(user) = user {
        pipe.srem(user_key(namespace, user), id).ignore();
    }
    pipe.query_async::<()>(&mut *conn).await.map_err(RedisError::Command)
}

/// Ends every session of `user_id`, as a password change must.
///
/// # Errors
///
/// Fails when Redis does.
pub async fn delete_all(redis: &Redis, namespace: &str, user_id: i64) -> Result<(), RedisError> {
    let mut conn = redis.get().await?;
    let ids: Vec<String> =
        conn.smembers(user_key(namespace, user_id)).await.map_err(RedisError::Command)?;
    let mut pipe = redis::pipe();
    pipe.atomic();
    for id in &ids {
        pipe.del(session_key(namespace, id)).ignore();
    }
    pipe.del(user_key(namespace, user_id)).ignore();
    pipe.query_async::<()>(&mut *conn).await.map_err(RedisError::Command)
}
