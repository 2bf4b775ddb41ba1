//! The model and the store a service runs code search on, chosen by configuration.

use std::sync::Arc;

use platform_core::config::{CodeSearchConfig, EmbeddingConfig, QdrantConfig};

use crate::embed::{EmbedError, Embedder, LocalEmbedder, OpenAiEmbedder, OpenAiEmbedderConfig};
use crate::store::{EdgeStore, QdrantStore, StoreError, VectorStore};

/// What code search runs on in this process.
#[derive(Clone, Debug)]
pub enum Backends {
    /// A model and a store, of one model.
    Ready {
        /// Embeds chunks and queries.
        embedder: Arc<dyn Embedder>,
        /// Holds the chunks.
        store: Arc<dyn VectorStore>,
    },
    /// Code search is off here, for this reason (said in the log and in every 503).
    Off {
        /// Why, naming the variable that decides it.
        reason: String,
    },
}

/// Where code search runs, decided from configuration without loading anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Off, for this reason.
    Off(String),
    /// The embedded store: `app` owns it, indexes and searches; `git_hook` only asks for jobs.
    Embedded,
    /// A Qdrant server: `app` searches, `git_hook`'s pool indexes; any number of each.
    Server,
}

/// The mode configuration asks for.
pub fn mode(
    embedding: &EmbeddingConfig,
    qdrant: &QdrantConfig,
    code_search: &CodeSearchConfig,
) -> Mode {
    if !code_search.enabled {
        return Mode::Off("code search is switched off (APP_CODE_SEARCH_ENABLED=false)".to_owned());
    }
    if embedding.model_path.is_none() && !embedding.api_configured {
        return Mode::Off(
            "code search has no embedding model: set APP_EMBED_MODEL_PATH (a local model) or \
             APP_EMBED_MODEL_NAME and APP_EMBED_MODEL_BASE_URL (an API)"
                .to_owned(),
        );
    }
    if qdrant.url.is_some() { Mode::Server } else { Mode::Embedded }
}

/// Why code search could not be set up; the service does not start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The local model's files are missing or unreadable.
    #[error("APP_EMBED_MODEL_PATH: {0}")]
    Model(#[source] EmbedError),
    /// The embedded store cannot be opened (another process owns it: set `APP_QDRANT_URL`).
    #[error("APP_CODE_INDEX_PATH: {0}")]
    Store(#[source] StoreError),
    /// An embedded store where several processes could open it (the chart's `app` with more
    /// than one replica).
    #[error(
        "code search needs APP_QDRANT_URL here: app may run several replicas \
         (APP_EMBEDDED_STORE_ALLOWED=false), and an embedded store has one owner; set \
         APP_QDRANT_URL to a Qdrant server, or run one replica, or set APP_CODE_SEARCH_ENABLED=false"
    )]
    EmbeddedNotAllowed,
    /// `APP_QDRANT_URL` names no address a client can be made for.
    #[error("APP_QDRANT_URL: {0}")]
    Qdrant(#[source] StoreError),
}

/// The embedder configuration names: the local model when `APP_EMBED_MODEL_PATH` is set, the
/// API when an embeddings API was named; `None` when neither (code is never sent to the chat
/// API just because its address is set).
///
/// # Errors
///
/// [`SetupError::Model`] when the local model cannot be loaded.
pub fn embedder(embedding: &EmbeddingConfig) -> Result<Option<Arc<dyn Embedder>>, SetupError> {
    if let Some(path) = &embedding.model_path {
        let local = LocalEmbedder::open(path).map_err(SetupError::Model)?;
        return Ok(Some(Arc::new(local)));
    }
    if embedding.api_configured {
        let config = OpenAiEmbedderConfig::new(
            embedding.base_url.clone(),
            embedding.api_key.clone(),
            embedding.model.clone(),
            embedding.dimensions as usize,
        );
        return Ok(Some(Arc::new(OpenAiEmbedder::new(config))));
    }
    Ok(None)
}

/// Opens what code search needs in a process that searches or indexes: the embedder, and the
/// Qdrant server's collections when `APP_QDRANT_URL` is set, else the embedded store under
/// `APP_CODE_INDEX_PATH`, which this process then owns (a second process opening it fails
/// with a message naming `APP_QDRANT_URL`).
///
/// A Qdrant server that cannot be reached does not fail the service: searches answer 503 naming
/// the store and index jobs retry, until the server answers.
///
/// # Errors
///
/// When the model or the embedded store cannot be opened.
pub async fn open(
    embedding: &EmbeddingConfig,
    qdrant: &QdrantConfig,
    code_search: &CodeSearchConfig,
) -> Result<Backends, SetupError> {
    if let Mode::Off(reason) = mode(embedding, qdrant, code_search) {
        return Ok(Backends::Off { reason });
    }
    let Some(embedder) = embedder(embedding)? else {
        return Ok(Backends::Off { reason: "code search has no embedding model".to_owned() });
    };
    let model = embedder.model().clone();
    let store: Arc<dyn VectorStore> = match &qdrant.url {
        Some(url) => {
            let store = QdrantStore::new(url, qdrant.api_key.as_ref(), "code", &model)
                .map_err(SetupError::Qdrant)?;
            // Down now is not down for good: every use tries again, so search and indexing
            // resume on their own once the server answers.
            if let Err(error) = store.ready().await {
                tracing::warn!(
                    error = %error,
                    "the vector store cannot be reached yet; code search answers 503 until it can"
                );
            }
            Arc::new(store)
        }
        None => {
            if !code_search.embedded_allowed {
                return Err(SetupError::EmbeddedNotAllowed);
            }
            let root = code_search.index_path.clone();
            let location = root.display().to_string();
            let opened = tokio::task::spawn_blocking(move || EdgeStore::open(&root, &model))
                .await
                .map_err(|error| {
                    SetupError::Store(StoreError::Open { location, reason: error.to_string() })
                })?;
            Arc::new(opened.map_err(SetupError::Store)?)
        }
    };
    Ok(Backends::Ready { embedder, store })
}
