//! Delivery records: `webhook_deliveries` and `webhook_attempts`, as the API and the push
//! reactions read and make them, and the order of a repository's pushes. What the engine claims
//! and settles them with is in `claims.rs`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::OptionalExtension as _;
use diesel::QueryableByName;
use diesel::sql_types::{
    BigInt, Binary, Bool, Integer, Interval, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::WebhookError;

/// Where a delivery is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Waiting for its first attempt or its next one.
    Pending,
    /// Being sent now.
    Delivering,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up on: out of attempts, or the hook was switched off.
    Failed,
}

impl DeliveryState {
    fn parse(name: &str) -> Self {
        match name {
            "delivering" => Self::Delivering,
            "delivered" => Self::Delivered,
            "failed" => Self::Failed,
            _ => Self::Pending,
        }
    }
}

/// One event for one hook, and how sending it went so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Its id: `X-GitHub-Delivery`, the same on every attempt and on redelivery.
    pub id: Uuid,
    /// The hook.
    pub hook_id: i64,
    /// `push`, `create`, `delete`, `repository` or `ping`.
    pub event: String,
    /// The event's action, for events that have one.
    pub action: Option<String>,
    /// Where it is.
    pub state: DeliveryState,
    /// Attempts made.
    pub attempts: i32,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: DateTime<Utc>,
    /// Whether it was asked to be sent again.
    pub redelivery: bool,
    /// The status code of the last answer.
    pub status_code: Option<i32>,
    /// How long the last attempt took.
    pub duration_ms: Option<i32>,
    /// What went wrong in the last attempt.
    pub error: Option<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When the receiver accepted it.
    pub delivered_at: Option<DateTime<Utc>>,
}

#[derive(diesel::QueryableByName)]
struct DeliveryRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = BigInt)]
    hook_id: i64,
    #[diesel(sql_type = Text)]
    event: String,
    #[diesel(sql_type = Nullable<Text>)]
    action: Option<String>,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Integer)]
    attempts: i32,
    #[diesel(sql_type = Timestamptz)]
    next_attempt_at: DateTime<Utc>,
    #[diesel(sql_type = Bool)]
    redelivery: bool,
    #[diesel(sql_type = Nullable<Integer>)]
    status_code: Option<i32>,
    #[diesel(sql_type = Nullable<Integer>)]
    duration_ms: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    error: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    delivered_at: Option<DateTime<Utc>>,
}

impl From<DeliveryRow> for Delivery {
    fn from(row: DeliveryRow) -> Self {
        Self {
            id: row.id,
            hook_id: row.hook_id,
            event: row.event,
            action: row.action,
            state: DeliveryState::parse(&row.state),
            attempts: row.attempts,
            next_attempt_at: row.next_attempt_at,
            redelivery: row.redelivery,
            status_code: row.status_code,
            duration_ms: row.duration_ms,
            error: row.error,
            created_at: row.created_at,
            delivered_at: row.delivered_at,
        }
    }
}

const COLUMNS: &str = "id, hook_id, event, action, state, attempts, next_attempt_at, redelivery, \
                       status_code, duration_ms, error, created_at, delivered_at";

/// One attempt of a delivery, as sent and as answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// When it began.
    pub started_at: DateTime<Utc>,
    /// How long it took, until the answer was read or it failed.
    pub duration_ms: i32,
    /// Where it went.
    pub url: String,
    /// Every header sent.
    pub request_headers: Vec<(String, String)>,
    /// The status code, if an answer came.
    pub status_code: Option<i32>,
    /// The answer's headers.
    pub response_headers: Vec<(String, String)>,
    /// The first 64 KiB of the answer's body.
    pub response_body: Vec<u8>,
    /// What failed, if anything.
    pub error: Option<String>,
    /// Whether the receiver accepted it (2xx).
    pub delivered: bool,
}

#[derive(diesel::QueryableByName)]
struct AttemptRow {
    #[diesel(sql_type = Timestamptz)]
    started_at: DateTime<Utc>,
    #[diesel(sql_type = Integer)]
    duration_ms: i32,
    #[diesel(sql_type = Text)]
    url: String,
    #[diesel(sql_type = Jsonb)]
    request_headers: serde_json::Value,
    #[diesel(sql_type = Nullable<Integer>)]
    status_code: Option<i32>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    response_headers: Option<serde_json::Value>,
    #[diesel(sql_type = Nullable<Binary>)]
    response_body: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Text>)]
    error: Option<String>,
    #[diesel(sql_type = Bool)]
    delivered: bool,
}

fn headers_from_json(value: Option<serde_json::Value>) -> Vec<(String, String)> {
    value.and_then(|value| serde_json::from_value(value).ok()).unwrap_or_default()
}

