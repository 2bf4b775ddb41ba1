//! Serving a storage root over HTTP: `GET` and `HEAD` of the files beneath a [`Root`].
//!
//! - Every file is opened through [`Root`]: no `..`, no hidden names, no symlink out of the root;
//!   directories and refused paths are 404 (never listed, never redirected).
//! - `Content-Type` from the extension, a strong `ETag` and `Last-Modified`,
//!   `X-Content-Type-Options: nosniff`, `Accept-Ranges: bytes`, `Vary: Accept-Encoding`, and
//!   `Cache-Control`: `immutable` under the content-addressed prefixes, revalidation (`no-cache`)
//!   elsewhere.
//! - Preconditions in RFC 9110's order (§13.2.2): `If-Match` / `If-Unmodified-Since` (412), then
//!   `If-None-Match` / `If-Modified-Since` (304).
//! - A single byte range (206; 416 with `Content-Range: bytes */len` when unsatisfiable), guarded
//!   by `If-Range` (a strong entity tag or the exact date); several ranges get the whole file.
//! - Precompressed `.br` and `.gz` siblings for clients that accept them (each with its own
//!   entity tag).
//!
//! Opening costs one `openat2` and one `fstat`; the file is then kept open for the next requests
//! of its path, which cost one `statx` to check that the path still names it, unchanged
//! ([`StaticOptions::open_files`]). Files up to the chunk size are read whole and sent with the
//! headers in one write, larger ones are streamed in chunks. Reads of data in
//! the page cache run right on the async threads (`preadv2` with `RWF_NOWAIT`, microseconds);
//! only reads that would wait for the disk go to the blocking pool.
//!
//! The header semantics come from crates: `headers` (entity-tag lists and dates of the
//! conditional headers), `http-range-header` (range syntax), `httpdate`, `mime_guess`.

use std::convert::Infallible;
use std::fs::File;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use headers::{HeaderMapExt as _, IfMatch, IfModifiedSince, IfNoneMatch, IfUnmodifiedSince};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body::{Frame, SizeHint};

use crate::root::{FileVersion, Root, StorageError};

/// How a [`StaticFiles`] service answers.
#[derive(Clone, Debug)]
pub struct StaticOptions {
    /// Path prefixes (without a leading `/`) whose files never change once written, because
    /// their names are their content's hash: answered with
    /// `Cache-Control: public, max-age=31536000, immutable`. Default: `files/blobs/` and
    /// `avatars/`.
    pub immutable_prefixes: Vec<String>,
    /// Files up to this size are read whole and sent with the headers; larger ones are sent in
    /// pieces of this size. Default 64 KiB.
    pub chunk_size: usize,
    /// A URL path prefix (such as `/static`) under which the same files are served too: a
    /// request for `/static/a/b` gets the file `a/b`. Default: none.
    pub url_prefix: Option<String>,
    /// How many open files are kept for the next requests (0: none), each under its path.
    /// A kept file is used only while the path still names it, unchanged: one `statx` per
    /// request checks device, inode, size and modification and change times, where opening
    /// anew costs `openat2`, `statx` and `close`. A replaced, changed or removed file is never
    /// served from it. Default 256 (each is a file descriptor).
    pub open_files: usize,
    /// How often every kept file is let go (at the next request), so that the space of removed
    /// files returns to the file system. Default one minute.
    pub keep_open_for: std::time::Duration,
}

impl Default for StaticOptions {
    fn default() -> Self {
        Self {
            immutable_prefixes: vec!["files/blobs/".to_owned(), "avatars/".to_owned()],
            chunk_size: 64 * 1024,
            url_prefix: None,
            open_files: 256,
            keep_open_for: std::time::Duration::from_secs(60),
        }
    }
}

/// The static file service of a root.
#[derive(Clone, Debug)]
pub struct StaticFiles {
    inner: Arc<Inner>,
}

