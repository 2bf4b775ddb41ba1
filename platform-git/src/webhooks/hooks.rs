//! Hook records: the `webhooks` table.

use chrono::{DateTime, Utc};
use diesel::OptionalExtension as _;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};

use super::{HookEvent, WebhookError};

/// How a payload is put in the request body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContentType {
    /// `application/json`: the payload is the body.
    #[default]
    Json,
    /// `application/x-www-form-urlencoded`: the body is `payload=<the JSON, percent-encoded>`.
    Form,
}

impl ContentType {
    /// `json` or `form`, as stored and as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Form => "form",
        }
    }

    pub(super) fn parse(name: &str) -> Self {
        if name == "form" { Self::Form } else { Self::Json }
    }
}

/// What a hook listens to: some events, or every event (`*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventSet {
    /// Every event, including ones added later.
    All,
    /// These events.
    Only(Vec<HookEvent>),
}

impl EventSet {
    /// Reads the API's list (`["push", "create"]`, `["*"]`); an empty list means `push`, as on
    /// GitHub.
    ///
    /// # Errors
    ///
    /// [`super::UnknownEvent`] names the first name that is not an event.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, super::UnknownEvent> {
        if names.iter().any(|name| name.as_ref() == "*") {
            return Ok(Self::All);
        }
        if names.is_empty() {
            return Ok(Self::Only(vec![HookEvent::Push]));
        }
        let mut events = names
            .iter()
            .map(|name| name.as_ref().parse())
            .collect::<Result<Vec<HookEvent>, _>>()?;
        events.sort();
        events.dedup();
        Ok(Self::Only(events))
    }

    /// Whether `event` is sent. A ping always is.
    pub fn includes(&self, event: HookEvent) -> bool {
        event == HookEvent::Ping
            || match self {
                Self::All => true,
                Self::Only(events) => events.contains(&event),
            }
    }

    /// The names, as stored and as the API lists them.
    pub fn names(&self) -> Vec<String> {
        match self {
            Self::All => vec!["*".to_owned()],
            Self::Only(events) => events.iter().map(|event| event.as_str().to_owned()).collect(),
        }
    }

    fn from_stored(names: &[String]) -> Self {
        // Stored names were parsed on the way in; an unknown one (from a newer version) is
        // skipped rather than failing every read of the hook.
        if names.iter().any(|name| name == "*") {
            return Self::All;
        }
        Self::Only(names.iter().filter_map(|name| name.parse().ok()).collect())
    }
}

/// A hook as the API shows it: everything but the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    /// Its id.
    pub id: i64,
    /// The repository it belongs to.
    pub repository_id: i64,
    /// Where payloads are posted.
    pub url: String,
    /// How they are encoded.
    pub content_type: ContentType,
    /// Whether deliveries are signed.
    pub has_secret: bool,
    /// What it listens to.
    pub events: EventSet,
    /// Whether it is sent anything at all.
    pub active: bool,
    /// Whether HTTPS certificates are checked (on unless turned off for this hook).
    pub verify_tls: bool,
    /// Failed attempts since the last success.
    pub failures: i32,
    /// While set and in the future, deliveries wait: the receiver kept failing.
    pub disabled_until: Option<DateTime<Utc>>,
    /// Why it was paused or switched off, when it was.
    pub disabled_reason: Option<String>,
    /// The status code of the last answer, if one came.
    pub last_status: Option<i32>,
    /// What the last attempt came to: `OK`, or what failed.
    pub last_message: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its settings last changed.
    pub updated_at: DateTime<Utc>,
}

#[derive(diesel::QueryableByName)]
struct HookRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    repository_id: i64,
    #[diesel(sql_type = Text)]
    url: String,
    #[diesel(sql_type = Text)]
    content_type: String,
    #[diesel(sql_type = Bool)]
    has_secret: bool,
    #[diesel(sql_type = Array<Text>)]
    events: Vec<String>,
    #[diesel(sql_type = Bool)]
    active: bool,
    #[diesel(sql_type = Bool)]
    verify_tls: bool,
    #[diesel(sql_type = Integer)]
    failures: i32,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    disabled_until: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    disabled_reason: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    last_status: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    last_message: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    updated_at: DateTime<Utc>,
}

