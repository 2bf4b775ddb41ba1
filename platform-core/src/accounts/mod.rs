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
//! | `POST` | `/api/auth/register` | 202, whether or not the address had an account (its owner is mailed then); 409 for a taken name; 422 for a broken rule |
//! | `POST` | `/api/auth/login` | 200, the user, the CSRF token and the session cookie; 401 for wrong credentials; 429 when limited |
//! | `GET` | `/api/auth/session` | 200, the user and the CSRF token of the current session |
//! | `POST` | `/api/auth/logout` | 204, the session ended and the cookie cleared (needs `X-CSRF-Token`) |
//! | `POST` | `/api/auth/verify-email` | 204 for a valid token from the verification mail; 422 otherwise |
//! | `POST` | `/api/auth/verify-email/resend` | 202, another verification mail queued (needs `X-CSRF-Token`) |
//! | `POST` | `/api/auth/password-reset` | 202 whether or not the address has an account; a reset mail queued if it has |
//! | `POST` | `/api/auth/password-reset/confirm` | 204, the new password set and every session ended; 422 for a bad token or password |
//! | `GET` | `/api/user` | 200 and the signed-in user; 401 without a session |
//! | `PUT` | `/api/user/password` | 204, the password changed and every session ended (needs the current password and `X-CSRF-Token`) |
//! | `POST` | `/api/user/tokens` | 201 and a personal access token, shown this once |
//! | `GET` | `/api/user/tokens` | 200 and the user's tokens, without the tokens themselves |
//! | `DELETE` | `/api/user/tokens/{id}` | 204, the token revoked |
//! | `POST` | `/api/user/keys` | 201 and the SSH key with its SHA256 fingerprint; 409 if any account has it; 422 for DSA or RSA under 2048 bits |
//! | `GET` | `/api/user/keys` | 200 and the user's SSH keys |
//! | `DELETE` | `/api/user/keys/{id}` | 204, the key removed |
//!
//! Every route accepts `Authorization: Bearer <token>` instead of the cookie; a token acts only
//! within its scopes (`repo:read`, `repo:write`, `admin`; managing the account needs `admin`).
//!
//! Registration and password resets publish an [`AccountMail`] to the [`MAIL_STREAM`] queue
//! stream; tokens are single-use, expire (24 hours, 1 hour), and are stored only as hashes.
//!
//! ```no_run
//! # fn run(database: platform_core::db::Database, redis: platform_core::redis::Redis,
//! #        queue: platform_core::queue::Queue,
//! #        session: &platform_core::config::SessionConfig) -> Result<(), platform_core::accounts::AccountsError> {
//! use platform_core::accounts::{Accounts, router};
//! let routes = router(Accounts::new(database, redis, queue, session)?);
//! let shell = platform_core::service::ServiceShell::new("app").with_routes(routes);
//! # Ok(()) }
//! ```

pub mod access_tokens;
pub mod attempts;
pub mod password;
pub mod rate_limit;
pub mod sessions;
pub mod ssh_keys;
pub mod tokens;
pub mod users;
pub mod validation;

use axum::Router;
use axum::extract::{FromRef, State};
use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum_extra::extract::SignedCookieJar;
use axum_extra::extract::cookie::{Cookie, Key, SameSite};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};

use subtle::ConstantTimeEq as _;

use crate::api::{ApiError, ApiJson, ApiPath, ErrorBody};
use crate::config::SessionConfig;
use crate::db::Database;
use crate::queue::Queue;
use crate::redis::Redis;
pub use access_tokens::Scope;
pub use users::{User, UserRecord};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Who is calling, and how they proved it.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The user.
    pub user: UserRecord,
    /// The credential they presented.
    pub credential: Credential,
}

/// How a caller authenticated.
#[derive(Clone, Debug)]
pub enum Credential {
    /// A session cookie (a browser).
    Session(sessions::Session),
    /// A personal access token with these scopes.
    Token(Vec<Scope>),
}

impl Caller {
    /// Refuses a caller whose address is not verified yet (403, saying so). An unverified
    /// account may sign in, read what any signed-in user may, verify its address (or ask for the
    /// mail again) and change its password; it may not create access tokens, add SSH keys, or
    /// create or fork repositories, so an address nobody proved to own holds nothing.
    ///
    /// # Errors
    ///
    /// [`ApiError::Forbidden`] for an unverified address.
    pub fn require_verified(&self) -> Result<(), ApiError> {
        if self.user.email_verified_at.is_some() {
            Ok(())
        } else {
            Err(ApiError::Forbidden {
                message: "verify your email address first: follow the link in the mail we sent \
                          (POST /api/auth/verify-email/resend sends it again)"
                    .to_owned(),
            })
        }
    }

