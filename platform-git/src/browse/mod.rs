//! Reading repositories: refs, commits, trees, blobs, diffs, blame, archives, READMEs and
//! languages, all with gix (no `git` child process).
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let git = |args: &[&str]| std::process::Command::new("git").args(args).current_dir(dir.path()).output();
//! # git(&["init", "-q", "-b", "main"])?;
//! # std::fs::write(dir.path().join("README.md"), "# Hello\n")?;
//! # git(&["add", "."])?;
//! # git(&["-c", "user.name=a", "-c", "user.email=a@example.com", "commit", "-q", "-m", "first"])?;
//! use platform_git::browse::{Limits, Repo};
//!
//! let repo = Repo::open(dir.path(), Limits::default())?;
//! let head = repo.resolve("main")?;
//! let page = repo.log(&platform_git::browse::LogQuery::from(head.id))?;
//! assert_eq!(page.commits[0].message, "first\n");
//! # Ok(()) }
//! ```
//!
//! Every call here blocks on disk reads and decompression: async code goes through
//! [`Browser::run`], which opens repositories through a bounded cache of gix's thread-safe
//! handles and runs the work on tokio's blocking threads. A cached handle stays correct after a
//! push: gix reads refs from disk on every lookup and rescans the pack directory when an object
//! is missing, so nothing needs to be invalidated but a repository that was deleted or renamed
//! (see [`Browser::forget`]).
//!
//! Everything is bounded by [`Limits`]: diffs stop at a number of files and lines, trees at a
//! number of entries, inline contents at a size, and walks and blame at a time.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use gix::ObjectId;
use gix::bstr::{BStr, ByteSlice};

mod archive;
mod blame;
mod diff;
mod languages;
mod log;
mod readme;
mod refs;
mod tree;

pub use archive::ArchiveFormat;
pub use blame::{Blame, BlameRange};
pub use diff::{ChangeStatus, Diff, FileChange, Patch, PatchFormat};
pub use languages::{Languages, language_of};
pub use log::{Divergence, LogPage, LogQuery, RevList};
pub use readme::{Readme, render_markdown};
pub use refs::{Branch, Resolved, Tag, TagInfo};
pub use tree::{Contents, EntryKind, TreeEntry, TreeListing};

/// The bounds every answer stays within.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Files listed in one diff (GitHub lists 300); more are counted, not listed.
    pub diff_files: usize,
    /// Patch lines of one file; a longer patch is left out and the file says `truncated`.
    pub patch_lines_per_file: usize,
    /// Patch lines of a whole diff; files past it have no patch and say `truncated`.
    pub patch_lines: usize,
    /// Bytes of either side of a file beyond which it is not diffed (counted as changed).
    pub diff_blob_bytes: u64,
    /// Entries of one tree listing; a recursive listing past it says `truncated`.
    pub tree_entries: usize,
    /// Bytes of a file whose content is given inline (base64) by the contents route.
    pub inline_bytes: u64,
    /// Bytes of a file that can be blamed.
    pub blame_bytes: u64,
    /// How long a history walk (log, compare) may take.
    pub walk_time: Duration,
    /// How long a blame may take.
    pub blame_time: Duration,
    /// Commits one comparison lists.
    pub compare_commits: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            diff_files: 300,
            patch_lines_per_file: 20_000,
            patch_lines: 100_000,
            diff_blob_bytes: 1 << 20,
            tree_entries: 100_000,
            inline_bytes: 1 << 20,
            blame_bytes: 2 << 20,
            walk_time: Duration::from_secs(10),
            blame_time: Duration::from_secs(10),
            compare_commits: 250,
        }
    }
}

