//! An OpenAI-compatible `/v1/embeddings` endpoint, through async-openai.

use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::embeddings::{CreateEmbeddingRequest, EmbeddingInput};
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::{EmbedError, Embedder, EmbeddingModel};

/// Where and what to call.
#[derive(Clone, Debug)]
pub struct OpenAiEmbedderConfig {
    /// The API base, for example `https://api.openai.com/v1` (`APP_EMBED_MODEL_BASE_URL`).
    pub base_url: Url,
    /// Sent as a bearer token (`APP_EMBED_MODEL_API_KEY`).
    pub api_key: SecretString,
    /// The model name (`APP_EMBED_MODEL_NAME`).
    pub model: String,
    /// The vector length the model returns (`APP_EMBED_MODEL_DIMENSIONS`); checked on every
    /// answer.
    pub dimensions: usize,
    /// Inputs in one request (OpenAI accepts up to 2,048).
    pub max_batch: usize,
    /// Characters in one request, summed over its inputs (OpenAI caps a request at 300,000
    /// tokens; code averages three to four characters a token).
    pub max_batch_chars: usize,
    /// How long one request may take, retries included.
    pub timeout: Duration,
}

impl OpenAiEmbedderConfig {
    /// A configuration with the limits that suit OpenAI and the common self-hosted servers.
    pub fn new(base_url: Url, api_key: SecretString, model: String, dimensions: usize) -> Self {
        Self {
            base_url,
            api_key,
            model,
            dimensions,
            max_batch: 64,
            max_batch_chars: 200_000,
            timeout: Duration::from_secs(120),
        }
    }
}

/// Embeddings from an OpenAI-compatible API. Requests are batched within the configured limits;
/// 429, 5xx and connection failures are retried with exponential backoff, waiting as long as a
/// `Retry-After` header says (async-openai's retry policy, three retries).
#[derive(Clone)]
pub struct OpenAiEmbedder {
    client: Client<OpenAIConfig>,
    config: OpenAiEmbedderConfig,
    info: EmbeddingModel,
}

impl std::fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiEmbedder")
            .field("model", &self.info)
            .field("base_url", &self.config.base_url.as_str())
            .finish_non_exhaustive()
    }
}

impl OpenAiEmbedder {
    /// A client for `config`; nothing is sent until the first [`Embedder::embed`].
    pub fn new(config: OpenAiEmbedderConfig) -> Self {
        let api = OpenAIConfig::new()
            .with_api_base(config.base_url.as_str().trim_end_matches('/'))
            .with_api_key(config.api_key.expose_secret());
        let info = EmbeddingModel { name: config.model.clone(), dimensions: config.dimensions };
        Self { client: Client::with_config(api), config, info }
    }

    fn error(&self, reason: impl Into<String>) -> EmbedError {
        EmbedError::Api { model: self.info.name.clone(), reason: reason.into() }
    }

    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let request = CreateEmbeddingRequest {
            model: self.config.model.clone(),
            input: EmbeddingInput::StringArray(texts.to_vec()),
            ..Default::default()
        };
        let response =
            tokio::time::timeout(self.config.timeout, self.client.embeddings().create(request))
                .await
                .map_err(|_| {
                    self.error(format!("no answer within {} s", self.config.timeout.as_secs()))
                })?
                .map_err(|err| self.error(describe(err)))?;
        if response.data.len() != texts.len() {
            return Err(EmbedError::Count {
                model: self.info.name.clone(),
                expected: texts.len(),
                actual: response.data.len(),
            });
        }
        let mut data = response.data;
        data.sort_by_key(|embedding| embedding.index);
        let mut vectors = Vec::with_capacity(data.len());
        for embedding in data {
            if embedding.embedding.len() != self.config.dimensions {
                return Err(EmbedError::Dimensions {
                    model: self.info.name.clone(),
                    expected: self.config.dimensions,
                    actual: embedding.embedding.len(),
                });
            }
            vectors.push(embedding.embedding);
        }
        Ok(vectors)
    }
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn model(&self) -> &EmbeddingModel {
        &self.info
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut vectors = Vec::with_capacity(texts.len());
        for batch in batches(texts, self.config.max_batch, self.config.max_batch_chars) {
            vectors.extend(self.embed_batch(batch).await?);
        }
        Ok(vectors)
    }
}

/// Consecutive runs of `texts` of at most `max_items` texts and `max_chars` characters (a text
/// longer than that alone makes a batch of one).
fn batches(texts: &[String], max_items: usize, max_chars: usize) -> Vec<&[String]> {
    let mut batches = Vec::new();
    let mut start = 0;
    let mut chars = 0;
    for (index, text) in texts.iter().enumerate() {
        let full = index - start >= max_items.max(1) || chars + text.len() > max_chars;
        if full && index > start {
            batches.push(&texts[start..index]);
            start = index;
            chars = 0;
        }
        chars += text.len();
    }
    if start < texts.len() {
        batches.push(&texts[start..]);
    }
    batches
}

/// The error without the request URL (it can name internal hosts) or anything of the key.
fn describe(err: OpenAIError) -> String {
    match err {
        OpenAIError::Reqwest(err) => {
            let err = err.without_url();
            match err.status() {
                Some(status) => format!("HTTP {status}"),
                None if err.is_timeout() => "timed out".to_owned(),
                None if err.is_connect() => "connection failed".to_owned(),
                None => err.to_string(),
            }
        }
        OpenAIError::ApiError(api) => api.to_string(),
        OpenAIError::JSONDeserialize(err, _) => format!("unreadable answer: {err}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::batches;

    #[test]
    fn batches_respect_both_limits_and_keep_order() {
        let texts: Vec<String> = ["aaaa", "bb", "c", "dddddd", "e"].map(str::to_owned).to_vec();
        let lengths: Vec<usize> = batches(&texts, 2, 6).iter().map(|batch| batch.len()).collect();
        assert_eq!(lengths, [2, 1, 1, 1]);
        let joined: Vec<&String> = batches(&texts, 2, 6).into_iter().flatten().collect();
        assert_eq!(joined, texts.iter().collect::<Vec<_>>());
        assert_eq!(batches(&texts, 10, 1_000).len(), 1);
        assert!(batches(&[], 10, 10).is_empty());
    }
}
