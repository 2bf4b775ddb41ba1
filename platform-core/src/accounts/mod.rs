//! Accounts: users, passwords, sessions, and the HTTP routes that manage them.
//!
//! Passwords are hashed with argon2id. A login creates a fresh server-side session in Redis
//! (never reusing an id the client brought, so a planted session id is worthless) named by a
//! cookie signed with `APP_SESSION_SECRET`: `HttpOnly`, `SameSite=Lax`, and `Secure` when
//! `APP_COOKIE_SECURE=true`. Logout ends the session.
//!
//! Routes ([`router`]):
//!
//! | method | path | answer |
//! |---|---|---|
//! | `POST` | `/api/auth/register` | 201 and the user; 409 for a taken name or address; 422 for a broken rule |
//! | `POST` | `/api/auth/login` | 200, the user, the CSRF token and the session cookie; 401 for wrong credentials; 429 when limited |
//! | `GET` | `/api/auth/session` | 200, the user and the CSRF token of the current session |
//! | `POST` | `/api/auth/logout` | 204, the session ended and the cookie cleared (needs `X-CSRF-Token`) |
//! | `GET` | `/api/user` | 200 and the signed-in user; 401 without a session |
//!
//! ```no_run
//! # fn run(database: platform_core::db::Database, redis: platform_core::redis::Redis,
//! #        session: &platform_core::config::SessionConfig) -> Result<(), platform_core::accounts::AccountsError> {
//! let routes = platform_core::accounts::router(platform_core::accounts::Accounts::new(database, redis, session)?);
//! let shell = platform_core::service::ServiceShell::new("app").with_routes(routes);
//! # Ok(()) }
//! ```

pub mod password;
pub mod rate_limit;
pub mod sessions;
pub mod users;
pub mod validation;

use axum::Router;
use axum::extract::{FromRef, State};
use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum_extra::extract::SignedCookieJar;
use axum_extra::extract::cookie::{Cookie, Key, SameSite};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

use crate::api::{ApiError, ApiJson};
use crate::config::SessionConfig;
use crate::db::Database;
use crate::redis::Redis;
pub use users::{User, UserRecord};

/// The header that carries the CSRF token of cookie-authenticated writes.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The error returned by [`Accounts::new`].
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    /// The session secret is too short to derive a signing key from.
    #[error("APP_SESSION_SECRET must be at least 32 bytes")]
    SecretTooShort,
}

/// What the account routes need: the database, Redis, and the cookie signing key.
#[derive(Clone)]
pub struct Accounts {
    database: Database,
    redis: Redis,
    key: Key,
    cookie_secure: bool,
    namespace: String,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts")
            .field("cookie_secure", &self.cookie_secure)
            .finish_non_exhaustive()
    }
}

impl FromRef<Accounts> for Key {
    fn from_ref(accounts: &Accounts) -> Self {
        accounts.key.clone()
    }
}

impl Accounts {
    /// Prepares the account routes' state.
    ///
    /// # Errors
    ///
    /// Fails when the session secret is shorter than 32 bytes (configuration loading already
    /// refuses those).
    pub fn new(
        database: Database,
        redis: Redis,
        session: &SessionConfig,
    ) -> Result<Self, AccountsError> {
        let secret = session.secret.expose_secret().as_bytes();
        if secret.len() < crate::config::MIN_SESSION_SECRET_BYTES {
            return Err(AccountsError::SecretTooShort);
        }
        Ok(Self {
            database,
            redis,
            key: Key::derive_from(secret),
            cookie_secure: session.cookie_secure,
            namespace: "platform".to_owned(),
        })
    }

    /// Sets the prefix of this deployment's Redis keys (default `platform`), so deployments or
    /// tests sharing a Redis never see each other's sessions or counters.
    #[must_use]
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Returns the signed-in user of the request whose cookies are `jar`, and the session.
    ///
    /// # Errors
    ///
    /// [`ApiError::Unauthenticated`] without a valid session.
    pub async fn current_user(
        &self,
        jar: &SignedCookieJar,
    ) -> Result<(UserRecord, sessions::Session), ApiError> {
        let cookie = jar.get(sessions::COOKIE_NAME).ok_or(ApiError::Unauthenticated)?;
        let session = sessions::find(&self.redis, &self.namespace, cookie.value())
            .await
            .map_err(ApiError::internal)?
            .ok_or(ApiError::Unauthenticated)?;
        let mut conn = self.database.get().await.map_err(ApiError::internal)?;
        let user = users::find_by_id(&mut conn, session.user_id)
            .await
            .map_err(ApiError::internal)?
            .ok_or(ApiError::Unauthenticated)?;
        Ok((user, session))
    }

    /// Like [`Accounts::current_user`], for a write: the request must also carry the session's
    /// CSRF token in `X-CSRF-Token`.
    ///
    /// # Errors
    ///
    /// 401 without a valid session, 403 without the right token.
    pub async fn current_user_for_write(
        &self,
        jar: &SignedCookieJar,
        headers: &HeaderMap,
    ) -> Result<(UserRecord, sessions::Session), ApiError> {
        let (user, session) = self.current_user(jar).await?;
        let sent = headers.get(CSRF_HEADER).map(HeaderValue::as_bytes).unwrap_or_default();
        if !bool::from(sent.ct_eq(session.csrf_token.as_bytes())) {
            return Err(ApiError::Forbidden {
                message: format!(
                    "missing or wrong {CSRF_HEADER} header for a cookie-authenticated write"
                ),
            });
        }
        Ok((user, session))
    }

    fn session_cookie(&self, id: String) -> Cookie<'static> {
        Cookie::build((sessions::COOKIE_NAME, id))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.cookie_secure)
            .max_age(time_duration(sessions::SESSION_TTL))
            .build()
    }
}

