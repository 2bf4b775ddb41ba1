//! `metrics_aggregator` (port 9090): scrapes every service's metrics and pushes logs to Loki.

use anyhow::Context as _;
use platform_core::config::MetricsAggregatorConfig;
use platform_core::service::ServiceShell;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = MetricsAggregatorConfig::from_env()?;
    let _telemetry = platform_core::telemetry::init("metrics_aggregator", &config.telemetry)?;
    if config.telemetry.loki_url.is_none() {
        tracing::info!("log push disabled: LOKI_URL is not set");
    }

    let shell = ServiceShell::new("metrics_aggregator");
    let listener = tokio::net::TcpListener::bind(config.http.addr)
        .await
        .with_context(|| format!("failed to listen on {}", config.http.addr))?;
    shell.serve(listener, platform_core::shutdown::signal()).await?;
    Ok(())
}
