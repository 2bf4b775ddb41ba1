//! Run with: `cargo run -p example-queue --bin worker`. Needs Redis (`APP_REDIS_URL`) and,
//! optionally, NATS JetStream (`NATS_URL`). Serves `/readyz` (naming the active backend) and
//! `/metrics` on `APP_HTTP_ADDR` (default port 8090); SIGTERM finishes the jobs in flight.

use std::time::Duration;

use platform_core::config::process_env;
use platform_core::queue::{ConsumerOptions, Job, JobError, Queue};
use platform_core::service::ServiceShell;
use tokio_util::sync::CancellationToken;

use example_queue::{ExampleConfig, RenderThumbnail, STREAM};

async fn render(job: Job<RenderThumbnail>) -> Result<(), JobError> {
    tracing::info!(image = job.payload.image, job = %job.id, attempt = job.attempt, "rendering");
    tokio::time::sleep(Duration::from_millis(job.payload.work_ms)).await;
    tracing::info!(image = job.payload.image, job = %job.id, "rendered");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ExampleConfig::from_env_map(&process_env())?;
    let _telemetry = platform_core::telemetry::init("worker", &config.telemetry)?;

    let shell = ServiceShell::new("worker");
    let queue = Queue::connect(&config.nats, &config.redis, config.queue, shell.metrics()).await?;
    let shell = shell.with_readiness(queue.readiness_check());

    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            platform_core::shutdown::signal().await;
            stop.cancel();
        }
    });
    let options = ConsumerOptions {
        concurrency: config.concurrency,
        lease: Duration::from_secs(config.lease_secs),
        ..ConsumerOptions::default()
    };
    let listener = tokio::net::TcpListener::bind(config.http.addr).await?;
    let (served, consumed) = tokio::join!(
        shell.serve(listener, stop.clone().cancelled_owned()),
        queue.consume(STREAM, "renderers", options, render, stop.cancelled_owned()),
    );
    served?;
    consumed?;
    Ok(())
}
