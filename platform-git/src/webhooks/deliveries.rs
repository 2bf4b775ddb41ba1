//! Delivery records: `webhook_deliveries` and `webhook_attempts`, and the statements the
//! delivery engine claims and settles them with.

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
use super::client::AttemptOutcome;
use super::engine::DeliveryOptions;
use super::hooks::ContentType;

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

/// The right to deliver to one hook for a while: one holder at a time, which is what keeps a
/// hook's deliveries one at a time and in order across every worker.
#[derive(Clone, Debug)]
pub(super) struct HookLease {
    pub(super) hook_id: i64,
    pub(super) token: Uuid,
    pub(super) repository_id: i64,
    pub(super) url: String,
    pub(super) content_type: ContentType,
    pub(super) secret: Option<String>,
    pub(super) verify_tls: bool,
}

fn interval(duration: Duration) -> diesel::data_types::PgInterval {
    diesel::data_types::PgInterval::from_microseconds(
        i64::try_from(duration.as_micros()).unwrap_or(i64::MAX),
    )
}

/// Takes the lease of `hook_id` for `lease`, unless another worker holds it or the hook is
/// switched off or paused.
pub(super) async fn acquire(
    conn: &mut AsyncPgConnection,
    hook_id: i64,
    lease: Duration,
) -> Result<Option<HookLease>, WebhookError> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        repository_id: i64,
        #[diesel(sql_type = Text)]
        url: String,
        #[diesel(sql_type = Text)]
        content_type: String,
        #[diesel(sql_type = Nullable<Text>)]
        secret: Option<String>,
        #[diesel(sql_type = Bool)]
        verify_tls: bool,
    }
    let token = Uuid::new_v4();
    let row: Option<Row> = diesel::sql_query(
        "UPDATE webhooks SET busy_token = $2, busy_until = now() + $3 \
         WHERE id = $1 AND active AND (disabled_until IS NULL OR disabled_until <= now()) \
           AND (busy_until IS NULL OR busy_until <= now()) \
         RETURNING repository_id, url, content_type, secret, verify_tls",
    )
    .bind::<BigInt, _>(hook_id)
    .bind::<SqlUuid, _>(token)
    .bind::<Interval, _>(interval(lease))
    .get_result(conn)
    .await
    .optional()?;
    Ok(row.map(|row| HookLease {
        hook_id,
        token,
        repository_id: row.repository_id,
        url: row.url,
        content_type: if row.content_type == "form" {
            ContentType::Form
        } else {
            ContentType::Json
        },
        secret: row.secret,
        verify_tls: row.verify_tls,
    }))
}

/// Gives the lease back.
pub(super) async fn release(
    conn: &mut AsyncPgConnection,
    lease: &HookLease,
) -> Result<(), WebhookError> {
    diesel::sql_query(
        "UPDATE webhooks SET busy_token = NULL, busy_until = NULL WHERE id = $1 AND busy_token = $2",
    )
    .bind::<BigInt, _>(lease.hook_id)
    .bind::<SqlUuid, _>(lease.token)
    .execute(conn)
    .await?;
    Ok(())
}

/// A delivery taken for an attempt.
#[derive(Clone, Debug)]
pub(super) struct Claimed {
    pub(super) id: Uuid,
    pub(super) event: String,
    pub(super) payload: String,
    /// Counting this one.
    pub(super) attempts: i32,
}

/// Renews the lease and takes the oldest delivery of the hook that is due: a first attempt,
/// a retry whose time has come, or one a worker that died left half-sent. `None` when nothing
/// is due, the lease was lost, or the hook was switched off or paused meanwhile (by the last
/// attempt's settlement: the holder stops there).
pub(super) async fn claim_next(
    conn: &mut AsyncPgConnection,
    lease: &HookLease,
    duration: Duration,
) -> Result<Option<Claimed>, WebhookError> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
        #[diesel(sql_type = Text)]
        event: String,
        #[diesel(sql_type = Text)]
        payload: String,
        #[diesel(sql_type = Integer)]
        attempts: i32,
    }
    let row: Option<Row> = diesel::sql_query(
        "WITH lease AS ( \
             UPDATE webhooks SET busy_until = now() + $3 \
             WHERE id = $1 AND busy_token = $2 AND active \
               AND (disabled_until IS NULL OR disabled_until <= now()) RETURNING id), \
         mark AS ( \
             SELECT r.hooks_seq FROM repositories r JOIN webhooks h ON h.repository_id = r.id \
             WHERE h.id = $1), \
         next AS ( \
             SELECT d.id FROM webhook_deliveries d, lease, mark WHERE d.hook_id = lease.id \
               AND (d.state = 'delivering' OR (d.state = 'pending' AND d.next_attempt_at <= now())) \
               AND (d.push_seq IS NULL OR d.push_seq <= mark.hooks_seq + 1 \
                    OR d.created_at <= now() - $4) \
             ORDER BY COALESCE(d.push_seq, 0), d.seq LIMIT 1 FOR UPDATE OF d) \
         UPDATE webhook_deliveries d SET state = 'delivering', attempts = d.attempts + 1 \
         FROM next WHERE d.id = next.id RETURNING d.id, d.event, d.payload, d.attempts",
    )
    .bind::<BigInt, _>(lease.hook_id)
    .bind::<SqlUuid, _>(lease.token)
    .bind::<Interval, _>(interval(duration))
    .bind::<Interval, _>(interval(ORDER_WAIT))
    .get_result(conn)
    .await
    .optional()?;
    Ok(row.map(|row| Claimed {
        id: row.id,
        event: row.event,
        payload: row.payload,
        attempts: row.attempts,
    }))
}

