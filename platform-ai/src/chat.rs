//! Chat completions from an OpenAI-compatible API (`APP_AI_BASIC_URL`), streamed, through
//! async-openai: OpenAI itself, or Ollama, vLLM, llama.cpp's server and the like.
//!
//! Errors never carry the API key or the API's address: a connection failure says "cannot be
//! reached", and a message the API sends back is passed on with the key and address removed.

use std::pin::Pin;
use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestMessage,
    ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage,
    ChatCompletionStreamOptions, CreateChatCompletionRequest,
};
use futures_util::{Stream, StreamExt as _};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

/// Where and what to call.
#[derive(Clone, Debug)]
pub struct ChatConfig {
    /// The API base, for example `https://api.openai.com/v1` (`APP_AI_BASIC_URL`).
    pub base_url: Url,
    /// Sent as a bearer token (`APP_AI_API_KEY`).
    pub api_key: SecretString,
    /// The model name (`APP_AI_CHAT_MODEL`).
    pub model: String,
    /// The most tokens one answer may have (`APP_AI_ANSWER_TOKENS`).
    pub max_answer_tokens: u32,
}

/// Who said a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The instructions.
    System,
    /// The person asking.
    User,
    /// The model.
    Assistant,
}

/// One message sent to the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: String,
}

impl ChatMessage {
    /// A message of `role`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into() }
    }
}

/// Tokens counted by the API for one answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Usage {
    /// Tokens of the prompt.
    pub prompt_tokens: u32,
    /// Tokens of the answer.
    pub completion_tokens: u32,
}

/// What a streamed answer brings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatEvent {
    /// The next piece of the answer.
    Text(String),
    /// The tokens the API counted (at the end, when the API reports them).
    Usage(Usage),
}

/// A streamed answer.
pub type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatEvent, ChatError>> + Send>>;

/// Why the model gave no (complete) answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// The API cannot be reached (connection refused, reset, a name that does not resolve).
    #[error("the chat model cannot be reached ({reason})")]
    Unreachable {
        /// What failed, without the address.
        reason: String,
    },
    /// The API did not answer in time.
    #[error("the chat model did not answer within {seconds} s")]
    TimedOut {
        /// The limit.
        seconds: u64,
    },
    /// The API answered with an error, passed on (without the key or the address).
    #[error("the chat model answered with an error: {message}")]
    Model {
        /// The HTTP status, when there was one.
        status: Option<u16>,
        /// The API's message.
        message: String,
    },
}

/// A chat-completions client for one model.
#[derive(Clone)]
pub struct ChatClient {
    client: Client<OpenAIConfig>,
    config: ChatConfig,
}

impl std::fmt::Debug for ChatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatClient")
            .field("model", &self.config.model)
            .field("base_url", &self.config.base_url.as_str())
            .finish_non_exhaustive()
    }
}

impl ChatClient {
    /// A client for `config`; nothing is sent until the first [`ChatClient::stream`].
    pub fn new(config: ChatConfig) -> Self {
        let api = OpenAIConfig::new()
            .with_api_base(config.base_url.as_str().trim_end_matches('/'))
            .with_api_key(config.api_key.expose_secret());
        Self { client: Client::with_config(api), config }
    }

    /// The model asked.
    pub fn model(&self) -> &str {
        &self.config.model
    }

    /// The most tokens one answer may have.
    pub fn max_answer_tokens(&self) -> u32 {
        self.config.max_answer_tokens
    }