    /// Returns whether the credential allows `scope`: sessions allow everything their user may
    /// do; tokens only what their scopes grant.
    pub fn allows(&self, scope: Scope) -> bool {
        match &self.credential {
            Credential::Session(_) => true,
            Credential::Token(scopes) => scopes.iter().any(|s| s.grants(scope)),
        }
    }
}

/// The queue stream account mail is published to.
pub const MAIL_STREAM: &str = "mail";

/// A mail the accounts ask to be sent, published to [`MAIL_STREAM`]; the email worker renders
/// and sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AccountMail {
    /// "Confirm your address": carries the token `POST /api/auth/verify-email` takes.
    VerifyEmail {
        /// The user.
        user_id: i64,
        /// Their name, for the greeting.
        username: String,
        /// The address to verify.
        to: String,
        /// The single-use token.
        token: String,
    },
    /// "Choose a new password": carries the token `POST /api/auth/password-reset/confirm` takes.
    ResetPassword {
        /// The user.
        user_id: i64,
        /// Their name, for the greeting.
        username: String,
        /// Their address.
        to: String,
        /// The single-use token.
        token: String,
    },
    /// "You already have an account": someone registered with an address that belongs to an
    /// account (the registration is answered as if it had worked, so it reveals nothing).
    AccountExists {
        /// The user the address belongs to.
        user_id: i64,
        /// Their name, to sign in with.
        username: String,
        /// Their address.
        to: String,
    },
}

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
    queue: Queue,
    key: Key,
    cookie_secure: bool,
    namespace: String,
    trusted_proxies: Vec<ipnet::IpNet>,
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
        queue: Queue,
        session: &SessionConfig,
    ) -> Result<Self, AccountsError> {
        let secret = session.secret.expose_secret().as_bytes();
        if secret.len() < crate::config::MIN_SESSION_SECRET_BYTES {
            return Err(AccountsError::SecretTooShort);
        }
        Ok(Self {
            database,
            redis,
            queue,
            key: Key::derive_from(secret),
            cookie_secure: session.cookie_secure,
            namespace: "platform".to_owned(),
            trusted_proxies: session.trusted_proxies.clone(),
        })
    }

    /// Prepares accounts for a service that checks passwords, tokens and keys but never signs
    /// anyone in with a cookie (the git transports): its cookie key is random, so no session
    /// cookie from elsewhere is accepted.
    pub fn without_sessions(database: Database, redis: Redis, queue: Queue) -> Self {
        Self {
            database,
            redis,
            queue,
            key: Key::generate(),
            cookie_secure: true,
            namespace: "platform".to_owned(),
            trusted_proxies: Vec::new(),
        }
    }

    /// Sets the proxies whose `X-Forwarded-For` names the client (see [`client_address`]), for
    /// the per-address attempt limits.
    #[must_use]
    pub fn with_trusted_proxies(mut self, proxies: Vec<ipnet::IpNet>) -> Self {
        self.trusted_proxies = proxies;
        self
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
        drop(conn);
        let current = sessions::credential_of(&user.password_hash);
        if !bool::from(current.as_bytes().ct_eq(session.credential.as_bytes())) {
            // Signed in with a password that has changed since.
            sessions::delete(&self.redis, &self.namespace, &session.id)
                .await
                .map_err(ApiError::internal)?;
            return Err(ApiError::Unauthenticated);
        }
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
        check_csrf(&session, headers)?;
        Ok((user, session))
    }

    /// Authenticates a request by `Authorization: Bearer <token>` or, without that header, by
    /// its session cookie.
    ///
    /// # Errors
    ///
    /// 401 when the token or session is missing or invalid.
    pub async fn authenticate(
        &self,
        jar: &SignedCookieJar,
        headers: &HeaderMap,
    ) -> Result<Caller, ApiError> {
        let Some(authorization) = headers.get(axum::http::header::AUTHORIZATION) else {
            let (user, session) = self.current_user(jar).await?;
            return Ok(Caller { user, credential: Credential::Session(session) });
        };
        let token = authorization
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthenticated)?;
        let mut conn = self.database.get().await.map_err(ApiError::internal)?;
        let (user_id, scopes) = access_tokens::authenticate(&mut conn, token.trim())
            .await
            .map_err(ApiError::internal)?
            .ok_or(ApiError::Unauthenticated)?;
        let user = users::find_by_id(&mut conn, user_id)
            .await
            .map_err(ApiError::internal)?
            .ok_or(ApiError::Unauthenticated)?;
        Ok(Caller { user, credential: Credential::Token(scopes) })
    }

    /// Like [`Accounts::authenticate`], for routes open to anonymous callers: `None` when the
    /// request carries neither a token nor a live session (a stale session cookie counts as
    /// none, so a signed-out browser can still read public things).
    ///
    /// # Errors
    ///
    /// 401 for an invalid token.
    pub async fn authenticate_optional(
        &self,
        jar: &SignedCookieJar,
        headers: &HeaderMap,
    ) -> Result<Option<Caller>, ApiError> {
        if headers.contains_key(axum::http::header::AUTHORIZATION) {
            return self.authenticate(jar, headers).await.map(Some);
        }
        match self.current_user(jar).await {
            Ok((user, session)) => {
                Ok(Some(Caller { user, credential: Credential::Session(session) }))
            }
            Err(ApiError::Unauthenticated) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Returns the database the accounts live in.
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Returns the queue account mail is published to, for routes built on the accounts that
    /// publish jobs of their own.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Authenticates a write needing `scope`: a token must grant it; a session must send its
    /// CSRF token.
    ///
    /// # Errors
    ///
    /// 401 without valid credentials; 403 for a missing scope or CSRF token.
    pub async fn authorize_write(
        &self,
        jar: &SignedCookieJar,
        headers: &HeaderMap,
        scope: Scope,
    ) -> Result<Caller, ApiError> {
        let caller = self.authenticate(jar, headers).await?;
        match &caller.credential {
            Credential::Session(session) => check_csrf(session, headers).map(|()| caller),
            Credential::Token(_) if caller.allows(scope) => Ok(caller),
            Credential::Token(_) => Err(ApiError::Forbidden {
                message: format!("this token lacks the {} scope", scope.as_str()),
            }),
        }
    }

    /// Authenticates a read needing `scope` (for tokens; sessions may read what their user may).
    ///
    /// # Errors
    ///
    /// 401 without valid credentials; 403 for a missing scope.
    pub async fn authorize_read(
        &self,
        jar: &SignedCookieJar,
        headers: &HeaderMap,
        scope: Scope,
    ) -> Result<Caller, ApiError> {
        let caller = self.authenticate(jar, headers).await?;
        if caller.allows(scope) {
            Ok(caller)
        } else {
            Err(ApiError::Forbidden {
                message: format!("this token lacks the {} scope", scope.as_str()),
            })
        }
    }

    /// Issues a verification token for `user` and queues the mail that carries it.
    async fn send_verification(
        &self,
        conn: &mut diesel_async::AsyncPgConnection,
        user: &UserRecord,
    ) -> Result<(), ApiError> {
        let token = tokens::issue(conn, user.id, tokens::Purpose::VerifyEmail)
            .await
            .map_err(ApiError::internal)?;
        let mail = AccountMail::VerifyEmail {
            user_id: user.id,
            username: user.username.clone(),
            to: user.email.clone(),
            token,
        };
        self.queue.publish(MAIL_STREAM, &mail).await.map_err(ApiError::internal)?;
        Ok(())
    }

    /// Hashes `password` off the async threads.
    async fn hash_password(password: String) -> Result<String, ApiError> {
        tokio::task::spawn_blocking(move || password::hash(&password))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| ApiError::Internal(e.to_string().into()))
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

/// Returns the client's address: the peer's, unless the peer is a trusted proxy; then the
/// nearest address in `X-Forwarded-For` that is not a trusted proxy (the entries further left
/// were written by the client itself, and could be anything).
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |address: &IpAddr| trusted.iter().any(|network| network.contains(address));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    let mut client = peer;
    for entry in forwarded.iter().rev() {
        let Ok(address) = entry.parse::<IpAddr>() else {
            break;
        };
        client = address;
        if !is_trusted(&address) {
            break;
        }
    }
    client
}

/// Checks that a cookie-authenticated write carries its session's CSRF token.
fn check_csrf(session: &sessions::Session, headers: &HeaderMap) -> Result<(), ApiError> {
    let sent = headers.get(CSRF_HEADER).map(HeaderValue::as_bytes).unwrap_or_default();
    if bool::from(sent.ct_eq(session.csrf_token.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::Forbidden {
            message: format!(
                "missing or wrong {CSRF_HEADER} header for a cookie-authenticated write"
            ),
        })
    }
}

fn time_duration(duration: std::time::Duration) -> cookie::time::Duration {
    cookie::time::Duration::seconds(i64::try_from(duration.as_secs()).unwrap_or(i64::MAX))
}

/// The account routes (see the module docs), with their OpenAPI description.
pub fn api(accounts: Accounts) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(current_session))
        .routes(routes!(verify_email))
        .routes(routes!(resend_verification))
        .routes(routes!(request_password_reset))
        .routes(routes!(confirm_password_reset))
        .routes(routes!(change_password))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(list_keys, add_key))
        .routes(routes!(delete_key))
        .routes(routes!(me))
        .with_state(accounts)
}