/// Whether the hook has a delivery due now (checked after the lease is given back, so one made
/// while it was held is not left waiting for the sweep).
pub(super) async fn has_due(
    conn: &mut AsyncPgConnection,
    hook_id: i64,
) -> Result<bool, WebhookError> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Bool)]
        due: bool,
    }
    let row: Row = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM webhook_deliveries d \
           JOIN webhooks h ON h.id = d.hook_id JOIN repositories r ON r.id = h.repository_id \
           WHERE d.hook_id = $1 \
           AND (d.state = 'delivering' OR (d.state = 'pending' AND d.next_attempt_at <= now())) \
           AND (d.push_seq IS NULL OR d.push_seq <= r.hooks_seq + 1 \
                OR d.created_at <= now() - $2)) AS due",
    )
    .bind::<BigInt, _>(hook_id)
    .bind::<Interval, _>(interval(ORDER_WAIT))
    .get_result(conn)
    .await?;
    Ok(row.due)
}

/// Hooks with deliveries that are due, and that nobody holds now: retries as soon as they are
/// due (no job wakes the engine for them), first attempts and half-sent ones once due for
/// longer than `settled` (a fresh delivery is woken by its own job).
pub(super) async fn due_hooks(
    conn: &mut AsyncPgConnection,
    settled: Duration,
    limit: i64,
) -> Result<Vec<i64>, WebhookError> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        hook_id: i64,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT DISTINCT d.hook_id FROM webhook_deliveries d JOIN webhooks h ON h.id = d.hook_id \
         WHERE d.state IN ('pending', 'delivering') AND d.next_attempt_at <= now() \
           AND (d.next_attempt_at <= now() - $1 OR (d.state = 'pending' AND d.attempts > 0)) \
           AND h.active AND (h.disabled_until IS NULL OR h.disabled_until <= now()) \
           AND (h.busy_until IS NULL OR h.busy_until <= now()) \
         LIMIT $2",
    )
    .bind::<Interval, _>(interval(settled))
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|row| row.hook_id).collect())
}

/// What settling an attempt decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Settled {
    /// The receiver took it.
    Delivered,
    /// It will be tried again at this time.
    Retry(DateTime<Utc>),
    /// Given up on.
    Failed,
}

fn millis(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis()).unwrap_or(i32::MAX)
}

fn headers_json(headers: &[(String, String)]) -> serde_json::Value {
    serde_json::to_value(headers).unwrap_or(serde_json::Value::Null)
}

