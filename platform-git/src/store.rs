//! Bare repositories on disk: `{root}/{owner}/{name}.git`.
//!
//! Every change is prepared under a temporary name in the owner's directory and moved into place
//! with one `rename`, so another process never sees a half-made repository, and two creations of
//! the same repository cannot both succeed. Within a process, administrative operations on one
//! repository are serialised by a per-repository lock.
//!
//! ```no_run
//! # async fn run() -> Result<(), platform_git::store::StoreError> {
//! use platform_git::store::RepoStore;
//!
//! let store = RepoStore::new("/data/repos");
//! let path = store.create("ada", "engine", "main").await?;
//! assert!(path.ends_with("ada/engine.git"));
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::process::Command;

/// The longest repository name accepted.
pub const MAX_REPO_NAME_CHARS: usize = 100;

/// The error returned by [`RepoStore`] operations.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The owner or repository name breaks the naming rules.
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        /// `owner`, `repository` or `branch`.
        what: &'static str,
        /// The rejected name.
        name: String,
        /// The rule broken.
        reason: String,
    },
    /// A repository already has that name.
    #[error("repository {owner}/{name} already exists")]
    AlreadyExists {
        /// The owner.
        owner: String,
        /// The name.
        name: String,
    },
    /// No repository has that name.
    #[error("repository {owner}/{name} does not exist")]
    NotFound {
        /// The owner.
        owner: String,
        /// The name.
        name: String,
    },
    /// A `git` command failed.
    #[error("`git {command}` failed: {stderr}")]
    Git {
        /// The subcommand, such as `init`.
        command: &'static str,
        /// What git said.
        stderr: String,
    },
    /// A file system operation failed.
    #[error("failed to {operation} {path:?}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn io(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io { operation, path, source }
}

/// Names refused for repositories because web and git routes use them as path segments.
pub const RESERVED_REPO_NAMES: &[&str] = &[
    "api",
    "assets",
    "git-receive-pack",
    "git-upload-pack",
    "info",
    "new",
    "objects",
    "raw",
    "refs",
    "settings",
];

impl crate::backend::RepoLocator for RepoStore {
    fn locate(
        &self,
        repository: &crate::backend::GitRepository,
    ) -> Result<PathBuf, crate::backend::BoxError> {
        Ok(self.path(&repository.owner, &repository.name)?)
    }

    fn private_roots(&self) -> Vec<PathBuf> {
        vec![self.root.clone()]
    }
}

/// Checks a repository name: 1 to 100 ASCII letters, digits, `-`, `_` or `.`, not starting with
/// `.` or `-`, not ending in `.git`, and not one of [`RESERVED_REPO_NAMES`].
///
/// # Errors
///
/// Returns the rule broken.
pub fn check_repo_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_REPO_NAME_CHARS {
        return Err(format!("must have 1 to {MAX_REPO_NAME_CHARS} characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Err("may contain only letters, digits, '-', '_' and '.'".to_owned());
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err("must not start with '.' or '-'".to_owned());
    }
    if name.to_ascii_lowercase().ends_with(".git") {
        return Err("must not end in .git".to_owned());
    }
    if RESERVED_REPO_NAMES.iter().any(|reserved| name.eq_ignore_ascii_case(reserved)) {
        return Err(format!("{name:?} is reserved"));
    }
    Ok(())
}

/// Checks an owner's name as a directory name: 1 to 100 ASCII letters, digits, `-`, `_` or `.`,
/// starting and ending with a letter or digit, without `..`, not ending in `.git`. (Which names
/// a user may take is the accounts' business; these rules only keep a path inside the root.)
///
/// # Errors
///
/// Returns the rule broken.
pub fn check_owner_name(owner: &str) -> Result<(), String> {
    if owner.is_empty() || owner.len() > 100 {
        return Err("must have 1 to 100 characters".to_owned());
    }
    if !owner.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Err("may contain only letters, digits, '-', '_' and '.'".to_owned());
    }
    let edges_ok = owner.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && owner.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    if !edges_ok {
        return Err("must start and end with a letter or digit".to_owned());
    }
    if owner.contains("..") {
        return Err("must not contain '..'".to_owned());
    }
    if owner.to_ascii_lowercase().ends_with(".git") {
        return Err("must not end in .git".to_owned());
    }
    Ok(())
}

/// One lock per repository (owner and name, lowercased) for administrative operations.
type RepoLocks = Mutex<HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>>;

/// The bare repositories under one root directory (`APP_REPOS_ROOT`).
#[derive(Clone, Debug)]
pub struct RepoStore {
    root: PathBuf,
    locks: Arc<RepoLocks>,
}

