//! The HTTP shell every service runs in.
//!
//! A [`ServiceShell`] serves a service's own routes next to three operational endpoints:
//!
//! - `GET /healthz`: 200 while the process is alive;
//! - `GET /readyz`: 200 when every [`ReadinessCheck`] passes, otherwise 503 with JSON naming the
//!   failing dependency, and 503 once shutdown has begun;
//! - `GET /metrics`: the Prometheus registry in the text exposition format.
//!
//! Every request is traced (with a request id, and with credentials hidden), counted and timed;
//! the service's own routes get a timeout and a body limit. [`ServiceShell::serve`] stops
//! accepting connections when its shutdown future completes, lets in-flight requests finish
//! within a grace period, then returns.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use platform_core::service::{ReadinessCheck, ServiceShell};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let routes = Router::new().route("/hello", get(|| async { "hello" }));
//! let shell = ServiceShell::new("hello")
//!     .with_routes(routes)
//!     .with_readiness(ReadinessCheck::directory("data", "/var/lib/hello"));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! shell.serve(listener, platform_core::shutdown::signal()).await?;
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio::net::TcpListener;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt as _};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestId, PropagateRequestIdLayer, RequestId, SetRequestId,
    SetRequestIdLayer,
};
use tower_http::sensitive_headers::{SetSensitiveRequestHeaders, SetSensitiveRequestHeadersLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{Trace, TraceLayer};

mod metrics;
mod starting;

pub use starting::{StartError, Starting};

use crate::db::Database;
use crate::redis::Redis;
use crate::telemetry::Metrics;
use metrics::RecordMetricsLayer;

/// How long one readiness check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// The error returned by [`ServiceShell::serve`].
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listener's address could not be read.
    #[error("failed to read the listener's address")]
    LocalAddr(#[source] std::io::Error),
    /// The server failed.
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
}

type ProbeFuture = Pin<Box<dyn Future<Output = Result<Option<String>, String>> + Send>>;

/// One dependency that must be reachable for a service to be ready.
#[derive(Clone)]
pub struct ReadinessCheck {
    name: Cow<'static, str>,
    probe: Arc<dyn Fn() -> ProbeFuture + Send + Sync>,
}

impl std::fmt::Debug for ReadinessCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadinessCheck").field("name", &self.name).finish_non_exhaustive()
    }
}

