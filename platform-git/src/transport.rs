//! What git over HTTP (`crate::http`) and over SSH (`crate::ssh`) share: one implementation of
//! who may do what, of the push policy, and of what follows a push, on the host's
//! [`backend`](crate::backend) traits.
//!
//! A transport turns its credentials into an [`Identity`], asks [`GitService::authorize`], runs
//! git through [`GitService::git`], and for pushes goes through [`PushRun`]: it hands over the
//! ref-update commands as soon as it has read them ([`PushRun::decide`], which writes the
//! verdicts the pre-receive hook applies) and calls [`PushRun::finish`] when git has exited.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use tokio::process::{Child, Command};

use crate::backend::{Authenticator, NoPushSink, PushCallback, PushSink, RepoAccess, RepoLocator};
pub use crate::backend::{GitRepository, GitUser, Identity};
use crate::events::{PushEvent, RefChange};
use crate::hooks;
use crate::permissions::Access;
use crate::pktline::RefUpdate;
use crate::protection::{self, PushAccess};
#[cfg(feature = "postgres")]
use crate::store::RepoStore;

/// Limits of the git transports.
#[derive(Clone, Debug)]
pub struct GitOptions {
    /// The largest push accepted, in bytes (the pack as sent).
    pub max_push_bytes: u64,
    /// The largest file (blob) a push may add, in bytes; 0 for no limit.
    pub max_blob_bytes: u64,
    /// The largest fetch negotiation accepted over HTTP, in bytes (decompressed).
    pub max_negotiation_bytes: usize,
    /// How long one git process may run before it is stopped.
    pub timeout: Duration,
}

impl Default for GitOptions {
    /// 2 GiB pushes, 100 MiB files, 64 MiB negotiations, one hour per request.
    fn default() -> Self {
        Self {
            max_push_bytes: 2 << 30,
            max_blob_bytes: 100 << 20,
            max_negotiation_bytes: 64 << 20,
            timeout: Duration::from_secs(3600),
        }
    }
}

#[cfg(feature = "postgres")]
impl From<&platform_core::config::GitLimitsConfig> for GitOptions {
    /// The limits an operator configured (`APP_GIT_*`), with the defaults for the rest.
    fn from(limits: &platform_core::config::GitLimitsConfig) -> Self {
        Self {
            max_push_bytes: limits.max_push_bytes,
            max_blob_bytes: limits.max_file_bytes,
            timeout: limits.timeout,
            ..Self::default()
        }
    }
}

/// Why a request may not go ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// Credentials might help (anonymous callers only).
    NeedsCredentials,
    /// No such repository, or none this caller may see.
    NotFound,
    /// The caller may see the repository but not do this.
    Forbidden(&'static str),
    /// The request names no possible repository (a NUL or control character, say): nothing
    /// about any repository is revealed by saying so.
    Invalid(&'static str),
    /// Something failed on our side; logged.
    Internal(String),
}

pub(crate) fn internal(error: impl std::fmt::Display) -> Denial {
    Denial::Internal(error.to_string())
}

/// A repository and what an identity may do to it.
#[derive(Clone, Debug)]
pub struct Authorized {
    /// The repository.
    pub repo: GitRepository,
    /// Where it is on disk.
    pub path: PathBuf,
    /// Who asked, when known.
    pub user: Option<GitUser>,
    /// What they may do.
    pub access: Access,
}

/// What both transports need: who callers are, what they may do, where repositories are, what
/// follows a push, the limits, and the hooks.
///
/// Cloning is cheap: clones share one service.
#[derive(Clone)]
pub struct GitService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GitService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitService")
            .field("options", &self.inner.options)
            .field("hooks_dir", &self.inner.hooks_dir)
            .finish_non_exhaustive()
    }
}

struct Inner {
    authenticator: Arc<dyn Authenticator>,
    access: Arc<dyn RepoAccess>,
    locator: Arc<dyn RepoLocator>,
    sink: Arc<dyn PushSink>,
    options: GitOptions,
    hooks_dir: PathBuf,
    scratch_dir: PathBuf,
}

/// Puts a [`GitService`] together from the host's parts (see [`GitService::builder`]).
pub struct GitServiceBuilder {
    authenticator: Arc<dyn Authenticator>,
    access: Arc<dyn RepoAccess>,
    locator: Arc<dyn RepoLocator>,
    sink: Arc<dyn PushSink>,
    options: GitOptions,
}

impl std::fmt::Debug for GitServiceBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitServiceBuilder").field("options", &self.options).finish_non_exhaustive()
    }
}

impl GitServiceBuilder {
    /// Sends every push event to `sink` (by default they are dropped).
    #[must_use]
    pub fn push_sink(mut self, sink: impl PushSink) -> Self {
        self.sink = Arc::new(sink);
        self
    }

