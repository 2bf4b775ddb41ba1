//! Personal access tokens: `Authorization: Bearer` for the API, and a password for git over HTTP.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use diesel::OptionalExtension as _;
use diesel::sql_types::{Array, BigInt, Bytea, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Every token starts with this, so leaked tokens are easy to recognise and scan for.
pub const TOKEN_PREFIX: &str = "plat_";

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Scope {
    /// Read repositories the user can read (clone, fetch, API reads).
    #[serde(rename = "repo:read")]
    RepoRead,
    /// Write repositories the user can write (push, API writes); implies `repo:read`.
    #[serde(rename = "repo:write")]
    RepoWrite,
    /// Administer the account and, for administrators, the platform; implies the others.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    /// Returns the scope's name, as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RepoRead => "repo:read",
            Self::RepoWrite => "repo:write",
            Self::Admin => "admin",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [Self::RepoRead, Self::RepoWrite, Self::Admin].into_iter().find(|s| s.as_str() == name)
    }

    /// Returns whether holding `self` grants `needed`.
    pub fn grants(self, needed: Scope) -> bool {
        match self {
            Self::Admin => true,
            Self::RepoWrite => matches!(needed, Self::RepoWrite | Self::RepoRead),
            Self::RepoRead => needed == Self::RepoRead,
        }
    }
}

/// A token as listed: never the token itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, diesel::QueryableByName, utoipa::ToSchema)]
pub struct AccessToken {
    /// The token's id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// A name the user chose.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// What it may do.
    #[diesel(sql_type = Array<Text>)]
    pub scopes: Vec<String>,
    /// When it stops working, if ever.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was last used.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was created.
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Creates a token and returns it (the only time it is ever visible) with its record.
///
/// # Errors
///
/// Fails when the insert does.
pub async fn create(
    conn: &mut AsyncPgConnection,
    user_id: i64,
    name: &str,
    scopes: &[Scope],
    expires_at: Option<DateTime<Utc>>,
) -> Result<(String, AccessToken), diesel::result::Error> {
    let mut bytes = [0_u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let scopes: Vec<String> = scopes.iter().map(|s| s.as_str().to_owned()).collect();
    let record = diesel::sql_query(
        "INSERT INTO access_tokens (user_id, name, token_hash, scopes, expires_at) \
         VALUES ($1, $2, $3, $4, $5) \
         RETURNING id, name, scopes, expires_at, last_used_at, created_at",
    )
    .bind::<BigInt, _>(user_id)
    .bind::<Text, _>(name)
    .bind::<Bytea, _>(digest(&token))
    .bind::<Array<Text>, _>(scopes)
    .bind::<Nullable<Timestamptz>, _>(expires_at)
    .get_result(conn)
    .await?;
    Ok((token, record))
}

/// Lists a user's tokens, newest first.
///
/// # Errors
///
/// Fails when the query does.
pub async fn list(
    conn: &mut AsyncPgConnection,
    user_id: i64,
) -> Result<Vec<AccessToken>, diesel::result::Error> {
    diesel::sql_query(
        "SELECT id, name, scopes, expires_at, last_used_at, created_at FROM access_tokens \
         WHERE user_id = $1 ORDER BY created_at DESC, id DESC",
    )
    .bind::<BigInt, _>(user_id)
    .load(conn)
    .await
}

/// Deletes one of a user's tokens; returns whether it existed.
///
/// # Errors
///
/// Fails when the query does.
pub async fn revoke(
    conn: &mut AsyncPgConnection,
    user_id: i64,
    id: i64,
) -> Result<bool, diesel::result::Error> {
    let deleted = diesel::sql_query("DELETE FROM access_tokens WHERE user_id = $1 AND id = $2")
        .bind::<BigInt, _>(user_id)
        .bind::<BigInt, _>(id)
        .execute(conn)
        .await?;
    Ok(deleted > 0)
}

#[derive(diesel::QueryableByName)]
struct Owner {
    #[diesel(sql_type = BigInt)]
    user_id: i64,
    #[diesel(sql_type = Array<Text>)]
    scopes: Vec<String>,
}

/// Returns the user and scopes of a valid, unexpired `token`, and records its use.
///
/// # Errors
///
/// Fails when the query does.
pub async fn authenticate(
    conn: &mut AsyncPgConnection,
    token: &str,
) -> Result<Option<(i64, Vec<Scope>)>, diesel::result::Error> {
    if !token.starts_with(TOKEN_PREFIX) {
        return Ok(None);
    }
    let owner: Option<Owner> = diesel::sql_query(
        "UPDATE access_tokens SET last_used_at = now() \
         WHERE token_hash = $1 AND (expires_at IS NULL OR expires_at > now()) \
         RETURNING user_id, scopes",
    )
    .bind::<Bytea, _>(digest(token))
    .get_result(conn)
    .await
    .optional()?;
    Ok(owner.map(|o| (o.user_id, o.scopes.iter().filter_map(|s| Scope::parse(s)).collect())))
}
