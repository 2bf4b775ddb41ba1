//! Git over smart HTTP, as an axum [`Router`]:
//!
//! | method | path | what |
//! |---|---|---|
//! | `GET` | `/{owner}/{repo}/info/refs?service=git-upload-pack` | ref advertisement for fetches (v0, v1, and v2 capabilities) |
//! | `GET` | `/{owner}/{repo}/info/refs?service=git-receive-pack` | ref advertisement for pushes |
//! | `POST` | `/{owner}/{repo}/git-upload-pack` | a fetch negotiation and its pack |
//! | `POST` | `/{owner}/{repo}/git-receive-pack` | a push |
//!
//! `{repo}` may end in `.git`. The real `git upload-pack` and `git receive-pack` serve each
//! request in stateless-RPC mode; the protocol version comes from the `Git-Protocol` header.
//! Request bodies may be gzip-compressed. Pushes stream through (a pack never sits in memory);
//! fetch negotiations, which are small, are read whole and checked first, so a malformed one is
//! answered 400. Dumb HTTP is not served.
//!
//! Callers authenticate with HTTP Basic: a user name (or address) with the password or a
//! personal access token. Anonymous callers may fetch public repositories; anything that would
//! work with credentials answers 401 with `WWW-Authenticate: Basic`, so `git` asks for them.
//! A private repository is 404 to a signed-in caller who may not read it. Pushing needs write
//! access (and, with a token, `repo:write`).
//!
//! Before refs move, the push policy (see [`crate::hooks`]) applies branch protection and the
//! size limits; after, one [`PushEvent`] per push goes to the queue (see [`crate::events`]), and
//! the repository's size and last push time are recorded.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use futures_util::{StreamExt as _, TryStreamExt as _};
use platform_core::accounts::{Accounts, Scope, UserRecord};
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, Command};
use tokio_util::io::{ReaderStream, StreamReader};

use crate::events::{PushEvent, PushEvents, RefChange};
use crate::hooks;
use crate::permissions::{self, Access};
use crate::pktline::{self, RefUpdate};
use crate::protection::{self, PushAccess};
use crate::records::{self, RepoRecord, Viewer};
use crate::store::RepoStore;

/// Limits of the git transport.
#[derive(Clone, Debug)]
pub struct GitHttpOptions {
    /// The largest push accepted, in bytes (the pack as sent).
    pub max_push_bytes: u64,
    /// The largest file (blob) a push may add, in bytes; 0 for no limit.
    pub max_blob_bytes: u64,
    /// The largest fetch negotiation accepted, in bytes (decompressed).
    pub max_negotiation_bytes: usize,
    /// How long one git process may run before it is stopped.
    pub timeout: Duration,
}

impl Default for GitHttpOptions {
    /// 2 GiB pushes, 100 MiB files, 64 MiB negotiations, one hour per request.
    fn default() -> Self {
        Self {
            max_push_bytes: 2 << 30,
            max_blob_bytes: 100 << 20,
            max_negotiation_bytes: 64 << 20,
            timeout: Duration::from_secs(3600),
        }
    }
}

/// What the git routes need.
#[derive(Clone, Debug)]
pub struct GitHttp {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    accounts: Accounts,
    store: RepoStore,
    events: PushEvents,
    options: GitHttpOptions,
    hooks_dir: PathBuf,
    scratch_dir: PathBuf,
}

impl GitHttp {
    /// Prepares the git routes; installs the push hooks into `state_dir/hooks` and keeps
    /// per-push scratch files in `state_dir/pushes`.
    ///
    /// # Errors
    ///
    /// Fails when `state_dir` cannot be written.
    pub fn new(
        accounts: Accounts,
        store: RepoStore,
        events: PushEvents,
        options: GitHttpOptions,
        state_dir: &Path,
    ) -> std::io::Result<Self> {
        let hooks_dir = hooks::install(&state_dir.join("hooks"))?;
        let scratch_dir = state_dir.join("pushes");
        std::fs::create_dir_all(&scratch_dir)?;
        Ok(Self {
            inner: Arc::new(Inner { accounts, store, events, options, hooks_dir, scratch_dir }),
        })
    }
}

/// The smart HTTP routes (see the module docs).
pub fn router(git: GitHttp) -> Router {
    Router::new()
        .route("/{owner}/{repo}/info/refs", get(info_refs))
        .route("/{owner}/{repo}/git-upload-pack", post(upload_pack))
        .route("/{owner}/{repo}/git-receive-pack", post(receive_pack))
        .layer(tower_http::decompression::RequestDecompressionLayer::new())
        .with_state(git)
}