impl ReadinessCheck {
    /// Creates a check named `name` (the name `/readyz` reports) that runs `probe`.
    ///
    /// The probe's error, with its sources, becomes the reported reason; it must not contain
    /// secrets.
    pub fn new<F, Fut, E>(name: impl Into<Cow<'static, str>>, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::error::Error,
    {
        Self::from_probe(name, probe, |()| None)
    }

    /// Like [`ReadinessCheck::new`], for a probe that also describes what it found (for
    /// example which broker is active); `/readyz` reports it as the check's `detail`.
    pub fn with_detail<F, Fut, E>(name: impl Into<Cow<'static, str>>, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: std::error::Error,
    {
        Self::from_probe(name, probe, Some)
    }

    fn from_probe<F, Fut, T: 'static, E>(
        name: impl Into<Cow<'static, str>>,
        probe: F,
        detail: fn(T) -> Option<String>,
    ) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: std::error::Error,
    {
        let probe = Arc::new(probe);
        Self {
            name: name.into(),
            probe: Arc::new(move || {
                let future = probe();
                Box::pin(
                    async move { future.await.map(detail).map_err(|error| error_chain(&error)) },
                )
            }),
        }
    }

    /// Checks that PostgreSQL answers a query; reported as `database`.
    pub fn database(database: Database) -> Self {
        Self::new("database", move || {
            let database = database.clone();
            async move { database.ping().await }
        })
    }

    /// Checks that Redis answers `PING`; reported as `redis`.
    pub fn redis(redis: Redis) -> Self {
        Self::new("redis", move || {
            let redis = redis.clone();
            async move { redis.ping().await }
        })
    }

    /// Checks that `path` is a directory this process can list; reported as `name`.
    pub fn directory(name: impl Into<Cow<'static, str>>, path: impl Into<PathBuf>) -> Self {
        let path = Arc::new(path.into());
        Self::new(name, move || {
            let path = Arc::clone(&path);
            async move {
                let mut entries = tokio::fs::read_dir(path.as_path())
                    .await
                    .map_err(|source| DirectoryError { path: path.as_path().to_owned(), source })?;
                entries
                    .next_entry()
                    .await
                    .map(|_| ())
                    .map_err(|source| DirectoryError { path: path.as_path().to_owned(), source })
            }
        })
    }

    /// Returns the name `/readyz` reports for this check.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs the check, bounded by a three-second timeout, and returns its detail, if any.
    ///
    /// # Errors
    ///
    /// Returns the reason the dependency is not usable.
    pub async fn run(&self) -> Result<Option<String>, String> {
        match tokio::time::timeout(CHECK_TIMEOUT, (self.probe)()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
        }
    }
}

/// The error a [`ReadinessCheck::directory`] check reports.
#[derive(Debug, thiserror::Error)]
#[error("cannot read directory {path:?}")]
struct DirectoryError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// Formats an error with its sources: `outer: inner: root`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Limits applied to a service's own routes.
#[derive(Clone, Copy, Debug)]
pub struct RouteLimits {
    /// The longest a request may take before it is answered 503; `None` for no limit.
    pub request_timeout: Option<Duration>,
    /// The largest request body accepted, in bytes, before answering 413; `None` for no limit.
    pub body_limit: Option<usize>,
}

impl Default for RouteLimits {
    /// Thirty seconds and 2 MiB: right for a JSON API, wrong for git pushes, which set their own.
    fn default() -> Self {
        Self { request_timeout: Some(Duration::from_secs(30)), body_limit: Some(2 * 1024 * 1024) }
    }
}

/// A service's HTTP server: its routes, the operational endpoints, and graceful shutdown.
#[derive(Debug)]
pub struct ServiceShell {
    name: String,
    metrics: Metrics,
    checks: Vec<ReadinessCheck>,
    routes: Router,
    has_routes: bool,
    service: Option<AppService>,
    limits: RouteLimits,
    shutdown_grace: Duration,
    header_timeout: Duration,
}

/// How long a client may take to send a request's headers, and how long a connection may sit
/// idle between requests: 30 seconds each.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

impl ServiceShell {
    /// Creates a shell for the service `name` with no routes and no readiness checks.
    ///
    /// It also makes sure a TLS crypto provider is installed, since several dependencies bring
    /// their own and rustls refuses to choose between them.
    pub fn new(name: impl Into<String>) -> Self {
        crate::tls::install_crypto_provider();
        let name = name.into();
        Self {
            metrics: Metrics::new(&name),
            name,
            checks: Vec::new(),
            routes: Router::new(),
            has_routes: false,
            service: None,
            limits: RouteLimits::default(),
            shutdown_grace: Duration::from_secs(25),
            header_timeout: HEADER_TIMEOUT,
        }
    }

    /// Returns the service's metrics registry, to register its own metrics in.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Adds the service's own routes. They must not use `/healthz`, `/readyz` or `/metrics`.
    pub fn with_routes(mut self, routes: Router) -> Self {
        self.routes = self.routes.merge(routes);
        self.has_routes = true;
        self
    }

    /// Answers every request the operational endpoints and the routes do not with `service`.
    ///
    /// A service that answers every path itself (static files) and is given no routes is called
    /// directly, without routing: it is spared the router's work on each request. It gets the
    /// same layers as routes (limits, metrics under the route `unmatched`, panics caught).
    pub fn with_service<S>(mut self, service: S) -> Self
    where
        S: Service<Request, Response = Response, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.service = Some(AppService::new(service));
        self
    }

    /// Adds a dependency that `/readyz` checks.
    pub fn with_readiness(mut self, check: ReadinessCheck) -> Self {
        self.checks.push(check);
        self
    }

