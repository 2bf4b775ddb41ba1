//! Registration, signing in and out, address verification and password resets
//! (`/api/auth/...`).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum_extra::extract::SignedCookieJar;
use axum_extra::extract::cookie::Cookie;
use serde::{Deserialize, Serialize};

use crate::accounts::{
    AccountMail, Accounts, MAIL_STREAM, User, attempts, password, sessions, tokens, users,
    validation,
};
use crate::api::{ApiError, ApiJson, ErrorBody};

/// The body of `POST /api/auth/register`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RegisterRequest {
    /// The user name: 1 to 39 letters, digits, `-`, `_` or `.`, starting and ending with a
    /// letter or digit; some names are reserved.
    #[schema(pattern = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,37}[A-Za-z0-9])?$")]
    pub username: String,
    /// The email address.
    pub email: String,
    /// The password: 10 to 256 characters, not containing the user name.
    #[schema(min_length = 10, max_length = 256)]
    pub password: String,
}

/// The answer to a registration: the same whether or not the address already had an account.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Registration {
    /// The user name asked for.
    pub username: String,
    /// The address the mail went to.
    pub email: String,
    /// What happens next.
    pub message: String,
}

#[utoipa::path(
    post,
    path = "/api/auth/register",
    tag = "accounts",
    request_body = RegisterRequest,
    responses(
        (status = 202, description = "A mail is on its way: the verification of a new account, or, when the address already has one, a note to its owner", body = Registration),
        (status = 400, description = "Malformed request body", body = ErrorBody),
        (status = 409, description = "The user name is taken", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody)
    )
)]
/// Registers an account. A taken user name is said (names are public); a taken address is not:
/// the answer is the same as for a new account, and the address's owner is mailed instead, as a
/// password reset does.
pub(in crate::accounts) async fn register(
    State(accounts): State<Accounts>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<RegisterRequest>,
) -> Result<impl IntoResponse, ApiError> {
    validation::check_username(&request.username).map_err(|m| ApiError::invalid("username", m))?;
    validation::check_email(&request.email).map_err(|m| ApiError::invalid("email", m))?;
    password::check_policy(&request.password, &request.username)
        .map_err(|m| ApiError::invalid("password", m))?;
    let hash = Accounts::hash_password(request.password).await?;
    let answer = Registration {
        username: request.username.clone(),
        email: request.email.clone(),
        message: "check your mail to verify the address".to_owned(),
    };
    let mut conn = accounts.database.get().await.map_err(ApiError::internal)?;
    let created = users::create(&mut conn, &request.username, &request.email, &hash).await;
    let mail = match created {
        Ok(record) => {
            tracing::info!(user = record.id, username = %record.username, "account registered");
            let token = tokens::issue(&mut conn, record.id, tokens::Purpose::VerifyEmail)
                .await
                .map_err(ApiError::internal)?;
            AccountMail::VerifyEmail {
                user_id: record.id,
                username: record.username,
                to: record.email,
                token,
            }
        }
        Err(users::UserError::Taken { field: "email" }) => {
            let owner = users::find_by_email(&mut conn, &request.email)
                .await
                .map_err(ApiError::internal)?
                .ok_or_else(|| ApiError::Internal("a taken address has no account".into()))?;
            // The owner hears of it, at most as often as password resets are mailed.
            let client = accounts.client_address(peer.ip(), &headers);
            if !accounts.account_mail_allowed(client, Some(owner.id)).await? {
                tracing::warn!(%client, user = owner.id, "registration mail throttled");
                return Ok((StatusCode::ACCEPTED, axum::Json(answer)));
            }
            tracing::info!(user = owner.id, "registration with a taken address");
            AccountMail::AccountExists {
                user_id: owner.id,
                username: owner.username,
                to: owner.email,
            }
        }
        Err(users::UserError::Taken { field }) => {
            return Err(ApiError::Conflict {
                message: format!("{field} is already taken"),
                field: Some(field),
            });
        }
        Err(other) => return Err(ApiError::internal(other)),
    };
    // The account exists either way; a lost verification mail can be asked for again.
    if let Err(error) = accounts.queue.publish(MAIL_STREAM, &mail).await {
        tracing::error!(error = %crate::service::error_chain(&error), "cannot queue the registration mail");
    }
    Ok((StatusCode::ACCEPTED, axum::Json(answer)))
}

/// The body of `POST /api/auth/login`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct LoginRequest {
    /// The user name or email address.
    pub login: String,
    /// The password.
    pub password: String,
}

