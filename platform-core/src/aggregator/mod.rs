//! The metrics aggregator: one scrape target for every service's metrics, and one log sink for
//! every service's records.
//!
//! [`Aggregator`] scrapes every target (found in DNS, [`crate::config::DnsTargets`], or listed,
//! [`crate::config::StaticTarget`]) concurrently each interval, adds `service` and `instance`
//! labels to every sample (a target's own labels of those names become `exported_service` and
//! `exported_instance`), adds `up`, `scrape_duration_seconds` and `scrape_samples_scraped` per
//! target, and serves the merge at `GET /metrics/all` in the text format 0.0.4. Every sample
//! carries the time of its scrape, so several aggregator replicas answer alike and Prometheus
//! scraping each of them (with `honor_labels: true`, as for federation) stores every sample once.
//! A target that hangs past the timeout, sends more than the body or sample limit, or sends
//! something unreadable fails alone: `up 0` for it, and none of its series.
//!
//! It also serves Loki's push API (`POST /loki/api/v1/push`: protobuf + raw Snappy or JSON,
//! gzip accepted, `X-Scope-OrgID` kept), batches per tenant and sends the batches to `LOKI_URL`,
//! holding a bounded buffer while Loki is down ([`crate::config::LokiConfig`]).
//!
//! ```no_run
//! use platform_core::aggregator::Aggregator;
//! use platform_core::config::MetricsAggregatorConfig;
//! use platform_core::service::ServiceShell;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = MetricsAggregatorConfig::from_env()?;
//! let shell = ServiceShell::new("metrics_aggregator");
//! let aggregator = Aggregator::new(&config.scrape, &config.loki, shell.metrics())?;
//! let shell = shell.with_routes(aggregator.routes()).with_limits(Aggregator::limits());
//! let listener = tokio::net::TcpListener::bind(config.http.addr).await?;
//! let (stop, mut stopping) = tokio::sync::watch::channel(());
//! let background = tokio::spawn(aggregator.run(async move {
//!     let _ = stopping.changed().await;
//! }));
//! shell.serve(listener, platform_core::shutdown::signal()).await?;
//! let _ = stop.send(());
//! background.await?;
//! # Ok(()) }
//! ```

mod exposition;
mod logs;
mod scrape;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;

pub use exposition::ExpositionError;
pub(crate) use exposition::escape_label_value;

use crate::config::{LokiConfig, ScrapeConfig};
use crate::service::RouteLimits;
use crate::telemetry::Metrics;

/// Why the aggregator could not start.
#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    /// The DNS resolver could not be set up (the system's configuration is unreadable).
    #[error("failed to set up the DNS resolver for target discovery: {0}")]
    Resolver(String),
    /// The HTTP client could not be built.
    #[error("failed to build the HTTP client: {0}")]
    Client(String),
}

/// The aggregator's state: the scraper and the log forwarder. See the [module](self) docs.
#[derive(Clone)]
pub struct Aggregator {
    scraper: Arc<scrape::Scraper>,
    logs: Arc<logs::LogForwarder>,
}

impl std::fmt::Debug for Aggregator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregator")
            .field("forwards_logs", &self.logs.forwards())
            .finish_non_exhaustive()
    }
}

/// How long the log forwarder keeps sending after shutdown begins.
const FINAL_FLUSH: Duration = Duration::from_secs(5);

impl Aggregator {
    /// Sets up scraping and log forwarding, registering their metrics in `metrics`.
    ///
    /// # Errors
    ///
    /// Fails when the DNS resolver or the HTTP client cannot be built.
    pub fn new(
        scrape: &ScrapeConfig,
        loki: &LokiConfig,
        metrics: &Metrics,
    ) -> Result<Self, AggregatorError> {
        let logs = logs::LogForwarder::new(loki, metrics);
        match &loki.url {
            Some(url) => {
                tracing::info!(loki = %url, tenant = ?loki.tenant, "forwarding log records to Loki")
            }
            None => tracing::info!(
                "LOKI_URL is not set: log records are accepted, counted and discarded"
            ),
        }
        Ok(Self { scraper: Arc::new(scrape::Scraper::new(scrape, metrics)?), logs: Arc::new(logs) })
    }

    /// The limits its routes need: pushes of up to 16 MiB.
    pub fn limits() -> RouteLimits {
        RouteLimits { body_limit: Some(16 << 20), ..RouteLimits::default() }
    }

    /// `GET /metrics/all` (the merged exposition) and `POST /loki/api/v1/push`.
    pub fn routes(&self) -> Router {
        Router::new()
            .route("/metrics/all", get(merged_metrics))
            .route("/loki/api/v1/push", post(push))
            .with_state(self.clone())
    }

    /// Scrapes every interval and forwards logs until `shutdown` resolves, then sends the log
    /// records still held (for five seconds at most).
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send) {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let scraper = self.scraper.clone();
        let mut scraping = stopped.clone();
        let scrape_loop = async move {
            let mut interval = tokio::time::interval(scraper.interval());
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = interval.tick() => scraper.cycle().await,
                    () = stopped_signal(&mut scraping) => return,
                }
            }
        };
        let mut forwarding = stopped;
        let forward =
            self.logs.run(async move { stopped_signal(&mut forwarding).await }, FINAL_FLUSH);
        let trigger = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        tokio::join!(scrape_loop, forward, trigger);
    }

    /// Runs one round of discovery and scraping now (tests and benchmarks time rounds with it).
    pub async fn scrape_once(&self) {
        self.scraper.cycle().await;
    }

    /// The merged exposition of the last round.
    pub fn merged(&self) -> Bytes {
        self.scraper.exposition()
    }
}

/// Resolves once `true` is sent (or the sender is gone).
async fn stopped_signal(stopped: &mut tokio::sync::watch::Receiver<bool>) {
    while !*stopped.borrow_and_update() {
        if stopped.changed().await.is_err() {
            return;
        }
    }
}

async fn merged_metrics(State(aggregator): State<Aggregator>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], aggregator.merged())
        .into_response()
}

async fn push(State(aggregator): State<Aggregator>, headers: HeaderMap, body: Bytes) -> Response {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let tenant =
        headers.get("x-scope-orgid").and_then(|v| v.to_str().ok()).filter(|t| !t.is_empty());
    match aggregator.logs.ingest(
        &body,
        text(header::CONTENT_TYPE),
        text(header::CONTENT_ENCODING),
        tenant,
    ) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => {
            (StatusCode::BAD_REQUEST, format!("{}\n", crate::service::error_chain(&error)))
                .into_response()
        }
    }
}
