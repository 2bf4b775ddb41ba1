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

mod caller;
mod mail;
mod routes;
mod service;

use axum::Router;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use access_tokens::Scope;
pub use caller::{CSRF_HEADER, Caller, Credential, client_address};
pub use mail::{AccountMail, MAIL_STREAM};
pub use routes::auth::{
    LoginRequest, PasswordResetConfirmation, PasswordResetRequest, RegisterRequest, Registration,
    SessionResponse, TokenRequest,
};
pub use routes::keys::AddKey;
pub use routes::tokens::{CreateToken, CreatedToken, MAX_TOKEN_DAYS};
pub use routes::user::PasswordChange;
pub use service::{Accounts, AccountsError};
pub use users::{User, UserRecord};

/// The account routes (see the module docs), with their OpenAPI description.
pub fn api(accounts: Accounts) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(routes::auth::register))
        .routes(routes!(routes::auth::login))
        .routes(routes!(routes::auth::logout))
        .routes(routes!(routes::auth::current_session))
        .routes(routes!(routes::auth::verify_email))
        .routes(routes!(routes::auth::resend_verification))
        .routes(routes!(routes::auth::request_password_reset))
        .routes(routes!(routes::auth::confirm_password_reset))
        .routes(routes!(routes::user::change_password))
        .routes(routes!(routes::tokens::list_tokens, routes::tokens::create_token))
        .routes(routes!(routes::tokens::revoke_token))
        .routes(routes!(routes::keys::list_keys, routes::keys::add_key))
        .routes(routes!(routes::keys::delete_key))
        .routes(routes!(routes::user::me))
        .with_state(accounts)
}

/// The account routes (see the module docs).
pub fn router(accounts: Accounts) -> Router {
    api(accounts).split_for_parts().0
}