/// A delivery with its payload and every attempt, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryDetail {
    /// The delivery.
    pub delivery: Delivery,
    /// The exact JSON text sent.
    pub payload: String,
    /// Its attempts.
    pub attempts: Vec<Attempt>,
}

/// Makes a delivery of `payload` to `hook_id`, unless `source_key` (what caused it) already
/// made one for this hook; returns the new delivery's id.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn enqueue(
    conn: &mut AsyncPgConnection,
    hook_id: i64,
    event: &str,
    action: Option<&str>,
    source_key: Option<&str>,
    payload: &str,
) -> Result<Option<Uuid>, WebhookError> {
    enqueue_push(conn, hook_id, event, action, source_key, payload, None).await
}

/// As [`enqueue`], for a delivery caused by the push numbered `push_seq` of the hook's
/// repository ([`crate::events::PushEvent::sequence`]): it is sent after the deliveries of
/// every earlier push of the repository, once those are made (see [`fanned_out`]).
///
/// # Errors
///
/// Fails when the query fails.
pub async fn enqueue_push(
    conn: &mut AsyncPgConnection,
    hook_id: i64,
    event: &str,
    action: Option<&str>,
    source_key: Option<&str>,
    payload: &str,
    push_seq: Option<i64>,
) -> Result<Option<Uuid>, WebhookError> {
    #[derive(diesel::QueryableByName)]
    struct Made {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
    }
    let made: Option<Made> = diesel::sql_query(
        "INSERT INTO webhook_deliveries (id, hook_id, event, action, source_key, payload, push_seq) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind::<SqlUuid, _>(Uuid::new_v4())
    .bind::<BigInt, _>(hook_id)
    .bind::<Text, _>(event)
    .bind::<Nullable<Text>, _>(action)
    .bind::<Nullable<Text>, _>(source_key)
    .bind::<Text, _>(payload)
    .bind::<Nullable<BigInt>, _>(push_seq)
    .get_result(conn)
    .await
    .optional()?;
    Ok(made.map(|made| made.id))
}

/// A page of a hook's deliveries, newest first.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn list(
    conn: &mut AsyncPgConnection,
    hook_id: i64,
    page: i64,
    per_page: i64,
) -> Result<Vec<Delivery>, WebhookError> {
    let rows: Vec<DeliveryRow> = diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM webhook_deliveries WHERE hook_id = $1 \
         ORDER BY seq DESC LIMIT $2 OFFSET $3"
    ))
    .bind::<BigInt, _>(hook_id)
    .bind::<BigInt, _>(per_page)
    .bind::<BigInt, _>((page.max(1) - 1) * per_page)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(Delivery::from).collect())
}

/// One delivery of a hook, with its payload and attempts.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn find(
    conn: &mut AsyncPgConnection,
    hook_id: i64,
    id: Uuid,
) -> Result<Option<DeliveryDetail>, WebhookError> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(embed)]
        delivery: DeliveryRow,
        #[diesel(sql_type = Text)]
        payload: String,
    }
    let row: Option<Row> = diesel::sql_query(format!(
        "SELECT {COLUMNS}, payload FROM webhook_deliveries WHERE hook_id = $1 AND id = $2"
    ))
    .bind::<BigInt, _>(hook_id)
    .bind::<SqlUuid, _>(id)
    .get_result(conn)
    .await
    .optional()?;
    let Some(row) = row else { return Ok(None) };
    let attempts: Vec<AttemptRow> = diesel::sql_query(
        "SELECT started_at, duration_ms, url, request_headers, status_code, response_headers, \
         response_body, error, delivered FROM webhook_attempts WHERE delivery_id = $1 ORDER BY id",
    )
    .bind::<SqlUuid, _>(id)
    .load(conn)
    .await?;
    let attempts = attempts
        .into_iter()
        .map(|row| Attempt {
            started_at: row.started_at,
            duration_ms: row.duration_ms,
            url: row.url,
            request_headers: headers_from_json(Some(row.request_headers)),
            status_code: row.status_code,
            response_headers: headers_from_json(row.response_headers),
            response_body: row.response_body.unwrap_or_default(),
            error: row.error,
            delivered: row.delivered,
        })
        .collect();
    Ok(Some(DeliveryDetail { delivery: row.delivery.into(), payload: row.payload, attempts }))
}

/// Queues a delivery to be sent again now, keeping its id; `None` when the hook has no such
/// delivery, `Some(false)` when it is being sent at this moment.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn redeliver(
    conn: &mut AsyncPgConnection,
    hook_id: i64,
    id: Uuid,
) -> Result<Option<bool>, WebhookError> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Bool)]
        queued: bool,
    }
    let row: Option<Row> = diesel::sql_query(
        "WITH target AS (SELECT id, state FROM webhook_deliveries WHERE hook_id = $1 AND id = $2), \
         queued AS (UPDATE webhook_deliveries d SET state = 'pending', next_attempt_at = now(), \
             redelivery = true FROM target WHERE d.id = target.id AND target.state <> 'delivering' \
             RETURNING d.id) \
         SELECT EXISTS (SELECT 1 FROM queued) AS queued FROM target",
    )
    .bind::<BigInt, _>(hook_id)
    .bind::<SqlUuid, _>(id)
    .get_result(conn)
    .await
    .optional()?;
    Ok(row.map(|row| row.queued))
}

