//! The repository REST API.
//!
//! | method | path | who may | answer |
//! |---|---|---|---|
//! | `POST` | `/api/repos` | any signed-in user | 201 and the repository, created empty on disk |
//! | `GET` | `/api/repos` | anyone | 200 and a page of the repositories the caller can see |
//! | `GET` | `/api/user/repos` | a signed-in user | 200 and a page of those they own or collaborate on |
//! | `GET` | `/api/users/{username}/repos` | anyone | 200 and a page of that user's repositories the caller can see |
//! | `GET` | `/api/repos/{owner}/{name}` | read | 200 and the repository |
//! | `PATCH` | `/api/repos/{owner}/{name}` | admin | 200; description, visibility, default branch |
//! | `POST` | `/api/repos/{owner}/{name}/rename` | admin | 200 and the renamed repository |
//! | `POST` | `/api/repos/{owner}/{name}/forks` | read | 201 and the caller's copy, with every ref |
//! | `DELETE` | `/api/repos/{owner}/{name}` | owner | 204; the record and the repository on disk are gone |
//! | `GET` | `/api/repos/{owner}/{name}/collaborators` | write | 200 and the collaborators |
//! | `PUT` | `/api/repos/{owner}/{name}/collaborators/{username}` | admin | 201 (added) or 200 (role changed) |
//! | `DELETE` | `/api/repos/{owner}/{name}/collaborators/{username}` | admin | 204 |
//! | `GET` | `/api/repos/{owner}/{name}/protected-branches` | read | 200 and the branch rules |
//! | `POST` | `/api/repos/{owner}/{name}/protected-branches` | admin | 201 and the rule |
//! | `DELETE` | `/api/repos/{owner}/{name}/protected-branches/{id}` | admin | 204 |
//! | `GET` | `/api/repos/{owner}/{name}/subscription` | read, signed in | 200 and the caller's subscription; 404 when they do not watch it |
//! | `PUT` | `/api/repos/{owner}/{name}/subscription` | read, signed in | 200 and the subscription: the caller watches it (body optional) |
//! | `DELETE` | `/api/repos/{owner}/{name}/subscription` | read, signed in | 204; the caller does not watch it |
//! | `GET` | `/api/repos/{owner}/{name}/subscribers` | read | 200 and a page of its watchers who can read it |
//! | `GET` | `/api/user/subscriptions` | a signed-in user | 200 and a page of the repositories they watch and can read |
//!
//! "Who may" is the [`Access`] needed (see [`crate::permissions`]). A repository the caller cannot
//! see answers 404 to every route, exactly as if it did not exist; one they can see but not
//! change answers 403. Writes need a signed-in caller (401 otherwise) and, with a token, the
//! `repo:write` scope; deleting a repository needs the `admin` scope.
//!
//! Watchers are mailed about pushes by others (see [`crate::watches`]); changing a subscription
//! needs, with a token, the `repo:write` scope. The watching routes are in the OpenAPI document
//! under the tag `watching`.
//!
//! The webhook routes (`/api/repos/{owner}/{name}/hooks`, their pings, tests, deliveries and
//! redeliveries) need admin access; their table is in `hooks.rs`, and they are in the OpenAPI
//! document under the tag `webhooks`.
//!
//! The browsing routes (branches, tags, commits, compare, trees, contents, raw files, blame,
//! archives, READMEs, languages) need read access; their table is in `browse.rs` and each is in
//! the OpenAPI document under the tag `browsing`.
//!
//! ```no_run
//! # fn run(accounts: platform_core::accounts::Accounts, public_url: url::Url) {
//! use platform_git::api::{RepoApi, api};
//! use platform_git::store::RepoStore;
//!
//! let routes = api(RepoApi::new(accounts, RepoStore::new("/data/repos"), public_url));
//! let router: axum::Router = routes.split_for_parts().0;
//! # }
//! ```

