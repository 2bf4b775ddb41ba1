//! Collaborators in PostgreSQL, and the access they resolve to.

use chrono::{DateTime, Utc};
use diesel::OptionalExtension as _;
use diesel::sql_types::{BigInt, Bool, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;

use super::{Access, Role};
use crate::records::{RecordError, RepoRecord, Viewer};

/// Resolves what `viewer` (`None` for anonymous) may do to `repo`; `None` means the repository
/// must look as if it did not exist.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn access_for(
    conn: &mut AsyncPgConnection,
    repo: &RepoRecord,
    viewer: Option<Viewer>,
) -> Result<Option<Access>, RecordError> {
    let public = (!repo.is_private).then_some(Access::Read);
    let Some(viewer) = viewer else {
        return Ok(public);
    };
    if viewer.is_admin || viewer.user_id == repo.owner_id {
        return Ok(Some(Access::Owner));
    }
    let role = role_of(conn, repo.id, viewer.user_id).await?;
    Ok(role.map(Access::from).max(public))
}

async fn role_of(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
    user_id: i64,
) -> Result<Option<Role>, RecordError> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        role: String,
    }
    let row: Option<Row> = diesel::sql_query(
        "SELECT role FROM repository_collaborators WHERE repository_id = $1 AND user_id = $2",
    )
    .bind::<BigInt, _>(repository_id)
    .bind::<BigInt, _>(user_id)
    .get_result(conn)
    .await
    .optional()?;
    Ok(row.and_then(|row| Role::parse(&row.role)))
}

/// A collaborator of a repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Collaborator {
    /// Their user id.
    pub user_id: i64,
    /// Their user name.
    pub username: String,
    /// What they were granted.
    pub role: Role,
    /// When they were first added.
    pub created_at: DateTime<Utc>,
}

#[derive(diesel::QueryableByName)]
struct CollaboratorRow {
    #[diesel(sql_type = BigInt)]
    user_id: i64,
    #[diesel(sql_type = Text)]
    username: String,
    #[diesel(sql_type = Text)]
    role: String,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Bool)]
    inserted: bool,
}

impl CollaboratorRow {
    fn into_collaborator(self) -> Collaborator {
        Collaborator {
            user_id: self.user_id,
            username: self.username,
            // The column's CHECK admits only the three names.
            role: Role::parse(&self.role).unwrap_or(Role::Read),
            created_at: self.created_at,
        }
    }
}

/// Lists a repository's collaborators by name.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn collaborators(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
) -> Result<Vec<Collaborator>, RecordError> {
    let rows: Vec<CollaboratorRow> = diesel::sql_query(
        "SELECT c.user_id, u.username, c.role, c.created_at, false AS inserted \
         FROM repository_collaborators c JOIN users u ON u.id = c.user_id \
         WHERE c.repository_id = $1 ORDER BY lower(u.username)",
    )
    .bind::<BigInt, _>(repository_id)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(CollaboratorRow::into_collaborator).collect())
}

/// Makes `user_id` a collaborator with `role`, or changes their role; returns them and whether
/// they are new.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn set_collaborator(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
    user_id: i64,
    role: Role,
) -> Result<(Collaborator, bool), RecordError> {
    // `xmax = 0` holds only for a row this statement inserted, not one it updated.
    let row: CollaboratorRow = diesel::sql_query(
        "WITH c AS (INSERT INTO repository_collaborators (repository_id, user_id, role) \
           VALUES ($1, $2, $3) \
           ON CONFLICT (repository_id, user_id) DO UPDATE SET role = EXCLUDED.role \
           RETURNING user_id, role, created_at, (xmax = 0) AS inserted) \
         SELECT c.user_id, u.username, c.role, c.created_at, c.inserted \
         FROM c JOIN users u ON u.id = c.user_id",
    )
    .bind::<BigInt, _>(repository_id)
    .bind::<BigInt, _>(user_id)
    .bind::<Text, _>(role.as_str())
    .get_result(conn)
    .await?;
    let inserted = row.inserted;
    Ok((row.into_collaborator(), inserted))
}

/// Removes a collaborator; returns whether they were one.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn remove_collaborator(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
    user_id: i64,
) -> Result<bool, RecordError> {
    let removed = diesel::sql_query(
        "DELETE FROM repository_collaborators WHERE repository_id = $1 AND user_id = $2",
    )
    .bind::<BigInt, _>(repository_id)
    .bind::<BigInt, _>(user_id)
    .execute(conn)
    .await?;
    Ok(removed > 0)
}
