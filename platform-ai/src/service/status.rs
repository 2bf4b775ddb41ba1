//! The `code_index` table: each repository's index status and what is asked of it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::OptionalExtension as _;
use diesel::sql_types::{BigInt, Bool, Integer, Jsonb, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;

/// A repository's code search index, as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, diesel::QueryableByName, utoipa::ToSchema)]
pub struct IndexStatus {
    /// The repository's id.
    #[diesel(sql_type = BigInt)]
    pub repository_id: i64,
    /// Whether the repository is indexed at all (the per-repository switch).
    #[diesel(sql_type = Bool)]
    pub enabled: bool,
    /// The commit of the default branch the index was built from; `null` before the first.
    #[diesel(sql_type = Nullable<Text>)]
    pub indexed_commit: Option<String>,
    /// The branch that commit was on.
    #[diesel(sql_type = Nullable<Text>)]
    pub indexed_branch: Option<String>,
    /// The embedding model of the index.
    #[diesel(sql_type = Nullable<Text>)]
    pub model: Option<String>,
    /// The length of its vectors.
    #[diesel(sql_type = Nullable<Integer>)]
    pub dimensions: Option<i32>,
    /// Files with chunks in the index.
    #[diesel(sql_type = BigInt)]
    pub files: i64,
    /// Chunks in the index.
    #[diesel(sql_type = BigInt)]
    pub chunks: i64,
    /// Files of the last run not indexed, by reason (`binary`, `vendored`, `generated`, ...).
    #[diesel(sql_type = Jsonb)]
    #[schema(value_type = BTreeMap<String, u64>)]
    pub skipped: serde_json::Value,
    /// When the index last caught up.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub indexed_at: Option<DateTime<Utc>>,
    /// Index jobs asked for and not done yet.
    #[diesel(sql_type = Integer)]
    pub pending: i32,
    /// The last failure, cleared by the next success.
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
    /// When it failed.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub failed_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "repository_id, enabled, indexed_commit, indexed_branch, model, dimensions, \
    files, chunks, skipped, indexed_at, pending, last_error, failed_at";

/// The status of `repository_id`'s index, `None` when nothing was ever asked of it.
pub(crate) async fn find(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
) -> Result<Option<IndexStatus>, diesel::result::Error> {
    diesel::sql_query(format!("SELECT {COLUMNS} FROM code_index WHERE repository_id = $1"))
        .bind::<BigInt, _>(repository_id)
        .get_result(conn)
        .await
        .optional()
}

/// Records that a job was asked for; `rebuild` asks for the whole tree to be reconciled.
pub(crate) async fn request(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
    rebuild: bool,
) -> Result<(), diesel::result::Error> {
    diesel::sql_query(
        "INSERT INTO code_index (repository_id, pending, requested_at, rebuild) \
         VALUES ($1, 1, now(), $2) \
         ON CONFLICT (repository_id) DO UPDATE SET pending = code_index.pending + 1, \
           requested_at = now(), rebuild = code_index.rebuild OR $2",
    )
    .bind::<BigInt, _>(repository_id)
    .bind::<Bool, _>(rebuild)
    .execute(conn)
    .await
    .map(drop)
}

/// Switches indexing of `repository_id` on or off.
pub(crate) async fn set_enabled(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
    enabled: bool,
) -> Result<(), diesel::result::Error> {
    diesel::sql_query(
        "INSERT INTO code_index (repository_id, enabled) VALUES ($1, $2) \
         ON CONFLICT (repository_id) DO UPDATE SET enabled = $2",
    )
    .bind::<BigInt, _>(repository_id)
    .bind::<Bool, _>(enabled)
    .execute(conn)
    .await
    .map(drop)
}

/// What the worker needs to know before indexing: where the index stands and what was asked.
#[derive(Clone, Debug, diesel::QueryableByName)]
pub(crate) struct Progress {
    #[diesel(sql_type = Bool)]
    pub enabled: bool,
    #[diesel(sql_type = Nullable<Text>)]
    pub indexed_commit: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub indexed_branch: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub model: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    pub dimensions: Option<i32>,
    #[diesel(sql_type = Bool)]
    pub rebuild: bool,
}

pub(crate) async fn progress(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
) -> Result<Option<Progress>, diesel::result::Error> {
    diesel::sql_query(
        "SELECT enabled, indexed_commit, indexed_branch, model, dimensions, rebuild \
         FROM code_index WHERE repository_id = $1",
    )
    .bind::<BigInt, _>(repository_id)
    .get_result(conn)
    .await
    .optional()
}

/// What one successful run leaves in the table.
pub(crate) struct Indexed<'a> {
    pub commit: Option<&'a str>,
    pub branch: &'a str,
    pub model: &'a str,
    pub dimensions: i32,
    pub files: i64,
    pub chunks: i64,
    pub skipped: serde_json::Value,
}

/// Records a run that caught up; jobs asked for after `started` stay pending.
pub(crate) async fn record_success(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
    started: DateTime<Utc>,
    indexed: Indexed<'_>,
) -> Result<(), diesel::result::Error> {
    diesel::sql_query(
        "INSERT INTO code_index (repository_id, indexed_commit, indexed_branch, model, dimensions, \
           files, chunks, skipped, indexed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now()) \
         ON CONFLICT (repository_id) DO UPDATE SET indexed_commit = $2, indexed_branch = $3, \
           model = $4, dimensions = $5, files = $6, chunks = $7, skipped = $8, indexed_at = now(), \
           last_error = NULL, failed_at = NULL, \
           rebuild = code_index.rebuild AND code_index.requested_at > $9, \
           pending = CASE WHEN code_index.requested_at > $9 THEN 1 ELSE 0 END",
    )
    .bind::<BigInt, _>(repository_id)
    .bind::<Nullable<Text>, _>(indexed.commit)
    .bind::<Text, _>(indexed.branch)
    .bind::<Text, _>(indexed.model)
    .bind::<Integer, _>(indexed.dimensions)
    .bind::<BigInt, _>(indexed.files)
    .bind::<BigInt, _>(indexed.chunks)
    .bind::<Jsonb, _>(indexed.skipped)
    .bind::<Timestamptz, _>(started)
    .execute(conn)
    .await
    .map(drop)
}

/// Records a failed run; the job is retried and `pending` stays as it is.
pub(crate) async fn record_failure(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
    error: &str,
) -> Result<(), diesel::result::Error> {
    diesel::sql_query(
        "INSERT INTO code_index (repository_id, last_error, failed_at) VALUES ($1, $2, now()) \
         ON CONFLICT (repository_id) DO UPDATE SET last_error = $2, failed_at = now()",
    )
    .bind::<BigInt, _>(repository_id)
    .bind::<Text, _>(error)
    .execute(conn)
    .await
    .map(drop)
}

/// Forgets the index of a repository that is gone.
pub(crate) async fn remove(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
) -> Result<(), diesel::result::Error> {
    diesel::sql_query("DELETE FROM code_index WHERE repository_id = $1")
        .bind::<BigInt, _>(repository_id)
        .execute(conn)
        .await
        .map(drop)
}

#[derive(diesel::QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Repositories whose index is behind what they should hold: never indexed though pushed to
/// (a fork, a push whose job was lost), indexed from another branch (the default branch
/// changed) or another model, asked for and not done, or gone (their chunks are to be deleted).
pub(crate) async fn drifted(
    conn: &mut AsyncPgConnection,
    model: &str,
    dimensions: i32,
    limit: i64,
) -> Result<Vec<i64>, diesel::result::Error> {
    let rows: Vec<Id> = diesel::sql_query(
        "SELECT r.id FROM repositories r LEFT JOIN code_index c ON c.repository_id = r.id \
         WHERE (c.repository_id IS NULL AND (r.pushed_at IS NOT NULL OR r.forked_from IS NOT NULL)) \
            OR (c.enabled AND (c.pending > 0 OR c.indexed_branch IS DISTINCT FROM r.default_branch \
                OR (c.indexed_commit IS NOT NULL AND (c.model IS DISTINCT FROM $1 \
                    OR c.dimensions IS DISTINCT FROM $2)))) \
            OR (NOT c.enabled AND c.chunks > 0) \
         UNION ALL \
         SELECT c.repository_id FROM code_index c \
         WHERE NOT EXISTS (SELECT 1 FROM repositories r WHERE r.id = c.repository_id) \
         LIMIT $3",
    )
    .bind::<Text, _>(model)
    .bind::<Integer, _>(dimensions)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|row| row.id).collect())
}

