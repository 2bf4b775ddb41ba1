//! Watching repositories, in GitHub's shapes (`/repos/{owner}/{repo}/subscription`,
//! `/subscribers`, `/user/subscriptions`), kept with [`crate::watches`].
//!
//! A watcher is mailed about pushes by others. Only a repository the caller can read can be
//! watched, and every route answers 404 for one they cannot, as the repository routes do; a
//! watcher who loses read access is neither listed nor mailed.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum_extra::extract::SignedCookieJar;
use chrono::{DateTime, Utc};
use platform_core::accounts::Scope;
use platform_core::api::{ApiError, ApiPath, ApiQuery, ErrorBody};
use serde::{Deserialize, Serialize};

use super::{Pagination, RepoApi, RepoPath, Repository, RepositoryPage, repository_for, viewer};
use crate::permissions::{self, Access};
use crate::records::RepoRecord;
use crate::watches::{self, Watch};

/// The caller's subscription to a repository.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Subscription {
    /// Always true: the caller watches the repository.
    subscribed: bool,
    /// Always false: ignoring a repository is not supported.
    ignored: bool,
    /// Always null (GitHub's field).
    #[schema(value_type = Option<String>)]
    reason: Option<String>,
    /// When the caller started watching.
    created_at: DateTime<Utc>,
    /// This subscription's API URL.
    url: String,
    /// The repository's API URL.
    repository_url: String,
}

/// The body of `PUT /api/repos/{owner}/{name}/subscription`; the body itself may be left out.
#[derive(Clone, Copy, Debug, Default, Deserialize, utoipa::ToSchema)]
pub(crate) struct SetSubscription {
    /// Whether to watch (default true; to stop, `DELETE` the subscription).
    subscribed: Option<bool>,
    /// Whether to ignore the repository's notifications (default false; true is not
    /// supported).
    ignored: Option<bool>,
}

/// A watcher of a repository.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Subscriber {
    /// The user name.
    login: String,
    /// The user id.
    id: i64,
}

/// One page of a repository's watchers.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SubscriberPage {
    /// The watchers on this page, by name.
    items: Vec<Subscriber>,
    /// This page's number, from 1.
    page: u32,
    /// The page size asked for.
    per_page: u32,
    /// How many watchers there are on all pages.
    total: i64,
}

impl RepoApi {
    fn subscription(&self, repo: &RepoRecord, watch: &Watch) -> Subscription {
        let repository_url = format!(
            "{}/api/repos/{}/{}",
            self.public_url.as_str().trim_end_matches('/'),
            repo.owner,
            repo.name
        );
        Subscription {
            subscribed: true,
            ignored: false,
            reason: None,
            created_at: watch.created_at,
            url: format!("{repository_url}/subscription"),
            repository_url,
        }
    }
}

fn offset(page: u32, per_page: u32) -> i64 {
    i64::from(page - 1) * i64::from(per_page)
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/subscription",
    tag = "watching",
    params(RepoPath),
    responses(
        (status = 200, description = "The caller watches the repository", body = Subscription),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 404, description = "The caller does not watch it, or there is no such repository the caller can see", body = ErrorBody)
    )
)]
pub(super) async fn get_subscription(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RepoPath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<axum::Json<Subscription>, ApiError> {
    let caller = api.accounts.authorize_read(&jar, &headers, Scope::RepoRead).await?;
    let mut conn = api.connection().await?;
    let (repo, _) = repository_for(&mut conn, &path, Some(viewer(&caller)), Access::Read).await?;
    let watch =
        watches::find(&mut conn, repo.id, caller.user.id).await.map_err(ApiError::internal)?;
    let watch = watch.ok_or_else(|| ApiError::Missing {
        what: "subscription",
        name: format!("{}/{}", repo.owner, repo.name),
    })?;
    Ok(axum::Json(api.subscription(&repo, &watch)))
}

/// Reads the optional body of `PUT .../subscription`.
fn set_subscription_body(body: &[u8]) -> Result<SetSubscription, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(SetSubscription::default());
    }
    let request: SetSubscription = serde_json::from_slice(body).map_err(|error| {
        ApiError::BadRequest { message: format!("invalid request body: {error}") }
    })?;
    if request.ignored == Some(true) {
        return Err(ApiError::invalid(
            "ignored",
            "ignoring a repository is not supported; DELETE the subscription to stop watching",
        ));
    }
    if request.subscribed == Some(false) {
        return Err(ApiError::invalid("subscribed", "to stop watching, DELETE the subscription"));
    }
    Ok(request)
}

#[utoipa::path(
    put,
    path = "/api/repos/{owner}/{name}/subscription",
    tag = "watching",
    params(RepoPath),
    request_body(content = Option<SetSubscription>, description = "May be left out: `{\"subscribed\": true, \"ignored\": false}` is all that is accepted"),
    responses(
        (status = 200, description = "The caller watches the repository (or already did)", body = Subscription),
        (status = 400, description = "Malformed request body", body = ErrorBody),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Missing CSRF token or the repo:write scope", body = ErrorBody),
        (status = 404, description = "No such repository, or one the caller cannot see", body = ErrorBody),
        (status = 422, description = "`ignored: true` or `subscribed: false`", body = ErrorBody)
    )
)]
pub(super) async fn set_subscription(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RepoPath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
    body: Bytes,
) -> Result<axum::Json<Subscription>, ApiError> {
    let caller = api.accounts.authorize_write(&jar, &headers, Scope::RepoWrite).await?;
    set_subscription_body(&body)?;
    let mut conn = api.connection().await?;
    let (repo, _) = repository_for(&mut conn, &path, Some(viewer(&caller)), Access::Read).await?;
    let watch =
        watches::watch(&mut conn, repo.id, caller.user.id).await.map_err(ApiError::internal)?;
    tracing::info!(repository = repo.id, user = caller.user.id, "repository watched");
    Ok(axum::Json(api.subscription(&repo, &watch)))
}

