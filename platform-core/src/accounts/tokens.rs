//! Single-use, expiring tokens mailed to users (email verification, password reset).
//!
//! The token itself goes only into the mail; the database keeps its SHA-256, so reading the
//! table grants nothing. Redeeming marks the token used in the same statement that checks it, so
//! two concurrent redemptions cannot both succeed.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use diesel::OptionalExtension as _;
use diesel::sql_types::{BigInt, Bytea, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// What a token is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Proves the user reads mail at their address; valid 24 hours.
    VerifyEmail,
    /// Lets the user choose a new password; valid 1 hour.
    ResetPassword,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::ResetPassword => "reset_password",
        }
    }

    /// How long a token of this purpose stays valid.
    pub fn lifetime(self) -> Duration {
        match self {
            Self::VerifyEmail => Duration::from_secs(24 * 3600),
            Self::ResetPassword => Duration::from_secs(3600),
        }
    }
}

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Creates a token for `user_id` and returns it; only its hash is stored.
///
/// # Errors
///
/// Fails when the insert does.
pub async fn issue(
    conn: &mut AsyncPgConnection,
    user_id: i64,
    purpose: Purpose,
) -> Result<String, diesel::result::Error> {
    let mut bytes = [0_u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let expires_at = Utc::now()
        + chrono::Duration::from_std(purpose.lifetime())
            .unwrap_or_else(|_| chrono::Duration::hours(1));
    diesel::sql_query(
        "INSERT INTO account_tokens (user_id, purpose, token_hash, expires_at) VALUES ($1, $2, $3, $4)",
    )
    .bind::<BigInt, _>(user_id)
    .bind::<Text, _>(purpose.as_str())
    .bind::<Bytea, _>(digest(&token))
    .bind::<Timestamptz, _>(expires_at)
    .execute(conn)
    .await?;
    Ok(token)
}

#[derive(diesel::QueryableByName)]
struct Redeemed {
    #[diesel(sql_type = BigInt)]
    user_id: i64,
}

/// Returns the user of `token` if it could be redeemed now, without using it up.
///
/// # Errors
///
/// Fails when the query does.
pub async fn peek(
    conn: &mut AsyncPgConnection,
    token: &str,
    purpose: Purpose,
) -> Result<Option<i64>, diesel::result::Error> {
    let found: Option<Redeemed> = diesel::sql_query(
        "SELECT user_id FROM account_tokens \
         WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now()",
    )
    .bind::<Bytea, _>(digest(token))
    .bind::<Text, _>(purpose.as_str())
    .get_result(conn)
    .await
    .optional()?;
    Ok(found.map(|r| r.user_id))
}

/// Marks `token` used and returns its user, if it exists, has `purpose`, is unexpired and unused.
///
/// # Errors
///
/// Fails when the query does.
pub async fn redeem(
    conn: &mut AsyncPgConnection,
    token: &str,
    purpose: Purpose,
) -> Result<Option<i64>, diesel::result::Error> {
    let redeemed: Option<Redeemed> = diesel::sql_query(
        "UPDATE account_tokens SET used_at = now() \
         WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now() \
         RETURNING user_id",
    )
    .bind::<Bytea, _>(digest(token))
    .bind::<Text, _>(purpose.as_str())
    .get_result(conn)
    .await
    .optional()?;
    Ok(redeemed.map(|r| r.user_id))
}

/// Ends every unused token of `purpose` for `user_id`: once one reset token has set a password,
/// or the password changed otherwise, older reset mails must not work any more.
///
/// # Errors
///
/// Fails when the query does.
pub async fn revoke_all(
    conn: &mut AsyncPgConnection,
    user_id: i64,
    purpose: Purpose,
) -> Result<usize, diesel::result::Error> {
    diesel::sql_query(
        "UPDATE account_tokens SET used_at = now() \
         WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL",
    )
    .bind::<BigInt, _>(user_id)
    .bind::<Text, _>(purpose.as_str())
    .execute(conn)
    .await
}
