//! The email worker: the active sender consumes mail jobs and delivers them; the others stand by.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use platform_core::db::Database;
use platform_core::queue::{Backoff, ConsumerOptions, Job, JobError, Queue, QueueError};
use platform_core::service::ReadinessCheck;
use platform_core::telemetry::Metrics;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::compose::Composer;
use crate::deliveries::Deliveries;
use crate::job::{MAIL_STREAM, MailJob};
use crate::leader::{LeaderLease, LeaseOptions};
use crate::metrics::MailMetrics;
use crate::smtp::SmtpSender;

/// Whether this worker sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Another worker holds the lease (or none can be had): ready, idle.
    Standby,
    /// This worker holds the lease and consumes the mail stream.
    Leader,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Standby => "standby",
            Self::Leader => "leader",
        })
    }
}

/// How an [`EmailWorker`] runs.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The lease's name and the queue group: workers with the same name take turns. Default
    /// `email_worker`.
    pub name: String,
    /// How the leader consumes. Default: 4 messages at a time, 8 attempts for messages the
    /// relay defers (4xx), 30 seconds doubling to 30 minutes between them (about 2 hours in
    /// all), a 30-second job lease.
    pub consumer: ConsumerOptions,
    /// How the lease is polled and checked.
    pub lease: LeaseOptions,
    /// Delays between tries while the relay cannot be reached; such tries cost a job no
    /// attempt, so mail waits for the relay however long it is down. Default 1 s doubling to
    /// 30 s.
    pub relay_backoff: Backoff,
    /// How long records of sent messages are kept. Default 14 days.
    pub keep_deliveries: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            name: "email_worker".to_owned(),
            consumer: ConsumerOptions {
                concurrency: 4,
                max_attempts: 8,
                backoff: Backoff {
                    initial: Duration::from_secs(30),
                    max: Duration::from_secs(30 * 60),
                },
                ..ConsumerOptions::default()
            },
            lease: LeaseOptions::default(),
            relay_backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(30),
            },
            keep_deliveries: Duration::from_secs(14 * 24 * 3600),
        }
    }
}

/// Sends the mail jobs of [`MAIL_STREAM`] through an SMTP relay, as the only active sender of
/// its deployment.
///
/// - Only the holder of the leader lease ([`LeaderLease`]) consumes; every other worker stands
///   by, ready, and takes over within one lease poll of the leader's death.
/// - The relay accepting a message is recorded before the job is acknowledged, and a job whose
///   message was recorded is acknowledged unsent ([`Deliveries`]).
/// - While the relay cannot be reached, jobs wait without using up attempts; a 4xx reply is
///   retried with the consumer's backoff; a 5xx reply dead-letters the job with the reply.
#[derive(Clone)]
pub struct EmailWorker {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Queue,
    composer: Composer,
    sender: SmtpSender,
    deliveries: Deliveries,
    lease: LeaderLease,
    metrics: MailMetrics,
    options: WorkerOptions,
    role: watch::Sender<Role>,
}

impl fmt::Debug for EmailWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailWorker")
            .field("name", &self.shared.options.name)
            .field("relay", &self.shared.sender.relay())
            .field("role", &*self.shared.role.borrow())
            .finish_non_exhaustive()
    }
}

impl EmailWorker {
    /// Returns a worker; nothing runs before [`EmailWorker::run`]. Its metrics go to
    /// `metrics`.
    pub fn new(
        queue: Queue,
        database: Database,
        composer: Composer,
        sender: SmtpSender,
        metrics: &Metrics,
        options: WorkerOptions,
    ) -> Self {
        let lease = LeaderLease::new(database.clone(), &options.name, options.lease.clone());
        let metrics = MailMetrics::register(metrics);
        metrics.set_leader(false);
        Self {
            shared: Arc::new(Shared {
                queue,
                composer,
                sender,
                deliveries: Deliveries::new(database),
                lease,
                metrics,
                options,
                role: watch::Sender::new(Role::Standby),
            }),
        }
    }

    /// Returns this worker's role now.
    pub fn role(&self) -> Role {
        *self.shared.role.borrow()
    }

    /// Returns a receiver that sees every change of role.
    pub fn roles(&self) -> watch::Receiver<Role> {
        self.shared.role.subscribe()
    }

    /// A readiness check named `mail_sender` that always passes and reports the role
    /// (`leader` or `standby`) as its detail: a standby is ready, only idle.
    pub fn readiness_check(&self) -> ReadinessCheck {
        let role = self.shared.role.subscribe();
        ReadinessCheck::with_detail("mail_sender", move || {
            let role = *role.borrow();
            async move { Ok::<_, Infallible>(role.to_string()) }
        })
    }

