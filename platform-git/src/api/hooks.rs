//! The webhook routes, in GitHub's shapes (`/repos/{owner}/{repo}/hooks`).
//!
//! | method | path | answer |
//! |---|---|---|
//! | `GET` | `/api/repos/{owner}/{name}/hooks` | 200 and the hooks |
//! | `POST` | `/api/repos/{owner}/{name}/hooks` | 201 and the hook; a `ping` is sent |
//! | `GET` | `/api/repos/{owner}/{name}/hooks/{id}` | 200 and the hook |
//! | `PATCH` | `/api/repos/{owner}/{name}/hooks/{id}` | 200 and the hook |
//! | `DELETE` | `/api/repos/{owner}/{name}/hooks/{id}` | 204, with its deliveries |
//! | `POST` | `/api/repos/{owner}/{name}/hooks/{id}/pings` | 204; a `ping` is sent |
//! | `POST` | `/api/repos/{owner}/{name}/hooks/{id}/tests` | 204; the default branch's last commit is sent as a `push` |
//! | `GET` | `/api/repos/{owner}/{name}/hooks/{id}/deliveries` | 200 and a page of deliveries, newest first |
//! | `GET` | `/api/repos/{owner}/{name}/hooks/{id}/deliveries/{delivery_id}` | 200, the delivery with its request, response and every attempt |
//! | `POST` | `/api/repos/{owner}/{name}/hooks/{id}/deliveries/{delivery_id}/attempts` | 202; sent again under the same id |
//!
//! Every route needs admin access to the repository (its owner, an admin collaborator or a
//! platform administrator); others see 404 for a repository they cannot read and 403 for one
//! they can. The secret is write-only: no answer contains it.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum_extra::extract::SignedCookieJar;
use chrono::{DateTime, Utc};
use platform_core::accounts::{Caller, Scope};
use platform_core::api::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use serde::{Deserialize, Serialize};
use url::Url;

use super::browse::PageQuery;
use super::{RepoApi, RepoPath, repository_for, viewer};
use crate::events::{PushEvent, RefChange};
use crate::permissions::Access;
use crate::records::RepoRecord;
use crate::webhooks::deliveries::{self, Delivery, DeliveryDetail, DeliveryState};
use crate::webhooks::engine::{DELIVERY_STREAM, Wake};
use crate::webhooks::hooks::{self, ContentType, EventSet, Hook, HookChanges, NewHook};
use crate::webhooks::payload::{self, EventPayload, PayloadContext, Person};
use crate::webhooks::{HookEvent, WebhookError};

/// The longest payload URL accepted.
const MAX_URL_CHARS: usize = 2048;

/// The longest secret accepted.
const MAX_SECRET_CHARS: usize = 255;

/// The owner, name and hook id in a hook route.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct HookPath {
    /// The owner's user name.
    pub owner: String,
    /// The repository's name.
    pub name: String,
    /// The hook's id.
    pub id: i64,
}

/// The owner, name, hook id and delivery id in a delivery route.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DeliveryPath {
    /// The owner's user name.
    pub owner: String,
    /// The repository's name.
    pub name: String,
    /// The hook's id.
    pub id: i64,
    /// The delivery's id (`X-GitHub-Delivery`).
    pub delivery_id: uuid::Uuid,
}

/// `insecure_ssl` as GitHub takes it: `"0"`/`"1"`, `0`/`1`, or a boolean.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum InsecureSsl {
    /// `"0"` or `"1"`.
    Text(String),
    /// `0` or `1`.
    Number(u8),
    /// `false` or `true`.
    Flag(bool),
}

impl InsecureSsl {
    fn verify_tls(&self) -> Result<bool, ApiError> {
        match self {
            Self::Text(text) if text == "0" => Ok(true),
            Self::Text(text) if text == "1" => Ok(false),
            Self::Number(0) | Self::Flag(false) => Ok(true),
            Self::Number(1) | Self::Flag(true) => Ok(false),
            _ => {
                Err(ApiError::invalid("config.insecure_ssl", "insecure_ssl must be \"0\" or \"1\""))
            }
        }
    }
}

