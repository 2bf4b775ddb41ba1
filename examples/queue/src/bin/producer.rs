//! Run with: `cargo run -p example-queue --bin producer -- 100 250` (publishes 100 jobs of
//! 250 ms each). Needs Redis (`APP_REDIS_URL`) and, optionally, NATS JetStream (`NATS_URL`).

use platform_core::config::process_env;
use platform_core::queue::Queue;
use platform_core::telemetry::Metrics;

use example_queue::{ExampleConfig, RenderThumbnail, STREAM};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ExampleConfig::from_env_map(&process_env())?;
    let _telemetry = platform_core::telemetry::init("producer", &config.telemetry)?;
    let mut args = std::env::args().skip(1);
    let count: u32 = args.next().map_or(Ok(10), |a| a.parse())?;
    let work_ms: u64 = args.next().map_or(Ok(100), |a| a.parse())?;

    let queue =
        Queue::connect(&config.nats, &config.redis, config.queue, &Metrics::new("producer"))
            .await?;
    for image in 0..count {
        let id = queue.publish(STREAM, &RenderThumbnail { image, work_ms }).await?;
        tracing::info!(image, job = %id, "published");
    }
    Ok(())
}
