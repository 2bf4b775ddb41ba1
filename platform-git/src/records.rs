//! Repository records in PostgreSQL: the `repositories` table.
//!
//! A record names a bare repository kept by [`crate::store::RepoStore`]; the API changes both
//! together, inside one database transaction, so neither outlives the other.

use chrono::{DateTime, Utc};
use diesel::OptionalExtension as _;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{BigInt, Bool, Integer, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// The error returned by record queries.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The owner already has a repository of that name (compared without regard to case).
    #[error("the owner already has a repository named {name:?}")]
    NameTaken {
        /// The name asked for.
        name: String,
    },
    /// The query failed.
    #[error("repository query failed")]
    Query(#[from] DieselError),
}

/// A row of `repositories`, with its owner's name.
#[derive(Clone, Debug, PartialEq, Eq, diesel::QueryableByName)]
pub struct RepoRecord {
    /// The repository's id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// The owner's user id.
    #[diesel(sql_type = BigInt)]
    pub owner_id: i64,
    /// The owner's user name.
    #[diesel(sql_type = Text)]
    pub owner: String,
    /// The name, as its owner spelled it.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// A sentence about it.
    #[diesel(sql_type = Text)]
    pub description: String,
    /// Whether only its owner, collaborators and administrators can see it.
    #[diesel(sql_type = Bool)]
    pub is_private: bool,
    /// The branch `HEAD` names.
    #[diesel(sql_type = Text)]
    pub default_branch: String,
    /// When it was created.
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    /// When its settings last changed.
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
    /// Its size on disk after the last push, in bytes.
    #[diesel(sql_type = BigInt)]
    pub size_bytes: i64,
    /// When it was last pushed to.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub pushed_at: Option<DateTime<Utc>>,
    /// The repository it was forked from, while that exists.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub forked_from: Option<i64>,
    /// Whether it is a fork of private history (of a repository that was private when forked,
    /// or a fork of such a fork): it cannot be made public.
    #[diesel(sql_type = Bool)]
    pub private_lineage: bool,
    /// How many pushes it has had.
    #[diesel(sql_type = BigInt)]
    pub push_count: i64,
    /// How many branches it had after the last push.
    #[diesel(sql_type = Integer)]
    pub branch_count: i32,
    /// How many tags it had after the last push.
    #[diesel(sql_type = Integer)]
    pub tag_count: i32,
    /// The language with the most bytes on the default branch, once counted.
    #[diesel(sql_type = Nullable<Text>)]
    pub language: Option<String>,
}

/// The columns of [`RepoRecord`], for `r` joined with its owner `u`.
const COLUMNS: &str = "r.id, r.owner_id, u.username AS owner, r.name, r.description, \
                       r.is_private, r.default_branch, r.created_at, r.updated_at, \
                       r.size_bytes, r.pushed_at, r.forked_from, r.private_lineage, \
                       r.push_count, r.branch_count, r.tag_count, \
                       (SELECT l.key FROM jsonb_each_text(r.languages) l \
                        ORDER BY l.value::bigint DESC, l.key LIMIT 1) AS language";

fn taken(name: &str) -> impl FnOnce(DieselError) -> RecordError {
    let name = name.to_owned();
    move |error| match &error {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
            RecordError::NameTaken { name }
        }
        _ => RecordError::Query(error),
    }
}

/// What a new repository is made of.
#[derive(Clone, Copy, Debug)]
pub struct NewRepo<'a> {
    /// The owner's user id.
    pub owner_id: i64,
    /// The name.
    pub name: &'a str,
    /// A sentence about it.
    pub description: &'a str,
    /// Whether it is private.
    pub is_private: bool,
    /// The branch `HEAD` names.
    pub default_branch: &'a str,
    /// The repository it is a fork of, if any.
    pub forked_from: Option<&'a RepoRecord>,
}

/// Inserts a record.
///
/// # Errors
///
/// [`RecordError::NameTaken`] when the owner has a repository of that name in any case.
pub async fn insert(
    conn: &mut AsyncPgConnection,
    repo: NewRepo<'_>,
) -> Result<RepoRecord, RecordError> {
    diesel::sql_query(format!(
        "WITH r AS (INSERT INTO repositories \
         (owner_id, name, description, is_private, default_branch, forked_from, private_lineage) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *) \
         SELECT {COLUMNS} FROM r JOIN users u ON u.id = r.owner_id"
    ))
    .bind::<BigInt, _>(repo.owner_id)
    .bind::<Text, _>(repo.name)
    .bind::<Text, _>(repo.description)
    .bind::<Bool, _>(repo.is_private || repo.forked_from.is_some_and(|f| f.private_lineage))
    .bind::<Text, _>(repo.default_branch)
    .bind::<Nullable<BigInt>, _>(repo.forked_from.map(|source| source.id))
    .bind::<Bool, _>(
        repo.forked_from.is_some_and(|source| source.is_private || source.private_lineage),
    )
    .get_result(conn)
    .await
    .map_err(taken(repo.name))
}

/// Finds `owner/name`, without regard to case.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn find(
    conn: &mut AsyncPgConnection,
    owner: &str,
    name: &str,
) -> Result<Option<RepoRecord>, RecordError> {
    Ok(diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM repositories r JOIN users u ON u.id = r.owner_id \
         WHERE lower(u.username) = lower($1) AND lower(r.name) = lower($2)"
    ))
    .bind::<Text, _>(owner)
    .bind::<Text, _>(name)
    .get_result(conn)
    .await
    .optional()?)
}