/// A hook's configuration, as written.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct HookConfigInput {
    /// The payload URL: `http` or `https`, no user or password in it.
    #[schema(max_length = 2048)]
    pub url: Option<String>,
    /// `json` (default) or `form`.
    pub content_type: Option<ContentType>,
    /// The HMAC key deliveries are signed with (never shown again); an empty string removes it.
    #[schema(max_length = 255)]
    pub secret: Option<String>,
    /// `"1"` turns certificate checks off for this hook (default `"0"`: on).
    pub insecure_ssl: Option<InsecureSsl>,
}

/// The body of `POST /api/repos/{owner}/{name}/hooks`.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateHook {
    /// Must be `web` when given, as on GitHub.
    pub name: Option<String>,
    /// Where and how to deliver.
    pub config: HookConfigInput,
    /// `push`, `create`, `delete`, `repository`, `ping`, or `*` for all (default `["push"]`).
    #[serde(default)]
    pub events: Vec<String>,
    /// Whether anything is sent (default true).
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

/// The body of `PATCH /api/repos/{owner}/{name}/hooks/{id}`: absent fields keep their value.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct UpdateHook {
    /// Configuration fields to change.
    pub config: Option<HookConfigInput>,
    /// The events, replacing the list.
    pub events: Option<Vec<String>>,
    /// Events to add to the list.
    pub add_events: Option<Vec<String>>,
    /// Events to take from the list.
    pub remove_events: Option<Vec<String>>,
    /// On or off. Switching a paused or switched-off hook on clears its failures.
    pub active: Option<bool>,
}

/// A hook's configuration, as shown: never the secret.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HookConfig {
    /// The payload URL.
    pub url: String,
    /// `json` or `form`.
    pub content_type: ContentType,
    /// `"0"` when certificates are checked, `"1"` when not.
    pub insecure_ssl: String,
    /// Whether deliveries are signed.
    pub has_secret: bool,
}

/// How the last attempt went, as GitHub shows it.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LastResponse {
    /// The status code, when an answer came.
    pub code: Option<i32>,
    /// `unused` before the first attempt, `active` after a success, `failed` after a failure.
    pub status: String,
    /// What happened.
    pub message: Option<String>,
}

/// A hook, as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HookView {
    /// Always `Repository`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its id.
    pub id: i64,
    /// Always `web`.
    pub name: String,
    /// Whether anything is sent.
    pub active: bool,
    /// What it listens to.
    pub events: Vec<String>,
    /// Where and how.
    pub config: HookConfig,
    /// While in the future, deliveries wait: the receiver kept failing.
    pub disabled_until: Option<DateTime<Utc>>,
    /// Why it was paused or switched off.
    pub disabled_reason: Option<String>,
    /// Failed attempts since the last success.
    pub failures: i32,
    /// How the last attempt went.
    pub last_response: LastResponse,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its settings last changed.
    pub updated_at: DateTime<Utc>,
    /// This hook in the API.
    pub url: String,
    /// Where to ask for a test push.
    pub test_url: String,
    /// Where to ask for a ping.
    pub ping_url: String,
    /// Its deliveries.
    pub deliveries_url: String,
}

/// One delivery, as listed.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryView {
    /// Its id, the `X-GitHub-Delivery` header.
    pub id: uuid::Uuid,
    /// The same id, under GitHub's name for it.
    pub guid: uuid::Uuid,
    /// `pending`, `delivering`, `delivered` or `failed`.
    pub state: DeliveryState,
    /// The event.
    pub event: String,
    /// The event's action.
    pub action: Option<String>,
    /// Attempts made.
    pub attempts: i32,
    /// Whether it was asked to be sent again.
    pub redelivery: bool,
    /// `OK` once delivered, else what the last attempt came to.
    pub status: String,
    /// The last answer's status code (0 when none came, as on GitHub).
    pub status_code: i32,
    /// Seconds the last attempt took.
    pub duration: Option<f64>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When the receiver accepted it.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The repository's id.
    pub repository_id: i64,
}

/// A request or response, as recorded.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Exchange {
    /// Headers, by name (repeated names joined with `, `).
    pub headers: serde_json::Map<String, serde_json::Value>,
    /// The body: the payload as sent, or the first 64 KiB of the answer as text.
    pub payload: Option<String>,
}

