//! The platform's own implementation of the [`backend`](crate::backend) traits: the accounts of
//! `platform-core` (passwords, access tokens, SSH keys, sign-in limits in Redis), repository
//! records and collaborators in PostgreSQL, and the push-event outbox feeding the durable queue.
//!
//! [`GitService::new`](crate::transport::GitService::new) puts them together as `gitserver`
//! runs them.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use platform_core::accounts::attempts::Verdict;
use platform_core::accounts::{Accounts, Scope, UserRecord, ssh_keys, users};
use platform_core::db::Database;

use crate::backend::{
    Authenticator, BoxError, GitRepository, GitUser, Identity, PushSink, RepoAccess, SignIn,
};
use crate::events::{PushEvent, PushEvents};
use crate::permissions::{self, Access};
use crate::protection::{self, ProtectedBranch};
use crate::records::{self, Viewer};

fn git_user(user: &UserRecord) -> GitUser {
    GitUser { id: user.id, username: user.username.clone(), is_admin: user.is_admin }
}

/// The most a token with `scopes` may do over git: `repo:read` reads, `repo:write` and `admin`
/// also push.
fn ceiling(scopes: &[Scope]) -> Access {
    if scopes.iter().any(|scope| scope.grants(Scope::RepoWrite)) {
        Access::Owner
    } else {
        Access::Read
    }
}

/// Credentials checked against the platform's accounts, under their sign-in limits.
#[derive(Clone, Debug)]
pub struct AccountsAuthenticator {
    accounts: Accounts,
}

impl AccountsAuthenticator {
    /// Checks credentials against `accounts`.
    pub fn new(accounts: Accounts) -> Self {
        Self { accounts }
    }
}

#[async_trait::async_trait]
impl Authenticator for AccountsAuthenticator {
    async fn basic(&self, login: &str, secret: &str, client: IpAddr) -> Result<SignIn, BoxError> {
        Ok(match self.accounts.authenticate_basic(login, secret, client).await? {
            Verdict::Valid((user, scopes)) => {
                if scopes.as_ref().is_some_and(|scopes| scopes.is_empty()) {
                    // A token that grants nothing cannot be used for git at all.
                    return Ok(SignIn::Invalid);
                }
                SignIn::Valid(Identity::User {
                    user: git_user(&user),
                    ceiling: scopes.as_deref().map(ceiling),
                })
            }
            Verdict::Invalid => SignIn::Invalid,
            Verdict::Limited(wait) => SignIn::Limited(wait),
        })
    }

    async fn public_key(
        &self,
        fingerprint: &str,
        _client: IpAddr,
    ) -> Result<Option<GitUser>, BoxError> {
        let mut conn = self.accounts.database().get().await?;
        let Some(id) = ssh_keys::owner_of(&mut conn, fingerprint).await? else {
            return Ok(None);
        };
        Ok(users::find_by_id(&mut conn, id).await?.as_ref().map(git_user))
    }

    async fn address_limited(&self, client: IpAddr) -> Result<Option<Duration>, BoxError> {
        Ok(self.accounts.address_limited(client).await?)
    }

    async fn record_address_failure(&self, client: IpAddr) -> Result<(), BoxError> {
        Ok(self.accounts.record_address_failure(client).await?)
    }

    async fn forgive_address_failure(&self, client: IpAddr) -> Result<(), BoxError> {
        Ok(self.accounts.forgive_address_failure(client).await?)
    }

    fn client_address(&self, peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
        self.accounts.client_address(peer, headers)
    }
}

/// Permissions from the repository records: visibility, ownership, collaborators, platform
/// administrators (see [`crate::permissions`]), and branch protection rules.
#[derive(Clone, Debug)]
pub struct RecordsAccess {
    database: Database,
}

impl RecordsAccess {
    /// Reads the records in `database`.
    pub fn new(database: Database) -> Self {
        Self { database }
    }
}

#[async_trait::async_trait]
impl RepoAccess for RecordsAccess {
    async fn access(
        &self,
        owner: &str,
        name: &str,
        user: Option<&GitUser>,
    ) -> Result<Option<(GitRepository, Access)>, BoxError> {
        let mut conn = self.database.get().await?;
        let Some(record) = records::find(&mut conn, owner, name).await? else {
            return Ok(None);
        };
        let viewer = user.map(|user| Viewer { user_id: user.id, is_admin: user.is_admin });
        let access = permissions::access_for(&mut conn, &record, viewer).await?;
        let repository = GitRepository { id: record.id, owner: record.owner, name: record.name };
        Ok(access.map(|access| (repository, access)))
    }

    async fn protected_branches(
        &self,
        repository: &GitRepository,
    ) -> Result<Vec<ProtectedBranch>, BoxError> {
        let mut conn = self.database.get().await?;
        Ok(protection::list(&mut conn, repository.id).await?)
    }
}

/// Each push recorded in the outbox and published to the durable queue
/// ([`PushEvents::record`]), with the repository's size and push time in its record.
#[derive(Clone, Debug)]
pub struct OutboxSink {
    events: PushEvents,
    database: Database,
}

impl OutboxSink {
    /// Records events with `events` and sizes in `database`.
    pub fn new(events: PushEvents, database: Database) -> Self {
        Self { events, database }
    }
}

#[async_trait::async_trait]
impl PushSink for OutboxSink {
    async fn pushed(&self, event: PushEvent, path: &Path) {
        if let Err(error) = self.events.record(&event).await {
            tracing::error!(error = %error, "push event not recorded");
        }
        let path = path.to_owned();
        let size = tokio::task::spawn_blocking(move || disk_usage(&path)).await.unwrap_or(0);
        match self.database.get().await {
            Ok(mut conn) => {
                if let Err(error) = records::record_push(&mut conn, event.repository_id, size).await
                {
                    tracing::warn!(error = %error, "cannot record the repository's size");
                }
            }
            Err(error) => tracing::warn!(error = %error, "cannot record the repository's size"),
        }
    }
}

/// The bytes of every file under `path`.
fn disk_usage(path: &Path) -> i64 {
    let mut total: u64 = 0;
    let mut pending = vec![path.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => pending.push(entry.path()),
                Ok(meta) => total += meta.len(),
                Err(_) => {}
            }
        }
    }
    i64::try_from(total).unwrap_or(i64::MAX)
}
