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

use axum::extract::FromRef;
use axum_extra::extract::cookie::Key;
use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use platform_core::accounts::{Accounts, Caller};
use platform_core::api::ApiError;
use serde::{Deserialize, Serialize};
use url::Url;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::browse::{Browser, Limits};
use crate::permissions::{self, Access};
use crate::records::{self, RecordError, RepoRecord, Viewer};
use crate::store::RepoStore;
use crate::webhooks::guard::Guard;

/// What the repository routes need: the accounts (for callers and the database), the
/// repositories on disk, and the public URL clone addresses start with.
#[derive(Clone, Debug)]
pub struct RepoApi {
    accounts: Accounts,
    store: RepoStore,
    public_url: Url,
    browser: Browser,
    webhook_guard: Guard,
    ssh_base: Option<String>,
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
            ssh_base: None,
        }
    }

    /// Shows `ssh_url`, `{ssh_base}/{owner}/{name}.git`, beside each repository's `clone_url`
    /// (`ssh_base` such as `ssh://git@git.example.com:2222`).
    pub fn with_ssh_base(mut self, ssh_base: impl Into<String>) -> Self {
        self.ssh_base = Some(ssh_base.into().trim_end_matches('/').to_owned());
        self
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
            ssh_url: self
                .ssh_base
                .as_ref()
                .map(|ssh| format!("{ssh}/{}/{}.git", record.owner, record.name)),
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
mod collaborators;
mod files;
mod history;
mod hook_views;
mod hooks;
mod protection;
mod repos;
mod views;
mod watches;

pub use browse::{PageQuery, RefQuery};
pub use collaborators::{CollaboratorPath, SetCollaborator};
pub use files::{FilePath, TreeQuery};
pub use history::{CommitsQuery, RefPath};
pub use hook_views::{
    AttemptView, CreateHook, DeliveryDetailView, DeliveryPath, DeliveryView, Exchange, HookConfig,
    HookConfigInput, HookPath, HookView, InsecureSsl, LastResponse, UpdateHook,
};
pub use protection::{CreateProtectedBranch, MAX_PATTERN_CHARS, RulePath};
pub use repos::{
    CreateRepository, ForkRepository, MAX_DESCRIPTION_CHARS, RenameRepository, UpdateRepository,
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
        .routes(routes!(repos::list_repositories, repos::create_repository))
        .routes(routes!(repos::list_my_repositories))
        .routes(routes!(repos::list_user_repositories))
        .routes(routes!(repos::get_repository, repos::update_repository, repos::delete_repository))
        .routes(routes!(repos::rename_repository))
        .routes(routes!(repos::fork_repository))
        .routes(routes!(collaborators::list_collaborators))
        .routes(routes!(collaborators::set_collaborator, collaborators::remove_collaborator))
        .routes(routes!(protection::list_protected_branches, protection::create_protected_branch))
        .routes(routes!(protection::delete_protected_branch))
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
    /// The address to clone it from over SSH, when the deployment serves SSH.
    pub ssh_url: Option<String>,
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

/// The owner and name in a repository route.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RepoPath {
    /// The owner's user name.
    pub owner: String,
    /// The repository's name.
    pub name: String,
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

/// Who `caller` is, for [`records::list`] and [`permissions::access_for`].
pub fn viewer(caller: &Caller) -> Viewer {
    Viewer { user_id: caller.user.id, is_admin: caller.user.is_admin }
}

/// Finds `owner/name` and what `viewer` may do to it; 404 when they cannot see it, 403 when
/// they may not do what `needed` stands for. For routes of other crates about one repository
/// (code search's index status), so they answer exactly as the repository routes do.
///
/// # Errors
///
/// [`ApiError::NotFound`], [`ApiError::Forbidden`], or a 500 when the database fails.
pub async fn repository_for(
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
