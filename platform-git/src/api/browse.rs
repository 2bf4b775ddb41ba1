//! The browsing routes: what is in a repository, read with [`crate::browse`].
//!
//! | path under `/api/repos/{owner}/{name}` | answer |
//! |---|---|
//! | `/branches`, `/branches/{branch}` | branches (paginated), one with its commit |
//! | `/tags`, `/tags/{tag}` | tags (paginated), one with its annotation |
//! | `/commits?sha&path&since&until&author` | history, paginated with a `Link` header |
//! | `/commits/{ref}` | one commit with stats, files and patches; `.diff`/`.patch` |
//! | `/compare/{base}...{head}` | merge base, ahead/behind, commits, files; `.diff`/`.patch` |
//! | `/git/trees/{ref}?path&recursive` | a tree listing |
//! | `/contents/{path}?ref` | a file (base64), a directory, a symlink or a submodule |
//! | `/raw/{path}?ref` | a file's bytes, never rendered by a browser |
//! | `/blame/{path}?ref` | line ranges with their commits |
//! | `/tarball/{ref}`, `/zipball/{ref}` | an archive, streamed, under `{name}-{ref}/` |
//! | `/readme`, `/readme/{dir}` | a directory's README, raw and as sanitized HTML |
//! | `/languages` | bytes per language on the default branch |
//!
//! Every route needs read access and answers 404 for a repository the caller cannot see, as the
//! repository routes do. Answers addressed by a full commit id never change: they carry a strong
//! `ETag` and `Cache-Control: immutable`; answers addressed by a branch or tag carry an `ETag`
//! of the commit it resolved to and `no-cache`, so a conditional request costs one ref lookup.

use std::path::PathBuf;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::SignedCookieJar;
use platform_core::api::ApiError;

use super::views::*;
use super::{RepoApi, RepoPath, repository_for, viewer};
use crate::browse::{BrowseError, Repo, Resolved};
use crate::permissions::Access;

/// A repository the caller may read, and where it is on disk.
pub(super) struct Target {
    pub(super) id: i64,
    pub(super) owner: String,
    pub(super) name: String,
    pub(super) private: bool,
    pub(super) default_branch: String,
    pub(super) disk: PathBuf,
}

impl RepoApi {
    /// Authorizes a read of `path` and finds the repository on disk.
    pub(super) async fn target(
        &self,
        path: &RepoPath,
        headers: &HeaderMap,
        jar: &SignedCookieJar,
    ) -> Result<Target, ApiError> {
        let caller = self.accounts.authenticate_optional(jar, headers).await?;
        let mut conn = self.connection().await?;
        let (record, _) =
            repository_for(&mut conn, path, caller.as_ref().map(viewer), Access::Read).await?;
        let disk = self.store.path(&record.owner, &record.name).map_err(ApiError::internal)?;
        Ok(Target {
            id: record.id,
            owner: record.owner,
            name: record.name,
            private: record.is_private,
            default_branch: record.default_branch,
            disk,
        })
    }

    /// The API URL of the repository, for links in answers.
    pub(super) fn repo_url(&self, target: &Target) -> String {
        format!(
            "{}/api/repos/{}/{}",
            self.public_url.as_str().trim_end_matches('/'),
            target.owner,
            target.name
        )
    }
}

/// Turns a browsing failure into the API's error.
pub(super) fn browse_error(error: BrowseError) -> ApiError {
    match error {
        BrowseError::NotFound { what, name } => ApiError::Missing { what, name },
        error @ BrowseError::Malformed { .. } => {
            ApiError::BadRequest { message: error.to_string() }
        }
        error @ (BrowseError::TooLarge(_)
        | BrowseError::TooSlow { .. }
        | BrowseError::Unsupported(_)) => ApiError::TooComplex { message: error.to_string() },
        other => ApiError::internal(other),
    }
}

/// How an answer may be cached: by the commit it was made from, and whether that was named by
/// id (forever) or through a ref (revalidate each time).
#[derive(Clone, Debug)]
pub(super) struct Freshness {
    etag: String,
    immutable: bool,
    private: bool,
}

impl Freshness {
    /// The freshness of an answer made from `resolved`; `variant` tells apart answers of the same
    /// commit (the route, its query, the media type asked for).
    pub(super) fn of(resolved: &[&Resolved], private: bool, variant: &str) -> Self {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        for one in resolved {
            one.id.as_bytes().hash(&mut hasher);
        }
        variant.hash(&mut hasher);
        let ids: String = resolved
            .iter()
            .map(|one| one.id.to_hex_with_len(12).to_string())
            .collect::<Vec<_>>()
            .join("-");
        Self {
            etag: format!("\"{ids}-{:016x}\"", hasher.finish()),
            immutable: resolved.iter().all(|one| one.immutable),
            private,
        }
    }