/// Records an attempt and what follows from it, in one transaction: the attempt row, the
/// delivery's new state, and the hook's failure count, pause or switch-off. Recorded before
/// the job that caused it is acknowledged, so a delivery the receiver took is never sent again
/// by the engine.
pub(super) async fn settle(
    conn: &mut AsyncPgConnection,
    lease: &HookLease,
    claimed: &Claimed,
    outcome: &AttemptOutcome,
    rules: &DeliveryOptions,
) -> Result<Settled, WebhookError> {
    let url = lease.url.clone();
    let delivery_id = claimed.id;
    let hook_id = lease.hook_id;
    let message = match (&outcome.error, outcome.status) {
        (Some(error), _) => error.clone(),
        (None, Some(status)) if outcome.delivered() => format!("OK ({status})"),
        (None, Some(status)) => format!("the receiver answered {status}"),
        (None, None) => "no answer".to_owned(),
    };
    conn.transaction::<_, WebhookError, _>(async |conn| {
        diesel::sql_query(
            "INSERT INTO webhook_attempts (delivery_id, started_at, duration_ms, url, \
             request_headers, status_code, response_headers, response_body, error, delivered) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind::<SqlUuid, _>(delivery_id)
        .bind::<Timestamptz, _>(outcome.started_at)
        .bind::<Integer, _>(millis(outcome.duration))
        .bind::<Text, _>(&url)
        .bind::<Jsonb, _>(headers_json(&outcome.request_headers))
        .bind::<Nullable<Integer>, _>(outcome.status.map(i32::from))
        .bind::<Nullable<Jsonb>, _>(
            outcome.status.map(|_| headers_json(&outcome.response_headers)),
        )
        .bind::<Nullable<Binary>, _>(outcome.status.map(|_| outcome.response_body.as_slice()))
        .bind::<Nullable<Text>, _>(outcome.error.as_deref())
        .bind::<Bool, _>(outcome.delivered())
        .execute(conn)
        .await?;
        if outcome.delivered() {
            diesel::sql_query(
                "UPDATE webhook_deliveries SET state = 'delivered', delivered_at = now(), \
                 status_code = $2, duration_ms = $3, error = NULL WHERE id = $1",
            )
            .bind::<SqlUuid, _>(delivery_id)
            .bind::<Nullable<Integer>, _>(outcome.status.map(i32::from))
            .bind::<Integer, _>(millis(outcome.duration))
            .execute(conn)
            .await?;
            diesel::sql_query(
                "UPDATE webhooks SET failures = 0, disabled_until = NULL, disabled_reason = NULL, \
                 last_status = $2, last_message = $3 WHERE id = $1",
            )
            .bind::<BigInt, _>(hook_id)
            .bind::<Nullable<Integer>, _>(outcome.status.map(i32::from))
            .bind::<Text, _>(&message)
            .execute(conn)
            .await?;
            return Ok(Settled::Delivered);
        }
        #[derive(diesel::QueryableByName)]
        struct Failures {
            #[diesel(sql_type = Integer)]
            failures: i32,
        }
        let failures: Failures = diesel::sql_query(
            "UPDATE webhooks SET failures = failures + 1, last_status = $2, last_message = $3 \
             WHERE id = $1 RETURNING failures",
        )
        .bind::<BigInt, _>(hook_id)
        .bind::<Nullable<Integer>, _>(outcome.status.map(i32::from))
        .bind::<Text, _>(&message)
        .get_result(conn)
        .await?;
        let failures = failures.failures;
        let disabled = rules.switch_off(failures, outcome.status);
        if let Some(reason) = &disabled {
            diesel::sql_query(
                "UPDATE webhooks SET active = false, disabled_reason = $2, disabled_until = NULL \
                 WHERE id = $1",
            )
            .bind::<BigInt, _>(hook_id)
            .bind::<Text, _>(reason)
            .execute(conn)
            .await?;
            // Nothing more will be sent to it: its waiting deliveries say why.
            diesel::sql_query(
                "UPDATE webhook_deliveries SET state = 'failed', \
                 error = 'not sent: the hook was switched off (' || $2 || ')' \
                 WHERE hook_id = $1 AND state = 'pending' AND id <> $3",
            )
            .bind::<BigInt, _>(hook_id)
            .bind::<Text, _>(reason)
            .bind::<SqlUuid, _>(delivery_id)
            .execute(conn)
            .await?;
        } else if let Some((pause, reason)) = rules.pause(failures) {
            diesel::sql_query(
                "UPDATE webhooks SET disabled_until = now() + $2, disabled_reason = $3 WHERE id = $1",
            )
            .bind::<BigInt, _>(hook_id)
            .bind::<Interval, _>(interval(pause))
            .bind::<Text, _>(reason)
            .execute(conn)
            .await?;
        }
        let retry_in = rules
            .retry_delay(claimed.attempts, outcome.retry_after)
            .filter(|_| disabled.is_none());
        let settled = match retry_in {
            Some(delay) => {
                #[derive(diesel::QueryableByName)]
                struct Due {
                    #[diesel(sql_type = Timestamptz)]
                    next_attempt_at: DateTime<Utc>,
                }
                let due: Due = diesel::sql_query(
                    "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = now() + $2, \
                     status_code = $3, duration_ms = $4, error = $5 WHERE id = $1 \
                     RETURNING next_attempt_at",
                )
                .bind::<SqlUuid, _>(delivery_id)
                .bind::<Interval, _>(interval(delay))
                .bind::<Nullable<Integer>, _>(outcome.status.map(i32::from))
                .bind::<Integer, _>(millis(outcome.duration))
                .bind::<Text, _>(&message)
                .get_result(conn)
                .await?;
                Settled::Retry(due.next_attempt_at)
            }
            None => {
                diesel::sql_query(
                    "UPDATE webhook_deliveries SET state = 'failed', status_code = $2, \
                     duration_ms = $3, error = $4 WHERE id = $1",
                )
                .bind::<SqlUuid, _>(delivery_id)
                .bind::<Nullable<Integer>, _>(outcome.status.map(i32::from))
                .bind::<Integer, _>(millis(outcome.duration))
                .bind::<Text, _>(&message)
                .execute(conn)
                .await?;
                Settled::Failed
            }
        };
        Ok(settled)
    })
    .await
}

/// The age of the oldest delivery waiting for its first attempt, if any.
pub(super) async fn oldest_waiting(
    conn: &mut AsyncPgConnection,
) -> Result<Option<DateTime<Utc>>, WebhookError> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Nullable<Timestamptz>)]
        oldest: Option<DateTime<Utc>>,
    }
    let row: Row = diesel::sql_query(
        "SELECT min(created_at) AS oldest FROM webhook_deliveries \
         WHERE state = 'pending' AND attempts = 0",
    )
    .get_result(conn)
    .await?;
    Ok(row.oldest)
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
