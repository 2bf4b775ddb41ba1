//! The repository routes themselves: creating, listing, reading, changing, renaming, forking
//! and deleting repositories (`/api/repos`, `/api/user/repos`, `/api/users/{username}/repos`).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum_extra::extract::SignedCookieJar;
use diesel_async::{AsyncConnection as _, AsyncPgConnection};
use platform_core::accounts::{Caller, Scope, users};
use platform_core::api::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use serde::Deserialize;

use super::{
    Pagination, RepoApi, RepoPath, Repository, RepositoryPage, record_error, repository_for, viewer,
};
use crate::permissions::{self, Access};
use crate::records::{self, Listing, RepoChanges, RepoRecord};
use crate::store::{self, StoreError};

/// The longest description accepted, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;

/// The body of `POST /api/repos`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateRepository {
    /// The name: letters, digits, `-`, `_` and `.`, up to 100 characters, not starting with
    /// `.` or `-`, not ending in `.git`; some names are reserved.
    #[schema(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")]
    pub name: String,
    /// A sentence about it, up to 1000 characters.
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub description: String,
    /// Whether only its owner and collaborators can see it (default false).
    #[serde(default)]
    pub private: bool,
    /// The branch `HEAD` names (default `main`).
    pub default_branch: Option<String>,
}

/// The body of `PATCH /api/repos/{owner}/{name}`: absent fields keep their value.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct UpdateRepository {
    /// A new description, up to 1000 characters.
    #[schema(max_length = 1000)]
    pub description: Option<String>,
    /// New visibility.
    pub private: Option<bool>,
    /// A new default branch (it need not exist yet).
    pub default_branch: Option<String>,
}

/// The body of `POST /api/repos/{owner}/{name}/rename`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RenameRepository {
    /// The new name, under the rules of [`CreateRepository::name`].
    #[schema(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")]
    pub name: String,
}

/// Lets an error of a database transaction carry an API error out of it.
struct Failure(ApiError);

impl From<diesel::result::Error> for Failure {
    fn from(error: diesel::result::Error) -> Self {
        Self(ApiError::internal(error))
    }
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

fn store_error(error: StoreError, field: &'static str) -> ApiError {
    match error {
        StoreError::InvalidName { reason, what, .. } => {
            ApiError::invalid(field, format!("{what} name {reason}"))
        }
        StoreError::AlreadyExists { owner, name } => ApiError::Conflict {
            message: format!(
                "{owner}/{name} exists on disk without a record; an operator must remove it"
            ),
            field: Some("name"),
        },
        other => ApiError::internal(other),
    }
}

fn check_name(name: &str, field: &'static str) -> Result<(), ApiError> {
    store::check_repo_name(name)
        .map_err(|reason| ApiError::invalid(field, format!("name {reason}")))
}

fn check_description(description: &str) -> Result<(), ApiError> {
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(ApiError::invalid(
            "description",
            format!("description must have at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    if description.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::invalid(
            "description",
            "description must not contain control characters",
        ));
    }
    Ok(())
}

async fn check_branch(branch: &str) -> Result<(), ApiError> {
    store::check_branch_name(branch).await.map_err(|error| store_error(error, "default_branch"))
}

#[utoipa::path(
    post,
    path = "/api/repos",
    tag = "repositories",
    request_body = CreateRepository,
    responses(
        (status = 201, description = "Created, with an empty bare repository on disk", body = Repository),
        (status = 400, description = "Malformed request body", body = ErrorBody),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Missing CSRF token or the repo:write scope", body = ErrorBody),
        (status = 409, description = "The caller already has a repository of that name", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody)
    )
)]
pub(super) async fn create_repository(
    State(api): State<RepoApi>,
    headers: HeaderMap,
    jar: SignedCookieJar,
    ApiJson(request): ApiJson<CreateRepository>,
) -> Result<impl IntoResponse, ApiError> {
    let caller = api.accounts.authorize_write(&jar, &headers, Scope::RepoWrite).await?;
    caller.require_verified()?;
    check_name(&request.name, "name")?;
    check_description(&request.description)?;
    let default_branch = request.default_branch.as_deref().unwrap_or("main");
    check_branch(default_branch).await?;
    let mut conn = api.connection().await?;
    let new = records::NewRepo {
        owner_id: caller.user.id,
        name: &request.name,
        description: &request.description,
        is_private: request.private,
        default_branch,
        forked_from: None,
    };
    let store = &api.store;
    // The record commits only once the repository is on disk, so a failure leaves neither.
    let record = conn
        .transaction::<_, Failure, _>(async |conn| {
            let record = records::insert(conn, new).await.map_err(record_error)?;
            store
                .create(&record.owner, &record.name, &record.default_branch)
                .await
                .map_err(|error| store_error(error, "name"))?;
            Ok(record)
        })
        .await
        .map_err(|Failure(error)| error)?;
    tracing::info!(repository = record.id, owner = %record.owner, name = %record.name, "repository created");
    Ok((StatusCode::CREATED, axum::Json(api.view(record, Some(Access::Owner)))))
}