/// A refusal, as git clients expect it: a status and a line of text.
#[derive(Debug)]
enum Refusal {
    /// Credentials would help.
    Unauthorized,
    Forbidden(&'static str),
    NotFound,
    BadRequest(String),
    UnsupportedMediaType(&'static str),
    TooLarge(String),
    Internal(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::Unauthorized => {
                let mut response =
                    (StatusCode::UNAUTHORIZED, "authentication required\n").into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"platform\", charset=\"UTF-8\""),
                );
                return response;
            }
            Self::Forbidden(message) => (StatusCode::FORBIDDEN, message.to_owned()),
            Self::NotFound => (StatusCode::NOT_FOUND, "repository not found".to_owned()),
            Self::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
            Self::UnsupportedMediaType(expected) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("expected Content-Type {expected}"))
            }
            Self::TooLarge(message) => (StatusCode::PAYLOAD_TOO_LARGE, message),
            Self::Internal(cause) => {
                tracing::error!(error = %cause, "git request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error".to_owned())
            }
        };
        (status, format!("{message}\n")).into_response()
    }
}

fn internal(error: impl std::fmt::Display) -> Refusal {
    Refusal::Internal(error.to_string())
}

/// Who may do what to which repository, once checked.
struct Authorized {
    repo: RepoRecord,
    path: PathBuf,
    user: Option<UserRecord>,
    access: Access,
}

/// `user:secret` from `Authorization: Basic`, `None` without the header.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, Refusal> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let encoded = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
        .ok_or(Refusal::Unauthorized)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| Refusal::Unauthorized)?;
    let decoded = String::from_utf8(decoded).map_err(|_| Refusal::Unauthorized)?;
    let (login, secret) = decoded.split_once(':').ok_or(Refusal::Unauthorized)?;
    Ok(Some((login.to_owned(), secret.to_owned())))
}

impl GitHttp {
    async fn authorize(
        &self,
        owner: &str,
        repo: &str,
        headers: &HeaderMap,
        needed: Access,
    ) -> Result<Authorized, Refusal> {
        let inner = &self.inner;
        let name = repo.strip_suffix(".git").unwrap_or(repo);
        let (user, scopes) = match basic_credentials(headers)? {
            None => (None, None),
            Some((login, secret)) => {
                match inner.accounts.authenticate_basic(&login, &secret).await.map_err(internal)? {
                    Some((user, scopes)) => (Some(user), scopes),
                    None => return Err(Refusal::Unauthorized),
                }
            }
        };
        let viewer = user.as_ref().map(|u| Viewer { user_id: u.id, is_admin: u.is_admin });
        let mut conn = inner.accounts.database().get().await.map_err(internal)?;
        let record = records::find(&mut conn, owner, name).await.map_err(internal)?;
        let access = match &record {
            Some(record) => {
                permissions::access_for(&mut conn, record, viewer).await.map_err(internal)?
            }
            None => None,
        };
        drop(conn);
        let (Some(record), Some(access)) = (record, access) else {
            // Whether it exists is not said; with credentials it might be readable.
            return Err(if user.is_none() { Refusal::Unauthorized } else { Refusal::NotFound });
        };
        if access < needed {
            return Err(if user.is_none() {
                Refusal::Unauthorized
            } else {
                Refusal::Forbidden("you may read this repository but not push to it")
            });
        }
        let scope = if needed >= Access::Write { Scope::RepoWrite } else { Scope::RepoRead };
        if let Some(scopes) = &scopes
            && !scopes.iter().any(|s| s.grants(scope))
        {
            return Err(Refusal::Forbidden("this token lacks the scope for that"));
        }
        let path = inner.store.path(&record.owner, &record.name).map_err(internal)?;
        if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
            tracing::error!(repository = record.id, path = %path.display(), "repository missing on disk");
            return Err(Refusal::NotFound);
        }
        Ok(Authorized { repo: record, path, user, access })
    }
}

/// The `Git-Protocol` header, if it is one git could have sent.
fn git_protocol(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("git-protocol")?.to_str().ok()?;
    let plausible = !value.is_empty()
        && value.len() <= 256
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"=:._-".contains(&b));
    plausible.then_some(value)
}