    /// Calls `callback` with every push event, once git has exited.
    #[must_use]
    pub fn on_push(self, callback: impl Fn(PushEvent) + Send + Sync + 'static) -> Self {
        self.push_sink(PushCallback(callback))
    }

    /// Sets the limits (by default [`GitOptions::default`]).
    #[must_use]
    pub fn options(mut self, options: GitOptions) -> Self {
        self.options = options;
        self
    }

    /// Installs the push hooks into `state_dir/hooks`, keeps per-push scratch files in
    /// `state_dir/pushes`, and returns the service.
    ///
    /// # Errors
    ///
    /// Fails when `state_dir` cannot be written.
    pub fn build(self, state_dir: &Path) -> std::io::Result<GitService> {
        let hooks_dir = hooks::install(&state_dir.join("hooks"))?;
        let scratch_dir = state_dir.join("pushes");
        std::fs::create_dir_all(&scratch_dir)?;
        Ok(GitService {
            inner: Arc::new(Inner {
                authenticator: self.authenticator,
                access: self.access,
                locator: self.locator,
                sink: self.sink,
                options: self.options,
                hooks_dir,
                scratch_dir,
            }),
        })
    }
}

impl GitService {
    /// Starts a service whose callers are checked by `authenticator`, whose permissions come
    /// from `access` and whose repositories `locator` finds. Push events are dropped unless a
    /// sink is set ([`GitServiceBuilder::on_push`], [`GitServiceBuilder::push_sink`]).
    pub fn builder(
        authenticator: impl Authenticator,
        access: impl RepoAccess,
        locator: impl RepoLocator,
    ) -> GitServiceBuilder {
        GitServiceBuilder {
            authenticator: Arc::new(authenticator),
            access: Arc::new(access),
            locator: Arc::new(locator),
            sink: Arc::new(NoPushSink),
            options: GitOptions::default(),
        }
    }

    /// Prepares the git transports of the platform's services: callers are checked against
    /// `accounts`, permissions and branch protection come from the repository records, and each
    /// push is recorded by `events` (the outbox and the durable queue) along with the
    /// repository's size. Installs the push hooks into `state_dir/hooks` and keeps per-push
    /// scratch files in `state_dir/pushes`.
    ///
    /// # Errors
    ///
    /// Fails when `state_dir` cannot be written.
    #[cfg(feature = "postgres")]
    pub fn new(
        accounts: platform_core::accounts::Accounts,
        store: RepoStore,
        events: crate::events::PushEvents,
        options: GitOptions,
        state_dir: &Path,
    ) -> std::io::Result<Self> {
        let database = accounts.database().clone();
        Self::builder(
            crate::postgres::AccountsAuthenticator::new(accounts),
            crate::postgres::RecordsAccess::new(database.clone()),
            store,
        )
        .push_sink(crate::postgres::OutboxSink::new(events, database))
        .options(options)
        .build(state_dir)
    }

    /// Returns who checks callers' credentials.
    pub fn authenticator(&self) -> &dyn Authenticator {
        self.inner.authenticator.as_ref()
    }

    /// Returns the limits.
    pub fn options(&self) -> &GitOptions {
        &self.inner.options
    }