pub(super) async fn page_of(
    api: &RepoApi,
    caller: Option<&Caller>,
    listing: Listing,
    pagination: Pagination,
) -> Result<RepositoryPage, ApiError> {
    let (page, per_page) = pagination.resolve()?;
    let viewer = caller.map(viewer);
    let mut conn = api.connection().await?;
    let offset = i64::from(page - 1) * i64::from(per_page);
    let (records, total) = records::list(&mut conn, viewer, listing, i64::from(per_page), offset)
        .await
        .map_err(record_error)?;
    let mut items = Vec::with_capacity(records.len());
    for record in records {
        let access =
            permissions::access_for(&mut conn, &record, viewer).await.map_err(record_error)?;
        let access = access.filter(|_| viewer.is_some());
        items.push(api.view(record, access));
    }
    Ok(RepositoryPage { items, page, per_page, total })
}

#[utoipa::path(
    get,
    path = "/api/repos",
    tag = "repositories",
    params(Pagination),
    responses(
        (status = 200, description = "The repositories the caller can see", body = RepositoryPage),
        (status = 400, description = "Malformed query string", body = ErrorBody),
        (status = 401, description = "An invalid token", body = ErrorBody),
        (status = 422, description = "A page parameter out of range", body = ErrorBody)
    )
)]
pub(super) async fn list_repositories(
    State(api): State<RepoApi>,
    headers: HeaderMap,
    jar: SignedCookieJar,
    ApiQuery(pagination): ApiQuery<Pagination>,
) -> Result<axum::Json<RepositoryPage>, ApiError> {
    let caller = api.accounts.authenticate_optional(&jar, &headers).await?;
    Ok(axum::Json(page_of(&api, caller.as_ref(), Listing::Visible, pagination).await?))
}

#[utoipa::path(
    get,
    path = "/api/user/repos",
    tag = "repositories",
    params(Pagination),
    responses(
        (status = 200, description = "The repositories the caller owns or collaborates on", body = RepositoryPage),
        (status = 400, description = "Malformed query string", body = ErrorBody),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 422, description = "A page parameter out of range", body = ErrorBody)
    )
)]
pub(super) async fn list_my_repositories(
    State(api): State<RepoApi>,
    headers: HeaderMap,
    jar: SignedCookieJar,
    ApiQuery(pagination): ApiQuery<Pagination>,
) -> Result<axum::Json<RepositoryPage>, ApiError> {
    let caller = api.accounts.authenticate(&jar, &headers).await?;
    Ok(axum::Json(page_of(&api, Some(&caller), Listing::Member, pagination).await?))
}