struct Inner {
    root: Root,
    /// With a list of public directories: each, by name, opened as a root of its own, so that
    /// nothing outside them is served, not even through a symlink.
    public: Option<Vec<(String, Root)>>,
    options: StaticOptions,
    open_files: Option<quick_cache::sync::Cache<String, Kept>>,
    /// When `open_files` was last emptied, in milliseconds since `created`.
    emptied_at: std::sync::atomic::AtomicU64,
    created: std::time::Instant,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticFiles")
            .field("root", &self.root)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// What is known of a path from an earlier request.
#[derive(Clone, Debug)]
enum Kept {
    /// The file it named, still open.
    Open(OpenFile),
    /// Nothing was there while its directory had this version (precompressed siblings that do
    /// not exist: most files have none, and every browser asks for them).
    Absent { directory: FileVersion },
}

/// A file opened beneath the root, and which version of it.
#[derive(Clone, Debug)]
struct OpenFile {
    file: Arc<File>,
    version: FileVersion,
}

impl StaticFiles {
    /// Serves the files of `root`.
    pub fn new(root: Root, options: StaticOptions) -> Self {
        Self::serving(root, None, options)
    }

    fn serving(root: Root, public: Option<Vec<(String, Root)>>, options: StaticOptions) -> Self {
        let options = StaticOptions { chunk_size: options.chunk_size.max(1), ..options };
        let open_files =
            (options.open_files > 0).then(|| quick_cache::sync::Cache::new(options.open_files));
        Self {
            inner: Arc::new(Inner {
                root,
                public,
                options,
                open_files,
                emptied_at: std::sync::atomic::AtomicU64::new(0),
                created: std::time::Instant::now(),
            }),
        }
    }

    /// Serves only the directories named `public_dirs` at the top of `root` (a request for
    /// `/avatars/a.png` gets `avatars/a.png` when `avatars` is listed; anything else is 404).
    /// Each is opened as a root of its own, created if missing, so a symlink inside one cannot
    /// lead elsewhere in `root`.
    ///
    /// # Errors
    ///
    /// Fails when a name is not a single plain path component, or a directory cannot be opened.
    pub fn public_dirs(
        root: Root,
        public_dirs: &[String],
        options: StaticOptions,
    ) -> Result<Self, StorageError> {
        let mut public = Vec::with_capacity(public_dirs.len());
        for name in public_dirs {
            crate::root::check_relative(name)?;
            if name.contains('/') {
                return Err(StorageError::InvalidPath {
                    path: name.clone(),
                    reason: "a public directory is one name at the top of the root",
                });
            }
            public.push((name.clone(), Root::open(root.path().join(name))?));
        }
        Ok(Self::serving(root, Some(public), options))
    }

    /// Checks that nothing this service serves overlaps `repositories` (the repository root,
    /// which need not exist here): neither holds the other.
    ///
    /// # Errors
    ///
    /// [`StorageError::ServesRepositories`] naming the directory that overlaps them.
    pub fn ensure_apart_from(&self, repositories: &Path) -> Result<(), StorageError> {
        let repositories = repositories.canonicalize().unwrap_or_else(|_| repositories.to_owned());
        let served: Vec<&Path> = match &self.inner.public {
            Some(public) => public.iter().map(|(_, root)| root.path()).collect(),
            None => vec![self.inner.root.path()],
        };
        for served in served {
            if served.starts_with(&repositories) || repositories.starts_with(served) {
                return Err(StorageError::ServesRepositories {
                    served: served.display().to_string(),
                    repositories: repositories.display().to_string(),
                });
            }
        }
        Ok(())
    }

    /// The root holding `relative` and the path inside it; `None` when it is not served.
    fn root_for<'a>(&self, relative: &'a str) -> Option<(&Root, &'a str)> {
        let Some(public) = &self.inner.public else {
            return Some((&self.inner.root, relative));
        };
        let (top, rest) = relative.split_once('/').unwrap_or((relative, ""));
        public.iter().find(|(name, _)| name == top).map(|(_, root)| (root, rest))
    }