    /// Sets the timeout and body limit of the service's own routes.
    pub fn with_limits(mut self, limits: RouteLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets how long in-flight requests may run after shutdown begins (default 25 s, inside
    /// Kubernetes' default 30 s termination grace period).
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Sets how long a connection may take to send a request's headers, counted from when the
    /// server is ready to read them: from the connection's start, and again after each answer,
    /// so it bounds idle connections too (default [`HEADER_TIMEOUT`]). A client that trickles
    /// its headers, or keeps a connection open doing nothing, is disconnected.
    pub fn with_header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// Builds the complete router, for serving elsewhere or testing with `oneshot`.
    pub fn router(&self) -> Router {
        Router::new().fallback_service(self.build_service(Arc::new(AtomicBool::new(false))))
    }

    /// The whole service: the operational endpoints and the service's own, behind the layers
    /// every request goes through.
    ///
    /// Layers given to `Router::layer` are wrapped around every route and cloned with it on
    /// every request, so only what needs the matched route (metrics) and what must catch a
    /// handler's panic before metrics see the answer go there, as one layer; the rest wraps the
    /// whole service once.
    fn build_service(&self, draining: Arc<AtomicBool>) -> ShellService {
        let per_route = ServiceBuilder::new()
            .layer(RecordMetricsLayer { metrics: self.metrics.http().clone() })
            .layer(CatchPanicLayer::new());
        let readiness = Arc::new(Readiness {
            service: self.name.clone(),
            checks: self.checks.clone(),
            draining,
        });
        let metrics = self.metrics.clone();
        let operational = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz).with_state(readiness))
            .route("/metrics", get(move || serve_metrics(metrics.clone())))
            .layer(per_route.clone());

        let unlimited = self.limits.request_timeout.is_none() && self.limits.body_limit.is_none();
        let own = match &self.service {
            Some(service) if !self.has_routes && unlimited => AppService::new(
                ServiceBuilder::new()
                    .layer(per_route)
                    .service(service.clone())
                    .map_response(IntoResponse::into_response),
            ),
            service => {
                let mut routes = self.routes.clone();
                if let Some(service) = service {
                    routes = routes.fallback_service(service.clone());
                }
                if let Some(limit) = self.limits.body_limit {
                    routes = routes.layer(RequestBodyLimitLayer::new(limit));
                }
                if let Some(timeout) = self.limits.request_timeout {
                    routes = routes.layer(TimeoutLayer::with_status_code(
                        StatusCode::SERVICE_UNAVAILABLE,
                        timeout,
                    ));
                }
                AppService::new(routes.layer(per_route))
            }
        };

        let sensitive = [
            header::AUTHORIZATION,
            header::PROXY_AUTHORIZATION,
            header::COOKIE,
            header::SET_COOKIE,
        ];
        let request_id = HeaderName::from_static("x-request-id");
        ServiceBuilder::new()
            .map_response(finish_response as fn(TracedResponse) -> Response)
            .layer(SetSensitiveRequestHeadersLayer::new(sensitive))
            .layer(SetRequestIdLayer::new(request_id.clone(), MakeUuid))
            .layer(PropagateRequestIdLayer::new(request_id))
            .layer(TraceLayer::new_for_http().make_span_with(make_request_span as MakeSpan))
            .service(Dispatch { operational, own })
    }

    /// Serves until `shutdown` completes, then stops accepting connections, waits up to the
    /// grace period for in-flight requests, and returns.
    ///
    /// Requests still running after the grace period are abandoned: their connections end with
    /// the Tokio runtime, which is what happens when `main` returns.
    ///
    /// # Errors
    ///
    /// Fails when the listener fails.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let addr = listener.local_addr().map_err(ServeError::LocalAddr)?;
        let draining = Arc::new(AtomicBool::new(false));
        let service = self.build_service(Arc::clone(&draining));
        // HTTP/1.1, as the Ingress and git clients speak it. Its header timeout runs from the
        // moment a request may begin, so it also bounds silent and idle connections.
        let mut connections = hyper::server::conn::http1::Builder::new();
        connections.timer(TokioTimer::new()).header_read_timeout(self.header_timeout);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tracing::info!(service = %self.name, %addr, "listening");

        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors, or a connection reset before it was accepted:
                        // carry on, a little later.
                        tracing::warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            // Without TCP_NODELAY, small answers (git's negotiation rounds, JSON) can wait for
            // the peer's delayed ACK: tens of milliseconds each.
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
            let service = service.clone().map_request(move |request: hyper::Request<Incoming>| {
                let mut request = request.map(axum::body::Body::new);
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
            let connection = connections
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%peer, error = %error, "connection ended with an error");
                }
            });
        }
        drop(listener);
        draining.store(true, Ordering::SeqCst);
        tracing::info!(service = %self.name, "shutdown requested: finishing in-flight requests");

        let grace = self.shutdown_grace;
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(grace) => {
                tracing::warn!(service = %self.name, grace_s = grace.as_secs(), "grace period elapsed: abandoning in-flight requests");
            }
        }
        tracing::info!(service = %self.name, "stopped");
        Ok(())
    }
}

/// Every answer of every service, once traced: `X-Content-Type-Options: nosniff` unless a
/// route set it, so no browser guesses a type for JSON, plain text or git's answers either.
fn finish_response(response: TracedResponse) -> Response {
    let mut response = response.into_response();
    response
        .headers_mut()
        .entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    response
}