/// One attempt of a delivery.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptView {
    /// When it began.
    pub started_at: DateTime<Utc>,
    /// Seconds it took.
    pub duration: f64,
    /// Where it went.
    pub url: String,
    /// The status code, 0 when no answer came.
    pub status_code: i32,
    /// What failed, if anything.
    pub error: Option<String>,
    /// Whether the receiver accepted it.
    pub delivered: bool,
    /// What was sent (headers; the payload is the delivery's).
    pub request: Exchange,
    /// What came back.
    pub response: Exchange,
}

/// One delivery with its request, its last response, and every attempt.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryDetailView {
    /// The delivery.
    #[serde(flatten)]
    pub delivery: DeliveryView,
    /// The last request: its headers and the payload.
    pub request: Exchange,
    /// The last response.
    pub response: Exchange,
    /// Every attempt, oldest first.
    pub attempts_made: Vec<AttemptView>,
}

fn webhook_error(error: WebhookError) -> ApiError {
    ApiError::internal(error)
}

fn check_url(url: &str) -> Result<Url, ApiError> {
    let invalid = |message: String| ApiError::invalid("config.url", message);
    if url.is_empty() || url.chars().count() > MAX_URL_CHARS {
        return Err(invalid("url must have 1 to 2048 characters".to_owned()));
    }
    let parsed = Url::parse(url).map_err(|error| invalid(format!("url is not a URL: {error}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("url must start with http:// or https://".to_owned()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid(
            "url must not hold a user name or password: use the secret to authenticate".to_owned(),
        ));
    }
    if parsed.host().is_none() {
        return Err(invalid("url must name a host".to_owned()));
    }
    Ok(parsed)
}

fn check_secret(secret: &str) -> Result<Option<String>, ApiError> {
    if secret.is_empty() {
        return Ok(None);
    }
    if secret.chars().count() > MAX_SECRET_CHARS {
        return Err(ApiError::invalid("config.secret", "secret must have at most 255 characters"));
    }
    Ok(Some(secret.to_owned()))
}

fn events(names: &[String], field: &'static str) -> Result<EventSet, ApiError> {
    EventSet::parse(names).map_err(|error| ApiError::invalid(field, error.to_string()))
}

impl RepoApi {
    /// Checks `url` and what its host resolves to against the SSRF guard.
    async fn guard_url(&self, url: &str) -> Result<String, ApiError> {
        let parsed = check_url(url)?;
        self.webhook_guard
            .check_url(&parsed)
            .await
            .map_err(|error| ApiError::invalid("config.url", error.to_string()))?;
        Ok(parsed.to_string())
    }

    fn hook_view(&self, repo: &RepoRecord, hook: Hook) -> HookView {
        let base = self.public_url.as_str().trim_end_matches('/');
        let url = format!("{base}/api/repos/{}/{}/hooks/{}", repo.owner, repo.name, hook.id);
        let status = match (&hook.last_message, hook.last_status) {
            (None, _) => "unused",
            (Some(_), Some(code)) if (200..300).contains(&code) => "active",
            (Some(_), _) => "failed",
        };
        HookView {
            kind: "Repository".to_owned(),
            id: hook.id,
            name: "web".to_owned(),
            active: hook.active,
            events: hook.events.names(),
            config: HookConfig {
                url: hook.url,
                content_type: hook.content_type,
                insecure_ssl: if hook.verify_tls { "0" } else { "1" }.to_owned(),
                has_secret: hook.has_secret,
            },
            disabled_until: hook.disabled_until.filter(|until| *until > Utc::now()),
            disabled_reason: hook.disabled_reason,
            failures: hook.failures,
            last_response: LastResponse {
                code: hook.last_status,
                status: status.to_owned(),
                message: hook.last_message,
            },
            created_at: hook.created_at,
            updated_at: hook.updated_at,
            test_url: format!("{url}/tests"),
            ping_url: format!("{url}/pings"),
            deliveries_url: format!("{url}/deliveries"),
            url,
        }
    }

