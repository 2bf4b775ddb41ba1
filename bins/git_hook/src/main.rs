//! `git_hook` (port 8083): the worker pool that reacts to pushes (see
//! `platform_git::reactions`): repository metadata, webhook deliveries, watcher notifications.
//! Any number may run; they share the work.

use anyhow::Context as _;
use platform_ai::service::{AI_MIGRATIONS, GitHookCodeSearch};
use platform_core::config::GitHookConfig;
use platform_core::db::{CORE_MIGRATIONS, Database};
use platform_core::queue::{Queue, QueueOptions};
use platform_core::redis::Redis;
use platform_core::service::{ReadinessCheck, ServiceShell, Starting};
use platform_git::reactions::{HookWorker, HookWorkerSettings};
use platform_git::store::RepoStore;
use platform_git::webhooks::engine::DeliveryOptions;
use platform_git::webhooks::guard::{AllowList, Guard};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = GitHookConfig::from_env()?;
    let _telemetry = platform_core::telemetry::init("git_hook", &config.telemetry)?;
    let starting = Starting::bind("git_hook", config.http.addr).await?;

    let database = Database::connect(&config.database);
    starting.phase("applying database migrations");
    database.migrate_all([CORE_MIGRATIONS, platform_git::GIT_MIGRATIONS, AI_MIGRATIONS]).await?;
    let redis = Redis::connect(&config.redis)?;

    let shell = ServiceShell::new("git_hook").with_shutdown_grace(config.http.shutdown_grace);
    let queue_options = QueueOptions::default().with_shutdown_grace(config.http.shutdown_grace);
    let queue = Queue::connect(&config.nats, &config.redis, queue_options, shell.metrics()).await?;
    let settings = HookWorkerSettings {
        public_url: config.domain.public_url.clone(),
        guard: Guard::new(AllowList::from_entries(&config.webhooks.allowed_hosts)?),
        delivery: DeliveryOptions {
            first_retry: config.webhooks.first_retry,
            ..DeliveryOptions::default()
        },
        client: Default::default(),
        ssh_base: Some(config.domain.ssh_base()),
    };
    let store = RepoStore::new(&config.repos_root);
    let code_search = GitHookCodeSearch::open(&config, database.clone(), queue.clone()).await?;
    let mut worker = HookWorker::new(database.clone(), queue.clone(), store, settings)?;
    if let Some(reaction) = code_search.reaction {
        worker = worker.with(reaction);
    }
    let worker = worker.build(shell.metrics());
    // With a Qdrant server the pool indexes; with an embedded store `app` does.
    let indexing = code_search.worker.map(|indexer| {
        tokio::spawn(async move { indexer.run(platform_core::shutdown::signal()).await })
    });
    let shell = shell
        .with_readiness(ReadinessCheck::database(database))
        .with_readiness(ReadinessCheck::redis(redis))
        .with_readiness(queue.readiness_check())
        .with_readiness(ReadinessCheck::directory("repositories", config.repos_root.clone()));
    let listener = starting.ready().await;
    let working = tokio::spawn(async move { worker.run(platform_core::shutdown::signal()).await });
    shell.serve(listener, platform_core::shutdown::signal()).await?;
    working.await.context("the worker panicked")??;
    if let Some(indexing) = indexing {
        indexing.await.context("the index worker panicked")??;
    }
    Ok(())
}