    /// Stands by until this worker holds the lease, then sends until `shutdown` completes or
    /// the lease is lost (then stands by again). On shutdown, messages being sent finish within
    /// the consumer's grace period and the lease is released for a standby.
    ///
    /// # Errors
    ///
    /// Fails only for an invalid [`WorkerOptions::name`].
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) -> Result<(), QueueError> {
        let stop = CancellationToken::new();
        let work = self.lead_while_possible(&stop);
        tokio::pin!(work);
        tokio::select! {
            result = &mut work => return result,
            () = shutdown => stop.cancel(),
        }
        work.await
    }

    async fn lead_while_possible(&self, stop: &CancellationToken) -> Result<(), QueueError> {
        let shared = &self.shared;
        loop {
            self.set_role(Role::Standby);
            let Some(leadership) = shared.lease.acquire(stop).await else { return Ok(()) };
            self.set_role(Role::Leader);
            // Cancelled when this term ends: jobs waiting for the relay give up their turn.
            let term = stop.child_token();
            let pruning = tokio::spawn(prune_periodically(Arc::clone(shared)));
            let handler = {
                let (shared, term) = (Arc::clone(shared), term.clone());
                move |job: Job<MailJob>| {
                    let (shared, term) = (Arc::clone(&shared), term.clone());
                    async move { shared.deliver(job, &term).await }
                }
            };
            let term_over = async {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = leadership.lost() => term.cancel(),
                }
            };
            let consumed = shared
                .queue
                .consume(
                    MAIL_STREAM,
                    &shared.options.name,
                    shared.options.consumer.clone(),
                    handler,
                    term_over,
                )
                .await;
            term.cancel();
            pruning.abort();
            leadership.release().await;
            self.set_role(Role::Standby);
            consumed?;
            if stop.is_cancelled() {
                return Ok(());
            }
        }
    }

    fn set_role(&self, role: Role) {
        self.shared.metrics.set_leader(role == Role::Leader);
        self.shared.role.send_if_modified(|current| {
            let changed = *current != role;
            *current = role;
            changed
        });
    }
}

impl Shared {
    async fn deliver(&self, job: Job<MailJob>, term: &CancellationToken) -> Result<(), JobError> {
        let kind = job.payload.kind();
        let id = job.id.as_str();
        let mut waits = 0_u32;
        // PostgreSQL down is waited out like the relay: nothing is sent unless it is known
        // whether it was sent before.
        let already_sent = loop {
            match self.deliveries.was_sent(id).await {
                Ok(sent) => break sent,
                Err(error) => {
                    waits += 1;
                    self.wait(term, waits, platform_core::service::error_chain(&error)).await?;
                }
            }
        };
        if already_sent {
            self.metrics.duplicate_skipped();
            tracing::info!(job = id, kind, "already sent: acknowledging without sending again");
            return Ok(());
        }
        let composed = match self.composer.compose(&job.payload, id) {
            Ok(composed) => composed,
            Err(error) => return Err(self.give_up(kind, "invalid", &error)),
        };
        let message = composed.to_bytes().map_err(|error| self.give_up(kind, "invalid", &error))?;

        let mut waits = 0_u32;
        loop {
            match self.sender.send(&composed.from, &composed.to, &message).await {
                Ok(accepted) => {
                    if let Err(error) = self.deliveries.record_sent(id, kind, &accepted.reply).await
                    {
                        tracing::error!(job = id, kind, error = %platform_core::service::error_chain(&error),
                            "sent, but the delivery could not be recorded: a redelivery would send it again");
                    }
                    self.metrics.sent(kind);
                    tracing::info!(job = id, kind, attempt = job.attempt, reply = %accepted.reply, "sent");
                    return Ok(());
                }
                Err(error) if error.is_relay_unavailable() => {
                    self.metrics.failed(kind, "relay_unavailable");
                    waits += 1;
                    self.wait(term, waits, platform_core::service::error_chain(&error)).await?;
                }
                Err(error) if error.is_permanent() => {
                    return Err(self.give_up(kind, "rejected", &error));
                }
                Err(error) => {
                    self.metrics.failed(kind, "transient");
                    if job.attempt >= self.options.consumer.max_attempts {
                        self.metrics.dead_lettered(kind);
                    } else {
                        self.metrics.retried(kind);
                    }
                    return Err(JobError::retry(error));
                }
            }
        }
    }

    /// Waits before trying again a dependency that could not be reached, or returns the
    /// error for the queue to retry when this term is over.
    async fn wait(
        &self,
        term: &CancellationToken,
        waits: u32,
        error: String,
    ) -> Result<(), JobError> {
        if waits == 1 || waits.is_multiple_of(10) {
            tracing::warn!(%error, waits, "mail is waiting: a dependency cannot be reached");
        }
        tokio::select! {
            () = term.cancelled() => Err(JobError::retry(error)),
            () = tokio::time::sleep(self.options.relay_backoff.delay(waits)) => Ok(()),
        }
    }

    fn give_up(&self, kind: &str, reason: &str, error: &dyn fmt::Display) -> JobError {
        self.metrics.failed(kind, reason);
        self.metrics.dead_lettered(kind);
        JobError::permanent(error)
    }
}

async fn prune_periodically(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        match shared.deliveries.prune(shared.options.keep_deliveries).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "pruned old delivery records"),
            Err(error) => {
                tracing::warn!(error = %platform_core::service::error_chain(&error), "cannot prune delivery records")
            }
        }
    }
}