use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum_extra::extract::SignedCookieJar;
use axum_extra::extract::cookie::Key;
use chrono::{DateTime, Utc};
use diesel_async::{AsyncConnection as _, AsyncPgConnection};
use platform_core::accounts::{Accounts, Caller, Scope, users};
use platform_core::api::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use serde::{Deserialize, Serialize};
use url::Url;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::browse::{Browser, Limits};
use crate::permissions::{self, Access, Collaborator, Role};
use crate::protection::{self, NewRule, ProtectedBranch, ProtectionError, PushAccess};
use crate::records::{self, Listing, RecordError, RepoChanges, RepoRecord, Viewer};
use crate::store::{self, RepoStore, StoreError};
use crate::webhooks::guard::Guard;

/// The longest description accepted, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;

/// The longest branch protection pattern accepted, in characters.
pub const MAX_PATTERN_CHARS: usize = 255;

/// What the repository routes need: the accounts (for callers and the database), the
/// repositories on disk, and the public URL clone addresses start with.
#[derive(Clone, Debug)]
pub struct RepoApi {
    accounts: Accounts,
    store: RepoStore,
    public_url: Url,
    browser: Browser,
    webhook_guard: Guard,
}

impl FromRef<RepoApi> for Key {
    fn from_ref(api: &RepoApi) -> Self {
        Key::from_ref(&api.accounts)
    }
}

impl RepoApi {
    /// Prepares the repository routes' state; `public_url` is `APP_DOMAIN_URL`.
    pub fn new(accounts: Accounts, store: RepoStore, public_url: Url) -> Self {
        Self {
            accounts,
            store,
            public_url,
            browser: Browser::new(Limits::default()),
            webhook_guard: Guard::default(),
        }
    }

    /// Checks payload URLs of webhooks against `guard` instead of the default one (public
    /// addresses only).
    pub fn with_webhook_guard(mut self, guard: Guard) -> Self {
        self.webhook_guard = guard;
        self
    }

    /// Applies `limits` to the browsing routes instead of [`Limits::default`].
    pub fn with_browse_limits(mut self, limits: Limits) -> Self {
        self.browser = Browser::new(limits);
        self
    }

    /// Closes the browser's handle of `owner/name`, after it was deleted or moved.
    fn forget_open(&self, owner: &str, name: &str) {
        if let Ok(path) = self.store.path(owner, name) {
            self.browser.forget(&path);
        }
    }

    async fn connection(
        &self,
    ) -> Result<
        diesel_async::pooled_connection::bb8::PooledConnection<'_, AsyncPgConnection>,
        ApiError,
    > {
        self.accounts.database().get().await.map_err(ApiError::internal)
    }

    fn view(&self, record: RepoRecord, access: Option<Access>) -> Repository {
        let base = self.public_url.as_str().trim_end_matches('/');
        Repository {
            clone_url: format!("{base}/{}/{}.git", record.owner, record.name),
            full_name: format!("{}/{}", record.owner, record.name),
            id: record.id,
            owner: record.owner,
            name: record.name,
            description: record.description,
            private: record.is_private,
            default_branch: record.default_branch,
            created_at: record.created_at,
            updated_at: record.updated_at,
            size_bytes: record.size_bytes,
            pushed_at: record.pushed_at,
            push_count: record.push_count,
            branch_count: record.branch_count,
            tag_count: record.tag_count,
            language: record.language,
            permission: access,
        }
    }
}

mod browse;
mod files;
mod history;
mod hook_views;
mod hooks;
mod views;
mod watches;

pub use browse::{PageQuery, RefQuery};
pub use files::{FilePath, TreeQuery};
pub use history::{CommitsQuery, RefPath};
pub use hook_views::{
    AttemptView, CreateHook, DeliveryDetailView, DeliveryPath, DeliveryView, Exchange, HookConfig,
    HookConfigInput, HookPath, HookView, InsecureSsl, LastResponse, UpdateHook,
};
pub use views::*;

/// Registers `routes` under an axum path with a wildcard last segment (refs and paths hold
/// slashes), documented under the path their `utoipa::path` names.
fn wildcard(
    router: OpenApiRouter<RepoApi>,
    axum_path: &str,
    routes: utoipa_axum::router::UtoipaMethodRouter<RepoApi>,
) -> OpenApiRouter<RepoApi> {
    let (schemas, paths, method_router) = routes;
    let mut router = router.route(axum_path, method_router);
    let document = router.get_openapi_mut();
    document.paths.paths.extend(paths.paths);
    document.components.get_or_insert_with(Default::default).schemas.extend(schemas);
    router
}

