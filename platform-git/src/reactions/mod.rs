//! What follows a push: the worker pool `git_hook` runs.
//!
//! Every push leaves one [`PushEvent`] on [`PUSH_STREAM`]. Every worker consumes it as a member
//! of one group ([`REACTION_GROUP`]), so each event is taken by one worker, and fans it out at
//! once: one [`ReactionJob`] per [`Reaction`] to [`REACTION_STREAM`], each published under an id
//! made of the event's id and the reaction's kind, then the event is acknowledged. The reaction
//! jobs are consumed by the same pool, each on its own: a reaction that fails is retried with
//! its own backoff while the others are done, and no reaction waits for another.
//!
//! Reactions are idempotent by event id: a finished reaction is recorded in
//! `push_reactions_done` before its job is acknowledged, and one found recorded is skipped, so
//! an event the queue delivers twice (a worker died before acknowledging) is acted on once.
//! Reactions whose effect is outside the database keep that promise their own way: webhook
//! deliveries are keyed by event, and notification mails are published under ids derived from
//! the event, which the email worker sends once.
//!
//! The reactions shipped: [`metadata::RepositoryMetadata`] (default branch on the first push,
//! push, branch and tag counts, languages of the default branch), [`WebhookFanOut`] (one
//! delivery per listening hook and event, sent by [`crate::webhooks::engine`]) and
//! [`crate::watches::Notifier`] (one mail per watcher). A program adds its own (a search
//! indexer) by implementing [`Reaction`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use diesel::sql_types::{Text, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use platform_core::db::Database;
use platform_core::queue::{Backoff, ConsumerOptions, Job, JobError, Queue, QueueError};
use platform_core::telemetry::Metrics;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::events::{PUSH_STREAM, PushEvent};

pub mod metadata;
mod metrics;
mod webhooks;
mod worker;

pub use webhooks::WebhookFanOut;
pub use worker::{HookWorker, HookWorkerSettings, RunningHookWorker};

/// The queue stream reaction jobs travel on.
pub const REACTION_STREAM: &str = "push_reactions";

/// The queue group every worker of the pool shares, for pushes and reaction jobs alike.
pub const REACTION_GROUP: &str = "git_hook";

/// A future a reaction returns.
pub type ReactionFuture<'a> = Pin<Box<dyn Future<Output = Result<(), JobError>> + Send + 'a>>;

/// One thing done after every push.
///
/// `react` may run more than once for an event (a worker that dies mid-way): make its effect
/// idempotent by the event's id, or record it in the same transaction as
/// [`mark_done`] does.
pub trait Reaction: Send + Sync + 'static {
    /// A short name, unique among the reactions: `metadata`, `webhooks`, `notifications`. It
    /// names the job, the metrics label and the record of what is done.
    fn kind(&self) -> &'static str;

    /// Reacts to `event`. [`JobError::Retry`] tries again later, [`JobError::Permanent`] gives
    /// up (the job is dead-lettered with the reason).
    fn react<'a>(&'a self, event: &'a PushEvent) -> ReactionFuture<'a>;
}

/// One reaction to one push, as queued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactionJob {
    /// [`Reaction::kind`].
    pub kind: String,
    /// The push.
    pub event: PushEvent,
}

/// How a pool member consumes.
#[derive(Clone, Debug)]
pub struct ReactionOptions {
    /// Push events fanned out at once. Default 16.
    pub fan_out_concurrency: usize,
    /// Reaction jobs run at once. Default 16.
    pub concurrency: usize,
    /// Attempts of one reaction before it is dead-lettered. Default 10.
    pub max_attempts: u32,
    /// Delays between them. Default 1 s doubling to 5 minutes.
    pub backoff: Backoff,
}

impl Default for ReactionOptions {
    fn default() -> Self {
        Self {
            fan_out_concurrency: 16,
            concurrency: 16,
            max_attempts: 10,
            backoff: Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(300) },
        }
    }
}

/// The push side of the pool: fans push events out to reactions and runs them.
#[derive(Clone)]
pub struct PushReactions {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Queue,
    database: Database,
    reactions: HashMap<&'static str, Arc<dyn Reaction>>,
    order: Vec<&'static str>,
    metrics: metrics::ReactionMetrics,
    options: ReactionOptions,
}

