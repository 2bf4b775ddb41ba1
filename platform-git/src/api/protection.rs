//! A repository's branch protection rules (`/api/repos/{owner}/{name}/protected-branches`).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum_extra::extract::SignedCookieJar;
use platform_core::accounts::Scope;
use platform_core::api::{ApiError, ApiJson, ApiPath, ErrorBody};
use serde::Deserialize;

use super::{RepoApi, RepoPath, record_error, repository_for, viewer};
use crate::permissions::Access;
use crate::protection::{self, NewRule, ProtectedBranch, ProtectionError, PushAccess};

/// The longest branch protection pattern accepted, in characters.
pub const MAX_PATTERN_CHARS: usize = 255;

/// The body of `POST /api/repos/{owner}/{name}/protected-branches`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateProtectedBranch {
    /// A branch name, or a glob such as `release/*` (`*` stays within one `/` segment).
    #[schema(min_length = 1, max_length = 255)]
    pub pattern: String,
    /// Who may push (default `write`).
    #[serde(default)]
    pub push_access: PushAccess,
    /// Whether pushes may rewrite history (default false).
    #[serde(default)]
    pub allow_force_push: bool,
    /// Whether the branch may be deleted by a push (default false).
    #[serde(default)]
    pub allow_deletion: bool,
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/protected-branches",
    tag = "repositories",
    params(RepoPath),
    responses(
        (status = 200, description = "The branch protection rules", body = Vec<ProtectedBranch>),
        (status = 401, description = "An invalid token", body = ErrorBody),
        (status = 404, description = "No such repository, or one the caller cannot see", body = ErrorBody)
    )
)]
pub(super) async fn list_protected_branches(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RepoPath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<axum::Json<Vec<ProtectedBranch>>, ApiError> {
    let caller = api.accounts.authenticate_optional(&jar, &headers).await?;
    let mut conn = api.connection().await?;
    let (repo, _) =
        repository_for(&mut conn, &path, caller.as_ref().map(viewer), Access::Read).await?;
    Ok(axum::Json(protection::list(&mut conn, repo.id).await.map_err(record_error)?))
}

fn check_pattern(pattern: &str) -> Result<(), ApiError> {
    let invalid = |message: &str| ApiError::invalid("pattern", message);
    if pattern.is_empty() || pattern.chars().count() > MAX_PATTERN_CHARS {
        return Err(invalid("pattern must have 1 to 255 characters"));
    }
    // A glob is valid when the branch names it could stand for are: check it with each `*`
    // and `?` standing for a letter.
    let example: String =
        pattern.chars().map(|c| if matches!(c, '*' | '?') { 'x' } else { c }).collect();
    if example.starts_with('-')
        || example.contains("..")
        || example.contains("//")
        || example.starts_with('/')
        || example.ends_with('/')
        || example.ends_with('.')
        || example.ends_with(".lock")
        || example.contains("@{")
        || example.chars().any(|c| c.is_ascii_control() || " ~^:\\[".contains(c))
    {
        return Err(invalid("pattern must be a branch name, or one with '*' or '?' in it"));
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/api/repos/{owner}/{name}/protected-branches",
    tag = "repositories",
    params(RepoPath),
    request_body = CreateProtectedBranch,
    responses(
        (status = 201, description = "The rule", body = ProtectedBranch),
        (status = 400, description = "Malformed request body", body = ErrorBody),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Needs admin access, the repo:write scope or a CSRF token", body = ErrorBody),
        (status = 404, description = "No such repository, or one the caller cannot see", body = ErrorBody),
        (status = 409, description = "A rule with that pattern exists", body = ErrorBody),
        (status = 422, description = "The pattern breaks a rule", body = ErrorBody)
    )
)]
pub(super) async fn create_protected_branch(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RepoPath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
    ApiJson(request): ApiJson<CreateProtectedBranch>,
) -> Result<impl IntoResponse, ApiError> {
    let caller = api.accounts.authorize_write(&jar, &headers, Scope::RepoWrite).await?;
    check_pattern(&request.pattern)?;
    let mut conn = api.connection().await?;
    let (repo, _) = repository_for(&mut conn, &path, Some(viewer(&caller)), Access::Admin).await?;
    let rule = NewRule {
        pattern: &request.pattern,
        push_access: request.push_access,
        allow_force_push: request.allow_force_push,
        allow_deletion: request.allow_deletion,
    };
    let rule = protection::create(&mut conn, repo.id, rule).await.map_err(|error| match error {
        ProtectionError::Exists { pattern } => ApiError::Conflict {
            message: format!("a rule for {pattern:?} already exists"),
            field: Some("pattern"),
        },
        ProtectionError::Record(error) => record_error(error),
    })?;
    tracing::info!(repository = repo.id, pattern = %rule.pattern, "branch protection added");
    Ok((StatusCode::CREATED, axum::Json(rule)))
}

/// The owner, name and rule id in a branch protection route.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RulePath {
    /// The owner's user name.
    pub owner: String,
    /// The repository's name.
    pub name: String,
    /// The rule's id.
    pub id: i64,
}

#[utoipa::path(
    delete,
    path = "/api/repos/{owner}/{name}/protected-branches/{id}",
    tag = "repositories",
    params(RulePath),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Needs admin access, the repo:write scope or a CSRF token", body = ErrorBody),
        (status = 404, description = "No such repository or rule", body = ErrorBody)
    )
)]
pub(super) async fn delete_protected_branch(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RulePath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<StatusCode, ApiError> {
    let caller = api.accounts.authorize_write(&jar, &headers, Scope::RepoWrite).await?;
    let mut conn = api.connection().await?;
    let repo_path = RepoPath { owner: path.owner, name: path.name };
    let (repo, _) =
        repository_for(&mut conn, &repo_path, Some(viewer(&caller)), Access::Admin).await?;
    if protection::delete(&mut conn, repo.id, path.id).await.map_err(record_error)? {
        tracing::info!(repository = repo.id, rule = path.id, "branch protection removed");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound { what: "branch protection rule" })
    }
}