/// What went wrong reading a repository.
#[derive(Debug, thiserror::Error)]
pub enum BrowseError {
    /// The ref, commit, path or object asked for does not exist.
    #[error("{what} {name:?} not found")]
    NotFound {
        /// What was looked for: `ref`, `commit`, `path`, `tree`, `README`.
        what: &'static str,
        /// The name or id asked for.
        name: String,
    },
    /// A ref or path that can never exist, such as `main..x` or `a/../b`.
    #[error("{what} {name:?} is malformed: {reason}")]
    Malformed {
        /// Which input: `ref`, `path`, `basehead`.
        what: &'static str,
        /// The input.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// The answer would pass a bound of [`Limits`] that cannot be met by truncating.
    #[error("{0}")]
    TooLarge(String),
    /// What was asked for cannot be made of this repository (a zip archive of names that are
    /// not UTF-8).
    #[error("{0}")]
    Unsupported(String),
    /// The work took longer than its limit.
    #[error("{what} took longer than the limit of {} s; narrow it down", limit.as_secs())]
    TooSlow {
        /// The work: `history walk`, `blame`.
        what: &'static str,
        /// The limit.
        limit: Duration,
    },
    /// The repository could not be read (missing on disk, corrupt, I/O).
    #[error("cannot read the repository {path}")]
    Repository {
        /// The repository's directory.
        path: PathBuf,
        /// What gix said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Reading an object or ref failed.
    #[error("{context}")]
    Git {
        /// What was being done.
        context: &'static str,
        /// What gix said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The blocking task was cancelled or panicked.
    #[error("a repository read did not finish")]
    Task(#[source] tokio::task::JoinError),
}

impl BrowseError {
    fn git(context: &'static str) -> impl FnOnce(gix::Error) -> Self {
        move |error| Self::Git { context, source: Box::new(error) }
    }

    fn not_found(what: &'static str, name: impl Into<String>) -> Self {
        Self::NotFound { what, name: name.into() }
    }
}

type Result<T, E = BrowseError> = std::result::Result<T, E>;

/// Opened repositories, shared by every request of a service.
#[derive(Clone)]
pub struct Browser {
    repos: Arc<quick_cache::sync::Cache<PathBuf, Arc<Opened>>>,
    warm: Arc<AtomicUsize>,
    languages: Arc<quick_cache::sync::Cache<ObjectId, Languages>>,
    limits: Limits,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("open", &self.repos.len())
            .field("limits", &self.limits)
            .finish()
    }
}

/// How many repositories stay open (each holds its pack indexes mapped).
const OPEN_REPOSITORIES: usize = 128;

/// How many trees' language counts are remembered (a count is a walk of the whole tree).
const REMEMBERED_LANGUAGES: usize = 1024;

/// Bytes of decoded objects each read keeps for reuse (trees walked twice, delta bases).
const OBJECT_CACHE_BYTES: usize = 16 << 20;

impl Browser {
    /// A browser applying `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            repos: Arc::new(quick_cache::sync::Cache::new(OPEN_REPOSITORIES)),
            warm: Arc::default(),
            languages: Arc::new(quick_cache::sync::Cache::new(REMEMBERED_LANGUAGES)),
            limits,
        }
    }

    /// Returns the limits applied.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Runs `work` on the repository at `path`, on a blocking thread.
    ///
    /// # Errors
    ///
    /// [`BrowseError::Repository`] when `path` is no readable repository, and what `work` returns.
    pub async fn run<T, F>(&self, path: PathBuf, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Repo) -> Result<T> + Send + 'static,
    {
        let repos = Arc::clone(&self.repos);
        let warm = Arc::clone(&self.warm);
        let limits = self.limits;
        tokio::task::spawn_blocking(move || {
            let opened = repos.get_or_insert_with(&path, || {
                Ok::<_, BrowseError>(Arc::new(Opened {
                    shared: open_shared_as(&path, true)?,
                    idle: Mutex::default(),
                    warm: Arc::clone(&warm),
                }))
            })?;
            let repo = Repo { repo: opened.take(), limits };
            let outcome = work(&repo);
            opened.give_back(repo.repo);
            outcome
        })
        .await
        .map_err(BrowseError::Task)?
    }

    /// Runs `work` as [`Browser::run`] does, answering [`BrowseError::TooSlow`] when it takes
    /// longer than `limit`. Work that cannot be interrupted (gix's blame) goes on to its end on
    /// its blocking thread, unseen.
    ///
    /// # Errors
    ///
    /// As [`Browser::run`], and [`BrowseError::TooSlow`].
    pub async fn run_within<T, F>(
        &self,
        limit: Duration,
        what: &'static str,
        path: PathBuf,
        work: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Repo) -> Result<T> + Send + 'static,
    {
        tokio::time::timeout(limit, self.run(path, work))
            .await
            .map_err(|_| BrowseError::TooSlow { what, limit })?
    }

    /// Counts the languages of tree `tree` of the repository at `path`, remembering the count:
    /// a tree's id names its content, so the count of a tree never changes.
    ///
    /// # Errors
    ///
    /// As [`Repo::languages`].
    pub async fn languages(&self, path: PathBuf, tree: ObjectId) -> Result<Languages> {
        if let Some(languages) = self.languages.get(&tree) {
            return Ok(languages);
        }
        let languages = self.run(path, move |repo| repo.languages(tree)).await?;
        self.languages.insert(tree, languages.clone());
        Ok(languages)
    }

    /// Forgets the repository at `path` (after it was deleted or moved).
    pub fn forget(&self, path: &Path) {
        self.repos.remove(path);
    }
}

/// Opens the repository at `path`; `as_is` takes `path` as the git directory itself (the
/// store's bare repositories), without looking for a `.git` inside it. Either way no global or
/// user configuration is read: a server's environment must not change what is shown.
/// A repository opened once, and handles of it kept warm between reads.
///
/// A thread's handle holds gix's object and delta caches; a fresh handle per request starts
/// them cold and reads every tree and commit from the pack again (a path's history on a
/// 650-commit repository: 20 ms cold, 2 ms warm). Handles go back here after each read, a few per
/// repository and [`WARM_HANDLES`] in all, so the memory they hold stays bounded.
struct Opened {
    shared: gix::ThreadSafeRepository,
    idle: Mutex<Vec<gix::Repository>>,
    warm: Arc<AtomicUsize>,
}

/// Idle handles kept per repository.
const WARM_PER_REPOSITORY: usize = 2;

/// Idle handles kept in all (each may hold [`OBJECT_CACHE_BYTES`] and [`DELTA_CACHE`]).
const WARM_HANDLES: usize = 8;

/// The delta base cache of each handle (git's `core.deltaBaseCacheLimit`).
const DELTA_CACHE: &str = "core.deltaBaseCacheLimit=16m";

impl Opened {
    fn take(&self) -> gix::Repository {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        match idle {
            Some(handle) => {
                self.warm.fetch_sub(1, Ordering::Relaxed);
                handle
            }
            None => {
                let mut handle = self.shared.to_thread_local();
                handle.object_cache_size_if_unset(OBJECT_CACHE_BYTES);
                handle
            }
        }
    }

