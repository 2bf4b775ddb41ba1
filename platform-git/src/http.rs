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
//! size limits; after, one [`PushEvent`](crate::events::PushEvent) per push goes to the queue (see [`crate::events`]), and
//! the repository's size and last push time are recorded.

use axum::Router;
use axum::body::Body;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Path as UrlPath, Query, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use futures_util::{StreamExt as _, TryStreamExt as _};
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::io::{ReaderStream, StreamReader};

use crate::backend::{Identity, SignIn};
use crate::permissions::Access;
use crate::pktline;
use crate::transport::{self, Authorized, Denial, GitService};

/// The smart HTTP routes (see the module docs).
pub fn router(git: GitService) -> Router {
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
    Denied(Denial),
    BadRequest(String),
    UnsupportedMediaType(&'static str),
    TooLarge(String),
    Limited(std::time::Duration),
}

impl From<Denial> for Refusal {
    fn from(denial: Denial) -> Self {
        Self::Denied(denial)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::Denied(Denial::NeedsCredentials) => {
                let mut response =
                    (StatusCode::UNAUTHORIZED, "authentication required\n").into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"platform\", charset=\"UTF-8\""),
                );
                return response;
            }
            Self::Denied(Denial::Forbidden(message)) => (StatusCode::FORBIDDEN, message.to_owned()),
            Self::Denied(Denial::Invalid(message)) => (StatusCode::BAD_REQUEST, message.to_owned()),
            Self::Denied(Denial::NotFound) => {
                (StatusCode::NOT_FOUND, "repository not found".to_owned())
            }
            Self::Denied(Denial::Internal(cause)) => {
                tracing::error!(error = %cause, "git request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error".to_owned())
            }
            Self::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
            Self::UnsupportedMediaType(expected) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("expected Content-Type {expected}"))
            }
            Self::TooLarge(message) => (StatusCode::PAYLOAD_TOO_LARGE, message),
            Self::Limited(retry_after) => {
                let seconds = retry_after.as_secs().max(1);
                let mut response = (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("too many failed sign-in attempts: try again in {seconds} s\n"),
                )
                    .into_response();
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                return response;
            }
        };
        (status, format!("{message}\n")).into_response()
    }
}

fn internal(error: impl std::fmt::Display) -> Refusal {
    Refusal::Denied(transport::internal(error))
}

/// `user:secret` from `Authorization: Basic`, `None` without the header.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, Refusal> {
    let unauthorized = || Refusal::Denied(Denial::NeedsCredentials);
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let encoded = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
        .ok_or_else(unauthorized)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| unauthorized())?;
    let decoded = String::from_utf8(decoded).map_err(|_| unauthorized())?;
    let (login, secret) = decoded.split_once(':').ok_or_else(unauthorized)?;
    Ok(Some((login.to_owned(), secret.to_owned())))
}

/// The address of the client that sent a request: its peer (from the connection information
/// the server records, as the service shell and `into_make_service_with_connect_info` do), or
/// the address a trusted proxy forwarded. Without connection information every client counts as
/// one address for the attempt limits.
fn client_of(git: &GitService, extensions: &Extensions, headers: &HeaderMap) -> IpAddr {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |ConnectInfo(peer)| peer.ip());
    git.authenticator().client_address(peer, headers)
}

/// Checks the request's credentials (under the attempt limits), then what they allow on
/// `owner/repo`.
async fn authorize(
    git: &GitService,
    owner: &str,
    repo: &str,
    (extensions, headers): (&Extensions, &HeaderMap),
    needed: Access,
) -> Result<Authorized, Refusal> {
    let identity = match basic_credentials(headers)? {
        None => Identity::Anonymous,
        Some((login, secret)) => {
            let client = client_of(git, extensions, headers);
            match git.authenticator().basic(&login, &secret, client).await.map_err(internal)? {
                SignIn::Valid(identity) => identity,
                // Wrong credentials: ask again, whether or not the repository is public.
                SignIn::Invalid => return Err(Refusal::Denied(Denial::NeedsCredentials)),
                SignIn::Limited(retry_after) => return Err(Refusal::Limited(retry_after)),
            }
        }
    };
    Ok(git.authorize(owner, repo, &identity, needed).await?)
}

