//! Metrics endpoints that serve what a test decides: an exposition, garbage, or nothing at all.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// What a [`MetricsEndpoint`] answers on `GET /metrics`.
#[derive(Clone, Debug)]
pub enum Exposition {
    /// This text, as Prometheus text 0.0.4.
    Text(Arc<str>),
    /// This text, as OpenMetrics.
    OpenMetrics(Arc<str>),
    /// Accepts the request and never answers.
    Hang,
}

/// One HTTP endpoint on loopback; dropping it stops it.
pub struct MetricsEndpoint {
    addr: SocketAddr,
    answer: Arc<Mutex<Exposition>>,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsEndpoint {
    /// Starts an endpoint answering `answer`.
    pub async fn start(answer: Exposition) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding a metrics endpoint")?;
        let addr = listener.local_addr()?;
        let answer = Arc::new(Mutex::new(answer));
        let app = Router::new().route("/metrics", get(serve)).with_state(answer.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, answer, task })
    }

    /// The endpoint's `host:port`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes what it answers from now on.
    pub fn set(&self, answer: Exposition) {
        *self.answer.lock().unwrap_or_else(PoisonError::into_inner) = answer;
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(State(answer): State<Arc<Mutex<Exposition>>>) -> Response {
    let answer = answer.lock().unwrap_or_else(PoisonError::into_inner).clone();
    match answer {
        Exposition::Text(text) => {
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text.to_string())
                .into_response()
        }
        Exposition::OpenMetrics(text) => (
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            text.to_string(),
        )
            .into_response(),
        Exposition::Hang => std::future::pending().await,
    }
}

/// `series` samples of one gauge family, each with distinct labels, in the 0.0.4 format: a
/// target of the benchmark's size.
pub fn synthetic_exposition(series: usize) -> String {
    let mut text = String::with_capacity(series * 96);
    text.push_str(
        "# HELP bench_requests_total Synthetic requests.\n# TYPE bench_requests_total counter\n",
    );
    for i in 0..series {
        use std::fmt::Write as _;
        let _ = writeln!(
            text,
            "bench_requests_total{{route=\"/api/route/{}\",method=\"GET\",status=\"{}\"}} {}",
            i / 4,
            200 + (i % 4),
            i * 7
        );
    }
    text
}
