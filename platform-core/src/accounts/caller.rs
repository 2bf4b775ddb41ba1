//! Who is calling: the [`Caller`] a request's credentials stand for, the CSRF check of
//! cookie-authenticated writes, and the client address behind trusted proxies.

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderValue};
use subtle::ConstantTimeEq as _;

use super::{Scope, UserRecord, sessions};
use crate::api::ApiError;

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

/// The header that carries the CSRF token of cookie-authenticated writes.
pub const CSRF_HEADER: &str = "x-csrf-token";

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
pub(super) fn check_csrf(session: &sessions::Session, headers: &HeaderMap) -> Result<(), ApiError> {
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
}