/// The ids of the repositories `viewer` may read now, among `only` when given: public ones,
/// their own and those they collaborate on; every one for an administrator (`None`).
pub(crate) async fn readable(
    conn: &mut AsyncPgConnection,
    viewer: Option<(i64, bool)>,
    only: Option<i64>,
) -> Result<Option<Vec<i64>>, diesel::result::Error> {
    if viewer.is_some_and(|(_, admin)| admin) && only.is_none() {
        return Ok(None);
    }
    let rows: Vec<Id> = diesel::sql_query(
        "SELECT r.id FROM repositories r \
         WHERE ($2::BIGINT IS NULL OR r.id = $2) AND (NOT r.is_private OR $3 OR r.owner_id = $1 \
           OR EXISTS (SELECT 1 FROM repository_collaborators c \
                      WHERE c.repository_id = r.id AND c.user_id = $1))",
    )
    .bind::<Nullable<BigInt>, _>(viewer.map(|(id, _)| id))
    .bind::<Nullable<BigInt>, _>(only)
    .bind::<Bool, _>(viewer.is_some_and(|(_, admin)| admin))
    .load(conn)
    .await?;
    Ok(Some(rows.into_iter().map(|row| row.id).collect()))
}

/// Owner and name of each of `ids` still present, and its indexed commit.
#[derive(diesel::QueryableByName)]
pub(crate) struct Named {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub owner: String,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub indexed_commit: Option<String>,
}

pub(crate) async fn names(
    conn: &mut AsyncPgConnection,
    ids: &[i64],
) -> Result<BTreeMap<i64, Named>, diesel::result::Error> {
    let rows: Vec<Named> = diesel::sql_query(
        "SELECT r.id, u.username AS owner, r.name, c.indexed_commit FROM repositories r \
         JOIN users u ON u.id = r.owner_id LEFT JOIN code_index c ON c.repository_id = r.id \
         WHERE r.id = ANY($1)",
    )
    .bind::<diesel::sql_types::Array<BigInt>, _>(ids)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|row| (row.id, row)).collect())
}