/// The service's own requests, whichever way they are routed.
type AppService = BoxCloneSyncService<Request, Response, Infallible>;

type MakeSpan = fn(&Request) -> tracing::Span;

type TracedResponse = axum::http::Response<
    tower_http::trace::ResponseBody<
        axum::body::Body,
        tower_http::classify::NeverClassifyEos<tower_http::classify::ServerErrorsFailureClass>,
    >,
>;

/// Everything a request goes through; a concrete type, so nothing is boxed or cloned deeply on
/// each request.
type ShellService = tower::util::MapResponse<
    SetSensitiveRequestHeaders<
        SetRequestId<
            PropagateRequestId<Trace<Dispatch, SharedClassifier<ServerErrorsAsFailures>, MakeSpan>>,
            MakeUuid,
        >,
    >,
    fn(TracedResponse) -> Response,
>;

/// Random (v4) UUIDs as request ids, formatted without an intermediate `String`.
#[derive(Clone, Copy, Debug)]
struct MakeUuid;

impl MakeRequestId for MakeUuid {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
        let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
        axum::http::HeaderValue::from_str(id).ok().map(RequestId::new)
    }
}

fn make_request_span(request: &Request) -> tracing::Span {
    let request_id =
        request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
    // The path only: query strings can carry tokens.
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = request.uri().path(),
        request_id,
    )
}

/// Sends the operational endpoints to their router and everything else to the service's own.
#[derive(Clone)]
struct Dispatch {
    operational: Router,
    own: AppService,
}

impl Service<Request> for Dispatch {
    type Response = Response;
    type Error = Infallible;
    type Future = futures_util::future::Either<
        <Router as Service<Request>>::Future,
        <AppService as Service<Request>>::Future,
    >;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        std::task::ready!(Service::<Request>::poll_ready(&mut self.operational, cx))?;
        self.own.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if matches!(request.uri().path(), "/healthz" | "/readyz" | "/metrics") {
            futures_util::future::Either::Left(self.operational.call(request))
        } else {
            futures_util::future::Either::Right(self.own.call(request))
        }
    }
}

struct Readiness {
    service: String,
    checks: Vec<ReadinessCheck>,
    draining: Arc<AtomicBool>,
}

#[derive(Serialize)]
struct ReadinessReport<'a> {
    status: &'static str,
    service: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failed: Vec<String>,
    checks: Vec<CheckReport>,
}

#[derive(Serialize)]
struct CheckReport {
    name: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    duration_ms: u64,
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "alive" }))
}

async fn readyz(State(readiness): State<Arc<Readiness>>) -> Response {
    if readiness.draining.load(Ordering::SeqCst) {
        let report = ReadinessReport {
            status: "shutting_down",
            service: &readiness.service,
            failed: Vec::new(),
            checks: Vec::new(),
        };
        return (StatusCode::SERVICE_UNAVAILABLE, Json(report)).into_response();
    }
    let mut running = tokio::task::JoinSet::new();
    for (index, check) in readiness.checks.iter().cloned().enumerate() {
        running.spawn(async move {
            let started = Instant::now();
            let result = check.run().await;
            (
                index,
                CheckReport {
                    name: check.name().to_owned(),
                    ok: result.is_ok(),
                    detail: result.as_ref().ok().cloned().flatten(),
                    error: result.err(),
                    duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                },
            )
        });
    }
    let mut checks: Vec<(usize, CheckReport)> = Vec::with_capacity(readiness.checks.len());
    while let Some(joined) = running.join_next().await {
        match joined {
            Ok(report) => checks.push(report),
            Err(error) => tracing::error!(%error, "readiness check panicked"),
        }
    }
    checks.sort_by_key(|(index, _)| *index);
    let checks: Vec<CheckReport> = checks.into_iter().map(|(_, report)| report).collect();
    let failed: Vec<String> = checks.iter().filter(|c| !c.ok).map(|c| c.name.clone()).collect();
    let complete = checks.len() == readiness.checks.len();
    let (status, code) = if failed.is_empty() && complete {
        ("ready", StatusCode::OK)
    } else {
        for check in checks.iter().filter(|c| !c.ok) {
            tracing::warn!(check = %check.name, error = check.error.as_deref().unwrap_or_default(), "not ready");
        }
        ("unavailable", StatusCode::SERVICE_UNAVAILABLE)
    };
    (code, Json(ReadinessReport { status, service: &readiness.service, failed, checks }))
        .into_response()
}

async fn serve_metrics(metrics: Metrics) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        metrics.encode(),
    )
}
