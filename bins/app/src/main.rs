//! `app` (port 3000): the main API server.

use anyhow::Context as _;
use platform_core::accounts::{self, Accounts};
use platform_core::config::AppConfig;
use platform_core::db::{CORE_MIGRATIONS, Database};
use platform_core::queue::{Queue, QueueOptions};
use platform_core::redis::Redis;
use platform_core::service::{ReadinessCheck, ServiceShell};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = AppConfig::from_env()?;
    let _telemetry = platform_core::telemetry::init("app", &config.telemetry)?;

    let database = Database::connect(&config.database);
    database.migrate(CORE_MIGRATIONS).await?;
    let redis = Redis::connect(&config.redis)?;

    let shell = ServiceShell::new("app");
    let queue =
        Queue::connect(&config.nats, &config.redis, QueueOptions::default(), shell.metrics())
            .await?;
    let accounts = Accounts::new(database.clone(), redis.clone(), queue.clone(), &config.session)?;
    let shell = shell
        .with_routes(accounts::router(accounts))
        .with_readiness(ReadinessCheck::database(database))
        .with_readiness(ReadinessCheck::redis(redis))
        .with_readiness(queue.readiness_check());
    let listener = tokio::net::TcpListener::bind(config.http.addr)
        .await
        .with_context(|| format!("failed to listen on {}", config.http.addr))?;
    shell.serve(listener, platform_core::shutdown::signal()).await?;
    Ok(())
}
