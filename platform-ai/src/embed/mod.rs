//! Embedding models: text in, one unit-length vector per text out.
//!
//! Two implementations of [`Embedder`], chosen by configuration:
//! - [`LocalEmbedder`] runs a sentence-transformers BERT model (all-MiniLM-L6-v2) in this
//!   process with candle, from model files on disk. Nothing leaves the machine.
//! - [`OpenAiEmbedder`] calls an OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, Ollama,
//!   vLLM, text-embeddings-inference, llama.cpp's server, ...).
//!
//! The index records the [`EmbeddingModel`] it was built with; vectors of two models are never
//! mixed.

mod local;
mod openai;

use std::fmt;

use async_trait::async_trait;

pub use local::LocalEmbedder;
pub use openai::{OpenAiEmbedder, OpenAiEmbedderConfig};

/// Which model made a vector: its name and the vector length.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct EmbeddingModel {
    /// The model's name, as configured (for example `all-MiniLM-L6-v2`).
    pub name: String,
    /// The length of each vector.
    pub dimensions: usize,
}

impl fmt::Display for EmbeddingModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} dimensions)", self.name, self.dimensions)
    }
}

/// Turns texts into vectors; implementations are shared between tasks (`Arc<dyn Embedder>`).
#[async_trait]
pub trait Embedder: Send + Sync + fmt::Debug {
    /// The model, as recorded with an index.
    fn model(&self) -> &EmbeddingModel;

    /// Embeds `texts`, returning one vector of [`EmbeddingModel::dimensions`] per text, in order.
    /// Texts longer than the model's input window are truncated by the model.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// Why texts could not be embedded.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// A model file is missing or unreadable.
    #[error("embedding model file {path}: {reason}")]
    ModelFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The model failed while computing.
    #[error("embedding model {model}: {reason}")]
    Model {
        /// The model's name.
        model: String,
        /// What failed.
        reason: String,
    },
    /// The embeddings API could not be reached or answered with an error (after retries).
    #[error("embeddings API ({model}): {reason}")]
    Api {
        /// The model's name.
        model: String,
        /// What the API or the connection said, without credentials or URLs.
        reason: String,
    },
    /// The API returned vectors of another length than configured.
    #[error(
        "embeddings API returned {actual}-dimensional vectors for model {model}, but \
         APP_EMBED_MODEL_DIMENSIONS is {expected}"
    )]
    Dimensions {
        /// The model's name.
        model: String,
        /// The configured length.
        expected: usize,
        /// The returned length.
        actual: usize,
    },
    /// The API returned another number of vectors than texts sent.
    #[error("embeddings API ({model}) returned {actual} vectors for {expected} inputs")]
    Count {
        /// The model's name.
        model: String,
        /// Texts sent.
        expected: usize,
        /// Vectors returned.
        actual: usize,
    },
}