/// The account routes (see the module docs).
pub fn router(accounts: Accounts) -> Router {
    api(accounts).split_for_parts().0
}

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
async fn register(
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

/// A valid argon2id hash of a random string, verified against when the login names nobody, so
/// that unknown and known accounts take the same time to refuse.
pub(crate) const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$TzjAeBNBHJvDUqWSQq4JNDDqoBKbahdLxjP8VNXiHYw";

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
async fn login(
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
async fn current_session(
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

#[utoipa::path(
    get,
    path = "/api/user",
    tag = "accounts",
    responses(
        (status = 200, description = "The signed-in user", body = User),
        (status = 401, description = "No valid session or token", body = ErrorBody)
    )
)]
async fn me(
    State(accounts): State<Accounts>,
    headers: HeaderMap,
    jar: SignedCookieJar,
) -> Result<axum::Json<User>, ApiError> {
    let caller = accounts.authenticate(&jar, &headers).await?;
    Ok(axum::Json(User::from(&caller.user)))
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
async fn verify_email(
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
async fn resend_verification(
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
async fn request_password_reset(
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
async fn confirm_password_reset(
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
async fn change_password(
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

/// Checks the name a user gives a token or key: 1 to 100 characters once trimmed.
fn label(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid("name", "name must have 1 to 100 characters"));
    }
    Ok(name)
}

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
async fn create_token(
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
async fn list_tokens(
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
async fn revoke_token(
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
async fn add_key(
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
async fn list_keys(
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
async fn delete_key(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_nearest_untrusted_address_behind_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> =
            vec!["10.0.0.0/8".parse().expect("cidr"), "192.0.2.1/32".parse().expect("cidr")];
        let headers = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("x-forwarded-for", HeaderValue::from_str(value).expect("header"));
            headers
        };
        let ip = |text: &str| text.parse::<IpAddr>().expect("address");
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(
            client_address(ip("203.0.113.9"), &headers("1.2.3.4"), &trusted),
            ip("203.0.113.9")
        );
        // Behind the ingress: the address the ingress saw.
        assert_eq!(
            client_address(ip("10.1.2.3"), &headers("203.0.113.7"), &trusted),
            ip("203.0.113.7")
        );
        // A client-forged entry further left is ignored; chained trusted proxies are skipped.
        assert_eq!(
            client_address(ip("10.1.2.3"), &headers("6.6.6.6, 203.0.113.7, 192.0.2.1"), &trusted),
            ip("203.0.113.7")
        );
        // Garbage stops the walk at the last address a trusted proxy vouched for.
        assert_eq!(client_address(ip("10.1.2.3"), &headers("nonsense"), &trusted), ip("10.1.2.3"));
        assert_eq!(client_address(ip("10.1.2.3"), &HeaderMap::new(), &trusted), ip("10.1.2.3"));
        assert_eq!(client_address(ip("10.1.2.3"), &headers("203.0.113.7"), &[]), ip("10.1.2.3"));
    }

    #[test]
    fn the_dummy_hash_is_a_real_argon2id_hash_so_unknown_logins_cost_a_full_verification() {
        let parsed =
            argon2::password_hash::PasswordHash::new(DUMMY_HASH).expect("a valid PHC string");
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        assert!(!password::verify("anything", DUMMY_HASH));
    }
}