/// Finds the repository with id `id`.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn find_by_id(
    conn: &mut AsyncPgConnection,
    id: i64,
) -> Result<Option<RepoRecord>, RecordError> {
    Ok(diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM repositories r JOIN users u ON u.id = r.owner_id WHERE r.id = $1"
    ))
    .bind::<BigInt, _>(id)
    .get_result(conn)
    .await
    .optional()?)
}

/// The settings [`update`] changes; `None` keeps a setting.
#[derive(Clone, Copy, Debug, Default)]
pub struct RepoChanges<'a> {
    /// A new name.
    pub name: Option<&'a str>,
    /// A new description.
    pub description: Option<&'a str>,
    /// New visibility.
    pub is_private: Option<bool>,
    /// A new default branch.
    pub default_branch: Option<&'a str>,
}

/// Changes a record's settings and returns it as it now is.
///
/// # Errors
///
/// [`RecordError::NameTaken`] for a new name the owner already uses.
pub async fn update(
    conn: &mut AsyncPgConnection,
    id: i64,
    changes: RepoChanges<'_>,
) -> Result<RepoRecord, RecordError> {
    diesel::sql_query(format!(
        "WITH r AS (UPDATE repositories SET \
           name = coalesce($2, name), \
           description = coalesce($3, description), \
           is_private = coalesce($4, is_private), \
           default_branch = coalesce($5, default_branch), \
           updated_at = now() \
         WHERE id = $1 RETURNING *) \
         SELECT {COLUMNS} FROM r JOIN users u ON u.id = r.owner_id"
    ))
    .bind::<BigInt, _>(id)
    .bind::<Nullable<Text>, _>(changes.name)
    .bind::<Nullable<Text>, _>(changes.description)
    .bind::<Nullable<Bool>, _>(changes.is_private)
    .bind::<Nullable<Text>, _>(changes.default_branch)
    .get_result(conn)
    .await
    .map_err(taken(changes.name.unwrap_or_default()))
}

/// Deletes a record, with its collaborators and branch rules.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn delete(conn: &mut AsyncPgConnection, id: i64) -> Result<(), RecordError> {
    diesel::sql_query("DELETE FROM repositories WHERE id = $1")
        .bind::<BigInt, _>(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Returns the forks of private history that `owner_id` made of `source_id`: what must go
/// when they lose access to it.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn private_forks(
    conn: &mut AsyncPgConnection,
    source_id: i64,
    owner_id: i64,
) -> Result<Vec<RepoRecord>, RecordError> {
    Ok(diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM repositories r JOIN users u ON u.id = r.owner_id \
         WHERE r.forked_from = $1 AND r.owner_id = $2 AND r.private_lineage"
    ))
    .bind::<BigInt, _>(source_id)
    .bind::<BigInt, _>(owner_id)
    .load(conn)
    .await?)
}

/// Which repositories a listing covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    /// Every repository the viewer can see.
    Visible,
    /// Those the viewer owns or collaborates on.
    Member,
    /// Those of this owner that the viewer can see.
    OwnedBy(i64),
}

/// Who is looking: a user id and whether they administer the platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Viewer {
    /// The user's id.
    pub user_id: i64,
    /// Whether they administer the platform (and so see everything).
    pub is_admin: bool,
}

/// Returns one page of `listing` for `viewer` (`None` for anonymous), ordered by owner and name,
/// and how many there are in all.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn list(
    conn: &mut AsyncPgConnection,
    viewer: Option<Viewer>,
    listing: Listing,
    limit: i64,
    offset: i64,
) -> Result<(Vec<RepoRecord>, i64), RecordError> {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        total: i64,
    }
    // $1 viewer id (NULL when anonymous), $2 viewer is admin, $3 members only, $4 owner filter.
    const FILTER: &str = "FROM repositories r JOIN users u ON u.id = r.owner_id \
        WHERE ($4::BIGINT IS NULL OR r.owner_id = $4) AND ( \
          r.owner_id = $1 \
          OR EXISTS (SELECT 1 FROM repository_collaborators c \
                     WHERE c.repository_id = r.id AND c.user_id = $1) \
          OR (NOT $3 AND (NOT r.is_private OR $2)))";
    let viewer_id = viewer.map(|v| v.user_id);
    let is_admin = viewer.is_some_and(|v| v.is_admin);
    let members_only = listing == Listing::Member;
    let owner = match listing {
        Listing::OwnedBy(owner) => Some(owner),
        Listing::Visible | Listing::Member => None,
    };
    let total: Count = diesel::sql_query(format!("SELECT count(*) AS total {FILTER}"))
        .bind::<Nullable<BigInt>, _>(viewer_id)
        .bind::<Bool, _>(is_admin)
        .bind::<Bool, _>(members_only)
        .bind::<Nullable<BigInt>, _>(owner)
        .get_result(conn)
        .await?;
    let page = diesel::sql_query(format!(
        "SELECT {COLUMNS} {FILTER} ORDER BY lower(u.username), lower(r.name) LIMIT $5 OFFSET $6"
    ))
    .bind::<Nullable<BigInt>, _>(viewer_id)
    .bind::<Bool, _>(is_admin)
    .bind::<Bool, _>(members_only)
    .bind::<Nullable<BigInt>, _>(owner)
    .bind::<BigInt, _>(limit)
    .bind::<BigInt, _>(offset)
    .load(conn)
    .await?;
    Ok((page, total.total))
}

/// Records a push: the repository's size on disk now, and the time.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn record_push(
    conn: &mut AsyncPgConnection,
    id: i64,
    size_bytes: i64,
) -> Result<(), RecordError> {
    diesel::sql_query("UPDATE repositories SET size_bytes = $2, pushed_at = now() WHERE id = $1")
        .bind::<BigInt, _>(id)
        .bind::<BigInt, _>(size_bytes)
        .execute(conn)
        .await?;
    Ok(())
}
