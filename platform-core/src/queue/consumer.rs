//! The consumer loop: fetching, handing jobs to the handler, heartbeats, outcomes, shutdown.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{
    Backend, DeadLetter, Delivery, FetchState, Job, JobError, Queue, QueueError, QueueMetrics,
    validate_name,
};

/// Exponential backoff between attempts of a failing job, with ±20% jitter so that jobs failing
/// together do not come back together.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// The delay after the first failure. Default 1 s.
    pub initial: Duration,
    /// The longest delay. Default 5 minutes.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial: Duration::from_secs(1), max: Duration::from_secs(300) }
    }
}

impl Backoff {
    /// Returns the delay before the attempt after failed attempt number `attempt` (1-based):
    /// `initial × 2^(attempt−1)`, capped at `max`, jittered by ±20%.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        let base = self.initial.saturating_mul(1 << exponent).min(self.max);
        // A uniformly random factor in [0.8, 1.2).
        let random = (uuid::Uuid::new_v4().as_u128() % 10_000) as f64 / 10_000.0;
        base.mul_f64(0.8 + 0.4 * random).min(self.max)
    }
}

/// How a consumer runs.
#[derive(Clone, Debug)]
pub struct ConsumerOptions {
    /// Jobs handled at the same time by this consumer. Default 8.
    pub concurrency: usize,
    /// Attempts before a job that keeps failing is dead-lettered. Default 5.
    pub max_attempts: u32,
    /// Delays between attempts.
    pub backoff: Backoff,
    /// How long a delivered job stays reserved for this consumer without a heartbeat; the loop
    /// sends heartbeats every third of it while the handler runs. Default 30 s.
    pub lease: Duration,
    /// How long jobs in flight may run after shutdown begins. Default 25 s.
    pub shutdown_grace: Duration,
    /// The longest one fetch waits for jobs. Default 1 s.
    pub fetch_wait: Duration,
    /// This consumer's name within its group; default: host name, process id and a random suffix.
    pub name: Option<String>,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            concurrency: 8,
            max_attempts: 5,
            backoff: Backoff::default(),
            lease: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(25),
            fetch_wait: Duration::from_secs(1),
            name: None,
        }
    }
}

fn default_consumer_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "consumer".to_owned());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[..8])
}

/// What every job task of one `consume` call shares.
struct Context<H> {
    stream: String,
    group: String,
    consumer: String,
    options: ConsumerOptions,
    metrics: QueueMetrics,
    handler: H,
    /// Cancelled when the grace period is over: handlers still running are dropped, and their
    /// jobs come back after their lease.
    abandon: CancellationToken,
}

impl Queue {
    /// Consumes `stream` as a member of `group` until `shutdown` completes, running `handler`
    /// on each job (see the module docs for outcomes, heartbeats and shutdown).
    ///
    /// A job whose payload does not decode as `J` is dead-lettered at once.
    ///
    /// # Errors
    ///
    /// Fails only for an invalid stream or group name: broker failures are logged and retried,
    /// since a worker should outlive a broker restart.
    pub async fn consume<J, H, Fut>(
        &self,
        stream: &str,
        group: &str,
        options: ConsumerOptions,
        handler: H,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), QueueError>
    where
        J: DeserializeOwned + Send + 'static,
        H: Fn(Job<J>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        validate_name("stream", stream)?;
        validate_name("group", group)?;
        let mut options = options;
        if let Some(grace) = self.options.shutdown_grace {
            options.shutdown_grace = grace;
        }
        let context = Arc::new(Context {
            stream: stream.to_owned(),
            group: group.to_owned(),
            consumer: options.name.clone().unwrap_or_else(default_consumer_name),
            metrics: self.metrics.clone(),
            handler,
            abandon: CancellationToken::new(),
            options,
        });
        let permits = Arc::new(Semaphore::new(context.options.concurrency.max(1)));
        let starting = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let jobs = TaskTracker::new();
        tracing::info!(
            stream, group, consumer = %context.consumer, backend = %self.backend(),
            concurrency = context.options.concurrency, "consuming"
        );

        let mut loops = tokio::task::JoinSet::new();
        for backend in std::iter::once(&self.primary).chain(&self.secondary) {
            loops.spawn(fetch_loop(
                backend.clone(),
                Arc::clone(&context),
                Arc::clone(&permits),
                Arc::clone(&starting),
                stop.clone(),
                jobs.clone(),
            ));
        }

        shutdown.await;
        tracing::info!(stream, group, "stopping: no more fetching, finishing jobs in flight");
        stop.cancel();
        while loops.join_next().await.is_some() {}
        jobs.close();
        if tokio::time::timeout(context.options.shutdown_grace, jobs.wait()).await.is_err() {
            tracing::warn!(
                stream,
                group,
                abandoned = jobs.len(),
                "grace period over: abandoning jobs in flight; they are redelivered after their lease"
            );
            context.abandon.cancel();
            jobs.wait().await;
        }
        for backend in std::iter::once(&self.primary).chain(&self.secondary) {
            if let Err(error) = tokio::time::timeout(Duration::from_secs(2), backend.flush())
                .await
                .unwrap_or(Ok(()))
            {
                tracing::warn!(stream, group, error = %crate::service::error_chain(&error), "cannot flush acknowledgements");
            }
        }
        tracing::info!(stream, group, "stopped consuming");
        Ok(())
    }
}