    /// The caller, the repository (admin access needed) and, for hook routes, the hook.
    async fn hook_target(
        &self,
        caller: &Caller,
        owner: &str,
        name: &str,
        hook_id: Option<i64>,
    ) -> Result<(RepoRecord, Option<Hook>), ApiError> {
        let mut conn = self.connection().await?;
        let path = RepoPath { owner: owner.to_owned(), name: name.to_owned() };
        let (repo, _) =
            repository_for(&mut conn, &path, Some(viewer(caller)), Access::Admin).await?;
        let Some(hook_id) = hook_id else { return Ok((repo, None)) };
        let hook = hooks::find(&mut conn, repo.id, hook_id)
            .await
            .map_err(webhook_error)?
            .ok_or(ApiError::NotFound { what: "hook" })?;
        Ok((repo, Some(hook)))
    }
}

fn delivery_view(delivery: Delivery, repository_id: i64) -> DeliveryView {
    let status = match (delivery.state, &delivery.error) {
        (DeliveryState::Delivered, _) => "OK".to_owned(),
        (_, Some(error)) => error.clone(),
        (DeliveryState::Pending, None) => "pending".to_owned(),
        (DeliveryState::Delivering, None) => "delivering".to_owned(),
        (DeliveryState::Failed, None) => "failed".to_owned(),
    };
    DeliveryView {
        id: delivery.id,
        guid: delivery.id,
        state: delivery.state,
        event: delivery.event,
        action: delivery.action,
        attempts: delivery.attempts,
        redelivery: delivery.redelivery,
        status,
        status_code: delivery.status_code.unwrap_or(0),
        duration: delivery.duration_ms.map(|ms| f64::from(ms) / 1000.0),
        created_at: delivery.created_at,
        delivered_at: delivery.delivered_at,
        next_attempt_at: (delivery.state == DeliveryState::Pending)
            .then_some(delivery.next_attempt_at),
        repository_id,
    }
}

fn header_map(headers: &[(String, String)]) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    for (name, value) in headers {
        let joined = match map.get(name).and_then(serde_json::Value::as_str) {
            Some(before) => format!("{before}, {value}"),
            None => value.clone(),
        };
        map.insert(name.clone(), serde_json::Value::String(joined));
    }
    map
}