impl From<HookRow> for Hook {
    fn from(row: HookRow) -> Self {
        Self {
            id: row.id,
            repository_id: row.repository_id,
            url: row.url,
            content_type: ContentType::parse(&row.content_type),
            has_secret: row.has_secret,
            events: EventSet::from_stored(&row.events),
            active: row.active,
            verify_tls: row.verify_tls,
            failures: row.failures,
            disabled_until: row.disabled_until,
            disabled_reason: row.disabled_reason,
            last_status: row.last_status,
            last_message: row.last_message,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

const COLUMNS: &str = "id, repository_id, url, content_type, secret IS NOT NULL AS has_secret, \
                       events, active, verify_tls, failures, disabled_until, disabled_reason, \
                       last_status, last_message, created_at, updated_at";

/// What a new hook is made of.
#[derive(Clone, Debug)]
pub struct NewHook {
    /// Where payloads are posted (already checked by the SSRF guard).
    pub url: String,
    /// How they are encoded.
    pub content_type: ContentType,
    /// The HMAC key, if deliveries are to be signed.
    pub secret: Option<String>,
    /// What it listens to.
    pub events: EventSet,
    /// Whether it is sent anything.
    pub active: bool,
    /// Whether HTTPS certificates are checked.
    pub verify_tls: bool,
}

/// Changes to a hook; `None` leaves a setting as it is.
#[derive(Clone, Debug, Default)]
pub struct HookChanges {
    /// A new payload URL (already checked by the SSRF guard).
    pub url: Option<String>,
    /// A new encoding.
    pub content_type: Option<ContentType>,
    /// A new secret; `Some(None)` removes it.
    pub secret: Option<Option<String>>,
    /// New events.
    pub events: Option<EventSet>,
    /// Switched on or off. Switching on also clears a pause and the failure count.
    pub active: Option<bool>,
    /// Certificate checks on or off.
    pub verify_tls: Option<bool>,
}

/// Inserts a hook for `repository_id`.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn create(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
    hook: NewHook,
) -> Result<Hook, WebhookError> {
    let row: HookRow = diesel::sql_query(format!(
        "INSERT INTO webhooks (repository_id, url, content_type, secret, events, active, verify_tls) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    ))
    .bind::<BigInt, _>(repository_id)
    .bind::<Text, _>(&hook.url)
    .bind::<Text, _>(hook.content_type.as_str())
    .bind::<Nullable<Text>, _>(hook.secret.as_deref())
    .bind::<Array<Text>, _>(hook.events.names())
    .bind::<Bool, _>(hook.active)
    .bind::<Bool, _>(hook.verify_tls)
    .get_result(conn)
    .await?;
    Ok(row.into())
}

/// The hooks of a repository, oldest first.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn list(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
) -> Result<Vec<Hook>, WebhookError> {
    let rows: Vec<HookRow> = diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM webhooks WHERE repository_id = $1 ORDER BY id"
    ))
    .bind::<BigInt, _>(repository_id)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(Hook::from).collect())
}

/// The hook `id` of a repository.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn find(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
    id: i64,
) -> Result<Option<Hook>, WebhookError> {
    let row: Option<HookRow> = diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM webhooks WHERE repository_id = $1 AND id = $2"
    ))
    .bind::<BigInt, _>(repository_id)
    .bind::<BigInt, _>(id)
    .get_result(conn)
    .await
    .optional()?;
    Ok(row.map(Hook::from))
}

/// Applies `changes` to the hook `id` of a repository; `None` when there is no such hook.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn update(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
    id: i64,
    changes: HookChanges,
) -> Result<Option<Hook>, WebhookError> {
    let (set_secret, secret) = match changes.secret {
        Some(secret) => (true, secret),
        None => (false, None),
    };
    let row: Option<HookRow> = diesel::sql_query(format!(
        "UPDATE webhooks SET \
           url = COALESCE($3, url), \
           content_type = COALESCE($4, content_type), \
           secret = CASE WHEN $5 THEN $6 ELSE secret END, \
           events = COALESCE($7, events), \
           verify_tls = COALESCE($9, verify_tls), \
           failures = CASE WHEN $8 IS TRUE THEN 0 ELSE failures END, \
           disabled_until = CASE WHEN $8 IS TRUE THEN NULL ELSE disabled_until END, \
           disabled_reason = CASE WHEN $8 IS NOT NULL THEN NULL ELSE disabled_reason END, \
           active = COALESCE($8, active), \
           updated_at = now() \
         WHERE repository_id = $1 AND id = $2 RETURNING {COLUMNS}"
    ))
    .bind::<BigInt, _>(repository_id)
    .bind::<BigInt, _>(id)
    .bind::<Nullable<Text>, _>(changes.url.as_deref())
    .bind::<Nullable<Text>, _>(changes.content_type.map(ContentType::as_str))
    .bind::<Bool, _>(set_secret)
    .bind::<Nullable<Text>, _>(secret.as_deref())
    .bind::<Nullable<Array<Text>>, _>(changes.events.as_ref().map(EventSet::names))
    .bind::<Nullable<Bool>, _>(changes.active)
    .bind::<Nullable<Bool>, _>(changes.verify_tls)
    .get_result(conn)
    .await
    .optional()?;
    Ok(row.map(Hook::from))
}

/// Deletes the hook `id` of a repository, with its deliveries; whether there was one.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn delete(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
    id: i64,
) -> Result<bool, WebhookError> {
    let deleted = diesel::sql_query("DELETE FROM webhooks WHERE repository_id = $1 AND id = $2")
        .bind::<BigInt, _>(repository_id)
        .bind::<BigInt, _>(id)
        .execute(conn)
        .await?;
    Ok(deleted > 0)
}

/// The active hooks of a repository that listen to any of `events`.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn listening(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
    events: &[HookEvent],
) -> Result<Vec<Hook>, WebhookError> {
    let names: Vec<&str> = events.iter().map(|event| event.as_str()).chain(["*"]).collect();
    let rows: Vec<HookRow> = diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM webhooks WHERE repository_id = $1 AND active AND events && $2 \
         ORDER BY id"
    ))
    .bind::<BigInt, _>(repository_id)
    .bind::<Array<Text>, _>(names)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(Hook::from).collect())
}
