//! Branch protection rules in PostgreSQL: the `protected_branches` table.

use chrono::{DateTime, Utc};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{BigInt, Bool, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::{ProtectedBranch, PushAccess};
use crate::records::RecordError;

#[derive(diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    pattern: String,
    #[diesel(sql_type = Text)]
    push_access: String,
    #[diesel(sql_type = Bool)]
    allow_force_push: bool,
    #[diesel(sql_type = Bool)]
    allow_deletion: bool,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
}

impl From<Row> for ProtectedBranch {
    fn from(row: Row) -> Self {
        Self {
            id: row.id,
            pattern: row.pattern,
            push_access: if row.push_access == "admin" {
                PushAccess::Admin
            } else {
                PushAccess::Write
            },
            allow_force_push: row.allow_force_push,
            allow_deletion: row.allow_deletion,
            created_at: row.created_at,
        }
    }
}

/// The error returned by [`create`].
#[derive(Debug, thiserror::Error)]
pub enum ProtectionError {
    /// The repository already has a rule with that pattern.
    #[error("a rule for {pattern:?} already exists")]
    Exists {
        /// The pattern.
        pattern: String,
    },
    /// The query failed.
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// What a new rule says.
#[derive(Clone, Copy, Debug)]
pub struct NewRule<'a> {
    /// The branch name or glob.
    pub pattern: &'a str,
    /// Who may push.
    pub push_access: PushAccess,
    /// Whether pushes may rewrite history.
    pub allow_force_push: bool,
    /// Whether the branch may be deleted by a push.
    pub allow_deletion: bool,
}

/// Adds a rule to a repository.
///
/// # Errors
///
/// [`ProtectionError::Exists`] when the repository has a rule with that pattern.
pub async fn create(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
    rule: NewRule<'_>,
) -> Result<ProtectedBranch, ProtectionError> {
    let row: Row = diesel::sql_query(
        "INSERT INTO protected_branches \
           (repository_id, pattern, push_access, allow_force_push, allow_deletion) \
         VALUES ($1, $2, $3, $4, $5) \
         RETURNING id, pattern, push_access, allow_force_push, allow_deletion, created_at",
    )
    .bind::<BigInt, _>(repository_id)
    .bind::<Text, _>(rule.pattern)
    .bind::<Text, _>(rule.push_access.as_str())
    .bind::<Bool, _>(rule.allow_force_push)
    .bind::<Bool, _>(rule.allow_deletion)
    .get_result(conn)
    .await
    .map_err(|error| match &error {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
            ProtectionError::Exists { pattern: rule.pattern.to_owned() }
        }
        _ => ProtectionError::Record(RecordError::Query(error)),
    })?;
    Ok(row.into())
}

/// Lists a repository's rules by pattern.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn list(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
) -> Result<Vec<ProtectedBranch>, RecordError> {
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT id, pattern, push_access, allow_force_push, allow_deletion, created_at \
         FROM protected_branches WHERE repository_id = $1 ORDER BY pattern",
    )
    .bind::<BigInt, _>(repository_id)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(ProtectedBranch::from).collect())
}

/// Deletes a rule of a repository; returns whether it existed.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn delete(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
    id: i64,
) -> Result<bool, RecordError> {
    let deleted =
        diesel::sql_query("DELETE FROM protected_branches WHERE repository_id = $1 AND id = $2")
            .bind::<BigInt, _>(repository_id)
            .bind::<BigInt, _>(id)
            .execute(conn)
            .await?;
    Ok(deleted > 0)
}