#[utoipa::path(
    delete,
    path = "/api/repos/{owner}/{name}/subscription",
    tag = "watching",
    params(RepoPath),
    responses(
        (status = 204, description = "The caller does not watch the repository (any more)"),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Missing CSRF token or the repo:write scope", body = ErrorBody),
        (status = 404, description = "No such repository, or one the caller cannot see", body = ErrorBody)
    )
)]
pub(super) async fn delete_subscription(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RepoPath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<StatusCode, ApiError> {
    let caller = api.accounts.authorize_write(&jar, &headers, Scope::RepoWrite).await?;
    let mut conn = api.connection().await?;
    let (repo, _) = repository_for(&mut conn, &path, Some(viewer(&caller)), Access::Read).await?;
    if watches::unwatch(&mut conn, repo.id, caller.user.id).await.map_err(ApiError::internal)? {
        tracing::info!(repository = repo.id, user = caller.user.id, "repository unwatched");
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/subscribers",
    tag = "watching",
    params(RepoPath, Pagination),
    responses(
        (status = 200, description = "A page of the watchers who can read the repository, by name", body = SubscriberPage),
        (status = 400, description = "Malformed query string", body = ErrorBody),
        (status = 401, description = "An invalid token", body = ErrorBody),
        (status = 404, description = "No such repository, or one the caller cannot see", body = ErrorBody),
        (status = 422, description = "A page parameter out of range", body = ErrorBody)
    )
)]
pub(super) async fn list_subscribers(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RepoPath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
    ApiQuery(pagination): ApiQuery<Pagination>,
) -> Result<axum::Json<SubscriberPage>, ApiError> {
    let (page, per_page) = pagination.resolve()?;
    let caller = api.accounts.authenticate_optional(&jar, &headers).await?;
    let mut conn = api.connection().await?;
    let (repo, _) =
        repository_for(&mut conn, &path, caller.as_ref().map(viewer), Access::Read).await?;
    let (watchers, total) =
        watches::watchers(&mut conn, repo.id, i64::from(per_page), offset(page, per_page))
            .await
            .map_err(ApiError::internal)?;
    let items = watchers
        .into_iter()
        .map(|watcher| Subscriber { login: watcher.username, id: watcher.user_id })
        .collect();
    Ok(axum::Json(SubscriberPage { items, page, per_page, total }))
}

#[utoipa::path(
    get,
    path = "/api/user/subscriptions",
    tag = "watching",
    params(Pagination),
    responses(
        (status = 200, description = "A page of the repositories the caller watches and can read, by owner and name", body = RepositoryPage),
        (status = 400, description = "Malformed query string", body = ErrorBody),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 422, description = "A page parameter out of range", body = ErrorBody)
    )
)]
pub(super) async fn list_my_subscriptions(
    State(api): State<RepoApi>,
    headers: HeaderMap,
    jar: SignedCookieJar,
    ApiQuery(pagination): ApiQuery<Pagination>,
) -> Result<axum::Json<RepositoryPage>, ApiError> {
    let (page, per_page) = pagination.resolve()?;
    let caller = api.accounts.authorize_read(&jar, &headers, Scope::RepoRead).await?;
    let viewer = viewer(&caller);
    let mut conn = api.connection().await?;
    let (records, total) =
        watches::watched(&mut conn, caller.user.id, i64::from(per_page), offset(page, per_page))
            .await
            .map_err(ApiError::internal)?;
    let mut items: Vec<Repository> = Vec::with_capacity(records.len());
    for record in records {
        let access = permissions::access_for(&mut conn, &record, Some(viewer))
            .await
            .map_err(ApiError::internal)?;
        items.push(api.view(record, access));
    }
    Ok(axum::Json(RepositoryPage { items, page, per_page, total }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subscription_body_may_be_left_out_but_says_nothing_else() {
        assert!(set_subscription_body(b"").is_ok());
        assert!(set_subscription_body(b" \n").is_ok());
        assert!(set_subscription_body(br#"{"subscribed": true, "ignored": false}"#).is_ok());
        assert!(set_subscription_body(b"{}").is_ok());
        let status = |body: &[u8]| set_subscription_body(body).map_err(|error| error.status());
        assert_eq!(status(br#"{"ignored": true}"#).err(), Some(StatusCode::UNPROCESSABLE_ENTITY));
        assert_eq!(
            status(br#"{"subscribed": false}"#).err(),
            Some(StatusCode::UNPROCESSABLE_ENTITY)
        );
        assert_eq!(status(b"{").err(), Some(StatusCode::BAD_REQUEST));
        assert_eq!(status(br#"{"subscribed": "yes"}"#).err(), Some(StatusCode::BAD_REQUEST));
    }
}