fn no_cache(response: &mut Response, content_type: &'static str) {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::EXPIRES, HeaderValue::from_static("Fri, 01 Jan 1980 00:00:00 GMT"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, max-age=0, must-revalidate"),
    );
}

fn git_command(path: &Path, protocol: Option<&str>) -> Command {
    let mut command = Command::new("git");
    command
        .env_remove("GIT_DIR")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .current_dir(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(protocol) = protocol {
        command.env("GIT_PROTOCOL", protocol);
    }
    command
}

/// Collects what a git process says on stderr (bounded), for the log.
fn collect_stderr(child: &mut Child) -> tokio::task::JoinHandle<String> {
    let stderr = child.stderr.take();
    tokio::spawn(async move {
        let mut text = Vec::new();
        if let Some(stderr) = stderr {
            let _ = stderr.take(64 * 1024).read_to_end(&mut text).await;
        }
        String::from_utf8_lossy(&text).trim().to_owned()
    })
}

/// Waits for `child` (up to `timeout`), logging how it ended.
async fn supervise(
    mut child: Child,
    stderr: tokio::task::JoinHandle<String>,
    timeout: Duration,
    what: &'static str,
) -> bool {
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => Some(status),
        Ok(Err(error)) => {
            tracing::error!(%error, what, "cannot wait for git");
            None
        }
        Err(_) => {
            tracing::warn!(what, timeout_s = timeout.as_secs(), "git ran too long; stopped");
            let _ = child.kill().await;
            None
        }
    };
    let stderr = stderr.await.unwrap_or_default();
    match status {
        Some(status) if status.success() => true,
        Some(status) => {
            tracing::info!(what, %status, stderr, "git ended with an error");
            false
        }
        None => false,
    }
}

/// The query of `info/refs`.
#[derive(Debug, Deserialize)]
struct InfoRefsQuery {
    service: Option<String>,
}

async fn info_refs(
    State(git): State<GitHttp>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
    Query(query): Query<InfoRefsQuery>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let (service, needed) = match query.service.as_deref() {
        Some("git-upload-pack") => ("upload-pack", Access::Read),
        Some("git-receive-pack") => ("receive-pack", Access::Write),
        Some(_) => return Err(Refusal::Forbidden("unsupported service")),
        None => {
            return Err(Refusal::BadRequest(
                "dumb HTTP is not supported: use git 1.6.6 or later".to_owned(),
            ));
        }
    };
    let authorized = git.authorize(&owner, &repo, &headers, needed).await?;
    let protocol = git_protocol(&headers);
    let v2 = service == "upload-pack" && protocol.is_some_and(|p| p.contains("version=2"));
    let mut command = git_command(&authorized.path, protocol);
    command.args([service, "--stateless-rpc", "--advertise-refs", "."]);
    let mut child = command.spawn().map_err(internal)?;
    drop(child.stdin.take());
    let stdout = child.stdout.take().ok_or_else(|| internal("git has no stdout"))?;
    let stderr = collect_stderr(&mut child);
    tokio::spawn(supervise(child, stderr, git.inner.options.timeout, "advertise refs"));

    // Protocol v2 starts with its capabilities; earlier versions with the service line.
    let mut prefix = Vec::new();
    if !v2 {
        pktline::write(&mut prefix, format!("# service=git-{service}\n").as_bytes());
        prefix.extend_from_slice(b"0000");
    }
    let body = futures_util::stream::once(async move { Ok(bytes::Bytes::from(prefix)) })
        .chain(ReaderStream::new(stdout));
    let mut response = Body::from_stream(body).into_response();
    no_cache(
        &mut response,
        if service == "upload-pack" {
            "application/x-git-upload-pack-advertisement"
        } else {
            "application/x-git-receive-pack-advertisement"
        },
    );
    Ok(response)
}

fn check_content_type(headers: &HeaderMap, expected: &'static str) -> Result<(), Refusal> {
    let sent = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if sent.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case(expected)) {
        Ok(())
    } else {
        Err(Refusal::UnsupportedMediaType(expected))
    }
}