    /// Returns a router that serves every path with these files.
    pub fn router(self) -> Router {
        Router::new().fallback(serve).with_state(self)
    }

    /// Answers a request for `path` (the URI's path, percent-encoded as received).
    pub async fn respond(&self, method: &Method, path: &str, headers: &HeaderMap) -> Response {
        if method != Method::GET && method != Method::HEAD {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let path = match &self.inner.options.url_prefix {
            Some(prefix) => path
                .strip_prefix(prefix.as_str())
                .filter(|rest| rest.starts_with('/'))
                .unwrap_or(path),
            None => path,
        };
        let Some(relative) = decode_path(path) else { return not_found() };
        if self.root_for(&relative).is_none_or(|(_, inside)| inside.is_empty()) {
            return not_found();
        }
        let Some(opened) = self.open(&relative, headers) else { return not_found() };
        let opened = match opened {
            Ok(opened) => opened,
            Err(error) => {
                tracing::error!(error = %platform_core::service::error_chain(&error), "cannot serve a static file");
                return plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file\n");
            }
        };
        let validators = Validators::of(&opened);
        let immutable = self
            .inner
            .options
            .immutable_prefixes
            .iter()
            .any(|prefix| relative.starts_with(prefix.as_str()));

        let mut response = Response::new(Body::empty());
        let answer = response.headers_mut();
        answer.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        answer.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(if immutable {
                "public, max-age=31536000, immutable"
            } else {
                "public, no-cache"
            }),
        );
        answer.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        answer.insert(header::ETAG, validators.etag.clone());
        answer.insert(header::LAST_MODIFIED, validators.last_modified.clone());

        if let Some(status) = validators.precondition_status(headers) {
            *response.status_mut() = status;
            return response;
        }

        let len = opened.file.version.len;
        let answer = response.headers_mut();
        answer.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        answer.insert(header::CONTENT_TYPE, HeaderValue::from_static(opened.content_type));
        if let Some(encoding) = opened.encoding {
            answer.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding.token()));
        }
        let (start, count) = match requested_range(headers, &validators, len) {
            RangeRequest::Whole => (0, len),
            RangeRequest::Part { start, end } => {
                *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                let range = format!("bytes {start}-{end}/{len}");
                response.headers_mut().insert(header::CONTENT_RANGE, header_value(&range));
                (start, end - start + 1)
            }
            RangeRequest::Unsatisfiable => {
                *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                let answer = response.headers_mut();
                answer.remove(header::CONTENT_TYPE);
                answer.remove(header::CONTENT_ENCODING);
                answer.insert(header::CONTENT_RANGE, header_value(&format!("bytes */{len}")));
                return response;
            }
        };
        response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(count));
        if method == Method::HEAD || count == 0 {
            return response;
        }
        let file = FileBody::new(opened.file.file, start, count, self.inner.options.chunk_size);
        if count <= self.inner.options.chunk_size as u64 {
            // Read whole before answering, so the headers and the bytes leave in one write, and
            // a failed read is still a 500 rather than a cut-off body.
            match file.read_whole().await {
                Ok(bytes) => *response.body_mut() = Body::from(bytes),
                Err(error) => {
                    tracing::error!(%error, path = %relative, "cannot read a static file");
                    return plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file\n");
                }
            }
        } else {
            *response.body_mut() = Body::new(file);
        }
        response
    }

    /// Opens the representation to send: a precompressed sibling the client accepts, else the
    /// file itself. `None` when there is no such file (or the path is refused).
    fn open(&self, relative: &str, headers: &HeaderMap) -> Option<Result<Opened, StorageError>> {
        let extension = relative.rsplit_once('.').map(|(_, extension)| extension);
        let content_type = extension
            .filter(|extension| !extension.contains('/'))
            .and_then(|extension| mime_guess::from_ext(extension).first_raw())
            .unwrap_or("application/octet-stream");
        let kept = self.kept();
        // The directory's version, read once and before any sibling is looked for: a sibling
        // added meanwhile changes it.
        let directory = std::cell::OnceCell::new();
        let directory_version = || {
            *directory.get_or_init(|| {
                let name = relative.rsplit_once('/').map_or("", |(directory, _)| directory);
                let (root, inside) = self.root_for(name)?;
                root.directory_version(inside)
            })
        };
        let encodings =
            headers.get(header::ACCEPT_ENCODING).map(accepted_encodings).unwrap_or_default();
        let mut missing = Vec::new();
        for encoding in encodings.into_iter().flatten() {
            let sibling = format!("{relative}.{}", encoding.extension());
            match self.look_up(kept, &sibling, Some(&directory_version)) {
                Ok(Lookup::Found(file)) => {
                    return Some(Ok(Opened { file, content_type, encoding: Some(encoding) }));
                }
                Ok(Lookup::KnownAbsent) => {}
                Ok(Lookup::Missing) => missing.push(sibling),
                Err(error) => return Some(Err(error)),
            }
        }
        match self.look_up(kept, relative, None) {
            Ok(Lookup::Found(file)) => {
                // Absent siblings are remembered only for files that exist, so that requests
                // for paths that do not cannot fill the kept files.
                if let (Some(kept), Some(directory)) = (kept, directory_version().filter(settled)) {
                    for sibling in missing {
                        kept.insert(sibling, Kept::Absent { directory });
                    }
                }
                Some(Ok(Opened { file, content_type, encoding: None }))
            }
            Ok(Lookup::KnownAbsent | Lookup::Missing) => None,
            Err(error) => Some(Err(error)),
        }
    }

    /// The kept files, emptied when the keep-open period has passed.
    fn kept(&self) -> Option<&quick_cache::sync::Cache<String, Kept>> {
        let kept = self.inner.open_files.as_ref()?;
        let now = u64::try_from(self.inner.created.elapsed().as_millis()).unwrap_or(u64::MAX);
        let period =
            u64::try_from(self.inner.options.keep_open_for.as_millis()).unwrap_or(u64::MAX);
        let emptied_at = &self.inner.emptied_at;
        let last = emptied_at.load(std::sync::atomic::Ordering::Relaxed);
        if now.saturating_sub(last) >= period
            && emptied_at
                .compare_exchange(
                    last,
                    now,
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                )
                .is_ok()
        {
            kept.clear();
        }
        Some(kept)
    }

    /// The file at `relative`: the one kept open under that path while the path still names
    /// it unchanged, else opened anew (and kept). With `directory_version`, a kept absence
    /// holds while the directory has the version it had then.
    fn look_up(
        &self,
        kept: Option<&quick_cache::sync::Cache<String, Kept>>,
        relative: &str,
        directory_version: Option<&dyn Fn() -> Option<FileVersion>>,
    ) -> Result<Lookup, StorageError> {
        let Some((root, inside)) = self.root_for(relative) else {
            return Ok(Lookup::Missing);
        };
        match kept.and_then(|kept| kept.get(relative)) {
            Some(Kept::Open(file)) if root.current_version(inside) == Some(file.version) => {
                return Ok(Lookup::Found(file));
            }
            Some(Kept::Absent { directory })
                if directory_version.is_some_and(|version| version() == Some(directory)) =>
            {
                return Ok(Lookup::KnownAbsent);
            }
            _ => {}
        }
        if let Some(version) = directory_version {
            version();
        }
        match root.open_file_version(inside) {
            Ok((file, version)) => {
                let opened = OpenFile { file: Arc::new(file), version };
                if let Some(kept) = kept {
                    kept.insert(relative.to_owned(), Kept::Open(opened.clone()));
                }
                Ok(Lookup::Found(opened))
            }
            Err(StorageError::NotFound { .. } | StorageError::InvalidPath { .. }) => {
                if let Some(kept) = kept {
                    kept.remove(relative);
                }
                Ok(Lookup::Missing)
            }
            Err(error) => Err(error),
        }
    }
}