impl std::fmt::Debug for PushReactions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushReactions")
            .field("reactions", &self.shared.order)
            .finish_non_exhaustive()
    }
}

/// Builds a [`PushReactions`].
pub struct PushReactionsBuilder {
    queue: Queue,
    database: Database,
    reactions: Vec<Arc<dyn Reaction>>,
    options: ReactionOptions,
}

impl std::fmt::Debug for PushReactionsBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds: Vec<_> = self.reactions.iter().map(|reaction| reaction.kind()).collect();
        f.debug_struct("PushReactionsBuilder").field("reactions", &kinds).finish_non_exhaustive()
    }
}

impl PushReactionsBuilder {
    /// Adds a reaction; one of the same kind added before is replaced.
    pub fn with(mut self, reaction: impl Reaction) -> Self {
        let kind = reaction.kind();
        self.reactions.retain(|known| known.kind() != kind);
        self.reactions.push(Arc::new(reaction));
        self
    }

    /// Consumes with `options` instead of the defaults.
    pub fn options(mut self, options: ReactionOptions) -> Self {
        self.options = options;
        self
    }

    /// The pool member; its metrics go to `metrics`.
    pub fn build(self, metrics: &Metrics) -> PushReactions {
        let order: Vec<&'static str> =
            self.reactions.iter().map(|reaction| reaction.kind()).collect();
        let reaction_metrics = metrics::ReactionMetrics::register(metrics, &order);
        let reactions =
            self.reactions.into_iter().map(|reaction| (reaction.kind(), reaction)).collect();
        PushReactions {
            shared: Arc::new(Shared {
                queue: self.queue,
                database: self.database,
                reactions,
                order,
                metrics: reaction_metrics,
                options: self.options,
            }),
        }
    }
}

impl PushReactions {
    /// Starts a pool member publishing and consuming through `queue`, recording what is done
    /// in `database`.
    pub fn builder(queue: Queue, database: Database) -> PushReactionsBuilder {
        PushReactionsBuilder {
            queue,
            database,
            reactions: Vec::new(),
            options: ReactionOptions::default(),
        }
    }

    /// Consumes push events and reaction jobs until `shutdown` completes; jobs in flight then
    /// finish within the queue's grace period.
    ///
    /// # Errors
    ///
    /// Fails only when a stream or group name is invalid.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) -> Result<(), QueueError> {
        let stop = CancellationToken::new();
        let shared = &self.shared;
        let fan_out = {
            let this = self.clone();
            move |job: Job<PushEvent>| {
                let this = this.clone();
                async move { this.fan_out(&job.payload).await }
            }
        };
        let react = {
            let this = self.clone();
            move |job: Job<ReactionJob>| {
                let this = this.clone();
                async move { this.react(job).await }
            }
        };
        let fan_out_options = ConsumerOptions {
            concurrency: shared.options.fan_out_concurrency.max(1),
            max_attempts: 50,
            backoff: Backoff { initial: Duration::from_millis(500), max: Duration::from_secs(30) },
            ..ConsumerOptions::default()
        };
        let react_options = ConsumerOptions {
            concurrency: shared.options.concurrency.max(1),
            max_attempts: shared.options.max_attempts,
            backoff: shared.options.backoff,
            ..ConsumerOptions::default()
        };
        let pushes = shared.queue.consume(
            PUSH_STREAM,
            REACTION_GROUP,
            fan_out_options,
            fan_out,
            stop.clone().cancelled_owned(),
        );
        let reactions = shared.queue.consume(
            REACTION_STREAM,
            REACTION_GROUP,
            react_options,
            react,
            stop.clone().cancelled_owned(),
        );
        let stopping = async {
            shutdown.await;
            stop.cancel();
        };
        let (pushes, reactions, ()) = tokio::join!(pushes, reactions, stopping);
        pushes.and(reactions)
    }

    /// Publishes one job per reaction for `event`. An event seen again publishes the same job
    /// ids, which the reactions' records make harmless.
    async fn fan_out(&self, event: &PushEvent) -> Result<(), JobError> {
        let shared = &self.shared;
        let lag = chrono::Utc::now() - event.pushed_at;
        shared.metrics.set_lag(lag.to_std().unwrap_or_default());
        for kind in &shared.order {
            let job = ReactionJob { kind: (*kind).to_owned(), event: event.clone() };
            let id = format!("{}-{kind}", event.id);
            shared
                .queue
                .publish_with_id(REACTION_STREAM, &id, &job)
                .await
                .map_err(|error| JobError::retry(platform_core::service::error_chain(&error)))?;
        }
        Ok(())
    }

    async fn react(&self, job: Job<ReactionJob>) -> Result<(), JobError> {
        let shared = &self.shared;
        let ReactionJob { kind, event } = job.payload;
        let Some(reaction) = shared.reactions.get(kind.as_str()) else {
            return Err(JobError::permanent(format!("no reaction of kind {kind:?} here")));
        };
        let kind = reaction.kind();
        match is_done(&shared.database, event.id, kind).await {
            Ok(true) => {
                shared.metrics.reacted(kind, metrics::Result::Skipped);
                return Ok(());
            }
            Ok(false) => {}
            Err(error) => return Err(JobError::retry(error)),
        }
        let outcome = reaction.react(&event).await;
        let outcome = match outcome {
            Ok(()) => mark_done(&shared.database, event.id, kind).await.map_err(JobError::retry),
            Err(error) => Err(error),
        };
        match &outcome {
            Ok(()) => shared.metrics.reacted(kind, metrics::Result::Done),
            Err(error) => {
                shared.metrics.reacted(kind, metrics::Result::Failed);
                tracing::warn!(kind, event = %event.id, repository = %event.repository, attempt = job.attempt, error = %error, "push reaction failed");
            }
        }
        outcome
    }
}

