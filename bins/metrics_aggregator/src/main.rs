//! `metrics_aggregator` (port 9090): scrapes every service's metrics into one exposition and
//! forwards every service's log records to Loki.

use anyhow::Context as _;
use platform_core::aggregator::Aggregator;
use platform_core::config::MetricsAggregatorConfig;
use platform_core::service::{ServiceShell, Starting};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = MetricsAggregatorConfig::from_env()?;
    let _telemetry = platform_core::telemetry::init("metrics_aggregator", &config.telemetry)?;
    let starting = Starting::bind("metrics_aggregator", config.http.addr).await?;

    let shell =
        ServiceShell::new("metrics_aggregator").with_shutdown_grace(config.http.shutdown_grace);
    let aggregator = Aggregator::new(&config.scrape, &config.loki, shell.metrics())?;
    let shell = shell.with_routes(aggregator.routes()).with_limits(Aggregator::limits());
    let listener = starting.ready().await;

    let (stop, mut stopped) = tokio::sync::watch::channel(());
    let background = tokio::spawn(aggregator.run(async move {
        let _ = stopped.changed().await;
    }));
    let served = shell.serve(listener, platform_core::shutdown::signal()).await;
    let _ = stop.send(());
    background.await.context("the aggregator's background work failed")?;
    served?;
    Ok(())
}
