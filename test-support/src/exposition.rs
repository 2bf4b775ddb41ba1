//! Metrics endpoints that serve what a test decides: an exposition, garbage, or nothing at all.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    answer: Mutex<Exposition>,
    requests: AtomicUsize,
}

impl MetricsEndpoint {
    /// Starts an endpoint answering `answer`.
    pub async fn start(answer: Exposition) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding a metrics endpoint")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared { answer: Mutex::new(answer), requests: AtomicUsize::new(0) });
        let app = Router::new().route("/metrics", get(serve)).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// The endpoint's `host:port`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes what it answers from now on.
    pub fn set(&self, answer: Exposition) {
        *self.shared.answer.lock().unwrap_or_else(PoisonError::into_inner) = answer;
    }

    /// How many scrapes it has been asked for so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::Relaxed)
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(State(shared): State<Arc<Shared>>) -> Response {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let answer = shared.answer.lock().unwrap_or_else(PoisonError::into_inner).clone();
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

/// `series` samples in the 0.0.4 format, shaped as a service's: families of 100 counters
/// (`route`, `method`, `status`) alternating with histograms of 8 buckets over 9 routes. A
/// target of the benchmark's size.
pub fn synthetic_exposition(series: usize) -> String {
    use std::fmt::Write as _;
    const BUCKETS: [&str; 9] = ["0.005", "0.01", "0.05", "0.1", "0.25", "0.5", "1", "5", "+Inf"];
    let mut text = String::with_capacity(series * 100);
    let mut written = 0;
    let mut family = 0;
    while written < series {
        if family % 2 == 0 {
            let name = format!("bench_requests_{family}_total");
            let _ = writeln!(text, "# HELP {name} Requests answered.\n# TYPE {name} counter");
            for i in 0..100.min(series - written) {
                let _ = writeln!(
                    text,
                    "{name}{{route=\"/api/v1/route/{}\",method=\"GET\",status=\"{}\"}} {}",
                    i / 4,
                    200 + (i % 4),
                    i * 7 + family
                );
                written += 1;
            }
        } else {
            let name = format!("bench_request_{family}_seconds");
            let _ = writeln!(text, "# HELP {name} Request latency.\n# TYPE {name} histogram");
            'routes: for route in 0..9 {
                for (i, le) in BUCKETS.iter().enumerate() {
                    if written == series {
                        break 'routes;
                    }
                    let _ = writeln!(
                        text,
                        "{name}_bucket{{route=\"/api/v1/route/{route}\",le=\"{le}\"}} {}",
                        (i + 1) * 10
                    );
                    written += 1;
                }
                for (suffix, value) in [("sum", "4.25"), ("count", "90")] {
                    if written == series {
                        break 'routes;
                    }
                    let _ = writeln!(
                        text,
                        "{name}_{suffix}{{route=\"/api/v1/route/{route}\"}} {value}"
                    );
                    written += 1;
                }
            }
        }
        family += 1;
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn synthetic_exposition_has_the_samples_asked_for() {
        for series in [1, 99, 100, 101, 199, 10_000] {
            let text = super::synthetic_exposition(series);
            let samples = text.lines().filter(|line| !line.starts_with('#')).count();
            assert_eq!(samples, series, "{text}");
        }
    }
}
