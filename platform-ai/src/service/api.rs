//! The code search routes.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum_extra::extract::SignedCookieJar;
use axum_extra::extract::cookie::Key;
use platform_core::accounts::{Accounts, Scope};
use platform_core::api::{ApiError, ApiPath, ApiQuery, ErrorBody};
use platform_core::queue::Queue;
use platform_git::api::{RepoPath, repository_for, viewer};
use platform_git::permissions::Access;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{INDEX_STREAM, IndexJob, IndexReason, IndexStatus, status};
use crate::search::{MAX_LIMIT, SearchError, Searcher};
use crate::store::{ChunkFilter, Ranking};

/// What the code search routes need: the accounts (callers and the database), the searcher
/// (`None` when code search is switched off for the instance or has no model), and the queue
/// reindex jobs go to.
#[derive(Clone, Debug)]
pub struct SearchApi {
    accounts: Accounts,
    searcher: Option<Arc<Searcher>>,
    unavailable: String,
    queue: Queue,
}

impl axum::extract::FromRef<SearchApi> for Key {
    fn from_ref(api: &SearchApi) -> Self {
        Key::from_ref(&api.accounts)
    }
}

impl SearchApi {
    /// Routes answering from `searcher`.
    pub fn new(accounts: Accounts, searcher: Searcher, queue: Queue) -> Self {
        Self { accounts, searcher: Some(Arc::new(searcher)), unavailable: String::new(), queue }
    }

    /// Routes of an instance where code search is off: searches answer 503 with `reason`
    /// (for example "code search is switched off"); status and reindex still work.
    pub fn switched_off(accounts: Accounts, queue: Queue, reason: impl Into<String>) -> Self {
        Self { accounts, searcher: None, unavailable: reason.into(), queue }
    }

    /// The searcher, or why there is none (for routes built on code search, such as ask).
    pub fn searcher(&self) -> Result<Arc<Searcher>, String> {
        self.searcher.clone().ok_or_else(|| self.unavailable.clone())
    }
}

/// The query of `GET /api/search/code`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CodeSearchQuery {
    /// What to look for: words, a phrase, an identifier, an error message.
    #[param(min_length = 1, max_length = 1000)]
    pub q: String,
    /// Only this repository (`owner/name`).
    pub repo: Option<String>,
    /// Only files of this language (`rust`, `python`, `javascript`, `typescript`, `go`,
    /// `java`, `c`, `cpp`, `text`, ...).
    pub language: Option<String>,
    /// Only this file, or the files under this directory (`src/` or `src`).
    pub path: Option<String>,
    /// How many results, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `hybrid` (default: meaning and exact terms fused, chunks holding the exact query
    /// first), `semantic` or `lexical`.
    #[param(pattern = "^(hybrid|semantic|dense|lexical)$")]
    pub ranking: Option<String>,
}

/// One result of a code search.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CodeHit {
    /// `owner/name`.
    pub repository: String,
    /// The repository's id.
    pub repository_id: i64,
    /// The file.
    pub path: String,
    /// Its language.
    pub language: String,
    /// The first line of the snippet, from 1.
    pub start_line: u32,
    /// The last line of the snippet.
    pub end_line: u32,
    /// The snippet: the chunk of the file that matched.
    pub snippet: String,
    /// The commit of the default branch the index holds.
    pub commit: Option<String>,
    /// The blob of the file.
    pub blob: String,
    /// The score (higher is better; comparable within one answer only).
    pub score: f32,
}

/// The answer of `GET /api/search/code`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CodeSearchResults {
    /// The query as searched.
    pub query: String,
    /// The ranking used.
    pub ranking: String,
    /// The results, best first.
    pub hits: Vec<CodeHit>,
}

fn parse_ranking(raw: Option<&str>) -> Result<Ranking, ApiError> {
    match raw.unwrap_or("hybrid") {
        "hybrid" => Ok(Ranking::Hybrid),
        "semantic" | "dense" => Ok(Ranking::Dense),
        "lexical" => Ok(Ranking::Lexical),
        other => Err(ApiError::invalid(
            "ranking",
            format!("ranking must be hybrid, semantic or lexical (got {other:?})"),
        )),
    }
}

fn ranking_name(ranking: Ranking) -> &'static str {
    match ranking {
        Ranking::Hybrid => "hybrid",
        Ranking::Dense => "semantic",
        Ranking::Lexical => "lexical",
    }
}

/// The status of `repository_id`'s index, or that of one nothing was asked of yet.
async fn status_of(
    conn: &mut diesel_async::AsyncPgConnection,
    repository_id: i64,
) -> Result<IndexStatus, ApiError> {
    let found = status::find(conn, repository_id).await.map_err(database_error)?;
    Ok(found.unwrap_or_else(|| IndexStatus::nothing_yet(repository_id)))
}

fn database_error(error: impl std::error::Error + Send + Sync + 'static) -> ApiError {
    ApiError::internal(error)
}

