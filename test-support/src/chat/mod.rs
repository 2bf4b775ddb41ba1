//! An OpenAI-compatible chat-completions server running a real small model in this process
//! (SmolLM2-135M-Instruct on the CPU), for tests and benchmarks of ask-the-code and for
//! `scripts/run.sh` when no chat API is configured.
//!
//! It speaks the wire format of OpenAI's `POST /v1/chat/completions` (what Ollama, vLLM and
//! llama.cpp's server also speak): JSON answers, or Server-Sent Events with
//! `stream_options.include_usage`. It records every request (the messages as sent), and faults can
//! be injected: every request refused while [`ChatServer::set_down`] holds, the next ones failing
//! with a chosen status and message, a delay before the first token, or the server stopped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

mod model;

pub use model::{ChatModel, Generated, MODEL_FILE, Turn};

/// One request the server received.
#[derive(Clone, Debug)]
pub struct RecordedChat {
    /// The model the request named.
    pub model: String,
    /// The messages, in order.
    pub messages: Vec<Turn>,
    /// `max_tokens` or `max_completion_tokens`, if given.
    pub max_tokens: Option<usize>,
    /// Whether the answer was asked for as a stream.
    pub stream: bool,
    /// When the request had been read.
    pub received_at: std::time::Instant,
}

/// The chat-completions server; dropping every clone stops it.
#[derive(Clone)]
pub struct ChatServer {
    url: String,
    state: Arc<Shared>,
    serving: Arc<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for ChatServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatServer").field("url", &self.url).finish_non_exhaustive()
    }
}

struct Shared {
    model: ChatModel,
    /// One generation at a time, as one accelerator serves one batch: timings stay comparable.
    generating: Arc<Semaphore>,
    recorded: Mutex<Vec<RecordedChat>>,
    faults: Mutex<Faults>,
}

#[derive(Default)]
struct Faults {
    down: bool,
    fail_next: usize,
    fail_status: u16,
    fail_message: String,
    first_token_delay: Duration,
    api_key: Option<String>,
}

/// The most tokens an answer has when the request names no limit.
const DEFAULT_MAX_TOKENS: usize = 256;