async fn fetch_loop<J, H, Fut>(
    backend: Backend,
    context: Arc<Context<H>>,
    permits: Arc<Semaphore>,
    starting: Arc<AtomicUsize>,
    stop: CancellationToken,
    jobs: TaskTracker,
) where
    J: DeserializeOwned + Send + 'static,
    H: Fn(Job<J>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), JobError>> + Send + 'static,
{
    let (stream, group) = (context.stream.as_str(), context.group.as_str());
    let mut state = FetchState::default();
    let mut failures: u32 = 0;
    let mut last_depth: Option<Instant> = None;
    // Fetching for a quarter of the slots at a time, rather than one by one as jobs finish,
    // keeps broker round trips per job low under load while keeping most slots busy.
    let batch = u32::try_from(context.options.concurrency.div_ceil(4)).unwrap_or(1).max(1);
    loop {
        // Biased, so that a stop request wins over free slots: nothing is fetched after it.
        // The slots are only waited for here, not held: a loop whose broker has nothing to
        // give (the fallback one, mostly) must not keep the other loop's jobs waiting for
        // as long as its fetch blocks. Each job takes its slot when it starts.
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            free = permits.acquire_many(batch) => if free.is_err() { break },
        }
        // Jobs handed over but not started yet have a slot coming to them.
        let max =
            permits.available_permits().saturating_sub(starting.load(Ordering::Acquire)).max(1);
        let mut deliver = |delivery: Delivery| {
            starting.fetch_add(1, Ordering::AcqRel);
            let slot = Slot { permits: Arc::clone(&permits), starting: Arc::clone(&starting) };
            jobs.spawn(process(backend.clone(), Arc::clone(&context), delivery, slot));
        };
        let options = &context.options;
        let fetched = backend
            .fetch(
                stream,
                group,
                &context.consumer,
                max,
                options.fetch_wait,
                options.lease,
                &mut state,
                &mut deliver,
            )
            .await;
        match fetched {
            Ok(_) => {
                if failures > 0 {
                    tracing::info!(stream, group, backend = %backend.kind(), "broker reachable again");
                }
                failures = 0;
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let error = crate::service::error_chain(&error);
                if failures == 1 {
                    tracing::warn!(stream, group, backend = %backend.kind(), %error, "fetching jobs failed; retrying");
                } else {
                    tracing::debug!(stream, group, backend = %backend.kind(), %error, failures, "fetching jobs failed again");
                }
                let pause = Duration::from_millis(100)
                    .saturating_mul(1 << failures.min(6))
                    .min(Duration::from_secs(5));
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
        if failures == 0 && last_depth.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            last_depth = Some(Instant::now());
            refresh_depth(&backend, &context).await;
        }
    }
    if failures == 0 {
        refresh_depth(&backend, &context).await;
    }
}

async fn refresh_depth<H>(backend: &Backend, context: &Context<H>) {
    let (stream, group) = (context.stream.as_str(), context.group.as_str());
    if let Ok(depth) = backend.depth(stream, group, context.options.lease).await {
        context.metrics.set_depth(stream, group, depth);
    }
}

/// The slot a fetched job waits for: the consumer's permits, and the count of jobs waiting.
struct Slot {
    permits: Arc<Semaphore>,
    starting: Arc<AtomicUsize>,
}