/// Whether reaction `kind` to event `event_id` was done.
///
/// # Errors
///
/// Fails when the database does.
pub async fn is_done(
    database: &Database,
    event_id: uuid::Uuid,
    kind: &str,
) -> Result<bool, platform_core::db::DbError> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        done: bool,
    }
    let mut conn = database.get().await?;
    let row: Row = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM push_reactions_done WHERE event_id = $1 AND kind = $2) AS done",
    )
    .bind::<SqlUuid, _>(event_id)
    .bind::<Text, _>(kind)
    .get_result(&mut conn)
    .await?;
    Ok(row.done)
}

/// Records that reaction `kind` to event `event_id` is done (again is harmless).
///
/// # Errors
///
/// Fails when the database does.
pub async fn mark_done(
    database: &Database,
    event_id: uuid::Uuid,
    kind: &str,
) -> Result<(), platform_core::db::DbError> {
    let mut conn = database.get().await?;
    mark_done_on(&mut conn, event_id, kind).await?;
    Ok(())
}

/// Records that reaction `kind` to event `event_id` is done on `conn` (inside a reaction's own
/// transaction); `false` when it was recorded before, and the transaction's work is a repeat.
///
/// # Errors
///
/// Fails when the query does.
pub async fn mark_done_on(
    conn: &mut diesel_async::AsyncPgConnection,
    event_id: uuid::Uuid,
    kind: &str,
) -> Result<bool, diesel::result::Error> {
    let inserted = diesel::sql_query(
        "INSERT INTO push_reactions_done (event_id, kind) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind::<SqlUuid, _>(event_id)
    .bind::<Text, _>(kind)
    .execute(conn)
    .await?;
    Ok(inserted > 0)
}

impl Reaction for crate::watches::Notifier {
    fn kind(&self) -> &'static str {
        "notifications"
    }

    fn react<'a>(&'a self, event: &'a PushEvent) -> ReactionFuture<'a> {
        Box::pin(async move {
            let queued = self.notify(event).await.map_err(|error| {
                let described = platform_core::service::error_chain(&error);
                if error.is_permanent() {
                    JobError::Permanent(described)
                } else {
                    JobError::Retry(described)
                }
            })?;
            if queued > 0 {
                tracing::debug!(event = %event.id, queued, "push notifications queued");
            }
            Ok(())
        })
    }
}
