//! The account routes' handlers, by resource: signing up and in ([`auth`]), the signed-in user
//! ([`user`]), their access tokens ([`tokens`]) and their SSH keys ([`keys`]).

use crate::api::ApiError;

pub(super) mod auth;
pub(super) mod keys;
pub(super) mod tokens;
pub(super) mod user;

/// Checks the name a user gives a token or key: 1 to 100 characters once trimmed.
fn label(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid("name", "name must have 1 to 100 characters"));
    }
    Ok(name)
}