#[utoipa::path(
    get,
    path = "/api/search/code",
    tag = "search",
    params(CodeSearchQuery),
    responses(
        (status = 200, description = "The chunks of code best matching the query, among the repositories the caller can read", body = CodeSearchResults),
        (status = 400, description = "Malformed query string", body = ErrorBody),
        (status = 401, description = "An invalid session or token", body = ErrorBody),
        (status = 404, description = "`repo` names no repository the caller can see", body = ErrorBody),
        (status = 422, description = "An empty query, or a parameter out of range", body = ErrorBody),
        (status = 503, description = "Code search is off, or its model or store is unavailable (named)", body = ErrorBody)
    )
)]
pub(super) async fn search_code(
    State(api): State<SearchApi>,
    headers: HeaderMap,
    jar: SignedCookieJar,
    ApiQuery(query): ApiQuery<CodeSearchQuery>,
) -> Result<axum::Json<CodeSearchResults>, ApiError> {
    let caller = api.accounts.authenticate_optional(&jar, &headers).await?;
    let text = query.q.trim().to_owned();
    if text.is_empty() {
        return Err(ApiError::invalid("q", "the query is empty"));
    }
    if text.chars().count() > 1000 {
        return Err(ApiError::invalid("q", "the query is longer than 1000 characters"));
    }
    let limit = query.limit.unwrap_or(20);
    if !(1..=MAX_LIMIT as u32).contains(&limit) {
        return Err(ApiError::invalid("limit", format!("limit must be from 1 to {MAX_LIMIT}")));
    }
    let ranking = parse_ranking(query.ranking.as_deref())?;
    let viewer = caller.as_ref().map(viewer);
    let mut conn = api.accounts.database().get().await.map_err(ApiError::internal)?;
    let only = match query.repo.as_deref() {
        Some(full) => {
            let (owner, name) = full.split_once('/').ok_or_else(|| {
                ApiError::invalid("repo", format!("repo must be owner/name (got {full:?})"))
            })?;
            let path = RepoPath { owner: owner.to_owned(), name: name.to_owned() };
            let (repo, _) = repository_for(&mut conn, &path, viewer, Access::Read).await?;
            Some(repo.id)
        }
        None => None,
    };
    // Read access as it is now, not as it was when the chunks were written.
    let readable =
        status::readable(&mut conn, viewer.map(|viewer| (viewer.user_id, viewer.is_admin)), only)
            .await
            .map_err(database_error)?;
    drop(conn);
    let Some(searcher) = &api.searcher else {
        return Err(ApiError::Unavailable { message: api.unavailable.clone() });
    };
    let filter = ChunkFilter {
        repo_ids: readable,
        paths: None,
        language: query
            .language
            .as_deref()
            .map(str::trim)
            .filter(|language| !language.is_empty())
            .map(str::to_ascii_lowercase),
        under: query
            .path
            .as_deref()
            .map(|path| path.trim_matches('/'))
            .filter(|path| !path.is_empty())
            .map(str::to_owned),
    };
    if filter.matches_nothing() {
        return Ok(axum::Json(CodeSearchResults {
            query: text,
            ranking: ranking_name(ranking).to_owned(),
            hits: Vec::new(),
        }));
    }
    let hits =
        searcher.search(&text, ranking, filter, limit as usize).await.map_err(
            |error| match error {
                SearchError::EmptyQuery => {
                    ApiError::invalid("q", "the query has no searchable term")
                }
                SearchError::Embed(error) => {
                    tracing::warn!(error = %error, "code search: the embedding model failed");
                    ApiError::Unavailable {
                        message:
                            "code search is unavailable: the embedding model cannot be reached"
                                .to_owned(),
                    }
                }
                SearchError::Store(error) => {
                    tracing::warn!(error = %error, "code search: the vector store failed");
                    ApiError::Unavailable {
                        message: "code search is unavailable: the vector store cannot be reached"
                            .to_owned(),
                    }
                }
            },
        )?;
    // Names as they are now (a rename since indexing), and a last check that each is still
    // there and readable: a repository deleted a moment ago is not shown.
    let mut ids: Vec<i64> = hits.iter().map(|hit| hit.payload.repo_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut conn = api.accounts.database().get().await.map_err(ApiError::internal)?;
    let names = status::names(&mut conn, &ids).await.map_err(database_error)?;
    let hits = hits
        .into_iter()
        .filter_map(|hit| {
            let named = names.get(&hit.payload.repo_id)?;
            Some(CodeHit {
                repository: format!("{}/{}", named.owner, named.name),
                repository_id: hit.payload.repo_id,
                path: hit.payload.path,
                language: hit.payload.language,
                start_line: hit.payload.start_line,
                end_line: hit.payload.end_line,
                snippet: hit.payload.text,
                commit: named.indexed_commit.clone(),
                blob: hit.payload.blob,
                score: hit.score,
            })
        })
        .collect();
    Ok(axum::Json(CodeSearchResults {
        query: text,
        ranking: ranking_name(ranking).to_owned(),
        hits,
    }))
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/code-index",
    tag = "search",
    params(RepoPath),
    responses(
        (status = 200, description = "The repository's code search index: commit, files, chunks, pending jobs, last error, model", body = IndexStatus),
        (status = 401, description = "An invalid session or token", body = ErrorBody),
        (status = 404, description = "No such repository the caller can see", body = ErrorBody)
    )
)]
pub(super) async fn get_index_status(
    State(api): State<SearchApi>,
    ApiPath(path): ApiPath<RepoPath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<axum::Json<IndexStatus>, ApiError> {
    let caller = api.accounts.authenticate_optional(&jar, &headers).await?;
    let mut conn = api.accounts.database().get().await.map_err(ApiError::internal)?;
    let (repo, _) =
        repository_for(&mut conn, &path, caller.as_ref().map(viewer), Access::Read).await?;
    let found = status_of(&mut conn, repo.id).await?;
    Ok(axum::Json(found))
}

/// The body of `PATCH /api/repos/{owner}/{name}/code-index`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IndexSettings {
    /// Whether the repository is indexed; switching off removes its chunks.
    pub enabled: bool,
}