/// Whether a directory has been left unchanged for a second. File times come from a coarse
/// clock (a few milliseconds): a directory changed within the last second could change again
/// without its times moving, so only a settled one says for sure that nothing was added.
fn settled(directory: &FileVersion) -> bool {
    directory.changed_time() + std::time::Duration::from_secs(1) < std::time::SystemTime::now()
}

/// What [`StaticFiles::look_up`] found at a path.
enum Lookup {
    Found(OpenFile),
    /// Known from an earlier request to be absent, its directory unchanged since.
    KnownAbsent,
    Missing,
}

/// The service answering every path, for [`ServiceShell::with_service`]
/// (`platform_core::service::ServiceShell`), which calls it without routing.
///
/// [`ServiceShell::with_service`]: platform_core::service::ServiceShell::with_service
impl<B: Send + 'static> tower::Service<http::Request<B>> for StaticFiles {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let files = self.clone();
        Box::pin(async move {
            Ok(files.respond(request.method(), request.uri().path(), request.headers()).await)
        })
    }
}

async fn serve(State(files): State<StaticFiles>, request: Request) -> Response {
    files.respond(request.method(), request.uri().path(), request.headers()).await
}

/// The relative path a request names: percent-decoded, which must give UTF-8. Whether it is an
/// acceptable path is [`Root`]'s to decide.
fn decode_path(path: &str) -> Option<std::borrow::Cow<'_, str>> {
    let path = path.strip_prefix('/').unwrap_or(path);
    percent_encoding::percent_decode_str(path).decode_utf8().ok()
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

