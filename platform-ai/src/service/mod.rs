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
mod reaction;
pub mod setup;
mod status;
mod worker;

pub use api::{CodeHit, CodeSearchQuery, CodeSearchResults, IndexSettings, SearchApi, api};
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

/// Code search as `app` runs it: the routes, and in embedded mode the worker too.
#[derive(Debug)]
pub struct AppCodeSearch {
    /// The routes' state.
    pub api: SearchApi,
    /// The index worker `app` runs (embedded mode), `None` when `git_hook` indexes or search is
    /// off.
    pub worker: Option<IndexWorker>,
    state: Readiness,
}

/// What `/readyz` says of code search.
#[derive(Clone, Debug)]
enum Readiness {
    Off(String),
    On { detail: String, store: std::sync::Arc<dyn crate::store::VectorStore> },
}

impl AppCodeSearch {
    /// Opens the model and store configuration names (see [`setup::open`]).
    ///
    /// # Errors
    ///
    /// When the model or the embedded store cannot be opened.
    pub async fn open(
        config: &platform_core::config::AppConfig,
        accounts: platform_core::accounts::Accounts,
        queue: platform_core::queue::Queue,
    ) -> Result<Self, setup::SetupError> {
        let mode = setup::mode(&config.embedding, &config.qdrant, &config.code_search);
        let backends = setup::open(&config.embedding, &config.qdrant, &config.code_search).await?;
        let (embedder, store) = match backends {
            setup::Backends::Ready { embedder, store } => (embedder, store),
            setup::Backends::Off { reason } => {
                tracing::info!(reason, "code search is off");
                let api = SearchApi::switched_off(accounts, queue, reason.clone());
                return Ok(Self { api, worker: None, state: Readiness::Off(reason) });
            }
        };
        let worker = match mode {
            setup::Mode::Embedded => {
                let indexer = crate::index::Indexer::new(
                    embedder.clone(),
                    store.clone(),
                    crate::chunk::Chunker::default(),
                )
                .map_err(|error| {
                    setup::SetupError::Store(crate::store::StoreError::Open {
                        location: config.code_search.index_path.display().to_string(),
                        reason: error.to_string(),
                    })
                })?;
                Some(IndexWorker::new(
                    accounts.database().clone(),
                    queue.clone(),
                    platform_git::store::RepoStore::new(&config.repos_root),
                    indexer,
                    IndexWorkerOptions {
                        sweep_every: config.code_search.sweep_every,
                        ..IndexWorkerOptions::default()
                    },
                ))
            }
            setup::Mode::Server | setup::Mode::Off(_) => None,
        };
        let detail = format!(
            "model {} ({} dimensions), {}",
            embedder.model().name,
            embedder.model().dimensions,
            match mode {
                setup::Mode::Server => "Qdrant server, indexed by git_hook",
                _ => "embedded store, indexed by this process",
            }
        );
        let state = Readiness::On { detail, store: store.clone() };
        let searcher = crate::search::Searcher::new(embedder, store);
        Ok(Self { api: SearchApi::new(accounts, searcher, queue), worker, state })
    }

    /// A check for `/readyz` that never makes the service unready: code search is optional, so
    /// its state (off and why, or the model and whether the store answers) is a detail.
    pub fn readiness_check(&self) -> platform_core::service::ReadinessCheck {
        let state = self.state.clone();
        platform_core::service::ReadinessCheck::with_detail("code_search", move || {
            let state = state.clone();
            async move {
                Ok::<_, std::convert::Infallible>(match state {
                    Readiness::Off(reason) => format!("off: {reason}"),
                    Readiness::On { detail, store } => {
                        match store.count(&crate::store::ChunkFilter::default()).await {
                            Ok(chunks) => format!("{detail}; {chunks} chunks"),
                            Err(error) => format!("degraded: {detail}; the store failed: {error}"),
                        }
                    }
                })
            }
        })
    }
}

/// Code search as `git_hook` runs it: the push reaction whenever code search is on, and the
/// index worker with a Qdrant server.
#[derive(Debug, Default)]
pub struct GitHookCodeSearch {
    /// The reaction to add to the pool.
    pub reaction: Option<IndexOnPush>,
    /// The worker to run (server mode).
    pub worker: Option<IndexWorker>,
}

impl GitHookCodeSearch {
    /// Sets up what configuration asks of `git_hook`.
    ///
    /// # Errors
    ///
    /// When the model cannot be loaded (server mode).
    pub async fn open(
        config: &platform_core::config::GitHookConfig,
        database: platform_core::db::Database,
        queue: platform_core::queue::Queue,
    ) -> Result<Self, setup::SetupError> {
        let mode = setup::mode(&config.embedding, &config.qdrant, &config.code_search);
        if let setup::Mode::Off(reason) = &mode {
            tracing::info!(reason, "code search is off: pushes are not indexed");
            return Ok(Self::default());
        }
        let reaction = Some(IndexOnPush::new(database.clone(), queue.clone()));
        if mode == setup::Mode::Embedded {
            return Ok(Self { reaction, worker: None });
        }
        let setup::Backends::Ready { embedder, store } =
            setup::open(&config.embedding, &config.qdrant, &config.code_search).await?
        else {
            // The server cannot be reached now: jobs wait in the queue for a restart.
            return Ok(Self { reaction, worker: None });
        };
        let indexer = crate::index::Indexer::new(embedder, store, crate::chunk::Chunker::default())
            .map_err(|error| {
                setup::SetupError::Store(crate::store::StoreError::Open {
                    location: "APP_QDRANT_URL".to_owned(),
                    reason: error.to_string(),
                })
            })?;
        let worker = IndexWorker::new(
            database,
            queue,
            platform_git::store::RepoStore::new(&config.repos_root),
            indexer,
            IndexWorkerOptions {
                sweep_every: config.code_search.sweep_every,
                ..IndexWorkerOptions::default()
            },
        );
        Ok(Self { reaction, worker: Some(worker) })
    }
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
