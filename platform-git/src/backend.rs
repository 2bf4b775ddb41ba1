//! What a program that serves git provides: who a credential belongs to, what an identity may do
//! to a repository, where repositories live on disk, and what happens after a push.
//!
//! The transports ([`crate::http`], [`crate::ssh`]) know nothing of databases: they ask these
//! four traits, through [`GitService`](crate::transport::GitService). Each has a ready
//! implementation for two kinds of host:
//!
//! | seam | a program with its own users | the platform's services |
//! |---|---|---|
//! | [`Authenticator`] | [`LocalUsers`](crate::local::LocalUsers) (a file, or code) | the accounts of `platform-core` (`postgres`) |
//! | [`RepoAccess`] | [`LocalUsers`](crate::local::LocalUsers)' grants | repository records and collaborators (`postgres`) |
//! | [`RepoLocator`] | [`RepoStore`](crate::store::RepoStore), `{root}/{owner}/{name}.git` | the same |
//! | [`PushSink`] | a callback ([`GitServiceBuilder::on_push`](crate::transport::GitServiceBuilder::on_push)) | the outbox and the durable queue (`postgres`) |
//!
//! The traits are object-safe (their methods are `async` through
//! [`async_trait`](https://docs.rs/async-trait)), so a service holds them as `Arc<dyn …>` and
//! its type does not change with the host. Failures of the host are a [`BoxError`]: the
//! transports log them and answer "internal error", never showing them to a client.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::events::PushEvent;
use crate::permissions::Access;
use crate::protection::ProtectedBranch;

/// A failure of the host's identity or repository lookups.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A user a credential named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitUser {
    /// The user's id in the host's records (0 where the host keeps none); push events carry it.
    pub id: i64,
    /// The user name, as push events and logs show it.
    pub username: String,
    /// Whether the user administers the whole server (every repository is theirs to change).
    pub is_admin: bool,
}

/// Who is asking, once their transport has checked their credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// Nobody in particular.
    Anonymous,
    /// A user.
    User {
        /// The user.
        user: GitUser,
        /// The most the credential allows, whatever the user may do: `Some(Access::Read)` for a
        /// read-only token, `None` for a password, an SSH key or a token without limits.
        ceiling: Option<Access>,
    },
}

impl Identity {
    /// The user, unless anonymous.
    pub fn user(&self) -> Option<&GitUser> {
        match self {
            Self::Anonymous => None,
            Self::User { user, .. } => Some(user),
        }
    }
}

/// The outcome of checking a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignIn {
    /// The credential is good: this is who presented it.
    Valid(Identity),
    /// Wrong, unknown or revoked: the client is asked again.
    Invalid,
    /// Too many failures from this client or for this account: try again after this long.
    Limited(Duration),
}

/// Who a credential belongs to.
///
/// Implementations decide what counts as a failure and how many are allowed; the transports
/// only report what they saw. The address methods have defaults that limit nothing, for hosts
/// that keep no counts.
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Checks HTTP Basic credentials: a login (user name or address, as the host allows) with
    /// a password or an access token, from the client at `client`.
    async fn basic(&self, login: &str, secret: &str, client: IpAddr) -> Result<SignIn, BoxError>;

    /// Finds the user whose SSH public key has the SHA256 fingerprint `fingerprint` (as
    /// `ssh-keygen -l` prints it, `SHA256:…`), offered from `client`.
    async fn public_key(
        &self,
        fingerprint: &str,
        client: IpAddr,
    ) -> Result<Option<GitUser>, BoxError>;

    /// How long `client` must wait before it may try a key again, if it is over its limit.
    async fn address_limited(&self, client: IpAddr) -> Result<Option<Duration>, BoxError> {
        let _ = client;
        Ok(None)
    }

    /// Counts one failed sign-in of `client` (an SSH connection that offered an unknown key).
    async fn record_address_failure(&self, client: IpAddr) -> Result<(), BoxError> {
        let _ = client;
        Ok(())
    }

    /// Takes back the failure counted for `client` by [`record_address_failure`], once the same
    /// connection got in with another key.
    ///
    /// [`record_address_failure`]: Authenticator::record_address_failure
    async fn forgive_address_failure(&self, client: IpAddr) -> Result<(), BoxError> {
        let _ = client;
        Ok(())
    }

    /// The address of the client behind an HTTP request from `peer`: `peer` itself unless the
    /// host trusts a proxy there to say (`X-Forwarded-For`).
    fn client_address(&self, peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
        let _ = headers;
        peer
    }
}

/// A repository as the transports know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitRepository {
    /// Its id in the host's records (0 where the host keeps none); push events carry it.
    pub id: i64,
    /// The owner's name, as spelled in its path.
    pub owner: String,
    /// The repository's name, without `.git`.
    pub name: String,
}

/// What an identity may do to a repository.
#[async_trait::async_trait]
pub trait RepoAccess: Send + Sync + 'static {
    /// Finds `owner/name` and what `user` (`None` for anonymous) may do to it; `None` when it
    /// does not exist or must look as if it did not.
    async fn access(
        &self,
        owner: &str,
        name: &str,
        user: Option<&GitUser>,
    ) -> Result<Option<(GitRepository, Access)>, BoxError>;

    /// The branch protection rules of `repository`, applied to every push; none by default.
    async fn protected_branches(
        &self,
        repository: &GitRepository,
    ) -> Result<Vec<ProtectedBranch>, BoxError> {
        let _ = repository;
        Ok(Vec::new())
    }
}

/// Where repositories live on disk.
pub trait RepoLocator: Send + Sync + 'static {
    /// The bare repository of `repository`.
    ///
    /// # Errors
    ///
    /// Fails when the names cannot name a directory.
    fn locate(&self, repository: &GitRepository) -> Result<PathBuf, BoxError>;

    /// The directories whose paths git's messages must never show a client.
    fn private_roots(&self) -> Vec<PathBuf>;
}

/// What happens after a push moved refs: called once per push, after git exited.
///
/// Implementations should not take long: a client's `git push` waits for it.
#[async_trait::async_trait]
pub trait PushSink: Send + Sync + 'static {
    /// `event` happened to the repository at `path`.
    async fn pushed(&self, event: PushEvent, path: &Path);
}

/// A sink that drops every event.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPushSink;

#[async_trait::async_trait]
impl PushSink for NoPushSink {
    async fn pushed(&self, _event: PushEvent, _path: &Path) {}
}

/// A sink that calls a function with each event (see
/// [`GitServiceBuilder::on_push`](crate::transport::GitServiceBuilder::on_push)).
#[derive(Clone, Copy)]
pub struct PushCallback<F>(pub F);

impl<F> std::fmt::Debug for PushCallback<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PushCallback")
    }
}

#[async_trait::async_trait]
impl<F> PushSink for PushCallback<F>
where
    F: Fn(PushEvent) + Send + Sync + 'static,
{
    async fn pushed(&self, event: PushEvent, _path: &Path) {
        (self.0)(event);
    }
}

/// Events sent on a channel, for a program that handles them in a task of its own.
#[async_trait::async_trait]
impl PushSink for tokio::sync::mpsc::UnboundedSender<PushEvent> {
    async fn pushed(&self, event: PushEvent, _path: &Path) {
        if self.send(event).is_err() {
            tracing::warn!("push event dropped: its receiver is gone");
        }
    }
}
