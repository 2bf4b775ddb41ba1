//! The upload API `app` serves: avatars and attachments, answered with the URLs `static_server`
//! serves them at.
//!
//! | method | path | answer |
//! |---|---|---|
//! | `PUT` | `/api/user/avatar` | 200 `{"url"}`: the image (PNG, JPEG, GIF or WebP, raw body) as the caller's avatar; 413, 415, 422 |
//! | `DELETE` | `/api/user/avatar` | 204: back to the generated avatar |
//! | `GET` | `/api/users/{username}/avatar` | 302 to the user's avatar, uploaded or generated |
//! | `POST` | `/api/attachments` | 201 `{"url", "sha256", "size", "content_type"}`: the raw body stored once by content; 413, 415 |
//!
//! Bodies are refused with 413 as soon as they pass the limit, before anything is kept.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Key, SignedCookieJar};
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use futures_util::{StreamExt as _, TryStreamExt as _};
use platform_core::accounts::{Accounts, Scope, users};
use platform_core::api::{ApiError, ApiPath, ErrorBody};
use platform_core::config::UploadLimitsConfig;
use serde::Serialize;
use url::Url;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::avatars::{self, AvatarError, AvatarOptions};
use crate::blobs::{BlobError, BlobStore};
use crate::{AvatarRoot, FilesRoot};

/// Where uploads go and how large they may be.
#[derive(Clone, Debug)]
pub struct UploadLimits {
    /// The largest attachment, in bytes. Default 25 MiB.
    pub attachment_bytes: u64,
    /// Avatar processing, with its upload limit.
    pub avatar: AvatarOptions,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self { attachment_bytes: 25 << 20, avatar: AvatarOptions::default() }
    }
}

impl UploadLimits {
    /// The limits configured for `app` (`APP_AVATAR_MAX_BYTES`, `APP_ATTACHMENT_MAX_BYTES`),
    /// avatar processing otherwise at its defaults.
    pub fn from_config(config: &UploadLimitsConfig) -> Self {
        let mut limits = Self { attachment_bytes: config.attachment_max_bytes, ..Self::default() };
        limits.avatar.max_upload_bytes =
            usize::try_from(config.avatar_max_bytes).unwrap_or(usize::MAX);
        limits
    }

    /// The largest request body the upload routes take: the larger of the two limits.
    pub fn body_limit(&self) -> usize {
        usize::try_from(self.attachment_bytes)
            .unwrap_or(usize::MAX)
            .max(self.avatar.max_upload_bytes)
    }
}

/// The state of the upload routes.
#[derive(Clone)]
pub struct StorageApi {
    inner: Arc<Inner>,
}

struct Inner {
    accounts: Accounts,
    avatars: AvatarRoot,
    blobs: BlobStore,
    static_url: Url,
    limits: UploadLimits,
}

impl StorageApi {
    /// Returns the API storing avatars in `avatars` and attachments in the blob store of
    /// `files`, handing out URLs under `static_url` (where `static_server` serves the static root,
    /// which holds `avatars/` and `files/`).
    pub fn new(
        accounts: Accounts,
        avatars: AvatarRoot,
        files: &FilesRoot,
        static_url: &Url,
        limits: UploadLimits,
    ) -> Self {
        let mut static_url = static_url.clone();
        if !static_url.path().ends_with('/') {
            let path = format!("{}/", static_url.path());
            static_url.set_path(&path);
        }
        Self {
            inner: Arc::new(Inner {
                accounts,
                avatars,
                blobs: BlobStore::new(files.root().clone()),
                static_url,
                limits,
            }),
        }
    }

    fn url(&self, path: &str) -> Result<String, ApiError> {
        self.inner.static_url.join(path).map(String::from).map_err(ApiError::internal)
    }
}

impl FromRef<StorageApi> for Key {
    fn from_ref(api: &StorageApi) -> Self {
        Key::from_ref(&api.inner.accounts)
    }
}

