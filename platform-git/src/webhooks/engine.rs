//! The delivery engine: sends what [`super::deliveries`] holds, one hook at a time per hook,
//! any number of hooks at once, from any number of workers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use platform_core::db::Database;
use platform_core::queue::{Backoff, ConsumerOptions, Job, JobError, Queue, QueueError};
use platform_core::telemetry::Metrics;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::WebhookError;
use super::claims::{self, Claimed, HookLease, Settled};
use super::client::{AttemptOutcome, DeliveryClient, OutgoingRequest};
use super::deliveries;
use super::hooks::ContentType;
use super::metrics::{Outcome, WebhookMetrics};
use super::sign::signature_headers;

/// The queue stream that wakes the engine for a hook with something to send.
pub const DELIVERY_STREAM: &str = "webhook_deliveries";

/// The queue group every worker's engine shares.
pub const DELIVERY_GROUP: &str = "git_hook";

/// "Hook `hook_id` has deliveries due": published when one is made, redelivered or retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wake {
    /// The hook.
    pub hook_id: i64,
}

/// How deliveries are retried, and when a failing hook is paused or switched off.
///
/// The defaults follow GitLab's rules for failing hooks: after 4 failed attempts in a row a
/// hook is paused for a minute, the pause doubling with every further failure up to a day;
/// after 40 in a row, or at once when the receiver answers `410 Gone`, it is switched off for
/// good (its owner switches it on again through the API). One success resets the count.
#[derive(Clone, Debug)]
pub struct DeliveryOptions {
    /// Hooks one worker delivers to at the same time. Default 32.
    pub concurrency: usize,
    /// Attempts of one delivery before it is given up on. Default 10 (about five hours with
    /// the default delays).
    pub max_attempts: i32,
    /// The delay before the first retry, doubled for each further one (with ±20 % jitter).
    /// Default 30 s.
    pub first_retry: Duration,
    /// The longest delay between two attempts. Default 1 hour.
    pub max_retry: Duration,
    /// Failed attempts in a row after which the hook is paused. Default 4.
    pub pause_after: i32,
    /// The first pause, doubled for each further failure. Default 1 minute.
    pub first_pause: Duration,
    /// The longest pause (also the longest `Retry-After` honoured). Default 24 hours.
    pub max_pause: Duration,
    /// Failed attempts in a row after which the hook is switched off. Default 40.
    pub switch_off_after: i32,
    /// How long a worker holds a hook without renewing; a worker that dies leaves the hook
    /// to another after this. The holder renews it before an attempt once less than half is
    /// left, so it must be over twice the client's timeout. Default 30 s.
    pub lease: Duration,
    /// How often each worker looks for retries that are due and hooks a dead worker left.
    /// Default 1 s.
    pub sweep_every: Duration,
    /// How long finished deliveries (and the records of push reactions done) are kept. Default
    /// 30 days, as GitHub keeps its delivery history.
    pub keep_history: Duration,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        Self {
            concurrency: 32,
            max_attempts: 10,
            first_retry: Duration::from_secs(30),
            max_retry: Duration::from_secs(3600),
            pause_after: 4,
            first_pause: Duration::from_secs(60),
            max_pause: Duration::from_secs(24 * 3600),
            switch_off_after: 40,
            lease: Duration::from_secs(30),
            sweep_every: Duration::from_secs(1),
            keep_history: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

fn doubled(first: Duration, times: i32, max: Duration) -> Duration {
    let factor = 2_u32.saturating_pow(u32::try_from(times.max(0)).unwrap_or(u32::MAX));
    first.saturating_mul(factor).min(max)
}

impl DeliveryOptions {
    /// The delay before the next attempt after `attempts` failed ones, at least what the
    /// receiver's `Retry-After` asked for; `None` once attempts are used up.
    pub fn retry_delay(&self, attempts: i32, retry_after: Option<Duration>) -> Option<Duration> {
        if attempts >= self.max_attempts {
            return None;
        }
        let base = doubled(self.first_retry, attempts - 1, self.max_retry);
        // A uniformly random factor in [0.8, 1.2), so hooks that failed together spread out.
        let random = (uuid::Uuid::new_v4().as_u128() % 10_000) as f64 / 10_000.0;
        let delay = base.mul_f64(0.8 + 0.4 * random);
        Some(retry_after.map_or(delay, |asked| delay.max(asked.min(self.max_pause))))
    }

    /// The pause after `failures` failed attempts in a row, with the reason shown on the hook.
    pub fn pause(&self, failures: i32) -> Option<(Duration, String)> {
        (failures >= self.pause_after).then(|| {
            let pause = doubled(self.first_pause, failures - self.pause_after, self.max_pause);
            (
                pause,
                format!(
                    "paused for {}s after {failures} failed deliveries in a row",
                    pause.as_secs()
                ),
            )
        })
    }

    /// Why the hook is switched off for good after this failure, if it is.
    pub fn switch_off(&self, failures: i32, status: Option<u16>) -> Option<String> {
        if status == Some(410) {
            Some("the receiver answered 410 Gone".to_owned())
        } else if failures >= self.switch_off_after {
            Some(format!("switched off after {failures} failed deliveries in a row"))
        } else {
            None
        }
    }
}

/// Sends deliveries. Every worker runs one; they share the work through
/// [`DELIVERY_STREAM`] and the hooks' leases (see the module docs of [`super`]).
#[derive(Clone)]
pub struct DeliveryEngine {
    shared: Arc<Shared>,
}

struct Shared {
    database: Database,
    queue: Queue,
    client: DeliveryClient,
    metrics: WebhookMetrics,
    options: DeliveryOptions,
    hooks_at_once: Semaphore,
}

impl std::fmt::Debug for DeliveryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryEngine")
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl DeliveryEngine {
    /// An engine sending with `client`; its metrics go to `metrics`. Nothing runs before
    /// [`DeliveryEngine::run`].
    pub fn new(
        database: Database,
        queue: Queue,
        client: DeliveryClient,
        metrics: &Metrics,
        options: DeliveryOptions,
    ) -> Self {
        let hooks_at_once = Semaphore::new(options.concurrency.max(1));
        Self {
            shared: Arc::new(Shared {
                database,
                queue,
                client,
                metrics: WebhookMetrics::register(metrics),
                options,
                hooks_at_once,
            }),
        }
    }

    /// Sends until `shutdown` completes: hooks woken through [`DELIVERY_STREAM`], and every
    /// [`DeliveryOptions::sweep_every`] the retries that are due and hooks a dead worker left.
    ///
    /// # Errors
    ///
    /// Fails when the queue cannot be consumed.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) -> Result<(), QueueError> {
        let stop = CancellationToken::new();
        let sweeping = tokio::spawn({
            let engine = self.clone();
            let stop = stop.clone();
            async move { engine.sweep(stop).await }
        });
        let handler = {
            let engine = self.clone();
            move |job: Job<Wake>| {
                let engine = engine.clone();
                async move {
                    engine.deliver_due(job.payload.hook_id).await.map_err(|error| {
                        JobError::retry(platform_core::service::error_chain(&error))
                    })
                }
            }
        };
        let consumer = ConsumerOptions {
            concurrency: self.shared.options.concurrency.max(1),
            // A wake that fails (the database down) is retried; the sweep catches what the
            // queue gives up on.
            max_attempts: 20,
            backoff: Backoff { initial: Duration::from_millis(500), max: Duration::from_secs(30) },
            ..ConsumerOptions::default()
        };
        let result = self
            .shared
            .queue
            .consume(DELIVERY_STREAM, DELIVERY_GROUP, consumer, handler, shutdown)
            .await;
        stop.cancel();
        let _ = sweeping.await;
        result
    }

    /// Sends every delivery of `hook_id` that is due, oldest first, unless another worker is
    /// doing so (then it will send them) or the hook is paused or switched off.
    ///
    /// # Errors
    ///
    /// Fails when the database does; what was sent before is recorded.
    pub async fn deliver_due(&self, hook_id: i64) -> Result<(), WebhookError> {
        let _permit = self.shared.hooks_at_once.acquire().await;
        let shared = &self.shared;
        // A delivery made while the lease was held is seen by the check after release; the
        // rounds are bounded so a hook that keeps being refilled does not hold a task forever.
        for _ in 0..8 {
            let lease = {
                let mut conn = shared.database.get().await?;
                claims::acquire(&mut conn, hook_id, shared.options.lease).await?
            };
            let Some(lease) = lease else { return Ok(()) };
            let sent = self.deliver_while_due(&lease).await;
            let mut conn = shared.database.get().await?;
            claims::release(&mut conn, &lease).await?;
            sent?;
            if !claims::has_due(&mut conn, hook_id).await? {
                return Ok(());
            }
        }
        Ok(())
    }

    async fn deliver_while_due(&self, lease: &HookLease) -> Result<(), WebhookError> {
        let shared = &self.shared;
        loop {
            let claimed = {
                let mut conn = shared.database.get().await?;
                claims::claim_next(&mut conn, lease, shared.options.lease).await?
            };
            let Some(claimed) = claimed else { return Ok(()) };
            // No connection is held while the receiver takes its time.
            let outcome = match request(lease, &claimed) {
                Ok(request) => shared.client.send(request).await,
                Err(error) => {
                    AttemptOutcome::not_sent(format!("the payload URL is invalid: {error}"))
                }
            };
            let mut conn = shared.database.get().await?;
            let settled =
                claims::settle(&mut conn, lease, &claimed, &outcome, &shared.options).await?;
            let counted = match settled {
                Settled::Delivered => Outcome::Delivered,
                Settled::Retry(_) => Outcome::Retried,
                Settled::Failed => Outcome::Failed,
            };
            shared.metrics.attempted(&claimed.event, counted, outcome.duration);
            log_attempt(lease, &claimed, &outcome, &settled);
        }
    }

    async fn sweep(&self, stop: CancellationToken) {
        let shared = &self.shared;
        let settled = Duration::from_secs(2);
        // Old history goes about once a minute, a batch at a time, from whichever worker.
        let prune_every = (Duration::from_secs(60).as_millis()
            / shared.options.sweep_every.as_millis().max(1))
        .max(1);
        let mut sweeps: u128 = 0;
        loop {
            sweeps += 1;
            if sweeps.is_multiple_of(prune_every) {
                let pruned = async {
                    let mut conn = shared.database.get().await?;
                    deliveries::prune(&mut conn, shared.options.keep_history, 1000).await
                };
                match pruned.await {
                    Ok(0) => {}
                    Ok(pruned) => tracing::info!(pruned, "old webhook deliveries deleted"),
                    Err(error) => {
                        tracing::warn!(error = %platform_core::service::error_chain(&error), "pruning webhook deliveries failed")
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(shared.options.sweep_every) => {}
            }
            let due = async {
                let mut conn = shared.database.get().await?;
                if let Some(oldest) = claims::oldest_waiting(&mut conn).await? {
                    let age = chrono::Utc::now() - oldest;
                    shared.metrics.set_lag(age.to_std().unwrap_or_default());
                } else {
                    shared.metrics.set_lag(Duration::ZERO);
                }
                let limit = i64::try_from(shared.options.concurrency).unwrap_or(i64::MAX);
                claims::due_hooks(&mut conn, settled, limit).await
            };
            let hooks = match due.await {
                Ok(hooks) => hooks,
                Err(error) => {
                    tracing::warn!(error = %platform_core::service::error_chain(&error), "webhook sweep failed");
                    continue;
                }
            };
            for hook_id in hooks {
                if shared.hooks_at_once.available_permits() == 0 {
                    break;
                }
                let engine = self.clone();
                tokio::spawn(async move {
                    if let Err(error) = engine.deliver_due(hook_id).await {
                        tracing::warn!(hook_id, error = %platform_core::service::error_chain(&error), "webhook delivery failed");
                    }
                });
            }
        }
    }
}

fn log_attempt(lease: &HookLease, claimed: &Claimed, outcome: &AttemptOutcome, settled: &Settled) {
    let hook_id = lease.hook_id;
    let delivery = claimed.id;
    match settled {
        Settled::Delivered => {
            tracing::debug!(hook_id, %delivery, status = outcome.status, "webhook delivered")
        }
        Settled::Retry(at) => tracing::info!(
            hook_id, %delivery, status = outcome.status, error = outcome.error.as_deref(),
            retry_at = %at, "webhook delivery failed; will retry"
        ),
        Settled::Failed => tracing::warn!(
            hook_id, %delivery, status = outcome.status, error = outcome.error.as_deref(),
            attempts = claimed.attempts, "webhook delivery given up"
        ),
    }
}

/// The request of one attempt: the payload as stored, GitHub's, Gitea's and Standard Webhooks'
/// headers, and signatures over exactly the bytes sent.
fn request(lease: &HookLease, claimed: &Claimed) -> Result<OutgoingRequest, url::ParseError> {
    let url = lease.url.parse()?;
    let (content_type, body) = match lease.content_type {
        ContentType::Json => ("application/json", bytes::Bytes::from(claimed.payload.clone())),
        ContentType::Form => {
            let encoded: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("payload", &claimed.payload)
                .finish();
            ("application/x-www-form-urlencoded", bytes::Bytes::from(encoded))
        }
    };
    let id = claimed.id.to_string();
    let mut headers = vec![
        ("Content-Type".to_owned(), content_type.to_owned()),
        ("X-GitHub-Event".to_owned(), claimed.event.clone()),
        ("X-GitHub-Delivery".to_owned(), id.clone()),
        ("X-GitHub-Hook-ID".to_owned(), lease.hook_id.to_string()),
        ("X-GitHub-Hook-Installation-Target-Type".to_owned(), "repository".to_owned()),
        ("X-GitHub-Hook-Installation-Target-ID".to_owned(), lease.repository_id.to_string()),
        ("X-Gitea-Event".to_owned(), claimed.event.clone()),
        ("X-Gitea-Event-Type".to_owned(), claimed.event.clone()),
        ("X-Gitea-Delivery".to_owned(), id.clone()),
        ("X-Gitea-Hook-ID".to_owned(), lease.hook_id.to_string()),
    ];
    let timestamp = chrono::Utc::now().timestamp();
    headers.extend(signature_headers(lease.secret.as_deref(), &id, timestamp, &body));
    Ok(OutgoingRequest { url, verify_tls: lease.verify_tls, headers, body })
}