#[utoipa::path(
    patch,
    path = "/api/repos/{owner}/{name}/code-index",
    tag = "search",
    params(RepoPath),
    request_body = IndexSettings,
    responses(
        (status = 200, description = "The status, with the setting changed; the index follows within a sweep", body = IndexStatus),
        (status = 400, description = "Malformed request body", body = ErrorBody),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Not an admin of the repository, or a missing CSRF token or repo:write scope", body = ErrorBody),
        (status = 404, description = "No such repository the caller can see", body = ErrorBody)
    )
)]
pub(super) async fn set_index_settings(
    State(api): State<SearchApi>,
    ApiPath(path): ApiPath<RepoPath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
    platform_core::api::ApiJson(settings): platform_core::api::ApiJson<IndexSettings>,
) -> Result<axum::Json<IndexStatus>, ApiError> {
    let caller = api.accounts.authorize_write(&jar, &headers, Scope::RepoWrite).await?;
    let mut conn = api.accounts.database().get().await.map_err(ApiError::internal)?;
    let (repo, _) = repository_for(&mut conn, &path, Some(viewer(&caller)), Access::Admin).await?;
    status::set_enabled(&mut conn, repo.id, settings.enabled).await.map_err(database_error)?;
    if settings.enabled {
        status::request(&mut conn, repo.id, true).await.map_err(database_error)?;
    }
    let found = status_of(&mut conn, repo.id).await?;
    drop(conn);
    api.enqueue(repo.id, IndexReason::Settings).await;
    Ok(axum::Json(found))
}

#[utoipa::path(
    post,
    path = "/api/repos/{owner}/{name}/code-index/reindex",
    tag = "search",
    params(RepoPath),
    responses(
        (status = 202, description = "A rebuild of the whole index is queued", body = IndexStatus),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Not an admin of the repository, or a missing CSRF token or repo:write scope", body = ErrorBody),
        (status = 404, description = "No such repository the caller can see", body = ErrorBody)
    )
)]
pub(super) async fn reindex(
    State(api): State<SearchApi>,
    ApiPath(path): ApiPath<RepoPath>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<(StatusCode, axum::Json<IndexStatus>), ApiError> {
    let caller = api.accounts.authorize_write(&jar, &headers, Scope::RepoWrite).await?;
    let mut conn = api.accounts.database().get().await.map_err(ApiError::internal)?;
    let (repo, _) = repository_for(&mut conn, &path, Some(viewer(&caller)), Access::Admin).await?;
    status::request(&mut conn, repo.id, true).await.map_err(database_error)?;
    let found = status_of(&mut conn, repo.id).await?;
    drop(conn);
    api.enqueue(repo.id, IndexReason::Reindex).await;
    Ok((StatusCode::ACCEPTED, axum::Json(found)))
}

impl SearchApi {
    /// Publishes a job; when the queue is down the recorded request is picked up by the
    /// worker's sweep instead.
    async fn enqueue(&self, repository_id: i64, reason: IndexReason) {
        let id = format!("{reason:?}.{repository_id}.{}", uuid::Uuid::new_v4().simple());
        let job = IndexJob { repository_id, reason };
        if let Err(error) = self.queue.publish_with_id(INDEX_STREAM, &id, &job).await {
            tracing::warn!(repository = repository_id, error = %error, "cannot queue an index job; the sweep will pick it up");
        }
    }
}

/// The code search routes, documented, for [`platform_core::api::documented`].
pub fn api(state: SearchApi) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(search_code))
        .routes(routes!(get_index_status, set_index_settings))
        .routes(routes!(reindex))
        .with_state(state)
}