    /// Whether the client already has this answer.
    pub(super) fn matches(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|tag| {
                let tag = tag.trim();
                tag == "*" || tag == self.etag || tag.strip_prefix("W/") == Some(self.etag.as_str())
            })
    }

    /// Adds `ETag`, `Cache-Control` and `Vary` to `response`.
    pub(super) fn apply(&self, mut response: Response) -> Response {
        let scope = if self.private { "private" } else { "public" };
        let control = if self.immutable {
            format!("{scope}, max-age=31536000, immutable")
        } else {
            format!("{scope}, no-cache")
        };
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&self.etag) {
            headers.insert(header::ETAG, value);
        }
        if let Ok(value) = HeaderValue::from_str(&control) {
            headers.insert(header::CACHE_CONTROL, value);
        }
        headers.insert(header::VARY, HeaderValue::from_static("Accept, Authorization, Cookie"));
        response
    }

    /// 304 for a client that has the answer, else what `answer` makes.
    pub(super) fn answer(
        &self,
        headers: &HeaderMap,
        answer: impl FnOnce() -> Response,
    ) -> Response {
        if self.matches(headers) {
            return self.apply(StatusCode::NOT_MODIFIED.into_response());
        }
        self.apply(answer())
    }
}

/// The variant of a request for [`Freshness::of`]: its path, query and media type.
pub(super) fn variant(uri: &Uri, headers: &HeaderMap) -> String {
    let accept = headers.get(header::ACCEPT).and_then(|value| value.to_str().ok()).unwrap_or("");
    format!("{}?{}|{accept}", uri.path(), uri.query().unwrap_or(""))
}

/// The repository and the file path of a route `/api/repos/{owner}/{name}/{route}/{*path}`,
/// read from the request's own (still percent-encoded) path and decoded once to bytes, so file
/// names that are not UTF-8 can be addressed: axum's path extractors, `RawPathParams` too,
/// refuse every parameter that does not decode to UTF-8.
pub(super) fn file_route(uri: &Uri) -> Result<(RepoPath, Vec<u8>), ApiError> {
    let not_found = || ApiError::NotFound { what: "resource" };
    let mut segments = uri.path().splitn(7, '/').skip(3);
    let (Some(owner), Some(name), Some(_route), Some(path)) =
        (segments.next(), segments.next(), segments.next(), segments.next())
    else {
        return Err(not_found());
    };
    let text = |raw: &str| {
        percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .ok()
            .filter(|text| !text.contains('\0'))
            .map(|text| text.into_owned())
            .ok_or_else(not_found)
    };
    let repo = RepoPath { owner: text(owner)?, name: text(name)? };
    Ok((repo, percent_encoding::percent_decode_str(path).collect()))
}

/// Percent-encodes a repository path for a URL (`/` kept).
pub(super) fn encode_path(path: &[u8]) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::percent_encode(path, SEGMENT).to_string()
}

/// What a media type or a `.diff`/`.patch` suffix asks of a commit or a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Representation {
    Json,
    Diff,
    Patch,
}

/// Splits a `.diff`/`.patch` suffix off `name` (unless it is part of a ref), or reads the
/// `Accept` header.
pub(super) fn representation<'a>(
    name: &'a str,
    headers: &HeaderMap,
    repo_has: impl Fn(&str) -> bool,
) -> (&'a str, Representation) {
    for (suffix, representation) in
        [(".diff", Representation::Diff), (".patch", Representation::Patch)]
    {
        if let Some(stripped) = name.strip_suffix(suffix)
            && !repo_has(name)
        {
            return (stripped, representation);
        }
    }
    let accept = headers.get(header::ACCEPT).and_then(|value| value.to_str().ok()).unwrap_or("");
    let representation = if accept.contains("application/vnd.github.diff")
        || accept.contains("text/x-diff")
    {
        Representation::Diff
    } else if accept.contains("application/vnd.github.patch") || accept.contains("text/x-patch") {
        Representation::Patch
    } else {
        Representation::Json
    };
    (name, representation)
}

/// A text answer of a diff or patch.
pub(super) fn patch_response(bytes: Vec<u8>, representation: Representation) -> Response {
    let kind = match representation {
        Representation::Patch => "text/x-patch; charset=utf-8",
        _ => "text/x-diff; charset=utf-8",
    };
    let mut response = Response::new(Body::from(bytes));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    response
        .headers_mut()
        .insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    response
}

/// Resolves `name` in the repository, or its default branch when `None`.
pub(super) fn resolve(
    repo: &Repo,
    name: Option<&str>,
    default_branch: &str,
) -> Result<Resolved, BrowseError> {
    repo.resolve(name.filter(|name| !name.is_empty()).unwrap_or(default_branch))
}

/// Which page of a list to return (GitHub's `page` and `per_page`).
#[derive(Clone, Copy, Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The page, from 1 (default 1).
    #[param(minimum = 1, maximum = 100000)]
    pub page: Option<u32>,
    /// Items per page, 1 to 100 (default 30).
    #[param(minimum = 1, maximum = 100)]
    pub per_page: Option<u32>,
}

