//! A service's port while it starts: bound before the slow part of starting (migrations that
//! wait for another replica's lock, first connections), so that a liveness probe finds the
//! process alive, a readiness probe finds it not ready yet, and neither restarts it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// How long connections opened while starting may keep the port once the service is ready;
/// probes hold theirs for one request.
const HANDOVER_LIMIT: Duration = Duration::from_secs(1);

/// The error returned by [`Starting::bind`].
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The port could not be bound.
    #[error("failed to listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

struct Phase {
    service: String,
    doing: Mutex<String>,
}

/// The port of a service that is starting.
///
/// While it lives, `GET /healthz` answers 200, `GET /readyz` 503 with what the service is
/// doing (`{"status": "starting", "phase": "..."}`), and every other request 503 with
/// `Retry-After`. [`Starting::ready`] hands the listener to the service's
/// [`ServiceShell`](super::ServiceShell): connections that arrive in between wait in the
/// listener's backlog, so none is refused.
///
/// ```no_run
/// use platform_core::service::{ServiceShell, Starting};
///
/// # async fn run(database: platform_core::db::Database) -> Result<(), Box<dyn std::error::Error>> {
/// let starting = Starting::bind("hello", "0.0.0.0:8080".parse()?).await?;
/// starting.phase("applying database migrations");
/// database.migrate(platform_core::db::CORE_MIGRATIONS).await?;
/// let listener = starting.ready().await;
/// ServiceShell::new("hello").serve(listener, platform_core::shutdown::signal()).await?;
/// # Ok(()) }
/// ```
pub struct Starting {
    addr: SocketAddr,
    phase: Arc<Phase>,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<TcpListener>,
}

impl std::fmt::Debug for Starting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Starting")
            .field("service", &self.phase.service)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Starting {
    /// Binds `addr` and starts answering probes on it.
    ///
    /// # Errors
    ///
    /// Fails, naming the address, when it cannot be bound.
    pub async fn bind(service: impl Into<String>, addr: SocketAddr) -> Result<Self, StartError> {
        let listener =
            TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;
        let phase =
            Arc::new(Phase { service: service.into(), doing: Mutex::new("starting".to_owned()) });
        tracing::info!(service = %phase.service, %addr, "port bound; starting");
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let serving = tokio::spawn(answer_while_starting(listener, Arc::clone(&phase), stopped));
        Ok(Self { addr, phase, stop, serving })
    }

    /// The address bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Says what the service is doing now, in `/readyz` and in the log.
    pub fn phase(&self, doing: &str) {
        tracing::info!(service = %self.phase.service, phase = doing, "starting");
        *self.phase.doing.lock().unwrap_or_else(PoisonError::into_inner) = doing.to_owned();
    }

    /// Stops answering and returns the listener, for [`ServiceShell::serve`](super::ServiceShell::serve).
    pub async fn ready(self) -> TcpListener {
        let _ = self.stop.send(());
        match self.serving.await {
            Ok(listener) => listener,
            // The task only ends by returning the listener; if it panicked, the port is gone
            // with it and nothing can serve: stopping loudly is all that is left.
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
}

async fn answer_while_starting(
    listener: TcpListener,
    phase: Arc<Phase>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) -> TcpListener {
    let app = Router::new()
        .route("/healthz", get(|| async { Json(serde_json::json!({ "status": "alive" })) }))
        .route("/readyz", get(readyz))
        .fallback(not_yet)
        .with_state(Arc::clone(&phase));
    let mut connections = hyper::server::conn::http1::Builder::new();
    connections.timer(TokioTimer::new()).header_read_timeout(super::HEADER_TIMEOUT);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let service = TowerToHyperService::new(app.clone());
                let connection = graceful.watch(connections.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
        }
    }
    if tokio::time::timeout(HANDOVER_LIMIT, graceful.shutdown()).await.is_err() {
        tracing::debug!("connections opened while starting are still open; leaving them");
    }
    listener
}

async fn readyz(State(phase): State<Arc<Phase>>) -> Response {
    let doing = phase.doing.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let report = serde_json::json!({
        "status": "starting",
        "service": phase.service,
        "phase": doing,
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(report)).into_response()
}

async fn not_yet(State(phase): State<Arc<Phase>>) -> Response {
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({
            "error": format!("{} is starting; try again shortly", phase.service),
        })),
    )
        .into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("http://{addr}{path}")).await.expect("answered");
        (response.status().as_u16(), response.text().await.unwrap_or_default())
    }

    #[tokio::test]
    async fn alive_but_not_ready_until_handed_over() {
        let starting =
            Starting::bind("test", "127.0.0.1:0".parse().expect("address")).await.expect("bound");
        let addr = starting.addr();
        assert_eq!(get(addr, "/healthz").await.0, 200);
        starting.phase("applying database migrations");
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.contains("applying database migrations"), "{body}");
        let (status, body) = get(addr, "/api/anything").await;
        assert_eq!(status, 503);
        assert!(body.contains("test is starting"), "{body}");

        let listener = starting.ready().await;
        assert_eq!(listener.local_addr().expect("address"), addr);
        // The port stays bound: a connection now waits for whoever accepts next.
        let client = tokio::net::TcpStream::connect(addr).await.expect("the port is still bound");
        let (accepted, _) = listener.accept().await.expect("the waiting connection");
        assert_eq!(
            accepted.peer_addr().expect("peer"),
            client.local_addr().expect("local address")
        );
    }
}