/// Decrements the in-flight gauge however the job ends.
struct InFlight(prometheus_client::metrics::gauge::Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn process<J, H, Fut>(
    backend: Backend,
    context: Arc<Context<H>>,
    delivery: Delivery,
    slot: Slot,
) where
    J: DeserializeOwned + Send + 'static,
    H: Fn(Job<J>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), JobError>> + Send + 'static,
{
    let (stream, group) = (context.stream.as_str(), context.group.as_str());
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + context.options.lease / 3,
        context.options.lease / 3,
    );
    // Both brokers' loops may have fetched for the same free slots: a job that finds none
    // waits for one, keeping its lease meanwhile.
    let _permit = loop {
        tokio::select! {
            permit = Arc::clone(&slot.permits).acquire_owned() => {
                slot.starting.fetch_sub(1, Ordering::AcqRel);
                break permit.ok();
            }
            _ = heartbeat.tick() => {
                if let Err(error) = backend.heartbeat(stream, group, &context.consumer, &delivery).await {
                    tracing::warn!(stream, group, error = %crate::service::error_chain(&error), "heartbeat failed");
                }
            }
        }
    };
    let gauge = context.metrics.in_flight(stream, group);
    gauge.inc();
    let _in_flight = InFlight(gauge);

    let (id, payload) = match &delivery.envelope {
        Ok(envelope) => match serde_json::from_str::<J>(envelope.job.get()) {
            Ok(payload) => (envelope.id.clone(), payload),
            Err(error) => {
                let reason = format!("cannot decode the job: {error}");
                return finish(&backend, &context, &delivery, Outcome::Dead(reason)).await;
            }
        },
        Err(reason) => {
            let reason = format!("cannot decode the message: {reason}");
            return finish(&backend, &context, &delivery, Outcome::Dead(reason)).await;
        }
    };
    let job = Job { id, attempt: delivery.attempt, stream: context.stream.clone(), payload };

    // A panicking handler counts as a failed attempt, not as a dead worker.
    let handler = std::panic::AssertUnwindSafe((context.handler)(job)).catch_unwind();
    tokio::pin!(handler);
    let result = loop {
        tokio::select! {
            result = &mut handler => break result,
            _ = heartbeat.tick() => {
                if let Err(error) = backend.heartbeat(stream, group, &context.consumer, &delivery).await {
                    tracing::warn!(stream, group, error = %crate::service::error_chain(&error), "heartbeat failed");
                }
            }
            // Dropping the handler's future cancels it; the job returns after its lease.
            () = context.abandon.cancelled() => return,
        }
    };
    let outcome = match result {
        Ok(Ok(())) => Outcome::Done,
        Ok(Err(JobError::Permanent(reason))) => Outcome::Dead(reason),
        Ok(Err(JobError::Retry(reason))) => Outcome::Failed(reason),
        Err(_panic) => Outcome::Failed("the handler panicked".to_owned()),
    };
    finish(&backend, &context, &delivery, outcome).await;
}

enum Outcome {
    Done,
    Failed(String),
    Dead(String),
}

async fn finish<H>(backend: &Backend, context: &Context<H>, delivery: &Delivery, outcome: Outcome) {
    let (stream, group) = (context.stream.as_str(), context.group.as_str());
    let attempt = delivery.attempt;
    let id = delivery.envelope.as_ref().map_or("unknown", |e| e.id.as_str());
    let result = match outcome {
        Outcome::Done => backend
            .ack(stream, group, delivery)
            .await
            .map(|()| context.metrics.acked(stream, group)),
        Outcome::Failed(reason) if attempt < context.options.max_attempts => {
            let delay = context.options.backoff.delay(attempt);
            tracing::warn!(stream, group, job = id, attempt, retry_in_ms = delay.as_millis() as u64, error = %reason, "job failed; will retry");
            backend
                .retry(stream, group, delivery, attempt, delay)
                .await
                .map(|()| context.metrics.retried(stream, group))
        }
        Outcome::Failed(reason) => {
            let reason = format!("{reason} (gave up after {attempt} attempts)");
            dead_letter(backend, context, delivery, reason).await
        }
        Outcome::Dead(reason) => dead_letter(backend, context, delivery, reason).await,
    };
    if let Err(error) = result {
        // The job stays with the broker and comes back after its lease: at least once.
        tracing::error!(stream, group, job = id, error = %crate::service::error_chain(&error), "cannot record the job's outcome");
    }
}

async fn dead_letter<H>(
    backend: &Backend,
    context: &Context<H>,
    delivery: &Delivery,
    error: String,
) -> Result<(), QueueError> {
    let (stream, group) = (context.stream.as_str(), context.group.as_str());
    let (id, job) = match &delivery.envelope {
        Ok(envelope) => (
            envelope.id.clone(),
            serde_json::from_str(envelope.job.get()).unwrap_or(serde_json::Value::Null),
        ),
        Err(_) => ("unknown".to_owned(), serde_json::Value::Null),
    };
    tracing::error!(stream, group, job = %id, attempts = delivery.attempt, %error, "job dead-lettered");
    let record = DeadLetter {
        id,
        stream: context.stream.clone(),
        group: context.group.clone(),
        attempts: delivery.attempt,
        error,
        failed_at_ms: super::now_ms(),
        job,
    };
    backend.dead_letter(stream, group, delivery, &record).await?;
    context.metrics.dead_lettered(stream, group);
    Ok(())
}
