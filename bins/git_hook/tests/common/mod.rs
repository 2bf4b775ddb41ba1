//! A deployment for one test: PostgreSQL, a Redis and a NATS of its own, repositories on disk,
//! and the services as real processes.

// Each suite uses its own part of this.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hmac::{Hmac, Mac};
use platform_core::accounts::{Scope, password, ssh_keys};
use platform_core::db::{CORE_MIGRATIONS, Database};
use platform_git::records::{self, NewRepo};
use platform_git::store::RepoStore;
use platform_test_support::{
    Broker, BrokerKind, Received, ServiceProcess, free_port, migrated_database, unique_name,
    unverified_user, verified_user, wait_for_status, workspace_binary,
};
use sha2::Sha256;

pub(crate) const GIT_HOOK: &str = env!("CARGO_BIN_EXE_git_hook");
pub(crate) const DOMAIN: &str = "http://forge.test";
pub(crate) const SECRET: &str = "It's a Secret to Everybody";

/// A user of the deployment.
#[derive(Clone, Debug)]
pub(crate) struct User {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) token: String,
    /// The private key `ssh -i` uses.
    pub(crate) key: PathBuf,
}

pub(crate) struct Deployment {
    pub(crate) database_url: String,
    pub(crate) database: Database,
    pub(crate) redis: Broker,
    pub(crate) nats: Broker,
    pub(crate) scratch: PathBuf,
    pub(crate) ssh_port: u16,
    host_key_hex: String,
}

impl Deployment {
    pub(crate) async fn new() -> anyhow::Result<Self> {
        let (database_url, database) =
            migrated_database([CORE_MIGRATIONS, platform_git::GIT_MIGRATIONS]).await?;
        let scratch = std::env::temp_dir().join(unique_name("git-hook"));
        std::fs::create_dir_all(scratch.join("repos"))?;
        let host_key = scratch.join("host_key");
        keygen(&host_key)?;
        Ok(Self {
            database_url,
            database,
            redis: Broker::start(BrokerKind::Redis)?,
            nats: Broker::start(BrokerKind::Nats)?,
            ssh_port: free_port(),
            host_key_hex: hex::encode(std::fs::read(&host_key)?),
            scratch,
        })
    }

    pub(crate) fn repos(&self) -> PathBuf {
        self.scratch.join("repos")
    }

    pub(crate) fn store(&self) -> RepoStore {
        RepoStore::new(self.repos())
    }

    /// What every service of the deployment starts with.
    pub(crate) fn env(&self) -> HashMap<String, String> {
        let dir = |name: &str| self.scratch.join(name).to_string_lossy().into_owned();
        HashMap::from([
            ("APP_DATABASE_URL".into(), self.database_url.clone()),
            ("APP_REDIS_URL".into(), self.redis.url()),
            ("NATS_URL".into(), self.nats.url()),
            ("APP_DOMAIN_URL".into(), DOMAIN.into()),
            ("APP_SESSION_SECRET".into(), "a-test-session-secret-of-at-least-32-bytes".into()),
            ("APP_REPOS_ROOT".into(), dir("repos")),
            ("APP_AVATAR_PATH".into(), dir("avatars")),
            ("STORAGE_PATH".into(), dir("files")),
            ("APP_AI_BASIC_URL".into(), "http://127.0.0.1:9/v1".into()),
            ("APP_AI_API_KEY".into(), "sk-test".into()),
            ("APP_SSH_SERVER_PRIVATE_KEY".into(), self.host_key_hex.clone()),
            ("APP_SSH_PORT".into(), self.ssh_port.to_string()),
            ("APP_WEBHOOK_ALLOWED_HOSTS".into(), "loopback".into()),
            ("APP_WEBHOOK_RETRY_SECONDS".into(), "1".into()),
        ])
    }

    pub(crate) async fn start(
        &self,
        binary: &Path,
        extra: &[(&str, String)],
    ) -> anyhow::Result<ServiceProcess> {
        let mut env = self.env();
        env.extend(extra.iter().map(|(name, value)| ((*name).to_owned(), value.clone())));
        let service = ServiceProcess::start(binary, &env).await?;
        wait_for_status(&service.url("/readyz"), 200, Duration::from_secs(60)).await?;
        Ok(service)
    }

    pub(crate) async fn git_hook(
        &self,
        extra: &[(&str, String)],
    ) -> anyhow::Result<ServiceProcess> {
        self.start(Path::new(GIT_HOOK), extra).await
    }