impl PageQuery {
    pub(super) fn resolve(self) -> Result<(usize, usize), ApiError> {
        let page = self.page.unwrap_or(1);
        if !(1..=100_000).contains(&page) {
            return Err(ApiError::invalid("page", "page must be from 1 to 100000"));
        }
        let per_page = self.per_page.unwrap_or(30);
        if !(1..=100).contains(&per_page) {
            return Err(ApiError::invalid("per_page", "per_page must be from 1 to 100"));
        }
        Ok((page as usize, per_page as usize))
    }
}

/// GitHub's `Link` header for page `page` of `per_page`: `next` when there is more, `last` when
/// the count is known, `first` and `prev` after the first page.
pub(super) fn link_header(
    base: &str,
    uri: &Uri,
    page: usize,
    per_page: usize,
    more: bool,
    last: Option<usize>,
) -> Option<HeaderValue> {
    let others: Vec<String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| {
            !pair.is_empty() && !pair.starts_with("page=") && !pair.starts_with("per_page=")
        })
        .map(str::to_owned)
        .collect();
    let url = |page: usize| {
        let mut query = others.clone();
        query.push(format!("per_page={per_page}"));
        query.push(format!("page={page}"));
        format!("<{base}{}?{}>", uri.path(), query.join("&"))
    };
    let mut links = Vec::new();
    if more {
        links.push(format!("{}; rel=\"next\"", url(page + 1)));
    }
    if let Some(last) = last.filter(|last| *last > page) {
        links.push(format!("{}; rel=\"last\"", url(last)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", url(1)));
        links.push(format!("{}; rel=\"prev\"", url(page - 1)));
    }
    if links.is_empty() {
        return None;
    }
    HeaderValue::from_str(&links.join(", ")).ok()
}

/// Adds a `Link` header when there is one.
pub(super) fn with_link(mut response: Response, link: Option<HeaderValue>) -> Response {
    if let Some(link) = link {
        response.headers_mut().insert(header::LINK, link);
    }
    response
}

/// The shared start of every browsing handler.
pub(super) struct Request {
    pub(super) api: RepoApi,
    pub(super) target: Target,
    pub(super) headers: HeaderMap,
    pub(super) uri: Uri,
}

impl Request {
    pub(super) async fn new(
        api: RepoApi,
        path: &RepoPath,
        headers: HeaderMap,
        jar: &SignedCookieJar,
        uri: Uri,
    ) -> Result<Self, ApiError> {
        let target = api.target(path, &headers, jar).await?;
        Ok(Self { api, target, headers, uri })
    }

    /// Runs `work` on the repository.
    pub(super) async fn read<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Repo) -> Result<T, BrowseError> + Send + 'static,
    {
        self.api.browser.run(self.target.disk.clone(), work).await.map_err(browse_error)
    }

    /// Resolves `reference` (the default branch when `None`) once, and runs `work` at that
    /// commit unless the client already has the answer (then `None`: a 304), within `limit` when
    /// one is given.
    pub(super) async fn read_at<T, F>(
        &self,
        reference: Option<String>,
        limit: Option<(std::time::Duration, &'static str)>,
        work: F,
    ) -> Result<Fresh<T>, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Repo, &Resolved) -> Result<T, BrowseError> + Send + 'static,
    {
        let default_branch = self.target.default_branch.clone();
        let (private, variant, headers) =
            (self.target.private, self.variant(), self.headers.clone());
        let read = move |repo: &Repo| {
            let resolved = resolve(repo, reference.as_deref(), &default_branch)?;
            let freshness = Freshness::of(&[&resolved], private, &variant);
            if freshness.matches(&headers) {
                return Ok(Fresh { freshness, value: None });
            }
            let value = work(repo, &resolved)?;
            Ok(Fresh { freshness, value: Some(value) })
        };
        let disk = self.target.disk.clone();
        match limit {
            Some((limit, what)) => self.api.browser.run_within(limit, what, disk, read).await,
            None => self.api.browser.run(disk, read).await,
        }
        .map_err(browse_error)
    }

    /// The answer `make` builds of a [`Fresh`] value, or 304 when the client has it.
    pub(super) fn respond<T>(&self, fresh: Fresh<T>, make: impl FnOnce(T) -> Response) -> Response {
        let Fresh { freshness, value } = fresh;
        freshness.answer(&self.headers, || match value {
            Some(value) => make(value),
            None => StatusCode::NOT_MODIFIED.into_response(),
        })
    }

    pub(super) fn variant(&self) -> String {
        variant(&self.uri, &self.headers)
    }

    pub(super) fn base(&self) -> String {
        self.api.public_url.as_str().trim_end_matches('/').to_owned()
    }

    pub(super) fn views(&self) -> Urls {
        Urls { repo: self.api.repo_url(&self.target) }
    }
}

/// A value read at a commit, with the answer's freshness; no value when the client has it.
pub(super) struct Fresh<T> {
    pub(super) freshness: Freshness,
    pub(super) value: Option<T>,
}

/// The query of routes that read at a ref (`ref`, default the default branch).
#[derive(Clone, Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RefQuery {
    /// A branch, tag or commit id (default: the default branch).
    #[serde(rename = "ref")]
    #[param(rename = "ref")]
    pub reference: Option<String>,
}
