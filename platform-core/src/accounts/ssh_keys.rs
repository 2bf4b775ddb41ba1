//! SSH public keys: how the SSH server knows who connects.

use chrono::{DateTime, Utc};
use diesel::OptionalExtension as _;
use diesel::sql_types::{BigInt, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use ssh_key::{Algorithm, HashAlg, PublicKey};

/// The smallest RSA key accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// A key as stored and listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, diesel::QueryableByName, utoipa::ToSchema)]
pub struct SshKey {
    /// The key's id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// A name the user chose.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// The key in OpenSSH form, without its comment (`ssh-ed25519 AAAA...`).
    #[diesel(sql_type = Text)]
    pub public_key: String,
    /// Its SHA256 fingerprint, as `ssh-keygen -l` prints it.
    #[diesel(sql_type = Text)]
    pub fingerprint: String,
    /// When it was added.
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

/// A key that was parsed and accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedKey {
    /// `algorithm base64`, without the comment.
    pub public_key: String,
    /// The SHA256 fingerprint.
    pub fingerprint: String,
}

/// Parses one `authorized_keys`-style line and applies the key policy: DSA is refused, RSA
/// needs at least 2048 bits.
///
/// # Errors
///
/// Returns why the key is refused.
pub fn parse(line: &str) -> Result<ParsedKey, String> {
    let key = PublicKey::from_openssh(line.trim()).map_err(|_| {
        "not an OpenSSH public key (expected a line such as ssh-ed25519 AAAA... comment)".to_owned()
    })?;
    match key.algorithm() {
        Algorithm::Dsa => {
            return Err("DSA keys are not accepted; use ssh-keygen -t ed25519".to_owned());
        }
        Algorithm::Rsa { .. } => {
            let bits =
                key.key_data().rsa().and_then(|rsa| rsa.n.as_positive_bytes()).map_or(0, |n| {
                    n.len() * 8 - n.first().map_or(0, |b| b.leading_zeros() as usize)
                });
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "RSA keys need at least {MIN_RSA_BITS} bits (this one has {bits})"
                ));
            }
        }
        _ => {}
    }
    let openssh = key.to_openssh().map_err(|_| "cannot encode the key".to_owned())?;
    let public_key = openssh.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    Ok(ParsedKey { public_key, fingerprint: key.fingerprint(HashAlg::Sha256).to_string() })
}

/// The error returned by [`add`].
#[derive(Debug, thiserror::Error)]
pub enum SshKeyError {
    /// Another account (or this one) already has this key.
    #[error("this key is already in use")]
    InUse,
    /// The query failed.
    #[error("SSH key query failed")]
    Query(#[from] diesel::result::Error),
}

/// Adds a parsed key to a user.
///
/// # Errors
///
/// [`SshKeyError::InUse`] when any account already has the key.
pub async fn add(
    conn: &mut AsyncPgConnection,
    user_id: i64,
    name: &str,
    key: &ParsedKey,
) -> Result<SshKey, SshKeyError> {
    diesel::sql_query(
        "INSERT INTO ssh_keys (user_id, name, public_key, fingerprint) VALUES ($1, $2, $3, $4) \
         RETURNING id, name, public_key, fingerprint, created_at",
    )
    .bind::<BigInt, _>(user_id)
    .bind::<Text, _>(name)
    .bind::<Text, _>(&key.public_key)
    .bind::<Text, _>(&key.fingerprint)
    .get_result(conn)
    .await
    .map_err(|error| match error {
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        ) => SshKeyError::InUse,
        other => SshKeyError::Query(other),
    })
}

/// Lists a user's keys, oldest first.
///
/// # Errors
///
/// Fails when the query does.
pub async fn list(
    conn: &mut AsyncPgConnection,
    user_id: i64,
) -> Result<Vec<SshKey>, diesel::result::Error> {
    diesel::sql_query(
        "SELECT id, name, public_key, fingerprint, created_at FROM ssh_keys WHERE user_id = $1 ORDER BY id",
    )
    .bind::<BigInt, _>(user_id)
    .load(conn)
    .await
}

/// Deletes one of a user's keys; returns whether it existed.
///
/// # Errors
///
/// Fails when the query does.
pub async fn delete(
    conn: &mut AsyncPgConnection,
    user_id: i64,
    id: i64,
) -> Result<bool, diesel::result::Error> {
    let deleted = diesel::sql_query("DELETE FROM ssh_keys WHERE user_id = $1 AND id = $2")
        .bind::<BigInt, _>(user_id)
        .bind::<BigInt, _>(id)
        .execute(conn)
        .await?;
    Ok(deleted > 0)
}

#[derive(diesel::QueryableByName)]
struct KeyOwner {
    #[diesel(sql_type = BigInt)]
    user_id: i64,
}

/// Returns the user owning the key with `fingerprint`, for the SSH server.
///
/// # Errors
///
/// Fails when the query does.
pub async fn owner_of(
    conn: &mut AsyncPgConnection,
    fingerprint: &str,
) -> Result<Option<i64>, diesel::result::Error> {
    let owner: Option<KeyOwner> =
        diesel::sql_query("SELECT user_id FROM ssh_keys WHERE fingerprint = $1")
            .bind::<Text, _>(fingerprint)
            .get_result(conn)
            .await
            .optional()?;
    Ok(owner.map(|o| o.user_id))
}