impl RepoStore {
    /// A store rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), locks: Arc::default() }
    }

    /// Returns the directory the repositories live under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Returns where `owner/name` lives, after checking both names.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidName`] for a name that breaks the rules.
    pub fn path(&self, owner: &str, name: &str) -> Result<PathBuf, StoreError> {
        check_owner_name(owner).map_err(|reason| StoreError::InvalidName {
            what: "owner",
            name: owner.to_owned(),
            reason,
        })?;
        check_repo_name(name).map_err(|reason| StoreError::InvalidName {
            what: "repository",
            name: name.to_owned(),
            reason,
        })?;
        Ok(self
            .root
            .join(owner.to_ascii_lowercase())
            .join(format!("{}.git", name.to_ascii_lowercase())))
    }

    /// Returns whether `owner/name` exists.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidName`] for a name that breaks the rules.
    pub async fn exists(&self, owner: &str, name: &str) -> Result<bool, StoreError> {
        let path = self.path(owner, name)?;
        Ok(tokio::fs::try_exists(&path).await.unwrap_or(false))
    }

    fn lock(&self, owner: &str, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let key = (owner.to_ascii_lowercase(), name.to_ascii_lowercase());
        Arc::clone(
            self.locks.lock().unwrap_or_else(PoisonError::into_inner).entry(key).or_default(),
        )
    }

    /// A fresh temporary path next to `target`, on the same file system so `rename` is atomic.
    fn staging(target: &Path) -> PathBuf {
        let id = uuid::Uuid::new_v4().simple().to_string();
        target.with_file_name(format!(".staging-{id}"))
    }

    async fn prepare_parent(target: &Path) -> Result<(), StoreError> {
        let parent = target.parent().unwrap_or(target);
        tokio::fs::create_dir_all(parent).await.map_err(io("create", parent))
    }

    /// Moves a prepared repository into place, refusing to replace an existing one.
    async fn publish(
        staged: &Path,
        target: &Path,
        owner: &str,
        name: &str,
    ) -> Result<(), StoreError> {
        if tokio::fs::try_exists(target).await.unwrap_or(false) {
            let _ = tokio::fs::remove_dir_all(staged).await;
            return Err(StoreError::AlreadyExists {
                owner: owner.to_owned(),
                name: name.to_owned(),
            });
        }
        // rename(2) replaces an empty directory; the final check above makes a lost race visible
        // as an error below rather than a silently replaced repository, since git never leaves
        // a repository directory empty.
        match tokio::fs::rename(staged, target).await {
            Ok(()) => Ok(()),
            Err(error) => {
                let _ = tokio::fs::remove_dir_all(staged).await;
                if tokio::fs::try_exists(target).await.unwrap_or(false) {
                    Err(StoreError::AlreadyExists {
                        owner: owner.to_owned(),
                        name: name.to_owned(),
                    })
                } else {
                    Err(io("move into place", target)(error))
                }
            }
        }
    }

    /// Creates an empty bare repository whose `HEAD` names `default_branch`; returns its path.
    ///
    /// # Errors
    ///
    /// Invalid names, an existing repository, or a failing `git init`.
    pub async fn create(
        &self,
        owner: &str,
        name: &str,
        default_branch: &str,
    ) -> Result<PathBuf, StoreError> {
        let target = self.path(owner, name)?;
        check_branch_name(default_branch).await?;
        let lock = self.lock(owner, name);
        let _guard = lock.lock().await;
        Self::prepare_parent(&target).await?;
        let staged = Self::staging(&target);
        let mut init = Command::new("git");
        init.arg("init")
            .arg("--bare")
            .arg("--quiet")
            .arg(format!("--initial-branch={default_branch}"))
            .arg(&staged);
        if let Err(error) = run_git("init", &mut init).await {
            let _ = tokio::fs::remove_dir_all(&staged).await;
            return Err(error);
        }
        Self::publish(&staged, &target, owner, name).await?;
        tracing::info!(owner, name, path = %target.display(), "repository created");
        Ok(target)
    }

    /// Copies `from` into a new repository `to`, with all its refs and objects.
    ///
    /// # Errors
    ///
    /// Invalid names, a missing source, an existing target, or a failing `git clone`.
    pub async fn fork(&self, from: (&str, &str), to: (&str, &str)) -> Result<PathBuf, StoreError> {
        let source = self.path(from.0, from.1)?;
        let target = self.path(to.0, to.1)?;
        if !tokio::fs::try_exists(&source).await.unwrap_or(false) {
            return Err(StoreError::NotFound { owner: from.0.to_owned(), name: from.1.to_owned() });
        }
        let lock = self.lock(to.0, to.1);
        let _guard = lock.lock().await;
        Self::prepare_parent(&target).await?;
        let staged = Self::staging(&target);
        let mut clone = Command::new("git");
        clone.args(["clone", "--bare", "--quiet", "--no-hardlinks"]).arg(&source).arg(&staged);
        if let Err(error) = run_git("clone", &mut clone).await {
            let _ = tokio::fs::remove_dir_all(&staged).await;
            return Err(error);
        }
        // A fork does not fetch from its source later: forget the origin remote.
        let mut unlink = Command::new("git");
        unlink.arg("--git-dir").arg(&staged).args(["remote", "remove", "origin"]);
        if let Err(error) = run_git("remote remove", &mut unlink).await {
            let _ = tokio::fs::remove_dir_all(&staged).await;
            return Err(error);
        }
        Self::publish(&staged, &target, to.0, to.1).await?;
        tracing::info!(from = %source.display(), to = %target.display(), "repository forked");
        Ok(target)
    }

    /// Renames (or moves to another owner) a repository.
    ///
    /// # Errors
    ///
    /// Invalid names, a missing source or an existing target.
    pub async fn rename(
        &self,
        from: (&str, &str),
        to: (&str, &str),
    ) -> Result<PathBuf, StoreError> {
        let source = self.path(from.0, from.1)?;
        let target = self.path(to.0, to.1)?;
        let lock = self.lock(from.0, from.1);
        let _guard = lock.lock().await;
        if !tokio::fs::try_exists(&source).await.unwrap_or(false) {
            return Err(StoreError::NotFound { owner: from.0.to_owned(), name: from.1.to_owned() });
        }
        if source == target {
            return Ok(target);
        }
        Self::prepare_parent(&target).await?;
        if tokio::fs::try_exists(&target).await.unwrap_or(false) {
            return Err(StoreError::AlreadyExists {
                owner: to.0.to_owned(),
                name: to.1.to_owned(),
            });
        }
        tokio::fs::rename(&source, &target).await.map_err(io("rename", &source))?;
        tracing::info!(from = %source.display(), to = %target.display(), "repository renamed");
        Ok(target)
    }

    /// Points `HEAD` of `owner/name` at `branch`, which need not exist yet.
    ///
    /// # Errors
    ///
    /// Invalid names, a missing repository, or a failing `git symbolic-ref`.
    pub async fn set_default_branch(
        &self,
        owner: &str,
        name: &str,
        branch: &str,
    ) -> Result<(), StoreError> {
        let target = self.path(owner, name)?;
        check_branch_name(branch).await?;
        let lock = self.lock(owner, name);
        let _guard = lock.lock().await;
        if !tokio::fs::try_exists(&target).await.unwrap_or(false) {
            return Err(StoreError::NotFound { owner: owner.to_owned(), name: name.to_owned() });
        }
        let mut symbolic_ref = Command::new("git");
        symbolic_ref
            .arg("--git-dir")
            .arg(&target)
            .args(["symbolic-ref", "HEAD"])
            .arg(format!("refs/heads/{branch}"));
        run_git("symbolic-ref", &mut symbolic_ref).await
    }

    /// Deletes a repository: it disappears at once (one rename), and its files are removed after.
    ///
    /// # Errors
    ///
    /// Invalid names or a missing repository.
    pub async fn delete(&self, owner: &str, name: &str) -> Result<(), StoreError> {
        let target = self.path(owner, name)?;
        let lock = self.lock(owner, name);
        let _guard = lock.lock().await;
        if !tokio::fs::try_exists(&target).await.unwrap_or(false) {
            return Err(StoreError::NotFound { owner: owner.to_owned(), name: name.to_owned() });
        }
        let doomed = Self::staging(&target);
        tokio::fs::rename(&target, &doomed).await.map_err(io("delete", &target))?;
        tokio::fs::remove_dir_all(&doomed).await.map_err(io("remove", &doomed))?;
        tracing::info!(owner, name, "repository deleted");
        Ok(())
    }
}

/// Checks a branch name with git's own rules (`git check-ref-format --branch`).
///
/// # Errors
///
/// [`StoreError::InvalidName`] for a name git refuses; [`StoreError::Io`] when git cannot run.
pub async fn check_branch_name(branch: &str) -> Result<(), StoreError> {
    let invalid = |reason: &str| StoreError::InvalidName {
        what: "branch",
        name: branch.to_owned(),
        reason: reason.to_owned(),
    };
    if branch.starts_with('-') {
        return Err(invalid("must not start with '-'"));
    }
    let output =
        Command::new("git").args(["check-ref-format", "--branch", branch]).output().await.map_err(
            |source| StoreError::Io { operation: "run git", path: PathBuf::from("git"), source },
        )?;
    if output.status.success() { Ok(()) } else { Err(invalid("is not a valid branch name")) }
}

async fn run_git(command: &'static str, git: &mut Command) -> Result<(), StoreError> {
    let output = git.env("GIT_TERMINAL_PROMPT", "0").output().await.map_err(|source| {
        StoreError::Io { operation: "run git", path: PathBuf::from("git"), source }
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(StoreError::Git {
            command,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}