pub(super) fn interval(duration: Duration) -> diesel::data_types::PgInterval {
    diesel::data_types::PgInterval::from_microseconds(
        i64::try_from(duration.as_micros()).unwrap_or(i64::MAX),
    )
}

/// Deletes up to `batch` finished deliveries (with their attempts) made before `keep` ago, and
/// the records of push reactions done before then; returns how many deliveries went. The
/// delivery engine runs it about once a minute with [`super::engine::DeliveryOptions::keep_history`].
///
/// # Errors
///
/// Fails when the query fails.
pub async fn prune(
    conn: &mut AsyncPgConnection,
    keep: Duration,
    batch: i64,
) -> Result<usize, WebhookError> {
    let deleted = diesel::sql_query(
        "DELETE FROM webhook_deliveries WHERE id IN ( \
             SELECT id FROM webhook_deliveries WHERE state IN ('delivered', 'failed') \
               AND created_at < now() - $1 LIMIT $2)",
    )
    .bind::<Interval, _>(interval(keep))
    .bind::<BigInt, _>(batch)
    .execute(conn)
    .await?;
    diesel::sql_query(
        "DELETE FROM push_reactions_done WHERE (event_id, kind) IN ( \
             SELECT event_id, kind FROM push_reactions_done WHERE done_at < now() - $1 LIMIT $2)",
    )
    .bind::<Interval, _>(interval(keep))
    .bind::<BigInt, _>(batch)
    .execute(conn)
    .await?;
    Ok(deleted)
}

/// How long a push's delivery waits for the deliveries of earlier pushes of its repository to
/// be made before it goes anyway (an earlier push event lost, or dead-lettered unrecorded).
pub const ORDER_WAIT: Duration = Duration::from_secs(60);

/// Records that the deliveries of push `push_seq` of `repository_id` are made (or that it needs
/// none), and moves the repository's mark of "every push up to here is done" as far as it now
/// goes: over each number recorded right after it, and over a missing number once the push
/// after it has waited [`ORDER_WAIT`] (its event was lost). Returns the mark.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn fanned_out(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
    push_seq: i64,
) -> Result<i64, WebhookError> {
    #[derive(diesel::QueryableByName)]
    struct Mark {
        #[diesel(sql_type = BigInt)]
        hooks_seq: i64,
    }
    #[derive(diesel::QueryableByName)]
    struct Done {
        #[diesel(sql_type = BigInt)]
        seq: i64,
        #[diesel(sql_type = Bool)]
        waited: bool,
    }
    conn.transaction::<_, WebhookError, _>(async |conn| {
        // One at a time per repository: the mark only moves forward, by whoever holds the row.
        let mark: Option<Mark> =
            diesel::sql_query("SELECT hooks_seq FROM repositories WHERE id = $1 FOR UPDATE")
                .bind::<BigInt, _>(repository_id)
                .get_result(conn)
                .await
                .optional()?;
        let Some(Mark { hooks_seq: mut mark }) = mark else { return Ok(0) };
        if push_seq <= mark {
            return Ok(mark);
        }
        diesel::sql_query(
            "INSERT INTO webhook_fan_outs (repository_id, seq) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
        )
        .bind::<BigInt, _>(repository_id)
        .bind::<BigInt, _>(push_seq)
        .execute(conn)
        .await?;
        let done: Vec<Done> = diesel::sql_query(
            "SELECT seq, created_at <= now() - $2 AS waited FROM webhook_fan_outs \
             WHERE repository_id = $1 ORDER BY seq",
        )
        .bind::<BigInt, _>(repository_id)
        .bind::<Interval, _>(interval(ORDER_WAIT))
        .load(conn)
        .await?;
        for row in done {
            if row.seq == mark + 1 || (row.seq > mark && row.waited) {
                mark = row.seq;
            } else if row.seq > mark {
                break;
            }
        }
        diesel::sql_query("UPDATE repositories SET hooks_seq = $2 WHERE id = $1")
            .bind::<BigInt, _>(repository_id)
            .bind::<BigInt, _>(mark)
            .execute(conn)
            .await?;
        diesel::sql_query("DELETE FROM webhook_fan_outs WHERE repository_id = $1 AND seq <= $2")
            .bind::<BigInt, _>(repository_id)
            .bind::<BigInt, _>(mark)
            .execute(conn)
            .await?;
        Ok(mark)
    })
    .await
}
