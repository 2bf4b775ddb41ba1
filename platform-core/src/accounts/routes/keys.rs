//! The signed-in user's SSH keys (`/api/user/keys`).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum_extra::extract::SignedCookieJar;
use serde::Deserialize;

use super::label;
use crate::accounts::{Accounts, Scope, ssh_keys};
use crate::api::{ApiError, ApiJson, ApiPath, ErrorBody};

/// The body of `POST /api/user/keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct AddKey {
    /// A name to recognise it by, 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// The public key line, as in `~/.ssh/id_ed25519.pub`.
    pub key: String,
}

#[utoipa::path(
    post,
    path = "/api/user/keys",
    tag = "accounts",
    request_body = AddKey,
    responses(
        (status = 201, description = "Key added", body = ssh_keys::SshKey),
        (status = 400, description = "Malformed request body", body = ErrorBody),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Missing CSRF token or token scope", body = ErrorBody),
        (status = 409, description = "Conflicts with existing state", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody)
    )
)]
pub(in crate::accounts) async fn add_key(
    State(accounts): State<Accounts>,
    headers: HeaderMap,
    jar: SignedCookieJar,
    ApiJson(request): ApiJson<AddKey>,
) -> Result<impl IntoResponse, ApiError> {
    let caller = accounts.authorize_write(&jar, &headers, Scope::Admin).await?;
    caller.require_verified()?;
    let name = label(&request.name)?;
    let parsed = ssh_keys::parse(&request.key).map_err(|m| ApiError::invalid("key", m))?;
    let mut conn = accounts.database.get().await.map_err(ApiError::internal)?;
    let key =
        ssh_keys::add(&mut conn, caller.user.id, name, &parsed).await.map_err(
            |error| match error {
                ssh_keys::SshKeyError::InUse => ApiError::Conflict {
                    message: "this key is already in use".to_owned(),
                    field: Some("key"),
                },
                other => ApiError::internal(other),
            },
        )?;
    tracing::info!(user = caller.user.id, fingerprint = %key.fingerprint, "SSH key added");
    Ok((StatusCode::CREATED, axum::Json(key)))
}

#[utoipa::path(
    get,
    path = "/api/user/keys",
    tag = "accounts",
    responses(
        (status = 200, description = "The user's SSH keys", body = Vec<ssh_keys::SshKey>),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Missing CSRF token or token scope", body = ErrorBody)
    )
)]
pub(in crate::accounts) async fn list_keys(
    State(accounts): State<Accounts>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<axum::Json<Vec<ssh_keys::SshKey>>, ApiError> {
    let caller = accounts.authorize_read(&jar, &headers, Scope::Admin).await?;
    let mut conn = accounts.database.get().await.map_err(ApiError::internal)?;
    Ok(axum::Json(ssh_keys::list(&mut conn, caller.user.id).await.map_err(ApiError::internal)?))
}

#[utoipa::path(
    delete,
    path = "/api/user/keys/{id}",
    tag = "accounts",
    params(("id" = i64, Path, description = "The item's id")),
    responses(
        (status = 204, description = "Key removed"),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Missing CSRF token or token scope", body = ErrorBody),
        (status = 404, description = "No such item of the caller", body = ErrorBody)
    )
)]
pub(in crate::accounts) async fn delete_key(
    State(accounts): State<Accounts>,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<StatusCode, ApiError> {
    let caller = accounts.authorize_write(&jar, &headers, Scope::Admin).await?;
    let mut conn = accounts.database.get().await.map_err(ApiError::internal)?;
    if ssh_keys::delete(&mut conn, caller.user.id, id).await.map_err(ApiError::internal)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound { what: "SSH key" })
    }
}
