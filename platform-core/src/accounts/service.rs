//! The [`Accounts`] service: the state of the account routes, and how requests are
//! authenticated and authorized.

use axum::extract::FromRef;
use axum::http::HeaderMap;
use axum_extra::extract::SignedCookieJar;
use axum_extra::extract::cookie::{Cookie, Key, SameSite};
use secrecy::ExposeSecret as _;
use subtle::ConstantTimeEq as _;

use super::caller::check_csrf;
use super::{
    AccountMail, Caller, Credential, MAIL_STREAM, Scope, UserRecord, access_tokens, password,
    sessions, tokens, users,
};
use crate::api::ApiError;
use crate::config::SessionConfig;
use crate::db::Database;
use crate::queue::Queue;
use crate::redis::Redis;

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
    pub(super) database: Database,
    pub(super) redis: Redis,
    pub(super) queue: Queue,
    key: Key,
    cookie_secure: bool,
    pub(super) namespace: String,
    pub(super) trusted_proxies: Vec<ipnet::IpNet>,
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
    ///
    /// [`client_address`]: super::client_address
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
    pub(super) async fn send_verification(
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
    pub(super) async fn hash_password(password: String) -> Result<String, ApiError> {
        tokio::task::spawn_blocking(move || password::hash(&password))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| ApiError::Internal(e.to_string().into()))
    }

    pub(super) fn session_cookie(&self, id: String) -> Cookie<'static> {
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
