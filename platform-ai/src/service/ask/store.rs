//! Conversations, their turns, and each user's daily usage, in PostgreSQL.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::OptionalExtension as _;
use diesel::sql_types::{Array, BigInt, Integer, Interval, Jsonb, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::ask::Exchange;
use crate::chat::Usage;

type Result<T> = std::result::Result<T, diesel::result::Error>;

/// A conversation of one user, with its turns, oldest first.
#[derive(Clone, Debug)]
pub(super) struct Conversation {
    pub id: Uuid,
    pub repository_ids: Vec<i64>,
    pub expires_at: DateTime<Utc>,
    pub turns: Vec<Turn>,
}

#[derive(Clone, Debug, diesel::QueryableByName)]
pub(super) struct Turn {
    #[diesel(sql_type = Text)]
    pub question: String,
    #[diesel(sql_type = Text)]
    pub answer: String,
    #[diesel(sql_type = Jsonb)]
    pub citations: serde_json::Value,
    #[diesel(sql_type = Integer)]
    pub prompt_tokens: i32,
    #[diesel(sql_type = Integer)]
    pub completion_tokens: i32,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

impl Turn {
    pub(super) fn exchange(&self) -> Exchange {
        Exchange { question: self.question.clone(), answer: self.answer.clone() }
    }
}

#[derive(diesel::QueryableByName)]
struct Head {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
    #[diesel(sql_type = Array<BigInt>)]
    repository_ids: Vec<i64>,
    #[diesel(sql_type = Timestamptz)]
    expires_at: DateTime<Utc>,
}

fn interval(ttl: Duration) -> diesel::data_types::PgInterval {
    diesel::data_types::PgInterval::from_microseconds(
        i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX),
    )
}

/// `user_id`'s conversation `id`, unless it has expired.
pub(super) async fn find(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    user_id: i64,
) -> Result<Option<Conversation>> {
    let head: Option<Head> = diesel::sql_query(
        "SELECT id, repository_ids, expires_at FROM ask_conversations \
         WHERE id = $1 AND user_id = $2 AND expires_at > now()",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .bind::<BigInt, _>(user_id)
    .get_result(conn)
    .await
    .optional()?;
    let Some(head) = head else { return Ok(None) };
    let turns: Vec<Turn> = diesel::sql_query(
        "SELECT question, answer, citations, prompt_tokens, completion_tokens, created_at \
         FROM ask_turns WHERE conversation_id = $1 ORDER BY position",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .load(conn)
    .await?;
    Ok(Some(Conversation {
        id: head.id,
        repository_ids: head.repository_ids,
        expires_at: head.expires_at,
        turns,
    }))
}

/// Starts conversation `id` of `user_id` about `repository_ids` (sorted), and deletes every
/// conversation that has expired.
pub(super) async fn create(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    user_id: i64,
    repository_ids: &[i64],
    ttl: Duration,
) -> Result<()> {
    diesel::sql_query("DELETE FROM ask_conversations WHERE expires_at <= now()")
        .execute(conn)
        .await?;
    diesel::sql_query(
        "INSERT INTO ask_conversations (id, user_id, repository_ids, expires_at) \
         VALUES ($1, $2, $3, now() + $4)",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .bind::<BigInt, _>(user_id)
    .bind::<Array<BigInt>, _>(repository_ids)
    .bind::<Interval, _>(interval(ttl))
    .execute(conn)
    .await?;
    Ok(())
}

/// What one answered question leaves behind.
pub(super) struct Answered<'a> {
    pub question: &'a str,
    pub answer: &'a str,
    pub citations: serde_json::Value,
    pub usage: Usage,
}

/// Adds a turn to conversation `id` and keeps it for `ttl` from now.
pub(super) async fn append(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    turn: Answered<'_>,
    ttl: Duration,
) -> Result<()> {
    diesel::sql_query(
        "INSERT INTO ask_turns (conversation_id, position, question, answer, citations, \
                                prompt_tokens, completion_tokens) \
         SELECT $1, COALESCE(MAX(position), 0) + 1, $2, $3, $4, $5, $6 \
         FROM ask_turns WHERE conversation_id = $1",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .bind::<Text, _>(turn.question)
    .bind::<Text, _>(turn.answer)
    .bind::<Jsonb, _>(turn.citations)
    .bind::<Integer, _>(i32::try_from(turn.usage.prompt_tokens).unwrap_or(i32::MAX))
    .bind::<Integer, _>(i32::try_from(turn.usage.completion_tokens).unwrap_or(i32::MAX))
    .execute(conn)
    .await?;
    diesel::sql_query("UPDATE ask_conversations SET expires_at = now() + $2 WHERE id = $1")
        .bind::<diesel::sql_types::Uuid, _>(id)
        .bind::<Interval, _>(interval(ttl))
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes `user_id`'s conversation `id`; whether there was one.
pub(super) async fn delete(conn: &mut AsyncPgConnection, id: Uuid, user_id: i64) -> Result<bool> {
    let deleted = diesel::sql_query("DELETE FROM ask_conversations WHERE id = $1 AND user_id = $2")
        .bind::<diesel::sql_types::Uuid, _>(id)
        .bind::<BigInt, _>(user_id)
        .execute(conn)
        .await?;
    Ok(deleted > 0)
}

/// A user's usage on one day (UTC).
#[derive(Clone, Copy, Debug, Default, diesel::QueryableByName)]
pub(super) struct DailyUsage {
    #[diesel(sql_type = Integer)]
    pub requests: i32,
    #[diesel(sql_type = BigInt)]
    pub prompt_tokens: i64,
    #[diesel(sql_type = BigInt)]
    pub completion_tokens: i64,
}

impl DailyUsage {
    pub(super) fn tokens(&self) -> u64 {
        u64::try_from(self.prompt_tokens + self.completion_tokens).unwrap_or(0)
    }
}

/// `user_id`'s usage today (UTC).
pub(super) async fn usage_today(conn: &mut AsyncPgConnection, user_id: i64) -> Result<DailyUsage> {
    let found: Option<DailyUsage> = diesel::sql_query(
        "SELECT requests, prompt_tokens, completion_tokens FROM ai_usage \
         WHERE user_id = $1 AND day = (now() AT TIME ZONE 'UTC')::date",
    )
    .bind::<BigInt, _>(user_id)
    .get_result(conn)
    .await
    .optional()?;
    Ok(found.unwrap_or_default())
}

/// Adds one request's `usage` to `user_id`'s day.
pub(super) async fn record_usage(
    conn: &mut AsyncPgConnection,
    user_id: i64,
    usage: Usage,
) -> Result<()> {
    diesel::sql_query(
        "INSERT INTO ai_usage (user_id, day, requests, prompt_tokens, completion_tokens) \
         VALUES ($1, (now() AT TIME ZONE 'UTC')::date, 1, $2, $3) \
         ON CONFLICT (user_id, day) DO UPDATE SET requests = ai_usage.requests + 1, \
           prompt_tokens = ai_usage.prompt_tokens + $2, \
           completion_tokens = ai_usage.completion_tokens + $3",
    )
    .bind::<BigInt, _>(user_id)
    .bind::<BigInt, _>(i64::from(usage.prompt_tokens))
    .bind::<BigInt, _>(i64::from(usage.completion_tokens))
    .execute(conn)
    .await
    .map(drop)
}
