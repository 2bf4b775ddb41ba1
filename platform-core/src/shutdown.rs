//! Waiting for the signal to stop.
//!
//! Only binaries call [`signal`]; libraries take a shutdown future or a
//! [`CancellationToken`](tokio_util::sync::CancellationToken) from their caller.

/// Completes when the process receives SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C).
///
/// If the handlers cannot be installed, logs why and never completes: the process then stops
/// only when killed, which is what it would do without a handler.
pub async fn signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!(signal = "SIGINT", "stop requested"),
        () = terminate => tracing::info!(signal = "SIGTERM", "stop requested"),
    }
}