/// The routes, with their OpenAPI descriptions.
pub fn api(api: StorageApi) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(upload_avatar, remove_avatar))
        .routes(routes!(avatar_of))
        .routes(routes!(upload_attachment))
        .with_state(api)
}

/// Where an avatar can be fetched.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AvatarUrl {
    /// The PNG's URL; it changes whenever the avatar does, so it may be cached for good.
    pub url: String,
}

/// A stored attachment.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Attachment {
    /// Where it is served.
    pub url: String,
    /// The SHA-256 of its bytes, hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// The type its bytes were recognised as.
    pub content_type: String,
}

/// The attachment kinds accepted, told by their bytes: the media type and the file extension
/// it is served with.
const ATTACHMENT_TYPES: &[(&str, &str)] = &[
    ("image/png", "png"),
    ("image/jpeg", "jpg"),
    ("image/gif", "gif"),
    ("image/webp", "webp"),
    ("application/pdf", "pdf"),
    ("application/zip", "zip"),
    ("application/gzip", "gz"),
    ("text/plain", "txt"),
];

/// Reads `body` into memory, refusing it with 413 past `limit` bytes.
async fn read_limited(body: Body, limit: u64) -> Result<Bytes, ApiError> {
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    axum::body::to_bytes(body, limit_usize).await.map_err(|_| ApiError::TooLarge { limit })
}