/// The answer to a login: who signed in, and the token their cookie-authenticated writes carry.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionResponse {
    /// The signed-in user.
    pub user: User,
    /// The value for the `X-CSRF-Token` header.
    pub csrf_token: String,
}

#[utoipa::path(
    post,
    path = "/api/auth/login",
    tag = "accounts",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in; the session cookie is set", body = SessionResponse),
        (status = 400, description = "Malformed request body", body = ErrorBody),
        (status = 401, description = "Wrong login or password", body = ErrorBody),
        (status = 429, description = "Too many attempts; see Retry-After", body = ErrorBody)
    )
)]
pub(in crate::accounts) async fn login(
    State(accounts): State<Accounts>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    jar: SignedCookieJar,
    ApiJson(request): ApiJson<LoginRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let client = accounts.client_address(peer.ip(), &headers);
    let record = match accounts.check_password(&request.login, &request.password, client).await? {
        attempts::Verdict::Valid(record) => record,
        attempts::Verdict::Invalid => return Err(ApiError::InvalidCredentials),
        attempts::Verdict::Limited(retry_after) => {
            return Err(ApiError::RateLimited { retry_after });
        }
    };
    // A session id the client already holds is never promoted to a signed-in one.
    if let Some(previous) = jar.get(sessions::COOKIE_NAME) {
        sessions::delete(&accounts.redis, &accounts.namespace, previous.value())
            .await
            .map_err(ApiError::internal)?;
    }
    let session =
        sessions::create(&accounts.redis, &accounts.namespace, record.id, &record.password_hash)
            .await
            .map_err(ApiError::internal)?;
    tracing::info!(user = record.id, "signed in");
    let jar = jar.add(accounts.session_cookie(session.id));
    Ok((
        jar,
        axum::Json(SessionResponse { user: User::from(&record), csrf_token: session.csrf_token }),
    ))
}

#[utoipa::path(
    get,
    path = "/api/auth/session",
    tag = "accounts",
    responses(
        (status = 200, description = "The current session", body = SessionResponse),
        (status = 401, description = "No valid session or token", body = ErrorBody)
    )
)]
pub(in crate::accounts) async fn current_session(
    State(accounts): State<Accounts>,
    jar: SignedCookieJar,
) -> Result<axum::Json<SessionResponse>, ApiError> {
    let (record, session) = accounts.current_user(&jar).await?;
    Ok(axum::Json(SessionResponse { user: User::from(&record), csrf_token: session.csrf_token }))
}

#[utoipa::path(
    post,
    path = "/api/auth/logout",
    tag = "accounts",
    responses(
        (status = 204, description = "Session ended, cookie cleared"),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Missing CSRF token or token scope", body = ErrorBody)
    )
)]
pub(in crate::accounts) async fn logout(
    State(accounts): State<Accounts>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<impl IntoResponse, ApiError> {
    let (_, session) = accounts.current_user_for_write(&jar, &headers).await?;
    sessions::delete(&accounts.redis, &accounts.namespace, &session.id)
        .await
        .map_err(ApiError::internal)?;
    let jar = jar.remove(Cookie::build(sessions::COOKIE_NAME).path("/"));
    Ok((jar, StatusCode::NO_CONTENT))
}

/// The body of `POST /api/auth/verify-email`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TokenRequest {
    /// The token from the mail.
    pub token: String,
}

fn invalid_token() -> ApiError {
    ApiError::invalid("token", "token is invalid, expired or already used")
}

