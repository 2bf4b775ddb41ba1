//! A repository's collaborators (`/api/repos/{owner}/{name}/collaborators`).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum_extra::extract::SignedCookieJar;
use platform_core::accounts::{Scope, users};
use platform_core::api::{ApiError, ApiJson, ApiPath, ErrorBody};
use serde::Deserialize;

use super::repos::delete_with_disk;
use super::{RepoApi, RepoPath, record_error, repository_for, viewer};
use crate::permissions::{self, Access, Collaborator, Role};
use crate::records;

/// The body of `PUT /api/repos/{owner}/{name}/collaborators/{username}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SetCollaborator {
    /// What to grant.
    pub role: Role,
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/collaborators",
    tag = "repositories",
    params(RepoPath),
    responses(
        (status = 200, description = "The collaborators, by name", body = Vec<Collaborator>),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Needs write access", body = ErrorBody),
        (status = 404, description = "No such repository, or one the caller cannot see", body = ErrorBody)
    )
)]
pub(super) async fn list_collaborators(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RepoPath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<axum::Json<Vec<Collaborator>>, ApiError> {
    let caller = api.accounts.authorize_read(&jar, &headers, Scope::RepoRead).await?;
    let mut conn = api.connection().await?;
    let (repo, _) = repository_for(&mut conn, &path, Some(viewer(&caller)), Access::Write).await?;
    Ok(axum::Json(permissions::collaborators(&mut conn, repo.id).await.map_err(record_error)?))
}

/// The owner, name and user name in a collaborator route.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CollaboratorPath {
    /// The owner's user name.
    pub owner: String,
    /// The repository's name.
    pub name: String,
    /// The collaborator's user name.
    pub username: String,
}

impl CollaboratorPath {
    fn repo(&self) -> RepoPath {
        RepoPath { owner: self.owner.clone(), name: self.name.clone() }
    }
}

#[utoipa::path(
    put,
    path = "/api/repos/{owner}/{name}/collaborators/{username}",
    tag = "repositories",
    params(CollaboratorPath),
    request_body = SetCollaborator,
    responses(
        (status = 200, description = "Their role changed", body = Collaborator),
        (status = 201, description = "Added", body = Collaborator),
        (status = 400, description = "Malformed request body", body = ErrorBody),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Needs admin access, the repo:write scope or a CSRF token", body = ErrorBody),
        (status = 404, description = "No such repository or user", body = ErrorBody),
        (status = 422, description = "The owner cannot be a collaborator", body = ErrorBody)
    )
)]
pub(super) async fn set_collaborator(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<CollaboratorPath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
    ApiJson(request): ApiJson<SetCollaborator>,
) -> Result<impl IntoResponse, ApiError> {
    let caller = api.accounts.authorize_write(&jar, &headers, Scope::RepoWrite).await?;
    let mut conn = api.connection().await?;
    let (repo, _) =
        repository_for(&mut conn, &path.repo(), Some(viewer(&caller)), Access::Admin).await?;
    let user = users::find_by_username(&mut conn, &path.username)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::NotFound { what: "user" })?;
    if user.id == repo.owner_id {
        return Err(ApiError::invalid("username", "the owner cannot be a collaborator"));
    }
    let (collaborator, added) =
        permissions::set_collaborator(&mut conn, repo.id, user.id, request.role)
            .await
            .map_err(record_error)?;
    tracing::info!(
        repository = repo.id,
        collaborator = user.id,
        role = request.role.as_str(),
        "collaborator set"
    );
    let status = if added { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(collaborator)))
}

#[utoipa::path(
    delete,
    path = "/api/repos/{owner}/{name}/collaborators/{username}",
    tag = "repositories",
    params(CollaboratorPath),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Needs admin access, the repo:write scope or a CSRF token", body = ErrorBody),
        (status = 404, description = "No such repository or collaborator", body = ErrorBody)
    )
)]
pub(super) async fn remove_collaborator(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<CollaboratorPath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<StatusCode, ApiError> {
    let caller = api.accounts.authorize_write(&jar, &headers, Scope::RepoWrite).await?;
    let mut conn = api.connection().await?;
    let (repo, _) =
        repository_for(&mut conn, &path.repo(), Some(viewer(&caller)), Access::Admin).await?;
    let not_found = || ApiError::NotFound { what: "collaborator" };
    let user = users::find_by_username(&mut conn, &path.username)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(not_found)?;
    if !permissions::remove_collaborator(&mut conn, repo.id, user.id).await.map_err(record_error)? {
        return Err(not_found());
    }
    tracing::info!(repository = repo.id, collaborator = user.id, "collaborator removed");
    // Their forks of it carry its private history: gone with their access, as on GitHub. (A
    // collaborator who can still see it, a public one, keeps them.)
    let still_readable = permissions::access_for(
        &mut conn,
        &repo,
        Some(records::Viewer { user_id: user.id, is_admin: user.is_admin }),
    )
    .await
    .map_err(record_error)?
    .is_some();
    if !still_readable {
        for fork in
            records::private_forks(&mut conn, repo.id, user.id).await.map_err(record_error)?
        {
            delete_with_disk(&api, &mut conn, &fork).await?;
            tracing::info!(
                repository = fork.id,
                source = repo.id,
                "private fork deleted with its owner's access"
            );
        }
    }
    Ok(StatusCode::NO_CONTENT)
}