    fn give_back(&self, handle: gix::Repository) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < WARM_PER_REPOSITORY
            && self.warm.fetch_add(1, Ordering::Relaxed) < WARM_HANDLES
        {
            idle.push(handle);
        } else if idle.len() < WARM_PER_REPOSITORY {
            self.warm.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        let idle = self.idle.get_mut().unwrap_or_else(PoisonError::into_inner).len();
        self.warm.fetch_sub(idle, Ordering::Relaxed);
    }
}

fn open_shared_as(path: &Path, as_is: bool) -> Result<gix::ThreadSafeRepository> {
    let options =
        gix::open::Options::isolated().open_path_as_is(as_is).config_overrides([DELTA_CACHE]);
    gix::ThreadSafeRepository::open_opts(path, options)
        .map_err(|error| BrowseError::Repository { path: path.to_owned(), source: Box::new(error) })
}

/// One repository, opened for the reads of one thread.
pub struct Repo {
    repo: gix::Repository,
    limits: Limits,
}

impl std::fmt::Debug for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repo").field("path", &self.repo.path()).finish()
    }
}

impl Repo {
    /// Opens the repository at `path` (bare or not) on its own, without a [`Browser`].
    ///
    /// # Errors
    ///
    /// [`BrowseError::Repository`] when `path` is no readable repository.
    pub fn open(path: &Path, limits: Limits) -> Result<Self> {
        Ok(Self::from_shared(&open_shared_as(path, false)?, limits))
    }

    fn from_shared(shared: &gix::ThreadSafeRepository, limits: Limits) -> Self {
        let mut repo = shared.to_thread_local();
        repo.object_cache_size_if_unset(OBJECT_CACHE_BYTES);
        Self { repo, limits }
    }

    /// Returns the limits applied.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Returns gix's handle, for reads this module does not offer.
    pub fn gix(&self) -> &gix::Repository {
        &self.repo
    }

    fn commit(&self, id: ObjectId) -> Result<gix::Commit<'_>> {
        match self.repo.try_find_object(id).map_err(BrowseError::git("cannot read a commit"))? {
            Some(object) if object.kind == gix::object::Kind::Commit => Ok(object.into_commit()),
            _ => Err(BrowseError::not_found("commit", id.to_string())),
        }
    }

    /// Returns what the API shows of commit `id`.
    ///
    /// # Errors
    ///
    /// [`BrowseError::NotFound`] when there is no such commit.
    pub fn commit_info(&self, id: ObjectId) -> Result<CommitInfo> {
        let commit = self.commit(id)?;
        CommitInfo::read(&commit)
    }
}