#[utoipa::path(
    post,
    path = "/api/auth/verify-email",
    tag = "accounts",
    request_body = TokenRequest,
    responses(
        (status = 204, description = "Address verified"),
        (status = 400, description = "Malformed request body", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody)
    )
)]
pub(in crate::accounts) async fn verify_email(
    State(accounts): State<Accounts>,
    ApiJson(request): ApiJson<TokenRequest>,
) -> Result<StatusCode, ApiError> {
    let mut conn = accounts.database.get().await.map_err(ApiError::internal)?;
    let user = tokens::redeem(&mut conn, &request.token, tokens::Purpose::VerifyEmail)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(invalid_token)?;
    users::mark_email_verified(&mut conn, user).await.map_err(ApiError::internal)?;
    tracing::info!(user, "email address verified");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/api/auth/verify-email/resend",
    tag = "accounts",
    responses(
        (status = 202, description = "Another verification mail queued"),
        (status = 401, description = "No valid session or token", body = ErrorBody),
        (status = 403, description = "Missing CSRF token or token scope", body = ErrorBody),
        (status = 409, description = "Conflicts with existing state", body = ErrorBody)
    )
)]
pub(in crate::accounts) async fn resend_verification(
    State(accounts): State<Accounts>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<StatusCode, ApiError> {
    let (user, _) = accounts.current_user_for_write(&jar, &headers).await?;
    if user.email_verified_at.is_some() {
        return Err(ApiError::Conflict {
            message: "email is already verified".to_owned(),
            field: Some("email"),
        });
    }
    let mut conn = accounts.database.get().await.map_err(ApiError::internal)?;
    accounts.send_verification(&mut conn, &user).await?;
    Ok(StatusCode::ACCEPTED)
}

/// The body of `POST /api/auth/password-reset`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PasswordResetRequest {
    /// The account's address.
    pub email: String,
}

#[utoipa::path(
    post,
    path = "/api/auth/password-reset",
    tag = "accounts",
    request_body = PasswordResetRequest,
    responses(
        (status = 202, description = "A reset mail is queued if the address has an account"),
        (status = 400, description = "Malformed request body", body = ErrorBody)
    )
)]
/// Answers 202 whether or not the address has an account, so the answer reveals none; at most
/// three mails per account and ten requests per client address go out in an hour.
pub(in crate::accounts) async fn request_password_reset(
    State(accounts): State<Accounts>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<PasswordResetRequest>,
) -> Result<StatusCode, ApiError> {
    let mut conn = accounts.database.get().await.map_err(ApiError::internal)?;
    let user = users::find_by_email(&mut conn, &request.email).await.map_err(ApiError::internal)?;
    let client = accounts.client_address(peer.ip(), &headers);
    if !accounts.account_mail_allowed(client, user.as_ref().map(|u| u.id)).await? {
        tracing::warn!(%client, user = user.as_ref().map(|u| u.id), "password reset mail throttled");
        return Ok(StatusCode::ACCEPTED);
    }
    if let Some(user) = user {
        let token = tokens::issue(&mut conn, user.id, tokens::Purpose::ResetPassword)
            .await
            .map_err(ApiError::internal)?;
        let mail = AccountMail::ResetPassword {
            user_id: user.id,
            username: user.username,
            to: user.email,
            token,
        };
        accounts.queue.publish(MAIL_STREAM, &mail).await.map_err(ApiError::internal)?;
        tracing::info!(user = user.id, "password reset requested");
    }
    Ok(StatusCode::ACCEPTED)
}

/// The body of `POST /api/auth/password-reset/confirm`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PasswordResetConfirmation {
    /// The token from the mail.
    pub token: String,
    /// The new password.
    pub password: String,
}

#[utoipa::path(
    post,
    path = "/api/auth/password-reset/confirm",
    tag = "accounts",
    request_body = PasswordResetConfirmation,
    responses(
        (status = 204, description = "Password set; every session ended"),
        (status = 400, description = "Malformed request body", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody)
    )
)]
pub(in crate::accounts) async fn confirm_password_reset(
    State(accounts): State<Accounts>,
    ApiJson(request): ApiJson<PasswordResetConfirmation>,
) -> Result<StatusCode, ApiError> {
    let mut conn = accounts.database.get().await.map_err(ApiError::internal)?;
    let purpose = tokens::Purpose::ResetPassword;
    // Check the new password before using the token up, so a refused one can be corrected.
    let user_id = tokens::peek(&mut conn, &request.token, purpose)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(invalid_token)?;
    let user = users::find_by_id(&mut conn, user_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(invalid_token)?;
    password::check_policy(&request.password, &user.username)
        .map_err(|m| ApiError::invalid("password", m))?;
    let hash = Accounts::hash_password(request.password).await?;
    if tokens::redeem(&mut conn, &request.token, purpose)
        .await
        .map_err(ApiError::internal)?
        .is_none()
    {
        return Err(invalid_token());
    }
    users::set_password_hash(&mut conn, user.id, &hash).await.map_err(ApiError::internal)?;
    tokens::revoke_all(&mut conn, user.id, purpose).await.map_err(ApiError::internal)?;
    sessions::delete_all(&accounts.redis, &accounts.namespace, user.id)
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(user = user.id, "password reset; every session and reset mail ended");
    Ok(StatusCode::NO_CONTENT)
}
