//! The statements the delivery engine claims and settles deliveries with: a lease per hook,
//! the oldest due delivery under it, and one transaction per attempt.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::OptionalExtension as _;
use diesel::sql_types::{
    BigInt, Binary, Bool, Integer, Interval, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use platform_core::db::PreparedSql;

use super::WebhookError;
use super::client::AttemptOutcome;
use super::deliveries::{ORDER_WAIT, interval};
use super::engine::DeliveryOptions;
use super::hooks::ContentType;

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
    let row: Option<Row> = PreparedSql::new(
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
        content_type: ContentType::parse(&row.content_type),
        secret: row.secret,
        verify_tls: row.verify_tls,
    }))
}

/// Gives the lease back.
pub(super) async fn release(
    conn: &mut AsyncPgConnection,
    lease: &HookLease,
) -> Result<(), WebhookError> {
    PreparedSql::new(
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

/// Renews the lease (once less than half of it is left: a write per attempt would cost more
/// than the attempt's own) and takes the oldest delivery of the hook that is due: a first attempt,
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
    let row: Option<Row> = PreparedSql::new(
        "WITH lease AS ( \
             SELECT id FROM webhooks WHERE id = $1 AND busy_token = $2 AND active \
               AND (disabled_until IS NULL OR disabled_until <= now())), \
         renewed AS ( \
             UPDATE webhooks SET busy_until = now() + $3 \
             WHERE id = $1 AND busy_token = $2 AND busy_until < now() + $3 / 2), \
         mark AS ( \
             SELECT r.hooks_seq FROM repositories r JOIN webhooks h ON h.repository_id = r.id \
             WHERE h.id = $1), \
         next AS ( \
             SELECT d.id FROM webhook_deliveries d, lease, mark \
             WHERE d.hook_id = $1 AND d.state IN ('pending', 'delivering') \
               AND (d.state = 'delivering' OR d.next_attempt_at <= now()) \
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
    let row: Row = PreparedSql::new(
        "SELECT EXISTS (SELECT 1 FROM webhook_deliveries d \
           JOIN webhooks h ON h.id = d.hook_id JOIN repositories r ON r.id = h.repository_id \
           WHERE d.hook_id = $1 AND d.state IN ('pending', 'delivering') \
           AND (d.state = 'delivering' OR d.next_attempt_at <= now()) \
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
    let request_headers = headers_json(&outcome.request_headers);
    let status = outcome.status.map(i32::from);
    let response_headers = outcome.status.map(|_| headers_json(&outcome.response_headers));
    let response_body = outcome.status.map(|_| outcome.response_body.as_slice());
    if outcome.delivered() {
        // The common case in one statement (atomic on its own): a round trip per step would
        // be most of what an attempt costs the database.
        PreparedSql::new(
            "WITH attempt AS ( \
                 INSERT INTO webhook_attempts (delivery_id, started_at, duration_ms, url, \
                 request_headers, status_code, response_headers, response_body, error, delivered) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, true)), \
             delivery AS ( \
                 UPDATE webhook_deliveries SET state = 'delivered', delivered_at = now(), \
                 status_code = $6, duration_ms = $3, error = NULL WHERE id = $1) \
             UPDATE webhooks SET failures = 0, disabled_until = NULL, disabled_reason = NULL, \
             last_status = $6, last_message = $9 WHERE id = $10 \
               AND (failures <> 0 OR disabled_until IS NOT NULL OR disabled_reason IS NOT NULL \
                    OR last_status IS DISTINCT FROM $6 OR last_message IS DISTINCT FROM $9)",
        )
        .bind::<SqlUuid, _>(delivery_id)
        .bind::<Timestamptz, _>(outcome.started_at)
        .bind::<Integer, _>(millis(outcome.duration))
        .bind::<Text, _>(url)
        .bind::<Jsonb, _>(request_headers)
        .bind::<Nullable<Integer>, _>(status)
        .bind::<Nullable<Jsonb>, _>(response_headers)
        .bind::<Nullable<Binary>, _>(response_body.map(<[u8]>::to_vec))
        .bind::<Text, _>(message)
        .bind::<BigInt, _>(hook_id)
        .execute(conn)
        .await?;
        return Ok(Settled::Delivered);
    }
    conn.transaction::<_, WebhookError, _>(async |conn| {
        diesel::sql_query(
            "INSERT INTO webhook_attempts (delivery_id, started_at, duration_ms, url, \
             request_headers, status_code, response_headers, response_body, error, delivered) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, false)",
        )
        .bind::<SqlUuid, _>(delivery_id)
        .bind::<Timestamptz, _>(outcome.started_at)
        .bind::<Integer, _>(millis(outcome.duration))
        .bind::<Text, _>(&url)
        .bind::<Jsonb, _>(&request_headers)
        .bind::<Nullable<Integer>, _>(status)
        .bind::<Nullable<Jsonb>, _>(&response_headers)
        .bind::<Nullable<Binary>, _>(response_body)
        .bind::<Nullable<Text>, _>(outcome.error.as_deref())
        .execute(conn)
        .await?;
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
