//! One member of the `git_hook` pool, assembled: the push reactions and the delivery engine.

use std::future::Future;

use platform_core::db::Database;
use platform_core::queue::{Queue, QueueError};
use platform_core::telemetry::Metrics;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::metadata::RepositoryMetadata;
use super::{PushReactions, PushReactionsBuilder, Reaction, WebhookFanOut};
use crate::browse::{Browser, Limits};
use crate::store::RepoStore;
use crate::watches::Notifier;
use crate::webhooks::client::{ClientError, ClientOptions, DeliveryClient};
use crate::webhooks::engine::{DeliveryEngine, DeliveryOptions};
use crate::webhooks::guard::Guard;

/// What a pool member needs to know.
#[derive(Clone, Debug)]
pub struct HookWorkerSettings {
    /// `APP_DOMAIN_URL`: payloads and mails link there.
    pub public_url: Url,
    /// What payload URLs may reach beyond the public internet.
    pub guard: Guard,
    /// Retries, pauses and concurrency of deliveries.
    pub delivery: DeliveryOptions,
    /// Timeouts and caps of each delivery's request.
    pub client: ClientOptions,
    /// The base of SSH clone addresses (`ssh://git@git.example.com:2222`), for payloads'
    /// `ssh_url`; without it payloads have none.
    pub ssh_base: Option<String>,
}

/// A `git_hook` worker: [`RepositoryMetadata`], [`WebhookFanOut`] and [`Notifier`] as push
/// reactions (and any added with [`HookWorker::with`]), and a [`DeliveryEngine`].
///
/// ```no_run
/// # async fn run(database: platform_core::db::Database, queue: platform_core::queue::Queue,
/// #     metrics: &platform_core::telemetry::Metrics) -> Result<(), Box<dyn std::error::Error>> {
/// use platform_git::reactions::{HookWorker, HookWorkerSettings};
/// use platform_git::store::RepoStore;
///
/// let settings = HookWorkerSettings {
///     public_url: "https://git.example.com".parse()?,
///     guard: Default::default(),
///     delivery: Default::default(),
///     client: Default::default(),
///     ssh_base: Some("ssh://git@git.example.com:2222".to_owned()),
/// };
/// let worker = HookWorker::new(database, queue, RepoStore::new("/data/repos"), settings)?;
/// worker.build(metrics).run(platform_core::shutdown::signal()).await?;
/// # Ok(()) }
/// ```
pub struct HookWorker {
    reactions: PushReactionsBuilder,
    engine: (Database, Queue, DeliveryClient, DeliveryOptions),
}

impl std::fmt::Debug for HookWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookWorker").field("reactions", &self.reactions).finish_non_exhaustive()
    }
}

impl HookWorker {
    /// The shipped reactions over repositories in `store`.
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be set up.
    pub fn new(
        database: Database,
        queue: Queue,
        store: RepoStore,
        settings: HookWorkerSettings,
    ) -> Result<Self, ClientError> {
        let browser = Browser::new(Limits::default());
        let client = DeliveryClient::new(settings.guard, settings.client)?;
        let mut fan_out = WebhookFanOut::new(
            database.clone(),
            queue.clone(),
            store.clone(),
            browser.clone(),
            settings.public_url,
        );
        if let Some(base) = settings.ssh_base {
            fan_out = fan_out.with_ssh_base(base);
        }
        let reactions = PushReactions::builder(queue.clone(), database.clone())
            .with(RepositoryMetadata::new(database.clone(), store.clone(), browser.clone()))
            .with(fan_out)
            .with(Notifier::new(database.clone(), queue.clone(), browser, store));
        Ok(Self { reactions, engine: (database, queue, client, settings.delivery) })
    }

    /// Adds a reaction (or replaces the one of its kind).
    pub fn with(mut self, reaction: impl Reaction) -> Self {
        self.reactions = self.reactions.with(reaction);
        self
    }

    /// The running parts; their metrics go to `metrics`.
    pub fn build(self, metrics: &Metrics) -> RunningHookWorker {
        let (database, queue, client, options) = self.engine;
        RunningHookWorker {
            reactions: self.reactions.build(metrics),
            engine: DeliveryEngine::new(database, queue, client, metrics, options),
        }
    }
}

/// A built [`HookWorker`].
#[derive(Clone, Debug)]
pub struct RunningHookWorker {
    reactions: PushReactions,
    engine: DeliveryEngine,
}

impl RunningHookWorker {
    /// Reacts to pushes and delivers until `shutdown` completes.
    ///
    /// # Errors
    ///
    /// Fails only for an invalid stream or group name.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) -> Result<(), QueueError> {
        let stop = CancellationToken::new();
        let stopping = async {
            shutdown.await;
            stop.cancel();
        };
        let (reacting, delivering, ()) = tokio::join!(
            self.reactions.run(stop.clone().cancelled_owned()),
            self.engine.run(stop.clone().cancelled_owned()),
            stopping
        );
        reacting.and(delivering)
    }
}
