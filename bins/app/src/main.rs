//! `app` (port 3000): the main API server.

use anyhow::Context as _;
use platform_ai::service::AppCodeSearch;
use platform_core::accounts::{self, Accounts};
use platform_core::config::AppConfig;
use platform_core::db::{CORE_MIGRATIONS, Database};
use platform_core::queue::{Queue, QueueOptions};
use platform_core::redis::Redis;
use platform_core::service::{ReadinessCheck, RouteLimits, ServiceShell, Starting};
use platform_git::api::RepoApi;
use platform_git::store::RepoStore;
use platform_git::webhooks::guard::{AllowList, Guard};
use platform_storage::api::{StorageApi, UploadLimits};
use platform_storage::{AvatarRoot, FilesRoot};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = AppConfig::from_env()?;
    let _telemetry = platform_core::telemetry::init("app", &config.telemetry)?;
    let starting = Starting::bind("app", config.http.addr).await?;

    let database = Database::connect(&config.database);
    starting.phase("applying database migrations");
    database
        .migrate_all([
            CORE_MIGRATIONS,
            platform_git::GIT_MIGRATIONS,
            platform_storage::STORAGE_MIGRATIONS,
            platform_ai::service::AI_MIGRATIONS,
        ])
        .await?;
    let redis = Redis::connect(&config.redis)?;
    tokio::fs::create_dir_all(&config.repos_root)
        .await
        .with_context(|| format!("cannot create APP_REPOS_ROOT {}", config.repos_root.display()))?;

    let shell = ServiceShell::new("app").with_shutdown_grace(config.http.shutdown_grace);
    let queue_options = QueueOptions::default().with_shutdown_grace(config.http.shutdown_grace);
    let queue = Queue::connect(&config.nats, &config.redis, queue_options, shell.metrics()).await?;
    let accounts = Accounts::new(database.clone(), redis.clone(), queue.clone(), &config.session)?;
    let store = RepoStore::new(&config.repos_root);
    let guard = Guard::new(AllowList::from_entries(&config.webhooks.allowed_hosts)?);
    let repos = RepoApi::new(accounts.clone(), store, config.domain.public_url.clone())
        .with_webhook_guard(guard)
        .with_ssh_base(config.domain.ssh_base());
    // static_server serves STATIC_ROOT at /static/ of the public URL (the chart's Ingress).
    let static_url = config.domain.public_url.join("static/")?;
    let limits = UploadLimits::from_config(&config.uploads);
    let body_limit = limits.body_limit();
    let uploads = StorageApi::new(
        accounts.clone(),
        AvatarRoot::open(&config.avatar_path)?,
        &FilesRoot::open(&config.storage_path)?,
        &static_url,
        limits,
    );
    let code_search = AppCodeSearch::open(&config, accounts.clone(), queue.clone()).await?;
    let search_and_ask =
        code_search.routes(&config, accounts.clone(), redis.clone(), shell.metrics());
    let routes = accounts::api(accounts)
        .merge(platform_git::api::api(repos))
        .merge(platform_storage::api::api(uploads))
        .merge(search_and_ask);
    let request_timeout = Some(config.ask.request_timeout(RouteLimits::default()));
    let shell = shell
        .with_routes(platform_core::api::documented(routes, "platform", env!("CARGO_PKG_VERSION")))
        // Uploads stream against their own limits; JSON bodies keep axum's 2 MB.
        .with_limits(RouteLimits { body_limit: Some(body_limit), request_timeout })
        .with_readiness(ReadinessCheck::database(database))
        .with_readiness(ReadinessCheck::redis(redis))
        .with_readiness(queue.readiness_check())
        .with_readiness(ReadinessCheck::directory("repositories", config.repos_root))
        .with_readiness(code_search.readiness_check());
    let listener = starting.ready().await;
    // In embedded mode this process owns the store, so it indexes too.
    let indexing = code_search.worker.map(|worker| {
        tokio::spawn(async move { worker.run(platform_core::shutdown::signal()).await })
    });
    shell.serve(listener, platform_core::shutdown::signal()).await?;
    if let Some(indexing) = indexing {
        indexing.await.context("the index worker panicked")??;
    }
    Ok(())
}
