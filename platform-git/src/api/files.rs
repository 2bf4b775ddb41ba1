//! Trees, contents, raw files, blame, archives, READMEs and languages.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::SignedCookieJar;
use gix::bstr::{BString, ByteSlice};
use platform_core::api::{ApiError, ApiPath, ApiQuery, ErrorBody};

use super::browse::{Freshness, RefQuery, Request, browse_error, file_route};
use super::history::RefPath;
use super::views::*;
use super::{RepoApi, RepoPath};
use crate::browse::{ArchiveFormat, BrowseError, check_path};

/// The query of a tree listing.
#[derive(Clone, Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TreeQuery {
    /// The directory to list (default: the root).
    pub path: Option<String>,
    /// Whether to list subdirectories' entries too (`true` or `1`).
    pub recursive: Option<String>,
}

/// A repository and a path in it.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct FilePath {
    /// The owner's user name.
    pub owner: String,
    /// The repository's name.
    pub name: String,
    /// A path in the repository (slashes allowed; percent-encode bytes that are not UTF-8).
    pub path: String,
}

fn checked(raw: &[u8]) -> Result<BString, ApiError> {
    Ok(check_path(raw).map_err(browse_error)?.to_owned())
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/git/trees/{ref}",
    tag = "browsing",
    params(RefPath, TreeQuery),
    responses(
        (status = 200, description = "The tree at the ref and path (recursive: at most 100,000 entries, then `truncated`)", body = TreeView),
        (status = 304, description = "The client's copy (If-None-Match) is current"),
        (status = 400, description = "A malformed ref or path", body = ErrorBody),
        (status = 404, description = "No such repository, ref or directory", body = ErrorBody)
    )
)]
pub(super) async fn get_tree(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RefPath>,
    ApiQuery(query): ApiQuery<TreeQuery>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<Response, ApiError> {
    let dir = checked(query.path.as_deref().unwrap_or("").as_bytes())?;
    let recursive = matches!(query.recursive.as_deref(), Some("true" | "1"));
    let request = Request::new(api, &path.repo(), headers, &jar, uri).await?;
    let fresh = request
        .read_at(Some(path.reference.clone()), None, move |repo, resolved| {
            let tree = repo.commit_info(resolved.id)?.tree;
            repo.tree(tree, dir.as_bstr(), recursive)
        })
        .await?;
    Ok(request.respond(fresh, |listing| Json(TreeView::from(&listing)).into_response()))
}

async fn contents_at(
    request: Request,
    path: BString,
    reference: Option<String>,
) -> Result<Response, ApiError> {
    let raw = wants(&request.headers, "application/vnd.github.raw");
    let pinned = reference.clone();
    let fresh = request
        .read_at(reference, None, move |repo, resolved| {
            let tree = repo.commit_info(resolved.id)?.tree;
            // Links in the answer stay at the commit it was made from when no ref was named.
            let at = pinned.unwrap_or_else(|| resolved.id.to_string());
            if raw {
                return Ok((at, Err(repo.file(tree, path.as_bstr())?)));
            }
            Ok((at, Ok(repo.contents(tree, path.as_bstr())?)))
        })
        .await?;
    let urls = request.views();
    Ok(request.respond(fresh, |(at, contents)| match contents {
        Ok(contents) => Json(ContentsView::new(&contents, &urls, &at)).into_response(),
        Err((entry, data)) => raw_response(entry.name.as_bstr(), data),
    }))
}

fn wants(headers: &HeaderMap, media_type: &str) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains(media_type))
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/contents",
    tag = "browsing",
    params(RepoPath, RefQuery),
    responses(
        (status = 200, description = "The root directory's entries", body = ContentsView),
        (status = 304, description = "The client's copy (If-None-Match) is current"),
        (status = 400, description = "A malformed ref", body = ErrorBody),
        (status = 404, description = "No such repository or ref", body = ErrorBody)
    )
)]
pub(super) async fn get_root_contents(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RepoPath>,
    ApiQuery(query): ApiQuery<RefQuery>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<Response, ApiError> {
    let request = Request::new(api, &path, headers, &jar, uri).await?;
    contents_at(request, BString::default(), query.reference).await
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/contents/{path}",
    tag = "browsing",
    params(FilePath, RefQuery),
    responses(
        (status = 200, description = "A file (content base64 up to 1 MiB, else `download_url`), a directory's entries, a symlink or a submodule; `Accept: application/vnd.github.raw` for the bytes", body = ContentsView),
        (status = 304, description = "The client's copy (If-None-Match) is current"),
        (status = 400, description = "A malformed ref, or `.`/`..` in the path", body = ErrorBody),
        (status = 404, description = "No such repository, ref or path", body = ErrorBody)
    )
)]
pub(super) async fn get_contents(
    State(api): State<RepoApi>,
    route: Uri,
    ApiQuery(query): ApiQuery<RefQuery>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<Response, ApiError> {
    // Not `ApiPath<FilePath>`: a file name need not be UTF-8.
    let (path, raw) = file_route(&route)?;
    let file = checked(&raw)?;
    let request = Request::new(api, &path, headers, &jar, uri).await?;
    contents_at(request, file, query.reference).await
}

/// A file's bytes with headers that keep browsers from running them on the API's origin: text as
/// `text/plain`, anything else as an attachment; always `nosniff` and a sandboxing CSP.
fn raw_response(name: &gix::bstr::BStr, data: Vec<u8>) -> Response {
    let text = !data[..data.len().min(8000)].contains(&0) && std::str::from_utf8(&data).is_ok();
    let length = data.len();
    let bytes = Bytes::from(data);
    // Sent in pieces, so a large file reaches the client as it is written out.
    let chunks = (0..length.div_ceil(CHUNK).max(1)).map(move |index| {
        let end = ((index + 1) * CHUNK).min(length);
        Ok::<_, std::io::Error>(bytes.slice(index * CHUNK..end))
    });
    let mut response = Response::new(Body::from_stream(futures_util::stream::iter(chunks)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if text {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    } else {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        let encoded = super::browse::encode_path(name);
        if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename*=UTF-8''{encoded}"))
        {
            headers.insert(header::CONTENT_DISPOSITION, value);
        }
    }
    response
}

/// Bytes per piece of a streamed answer.
const CHUNK: usize = 64 << 10;

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/raw/{path}",
    tag = "browsing",
    params(FilePath, RefQuery),
    responses(
        (status = 200, description = "The file's bytes: `text/plain` for text, an attachment otherwise, with `Content-Security-Policy: sandbox`",
         content((String = "text/plain"), (Vec<u8> = "application/octet-stream"))),
        (status = 304, description = "The client's copy (If-None-Match) is current"),
        (status = 400, description = "A malformed ref, or `.`/`..` in the path", body = ErrorBody),
        (status = 404, description = "No such repository, ref or file", body = ErrorBody)
    )
)]
pub(super) async fn get_raw(
    State(api): State<RepoApi>,
    route: Uri,
    ApiQuery(query): ApiQuery<RefQuery>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<Response, ApiError> {
    // Not `ApiPath<FilePath>`: a file name need not be UTF-8.
    let (path, raw) = file_route(&route)?;
    let file = checked(&raw)?;
    let request = Request::new(api, &path, headers, &jar, uri).await?;
    let fresh = request
        .read_at(query.reference, None, move |repo, resolved| {
            let tree = repo.commit_info(resolved.id)?.tree;
            repo.file(tree, file.as_bstr())
        })
        .await?;
    Ok(request.respond(fresh, |(entry, data)| raw_response(entry.name.as_bstr(), data)))
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/blame/{path}",
    tag = "browsing",
    params(FilePath, RefQuery),
    responses(
        (status = 200, description = "Line ranges with the commit that last changed them (renames followed)", body = BlameView),
        (status = 304, description = "The client's copy (If-None-Match) is current"),
        (status = 400, description = "A malformed ref, or `.`/`..` in the path", body = ErrorBody),
        (status = 404, description = "No such repository, ref or file", body = ErrorBody),
        (status = 422, description = "The file is larger than 2 MiB, or the blame took longer than 10 s", body = ErrorBody)
    )
)]
pub(super) async fn get_blame(
    State(api): State<RepoApi>,
    route: Uri,
    ApiQuery(query): ApiQuery<RefQuery>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<Response, ApiError> {
    // Not `ApiPath<FilePath>`: a file name need not be UTF-8.
    let (path, raw) = file_route(&route)?;
    let file = checked(&raw)?;
    let request = Request::new(api, &path, headers, &jar, uri).await?;
    let limit = request.api.browser.limits().blame_time;
    let fresh = request
        .read_at(query.reference, Some((limit, "the blame")), move |repo, resolved| {
            repo.blame(resolved.id, file.as_bstr())
        })
        .await?;
    Ok(request.respond(fresh, |blame| Json(BlameView::from(&blame)).into_response()))
}

/// Sends what an archive writer writes to the client as it comes.
struct ChannelWriter {
    sender: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buffer: Vec<u8>,
    written: u64,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK)));
        self.sender.blocking_send(Ok(piece)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        self.written += data.len() as u64;
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Zip writing asks for `Seek` but only ever writes forward: only the current position can be
/// told.
impl std::io::Seek for ChannelWriter {
    fn seek(&mut self, position: std::io::SeekFrom) -> std::io::Result<u64> {
        match position {
            std::io::SeekFrom::Current(0) => Ok(self.written),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "an archive stream cannot seek",
            )),
        }
    }
}