#[utoipa::path(
    put,
    path = "/api/user/avatar",
    tag = "users",
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "A PNG, JPEG, GIF or WebP image"),
    responses(
        (status = 200, description = "The avatar, re-encoded as a square PNG", body = AvatarUrl),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Missing CSRF token or the admin scope", body = ErrorBody),
        (status = 413, description = "Larger than the limit; nothing was kept", body = ErrorBody),
        (status = 415, description = "Not a PNG, JPEG, GIF or WebP image", body = ErrorBody),
        (status = 422, description = "The image cannot be decoded or is too large in pixels", body = ErrorBody)
    )
)]
async fn upload_avatar(
    State(api): State<StorageApi>,
    headers: HeaderMap,
    jar: SignedCookieJar,
    body: Body,
) -> Result<Json<AvatarUrl>, ApiError> {
    let caller = api.inner.accounts.authorize_write(&jar, &headers, Scope::Admin).await?;
    let options = api.inner.limits.avatar.clone();
    let upload = read_limited(body, options.max_upload_bytes as u64).await?;
    let root = api.inner.avatars.clone();
    // Decoding and resizing take tens of milliseconds of CPU: off the async threads.
    let stored = tokio::task::spawn_blocking(move || {
        let png = avatars::process(&upload, &options)?;
        let name = avatars::file_name(&png);
        root.write_atomic(&name, &png).map_err(AvatarFailure::Storage)?;
        Ok::<_, AvatarFailure>(name)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(AvatarFailure::into_api)?;
    let mut conn = api.inner.accounts.database().get().await.map_err(ApiError::internal)?;
    diesel::sql_query(
        "INSERT INTO user_avatars (user_id, file_name) VALUES ($1, $2) \
         ON CONFLICT (user_id) DO UPDATE SET file_name = EXCLUDED.file_name, updated_at = now()",
    )
    .bind::<BigInt, _>(caller.user.id)
    .bind::<Text, _>(&stored)
    .execute(&mut conn)
    .await
    .map_err(ApiError::internal)?;
    Ok(Json(AvatarUrl { url: api.url(&format!("avatars/{stored}"))? }))
}

enum AvatarFailure {
    Image(AvatarError),
    Storage(crate::StorageError),
}

impl From<AvatarError> for AvatarFailure {
    fn from(error: AvatarError) -> Self {
        Self::Image(error)
    }
}

impl AvatarFailure {
    fn into_api(self) -> ApiError {
        match self {
            Self::Image(AvatarError::TooLarge { limit }) => {
                ApiError::TooLarge { limit: limit as u64 }
            }
            Self::Image(error @ AvatarError::UnsupportedFormat { .. }) => {
                ApiError::UnsupportedMediaType { message: error.to_string() }
            }
            Self::Image(error @ AvatarError::Decode(_)) => {
                ApiError::invalid("body", error.to_string())
            }
            Self::Image(error @ AvatarError::Encode(_)) => ApiError::internal(error),
            Self::Storage(error) => ApiError::internal(error),
        }
    }
}

#[utoipa::path(
    delete,
    path = "/api/user/avatar",
    tag = "users",
    responses(
        (status = 204, description = "The generated avatar is used again"),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Missing CSRF token or the admin scope", body = ErrorBody)
    )
)]
async fn remove_avatar(
    State(api): State<StorageApi>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<StatusCode, ApiError> {
    let caller = api.inner.accounts.authorize_write(&jar, &headers, Scope::Admin).await?;
    let mut conn = api.inner.accounts.database().get().await.map_err(ApiError::internal)?;
    diesel::sql_query("DELETE FROM user_avatars WHERE user_id = $1")
        .bind::<BigInt, _>(caller.user.id)
        .execute(&mut conn)
        .await
        .map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(diesel::QueryableByName)]
struct StoredAvatar {
    #[diesel(sql_type = Text)]
    file_name: String,
}

#[utoipa::path(
    get,
    path = "/api/users/{username}/avatar",
    tag = "users",
    params(("username" = String, Path, description = "The user's name")),
    responses(
        (status = 302, description = "Redirects to the avatar PNG"),
        (status = 404, description = "No such user", body = ErrorBody)
    )
)]
async fn avatar_of(
    State(api): State<StorageApi>,
    ApiPath(username): ApiPath<String>,
) -> Result<Response, ApiError> {
    let mut conn = api.inner.accounts.database().get().await.map_err(ApiError::internal)?;
    let user = users::find_by_username(&mut conn, &username)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::NotFound { what: "user" })?;
    let uploaded: Option<StoredAvatar> =
        diesel::sql_query("SELECT file_name FROM user_avatars WHERE user_id = $1")
            .bind::<BigInt, _>(user.id)
            .get_result(&mut conn)
            .await
            .map(Some)
            .or_else(|error| match error {
                diesel::result::Error::NotFound => Ok(None),
                other => Err(ApiError::internal(other)),
            })?;
    drop(conn);
    let file = match uploaded {
        Some(avatar) => avatar.file_name,
        None => {
            let (root, size) = (api.inner.avatars.clone(), api.inner.limits.avatar.size);
            let seed = user.username.clone();
            tokio::task::spawn_blocking(move || {
                let png = avatars::default_avatar(&seed, size).map_err(ApiError::internal)?;
                let name = avatars::file_name(&png);
                if !root.contains_file(&name) {
                    root.write_atomic(&name, &png).map_err(ApiError::internal)?;
                }
                Ok::<_, ApiError>(name)
            })
            .await
            .map_err(ApiError::internal)??
        }
    };
    let location = api.url(&format!("avatars/{file}"))?;
    Ok((StatusCode::FOUND, [(header::LOCATION, location)]).into_response())
}

