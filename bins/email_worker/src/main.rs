//! `email_worker` (port 8084): sends queued mail. Any number may run; one sends, the others stand
//! by (see `platform_mail::EmailWorker`).

use anyhow::Context as _;
use platform_core::config::EmailWorkerConfig;
use platform_core::db::{CORE_MIGRATIONS, Database};
use platform_core::queue::{Queue, QueueOptions};
use platform_core::redis::Redis;
use platform_core::service::{ReadinessCheck, ServiceShell, Starting};
use platform_mail::{Composer, EmailWorker, MAIL_MIGRATIONS, SmtpSender, WorkerOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = EmailWorkerConfig::from_env()?;
    let _telemetry = platform_core::telemetry::init("email_worker", &config.telemetry)?;
    let starting = Starting::bind("email_worker", config.http.addr).await?;
    tracing::info!(
        smtp_host = %config.smtp.host,
        smtp_port = config.smtp.port,
        tls = ?config.smtp.tls,
        "SMTP relay configured"
    );

    let database = Database::connect(&config.database);
    starting.phase("applying database migrations");
    database.migrate_all([CORE_MIGRATIONS, MAIL_MIGRATIONS]).await?;
    let redis = Redis::connect(&config.redis)?;

    let shell = ServiceShell::new("email_worker").with_shutdown_grace(config.http.shutdown_grace);
    let queue_options = QueueOptions::default().with_shutdown_grace(config.http.shutdown_grace);
    let queue = Queue::connect(&config.nats, &config.redis, queue_options, shell.metrics()).await?;
    let worker = EmailWorker::new(
        queue.clone(),
        database.clone(),
        Composer::new(&config.domain.public_url, &config.smtp.from),
        SmtpSender::new(&config.smtp)?,
        shell.metrics(),
        WorkerOptions::default(),
    );
    let shell = shell
        .with_readiness(ReadinessCheck::database(database))
        .with_readiness(ReadinessCheck::redis(redis))
        .with_readiness(queue.readiness_check())
        .with_readiness(worker.readiness_check());
    let listener = starting.ready().await;
    let sending = tokio::spawn(async move { worker.run(platform_core::shutdown::signal()).await });
    shell.serve(listener, platform_core::shutdown::signal()).await?;
    sending.await.context("the worker panicked")??;
    Ok(())
}