fn time_duration(duration: std::time::Duration) -> cookie::time::Duration {
    cookie::time::Duration::seconds(i64::try_from(duration.as_secs()).unwrap_or(i64::MAX))
}

/// The account routes (see the module docs).
pub fn router(accounts: Accounts) -> Router {
    Router::new()
        .route("/api/auth/register", post(register))
        .route("/api/auth/login", post(login))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/session", get(current_session))
        .route("/api/user", get(me))
        .with_state(accounts)
}

/// The body of `POST /api/auth/register`.
#[derive(Debug, Deserialize)]
pub struct RegisterRequest {
    /// The user name.
    pub username: String,
    /// The email address.
    pub email: String,
    /// The password.
    pub password: String,
}

async fn register(
    State(accounts): State<Accounts>,
    ApiJson(request): ApiJson<RegisterRequest>,
) -> Result<impl IntoResponse, ApiError> {
    validation::check_username(&request.username).map_err(|m| ApiError::invalid("username", m))?;
    validation::check_email(&request.email).map_err(|m| ApiError::invalid("email", m))?;
    password::check_policy(&request.password, &request.username)
        .map_err(|m| ApiError::invalid("password", m))?;
    let password = request.password;
    let hash = tokio::task::spawn_blocking(move || password::hash(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::Internal(e.to_string().into()))?;
    let mut conn = accounts.database.get().await.map_err(ApiError::internal)?;
    let record = users::create(&mut conn, &request.username, &request.email, &hash).await.map_err(
        |error| match error {
            users::UserError::Taken { field } => ApiError::Conflict {
                message: format!("{field} is already taken"),
                field: Some(field),
            },
            other => ApiError::internal(other),
        },
    )?;
    tracing::info!(user = record.id, username = %record.username, "account registered");
    Ok((StatusCode::CREATED, axum::Json(User::from(&record))))
}

/// The body of `POST /api/auth/login`.
#[derive(Debug, Deserialize)]
pub struct LoginRequest {
    /// The user name or email address.
    pub login: String,
    /// The password.
    pub password: String,
}

/// A valid argon2id hash of a random string, verified against when the login names nobody, so
/// that unknown and known accounts take the same time to refuse.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$TzjAeBNBHJvDUqWSQq4JNDDqoBKbahdLxjP8VNXiHYw";

/// The answer to a login: who signed in, and the token their cookie-authenticated writes carry.
#[derive(Debug, Serialize)]
pub struct SessionResponse {
    /// The signed-in user.
    pub user: User,
    /// The value for the `X-CSRF-Token` header.
    pub csrf_token: String,
}

async fn login(
    State(accounts): State<Accounts>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    jar: SignedCookieJar,
    ApiJson(request): ApiJson<LoginRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let namespace = &accounts.namespace;
    let account_key =
        format!("{namespace}:ratelimit:login:account:{}", request.login.to_lowercase());
    let address_key = format!("{namespace}:ratelimit:login:address:{}", client.ip());
    for (key, limit) in
        [(&account_key, rate_limit::PER_ACCOUNT), (&address_key, rate_limit::PER_ADDRESS)]
    {
        if let Some(retry_after) = rate_limit::blocked_for(&accounts.redis, key, limit)
            .await
            .map_err(ApiError::internal)?
        {
            tracing::warn!(client = %client.ip(), "login rate limit reached");
            return Err(ApiError::RateLimited { retry_after });
        }
    }

    let mut conn = accounts.database.get().await.map_err(ApiError::internal)?;
    let record =
        users::find_by_login(&mut conn, &request.login).await.map_err(ApiError::internal)?;
    drop(conn);
    let stored = record.as_ref().map_or_else(|| DUMMY_HASH.to_owned(), |r| r.password_hash.clone());
    let password = request.password;
    let matches = tokio::task::spawn_blocking(move || password::verify(&password, &stored))
        .await
        .map_err(ApiError::internal)?;
    let Some(record) = record.filter(|_| matches) else {
        for (key, limit) in
            [(&account_key, rate_limit::PER_ACCOUNT), (&address_key, rate_limit::PER_ADDRESS)]
        {
            rate_limit::record_failure(&accounts.redis, key, limit)
                .await
                .map_err(ApiError::internal)?;
        }
        return Err(ApiError::InvalidCredentials);
    };
    rate_limit::reset(&accounts.redis, &account_key).await.map_err(ApiError::internal)?;
    // A session id the client already holds is never promoted to a signed-in one.
    if let Some(previous) = jar.get(sessions::COOKIE_NAME) {
        sessions::delete(&accounts.redis, &accounts.namespace, previous.value())
            .await
            .map_err(ApiError::internal)?;
    }
    let session = sessions::create(&accounts.redis, &accounts.namespace, record.id)
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(user = record.id, "signed in");
    let jar = jar.add(accounts.session_cookie(session.id));
    Ok((
        jar,
        axum::Json(SessionResponse { user: User::from(&record), csrf_token: session.csrf_token }),
    ))
}

async fn current_session(
    State(accounts): State<Accounts>,
    jar: SignedCookieJar,
) -> Result<axum::Json<SessionResponse>, ApiError> {
    let (record, session) = accounts.current_user(&jar).await?;
    Ok(axum::Json(SessionResponse { user: User::from(&record), csrf_token: session.csrf_token }))
}

async fn logout(
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

async fn me(
    State(accounts): State<Accounts>,
    jar: SignedCookieJar,
) -> Result<axum::Json<User>, ApiError> {
    let (record, _) = accounts.current_user(&jar).await?;
    Ok(axum::Json(User::from(&record)))
}
