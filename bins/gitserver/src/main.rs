//! `gitserver` (ports 8021 and 2222): git over smart HTTP and SSH.

use anyhow::Context as _;
use platform_core::accounts::Accounts;
use platform_core::config::GitServerConfig;
use platform_core::db::{CORE_MIGRATIONS, Database};
use platform_core::queue::{Queue, QueueOptions};
use platform_core::redis::Redis;
use platform_core::service::{ReadinessCheck, RouteLimits, ServiceShell, Starting};
use platform_git::events::PushEvents;
use platform_git::ssh::{GitSsh, SshOptions};
use platform_git::store::RepoStore;
use platform_git::transport::{GitOptions, GitService};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = GitServerConfig::from_env()?;
    let _telemetry = platform_core::telemetry::init("gitserver", &config.telemetry)?;
    let starting = Starting::bind("gitserver", config.http.addr).await?;

    let database = Database::connect(&config.database);
    starting.phase("applying database migrations");
    database.migrate_all([CORE_MIGRATIONS, platform_git::GIT_MIGRATIONS]).await?;
    let redis = Redis::connect(&config.redis)?;

    let shell = ServiceShell::new("gitserver").with_shutdown_grace(config.http.shutdown_grace);
    let queue_options = QueueOptions::default().with_shutdown_grace(config.http.shutdown_grace);
    let queue = Queue::connect(&config.nats, &config.redis, queue_options, shell.metrics()).await?;
    let accounts = Accounts::without_sessions(database.clone(), redis.clone(), queue.clone())
        .with_trusted_proxies(config.trusted_proxies.clone());
    let events = PushEvents::new(database.clone(), queue.clone());
    // Hooks and push scratch files live beside the repositories, where every replica sees them.
    let state_dir = config.repos_root.join(".platform");
    let git = GitService::new(
        accounts,
        RepoStore::new(&config.repos_root),
        events.clone(),
        GitOptions::from(&config.git_limits),
        &state_dir,
    )
    .with_context(|| format!("cannot write {}", state_dir.display()))?;
    let relay = tokio::spawn(async move { events.relay(platform_core::shutdown::signal()).await });
    let ssh_options =
        SshOptions { shutdown_grace: config.http.shutdown_grace, ..SshOptions::default() };
    let ssh = GitSsh::new(git.clone(), config.ssh.host_key.expose_pem(), ssh_options)?;
    let ssh_listener = tokio::net::TcpListener::bind(config.ssh.addr)
        .await
        .with_context(|| format!("failed to listen on {} for SSH", config.ssh.addr))?;
    tracing::info!(addr = %config.ssh.addr, fingerprint = ssh.fingerprint(), "serving git over SSH");
    let ssh =
        tokio::spawn(
            async move { ssh.serve(ssh_listener, platform_core::shutdown::signal()).await },
        );

    let shell = shell
        .with_routes(platform_git::http::router(git))
        // Pushes and clones set their own size and time limits.
        .with_limits(RouteLimits { request_timeout: None, body_limit: None })
        .with_readiness(ReadinessCheck::database(database))
        .with_readiness(ReadinessCheck::redis(redis))
        .with_readiness(queue.readiness_check())
        .with_readiness(ReadinessCheck::directory("repositories", config.repos_root.clone()));
    let listener = starting.ready().await;
    // HTTP and SSH each finish their open work within the same grace, side by side.
    shell.serve(listener, platform_core::shutdown::signal()).await?;
    ssh.await.context("the SSH server panicked")?;
    relay.abort();
    Ok(())
}
