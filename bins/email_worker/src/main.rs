//! `email_worker` (port 8084): sends queued mail; runs as a single instance.

use anyhow::Context as _;
use platform_core::config::EmailWorkerConfig;
use platform_core::db::{CORE_MIGRATIONS, Database};
use platform_core::queue::{Queue, QueueOptions};
use platform_core::redis::Redis;
use platform_core::service::{ReadinessCheck, ServiceShell};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = EmailWorkerConfig::from_env()?;
    let _telemetry = platform_core::telemetry::init("email_worker", &config.telemetry)?;
    tracing::info!(
        smtp_host = %config.smtp.host,
        smtp_port = config.smtp.port,
        tls = ?config.smtp.tls,
        "SMTP relay configured"
    );

    let database = Database::connect(&config.database);
    database.migrate(CORE_MIGRATIONS).await?;
    let redis = Redis::connect(&config.redis)?;

    let shell = ServiceShell::new("email_worker");
    let queue =
        Queue::connect(&config.nats, &config.redis, QueueOptions::default(), shell.metrics())
            .await?;
    let shell = shell
        .with_readiness(ReadinessCheck::database(database))
        .with_readiness(ReadinessCheck::redis(redis))
        .with_readiness(queue.readiness_check());
    let listener = tokio::net::TcpListener::bind(config.http.addr)
        .await
        .with_context(|| format!("failed to listen on {}", config.http.addr))?;
    shell.serve(listener, platform_core::shutdown::signal()).await?;
    Ok(())
}
