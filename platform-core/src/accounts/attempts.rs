//! Checking passwords and tokens under the attempt limits, the same everywhere: the API login,
//! git over HTTP and git over SSH count against one limit per account and one per client
//! address ([`rate_limit::PER_ACCOUNT`], [`rate_limit::PER_ADDRESS`]).
//!
//! A password attempt is counted before the password is verified and given back when it was
//! right, so simultaneous guesses cannot all pass a check that none of them has counted yet. A
//! name that belongs to nobody costs a full verification all the same (against a dummy hash),
//! so the time of an answer does not tell which names exist.
//!
//! A token is a 160-bit secret, not a guessable password: while the account is locked for
//! password guesses its tokens keep working (or anyone could lock a user's automation out), but
//! not from an address over its limit, and a wrong token counts as a failed attempt on both.

use std::net::IpAddr;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use super::{Accounts, Scope, UserRecord, access_tokens, password, rate_limit, users};
use crate::api::ApiError;

/// A valid argon2id hash of a random string, verified against when the login names nobody, so
/// that unknown and known accounts take the same time to refuse.
pub(crate) const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$TzjAeBNBHJvDUqWSQq4JNDDqoBKbahdLxjP8VNXiHYw";

/// What checking a credential found.
#[derive(Debug)]
pub enum Verdict<T> {
    /// The credential is right.
    Valid(T),
    /// The credential is wrong (or names nobody); the attempt was counted.
    Invalid,
    /// Too many failed attempts for the account or the address: try again after this long.
    /// The credential was not checked.
    Limited(Duration),
}

impl Accounts {
    /// The counter of failed attempts for the client address `client`.
    fn address_key(&self, client: IpAddr) -> String {
        format!("{}:ratelimit:login:address:{client}", self.namespace)
    }

    /// The counter of failed attempts for `user` when the login names one, else for the login
    /// itself (hashed, so the key never depends on what a client sent).
    fn account_key(&self, user: Option<&UserRecord>, login: &str) -> String {
        match user {
            Some(user) => format!("{}:ratelimit:login:account:{}", self.namespace, user.id),
            None => {
                let digest = hex::encode(Sha256::digest(login.to_lowercase().as_bytes()));
                format!("{}:ratelimit:login:unknown:{digest}", self.namespace)
            }
        }
    }

    /// Checks `password` for `login` (a user name or address) from `client`, under the limits.
    ///
    /// # Errors
    ///
    /// Fails when the database or Redis does.
    pub async fn check_password(
        &self,
        login: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<Verdict<UserRecord>, ApiError> {
        let mut conn = self.database.get().await.map_err(ApiError::internal)?;
        let user = users::find_by_login(&mut conn, login).await.map_err(ApiError::internal)?;
        drop(conn);
        let (account, address) = (self.account_key(user.as_ref(), login), self.address_key(client));
        let limits = [
            (account.as_str(), rate_limit::PER_ACCOUNT),
            (address.as_str(), rate_limit::PER_ADDRESS),
        ];
        if let Some(wait) =
            rate_limit::count_attempt(&self.redis, &limits).await.map_err(ApiError::internal)?
        {
            tracing::warn!(%client, "sign-in attempts limited");
            return Ok(Verdict::Limited(wait));
        }
        let stored =
            user.as_ref().map_or_else(|| DUMMY_HASH.to_owned(), |u| u.password_hash.clone());
        let password = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || password::verify(&password, &stored))
            .await
            .map_err(ApiError::internal)?;
        match user {
            Some(user) if matches => {
                rate_limit::attempt_succeeded(&self.redis, &account, &address)
                    .await
                    .map_err(ApiError::internal)?;
                Ok(Verdict::Valid(user))
            }
            _ => Ok(Verdict::Invalid),
        }
    }