fn not_found() -> Response {
    plain(StatusCode::NOT_FOUND, "not found\n")
}

/// A value built from digits, spaces and punctuation only.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A content coding a precompressed sibling can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Brotli,
    Gzip,
}

impl Encoding {
    fn token(self) -> &'static str {
        match self {
            Self::Brotli => "br",
            Self::Gzip => "gzip",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Self::Brotli => "br",
            Self::Gzip => "gz",
        }
    }
}

/// The precompressed codings an `Accept-Encoding` value accepts, most preferred first (by
/// weight; Brotli first on equal weights).
fn accepted_encodings(value: &HeaderValue) -> [Option<Encoding>; 2] {
    let Ok(value) = value.to_str() else { return [None, None] };
    let (mut brotli, mut gzip, mut any) = (None, None, None);
    for item in value.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or_default().trim();
        let weight = parts
            .find_map(|parameter| {
                let (name, value) = parameter.split_once('=')?;
                name.trim().eq_ignore_ascii_case("q").then(|| value.trim().parse::<f32>().ok())?
            })
            .unwrap_or(1.0);
        if coding.eq_ignore_ascii_case("br") {
            brotli = Some(weight);
        } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(weight);
        } else if coding == "*" {
            any = Some(weight);
        }
    }
    let brotli = brotli.or(any).filter(|weight| *weight > 0.0);
    let gzip = gzip.or(any).filter(|weight| *weight > 0.0);
    match (brotli, gzip) {
        (Some(b), Some(g)) if g > b => [Some(Encoding::Gzip), Some(Encoding::Brotli)],
        (Some(_), Some(_)) => [Some(Encoding::Brotli), Some(Encoding::Gzip)],
        (Some(_), None) => [Some(Encoding::Brotli), None],
        (None, Some(_)) => [Some(Encoding::Gzip), None],
        (None, None) => [None, None],
    }
}

struct Opened {
    file: OpenFile,
    content_type: &'static str,
    encoding: Option<Encoding>,
}

/// The validators of the representation being sent.
struct Validators {
    /// `"<mtime seconds>-<mtime nanoseconds>-<length>[-<coding>]"` in hex: it changes whenever
    /// the file is replaced (atomic writes give a new modification time) or the coding differs.
    etag: HeaderValue,
    last_modified: HeaderValue,
    modified: SystemTime,
}