async fn archive(
    api: RepoApi,
    path: RefPath,
    headers: HeaderMap,
    jar: SignedCookieJar,
    uri: axum::http::Uri,
    format: ArchiveFormat,
) -> Result<Response, ApiError> {
    let request = Request::new(api, &path.repo(), headers, &jar, uri).await?;
    let reference = path.reference.clone();
    let (private, variant) = (request.target.private, request.variant());
    let resolved = request.read(move |repo| repo.resolve(&reference)).await?;
    let freshness = Freshness::of(&[&resolved], private, &variant);
    if freshness.matches(&request.headers) {
        return Ok(freshness.apply(axum::http::StatusCode::NOT_MODIFIED.into_response()));
    }
    request.read(move |repo| repo.check_archivable(resolved.id, format)).await?;
    let top = format!("{}-{}", request.target.name, path.reference.replace('/', "-"));
    let (sender, mut receiver) = tokio::sync::mpsc::channel(4);
    let browser = request.api.browser.clone();
    let prefix = top.clone();
    let failure = sender.clone();
    tokio::spawn(async move {
        let written = browser
            .run(request.target.disk.clone(), move |repo| {
                let mut out =
                    ChannelWriter { sender, buffer: Vec::with_capacity(CHUNK), written: 0 };
                repo.archive(resolved.id, &prefix, format, &mut out)?;
                std::io::Write::flush(&mut out).map_err(|error| BrowseError::Git {
                    context: "cannot send an archive",
                    source: Box::new(error),
                })
            })
            .await;
        if let Err(error) = written {
            tracing::warn!(error = %platform_core::service::error_chain(&error), "an archive was cut short");
            // The client sees the body end in an error rather than a complete-looking archive.
            let _ = failure
                .send(Err(std::io::Error::other("the archive could not be completed")))
                .await;
        }
    });
    let stream = futures_util::stream::poll_fn(move |context| receiver.poll_recv(context));
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    let file = super::browse::encode_path(format!("{top}{}", format.extension()).as_bytes());
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename*=UTF-8''{file}")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(freshness.apply(response))
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/tarball/{ref}",
    tag = "browsing",
    params(RefPath),
    responses(
        (status = 200, description = "The tree as .tar.gz under `{name}-{ref}/`, streamed", content_type = "application/gzip"),
        (status = 304, description = "The client's copy (If-None-Match) is current"),
        (status = 400, description = "A malformed ref", body = ErrorBody),
        (status = 404, description = "No such repository or ref", body = ErrorBody)
    )
)]
pub(super) async fn get_tarball(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RefPath>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<Response, ApiError> {
    archive(api, path, headers, jar, uri, ArchiveFormat::TarGz).await
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/zipball/{ref}",
    tag = "browsing",
    params(RefPath),
    responses(
        (status = 200, description = "The tree as .zip under `{name}-{ref}/`, streamed (zip holds only UTF-8 names)", content_type = "application/zip"),
        (status = 304, description = "The client's copy (If-None-Match) is current"),
        (status = 400, description = "A malformed ref", body = ErrorBody),
        (status = 404, description = "No such repository or ref", body = ErrorBody),
        (status = 422, description = "A file name or symlink target that is not UTF-8, which zip cannot hold", body = ErrorBody)
    )
)]
pub(super) async fn get_zipball(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RefPath>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<Response, ApiError> {
    archive(api, path, headers, jar, uri, ArchiveFormat::Zip).await
}

async fn readme_at(
    request: Request,
    dir: BString,
    reference: Option<String>,
) -> Result<Response, ApiError> {
    let pinned = reference.clone();
    let fresh = request
        .read_at(reference, None, move |repo, resolved| {
            let tree = repo.commit_info(resolved.id)?.tree;
            let at = pinned.unwrap_or_else(|| resolved.id.to_string());
            Ok((at, repo.readme(tree, dir.as_bstr())?))
        })
        .await?;
    let urls = request.views();
    let html = wants(&request.headers, "application/vnd.github.html");
    let raw = wants(&request.headers, "application/vnd.github.raw");
    Ok(request.respond(fresh, |(at, readme)| {
        if html {
            let mut response = readme.html.unwrap_or_default().into_response();
            let headers = response.headers_mut();
            headers
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
            response
        } else if raw {
            raw_response(readme.entry.name.as_bstr(), readme.content.unwrap_or_default())
        } else {
            Json(ReadmeView::new(&readme, &urls, &at)).into_response()
        }
    }))
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/readme",
    tag = "browsing",
    params(RepoPath, RefQuery),
    responses(
        (status = 200, description = "The root's README with its sanitized HTML; `Accept: application/vnd.github.html` or `.raw` for those alone",
         content((ReadmeView = "application/json"), (String = "text/html"), (String = "text/plain"))),
        (status = 304, description = "The client's copy (If-None-Match) is current"),
        (status = 400, description = "A malformed ref", body = ErrorBody),
        (status = 404, description = "No such repository or ref, or no README", body = ErrorBody)
    )
)]
pub(super) async fn get_root_readme(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RepoPath>,
    ApiQuery(query): ApiQuery<RefQuery>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<Response, ApiError> {
    let request = Request::new(api, &path, headers, &jar, uri).await?;
    readme_at(request, BString::default(), query.reference).await
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/readme/{path}",
    tag = "browsing",
    params(FilePath, RefQuery),
    responses(
        (status = 200, description = "The directory's README with its sanitized HTML",
         content((ReadmeView = "application/json"), (String = "text/html"), (String = "text/plain"))),
        (status = 304, description = "The client's copy (If-None-Match) is current"),
        (status = 400, description = "A malformed ref, or `.`/`..` in the path", body = ErrorBody),
        (status = 404, description = "No such repository, ref or directory, or no README", body = ErrorBody)
    )
)]
pub(super) async fn get_readme(
    State(api): State<RepoApi>,
    route: Uri,
    ApiQuery(query): ApiQuery<RefQuery>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<Response, ApiError> {
    // Not `ApiPath<FilePath>`: a file name need not be UTF-8.
    let (path, raw) = file_route(&route)?;
    let dir = checked(&raw)?;
    let request = Request::new(api, &path, headers, &jar, uri).await?;
    readme_at(request, dir, query.reference).await
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/languages",
    tag = "browsing",
    params(RepoPath),
    responses(
        (status = 200, description = "Bytes of code per language on the default branch (vendored and generated files skipped); empty when the branch does not exist yet", body = std::collections::BTreeMap<String, u64>),
        (status = 304, description = "The client's copy (If-None-Match) is current"),
        (status = 404, description = "No such repository", body = ErrorBody)
    )
)]
pub(super) async fn get_languages(
    State(api): State<RepoApi>,
    ApiPath(path): ApiPath<RepoPath>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<Response, ApiError> {
    let request = Request::new(api, &path, headers, &jar, uri).await?;
    let default_branch = request.target.default_branch.clone();
    let (private, variant, headers) =
        (request.target.private, request.variant(), request.headers.clone());
    let (freshness, tree) = request
        .read(move |repo| {
            let resolved = match repo.resolve(&default_branch) {
                Ok(resolved) => resolved,
                // An empty repository has no languages yet.
                Err(BrowseError::NotFound { .. }) => return Ok((None, None)),
                Err(other) => return Err(other),
            };
            let freshness = Freshness::of(&[&resolved], private, &variant);
            if freshness.matches(&headers) {
                return Ok((Some(freshness), None));
            }
            Ok((Some(freshness), Some(repo.commit_info(resolved.id)?.tree)))
        })
        .await?;
    let languages = match (&freshness, tree) {
        (_, Some(tree)) => Some(
            request
                .api
                .browser
                .languages(request.target.disk.clone(), tree)
                .await
                .map_err(browse_error)?,
        ),
        (None, None) => Some(Default::default()),
        (Some(_), None) => None,
    };
    let json = |languages: Option<crate::browse::Languages>| match languages {
        Some(languages) => Json(languages).into_response(),
        None => axum::http::StatusCode::NOT_MODIFIED.into_response(),
    };
    Ok(match freshness {
        Some(freshness) => freshness.answer(&request.headers, || json(languages)),
        None => json(languages),
    })
}
