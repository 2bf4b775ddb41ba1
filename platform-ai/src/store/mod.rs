//! Where chunks and their vectors live: one trait, two stores.
//!
//! - [`EdgeStore`]: Qdrant's engine in this process (`qdrant-edge`), persisted in a directory.
//!   One process owns a directory; a second one opening it gets [`StoreError::Locked`].
//! - [`QdrantStore`]: a Qdrant server over gRPC (`qdrant-client`), shared by any number of
//!   processes.
//!
//! Both hold, per chunk, a dense vector (the embedding), a sparse vector (BM25 terms, weighted
//! by IDF at query time) and a [`ChunkPayload`]; both fuse dense and sparse results by
//! reciprocal rank for hybrid search. The conformance suite in `tests/store.rs` checks the
//! behaviour every store must have.

mod edge;
mod qdrant;

use std::collections::HashMap;
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::embed::EmbeddingModel;
use crate::lexical::SparseVector;

pub use edge::EdgeStore;
pub use qdrant::QdrantStore;

/// What is stored with each chunk, and returned with each hit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkPayload {
    /// The repository's id.
    pub repo_id: i64,
    /// The file's path in the repository.
    pub path: String,
    /// The language's name ([`crate::chunk::Language::name`]).
    pub language: String,
    /// First line, 1-based.
    pub start_line: u32,
    /// Last line, inclusive.
    pub end_line: u32,
    /// The git blob the chunk came from (hex).
    pub blob: String,
    /// The key of the chunk's content and model: equal keys, equal vectors.
    pub content_key: String,
    /// The chunk's text.
    pub text: String,
}

/// One chunk to store.
#[derive(Clone, Debug)]
pub struct ChunkPoint {
    /// A unique id (a random UUID).
    pub id: uuid::Uuid,
    /// The embedding.
    pub dense: Vec<f32>,
    /// The BM25 terms.
    pub sparse: SparseVector,
    /// The payload.
    pub payload: ChunkPayload,
}

/// Which chunks: every condition given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkFilter {
    /// In one of these repositories (`Some(vec![])` matches nothing).
    pub repo_ids: Option<Vec<i64>>,
    /// At one of these paths.
    pub paths: Option<Vec<String>>,
    /// In files of this language.
    pub language: Option<String>,
    /// Under this directory (a path prefix ending at a `/` boundary), or this very file.
    pub under: Option<String>,
}

impl ChunkFilter {
    /// Chunks of one repository.
    pub fn repo(repo_id: i64) -> Self {
        Self { repo_ids: Some(vec![repo_id]), ..Self::default() }
    }

    /// Chunks of one file of one repository.
    pub fn file(repo_id: i64, path: &str) -> Self {
        Self {
            repo_ids: Some(vec![repo_id]),
            paths: Some(vec![path.to_owned()]),
            ..Self::default()
        }
    }

    /// True when the filter can match nothing (an empty list of repositories or paths).
    pub fn matches_nothing(&self) -> bool {
        self.repo_ids.as_ref().is_some_and(Vec::is_empty)
            || self.paths.as_ref().is_some_and(Vec::is_empty)
    }
}

/// How a search ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ranking {
    /// By the embedding only.
    Dense,
    /// By BM25 terms only.
    Lexical,
    /// Both, fused by reciprocal rank ([`crate::search::Searcher`] then puts exact matches
    /// of the query first).
    Hybrid,
}

/// A search.
#[derive(Clone, Debug)]
pub struct StoreQuery {
    /// The query's embedding (needed for dense and hybrid ranking).
    pub dense: Option<Vec<f32>>,
    /// The query's terms (needed for lexical and hybrid ranking).
    pub sparse: Option<SparseVector>,
    /// How to rank.
    pub ranking: Ranking,
    /// Which chunks may be returned.
    pub filter: ChunkFilter,
    /// How many hits.
    pub limit: usize,
    /// How many candidates each ranking contributes before fusion.
    pub candidates: usize,
}