impl ChatServer {
    /// Loads the model from `model_dir` (see [`ChatModel::open`]) and serves it on a free
    /// loopback port.
    ///
    /// # Errors
    ///
    /// When the model cannot be loaded or no port can be bound.
    pub async fn start(model_dir: &Path) -> anyhow::Result<Self> {
        Self::start_on(model_dir, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Loads the model and serves it on `addr`.
    ///
    /// # Errors
    ///
    /// When the model cannot be loaded or `addr` cannot be bound.
    pub async fn start_on(model_dir: &Path, addr: SocketAddr) -> anyhow::Result<Self> {
        let dir = model_dir.to_owned();
        let model = tokio::task::spawn_blocking(move || ChatModel::open(&dir)).await??;
        let state = Arc::new(Shared {
            model,
            generating: Arc::new(Semaphore::new(1)),
            recorded: Mutex::new(Vec::new()),
            faults: Mutex::new(Faults::default()),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .route("/v1/models", get(models))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let url = format!("http://{}/v1", listener.local_addr()?);
        let serving = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, state, serving: Arc::new(serving) })
    }

    /// The API base URL, ending in `/v1`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The model, to render or count prompts as the server does.
    pub fn model(&self) -> &ChatModel {
        &self.state.model
    }

    /// Every request received so far, oldest first.
    pub fn recorded(&self) -> Vec<RecordedChat> {
        self.state.recorded.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// While `down`, every request is answered 503 with an OpenAI-style error.
    pub fn set_down(&self, down: bool) {
        self.faults().down = down;
    }

    /// The next `count` requests are answered `status` with `message` as the API's error.
    pub fn fail_next(&self, count: usize, status: u16, message: &str) {
        let mut faults = self.faults();
        faults.fail_next = count;
        faults.fail_status = status;
        faults.fail_message = message.to_owned();
    }

    /// Waits this long before answering (before the first token, when streaming).
    pub fn set_first_token_delay(&self, delay: Duration) {
        self.faults().first_token_delay = delay;
    }

    /// Requires `Authorization: Bearer {key}`; others are answered 401.
    pub fn require_key(&self, key: &str) {
        self.faults().api_key = Some(key.to_owned());
    }

    /// Stops listening: new connections are refused, as when the server is killed.
    pub fn stop(&self) {
        self.serving.abort();
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.state.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for ChatServer {
    fn drop(&mut self) {
        if Arc::strong_count(&self.serving) == 1 {
            self.serving.abort();
        }
    }
}

fn api_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
    (status, Json(body)).into_response()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The text of a message's `content`: a string, or an array of `{"type": "text"}` parts.
fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(text) => Some(text.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter(|part| part["type"] == "text")
                .filter_map(|part| part["text"].as_str())
                .collect::<Vec<_>>()
                .join(""),
        ),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

fn parse_request(body: &Value) -> Result<RecordedChat, String> {
    let messages = body["messages"].as_array().ok_or("messages: an array is required")?;
    let mut turns = Vec::with_capacity(messages.len());
    for (index, message) in messages.iter().enumerate() {
        let role = message["role"]
            .as_str()
            .ok_or_else(|| format!("messages[{index}].role: a string is required"))?;
        let role = if role == "developer" { "system" } else { role };
        if !matches!(role, "system" | "user" | "assistant") {
            return Err(format!("messages[{index}].role: {role:?} is not supported"));
        }
        let content = content_text(&message["content"])
            .ok_or_else(|| format!("messages[{index}].content: text is required"))?;
        turns.push(Turn { role: role.to_owned(), content });
    }
    if turns.is_empty() {
        return Err("messages: at least one message is required".to_owned());
    }
    let max_tokens = body["max_completion_tokens"]
        .as_u64()
        .or_else(|| body["max_tokens"].as_u64())
        .map(|max| usize::try_from(max).unwrap_or(usize::MAX));
    Ok(RecordedChat {
        model: body["model"].as_str().unwrap_or("").to_owned(),
        messages: turns,
        max_tokens,
        stream: body["stream"].as_bool().unwrap_or(false),
        received_at: std::time::Instant::now(),
    })
}

async fn models() -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": "smollm2-135m-instruct", "object": "model", "created": 0, "owned_by": "local"}]}),
    )
}

async fn completions(
    State(state): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let delay = {
        let mut faults = state.faults.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = &faults.api_key {
            let given = headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "));
            if given != Some(key.as_str()) {
                return api_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_request_error",
                    "Incorrect API key provided",
                );
            }
        }
        if faults.down {
            return api_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "the model is not available",
            );
        }
        if faults.fail_next > 0 {
            faults.fail_next -= 1;
            let status =
                StatusCode::from_u16(faults.fail_status).unwrap_or(StatusCode::BAD_REQUEST);
            return api_error(status, "invalid_request_error", &faults.fail_message);
        }
        faults.first_token_delay
    };
    let body: Value = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(error) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("the body is not JSON: {error}"),
            );
        }
    };
    let request = match parse_request(&body) {
        Ok(request) => request,
        Err(message) => {
            return api_error(StatusCode::BAD_REQUEST, "invalid_request_error", &message);
        }
    };
    state.recorded.lock().unwrap_or_else(PoisonError::into_inner).push(request.clone());
    let include_usage = body["stream_options"]["include_usage"].as_bool().unwrap_or(false);
    let max_tokens = request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    let model_name = if request.model.is_empty() { "smollm2".to_owned() } else { request.model };
    let id = format!("chatcmpl-{}", now());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    // Owned, so that it moves into the blocking task.
    let Ok(permit) = Arc::clone(&state.generating).acquire_owned().await else {
        return api_error(StatusCode::SERVICE_UNAVAILABLE, "server_error", "shutting down");
    };
    let (pieces, mut received) = mpsc::unbounded_channel::<Piece>();
    let generator = Arc::clone(&state);
    let turns = request.messages;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let outcome = generator
            .model
            .generate(&turns, max_tokens, |text| pieces.send(Piece::Text(text.to_owned())).is_ok());
        let _ = pieces.send(match outcome {
            Ok(generated) => Piece::Done(generated),
            Err(error) => Piece::Failed(error.to_string()),
        });
    });
    if !request.stream {
        let mut answer = String::new();
        while let Some(piece) = received.recv().await {
            match piece {
                Piece::Text(text) => answer.push_str(&text),
                Piece::Failed(message) => {
                    return api_error(StatusCode::BAD_REQUEST, "invalid_request_error", &message);
                }
                Piece::Done(generated) => {
                    return Json(json!({
                        "id": id,
                        "object": "chat.completion",
                        "created": now(),
                        "model": model_name,
                        "choices": [{
                            "index": 0,
                            "message": {"role": "assistant", "content": answer},
                            "finish_reason": finish_reason(generated),
                            "logprobs": null
                        }],
                        "usage": usage(generated)
                    }))
                    .into_response();
                }
            }
        }
        return api_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "generation stopped");
    }
    // The first piece decides the status: a prompt too long is a 400, as OpenAI answers it.
    let first = received.recv().await;
    if let Some(Piece::Failed(message)) = &first {
        return api_error(StatusCode::BAD_REQUEST, "invalid_request_error", message);
    }
    let chunk = move |delta: Value, finish: Option<&str>| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": now(),
            "model": model_name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
            "usage": null
        })
    };
    let events = async_stream(first, received, chunk, include_usage);
    Sse::new(events).into_response()
}