/// The browsing routes (see [`browse`]'s docs).
fn browsing(router: OpenApiRouter<RepoApi>) -> OpenApiRouter<RepoApi> {
    let base = "/api/repos/{owner}/{name}";
    let router = router
        .routes(routes!(history::list_branches))
        .routes(routes!(history::list_tags))
        .routes(routes!(history::list_commits))
        .routes(routes!(files::get_root_contents))
        .routes(routes!(files::get_root_readme))
        .routes(routes!(files::get_languages));
    let wildcards = [
        ("branches/{*ref}", routes!(history::get_branch)),
        ("tags/{*ref}", routes!(history::get_tag)),
        ("commits/{*ref}", routes!(history::get_commit)),
        ("compare/{*ref}", routes!(history::compare)),
        ("git/trees/{*ref}", routes!(files::get_tree)),
        ("contents/{*path}", routes!(files::get_contents)),
        ("raw/{*path}", routes!(files::get_raw)),
        ("blame/{*path}", routes!(files::get_blame)),
        ("tarball/{*ref}", routes!(files::get_tarball)),
        ("zipball/{*ref}", routes!(files::get_zipball)),
        ("readme/{*path}", routes!(files::get_readme)),
    ];
    wildcards
        .into_iter()
        .fold(router, |router, (path, routes)| wildcard(router, &format!("{base}/{path}"), routes))
}

/// The routes (see the module docs), with their OpenAPI description.
pub fn api(state: RepoApi) -> OpenApiRouter {
    browsing(OpenApiRouter::new())
        .routes(routes!(list_repositories, create_repository))
        .routes(routes!(list_my_repositories))
        .routes(routes!(list_user_repositories))
        .routes(routes!(get_repository, update_repository, delete_repository))
        .routes(routes!(rename_repository))
        .routes(routes!(fork_repository))
        .routes(routes!(list_collaborators))
        .routes(routes!(set_collaborator, remove_collaborator))
        .routes(routes!(list_protected_branches, create_protected_branch))
        .routes(routes!(delete_protected_branch))
        .routes(routes!(hooks::list_hooks, hooks::create_hook))
        .routes(routes!(hooks::get_hook, hooks::update_hook, hooks::delete_hook))
        .routes(routes!(hooks::ping_hook))
        .routes(routes!(hooks::test_hook))
        .routes(routes!(hooks::list_deliveries))
        .routes(routes!(hooks::get_delivery))
        .routes(routes!(hooks::redeliver))
        .routes(routes!(
            watches::get_subscription,
            watches::set_subscription,
            watches::delete_subscription
        ))
        .routes(routes!(watches::list_subscribers))
        .routes(routes!(watches::list_my_subscriptions))
        .with_state(state)
}

/// A repository as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Repository {
    /// The repository's id.
    pub id: i64,
    /// The owner's user name.
    pub owner: String,
    /// The name.
    pub name: String,
    /// `owner/name`.
    pub full_name: String,
    /// A sentence about it.
    pub description: String,
    /// Whether only its owner, collaborators and administrators can see it.
    pub private: bool,
    /// The branch `HEAD` names.
    pub default_branch: String,
    /// The address to clone it from over HTTP.
    pub clone_url: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its settings last changed.
    pub updated_at: DateTime<Utc>,
    /// Its size on disk after the last push, in bytes.
    pub size_bytes: i64,
    /// When it was last pushed to.
    pub pushed_at: Option<DateTime<Utc>>,
    /// How many pushes it has had.
    pub push_count: i64,
    /// How many branches it had after the last push.
    pub branch_count: i32,
    /// How many tags it had after the last push.
    pub tag_count: i32,
    /// The language with the most bytes on the default branch (counted after each push to it).
    pub language: Option<String>,
    /// What the caller may do to it (absent for anonymous callers of public repositories).
    pub permission: Option<Access>,
}