impl Validators {
    fn of(opened: &Opened) -> Self {
        let modified = opened.file.version.modified_time();
        let since_epoch = modified.duration_since(UNIX_EPOCH).unwrap_or_default();
        let coding = opened.encoding.map_or("", |encoding| match encoding {
            Encoding::Brotli => "-br",
            Encoding::Gzip => "-gz",
        });
        let etag = format!(
            "\"{:x}-{:x}-{:x}{coding}\"",
            since_epoch.as_secs(),
            since_epoch.subsec_nanos(),
            opened.file.version.len
        );
        Self {
            etag: header_value(&etag),
            last_modified: header_value(&httpdate::fmt_http_date(modified)),
            modified,
        }
    }

    fn typed_etag(&self) -> Option<headers::ETag> {
        self.etag.to_str().ok()?.parse().ok()
    }

    /// RFC 9110 §13.2.2: 412 or 304 when a precondition says so.
    fn precondition_status(&self, request: &HeaderMap) -> Option<StatusCode> {
        let conditional = [
            header::IF_MATCH,
            header::IF_UNMODIFIED_SINCE,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
        ];
        if !conditional.iter().any(|name| request.contains_key(name)) {
            return None;
        }
        let etag = self.typed_etag()?;
        if let Some(if_match) = request.typed_get::<IfMatch>() {
            if !if_match.precondition_passes(&etag) {
                return Some(StatusCode::PRECONDITION_FAILED);
            }
        } else if let Some(since) = request.typed_get::<IfUnmodifiedSince>()
            && !since.precondition_passes(self.modified)
        {
            return Some(StatusCode::PRECONDITION_FAILED);
        }
        if let Some(if_none_match) = request.typed_get::<IfNoneMatch>() {
            if !if_none_match.precondition_passes(&etag) {
                return Some(StatusCode::NOT_MODIFIED);
            }
        } else if let Some(since) = request.typed_get::<IfModifiedSince>()
            && !since.is_modified(self.modified)
        {
            return Some(StatusCode::NOT_MODIFIED);
        }
        None
    }

    /// RFC 9110 §13.1.5: whether an `If-Range` value names this representation, by a strong
    /// entity tag or by exactly its modification date.
    fn if_range_matches(&self, validator: &HeaderValue) -> bool {
        let validator = validator.as_bytes();
        if validator.starts_with(b"\"") {
            return validator == self.etag.as_bytes();
        }
        let Ok(date) = std::str::from_utf8(validator).map(httpdate::parse_http_date) else {
            return false;
        };
        let Ok(date) = date else { return false };
        let whole_seconds = |time: SystemTime| {
            time.duration_since(UNIX_EPOCH).map(|since| since.as_secs()).unwrap_or_default()
        };
        whole_seconds(date) == whole_seconds(self.modified)
    }
}