/// Turns the pieces into the SSE events of a streamed completion.
fn async_stream(
    first: Option<Piece>,
    received: mpsc::UnboundedReceiver<Piece>,
    chunk: impl Fn(Value, Option<&str>) -> Value + Send + Sync + 'static,
    include_usage: bool,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>> + Send {
    let start =
        Event::default().data(chunk(json!({"role": "assistant", "content": ""}), None).to_string());
    let state = (Some(start), first, received, false);
    let chunk = Arc::new(chunk);
    futures_util::stream::unfold(state, move |(start, pending, mut received, ended)| {
        let chunk = Arc::clone(&chunk);
        async move {
            if ended {
                return None;
            }
            if let Some(start) = start {
                return Some((vec![start], (None, pending, received, false)));
            }
            let piece = match pending {
                Some(piece) => Some(piece),
                None => received.recv().await,
            };
            match piece {
                Some(Piece::Text(text)) => {
                    let event =
                        Event::default().data(chunk(json!({"content": text}), None).to_string());
                    Some((vec![event], (None, None, received, false)))
                }
                Some(Piece::Done(generated)) => {
                    let mut events = vec![
                        Event::default()
                            .data(chunk(json!({}), Some(finish_reason(generated))).to_string()),
                    ];
                    if include_usage {
                        let mut last = chunk(json!({}), None);
                        last["choices"] = json!([]);
                        last["usage"] = usage(generated);
                        events.push(Event::default().data(last.to_string()));
                    }
                    events.push(Event::default().data("[DONE]"));
                    Some((events, (None, None, received, true)))
                }
                Some(Piece::Failed(message)) => {
                    let error = json!({"error": {"message": message, "type": "server_error"}});
                    Some((
                        vec![Event::default().data(error.to_string())],
                        (None, None, received, true),
                    ))
                }
                None => None,
            }
        }
    })
    .flat_map(|events| futures_util::stream::iter(events.into_iter().map(Ok)))
}

enum Piece {
    Text(String),
    Done(Generated),
    Failed(String),
}

fn finish_reason(generated: Generated) -> &'static str {
    if generated.finished { "stop" } else { "length" }
}

fn usage(generated: Generated) -> Value {
    json!({
        "prompt_tokens": generated.prompt_tokens,
        "completion_tokens": generated.completion_tokens,
        "total_tokens": generated.prompt_tokens + generated.completion_tokens
    })
}