fn detail_view(detail: DeliveryDetail, repository_id: i64) -> DeliveryDetailView {
    let attempts: Vec<AttemptView> = detail
        .attempts
        .into_iter()
        .map(|attempt| AttemptView {
            started_at: attempt.started_at,
            duration: f64::from(attempt.duration_ms) / 1000.0,
            url: attempt.url,
            status_code: attempt.status_code.unwrap_or(0),
            error: attempt.error,
            delivered: attempt.delivered,
            request: Exchange { headers: header_map(&attempt.request_headers), payload: None },
            response: Exchange {
                headers: header_map(&attempt.response_headers),
                payload: attempt
                    .status_code
                    .map(|_| String::from_utf8_lossy(&attempt.response_body).into_owned()),
            },
        })
        .collect();
    let last = attempts.last();
    let request = Exchange {
        headers: last.map(|attempt| attempt.request.headers.clone()).unwrap_or_default(),
        payload: Some(detail.payload),
    };
    let response = last
        .map(|attempt| attempt.response.clone())
        .unwrap_or(Exchange { headers: serde_json::Map::new(), payload: None });
    DeliveryDetailView {
        delivery: delivery_view(detail.delivery, repository_id),
        request,
        response,
        attempts_made: attempts,
    }
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/hooks",
    tag = "webhooks",
    params(RepoPath),
    responses(
        (status = 200, description = "The repository's hooks", body = Vec<HookView>),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Needs admin access", body = ErrorBody),
        (status = 404, description = "No such repository, or one the caller cannot see", body = ErrorBody)
    )
)]
pub(super) async fn list_hooks(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RepoPath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<axum::Json<Vec<HookView>>, ApiError> {
    let caller = api.accounts.authenticate(&jar, &headers).await?;
    let (repo, _) = api.hook_target(&caller, &path.owner, &path.name, None).await?;
    let mut conn = api.connection().await?;
    let hooks = hooks::list(&mut conn, repo.id).await.map_err(webhook_error)?;
    Ok(axum::Json(hooks.into_iter().map(|hook| api.hook_view(&repo, hook)).collect()))
}

#[utoipa::path(
    post,
    path = "/api/repos/{owner}/{name}/hooks",
    tag = "webhooks",
    params(RepoPath),
    request_body = CreateHook,
    responses(
        (status = 201, description = "The hook; a ping is on its way", body = HookView),
        (status = 400, description = "Malformed request body", body = ErrorBody),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Needs admin access, the repo:write scope or a CSRF token", body = ErrorBody),
        (status = 404, description = "No such repository, or one the caller cannot see", body = ErrorBody),
        (status = 422, description = "A field breaks a rule, or the URL's host is not allowed", body = ErrorBody)
    )
)]
pub(super) async fn create_hook(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RepoPath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
    ApiJson(request): ApiJson<CreateHook>,
) -> Result<impl IntoResponse, ApiError> {
    let caller = api.accounts.authorize_write(&jar, &headers, Scope::RepoWrite).await?;
    let (repo, _) = api.hook_target(&caller, &path.owner, &path.name, None).await?;
    if request.name.as_deref().is_some_and(|name| name != "web") {
        return Err(ApiError::invalid("name", "name must be \"web\""));
    }
    let url = request
        .config
        .url
        .as_deref()
        .ok_or_else(|| ApiError::invalid("config.url", "config.url is required"))?;
    let events = events(&request.events, "events")?;
    let secret = match request.config.secret.as_deref() {
        Some(secret) => check_secret(secret)?,
        None => None,
    };
    let verify_tls = match &request.config.insecure_ssl {
        Some(insecure) => insecure.verify_tls()?,
        None => true,
    };
    let url = api.guard_url(url).await?;
    let new = NewHook {
        url,
        content_type: request.config.content_type.unwrap_or_default(),
        secret,
        events,
        active: request.active,
        verify_tls,
    };
    let mut conn = api.connection().await?;
    let hook = hooks::create(&mut conn, repo.id, new).await.map_err(webhook_error)?;
    drop(conn);
    tracing::info!(repository = repo.id, hook = hook.id, "webhook created");
    if hook.active {
        api.send_ping(&repo, &hook, &caller).await?;
    }
    Ok((StatusCode::CREATED, axum::Json(api.hook_view(&repo, hook))))
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/hooks/{id}",
    tag = "webhooks",
    params(HookPath),
    responses(
        (status = 200, description = "The hook", body = HookView),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Needs admin access", body = ErrorBody),
        (status = 404, description = "No such repository or hook", body = ErrorBody)
    )
)]
pub(super) async fn get_hook(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<HookPath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<axum::Json<HookView>, ApiError> {
    let caller = api.accounts.authenticate(&jar, &headers).await?;
    let (repo, hook) = api.hook_target(&caller, &path.owner, &path.name, Some(path.id)).await?;
    let hook = hook.ok_or(ApiError::NotFound { what: "hook" })?;
    Ok(axum::Json(api.hook_view(&repo, hook)))
}

#[utoipa::path(
    patch,
    path = "/api/repos/{owner}/{name}/hooks/{id}",
    tag = "webhooks",
    params(HookPath),
    request_body = UpdateHook,
    responses(
        (status = 200, description = "The hook as it now is", body = HookView),
        (status = 400, description = "Malformed request body", body = ErrorBody),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Needs admin access, the repo:write scope or a CSRF token", body = ErrorBody),
        (status = 404, description = "No such repository or hook", body = ErrorBody),
        (status = 422, description = "A field breaks a rule, or the URL's host is not allowed", body = ErrorBody)
    )
)]
pub(super) async fn update_hook(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<HookPath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
    ApiJson(request): ApiJson<UpdateHook>,
) -> Result<axum::Json<HookView>, ApiError> {
    let caller = api.accounts.authorize_write(&jar, &headers, Scope::RepoWrite).await?;
    let (repo, hook) = api.hook_target(&caller, &path.owner, &path.name, Some(path.id)).await?;
    let hook = hook.ok_or(ApiError::NotFound { what: "hook" })?;
    let config = request.config.unwrap_or_default();
    let mut changes = HookChanges {
        content_type: config.content_type,
        active: request.active,
        ..HookChanges::default()
    };
    if let Some(url) = config.url.as_deref() {
        changes.url = Some(api.guard_url(url).await?);
    }
    if let Some(secret) = config.secret.as_deref() {
        changes.secret = Some(check_secret(secret)?);
    }
    if let Some(insecure) = &config.insecure_ssl {
        changes.verify_tls = Some(insecure.verify_tls()?);
    }
    let mut names = match &request.events {
        Some(names) => {
            events(names, "events")?;
            Some(names.clone())
        }
        None => None,
    };
    if request.add_events.is_some() || request.remove_events.is_some() {
        let mut current = names.take().unwrap_or_else(|| hook.events.names());
        if let Some(add) = &request.add_events {
            events(add, "add_events")?;
            current.extend(add.iter().cloned());
        }
        if let Some(remove) = &request.remove_events {
            events(remove, "remove_events")?;
            current.retain(|name| !remove.contains(name));
        }
        names = Some(current);
    }
    if let Some(names) = names {
        changes.events = Some(events(&names, "events")?);
    }
    let mut conn = api.connection().await?;
    let hook = hooks::update(&mut conn, repo.id, hook.id, changes)
        .await
        .map_err(webhook_error)?
        .ok_or(ApiError::NotFound { what: "hook" })?;
    tracing::info!(repository = repo.id, hook = hook.id, "webhook changed");
    Ok(axum::Json(api.hook_view(&repo, hook)))
}