    /// Finds `owner/repo` (`repo` may end in `.git`) and checks that `identity` may do what
    /// `needed` stands for.
    ///
    /// # Errors
    ///
    /// A [`Denial`] saying why not.
    pub async fn authorize(
        &self,
        owner: &str,
        repo: &str,
        identity: &Identity,
        needed: Access,
    ) -> Result<Authorized, Denial> {
        let name = repo.strip_suffix(".git").unwrap_or(repo);
        if !plausible_name(owner) || !plausible_name(name) {
            return Err(Denial::Invalid("that is not a repository path"));
        }
        let user = identity.user();
        let found = self.inner.access.access(owner, name, user).await.map_err(internal)?;
        let Some((repository, access)) = found else {
            // Whether it exists is not said; with credentials it might be readable.
            return Err(if user.is_none() { Denial::NeedsCredentials } else { Denial::NotFound });
        };
        if access < needed {
            return Err(if user.is_none() {
                Denial::NeedsCredentials
            } else {
                Denial::Forbidden("you may read this repository but not push to it")
            });
        }
        if let Identity::User { ceiling: Some(ceiling), .. } = identity
            && *ceiling < needed
        {
            return Err(Denial::Forbidden("this token lacks the scope for that"));
        }
        let path = self.inner.locator.locate(&repository).map_err(internal)?;
        if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
            tracing::error!(repository = repository.id, path = %path.display(), "repository missing on disk");
            return Err(Denial::NotFound);
        }
        Ok(Authorized { repo: repository, path, user: user.cloned(), access })
    }
    /// A `git` command run in `path`, its pipes ready, killed if dropped; `protocol` is the
    /// client's `GIT_PROTOCOL`.
    pub fn git(&self, path: &Path, protocol: Option<&str>) -> Command {
        let mut command = Command::new("git");
        command
            .env_remove("GIT_DIR")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .current_dir(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(protocol) = protocol.filter(|p| plausible_protocol(p)) {
            command.env("GIT_PROTOCOL", protocol);
        }
        command
    }

    /// What keeps this server's paths out of git's messages about `authorized`'s repository:
    /// the repository becomes `owner/name.git`, the repository root and the state directory
    /// disappear.
    pub fn redactor(&self, authorized: &Authorized) -> crate::redact::Redactor {
        let public_name = format!("{}/{}.git", authorized.repo.owner, authorized.repo.name);
        let state_dir = self.inner.scratch_dir.parent().unwrap_or(&self.inner.scratch_dir);
        let mut hidden = self.inner.locator.private_roots();
        hidden.push(state_dir.to_owned());
        let hidden: Vec<&Path> = hidden.iter().map(PathBuf::as_path).collect();
        crate::redact::Redactor::new(&authorized.path, &public_name, &hidden)
    }

    /// `git upload-pack` as every fetch runs it, its advertisement and its negotiation, over
    /// HTTP and SSH alike (add `--stateless-rpc`, `--advertise-refs` and the directory as the
    /// transport needs): one configuration, so what is advertised is what is served. Partial
    /// clones (`filter`) and wants of any reachable commit (`allow-reachable-sha1-in-want`, for
    /// `git fetch <url> <sha>`) are allowed.
    pub fn upload_pack(&self, path: &Path, protocol: Option<&str>) -> Command {
        let mut command = self.git(path, protocol);
        command.args([
            "-c",
            "uploadpack.allowFilter=true",
            "-c",
            "uploadpack.allowReachableSHA1InWant=true",
            "upload-pack",
        ]);
        command
    }

    /// `git receive-pack` with the configuration of every push, for its advertisement (add
    /// `--stateless-rpc`, `--advertise-refs` and the directory); [`GitService::receive_pack`]
    /// runs pushes with the same.
    pub fn receive_pack_advertisement(&self, path: &Path, protocol: Option<&str>) -> Command {
        let inner = &self.inner;
        let mut command = self.git(path, protocol);
        command
            .arg("-c")
            .arg(format!("core.hooksPath={}", inner.hooks_dir.display()))
            .arg("-c")
            .arg(format!("receive.maxInputSize={}", inner.options.max_push_bytes))
            .args([
                "-c",
                "receive.fsckObjects=true",
                "-c",
                "receive.denyNonFastForwards=false",
                "-c",
                "receive.denyDeletes=false",
                "-c",
                "receive.denyCurrentBranch=ignore",
                "receive-pack",
            ]);
        command
    }

    /// Prepares a push by `authorized`: the `git receive-pack` command (add `--stateless-rpc`
    /// and the directory) and the run to report to.
    pub fn receive_pack(
        &self,
        authorized: Authorized,
        protocol: Option<&str>,
    ) -> (Command, PushRun) {
        let inner = &self.inner;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let policy = inner.scratch_dir.join(format!("{id}.policy"));
        let report = inner.scratch_dir.join(format!("{id}.refs"));
        let mut command = self.receive_pack_advertisement(&authorized.path, protocol);
        command
            .env(hooks::POLICY_ENV, &policy)
            .env(hooks::MAX_BLOB_ENV, inner.options.max_blob_bytes.to_string())
            .env(hooks::REPORT_ENV, &report);
        (command, PushRun { service: self.clone(), authorized, policy, report })
    }
}

/// Whether `name` could name a user or a repository: 1 to 100 bytes, none of them a control
/// character, a slash or a backslash (the name rules proper are the records' to apply).
fn plausible_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && !name.bytes().any(|b| b.is_ascii_control() || b == b'/' || b == b'\\')
}

/// Whether `GIT_PROTOCOL` holds something git could have sent.
fn plausible_protocol(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"=:._-".contains(&b))
}

/// A push whose `git receive-pack` is running.
#[derive(Debug)]
pub struct PushRun {
    service: GitService,
    authorized: Authorized,
    policy: PathBuf,
    report: PathBuf,
}