/// The `Git-Protocol` header (checked again before it reaches git).
fn git_protocol(headers: &HeaderMap) -> Option<&str> {
    headers.get("git-protocol")?.to_str().ok()
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

/// The query of `info/refs`.
#[derive(Debug, Deserialize)]
struct InfoRefsQuery {
    service: Option<String>,
}

async fn info_refs(
    State(git): State<GitService>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
    Query(query): Query<InfoRefsQuery>,
    extensions: Extensions,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let (service, needed) = match query.service.as_deref() {
        Some("git-upload-pack") => ("upload-pack", Access::Read),
        Some("git-receive-pack") => ("receive-pack", Access::Write),
        Some(_) => return Err(Refusal::Denied(Denial::Forbidden("unsupported service"))),
        None => {
            return Err(Refusal::BadRequest(
                "dumb HTTP is not supported: use git 1.6.6 or later".to_owned(),
            ));
        }
    };
    let authorized = authorize(&git, &owner, &repo, (&extensions, &headers), needed).await?;
    let protocol = git_protocol(&headers);
    let v2 = service == "upload-pack" && protocol.is_some_and(|p| p.contains("version=2"));
    let mut command = if service == "upload-pack" {
        git.upload_pack(&authorized.path, protocol)
    } else {
        git.receive_pack_advertisement(&authorized.path, protocol)
    };
    command.args(["--stateless-rpc", "--advertise-refs", "."]);
    let mut child = command.spawn().map_err(internal)?;
    drop(child.stdin.take());
    let stdout = child.stdout.take().ok_or_else(|| internal("git has no stdout"))?;
    let stderr = transport::collect_stderr(&mut child);
    tokio::spawn(transport::supervise(child, stderr, git.options().timeout, "advertise refs"));

    // Protocol v2 starts with its capabilities; earlier versions with the service line.
    let mut prefix = Vec::new();
    if !v2 {
        pktline::write(&mut prefix, format!("# service=git-{service}\n").as_bytes());
        prefix.extend_from_slice(b"0000");
    }
    let body = futures_util::stream::once(async move { Ok(bytes::Bytes::from(prefix)) })
        .chain(ReaderStream::with_capacity(stdout, STREAM_CHUNK_BYTES));
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
    State(git): State<GitService>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
    extensions: Extensions,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let authorized = authorize(&git, &owner, &repo, (&extensions, &headers), Access::Read).await?;
    check_content_type(&headers, "application/x-git-upload-pack-request")?;
    let limit = git.options().max_negotiation_bytes;
    let request = axum::body::to_bytes(body, limit).await.map_err(|error| {
        Refusal::BadRequest(format!("cannot read the request (at most {limit} bytes): {error}"))
    })?;
    pktline::validate(&request).map_err(|error| Refusal::BadRequest(error.to_string()))?;

    let mut command = git.upload_pack(&authorized.path, git_protocol(&headers));
    command.args(["--stateless-rpc", "."]);
    let mut child = command.spawn().map_err(internal)?;
    let mut stdin = child.stdin.take().ok_or_else(|| internal("git has no stdin"))?;
    let stdout = child.stdout.take().ok_or_else(|| internal("git has no stdout"))?;
    let stderr = transport::collect_stderr(&mut child);
    let timeout = git.options().timeout;
    tokio::spawn(async move {
        // A client that stops reading makes git stop too; nothing to report here.
        let _ = stdin.write_all(&request).await;
        drop(stdin);
        transport::supervise(child, stderr, timeout, "upload-pack").await;
    });
    let mut response =
        Body::from_stream(ReaderStream::with_capacity(stdout, STREAM_CHUNK_BYTES)).into_response();
    no_cache(&mut response, "application/x-git-upload-pack-result");
    Ok(response)
}

/// How much of git's output is read at a time: packs are large, so fewer, bigger chunks cost
/// less per byte than the 4 KiB default.
const STREAM_CHUNK_BYTES: usize = 64 * 1024;

async fn receive_pack(
    State(git): State<GitService>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
    extensions: Extensions,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let authorized = authorize(&git, &owner, &repo, (&extensions, &headers), Access::Write).await?;
    check_content_type(&headers, "application/x-git-receive-pack-request")?;
    let max_push_bytes = git.options().max_push_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A compressed body's length says little about the pack's; git enforces the limit then.
    if let Some(length) = declared
        && length > max_push_bytes
        && headers.get(header::CONTENT_ENCODING).is_none()
    {
        return Err(Refusal::TooLarge(format!(
            "this push is {length} bytes; the limit is {max_push_bytes} bytes"
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
            Ok(None) if head.len() > pktline::MAX_COMMANDS_BYTES => {
                return Err(Refusal::TooLarge("too many ref updates in one push".to_owned()));
            }
            Ok(None) => {}
            Err(error) => return Err(Refusal::BadRequest(error.to_string())),
        }
    };

    let redactor = git.redactor(&authorized);
    let (mut command, push) = git.receive_pack(authorized, git_protocol(&headers));
    push.decide(&updates).await?;
    command.args(["--stateless-rpc", "."]);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            push.discard().await;
            return Err(internal(error));
        }
    };
    let mut stdin = child.stdin.take().ok_or_else(|| internal("git has no stdin"))?;
    let stdout = child.stdout.take().ok_or_else(|| internal("git has no stdout"))?;
    let stderr = transport::collect_stderr(&mut child);
    let timeout = git.options().timeout;
    tokio::spawn(async move {
        let fed = async {
            stdin.write_all(&head).await?;
            tokio::io::copy(&mut reader, &mut stdin).await?;
            stdin.shutdown().await
        }
        .await;
        drop(stdin);
        if let Err(error) = fed {
            // The client went away (or git refused more input). Git sees the pack end early,
            // refuses it before any ref moves and removes its quarantined objects itself, which
            // a kill would leave behind.
            tracing::info!(error = %error, "push input ended early");
            transport::supervise(child, stderr, timeout, "receive-pack").await;
            push.discard().await;
            return;
        }
        transport::supervise(child, stderr, timeout, "receive-pack").await;
        push.finish().await;
    });
    // What receive-pack says is small, and may name server paths (a ref lock, say).
    let (redacted, mut output) = tokio::io::duplex(STREAM_CHUNK_BYTES);
    tokio::spawn(async move {
        // A client that went away stops this copy; git's exit is supervised above.
        let _ = crate::redact::copy_sideband(stdout, &mut output, &redactor).await;
    });
    let mut response = Body::from_stream(ReaderStream::with_capacity(redacted, STREAM_CHUNK_BYTES))
        .into_response();
    no_cache(&mut response, "application/x-git-receive-pack-result");
    Ok(response)
}