/// A person and a time, as a commit or tag records them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// The name (lossy UTF-8).
    pub name: String,
    /// The email address (lossy UTF-8).
    pub email: String,
    /// When.
    pub time: DateTime<Utc>,
    /// Seconds since the epoch, as recorded.
    pub seconds: i64,
    /// The time zone recorded, in seconds east of UTC.
    pub offset: i32,
}

impl Signature {
    fn read(signature: gix::actor::SignatureRef<'_>) -> Self {
        let seconds = signature.seconds();
        Self {
            name: signature.name.to_str_lossy().into_owned(),
            email: signature.email.to_str_lossy().into_owned(),
            time: DateTime::from_timestamp(seconds, 0).unwrap_or_default(),
            seconds,
            offset: signature.time().map(|time| time.offset).unwrap_or_default(),
        }
    }

    /// The time in the time zone it was recorded in.
    pub fn local_time(&self) -> DateTime<chrono::FixedOffset> {
        let zone = chrono::FixedOffset::east_opt(self.offset).unwrap_or(chrono::Offset::fix(&Utc));
        self.time.with_timezone(&zone)
    }
}

/// A commit: ids, people and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// The commit's id.
    pub id: ObjectId,
    /// Its tree.
    pub tree: ObjectId,
    /// Its parents, first parent first.
    pub parents: Vec<ObjectId>,
    /// Who wrote it.
    pub author: Signature,
    /// Who committed it.
    pub committer: Signature,
    /// The whole message (lossy UTF-8).
    pub message: String,
}

impl CommitInfo {
    fn read(commit: &gix::Commit<'_>) -> Result<Self> {
        let decoded = commit.decode().map_err(|error| BrowseError::Git {
            context: "cannot decode a commit",
            source: Box::new(error),
        })?;
        let author = decoded.author().map_err(|error| BrowseError::Git {
            context: "cannot decode a commit's author",
            source: Box::new(error),
        })?;
        let committer = decoded.committer().map_err(|error| BrowseError::Git {
            context: "cannot decode a commit's committer",
            source: Box::new(error),
        })?;
        Ok(Self {
            id: commit.id,
            tree: decoded.tree(),
            parents: decoded.parents().collect(),
            author: Signature::read(author),
            committer: Signature::read(committer),
            message: decoded.message.to_str_lossy().into_owned(),
        })
    }

    /// The message's first line.
    pub fn summary(&self) -> &str {
        self.message.lines().next().unwrap_or_default()
    }
}

/// Checks a path inside a repository: relative, `/`-separated, no `.` or `..` segments, no NUL.
/// Returns it without leading or trailing `/`.
///
/// # Errors
///
/// [`BrowseError::Malformed`] naming the path.
pub fn check_path(path: &[u8]) -> Result<&BStr> {
    let malformed = |reason| BrowseError::Malformed {
        what: "path",
        name: path.to_str_lossy().into_owned(),
        reason,
    };
    let trimmed = path.trim_start_with(|c| c == '/').trim_end_with(|c| c == '/');
    if trimmed.contains(&0) {
        return Err(malformed("a path cannot contain NUL"));
    }
    if !trimmed.is_empty()
        && trimmed.split(|&b| b == b'/').any(|s| s.is_empty() || s == b"." || s == b"..")
    {
        return Err(malformed("a path cannot contain empty, `.` or `..` segments"));
    }
    Ok(trimmed.as_bstr())
}

/// A deadline for work bounded in time.
#[derive(Clone, Copy, Debug)]
struct Deadline {
    at: Instant,
    limit: Duration,
    what: &'static str,
}

impl Deadline {
    fn after(limit: Duration, what: &'static str) -> Self {
        Self { at: Instant::now() + limit, limit, what }
    }

    fn check(&self) -> Result<()> {
        if Instant::now() > self.at {
            return Err(BrowseError::TooSlow { what: self.what, limit: self.limit });
        }
        Ok(())
    }
}

/// A lossy text form of a path, for messages and JSON.
pub fn display_path(path: &BStr) -> String {
    path.to_str_lossy().into_owned()
}
