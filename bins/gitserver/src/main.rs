//! `gitserver` (ports 8021 and 2222): git over smart HTTP and SSH.

use anyhow::Context as _;
use platform_core::config::GitServerConfig;
use platform_core::db::{CORE_MIGRATIONS, Database};
use platform_core::queue::{Queue, QueueOptions};
use platform_core::redis::Redis;
use platform_core::service::{ReadinessCheck, ServiceShell};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = GitServerConfig::from_env()?;
    let _telemetry = platform_core::telemetry::init("gitserver", &config.telemetry)?;
    tracing::info!(
        fingerprint = config.ssh.host_key.fingerprint(),
        ssh_addr = %config.ssh.addr,
        "SSH host key loaded"
    );

    let database = Database::connect(&config.database);
    database.migrate(CORE_MIGRATIONS).await?;
    let redis = Redis::connect(&config.redis)?;

    let shell = ServiceShell::new("gitserver");
    let queue =
        Queue::connect(&config.nats, &config.redis, QueueOptions::default(), shell.metrics())
            .await?;
    let shell = shell
        .with_readiness(ReadinessCheck::database(database))
        .with_readiness(ReadinessCheck::redis(redis))
        .with_readiness(queue.readiness_check())
        .with_readiness(ReadinessCheck::directory("repositories", config.repos_root.clone()));
    let listener = tokio::net::TcpListener::bind(config.http.addr)
        .await
        .with_context(|| format!("failed to listen on {}", config.http.addr))?;
    shell.serve(listener, platform_core::shutdown::signal()).await?;
    Ok(())
}
