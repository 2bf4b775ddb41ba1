//! Branches, tags, commits and comparisons.

use axum::Json;
use axum::extract::{OriginalUri, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::SignedCookieJar;
use chrono::{DateTime, Utc};
use platform_core::api::{ApiError, ApiPath, ApiQuery, ErrorBody};

use super::browse::{
    Fresh, Freshness, PageQuery, Representation, Request, link_header, patch_response,
    representation, with_link,
};
use super::views::*;
use super::{RepoApi, RepoPath};
use crate::browse::LogQuery;

/// A repository and a branch, tag, commit or comparison in a route.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RefPath {
    /// The owner's user name.
    pub owner: String,
    /// The repository's name.
    pub name: String,
    /// A branch, tag or commit id (slashes allowed), or for compare `base...head`.
    #[serde(rename = "ref")]
    #[param(rename = "ref")]
    pub reference: String,
}

impl RefPath {
    pub(super) fn repo(&self) -> RepoPath {
        RepoPath { owner: self.owner.clone(), name: self.name.clone() }
    }
}

/// The protection rules of the repository `request` reads (the record found when it was
/// authorized).
async fn protected_rules(
    request: &Request,
) -> Result<Vec<crate::protection::ProtectedBranch>, ApiError> {
    let mut conn = request.api.connection().await?;
    crate::protection::list(&mut conn, request.target.id).await.map_err(ApiError::internal)
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/branches",
    tag = "browsing",
    params(RepoPath, PageQuery),
    responses(
        (status = 200, description = "A page of branches by name, with a Link header", body = [BranchView]),
        (status = 400, description = "Malformed query string", body = ErrorBody),
        (status = 404, description = "No such repository, or one the caller cannot see", body = ErrorBody),
        (status = 422, description = "A page parameter out of range", body = ErrorBody)
    )
)]
pub(super) async fn list_branches(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RepoPath>,
    ApiQuery(page): ApiQuery<PageQuery>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<Response, ApiError> {
    let (page, per_page) = page.resolve()?;
    let request = Request::new(api, &path, headers, &jar, uri).await?;
    let branches = request.read(|repo| repo.branches()).await?;
    let rules = protected_rules(&request).await?;
    let urls = request.views();
    let last = branches.len().div_ceil(per_page).max(1);
    let views: Vec<BranchView> = branches
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|branch| {
            BranchView::new(
                branch,
                &urls,
                crate::protection::rule_for(&rules, &branch.name).is_some(),
            )
        })
        .collect();
    let link = link_header(&request.base(), &request.uri, page, per_page, page < last, Some(last));
    Ok(with_link(Json(views).into_response(), link))
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/branches/{ref}",
    tag = "browsing",
    params(RefPath),
    responses(
        (status = 200, description = "The branch and its commit", body = BranchDetail),
        (status = 400, description = "A name git does not allow", body = ErrorBody),
        (status = 404, description = "No such repository or branch", body = ErrorBody)
    )
)]
pub(super) async fn get_branch(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RefPath>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<Response, ApiError> {
    let request = Request::new(api, &path.repo(), headers, &jar, uri).await?;
    let name = path.reference.clone();
    let (branch, info) = request
        .read(move |repo| {
            let branch = repo.branch(&name)?;
            let info = repo.commit_info(branch.commit)?;
            Ok((branch, info))
        })
        .await?;
    let rules = protected_rules(&request).await?;
    let urls = request.views();
    Ok(Json(BranchDetail {
        protected: crate::protection::rule_for(&rules, &branch.name).is_some(),
        name: branch.name,
        commit: CommitView::new(&info, &urls),
    })
    .into_response())
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/tags",
    tag = "browsing",
    params(RepoPath, PageQuery),
    responses(
        (status = 200, description = "A page of tags by name, with a Link header", body = [TagView]),
        (status = 400, description = "Malformed query string", body = ErrorBody),
        (status = 404, description = "No such repository, or one the caller cannot see", body = ErrorBody),
        (status = 422, description = "A page parameter out of range", body = ErrorBody)
    )
)]
pub(super) async fn list_tags(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RepoPath>,
    ApiQuery(page): ApiQuery<PageQuery>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<Response, ApiError> {
    let (page, per_page) = page.resolve()?;
    let request = Request::new(api, &path, headers, &jar, uri).await?;
    let tags = request.read(|repo| repo.tags()).await?;
    let urls = request.views();
    let last = tags.len().div_ceil(per_page).max(1);
    let views: Vec<TagView> = tags
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|tag| TagView::new(tag, &urls))
        .collect();
    let link = link_header(&request.base(), &request.uri, page, per_page, page < last, Some(last));
    Ok(with_link(Json(views).into_response(), link))
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/tags/{ref}",
    tag = "browsing",
    params(RefPath),
    responses(
        (status = 200, description = "The tag, with its annotation", body = TagView),
        (status = 400, description = "A name git does not allow", body = ErrorBody),
        (status = 404, description = "No such repository or tag", body = ErrorBody)
    )
)]
pub(super) async fn get_tag(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RefPath>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<Response, ApiError> {
    let request = Request::new(api, &path.repo(), headers, &jar, uri).await?;
    let name = path.reference.clone();
    let tag = request.read(move |repo| repo.tag(&name)).await?;
    Ok(Json(TagView::new(&tag, &request.views())).into_response())
}

/// The filters of the commit list.
#[derive(Clone, Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CommitsQuery {
    /// The branch, tag or commit to start from (default: the default branch).
    pub sha: Option<String>,
    /// Only commits that changed this file or directory (as `git log -- path`).
    pub path: Option<String>,
    /// Only commits committed at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Only commits committed at or before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Only commits whose author has this email address or name.
    pub author: Option<String>,
    /// The page, from 1 (default 1).
    #[param(minimum = 1, maximum = 100000)]
    pub page: Option<u32>,
    /// Commits per page, 1 to 100 (default 30).
    #[param(minimum = 1, maximum = 100)]
    pub per_page: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/commits",
    tag = "browsing",
    params(RepoPath, CommitsQuery),
    responses(
        (status = 200, description = "A page of history, newest first, with a Link header", body = [CommitView]),
        (status = 400, description = "A malformed ref or path", body = ErrorBody),
        (status = 404, description = "No such repository or ref", body = ErrorBody),
        (status = 422, description = "A parameter out of range, or a walk past its time limit (10 s)", body = ErrorBody)
    )
)]
pub(super) async fn list_commits(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RepoPath>,
    ApiQuery(query): ApiQuery<CommitsQuery>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<Response, ApiError> {
    let (page, per_page) = PageQuery { page: query.page, per_page: query.per_page }.resolve()?;
    let filter_path = match &query.path {
        Some(raw) => Some(
            crate::browse::check_path(raw.as_bytes())
                .map_err(super::browse::browse_error)?
                .to_owned(),
        ),
        None => None,
    };
    let request = Request::new(api, &path, headers, &jar, uri).await?;
    let fresh = request
        .read_at(query.sha.clone(), None, move |repo, resolved| {
            repo.log(&LogQuery {
                start: resolved.id,
                path: filter_path.filter(|path| !path.is_empty()),
                since: query.since.map(|time| time.timestamp()),
                until: query.until.map(|time| time.timestamp()),
                author: query.author.clone(),
                skip: (page - 1) * per_page,
                limit: per_page,
            })
        })
        .await?;
    let urls = request.views();
    Ok(request.respond(fresh, |log| {
        let link = link_header(&request.base(), &request.uri, page, per_page, log.more, None);
        let views: Vec<CommitView> =
            log.commits.iter().map(|info| CommitView::new(info, &urls)).collect();
        with_link(Json(views).into_response(), link)
    }))
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/commits/{ref}",
    tag = "browsing",
    params(RefPath),
    responses(
        (status = 200, description = "The commit with stats, files and patches (at most 300 files); `.diff`/`.patch` or `Accept: application/vnd.github.diff|patch` for text",
         content((CommitView = "application/json"), (String = "text/x-diff"), (String = "text/x-patch"))),
        (status = 304, description = "The client's copy (If-None-Match) is current"),
        (status = 400, description = "A malformed ref", body = ErrorBody),
        (status = 404, description = "No such repository or commit", body = ErrorBody)
    )
)]
pub(super) async fn get_commit(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RefPath>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<Response, ApiError> {
    let request = Request::new(api, &path.repo(), headers, &jar, uri).await?;
    let name = path.reference.clone();
    let headers = request.headers.clone();
    let variant = request.variant();
    let private = request.target.private;
    let fresh = request
        .read(move |repo| {
            let (name, representation) =
                representation(&name, &headers, |whole| repo.resolve(whole).is_ok());
            let resolved = repo.resolve(name)?;
            let freshness = Freshness::of(&[&resolved], private, &variant);
            if freshness.matches(&headers) {
                return Ok(Fresh { freshness, value: None });
            }
            let info = repo.commit_info(resolved.id)?;
            let body = match representation {
                Representation::Json => {
                    let diff = repo.commit_diff(&info, true)?;
                    Answer::Json(Box::new((info, diff)))
                }
                Representation::Diff => {
                    let diff = repo.commit_diff(&info, true)?;
                    let mut out = Vec::new();
                    repo.write_diff(&diff, &mut out)?;
                    Answer::Text(out, representation)
                }
                Representation::Patch => {
                    let mut out = Vec::new();
                    repo.write_patches(std::slice::from_ref(&info), &mut out)?;
                    Answer::Text(out, representation)
                }
            };
            Ok(Fresh { freshness, value: Some(body) })
        })
        .await?;
    let urls = request.views();
    Ok(request.respond(fresh, |answer| match answer {
        Answer::Json(commit) => {
            let (info, diff) = *commit;
            Json(CommitView::new(&info, &urls).with_diff(&diff, &urls)).into_response()
        }
        Answer::Text(bytes, representation) => patch_response(bytes, representation),
    }))
}

/// What a commit or comparison route made: its JSON's parts, or a diff or patch in text.
enum Answer<J> {
    Json(Box<J>),
    Text(Vec<u8>, Representation),
}

struct CompareParts {
    base: crate::browse::CommitInfo,
    head: gix::ObjectId,
    merge_base: Option<crate::browse::CommitInfo>,
    ahead: usize,
    behind: usize,
    commits: Vec<crate::browse::CommitInfo>,
    diff: crate::browse::Diff,
}

fn split_basehead(basehead: &str) -> Result<(&str, &str), crate::browse::BrowseError> {
    basehead
        .split_once("...")
        .filter(|(base, head)| !base.is_empty() && !head.is_empty())
        .ok_or_else(|| crate::browse::BrowseError::Malformed {
            what: "basehead",
            name: basehead.to_owned(),
            reason: "a comparison is `base...head`",
        })
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/compare/{ref}",
    tag = "browsing",
    params(RefPath),
    responses(
        (status = 200, description = "`base...head`: merge base, ahead/behind counts, commits (at most 250) and files from the merge base (at most 300); `.diff`/`.patch` or an Accept media type for text",
         content((CompareView = "application/json"), (String = "text/x-diff"), (String = "text/x-patch"))),
        (status = 304, description = "The client's copy (If-None-Match) is current"),
        (status = 400, description = "Not `base...head`, or a malformed ref", body = ErrorBody),
        (status = 404, description = "No such repository, base or head", body = ErrorBody),
        (status = 422, description = "The comparison took longer than its limit (10 s)", body = ErrorBody)
    )
)]
pub(super) async fn compare(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RefPath>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<Response, ApiError> {
    let request = Request::new(api, &path.repo(), headers, &jar, uri).await?;
    let basehead = path.reference.clone();
    let headers = request.headers.clone();
    let variant = request.variant();
    let private = request.target.private;
    let fresh = request
        .read(move |repo| {
            let (basehead, representation) = representation(&basehead, &headers, |_| false);
            let (base, head) = split_basehead(basehead)?;
            let (base, head) = (repo.resolve(base)?, repo.resolve(head)?);
            let freshness = Freshness::of(&[&base, &head], private, &variant);
            if freshness.matches(&headers) {
                return Ok(Fresh { freshness, value: None });
            }
            let limit = repo.limits().compare_commits;
            let divergence = repo.divergence(base.id, head.id, limit)?;
            let merge_base = repo.merge_base(base.id, head.id)?;
            let from_tree = match merge_base {
                Some(id) => Some(repo.commit_info(id)?.tree),
                None => None,
            };
            let head_info = repo.commit_info(head.id)?;
            let answer = match representation {
                Representation::Json => {
                    let diff = repo.diff_trees(from_tree, head_info.tree, true)?;
                    Answer::Json(Box::new(CompareParts {
                        base: repo.commit_info(base.id)?,
                        head: head.id,
                        merge_base: merge_base.map(|id| repo.commit_info(id)).transpose()?,
                        ahead: divergence.ahead,
                        behind: divergence.behind,
                        commits: divergence.commits,
                        diff,
                    }))
                }
                Representation::Diff => {
                    let diff = repo.diff_trees(from_tree, head_info.tree, true)?;
                    let mut out = Vec::new();
                    repo.write_diff(&diff, &mut out)?;
                    Answer::Text(out, representation)
                }
                Representation::Patch => {
                    let mut out = Vec::new();
                    repo.write_patches(&divergence.commits, &mut out)?;
                    Answer::Text(out, representation)
                }
            };
            Ok(Fresh { freshness, value: Some(answer) })
        })
        .await?;
    let urls = request.views();
    Ok(request.respond(fresh, |answer| match answer {
        Answer::Json(parts) => {
            let CompareParts { base, head, merge_base, ahead, behind, commits, diff } = *parts;
            let status = match (ahead, behind) {
                (0, 0) => "identical",
                (_, 0) => "ahead",
                (0, _) => "behind",
                _ => "diverged",
            };
            let head_sha = head.to_string();
            Json(CompareView {
                status: status.to_owned(),
                ahead_by: ahead,
                behind_by: behind,
                total_commits: ahead,
                base_commit: CommitView::new(&base, &urls),
                merge_base_commit: merge_base.as_ref().map(|info| CommitView::new(info, &urls)),
                commits: commits.iter().map(|info| CommitView::new(info, &urls)).collect(),
                files: diff
                    .files
                    .iter()
                    .map(|file| FileView::new(file, &urls, &head_sha))
                    .collect(),
                total_files: diff.truncated().then_some(diff.total_files),
            })
            .into_response()
        }
        Answer::Text(bytes, representation) => patch_response(bytes, representation),
    }))
}