enum RangeRequest {
    Whole,
    /// Bytes `start..=end`.
    Part {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

/// What the `Range` and `If-Range` headers ask of a representation of `len` bytes. Ranges that
/// do not parse, several ranges and stale `If-Range` validators get the whole representation.
fn requested_range(request: &HeaderMap, validators: &Validators, len: u64) -> RangeRequest {
    use http_range_header::{EndPosition, RangeUnsatisfiableError, StartPosition};

    let Some(range) = request.get(header::RANGE).and_then(|value| value.to_str().ok()) else {
        return RangeRequest::Whole;
    };
    if let Some(validator) = request.get(header::IF_RANGE)
        && !validators.if_range_matches(validator)
    {
        return RangeRequest::Whole;
    }
    let parsed = match http_range_header::parse_range_header(range) {
        Ok(parsed) => parsed,
        Err(RangeUnsatisfiableError::ZeroSuffix) => return RangeRequest::Unsatisfiable,
        Err(_) => return RangeRequest::Whole,
    };
    let [only] = parsed.ranges.as_slice() else { return RangeRequest::Whole };
    let last = match len.checked_sub(1) {
        Some(last) => last,
        None => return RangeRequest::Unsatisfiable,
    };
    let (start, end) = match (only.start, only.end) {
        // A suffix longer than the representation is all of it (RFC 9110 §14.1.2).
        (StartPosition::FromLast(suffix), _) => (len.saturating_sub(suffix), last),
        (StartPosition::Index(start), EndPosition::LastByte) => (start, last),
        (StartPosition::Index(start), EndPosition::Index(end)) if start <= end => {
            (start, end.min(last))
        }
        (StartPosition::Index(_), EndPosition::Index(_)) => return RangeRequest::Whole,
    };
    if start > last { RangeRequest::Unsatisfiable } else { RangeRequest::Part { start, end } }
}

/// `count` bytes of a file from `position`, as a response body.
///
/// Reads of data in the page cache happen right in `poll_frame` (`preadv2` with `RWF_NOWAIT`);
/// a read that would wait for the disk goes to the blocking pool.
#[derive(Debug)]
struct FileBody {
    file: Arc<File>,
    position: u64,
    remaining: u64,
    chunk_size: usize,
    /// Whether the file system honours `RWF_NOWAIT`.
    cached_reads: bool,
    /// A read that went to the blocking pool.
    pending: Option<tokio::task::JoinHandle<io::Result<Vec<u8>>>>,
}

impl FileBody {
    fn new(file: Arc<File>, position: u64, remaining: u64, chunk_size: usize) -> Self {
        Self { file, position, remaining, chunk_size, cached_reads: true, pending: None }
    }

    /// The whole rest of the file, in one buffer.
    async fn read_whole(mut self) -> io::Result<Bytes> {
        let Some(first) = self.next_chunk().await? else { return Ok(Bytes::new()) };
        let mut whole = match self.next_chunk().await? {
            // Usually one read is all: no copy then.
            None => return Ok(first),
            Some(second) => [first, second].concat(),
        };
        while let Some(chunk) = self.next_chunk().await? {
            whole.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(whole))
    }

    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await.transpose()
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            if let Some(pending) = self.pending.as_mut() {
                let read = std::task::ready!(Pin::new(pending).poll(cx));
                self.pending = None;
                let bytes = match read.map_err(io::Error::other).and_then(|read| read) {
                    Ok(bytes) => bytes,
                    Err(error) => return Poll::Ready(Some(Err(error))),
                };
                return Poll::Ready(Some(self.advance(bytes)));
            }
            if self.remaining == 0 {
                return Poll::Ready(None);
            }
            let wanted = usize::try_from(self.remaining).unwrap_or(usize::MAX).min(self.chunk_size);
            if self.cached_reads {
                let mut bytes = vec![0; wanted];
                let read = rustix::io::preadv2(
                    &*self.file,
                    &mut [io::IoSliceMut::new(&mut bytes)],
                    self.position,
                    rustix::io::ReadWriteFlags::NOWAIT,
                );
                match read {
                    Ok(read) => {
                        bytes.truncate(read);
                        return Poll::Ready(Some(self.advance(bytes)));
                    }
                    Err(rustix::io::Errno::AGAIN) => {}
                    Err(
                        rustix::io::Errno::OPNOTSUPP
                        | rustix::io::Errno::NOSYS
                        | rustix::io::Errno::INVAL,
                    ) => self.cached_reads = false,
                    Err(errno) => return Poll::Ready(Some(Err(errno.into()))),
                }
            }
            let (file, position) = (Arc::clone(&self.file), self.position);
            self.pending = Some(tokio::task::spawn_blocking(move || {
                let mut bytes = vec![0; wanted];
                let read = std::os::unix::fs::FileExt::read_at(&*file, &mut bytes, position)?;
                bytes.truncate(read);
                Ok(bytes)
            }));
        }
    }

