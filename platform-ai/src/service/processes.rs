//! What `app` and `git_hook` each run of code search, from their configuration.

use std::path::Path;
use std::sync::Arc;

use platform_core::accounts::Accounts;
use platform_core::config::{AppConfig, CodeSearchConfig, GitHookConfig};
use platform_core::db::Database;
use platform_core::queue::Queue;
use platform_core::redis::Redis;
use platform_core::service::ReadinessCheck;
use platform_core::telemetry::Metrics;
use utoipa_axum::router::OpenApiRouter;

use super::{AskApi, AskParts, IndexOnPush, IndexWorker, IndexWorkerOptions, SearchApi, setup};
use crate::chat::{ChatClient, ChatConfig};
use crate::chunk::Chunker;
use crate::embed::Embedder;
use crate::index::Indexer;
use crate::search::Searcher;
use crate::store::{ChunkFilter, StoreError, VectorStore};

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
    On { detail: String, store: Arc<dyn VectorStore> },
}

impl AppCodeSearch {
    /// Opens the model and store configuration names (see [`setup::open`]).
    ///
    /// # Errors
    ///
    /// When the model or the embedded store cannot be opened.
    pub async fn open(
        config: &AppConfig,
        accounts: Accounts,
        queue: Queue,
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
            setup::Mode::Embedded => Some(index_worker(
                accounts.database().clone(),
                queue.clone(),
                &config.repos_root,
                (embedder.clone(), store.clone()),
                &config.code_search,
            )?),
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
        let searcher = Searcher::new(embedder, store);
        Ok(Self { api: SearchApi::new(accounts, searcher, queue), worker, state })
    }

    /// The code search routes and ask-the-code's on them, asking the chat model of
    /// `config.ai` with the limits of `config.ask`; ask's metrics are registered in `metrics`.
    pub fn routes(
        &self,
        config: &AppConfig,
        accounts: Accounts,
        redis: Redis,
        metrics: &Metrics,
    ) -> OpenApiRouter {
        let chat = ChatClient::new(ChatConfig {
            base_url: config.ai.base_url.clone(),
            api_key: config.ai.api_key.clone(),
            model: config.ask.chat_model.clone(),
            max_answer_tokens: config.ask.answer_tokens,
        });
        let parts = AskParts {
            accounts,
            redis,
            searcher: self.api.searcher(),
            chat,
            config: config.ask.clone(),
            public_url: config.domain.public_url.clone(),
        };
        super::api(self.api.clone()).merge(super::ask::api(AskApi::new(parts, metrics)))
    }

    /// A check for `/readyz` that never makes the service unready: code search is optional, so
    /// its state (off and why, or the model and whether the store answers) is a detail.
    pub fn readiness_check(&self) -> ReadinessCheck {
        let state = self.state.clone();
        ReadinessCheck::with_detail("code_search", move || {
            let state = state.clone();
            async move {
                Ok::<_, std::convert::Infallible>(match state {
                    Readiness::Off(reason) => format!("off: {reason}"),
                    Readiness::On { detail, store } => {
                        match store.count(&ChunkFilter::default()).await {
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
        config: &GitHookConfig,
        database: Database,
        queue: Queue,
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
            // Only when no model is named, which `mode` has ruled out.
            return Ok(Self { reaction, worker: None });
        };
        let worker = index_worker(
            database,
            queue,
            &config.repos_root,
            (embedder, store),
            &config.code_search,
        )?;
        Ok(Self { reaction, worker: Some(worker) })
    }
}

/// A worker over `repos_root` indexing with the model and store of `backends`.
fn index_worker(
    database: Database,
    queue: Queue,
    repos_root: &Path,
    (embedder, store): (Arc<dyn Embedder>, Arc<dyn VectorStore>),
    code_search: &CodeSearchConfig,
) -> Result<IndexWorker, setup::SetupError> {
    let indexer = Indexer::new(embedder, store, Chunker::default()).map_err(|error| {
        setup::SetupError::Store(StoreError::Open {
            location: code_search.index_path.display().to_string(),
            reason: error.to_string(),
        })
    })?;
    let options = IndexWorkerOptions {
        sweep_every: code_search.sweep_every,
        ..IndexWorkerOptions::default()
    };
    Ok(IndexWorker::new(
        database,
        queue,
        platform_git::store::RepoStore::new(repos_root),
        indexer,
        options,
    ))
}