    /// Checks git-over-HTTP credentials from `client`: a user name (or address) with either the
    /// password or one of the user's access tokens, under the limits. A valid answer holds the
    /// user and, for a token, its scopes.
    ///
    /// # Errors
    ///
    /// Fails when the database or Redis does.
    pub async fn authenticate_basic(
        &self,
        login: &str,
        secret: &str,
        client: IpAddr,
    ) -> Result<Verdict<(UserRecord, Option<Vec<Scope>>)>, ApiError> {
        if !secret.starts_with(access_tokens::TOKEN_PREFIX) {
            return Ok(match self.check_password(login, secret, client).await? {
                Verdict::Valid(user) => Verdict::Valid((user, None)),
                Verdict::Invalid => Verdict::Invalid,
                Verdict::Limited(wait) => Verdict::Limited(wait),
            });
        }
        let address = self.address_key(client);
        if let Some(wait) = rate_limit::blocked_for(&self.redis, &address, rate_limit::PER_ADDRESS)
            .await
            .map_err(ApiError::internal)?
        {
            tracing::warn!(%client, "sign-in attempts limited");
            return Ok(Verdict::Limited(wait));
        }
        let mut conn = self.database.get().await.map_err(ApiError::internal)?;
        let user = users::find_by_login(&mut conn, login).await.map_err(ApiError::internal)?;
        let owner =
            access_tokens::authenticate(&mut conn, secret).await.map_err(ApiError::internal)?;
        drop(conn);
        match (user, owner) {
            (Some(user), Some((owner, scopes))) if owner == user.id => {
                Ok(Verdict::Valid((user, Some(scopes))))
            }
            (user, _) => {
                let account = self.account_key(user.as_ref(), login);
                for (key, limit) in
                    [(&account, rate_limit::PER_ACCOUNT), (&address, rate_limit::PER_ADDRESS)]
                {
                    rate_limit::record_failure(&self.redis, key, limit)
                        .await
                        .map_err(ApiError::internal)?;
                }
                Ok(Verdict::Invalid)
            }
        }
    }

    /// How long `client` must wait before trying credentials again, if it is over the
    /// per-address limit (for transports that count failures themselves, such as SSH keys).
    ///
    /// # Errors
    ///
    /// Fails when Redis does.
    pub async fn address_limited(&self, client: IpAddr) -> Result<Option<Duration>, ApiError> {
        rate_limit::blocked_for(&self.redis, &self.address_key(client), rate_limit::PER_ADDRESS)
            .await
            .map_err(ApiError::internal)
    }

    /// Counts one failed attempt against the address `client`.
    ///
    /// # Errors
    ///
    /// Fails when Redis does.
    pub async fn record_address_failure(&self, client: IpAddr) -> Result<(), ApiError> {
        rate_limit::record_failure(&self.redis, &self.address_key(client), rate_limit::PER_ADDRESS)
            .await
            .map_err(ApiError::internal)
    }

    /// Counts a request from `client` that would mail account `user_id` (a password reset, or
    /// a registration with its address) and says whether the mail may go: at most
    /// [`rate_limit::RESETS_PER_ACCOUNT`] per account and [`rate_limit::MAILS_PER_ADDRESS`]
    /// requests per address, those naming no account included.
    ///
    /// # Errors
    ///
    /// Fails when Redis does.
    pub async fn account_mail_allowed(
        &self,
        client: IpAddr,
        user_id: Option<i64>,
    ) -> Result<bool, ApiError> {
        let address = format!("{}:ratelimit:mail:address:{client}", self.namespace);
        let account = user_id.map(|id| format!("{}:ratelimit:reset:account:{id}", self.namespace));
        let mut limits = vec![(address.as_str(), rate_limit::MAILS_PER_ADDRESS)];
        if let Some(account) = &account {
            limits.push((account.as_str(), rate_limit::RESETS_PER_ACCOUNT));
        }
        let wait =
            rate_limit::count_attempt(&self.redis, &limits).await.map_err(ApiError::internal)?;
        Ok(wait.is_none())
    }

    /// Takes one failed attempt back from the address `client` (after a connection counted as
    /// failed got in after all).
    ///
    /// # Errors
    ///
    /// Fails when Redis does.
    pub async fn forgive_address_failure(&self, client: IpAddr) -> Result<(), ApiError> {
        rate_limit::give_back(&self.redis, &self.address_key(client))
            .await
            .map_err(ApiError::internal)
    }

    /// The client's address for a request from `peer` with `headers` (see
    /// [`super::client_address`]), with this deployment's trusted proxies.
    pub fn client_address(&self, peer: IpAddr, headers: &axum::http::HeaderMap) -> IpAddr {
        super::client_address(peer, headers, &self.trusted_proxies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dummy_hash_is_a_real_argon2id_hash_so_unknown_logins_cost_a_full_verification() {
        let parsed =
            argon2::password_hash::PasswordHash::new(DUMMY_HASH).expect("a valid PHC string");
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        assert!(!password::verify("anything", DUMMY_HASH));
    }
}