    fn advance(&mut self, bytes: Vec<u8>) -> io::Result<Bytes> {
        if bytes.is_empty() {
            // The length promised in Content-Length can no longer be sent.
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while sent"));
        }
        self.position += bytes.len() as u64;
        self.remaining = self.remaining.saturating_sub(bytes.len() as u64);
        Ok(Bytes::from(bytes))
    }
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.get_mut().poll_chunk(cx).map(|chunk| chunk.map(|bytes| bytes.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0 && self.pending.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(value: &'static str) -> [Option<Encoding>; 2] {
        accepted_encodings(&HeaderValue::from_static(value))
    }

    #[test]
    fn accept_encoding_is_read_with_weights() {
        use Encoding::{Brotli, Gzip};
        assert_eq!(accepted("gzip, deflate, br"), [Some(Brotli), Some(Gzip)]);
        assert_eq!(accepted("gzip;q=1.0, br;q=0.5"), [Some(Gzip), Some(Brotli)]);
        assert_eq!(accepted("br;q=0, gzip"), [Some(Gzip), None]);
        assert_eq!(accepted("*"), [Some(Brotli), Some(Gzip)]);
        assert_eq!(accepted("*;q=0.1, gzip;q=0"), [Some(Brotli), None]);
        assert_eq!(accepted("identity"), [None, None]);
        assert_eq!(accepted("X-GZIP"), [Some(Gzip), None]);
    }

    fn range(value: &str, if_range: Option<&str>, len: u64) -> (u64, u64, &'static str) {
        let validators = Validators {
            etag: HeaderValue::from_static("\"1-2-3\""),
            last_modified: HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
            modified: UNIX_EPOCH + std::time::Duration::from_secs(784_111_777),
        };
        let mut request = HeaderMap::new();
        request.insert(header::RANGE, header_value(value));
        if let Some(validator) = if_range {
            request.insert(header::IF_RANGE, header_value(validator));
        }
        match requested_range(&request, &validators, len) {
            RangeRequest::Whole => (0, 0, "whole"),
            RangeRequest::Part { start, end } => (start, end, "part"),
            RangeRequest::Unsatisfiable => (0, 0, "unsatisfiable"),
        }
    }

    #[test]
    fn ranges_resolve_as_rfc_9110_says() {
        assert_eq!(range("bytes=0-4", None, 11), (0, 4, "part"));
        assert_eq!(range("bytes=6-", None, 11), (6, 10, "part"));
        assert_eq!(range("bytes=-5", None, 11), (6, 10, "part"));
        assert_eq!(range("bytes=-50", None, 11), (0, 10, "part"), "a longer suffix is all");
        assert_eq!(range("bytes=6-100", None, 11), (6, 10, "part"));
        assert_eq!(range("bytes=11-", None, 11).2, "unsatisfiable");
        assert_eq!(range("bytes=-0", None, 11).2, "unsatisfiable");
        assert_eq!(range("bytes=0-0", None, 0).2, "unsatisfiable");
        assert_eq!(range("bytes=5-2", None, 11).2, "whole", "an invalid range is ignored");
        assert_eq!(range("items=0-4", None, 11).2, "whole");
        assert_eq!(range("bytes=0-1,4-5", None, 11).2, "whole", "no multipart answers");
        assert_eq!(range("bytes=0-4", Some("\"1-2-3\""), 11).2, "part");
        assert_eq!(range("bytes=0-4", Some("W/\"1-2-3\""), 11).2, "whole", "weak never matches");
        assert_eq!(range("bytes=0-4", Some("Sun, 06 Nov 1994 08:49:37 GMT"), 11).2, "part");
        assert_eq!(range("bytes=0-4", Some("Sun, 06 Nov 1994 08:49:38 GMT"), 11).2, "whole");
        assert_eq!(range("bytes=0-4", Some("yesterday"), 11).2, "whole");
    }
}