async fn upload_pack(
    State(git): State<GitHttp>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let authorized = git.authorize(&owner, &repo, &headers, Access::Read).await?;
    check_content_type(&headers, "application/x-git-upload-pack-request")?;
    let limit = git.inner.options.max_negotiation_bytes;
    let request = axum::body::to_bytes(body, limit).await.map_err(|error| {
        Refusal::BadRequest(format!("cannot read the request (at most {limit} bytes): {error}"))
    })?;
    pktline::validate(&request).map_err(|error| Refusal::BadRequest(error.to_string()))?;

    let mut command = git_command(&authorized.path, git_protocol(&headers));
    command.args([
        "-c",
        "uploadpack.allowFilter=true",
        "-c",
        "uploadpack.allowReachableSHA1InWant=true",
        "upload-pack",
        "--stateless-rpc",
        ".",
    ]);
    let mut child = command.spawn().map_err(internal)?;
    let mut stdin = child.stdin.take().ok_or_else(|| internal("git has no stdin"))?;
    let stdout = child.stdout.take().ok_or_else(|| internal("git has no stdout"))?;
    let stderr = collect_stderr(&mut child);
    let timeout = git.inner.options.timeout;
    tokio::spawn(async move {
        // A client that stops reading makes git stop too; nothing to report here.
        let _ = stdin.write_all(&request).await;
        drop(stdin);
        supervise(child, stderr, timeout, "upload-pack").await;
    });
    let mut response = Body::from_stream(ReaderStream::new(stdout)).into_response();
    no_cache(&mut response, "application/x-git-upload-pack-result");
    Ok(response)
}

/// The largest command list read before the pack.
const MAX_COMMANDS_BYTES: usize = 4 << 20;

async fn receive_pack(
    State(git): State<GitHttp>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let authorized = git.authorize(&owner, &repo, &headers, Access::Write).await?;
    check_content_type(&headers, "application/x-git-receive-pack-request")?;
    let inner = &git.inner;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A compressed body's length says little about the pack's; git enforces the limit then.
    if let Some(length) = declared
        && length > inner.options.max_push_bytes
        && headers.get(header::CONTENT_ENCODING).is_none()
    {
        return Err(Refusal::TooLarge(format!(
            "this push is {length} bytes; the limit is {} bytes",
            inner.options.max_push_bytes
        )));
    }

    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let mut reader = StreamReader::new(stream);
    let mut head = Vec::with_capacity(8 * 1024);
    let (updates, _) = loop {
        let mut chunk = [0_u8; 8 * 1024];
        let read = reader
            .read(&mut chunk)
            .await
            .map_err(|error| Refusal::BadRequest(format!("cannot read the request: {error}")))?;
        head.extend_from_slice(&chunk[..read]);
        match pktline::parse_commands(&head) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) if read == 0 => {
                return Err(Refusal::BadRequest(
                    "the request ended before its commands".to_owned(),
                ));
            }
            Ok(None) if head.len() > MAX_COMMANDS_BYTES => {
                return Err(Refusal::TooLarge("too many ref updates in one push".to_owned()));
            }
            Ok(None) => {}
            Err(error) => return Err(Refusal::BadRequest(error.to_string())),
        }
    };

    let (deny, no_force) = git.policy(&authorized, &updates).await?;
    let report = inner.scratch_dir.join(format!("{}.refs", uuid::Uuid::new_v4().simple()));
    let mut command = git_command(&authorized.path, git_protocol(&headers));
    command
        .arg("-c")
        .arg(format!("core.hooksPath={}", inner.hooks_dir.display()))
        .arg("-c")
        .arg(format!("receive.maxInputSize={}", inner.options.max_push_bytes))
        .args([
            "-c",
            "receive.fsckObjects=true",
            "-c",
            "receive.denyNonFastForwards=false",
            "-c",
            "receive.denyDeletes=false",
            "-c",
            "receive.denyCurrentBranch=ignore",
            "receive-pack",
            "--stateless-rpc",
            ".",
        ])
        .env(hooks::DENY_ENV, deny)
        .env(hooks::NO_FORCE_ENV, no_force)
        .env(hooks::MAX_BLOB_ENV, inner.options.max_blob_bytes.to_string())
        .env(hooks::REPORT_ENV, &report);
    let mut child = command.spawn().map_err(internal)?;
    let mut stdin = child.stdin.take().ok_or_else(|| internal("git has no stdin"))?;
    let stdout = child.stdout.take().ok_or_else(|| internal("git has no stdout"))?;
    let stderr = collect_stderr(&mut child);

    let push = Push { git: git.clone(), authorized, report };
    tokio::spawn(async move {
        let fed = async {
            stdin.write_all(&head).await?;
            tokio::io::copy(&mut reader, &mut stdin).await?;
            stdin.shutdown().await
        }
        .await;
        drop(stdin);
        let timeout = push.git.inner.options.timeout;
        if let Err(error) = fed {
            // The client went away (or git refused more input). Git sees the pack end early,
            // refuses it before any ref moves and removes its quarantined objects itself, which
            // a kill would leave behind.
            tracing::info!(error = %error, "push input ended early");
            supervise(child, stderr, timeout, "receive-pack").await;
            push.discard().await;
            return;
        }
        supervise(child, stderr, timeout, "receive-pack").await;
        push.finish().await;
    });
    let mut response = Body::from_stream(ReaderStream::new(stdout)).into_response();
    no_cache(&mut response, "application/x-git-receive-pack-result");
    Ok(response)
}