    pub(crate) async fn app(&self) -> anyhow::Result<ServiceProcess> {
        self.start(&workspace_binary("app"), &[]).await
    }

    pub(crate) async fn gitserver(&self) -> anyhow::Result<ServiceProcess> {
        self.start(&workspace_binary("gitserver"), &[]).await
    }

    /// A user with a verified address (unless `verified` is false), a token with every scope,
    /// and an SSH key.
    pub(crate) async fn user(&self, name: &str, verified: bool) -> anyhow::Result<User> {
        let hash = password::hash("correct horse battery")?;
        let scopes = [Scope::RepoRead, Scope::RepoWrite, Scope::Admin];
        let (id, token) = if verified {
            verified_user(&self.database, name, &hash, &scopes).await?
        } else {
            unverified_user(&self.database, name, &hash, &scopes).await?
        };
        let key = self.scratch.join(format!("{name}_key"));
        keygen(&key)?;
        let public = std::fs::read_to_string(key.with_extension("pub"))?;
        let parsed = ssh_keys::parse(public.trim()).map_err(anyhow::Error::msg)?;
        let mut conn = self.database.get().await?;
        ssh_keys::add(&mut conn, id, "laptop", &parsed).await?;
        Ok(User { id, name: name.to_owned(), token, key })
    }

    /// An empty repository of `owner`, whose default branch is `main`.
    pub(crate) async fn repo(
        &self,
        owner: &User,
        name: &str,
        private: bool,
    ) -> anyhow::Result<i64> {
        let mut conn = self.database.get().await?;
        let new = NewRepo {
            owner_id: owner.id,
            name,
            description: "",
            is_private: private,
            default_branch: "main",
            forked_from: None,
        };
        let record = records::insert(&mut conn, new).await?;
        self.store().create(&owner.name, name, "main").await?;
        Ok(record.id)
    }

    pub(crate) fn http_url(&self, gitserver: &ServiceProcess, user: &User, repo: &str) -> String {
        format!("http://{}:{}@{}/{repo}.git", user.name, user.token, gitserver.addr())
    }

    pub(crate) fn ssh_url(&self, repo: &str) -> String {
        format!("ssh://git@127.0.0.1:{}/{repo}.git", self.ssh_port)
    }

    pub(crate) fn ssh_command(&self, user: &User) -> String {
        format!(
            "ssh -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no \
             -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            user.key.display()
        )
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

fn keygen(path: &Path) -> anyhow::Result<()> {
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()?;
    anyhow::ensure!(status.success(), "ssh-keygen failed");
    Ok(())
}

/// Runs `git` in `cwd` and returns its standard output, trimmed.
pub(crate) fn git(cwd: &Path, args: &[&str]) -> anyhow::Result<String> {
    git_with(cwd, args, &[])
}

/// Runs `git` in `cwd` with extra environment variables.
pub(crate) fn git_with(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<String> {
    let output = std::process::Command::new("git")
        .args(args)
        .current_dir(cwd)
        .env("GIT_AUTHOR_NAME", "Ada Lovelace")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada Lovelace")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .envs(env.iter().copied())
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// Checks every signature of a request as a receiver would: GitHub's `X-Hub-Signature-256`,
/// Gitea's `X-Gitea-Signature` and Standard Webhooks' `webhook-signature`, over the exact body.
pub(crate) fn assert_signed(request: &Received, secret: &str) {
    use base64::Engine as _;
    let expected = hex::encode(hmac_sha256(secret.as_bytes(), &request.body));
    assert_eq!(request.header("x-hub-signature-256"), Some(format!("sha256={expected}").as_str()));
    assert_eq!(request.header("x-gitea-signature"), Some(expected.as_str()));
    let id = request.header("webhook-id").expect("webhook-id");
    let timestamp = request.header("webhook-timestamp").expect("webhook-timestamp");
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(&request.body);
    let standard =
        base64::engine::general_purpose::STANDARD.encode(hmac_sha256(secret.as_bytes(), &signed));
    let header = request.header("webhook-signature").expect("webhook-signature");
    assert!(
        header.split(' ').any(|signature| signature == format!("v1,{standard}")),
        "webhook-signature {header:?} does not verify"
    );
    assert_eq!(request.header("x-github-delivery"), Some(id));
}

/// The JSON body of a delivery.
pub(crate) fn json(request: &Received) -> serde_json::Value {
    serde_json::from_slice(&request.body).expect("a JSON body")
}

/// Calls `probe` every 50 ms until it answers `Some`, for at most `limit`.
pub(crate) async fn poll<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(found) = probe().await? {
            return Ok(found);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
