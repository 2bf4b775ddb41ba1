//! The signed-in user's personal access tokens (`/api/user/tokens`).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum_extra::extract::SignedCookieJar;
use serde::{Deserialize, Serialize};

use super::label;
use crate::accounts::{Accounts, Scope, access_tokens};
use crate::api::{ApiError, ApiJson, ApiPath, ErrorBody};

/// The longest lifetime a token can be given, in days (ten years).
pub const MAX_TOKEN_DAYS: u32 = 3650;

/// The body of `POST /api/user/tokens`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateToken {
    /// A name to recognise it by, 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// Days until it stops working, 1 to 3650; never when absent.
    #[schema(minimum = 1, maximum = 3650)]
    pub expires_in_days: Option<u32>,
}

/// A new token: the only answer that ever contains the token itself.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    /// The token; store it now, it cannot be shown again.
    pub token: String,
    /// Its record.
    #[serde(flatten)]
    pub record: access_tokens::AccessToken,
}

#[utoipa::path(
    post,
    path = "/api/user/tokens",
    tag = "accounts",
    request_body = CreateToken,
    responses(
        (status = 201, description = "The token, shown this once", body = CreatedToken),
        (status = 400, description = "Malformed request body", body = ErrorBody),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Missing CSRF token or token scope", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody)
    )
)]
pub(in crate::accounts) async fn create_token(
    State(accounts): State<Accounts>,
    headers: HeaderMap,
    jar: SignedCookieJar,
    ApiJson(request): ApiJson<CreateToken>,
) -> Result<impl IntoResponse, ApiError> {
    let caller = accounts.authorize_write(&jar, &headers, Scope::Admin).await?;
    caller.require_verified()?;
    let name = label(&request.name)?;
    if request.scopes.is_empty() {
        return Err(ApiError::invalid(
            "scopes",
            "give at least one scope: repo:read, repo:write or admin",
        ));
    }
    let expires_at = match request.expires_in_days {
        Some(days @ 1..=MAX_TOKEN_DAYS) => {
            Some(chrono::Utc::now() + chrono::Duration::days(i64::from(days)))
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "expires_in_days",
                format!("expires_in_days must be from 1 to {MAX_TOKEN_DAYS}"),
            ));
        }
        None => None,
    };
    let mut scopes = request.scopes;
    scopes.sort_by_key(|scope| scope.as_str());
    scopes.dedup();
    let mut conn = accounts.database.get().await.map_err(ApiError::internal)?;
    let (token, record) =
        access_tokens::create(&mut conn, caller.user.id, name, &scopes, expires_at)
            .await
            .map_err(ApiError::internal)?;
    tracing::info!(user = caller.user.id, token = record.id, "access token created");
    Ok((StatusCode::CREATED, axum::Json(CreatedToken { token, record })))
}

#[utoipa::path(
    get,
    path = "/api/user/tokens",
    tag = "accounts",
    responses(
        (status = 200, description = "The user's tokens", body = Vec<access_tokens::AccessToken>),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Missing CSRF token or token scope", body = ErrorBody)
    )
)]
pub(in crate::accounts) async fn list_tokens(
    State(accounts): State<Accounts>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<axum::Json<Vec<access_tokens::AccessToken>>, ApiError> {
    let caller = accounts.authorize_read(&jar, &headers, Scope::Admin).await?;
    let mut conn = accounts.database.get().await.map_err(ApiError::internal)?;
    Ok(axum::Json(
        access_tokens::list(&mut conn, caller.user.id).await.map_err(ApiError::internal)?,
    ))
}

#[utoipa::path(
    delete,
    path = "/api/user/tokens/{id}",
    tag = "accounts",
    params(("id" = i64, Path, description = "The item's id")),
    responses(
        (status = 204, description = "Token revoked"),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Missing CSRF token or token scope", body = ErrorBody),
        (status = 404, description = "No such item of the caller", body = ErrorBody)
    )
)]
pub(in crate::accounts) async fn revoke_token(
    State(accounts): State<Accounts>,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<StatusCode, ApiError> {
    let caller = accounts.authorize_write(&jar, &headers, Scope::Admin).await?;
    let mut conn = accounts.database.get().await.map_err(ApiError::internal)?;
    if access_tokens::revoke(&mut conn, caller.user.id, id).await.map_err(ApiError::internal)? {
        tracing::info!(user = caller.user.id, token = id, "access token revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound { what: "token" })
    }
}