    /// Asks for an answer to `messages` and streams it; `first_within` bounds the wait for the
    /// answer to start (the API's 429 and 5xx answers are retried inside it).
    ///
    /// # Errors
    ///
    /// [`ChatError`] when the API cannot be reached, answers with an error, or is silent for
    /// `first_within`.
    pub async fn stream(
        &self,
        messages: &[ChatMessage],
        first_within: Duration,
    ) -> Result<ChatStream, ChatError> {
        #[allow(deprecated)]
        let request = CreateChatCompletionRequest {
            model: self.config.model.clone(),
            messages: messages.iter().map(request_message).collect(),
            max_completion_tokens: Some(self.config.max_answer_tokens),
            stream: Some(true),
            stream_options: Some(ChatCompletionStreamOptions {
                include_usage: Some(true),
                include_obfuscation: None,
            }),
            // The same question over the same code gives the same answer.
            temperature: Some(0.0),
            ..Default::default()
        };
        let seconds = first_within.as_secs().max(1);
        let stream = tokio::time::timeout(first_within, self.client.chat().create_stream(request))
            .await
            .map_err(|_| ChatError::TimedOut { seconds })?
            .map_err(|error| self.describe(error))?;
        let scrub = self.clone();
        Ok(Box::pin(stream.flat_map(move |item| {
            let events: Vec<Result<ChatEvent, ChatError>> = match item {
                Ok(chunk) => {
                    let mut events = Vec::new();
                    for choice in chunk.choices {
                        if let Some(text) = choice.delta.content.filter(|text| !text.is_empty()) {
                            events.push(Ok(ChatEvent::Text(text)));
                        }
                    }
                    if let Some(usage) = chunk.usage {
                        events.push(Ok(ChatEvent::Usage(Usage {
                            prompt_tokens: usage.prompt_tokens,
                            completion_tokens: usage.completion_tokens,
                        })));
                    }
                    events
                }
                Err(error) => vec![Err(scrub.describe(error))],
            };
            futures_util::stream::iter(events)
        })))
    }

    /// The error without the API's address or key.
    fn describe(&self, error: OpenAIError) -> ChatError {
        match error {
            OpenAIError::Reqwest(error) => {
                let error = error.without_url();
                match error.status() {
                    Some(status) => ChatError::Model {
                        status: Some(status.as_u16()),
                        message: format!("HTTP {status}"),
                    },
                    None if error.is_timeout() => {
                        ChatError::Unreachable { reason: "the connection timed out".to_owned() }
                    }
                    None if error.is_connect() => {
                        ChatError::Unreachable { reason: "connection failed".to_owned() }
                    }
                    None => ChatError::Unreachable { reason: self.scrub(&error.to_string()) },
                }
            }
            OpenAIError::ApiError(api) => ChatError::Model {
                status: Some(api.status_code.as_u16()),
                message: self.scrub(&api.api_error.message),
            },
            OpenAIError::StreamError(error) => {
                ChatError::Unreachable { reason: self.scrub(&error.to_string()) }
            }
            OpenAIError::JSONDeserialize(error, _) => ChatError::Model {
                status: None,
                message: format!("an answer that is not chat-completions JSON: {error}"),
            },
            other => ChatError::Model { status: None, message: self.scrub(&other.to_string()) },
        }
    }

    /// `text` with the key and the API's address (and host) taken out.
    fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        let key = self.config.api_key.expose_secret();
        if key.len() >= 4 {
            text = text.replace(key, "[key]");
        }
        let base = self.config.base_url.as_str().trim_end_matches('/');
        text = text.replace(base, "[the chat API]");
        if let Some(host) = self.config.base_url.host_str() {
            text = text.replace(host, "[the chat API]");
        }
        text
    }
}

fn request_message(message: &ChatMessage) -> ChatCompletionRequestMessage {
    let content = message.content.clone();
    match message.role {
        Role::System => ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage {
            content: content.into(),
            name: None,
        }),
        Role::User => ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage {
            content: content.into(),
            name: None,
        }),
        Role::Assistant => {
            ChatCompletionRequestMessage::Assistant(ChatCompletionRequestAssistantMessage {
                content: Some(content.into()),
                ..Default::default()
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_never_show_the_key_or_the_address() {
        let client = ChatClient::new(ChatConfig {
            base_url: Url::parse("http://chat.internal:8000/v1").unwrap_or_else(|_| unreachable!()),
            api_key: SecretString::from("sk-very-secret"),
            model: "m".to_owned(),
            max_answer_tokens: 10,
        });
        let scrubbed =
            client.scrub("Incorrect API key sk-very-secret for http://chat.internal:8000/v1/chat");
        assert!(!scrubbed.contains("sk-very-secret") && !scrubbed.contains("chat.internal"));
        assert!(scrubbed.contains("[key]"), "{scrubbed}");
    }
}
