//! Code search as the platform's services run it: index jobs after pushes, the worker that
//! does them, each repository's index status in PostgreSQL, and the search routes.
//!
//! - [`IndexOnPush`], a push reaction of `git_hook`'s pool: a push that moved a repository's
//!   default branch records a request in `code_index` and publishes an [`IndexJob`] on
//!   [`INDEX_STREAM`].
//! - [`IndexWorker`] consumes the jobs (group [`INDEX_GROUP`]) and brings each index to the
//!   default branch's commit with an [`crate::index::Indexer`]; its sweep asks for jobs for
//!   whatever else left an index behind (a fork, a default branch or model changed, a deleted or
//!   switched-off repository, a lost job). A job that fails (the model or the store is down) is
//!   retried with backoff, its error kept in the status; pushes are never held up by it.
//! - [`SearchApi`] and [`api`]: `GET /api/search/code`, each repository's
//!   `GET`/`PATCH /api/repos/{owner}/{name}/code-index` and its `POST .../reindex`.
//!
//! | method | path | who may | answer |
//! |---|---|---|---|
//! | `GET` | `/api/search/code?q=&repo=&language=&path=&limit=&ranking=` | anyone (results: what they can read now) | 200 and the best chunks; 503 naming the model or store when one is down |
//! | `GET` | `/api/repos/{owner}/{name}/code-index` | read | 200 and the index status |
//! | `PATCH` | `/api/repos/{owner}/{name}/code-index` | admin | 200; `{"enabled": false}` switches indexing off and removes the chunks |
//! | `POST` | `/api/repos/{owner}/{name}/code-index/reindex` | admin | 202; the whole tree is indexed again |
//!
//! Which process owns an embedded store (no `APP_QDRANT_URL`): `app`, which then runs the
//! worker itself, since it also searches; `git_hook` only publishes jobs. With a Qdrant server
//! any number of either run, and `git_hook`'s pool runs the worker.

use serde::{Deserialize, Serialize};

mod api;
pub mod ask;
mod processes;
mod reaction;
pub mod setup;
mod status;
mod worker;

pub use api::{CodeHit, CodeSearchQuery, CodeSearchResults, IndexSettings, SearchApi, api};
pub use ask::{AskApi, AskParts};
pub use processes::{AppCodeSearch, GitHookCodeSearch};
pub use reaction::IndexOnPush;
pub use status::IndexStatus;
pub use worker::{IndexOutcome, IndexWorker, IndexWorkerOptions, WorkerError};

/// The migrations that create this crate's table (`code_index`); run them with
/// `platform_core::db::Database::migrate_all` after the core's and platform-git's.
pub const AI_MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("migrations");

/// The queue stream index jobs travel on.
pub const INDEX_STREAM: &str = "code_index";

/// The queue group of index workers.
pub const INDEX_GROUP: &str = "code_index";

/// A request to bring a repository's index to its default branch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexJob {
    /// The repository.
    pub repository_id: i64,
    /// Why it was asked for.
    pub reason: IndexReason,
}

/// Why an index job was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexReason {
    /// A push moved the default branch.
    Push,
    /// An administrator asked for the whole tree to be indexed again.
    Reindex,
    /// The repository's indexing was switched on or off.
    Settings,
    /// The worker's sweep found the index behind.
    Sweep,
}

impl IndexStatus {
    /// The status of a repository nothing was asked of yet.
    pub fn nothing_yet(repository_id: i64) -> Self {
        Self {
            repository_id,
            enabled: true,
            indexed_commit: None,
            indexed_branch: None,
            model: None,
            dimensions: None,
            files: 0,
            chunks: 0,
            skipped: serde_json::json!({}),
            indexed_at: None,
            pending: 0,
            last_error: None,
            failed_at: None,
        }
    }
}