#[utoipa::path(
    get,
    path = "/api/users/{username}/repos",
    tag = "repositories",
    params(("username" = String, Path, description = "The owner's user name"), Pagination),
    responses(
        (status = 200, description = "That user's repositories the caller can see", body = RepositoryPage),
        (status = 400, description = "Malformed query string", body = ErrorBody),
        (status = 401, description = "An invalid token", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 422, description = "A page parameter out of range", body = ErrorBody)
    )
)]
pub(super) async fn list_user_repositories(
    State(api): State<RepoApi>,
    ApiPath(username): ApiPath<String>,
    headers: HeaderMap,
    jar: SignedCookieJar,
    ApiQuery(pagination): ApiQuery<Pagination>,
) -> Result<axum::Json<RepositoryPage>, ApiError> {
    let caller = api.accounts.authenticate_optional(&jar, &headers).await?;
    let mut conn = api.connection().await?;
    let owner = users::find_by_username(&mut conn, &username)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::NotFound { what: "user" })?;
    drop(conn);
    Ok(axum::Json(page_of(&api, caller.as_ref(), Listing::OwnedBy(owner.id), pagination).await?))
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}",
    tag = "repositories",
    params(RepoPath),
    responses(
        (status = 200, description = "The repository", body = Repository),
        (status = 401, description = "An invalid token", body = ErrorBody),
        (status = 404, description = "No such repository, or one the caller cannot see", body = ErrorBody)
    )
)]
pub(super) async fn get_repository(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RepoPath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<axum::Json<Repository>, ApiError> {
    let caller = api.accounts.authenticate_optional(&jar, &headers).await?;
    let viewer = caller.as_ref().map(viewer);
    let mut conn = api.connection().await?;
    let (repo, access) = repository_for(&mut conn, &path, viewer, Access::Read).await?;
    Ok(axum::Json(api.view(repo, viewer.map(|_| access))))
}

#[utoipa::path(
    patch,
    path = "/api/repos/{owner}/{name}",
    tag = "repositories",
    params(RepoPath),
    request_body = UpdateRepository,
    responses(
        (status = 200, description = "The repository as it now is", body = Repository),
        (status = 400, description = "Malformed request body", body = ErrorBody),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Needs admin access, the repo:write scope or a CSRF token", body = ErrorBody),
        (status = 404, description = "No such repository, or one the caller cannot see", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody)
    )
)]
pub(super) async fn update_repository(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RepoPath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
    ApiJson(request): ApiJson<UpdateRepository>,
) -> Result<axum::Json<Repository>, ApiError> {
    let caller = api.accounts.authorize_write(&jar, &headers, Scope::RepoWrite).await?;
    let mut conn = api.connection().await?;
    let (repo, access) =
        repository_for(&mut conn, &path, Some(viewer(&caller)), Access::Admin).await?;
    if let Some(description) = &request.description {
        check_description(description)?;
    }
    if let Some(branch) = &request.default_branch {
        check_branch(branch).await?;
    }
    if request.private == Some(false) && repo.private_lineage {
        return Err(ApiError::invalid("private", "a fork of a private repository stays private"));
    }
    let changes = RepoChanges {
        name: None,
        description: request.description.as_deref(),
        is_private: request.private,
        default_branch: request.default_branch.as_deref(),
    };
    let store = &api.store;
    let updated = conn
        .transaction::<_, Failure, _>(async |conn| {
            let updated = records::update(conn, repo.id, changes).await.map_err(record_error)?;
            if updated.default_branch != repo.default_branch {
                store
                    .set_default_branch(&updated.owner, &updated.name, &updated.default_branch)
                    .await
                    .map_err(|error| store_error(error, "default_branch"))?;
            }
            Ok(updated)
        })
        .await
        .map_err(|Failure(error)| error)?;
    tracing::info!(repository = updated.id, user = caller.user.id, "repository settings changed");
    if updated.is_private != repo.is_private {
        let action = if updated.is_private { "privatized" } else { "publicized" };
        api.tell_hooks(&updated, &caller, action, serde_json::Value::Null).await;
    }
    let mut changes = serde_json::Map::new();
    if updated.description != repo.description {
        changes.insert("description".into(), serde_json::json!({ "from": repo.description }));
    }
    if updated.default_branch != repo.default_branch {
        changes.insert("default_branch".into(), serde_json::json!({ "from": repo.default_branch }));
    }
    if !changes.is_empty() {
        api.tell_hooks(&updated, &caller, "edited", changes.into()).await;
    }
    Ok(axum::Json(api.view(updated, Some(access))))
}

#[utoipa::path(
    post,
    path = "/api/repos/{owner}/{name}/rename",
    tag = "repositories",
    params(RepoPath),
    request_body = RenameRepository,
    responses(
        (status = 200, description = "The renamed repository", body = Repository),
        (status = 400, description = "Malformed request body", body = ErrorBody),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Needs admin access, the repo:write scope or a CSRF token", body = ErrorBody),
        (status = 404, description = "No such repository, or one the caller cannot see", body = ErrorBody),
        (status = 409, description = "The owner already has a repository of that name", body = ErrorBody),
        (status = 422, description = "The name breaks a rule", body = ErrorBody)
    )
)]
pub(super) async fn rename_repository(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RepoPath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
    ApiJson(request): ApiJson<RenameRepository>,
) -> Result<axum::Json<Repository>, ApiError> {
    let caller = api.accounts.authorize_write(&jar, &headers, Scope::RepoWrite).await?;
    check_name(&request.name, "name")?;
    let mut conn = api.connection().await?;
    let (repo, access) =
        repository_for(&mut conn, &path, Some(viewer(&caller)), Access::Admin).await?;
    let store = &api.store;
    let changes = RepoChanges { name: Some(&request.name), ..RepoChanges::default() };
    let renamed = conn
        .transaction::<_, Failure, _>(async |conn| {
            let renamed = records::update(conn, repo.id, changes).await.map_err(record_error)?;
            store
                .rename((&repo.owner, &repo.name), (&renamed.owner, &renamed.name))
                .await
                .map_err(|error| store_error(error, "name"))?;
            Ok(renamed)
        })
        .await
        .map_err(|Failure(error)| error)?;
    // Nothing is at the old path now, and what comes there next is another repository.
    api.forget_open(&repo.owner, &repo.name);
    api.forget_open(&renamed.owner, &renamed.name);
    tracing::info!(repository = renamed.id, from = %repo.name, to = %renamed.name, "repository renamed");
    let changes = serde_json::json!({ "repository": { "name": { "from": repo.name } } });
    api.tell_hooks(&renamed, &caller, "renamed", changes).await;
    Ok(axum::Json(api.view(renamed, Some(access))))
}