/// One result.
#[derive(Clone, Debug)]
pub struct Hit {
    /// The chunk's id.
    pub id: uuid::Uuid,
    /// The store's score (cosine similarity, BM25, or the fused rank score).
    pub score: f32,
    /// The chunk.
    pub payload: ChunkPayload,
}

/// A store of chunks, shared between tasks (`Arc<dyn VectorStore>`).
#[async_trait]
pub trait VectorStore: Send + Sync + fmt::Debug {
    /// The model whose vectors this store holds.
    fn model(&self) -> &EmbeddingModel;

    /// Adds or replaces chunks (by id).
    async fn upsert(&self, points: Vec<ChunkPoint>) -> Result<(), StoreError>;

    /// Deletes the chunks the filter matches.
    async fn delete(&self, filter: &ChunkFilter) -> Result<(), StoreError>;

    /// Gives the chunks of `from` in repository `repo_id` the path `to` (a rename), with
    /// `language` as their language.
    async fn rename(
        &self,
        repo_id: i64,
        from: &str,
        to: &str,
        language: &str,
    ) -> Result<(), StoreError>;

    /// The best chunks for the query, best first.
    async fn search(&self, query: &StoreQuery) -> Result<Vec<Hit>, StoreError>;

    /// How many chunks the filter matches.
    async fn count(&self, filter: &ChunkFilter) -> Result<u64, StoreError>;

    /// The files of a repository that have chunks, with the blob they came from (path → hex
    /// blob id): what a reconciling index compares the tree against.
    async fn indexed_files(&self, repo_id: i64) -> Result<HashMap<String, String>, StoreError>;

    /// Dense vectors already stored for these content keys, so the same content is never
    /// embedded twice: from any repository, and still after the chunks that had them are gone.
    async fn vectors_for(&self, keys: &[String]) -> Result<HashMap<String, Vec<f32>>, StoreError>;
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process has the embedded store open.
    #[error(
        "the embedded vector store at {path} is in use by another process; only one process may \
         open it (run one indexing process, or set APP_QDRANT_URL to share a Qdrant server)"
    )]
    Locked {
        /// The store's directory.
        path: std::path::PathBuf,
    },
    /// The store could not be opened or created.
    #[error("opening the vector store at {location}: {reason}")]
    Open {
        /// The directory or server.
        location: String,
        /// What failed.
        reason: String,
    },
    /// The store holds vectors of another model than the one configured.
    #[error("the vector store at {location} holds vectors of {found}, not of {configured}")]
    ModelMismatch {
        /// The directory or collection.
        location: String,
        /// The model recorded with the store.
        found: EmbeddingModel,
        /// The model configured now.
        configured: EmbeddingModel,
    },
    /// A vector's length is not the model's.
    #[error("a vector of {actual} dimensions for a store of {expected}")]
    Dimensions {
        /// The model's dimensions.
        expected: usize,
        /// The vector's.
        actual: usize,
    },
    /// The store is unreachable or failed an operation.
    #[error("vector store ({location}) {operation}: {reason}")]
    Unavailable {
        /// The directory or server.
        location: String,
        /// What was being done (`search`, `upsert`, ...).
        operation: &'static str,
        /// What failed, without credentials.
        reason: String,
    },
}

/// A query without the vector its ranking needs: a caller's mistake, said as such.
pub(crate) fn missing_vector(what: &str) -> StoreError {
    StoreError::Unavailable {
        location: "query".to_owned(),
        operation: "search",
        reason: format!("the {what} vector of the query is missing"),
    }
}

/// The name of a collection (or a directory) for a model: its name made safe, and its length,
/// so a change of model never mixes vectors.
pub fn collection_name(prefix: &str, model: &EmbeddingModel) -> String {
    let slug: String = model
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect();
    format!("{prefix}_{slug}_{}", model.dimensions)
}