#[utoipa::path(
    delete,
    path = "/api/repos/{owner}/{name}/hooks/{id}",
    tag = "webhooks",
    params(HookPath),
    responses(
        (status = 204, description = "Deleted, with its deliveries"),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Needs admin access, the repo:write scope or a CSRF token", body = ErrorBody),
        (status = 404, description = "No such repository or hook", body = ErrorBody)
    )
)]
pub(super) async fn delete_hook(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<HookPath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<StatusCode, ApiError> {
    let caller = api.accounts.authorize_write(&jar, &headers, Scope::RepoWrite).await?;
    let (repo, _) = api.hook_target(&caller, &path.owner, &path.name, None).await?;
    let mut conn = api.connection().await?;
    if hooks::delete(&mut conn, repo.id, path.id).await.map_err(webhook_error)? {
        tracing::info!(repository = repo.id, hook = path.id, "webhook deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound { what: "hook" })
    }
}

#[utoipa::path(
    post,
    path = "/api/repos/{owner}/{name}/hooks/{id}/pings",
    tag = "webhooks",
    params(HookPath),
    responses(
        (status = 204, description = "A ping is on its way"),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Needs admin access, the repo:write scope or a CSRF token", body = ErrorBody),
        (status = 404, description = "No such repository or hook", body = ErrorBody)
    )
)]
pub(super) async fn ping_hook(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<HookPath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<StatusCode, ApiError> {
    let caller = api.accounts.authorize_write(&jar, &headers, Scope::RepoWrite).await?;
    let (repo, hook) = api.hook_target(&caller, &path.owner, &path.name, Some(path.id)).await?;
    let hook = hook.ok_or(ApiError::NotFound { what: "hook" })?;
    api.send_ping(&repo, &hook, &caller).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/api/repos/{owner}/{name}/hooks/{id}/tests",
    tag = "webhooks",
    params(HookPath),
    responses(
        (status = 204, description = "A push of the default branch's last commit is on its way (when the hook listens to pushes)"),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Needs admin access, the repo:write scope or a CSRF token", body = ErrorBody),
        (status = 404, description = "No such repository or hook", body = ErrorBody),
        (status = 422, description = "The default branch has no commit yet", body = ErrorBody)
    )
)]
pub(super) async fn test_hook(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<HookPath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<StatusCode, ApiError> {
    let caller = api.accounts.authorize_write(&jar, &headers, Scope::RepoWrite).await?;
    let (repo, hook) = api.hook_target(&caller, &path.owner, &path.name, Some(path.id)).await?;
    let hook = hook.ok_or(ApiError::NotFound { what: "hook" })?;
    if hook.events.includes(HookEvent::Push) {
        api.send_test_push(&repo, &hook, &caller).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/hooks/{id}/deliveries",
    tag = "webhooks",
    params(HookPath, PageQuery),
    responses(
        (status = 200, description = "A page of deliveries, newest first", body = Vec<DeliveryView>),
        (status = 400, description = "A malformed query string", body = ErrorBody),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Needs admin access", body = ErrorBody),
        (status = 404, description = "No such repository or hook", body = ErrorBody),
        (status = 422, description = "A page parameter out of range", body = ErrorBody)
    )
)]
pub(super) async fn list_deliveries(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<HookPath>,
    ApiQuery(page): ApiQuery<PageQuery>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<axum::Json<Vec<DeliveryView>>, ApiError> {
    let (page, per_page) = page.resolve()?;
    let caller = api.accounts.authenticate(&jar, &headers).await?;
    let (repo, hook) = api.hook_target(&caller, &path.owner, &path.name, Some(path.id)).await?;
    let hook = hook.ok_or(ApiError::NotFound { what: "hook" })?;
    let mut conn = api.connection().await?;
    let listed = deliveries::list(&mut conn, hook.id, page as i64, per_page as i64)
        .await
        .map_err(webhook_error)?;
    Ok(axum::Json(listed.into_iter().map(|delivery| delivery_view(delivery, repo.id)).collect()))
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/hooks/{id}/deliveries/{delivery_id}",
    tag = "webhooks",
    params(DeliveryPath),
    responses(
        (status = 200, description = "The delivery, its last request and response, and every attempt", body = DeliveryDetailView),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Needs admin access", body = ErrorBody),
        (status = 404, description = "No such repository, hook or delivery", body = ErrorBody)
    )
)]
pub(super) async fn get_delivery(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<DeliveryPath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<axum::Json<DeliveryDetailView>, ApiError> {
    let caller = api.accounts.authenticate(&jar, &headers).await?;
    let (repo, hook) = api.hook_target(&caller, &path.owner, &path.name, Some(path.id)).await?;
    let hook = hook.ok_or(ApiError::NotFound { what: "hook" })?;
    let mut conn = api.connection().await?;
    let detail = deliveries::find(&mut conn, hook.id, path.delivery_id)
        .await
        .map_err(webhook_error)?
        .ok_or(ApiError::NotFound { what: "delivery" })?;
    Ok(axum::Json(detail_view(detail, repo.id)))
}

#[utoipa::path(
    post,
    path = "/api/repos/{owner}/{name}/hooks/{id}/deliveries/{delivery_id}/attempts",
    tag = "webhooks",
    params(DeliveryPath),
    responses(
        (status = 202, description = "It will be sent again, under the same id"),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Needs admin access, the repo:write scope or a CSRF token", body = ErrorBody),
        (status = 404, description = "No such repository, hook or delivery", body = ErrorBody),
        (status = 409, description = "It is being sent at this moment", body = ErrorBody)
    )
)]
pub(super) async fn redeliver(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<DeliveryPath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<StatusCode, ApiError> {
    let caller = api.accounts.authorize_write(&jar, &headers, Scope::RepoWrite).await?;
    let (_, hook) = api.hook_target(&caller, &path.owner, &path.name, Some(path.id)).await?;
    let hook = hook.ok_or(ApiError::NotFound { what: "hook" })?;
    let mut conn = api.connection().await?;
    match deliveries::redeliver(&mut conn, hook.id, path.delivery_id)
        .await
        .map_err(webhook_error)?
    {
        None => Err(ApiError::NotFound { what: "delivery" }),
        Some(false) => Err(ApiError::Conflict {
            message: "the delivery is being sent at this moment; ask again once it is done"
                .to_owned(),
            field: None,
        }),
        Some(true) => {
            drop(conn);
            api.wake(hook.id).await?;
            tracing::info!(hook = hook.id, delivery = %path.delivery_id, "webhook redelivery asked");
            Ok(StatusCode::ACCEPTED)
        }
    }
}

impl RepoApi {
    fn sender(caller: &Caller) -> Person {
        Person {
            login: caller.user.username.clone(),
            id: caller.user.id,
            email: None,
            avatar_url: None,
        }
    }

    /// Tells the delivery engine that `hook_id` has something to send.
    async fn wake(&self, hook_id: i64) -> Result<(), ApiError> {
        self.accounts
            .queue()
            .publish(DELIVERY_STREAM, &Wake { hook_id })
            .await
            .map_err(ApiError::internal)?;
        Ok(())
    }

    async fn enqueue_and_wake(&self, hook: &Hook, payload: &EventPayload) -> Result<(), ApiError> {
        let text = serde_json::to_string(&payload.body).map_err(ApiError::internal)?;
        let mut conn = self.connection().await?;
        deliveries::enqueue(&mut conn, hook.id, payload.event.as_str(), None, None, &text)
            .await
            .map_err(webhook_error)?;
        drop(conn);
        self.wake(hook.id).await
    }

    /// Queues a `ping` to `hook`.
    async fn send_ping(
        &self,
        repo: &RepoRecord,
        hook: &Hook,
        caller: &Caller,
    ) -> Result<(), ApiError> {
        let context =
            PayloadContext::new(repo.clone(), self.public_url.clone(), Self::sender(caller));
        let shown =
            serde_json::to_value(self.hook_view(repo, hook.clone())).map_err(ApiError::internal)?;
        let ping = payload::ping_payload(&context, hook.id, shown);
        self.enqueue_and_wake(hook, &ping).await
    }

    /// Queues to `hook` the `push` payload of the default branch's last commit, as if it had
    /// just been pushed on top of its first parent.
    async fn send_test_push(
        &self,
        repo: &RepoRecord,
        hook: &Hook,
        caller: &Caller,
    ) -> Result<(), ApiError> {
        let path = self.store.path(&repo.owner, &repo.name).map_err(ApiError::internal)?;
        let branch = repo.default_branch.clone();
        let head = self
            .browser
            .run(path.clone(), move |browsed| {
                let tip = browsed.branches()?.into_iter().find(|found| found.name == branch);
                tip.map(|tip| browsed.commit_info(tip.commit)).transpose()
            })
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::TooComplex {
                message: format!(
                    "the default branch {:?} has no commit yet: push one first",
                    repo.default_branch
                ),
            })?;
        let zero = "0".repeat(40);
        let event = PushEvent {
            id: uuid::Uuid::new_v4(),
            repository_id: repo.id,
            repository: format!("{}/{}", repo.owner, repo.name),
            pusher_id: caller.user.id,
            pusher: caller.user.username.clone(),
            refs: vec![RefChange {
                name: format!("refs/heads/{}", repo.default_branch),
                old: head.parents.first().map_or(zero, ToString::to_string),
                new: head.id.to_string(),
            }],
            pushed_at: Utc::now(),
            sequence: None,
        };
        let context =
            PayloadContext::new(repo.clone(), self.public_url.clone(), Self::sender(caller));
        let payloads = payload::push_payloads(&self.browser, path, &event, &context)
            .await
            .map_err(ApiError::internal)?;
        for push in payloads.iter().filter(|made| made.event == HookEvent::Push) {
            self.enqueue_and_wake(hook, push).await?;
        }
        Ok(())
    }
}

impl RepoApi {
    /// Tells the hooks of `repo` (as it is now) listening to `repository` events what
    /// `caller` did to it. A failure is logged: the change itself is made.
    pub(super) async fn tell_hooks(
        &self,
        repo: &RepoRecord,
        caller: &Caller,
        action: &str,
        changes: serde_json::Value,
    ) {
        let told = async {
            let mut conn = self.connection().await?;
            let listening = hooks::listening(&mut conn, repo.id, &[HookEvent::Repository])
                .await
                .map_err(webhook_error)?;
            drop(conn);
            if listening.is_empty() {
                return Ok::<_, ApiError>(());
            }
            let context =
                PayloadContext::new(repo.clone(), self.public_url.clone(), Self::sender(caller));
            let payload = payload::repository_payload(&context, action, changes);
            for hook in listening.iter().filter(|hook| hook.events.includes(HookEvent::Repository))
            {
                self.enqueue_and_wake(hook, &payload).await?;
            }
            Ok(())
        };
        if let Err(error) = told.await {
            tracing::warn!(repository = repo.id, action, error = %error, "cannot tell the repository's hooks");
        }
    }
}
