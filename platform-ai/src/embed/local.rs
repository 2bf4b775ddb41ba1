//! A sentence-transformers BERT model (all-MiniLM-L6-v2) run in-process with candle.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::Tokenizer;

use super::{EmbedError, Embedder, EmbeddingModel};

/// Texts embedded in one forward pass: sorted by length first, so a batch pads little.
const BATCH: usize = 16;

/// sentence-transformers' window for all-MiniLM-L6-v2 when its configuration names none.
const DEFAULT_MAX_TOKENS: usize = 256;

/// all-MiniLM-L6-v2 (or another BERT sentence model with mean pooling) from files on disk:
/// `config.json`, `tokenizer.json`, `model.safetensors` and optionally
/// `sentence_bert_config.json` (for `max_seq_length`).
///
/// Vectors are mean-pooled over the tokens and L2-normalised, as sentence-transformers does.
/// Computing blocks a thread and uses every core, so [`Embedder::embed`] runs one batch at a time
/// on tokio's blocking pool.
#[derive(Clone)]
pub struct LocalEmbedder {
    inner: Arc<Inner>,
}

struct Inner {
    model: BertModel,
    tokenizer: Tokenizer,
    info: EmbeddingModel,
    max_tokens: usize,
    /// One computation at a time: each already spreads over every core.
    running: tokio::sync::Semaphore,
}

impl std::fmt::Debug for LocalEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEmbedder")
            .field("model", &self.inner.info)
            .field("max_tokens", &self.inner.max_tokens)
            .finish()
    }
}

impl LocalEmbedder {
    /// Loads the model in `dir`; its name is the directory's name.
    pub fn open(dir: &Path) -> Result<Self, EmbedError> {
        let name = dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "local".to_owned());
        Self::open_named(dir, &name)
    }

    /// Loads the model in `dir`, recorded under `name`.
    pub fn open_named(dir: &Path, name: &str) -> Result<Self, EmbedError> {
        Self::open_with_window(dir, name, max_seq_length(dir)?)
    }

    /// Loads the model in `dir`, recorded under `name`, reading at most `max_tokens` tokens of
    /// each text (capped by the model's own limit). A shorter window embeds long texts faster
    /// and less faithfully: give such an embedder a name of its own, as vectors are keyed by
    /// the model's name.
    pub fn open_with_window(dir: &Path, name: &str, max_tokens: usize) -> Result<Self, EmbedError> {
        let config_path = dir.join("config.json");
        let config: Config = serde_json::from_str(&read_text(&config_path)?)
            .map_err(|err| file_error(&config_path, err))?;
        let max_tokens = max_tokens.clamp(2, config.max_position_embeddings);

        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|err| file_error(&tokenizer_path, err))?;
        // Truncation and padding are ours to decide (the file's settings differ between exports).
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|err| file_error(&tokenizer_path, err))?;

        let weights_path = dir.join("model.safetensors");
        if !weights_path.is_file() {
            return Err(file_error(&weights_path, "not found"));
        }
        let device = Device::Cpu;
        // Read into memory rather than mapped: a mapping is unsafe if the file changes under us.
        let weights = std::fs::read(&weights_path).map_err(|err| file_error(&weights_path, err))?;
        let vars = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
            .map_err(|err| file_error(&weights_path, err))?;
        let model = BertModel::load(vars, &config).map_err(|err| file_error(&weights_path, err))?;
        let info = EmbeddingModel { name: name.to_owned(), dimensions: config.hidden_size };
        Ok(Self {
            inner: Arc::new(Inner {
                model,
                tokenizer,
                info,
                max_tokens,
                running: tokio::sync::Semaphore::new(1),
            }),
        })
    }

    /// The longest input in tokens; the rest of a longer text is ignored.
    pub fn max_tokens(&self) -> usize {
        self.inner.max_tokens
    }

    /// Embeds `texts` on the calling thread (blocking; it uses every core).
    pub fn embed_blocking(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.inner.embed(texts)
    }
}

#[async_trait]
impl Embedder for LocalEmbedder {
    fn model(&self) -> &EmbeddingModel {
        &self.inner.info
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let _running =
            self.inner.running.acquire().await.map_err(|_| self.inner.error("closed"))?;
        let inner = Arc::clone(&self.inner);
        let texts = texts.to_vec();
        tokio::task::spawn_blocking(move || {
            let borrowed: Vec<&str> = texts.iter().map(String::as_str).collect();
            inner.embed(&borrowed)
        })
        .await
        .map_err(|err| self.inner.error(err))?
    }
}

impl Inner {
    fn error(&self, reason: impl std::fmt::Display) -> EmbedError {
        EmbedError::Model { model: self.info.name.clone(), reason: reason.to_string() }
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|err| self.error(format!("tokenizing: {err}")))?;
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&index| encodings[index].get_ids().len());
        let mut vectors = vec![Vec::new(); encodings.len()];
        for batch in order.chunks(BATCH) {
            let ids: Vec<&[u32]> = batch.iter().map(|&index| encodings[index].get_ids()).collect();
            let pooled = self.forward(&ids).map_err(|err| self.error(err))?;
            for (&index, vector) in batch.iter().zip(pooled) {
                vectors[index] = vector;
            }
        }
        Ok(vectors)
    }

    /// One padded batch through the model, mean-pooled over real tokens and normalised.
    fn forward(&self, ids: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let device = &self.model.device;
        let width = ids.iter().map(|ids| ids.len()).max().unwrap_or(0).max(1);
        let mut padded = Vec::with_capacity(ids.len() * width);
        let mut mask = Vec::with_capacity(ids.len() * width);
        for ids in ids {
            padded.extend_from_slice(ids);
            padded.extend(std::iter::repeat_n(0, width - ids.len()));
            mask.extend(std::iter::repeat_n(1u32, ids.len()));
            mask.extend(std::iter::repeat_n(0u32, width - ids.len()));
        }
        let input_ids = Tensor::from_vec(padded, (ids.len(), width), device)?;
        let attention = Tensor::from_vec(mask, (ids.len(), width), device)?;
        let token_types = input_ids.zeros_like()?;
        let hidden = self.model.forward(&input_ids, &token_types, Some(&attention))?;
        let weights = attention.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&weights)?.sum(1)?;
        let counts = weights.sum(1)?.clamp(1e-9f32, f32::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12f32, f32::MAX)?;
        mean.broadcast_div(&norms)?.to_vec2::<f32>()
    }
}

fn max_seq_length(dir: &Path) -> Result<usize, EmbedError> {
    let path = dir.join("sentence_bert_config.json");
    if !path.exists() {
        return Ok(DEFAULT_MAX_TOKENS);
    }
    let config: serde_json::Value =
        serde_json::from_str(&read_text(&path)?).map_err(|err| file_error(&path, err))?;
    Ok(config
        .get("max_seq_length")
        .and_then(serde_json::Value::as_u64)
        .and_then(|length| usize::try_from(length).ok())
        .unwrap_or(DEFAULT_MAX_TOKENS))
}

fn read_text(path: &Path) -> Result<String, EmbedError> {
    std::fs::read_to_string(path).map_err(|err| file_error(path, err))
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> EmbedError {
    EmbedError::ModelFile { path: PathBuf::from(path), reason: reason.to_string() }
}