/// The body of `POST /api/repos/{owner}/{name}/forks`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct ForkRepository {
    /// The fork's name (default: the original's).
    #[schema(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")]
    pub name: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/repos/{owner}/{name}/forks",
    tag = "repositories",
    params(RepoPath),
    request_body = ForkRepository,
    responses(
        (status = 201, description = "The caller's fork, with every ref of the original", body = Repository),
        (status = 400, description = "Malformed request body", body = ErrorBody),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Missing CSRF token or the repo:write scope", body = ErrorBody),
        (status = 404, description = "No such repository, or one the caller cannot see", body = ErrorBody),
        (status = 409, description = "The caller already has a repository of that name", body = ErrorBody),
        (status = 422, description = "The name breaks a rule", body = ErrorBody)
    )
)]
pub(super) async fn fork_repository(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RepoPath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
    ApiJson(request): ApiJson<ForkRepository>,
) -> Result<impl IntoResponse, ApiError> {
    let caller = api.accounts.authorize_write(&jar, &headers, Scope::RepoWrite).await?;
    caller.require_verified()?;
    let mut conn = api.connection().await?;
    let (source, _) = repository_for(&mut conn, &path, Some(viewer(&caller)), Access::Read).await?;
    let name = request.name.unwrap_or_else(|| source.name.clone());
    check_name(&name, "name")?;
    let new = records::NewRepo {
        owner_id: caller.user.id,
        name: &name,
        description: &source.description,
        is_private: source.is_private,
        default_branch: &source.default_branch,
        forked_from: Some(&source),
    };
    let store = &api.store;
    let fork = conn
        .transaction::<_, Failure, _>(async |conn| {
            let fork = records::insert(conn, new).await.map_err(record_error)?;
            store
                .fork((&source.owner, &source.name), (&fork.owner, &fork.name))
                .await
                .map_err(|error| store_error(error, "name"))?;
            Ok(fork)
        })
        .await
        .map_err(|Failure(error)| error)?;
    tracing::info!(repository = fork.id, from = source.id, "repository forked");
    Ok((StatusCode::CREATED, axum::Json(api.view(fork, Some(Access::Owner)))))
}

#[utoipa::path(
    delete,
    path = "/api/repos/{owner}/{name}",
    tag = "repositories",
    params(RepoPath),
    responses(
        (status = 204, description = "The record and the repository on disk are gone"),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Needs the owner, the admin scope or a CSRF token", body = ErrorBody),
        (status = 404, description = "No such repository, or one the caller cannot see", body = ErrorBody)
    )
)]
pub(super) async fn delete_repository(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RepoPath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<StatusCode, ApiError> {
    let caller = api.accounts.authorize_write(&jar, &headers, Scope::Admin).await?;
    let mut conn = api.connection().await?;
    let (repo, _) = repository_for(&mut conn, &path, Some(viewer(&caller)), Access::Owner).await?;
    delete_with_disk(&api, &mut conn, &repo).await?;
    tracing::info!(repository = repo.id, user = caller.user.id, "repository deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes `repo`'s record and its directory, in one transaction.
pub(super) async fn delete_with_disk(
    api: &RepoApi,
    conn: &mut AsyncPgConnection,
    repo: &RepoRecord,
) -> Result<(), ApiError> {
    let store = &api.store;
    let deleted = conn
        .transaction::<_, Failure, _>(async |conn| {
            records::delete(conn, repo.id).await.map_err(record_error)?;
            match store.delete(&repo.owner, &repo.name).await {
                Ok(()) => Ok(()),
                // Nothing on disk to remove: the record alone was left.
                Err(StoreError::NotFound { .. }) => {
                    tracing::warn!(repository = repo.id, "repository had no directory on disk");
                    Ok(())
                }
                Err(other) => Err(Failure(ApiError::internal(other))),
            }
        })
        .await
        .map_err(|Failure(error)| error);
    // The browser must not answer from the deleted repository's open handle (its packs stay
    // mapped) once another is created at the same path.
    api.forget_open(&repo.owner, &repo.name);
    deleted
}
