//! Run with: `cargo run -p example-service-shell` (needs nothing else running).
//!
//! Your own routes inside the platform's service shell: `/hello/{name}` answers at once,
//! `/sleep/{ms}` holds the request to show graceful shutdown (send SIGTERM while one runs: it
//! completes, then the process exits 0). `/healthz`, `/readyz` and `/metrics` come with the shell.
//! Listens on `APP_HTTP_ADDR` (default `0.0.0.0:8080`); logs at `APP_LOG_LEVEL`.

use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use platform_core::config::{EnvReader, HttpConfig, TelemetryConfig, process_env};
use platform_core::service::{ReadinessCheck, RouteLimits, ServiceShell};

fn routes() -> Router {
    Router::new()
        .route(
            "/hello/{name}",
            get(|Path(name): Path<String>| async move { format!("hello, {name}\n") }),
        )
        .route(
            "/sleep/{ms}",
            get(|Path(ms): Path<u64>| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                format!("slept {ms} ms\n")
            }),
        )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let vars = process_env();
    let mut env = EnvReader::new(&vars);
    let sections = (TelemetryConfig::read(&mut env), HttpConfig::read(&mut env, 8080));
    let (telemetry, http) = env.finish(sections)?;
    let _telemetry = platform_core::telemetry::init("example", &telemetry)?;

    let shell = ServiceShell::new("example")
        .with_routes(routes())
        .with_limits(RouteLimits {
            request_timeout: Some(Duration::from_secs(120)),
            ..RouteLimits::default()
        })
        .with_readiness(ReadinessCheck::directory("temp_dir", std::env::temp_dir()));
    let listener = tokio::net::TcpListener::bind(http.addr).await?;
    shell.serve(listener, platform_core::shutdown::signal()).await?;
    Ok(())
}
