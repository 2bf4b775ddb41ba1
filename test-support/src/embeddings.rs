//! An OpenAI-compatible embeddings server running the local model, for the HTTP embedder's tests
//! and for services under test that are configured with an embeddings API.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use platform_ai::embed::{Embedder, LocalEmbedder};
use serde_json::{Value, json};

/// `POST /v1/embeddings` answered by all-MiniLM-L6-v2 in this process: the same vectors as
/// [`LocalEmbedder`], over the wire format of OpenAI's API (what Ollama, vLLM and
/// text-embeddings-inference also speak). Faults can be injected: the next requests fail with a
/// status and a `Retry-After`, or every request fails while [`EmbeddingsServer::set_down`] holds.
#[derive(Clone)]
pub struct EmbeddingsServer {
    url: String,
    state: Arc<Shared>,
    _shutdown: Arc<tokio::sync::oneshot::Sender<()>>,
}

struct Shared {
    model: LocalEmbedder,
    requests: AtomicUsize,
    inputs: AtomicUsize,
    faults: Mutex<Faults>,
}

#[derive(Default)]
struct Faults {
    fail_next: usize,
    status: u16,
    retry_after: Option<u64>,
    down: bool,
    /// The key a request must bear, if any.
    api_key: Option<String>,
}

impl EmbeddingsServer {
    /// Loads the model from `model_dir` and serves it on a free loopback port.
    pub async fn start(model_dir: &Path) -> anyhow::Result<Self> {
        let model = LocalEmbedder::open(model_dir)
            .with_context(|| format!("loading the model in {}", model_dir.display()))?;
        let state = Arc::new(Shared {
            model,
            requests: AtomicUsize::new(0),
            inputs: AtomicUsize::new(0),
            faults: Mutex::new(Faults::default()),
        });
        let app =
            Router::new().route("/v1/embeddings", post(embeddings)).with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let url = format!("http://{}/v1", listener.local_addr()?);
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self { url, state, _shutdown: Arc::new(shutdown) })
    }

    /// The API base URL, ending in `/v1`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests answered or refused so far.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Texts embedded so far.
    pub fn inputs(&self) -> usize {
        self.state.inputs.load(Ordering::SeqCst)
    }

    /// The next `count` requests are answered with `status` (and `Retry-After: seconds`).
    pub fn fail_next(&self, count: usize, status: u16, retry_after: Option<u64>) {
        let mut faults = self.faults();
        faults.fail_next = count;
        faults.status = status;
        faults.retry_after = retry_after;
    }

    /// While `down`, every request is answered 503.
    pub fn set_down(&self, down: bool) {
        self.faults().down = down;
    }

    /// Requests must carry `Authorization: Bearer key`; others get 401.
    pub fn require_key(&self, key: &str) {
        self.faults().api_key = Some(key.to_owned());
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.state.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn embeddings(
    State(state): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(request): Json<Value>,
) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let injected = {
        let mut faults = state.faults.lock().unwrap_or_else(PoisonError::into_inner);
        let bearer = headers.get("authorization").and_then(|value| value.to_str().ok());
        if let Some(key) = &faults.api_key
            && bearer != Some(format!("Bearer {key}").as_str())
        {
            return error(StatusCode::UNAUTHORIZED, "invalid api key", None);
        }
        if faults.down {
            Some((503, None))
        } else if faults.fail_next > 0 {
            faults.fail_next -= 1;
            Some((faults.status, faults.retry_after))
        } else {
            None
        }
    };
    if let Some((status, retry_after)) = injected {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return error(status, "injected failure", retry_after);
    }
    let texts: Vec<String> = match &request["input"] {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => {
            items.iter().filter_map(|item| item.as_str().map(str::to_owned)).collect()
        }
        _ => return error(StatusCode::BAD_REQUEST, "input must be a string or strings", None),
    };
    state.inputs.fetch_add(texts.len(), Ordering::SeqCst);
    match state.model.embed(&texts).await {
        Ok(vectors) => {
            let data: Vec<Value> = vectors
                .into_iter()
                .enumerate()
                .map(|(index, embedding)| {
                    json!({"object": "embedding", "index": index, "embedding": embedding})
                })
                .collect();
            let model = request["model"].as_str().unwrap_or("all-MiniLM-L6-v2");
            Json(json!({
                "object": "list",
                "model": model,
                "data": data,
                "usage": {"prompt_tokens": 0, "total_tokens": 0},
            }))
            .into_response()
        }
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string(), None),
    }
}

fn error(status: StatusCode, message: &str, retry_after: Option<u64>) -> Response {
    let body = Json(json!({
        "error": {"message": message, "type": "server_error", "param": null, "code": null}
    }));
    let mut response = (status, body).into_response();
    if let Some(seconds) = retry_after
        && let Ok(value) = seconds.to_string().parse()
    {
        response.headers_mut().insert("retry-after", value);
    }
    response
}
