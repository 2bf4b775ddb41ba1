//! The signed-in user (`/api/user`) and their password (`/api/user/password`).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum_extra::extract::SignedCookieJar;
use axum_extra::extract::cookie::Cookie;
use serde::Deserialize;

use crate::accounts::{Accounts, User, password, sessions, tokens, users};
use crate::api::{ApiError, ApiJson, ErrorBody};

#[utoipa::path(
    get,
    path = "/api/user",
    tag = "accounts",
    responses(
        (status = 200, description = "The signed-in user", body = User),
        (status = 401, description = "No valid session or token", body = ErrorBody)
    )
)]
pub(in crate::accounts) async fn me(
    State(accounts): State<Accounts>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<axum::Json<User>, ApiError> {
    let caller = accounts.authenticate(&jar, &headers).await?;
    Ok(axum::Json(User::from(&caller.user)))
}

/// The body of `PUT /api/user/password`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PasswordChange {
    /// The password now.
    pub current_password: String,
    /// The password to set.
    pub new_password: String,
}

#[utoipa::path(
    put,
    path = "/api/user/password",
    tag = "accounts",
    request_body = PasswordChange,
    responses(
        (status = 204, description = "Password changed; every session ended"),
        (status = 400, description = "Malformed request body", body = ErrorBody),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Missing CSRF token or token scope", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody)
    )
)]
/// Changes the password and ends every session of the user, this one included.
pub(in crate::accounts) async fn change_password(
    State(accounts): State<Accounts>,
    headers: HeaderMap,
    jar: SignedCookieJar,
    ApiJson(request): ApiJson<PasswordChange>,
) -> Result<impl IntoResponse, ApiError> {
    let (user, _) = accounts.current_user_for_write(&jar, &headers).await?;
    let stored = user.password_hash.clone();
    let current = request.current_password;
    let matches = tokio::task::spawn_blocking(move || password::verify(&current, &stored))
        .await
        .map_err(ApiError::internal)?;
    if !matches {
        return Err(ApiError::invalid("current_password", "current password is wrong"));
    }
    password::check_policy(&request.new_password, &user.username)
        .map_err(|m| ApiError::invalid("new_password", m))?;
    let hash = Accounts::hash_password(request.new_password).await?;
    let mut conn = accounts.database.get().await.map_err(ApiError::internal)?;
    users::set_password_hash(&mut conn, user.id, &hash).await.map_err(ApiError::internal)?;
    tokens::revoke_all(&mut conn, user.id, tokens::Purpose::ResetPassword)
        .await
        .map_err(ApiError::internal)?;
    sessions::delete_all(&accounts.redis, &accounts.namespace, user.id)
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(user = user.id, "password changed; every session and reset mail ended");
    let jar = jar.remove(Cookie::build(sessions::COOKIE_NAME).path("/"));
    Ok((jar, StatusCode::NO_CONTENT))
}
