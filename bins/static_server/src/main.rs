//! `static_server` (port 8081): serves avatars, blobs and media from `STATIC_ROOT`: only the
//! directories `STATIC_PUBLIC_DIRS` names, and never the repositories (`APP_REPOS_ROOT`).

use anyhow::Context as _;
use platform_core::config::StaticServerConfig;
use platform_core::service::{ReadinessCheck, RouteLimits, ServiceShell, Starting};
use platform_storage::StaticRoot;
use platform_storage::serve::{StaticFiles, StaticOptions};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = StaticServerConfig::from_env()?;
    let _telemetry = platform_core::telemetry::init("static_server", &config.telemetry)?;
    let starting = Starting::bind("static_server", config.http.addr).await?;

    let root = StaticRoot::open(&config.static_root)?;
    // The same files at /static/, where the public URLs app hands out point (the Ingress
    // forwards that prefix as it is).
    let options = StaticOptions { url_prefix: Some("/static".to_owned()), ..Default::default() };
    let files = StaticFiles::public_dirs(root.root().clone(), &config.public_dirs, options)
        .context("STATIC_PUBLIC_DIRS")?;
    files.ensure_apart_from(&config.repos_root).context("STATIC_PUBLIC_DIRS and APP_REPOS_ROOT")?;
    let shell = ServiceShell::new("static_server")
        .with_shutdown_grace(config.http.shutdown_grace)
        .with_service(files)
        // Answers start at once; a download takes as long as the client needs.
        .with_limits(RouteLimits { request_timeout: None, body_limit: None })
        .with_readiness(ReadinessCheck::directory("static_root", config.static_root.clone()));
    let listener = starting.ready().await;
    shell.serve(listener, platform_core::shutdown::signal()).await?;
    Ok(())
}