impl GitHttp {
    /// Decides what branch protection says about `updates` by `authorized`: the refs refused
    /// outright (with why), and those that must fast-forward.
    async fn policy(
        &self,
        authorized: &Authorized,
        updates: &[RefUpdate],
    ) -> Result<(String, String), Refusal> {
        let mut conn = self.inner.accounts.database().get().await.map_err(internal)?;
        let rules = protection::list(&mut conn, authorized.repo.id).await.map_err(internal)?;
        drop(conn);
        let (mut deny, mut no_force) = (String::new(), String::new());
        for update in updates {
            let Some(branch) = update.branch() else { continue };
            let Some(rule) = protection::rule_for(&rules, branch) else { continue };
            let refusal =
                if rule.push_access == PushAccess::Admin && authorized.access < Access::Admin {
                    Some(format!("{branch} is protected: only administrators may push to it"))
                } else if update.is_delete() && !rule.allow_deletion {
                    Some(format!("{branch} is protected: it cannot be deleted"))
                } else {
                    None
                };
            if let Some(refusal) = refusal {
                deny.push_str(&format!("{}\t{refusal}\n", update.name));
            } else if !rule.allow_force_push {
                no_force.push_str(&format!("{}\n", update.name));
            }
        }
        Ok((deny, no_force))
    }
}

/// A push whose git process is running: what to do once it ends.
struct Push {
    git: GitHttp,
    authorized: Authorized,
    report: PathBuf,
}

impl Push {
    async fn discard(self) {
        let _ = tokio::fs::remove_file(&self.report).await;
    }

    /// Publishes the push event and records the repository's size, if any ref moved.
    async fn finish(self) {
        let text = tokio::fs::read_to_string(&self.report).await.unwrap_or_default();
        let _ = tokio::fs::remove_file(&self.report).await;
        let refs: Vec<RefChange> = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let (old, new, name) = (fields.next()?, fields.next()?, fields.next()?);
                Some(RefChange { name: name.to_owned(), old: old.to_owned(), new: new.to_owned() })
            })
            .collect();
        if refs.is_empty() {
            return;
        }
        let repo = &self.authorized.repo;
        let (pusher_id, pusher) =
            self.authorized.user.as_ref().map(|u| (u.id, u.username.clone())).unwrap_or_default();
        let event = PushEvent {
            id: uuid::Uuid::new_v4(),
            repository_id: repo.id,
            repository: format!("{}/{}", repo.owner, repo.name),
            pusher_id,
            pusher,
            refs,
            pushed_at: chrono::Utc::now(),
        };
        tracing::info!(repository = repo.id, event = %event.id, refs = event.refs.len(), "pushed");
        if let Err(error) = self.git.inner.events.record(&event).await {
            tracing::error!(error = %error, "push event not recorded");
        }
        let path = self.authorized.path.clone();
        let size = tokio::task::spawn_blocking(move || disk_usage(&path)).await.unwrap_or(0);
        match self.git.inner.accounts.database().get().await {
            Ok(mut conn) => {
                if let Err(error) = records::record_push(&mut conn, repo.id, size).await {
                    tracing::warn!(error = %error, "cannot record the repository's size");
                }
            }
            Err(error) => tracing::warn!(error = %error, "cannot record the repository's size"),
        }
    }
}

/// The bytes of every file under `path`.
fn disk_usage(path: &Path) -> i64 {
    let mut total: u64 = 0;
    let mut pending = vec![path.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => pending.push(entry.path()),
                Ok(meta) => total += meta.len(),
                Err(_) => {}
            }
        }
    }
    i64::try_from(total).unwrap_or(i64::MAX)
}