/// One page of repositories.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RepositoryPage {
    /// The repositories on this page, ordered by owner and name.
    pub items: Vec<Repository>,
    /// This page's number, from 1.
    pub page: u32,
    /// The page size asked for.
    pub per_page: u32,
    /// How many repositories there are on all pages.
    pub total: i64,
}

/// Which page of a listing to return.
#[derive(Clone, Copy, Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Pagination {
    /// The page, from 1 (default 1).
    #[param(minimum = 1, maximum = 1_000_000)]
    pub page: Option<u32>,
    /// Repositories per page, 1 to 100 (default 30).
    #[param(minimum = 1, maximum = 100)]
    pub per_page: Option<u32>,
}

/// The default page size.
const DEFAULT_PER_PAGE: u32 = 30;

impl Pagination {
    fn resolve(self) -> Result<(u32, u32), ApiError> {
        let page = self.page.unwrap_or(1);
        if !(1..=1_000_000).contains(&page) {
            return Err(ApiError::invalid("page", "page must be from 1 to 1000000"));
        }
        let per_page = self.per_page.unwrap_or(DEFAULT_PER_PAGE);
        if !(1..=100).contains(&per_page) {
            return Err(ApiError::invalid("per_page", "per_page must be from 1 to 100"));
        }
        Ok((page, per_page))
    }
}

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

/// The body of `PUT /api/repos/{owner}/{name}/collaborators/{username}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SetCollaborator {
    /// What to grant.
    pub role: Role,
}

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

/// The owner and name in a repository route.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RepoPath {
    /// The owner's user name.
    pub owner: String,
    /// The repository's name.
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

fn record_error(error: RecordError) -> ApiError {
    match error {
        RecordError::NameTaken { name } => ApiError::Conflict {
            message: format!("you already have a repository named {name:?}"),
            field: Some("name"),
        },
        // Deleted by a concurrent request after it was looked up: gone, as far as this one goes.
        RecordError::Query(diesel::result::Error::NotFound) => {
            ApiError::NotFound { what: "repository" }
        }
        other => ApiError::internal(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_that_vanished_mid_request_is_a_404() {
        let error = record_error(RecordError::Query(diesel::result::Error::NotFound));
        assert_eq!(error.status(), axum::http::StatusCode::NOT_FOUND);
        let taken = record_error(RecordError::NameTaken { name: "x".into() });
        assert_eq!(taken.status(), axum::http::StatusCode::CONFLICT);
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

fn viewer(caller: &Caller) -> Viewer {
    Viewer { user_id: caller.user.id, is_admin: caller.user.is_admin }
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

/// Finds `owner/name` and what `viewer` may do to it; 404 when they cannot see it, 403 when
/// they may not do what `needed` stands for.
async fn repository_for(
    conn: &mut AsyncPgConnection,
    path: &RepoPath,
    viewer: Option<Viewer>,
    needed: Access,
) -> Result<(RepoRecord, Access), ApiError> {
    let not_found = || ApiError::NotFound { what: "repository" };
    let repo = records::find(conn, &path.owner, &path.name)
        .await
        .map_err(record_error)?
        .ok_or_else(not_found)?;
    let access = permissions::access_for(conn, &repo, viewer)
        .await
        .map_err(record_error)?
        .ok_or_else(not_found)?;
    if access < needed {
        let needed = match needed {
            Access::Read => "read",
            Access::Write => "write",
            Access::Admin => "admin",
            Access::Owner => "owner",
        };
        return Err(ApiError::Forbidden {
            message: format!("this needs {needed} access to {}/{}", repo.owner, repo.name),
        });
    }
    Ok((repo, access))
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
async fn create_repository(
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

async fn page_of(
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
async fn list_repositories(
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
async fn list_my_repositories(
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
async fn list_user_repositories(
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
async fn get_repository(
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
async fn update_repository(
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
async fn rename_repository(
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
async fn fork_repository(
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
async fn delete_repository(
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
async fn delete_with_disk(
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
async fn list_collaborators(
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
async fn set_collaborator(
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
async fn remove_collaborator(
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
async fn list_protected_branches(
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
async fn create_protected_branch(
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
async fn delete_protected_branch(
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