impl PushRun {
    /// Decides what branch protection says about each of `updates` and writes the verdicts
    /// where the pre-receive hook reads them: one line per update, naming its old id, new id and
    /// ref, since the hook admits only updates that a verdict names exactly (see
    /// [`crate::hooks`]). Must complete before git receives the pack (so before the commands
    /// reach git, or at least before their pack does).
    ///
    /// # Errors
    ///
    /// Fails when the rules cannot be read or the verdicts written.
    pub async fn decide(&self, updates: &[RefUpdate]) -> Result<(), Denial> {
        let authorized = &self.authorized;
        let access = &self.service.inner.access;
        let rules = access.protected_branches(&authorized.repo).await.map_err(internal)?;
        let verdicts = verdicts(&rules, authorized.access, updates);
        tokio::fs::write(&self.policy, verdicts).await.map_err(internal)
    }

    /// Cleans up after a push that ended before git could take it.
    pub async fn discard(self) {
        let _ = tokio::fs::remove_file(&self.policy).await;
        let _ = tokio::fs::remove_file(&self.report).await;
    }

    /// After git exited: hands the push event to the service's [`PushSink`], if any ref moved.
    pub async fn finish(self) {
        let text = tokio::fs::read_to_string(&self.report).await.unwrap_or_default();
        let _ = tokio::fs::remove_file(&self.report).await;
        let _ = tokio::fs::remove_file(&self.policy).await;
        let refs: Vec<RefChange> = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let (old, new, name) = (fields.next()?, fields.next()?, fields.next()?);
                Some(RefChange { name: name.to_owned(), old: old.to_owned(), new: new.to_owned() })
            })
            .collect();
        if refs.is_empty() {
            return;
        }
        let repo = &self.authorized.repo;
        let (pusher_id, pusher) =
            self.authorized.user.as_ref().map(|u| (u.id, u.username.clone())).unwrap_or_default();
        let event = PushEvent {
            id: uuid::Uuid::new_v4(),
            repository_id: repo.id,
            repository: format!("{}/{}", repo.owner, repo.name),
            pusher_id,
            pusher,
            refs,
            pushed_at: chrono::Utc::now(),
            sequence: None,
        };
        tracing::info!(repository = repo.id, event = %event.id, refs = event.refs.len(), "pushed");
        self.service.inner.sink.pushed(event, &self.authorized.path).await;
    }
}

/// The verdict lines of the pre-receive hook for `updates` pushed by someone with `access`.
fn verdicts(
    rules: &[protection::ProtectedBranch],
    access: Access,
    updates: &[RefUpdate],
) -> String {
    let mut verdicts = String::new();
    for update in updates {
        let (old, new, name) = (&update.old, &update.new, &update.name);
        let rule = update
            .branch()
            .and_then(|branch| Some(branch).zip(protection::rule_for(rules, branch)));
        let line = match rule {
            None => format!("allow\t{old}\t{new}\t{name}\n"),
            Some((branch, rule)) => {
                let refusal = if rule.push_access == PushAccess::Admin && access < Access::Admin {
                    Some(format!("{branch} is protected: only administrators may push to it"))
                } else if update.is_delete() && !rule.allow_deletion {
                    Some(format!("{branch} is protected: it cannot be deleted"))
                } else {
                    None
                };
                match refusal {
                    Some(refusal) => format!("deny\t{old}\t{new}\t{name}\t{refusal}\n"),
                    None if !rule.allow_force_push => format!("no-force\t{old}\t{new}\t{name}\n"),
                    None => format!("allow\t{old}\t{new}\t{name}\n"),
                }
            }
        };
        verdicts.push_str(&line);
    }
    verdicts
}

/// Collects what a git process says on stderr (bounded), for the log.
pub fn collect_stderr(child: &mut Child) -> tokio::task::JoinHandle<String> {
    let stderr = child.stderr.take();
    tokio::spawn(async move {
        let mut text = Vec::new();
        if let Some(stderr) = stderr {
            let _ = stderr.take(64 * 1024).read_to_end(&mut text).await;
        }
        String::from_utf8_lossy(&text).trim().to_owned()
    })
}

/// Waits for `child` (up to `timeout`, then kills it) and returns its exit code, logging how
/// it ended.
pub async fn supervise(
    mut child: Child,
    stderr: tokio::task::JoinHandle<String>,
    timeout: Duration,
    what: &'static str,
) -> Option<i32> {
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => Some(status),
        Ok(Err(error)) => {
            tracing::error!(%error, what, "cannot wait for git");
            None
        }
        Err(_) => {
            tracing::warn!(what, timeout_s = timeout.as_secs(), "git ran too long; stopped");
            let _ = child.kill().await;
            None
        }
    };
    let stderr = stderr.await.unwrap_or_default();
    match status {
        Some(status) if status.success() => Some(0),
        Some(status) => {
            tracing::info!(what, %status, stderr, "git ended with an error");
            Some(status.code().unwrap_or(128))
        }
        None => None,
    }
}
