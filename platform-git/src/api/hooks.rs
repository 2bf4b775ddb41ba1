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
use chrono::Utc;
use platform_core::accounts::{Caller, Scope};
use platform_core::api::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use url::Url;

use super::browse::PageQuery;
use super::hook_views::{
    CreateHook, DeliveryDetailView, DeliveryPath, DeliveryView, HookConfig, HookPath, HookView,
    LastResponse, UpdateHook, delivery_view, detail_view,
};
use super::{RepoApi, RepoPath, repository_for, viewer};
use crate::events::{PushEvent, RefChange};
use crate::permissions::Access;
use crate::records::RepoRecord;
use crate::webhooks::deliveries;
use crate::webhooks::engine::{DELIVERY_STREAM, Wake};
use crate::webhooks::hooks::{self, EventSet, Hook, HookChanges, NewHook};
use crate::webhooks::payload::{self, EventPayload, PayloadContext, Person};
use crate::webhooks::{HookEvent, WebhookError};

/// The longest payload URL accepted.
const MAX_URL_CHARS: usize = 2048;

/// The longest secret accepted.
const MAX_SECRET_CHARS: usize = 255;

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