#[utoipa::path(
    post,
    path = "/api/attachments",
    tag = "attachments",
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file: an image, PDF, zip, gzip or UTF-8 text"),
    responses(
        (status = 201, description = "Stored (once per content); served at the URL", body = Attachment),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Missing CSRF token or the repo:write scope", body = ErrorBody),
        (status = 413, description = "Larger than the limit; nothing was kept", body = ErrorBody),
        (status = 415, description = "Not an accepted kind of file", body = ErrorBody)
    )
)]
async fn upload_attachment(
    State(api): State<StorageApi>,
    headers: HeaderMap,
    jar: SignedCookieJar,
    body: Body,
) -> Result<(StatusCode, Json<Attachment>), ApiError> {
    api.inner.accounts.authorize_write(&jar, &headers, Scope::RepoWrite).await?;
    let limit = api.inner.limits.attachment_bytes;
    let mut stream = body.into_data_stream();
    // Enough of the start to tell the kind by its bytes.
    let mut head = Vec::new();
    while head.len() < 8192 {
        match stream.next().await {
            Some(chunk) => head.extend_from_slice(&chunk.map_err(|error| {
                if over_body_limit(&error) {
                    ApiError::TooLarge { limit }
                } else {
                    ApiError::BadRequest { message: "the body could not be read".to_owned() }
                }
            })?),
            None => break,
        }
        if head.len() as u64 > limit {
            return Err(ApiError::TooLarge { limit });
        }
    }
    let (content_type, extension) = sniff(&head)?;
    let rest = stream.map_err(std::io::Error::other);
    let body = futures_util::stream::once(async move { Ok(Bytes::from(head)) }).chain(rest);
    let stored =
        api.inner.blobs.put_stream_with_extension(Box::pin(body), limit, extension).await.map_err(
            |error| match error {
                BlobError::TooLarge { limit } => ApiError::TooLarge { limit },
                // A body sent without a length meets the service's own limit while it streams.
                BlobError::Body(source) if over_body_limit(source.as_ref()) => {
                    ApiError::TooLarge { limit }
                }
                BlobError::Body(_) => ApiError::BadRequest {
                    message: "the body could not be read to its end".to_owned(),
                },
                other => ApiError::internal(other),
            },
        )?;
    let path = stored.id.relative_path_with_extension(extension);
    Ok((
        StatusCode::CREATED,
        Json(Attachment {
            url: api.url(&format!("files/{path}"))?,
            sha256: stored.id.to_string(),
            size: stored.size,
            content_type: content_type.to_owned(),
        }),
    ))
}

/// Whether reading a body failed because it passed a body limit of the service (the shell's
/// `RequestBodyLimitLayer`, which meets a body without `Content-Length` only while it streams).
fn over_body_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        // An I/O error's `source` is its payload's source, skipping the payload itself.
        current = match error.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            Some(payload) => Some(payload),
            None => error.source(),
        };
    }
    false
}

/// Tells an attachment's kind from its first bytes, against the allow-list.
fn sniff(head: &[u8]) -> Result<(&'static str, &'static str), ApiError> {
    if let Some(kind) = infer::get(head) {
        return ATTACHMENT_TYPES
            .iter()
            .find(|(mime, _)| *mime == kind.mime_type())
            .copied()
            .ok_or_else(|| ApiError::UnsupportedMediaType {
                message: format!("{} files are not accepted", kind.mime_type()),
            });
    }
    // Text: valid UTF-8 (a cut at the end of the head aside), no NUL, and not markup a browser
    // could be talked into running.
    let text = match std::str::from_utf8(head) {
        Ok(text) => text,
        Err(error) if error.error_len().is_none() => {
            std::str::from_utf8(&head[..error.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => "\0",
    };
    if !head.is_empty() && !text.contains('\0') && !text.trim_start().starts_with('<') {
        return Ok(("text/plain", "txt"));
    }
    Err(ApiError::UnsupportedMediaType {
        message: "accepted: PNG, JPEG, GIF, WebP, PDF, zip, gzip or UTF-8 text".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_limits_and_the_body_limit_they_need() {
        let avatar_larger =
            UploadLimitsConfig { avatar_max_bytes: 40 << 20, attachment_max_bytes: 1 << 20 };
        let limits = UploadLimits::from_config(&avatar_larger);
        assert_eq!(limits.attachment_bytes, 1 << 20);
        assert_eq!(limits.avatar.max_upload_bytes, 40 << 20);
        assert_eq!(limits.avatar.size, AvatarOptions::default().size);
        assert_eq!(limits.body_limit(), 40 << 20);
        let attachment_larger =
            UploadLimitsConfig { avatar_max_bytes: 5 << 20, attachment_max_bytes: 25 << 20 };
        assert_eq!(UploadLimits::from_config(&attachment_larger).body_limit(), 25 << 20);
    }
}
