//! A durable job queue: NATS JetStream when it is configured and reachable, Redis Streams
//! otherwise.
//!
//! Jobs are serde values published to a named *stream* and consumed by a named *group*: every
//! job of a stream is handled by one member of each group (competing consumers), at least once.
//!
//! - [`Queue::publish`] returns only once the broker has durably accepted the job, and returns an
//!   error, never silence, when it cannot within the publish timeout.
//! - [`Queue::consume`] runs a handler on at most `concurrency` jobs at a time. `Ok` acknowledges
//!   the job; [`JobError::Retry`] redelivers it after an exponential backoff;
//!   [`JobError::Permanent`], or a retryable error on the last allowed attempt, moves it to the
//!   stream's dead letters with the error text ([`Queue::dead_letters`]). While a handler runs,
//!   its job's lease is extended, so a long job is not handed to another consumer; when a
//!   consumer dies, its jobs go to another one once their lease expires. On shutdown it stops
//!   fetching and lets jobs in flight finish within a grace period.
//!
//! # Backends, and how one deployment agrees on them
//!
//! [`Queue::connect`] picks NATS JetStream when `NATS_URL` is set and the server answers at
//! start, otherwise Redis Streams, saying why in one warning line. Replicas could decide
//! differently (NATS may be down while one starts), so the choice only decides where a replica
//! *publishes*: whenever `NATS_URL` is set, consumers read both backends, so a job is consumed
//! whichever backend its producer chose. With `NATS_URL` unset, everything uses Redis.
//!
//! - NATS: one work-queue stream per queue stream, file storage, a durable pull consumer per
//!   group (a work-queue stream allows one group), publish acknowledgements awaited, publishes
//!   deduplicated by job id, retries by delayed negative acknowledgement, heartbeats by
//!   progress acknowledgement.
//! - Redis: one stream per queue stream, `XREADGROUP` consumer groups, retries through a sorted
//!   set of delayed jobs, stuck jobs reclaimed with `XAUTOCLAIM` once their lease expires,
//!   heartbeats by `XCLAIM ... JUSTID`, and trimming that only removes entries every group has
//!   acknowledged. Durability is Redis' own: run it with the append-only file on.
//!
//! # Example
//!
//! ```no_run
//! use platform_core::queue::{ConsumerOptions, Job, JobError, Queue};
//! # async fn run(queue: Queue) -> Result<(), platform_core::queue::QueueError> {
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Welcome { email: String }
//!
//! queue.publish("mail", &Welcome { email: "ada@example.com".into() }).await?;
//!
//! queue
//!     .consume("mail", "senders", ConsumerOptions::default(), |job: Job<Welcome>| async move {
//!         println!("sending to {} (attempt {})", job.payload.email, job.attempt);
//!         Ok::<(), JobError>(())
//!     }, platform_core::shutdown::signal())
//!     .await?;
//! # Ok(()) }
//! ```

mod consumer;
mod metrics;
mod nats;
mod redis_streams;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use consumer::{Backoff, ConsumerOptions};
pub use metrics::QueueMetrics;

use crate::config::{NatsConfig, RedisConfig};
use crate::service::ReadinessCheck;
use crate::telemetry::Metrics;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which broker carries the jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// NATS JetStream.
    Nats,
    /// Redis Streams.
    Redis,
}

impl BackendKind {
    /// Returns `nats` or `redis`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nats => "nats",
            Self::Redis => "redis",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error returned by [`Queue`] operations.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A stream or group name is not usable on every backend.
    #[error(
        "invalid {what} name {name:?}: use 1 to 64 lowercase ASCII letters, digits, '-' or '_', \
         starting with a letter or digit"
    )]
    InvalidName {
        /// `stream` or `group`.
        what: &'static str,
        /// The rejected name.
        name: String,
    },
    /// The job could not be serialized.
    #[error("failed to encode a job for stream {stream:?}")]
    Encode {
        /// The stream.
        stream: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The broker did not confirm the job within the publish timeout.
    #[error("{backend} did not confirm the job for stream {stream:?} within {timeout:?}")]
    PublishTimeout {
        /// The broker.
        backend: BackendKind,
        /// The stream.
        stream: String,
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// The broker failed an operation.
    #[error("{backend} failed to {operation} on stream {stream:?}")]
    Broker {
        /// The broker.
        backend: BackendKind,
        /// What was being done, such as `publish` or `acknowledge`.
        operation: &'static str,
        /// The stream.
        stream: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// NATS could not be reached or has no JetStream.
    #[error("NATS JetStream is not available")]
    NatsUnavailable(#[source] BoxError),
    /// The Redis URL was rejected.
    #[error("invalid Redis URL for the queue")]
    RedisUrl(#[source] redis::RedisError),
}

impl QueueError {
    fn broker(
        backend: BackendKind,
        operation: &'static str,
        stream: &str,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::Broker { backend, operation, stream: stream.to_owned(), source: source.into() }
    }
}

/// A job handed to a handler.
#[derive(Clone, Debug)]
pub struct Job<J> {
    /// The id given at publish time; stable across redeliveries, so handlers can deduplicate.
    pub id: String,
    /// 1 for the first delivery, then 2, 3, ...
    pub attempt: u32,
    /// The stream it was published to.
    pub stream: String,
    /// The job itself.
    pub payload: J,
}

/// What a handler reports when it could not do a job.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Worth trying again later (a timeout, a dependency down).
    #[error("{0}")]
    Retry(String),
    /// Will never succeed (invalid input, refused by the recipient): dead-letter it now.
    #[error("{0}")]
    Permanent(String),
}

impl JobError {
    /// A retryable failure described by `error`.
    pub fn retry(error: impl fmt::Display) -> Self {
        Self::Retry(error.to_string())
    }

    /// A permanent failure described by `error`.
    pub fn permanent(error: impl fmt::Display) -> Self {
        Self::Permanent(error.to_string())
    }
}

/// A job that failed for good, with why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The job's id.
    pub id: String,
    /// The stream it was published to.
    pub stream: String,
    /// The group that gave up on it.
    pub group: String,
    /// How many times it was attempted.
    pub attempts: u32,
    /// The last error.
    pub error: String,
    /// When it was dead-lettered, in milliseconds since the Unix epoch.
    pub failed_at_ms: u64,
    /// The job as published.
    pub job: serde_json::Value,
}

/// What travels on the wire: the job and its identity.
///
/// The job stays raw JSON until the handler's type decodes it, so it is parsed once.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    id: String,
    /// Retries already scheduled by republishing (Redis); NATS counts deliveries itself.
    #[serde(default)]
    retries: u32,
    published_at_ms: u64,
    job: Box<serde_json::value::RawValue>,
}

/// The envelope as a producer writes it, borrowing the job.
#[derive(Serialize)]
struct OutgoingEnvelope<'a, J> {
    id: &'a str,
    retries: u32,
    published_at_ms: u64,
    job: &'a J,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Checks a stream or group name: it becomes part of NATS subjects and stream names and of
/// Redis keys, so only a safe alphabet is allowed.
fn validate_name(what: &'static str, name: &str) -> Result<(), QueueError> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    if valid { Ok(()) } else { Err(QueueError::InvalidName { what, name: name.to_owned() }) }
}

/// Settings shared by producers and consumers of one deployment.
#[derive(Clone, Debug)]
pub struct QueueOptions {
    /// Prefix of every NATS stream and Redis key, so deployments (or tests) can share brokers.
    /// The same lowercase alphabet as stream names. Default `platform`.
    pub namespace: String,
    /// How long [`Queue::publish`] waits for the broker's confirmation. Default 5 s.
    pub publish_timeout: Duration,
    /// How long connecting to NATS at start may take before Redis is chosen. Default 3 s.
    pub nats_connect_timeout: Duration,
    /// When set, how long jobs in flight may run after shutdown begins, for every consumer of
    /// this queue whatever its [`ConsumerOptions::shutdown_grace`]: the process's own grace
    /// (`APP_SHUTDOWN_GRACE_SECONDS`), so that one value decides it. Default unset.
    pub shutdown_grace: Option<Duration>,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            namespace: "platform".to_owned(),
            publish_timeout: Duration::from_secs(5),
            nats_connect_timeout: Duration::from_secs(3),
            shutdown_grace: None,
        }
    }
}

impl QueueOptions {
    /// These options with [`QueueOptions::shutdown_grace`] set.
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = Some(grace);
        self
    }
}

/// A broker connection.
#[derive(Clone, Debug)]
enum Backend {
    Nats(Box<nats::NatsBackend>),
    Redis(Box<redis_streams::RedisBackend>),
}

/// One delivery of a job to this consumer.
struct Delivery {
    /// The envelope, or why it could not be decoded.
    envelope: Result<Envelope, String>,
    /// 1 for the first attempt.
    attempt: u32,
    handle: DeliveryHandle,
}

fn decode_envelope(bytes: &[u8]) -> Result<Envelope, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// Per-consumer, per-backend state of a fetch loop.
#[derive(Default)]
struct FetchState {
    redis: redis_streams::RedisFetchState,
}

enum DeliveryHandle {
    Nats(Box<async_nats::jetstream::Message>),
    Redis { entry_id: String },
}

impl Backend {
    fn kind(&self) -> BackendKind {
        match self {
            Self::Nats(_) => BackendKind::Nats,
            Self::Redis(_) => BackendKind::Redis,
        }
    }

    async fn publish(&self, stream: &str, id: &str, payload: Bytes) -> Result<(), QueueError> {
        match self {
            Self::Nats(nats) => nats.publish(stream, id, payload).await,
            Self::Redis(redis) => redis.publish(stream, payload).await,
        }
    }

    async fn ping(&self) -> Result<(), QueueError> {
        match self {
            Self::Nats(nats) => nats.ping().await,
            Self::Redis(redis) => redis.ping().await,
        }
    }

    async fn dead_letters(
        &self,
        stream: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        match self {
            Self::Nats(nats) => nats.dead_letters(stream, limit).await,
            Self::Redis(redis) => redis.dead_letters(stream, limit).await,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn fetch(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
        lease: Duration,
        state: &mut FetchState,
        deliver: &mut (dyn FnMut(Delivery) + Send),
    ) -> Result<usize, QueueError> {
        match self {
            Self::Nats(nats) => nats.fetch(stream, group, max, wait, lease, deliver).await,
            Self::Redis(redis) => {
                redis
                    .fetch(stream, group, consumer, max, wait, lease, &mut state.redis, deliver)
                    .await
            }
        }
    }

    async fn ack(&self, stream: &str, group: &str, delivery: &Delivery) -> Result<(), QueueError> {
        match (self, &delivery.handle) {
            (Self::Nats(nats), DeliveryHandle::Nats(message)) => nats.ack(stream, message).await,
            (Self::Redis(redis), DeliveryHandle::Redis { entry_id }) => {
                redis.ack(stream, group, entry_id).await
            }
            _ => Err(mismatch(stream)),
        }
    }

    async fn retry(
        &self,
        stream: &str,
        group: &str,
        delivery: &Delivery,
        attempt: u32,
        delay: Duration,
    ) -> Result<(), QueueError> {
        match (self, &delivery.handle, &delivery.envelope) {
            (Self::Nats(nats), DeliveryHandle::Nats(message), _) => {
                nats.retry(stream, message, delay).await
            }
            (Self::Redis(redis), DeliveryHandle::Redis { entry_id }, Ok(envelope)) => {
                redis.retry(stream, group, entry_id, envelope, attempt, delay).await
            }
            _ => Err(mismatch(stream)),
        }
    }

    async fn dead_letter(
        &self,
        stream: &str,
        group: &str,
        delivery: &Delivery,
        record: &DeadLetter,
    ) -> Result<(), QueueError> {
        match (self, &delivery.handle) {
            (Self::Nats(nats), DeliveryHandle::Nats(message)) => {
                nats.dead_letter(stream, message, record).await
            }
            (Self::Redis(redis), DeliveryHandle::Redis { entry_id }) => {
                redis.dead_letter(stream, group, entry_id, record).await
            }
            _ => Err(mismatch(stream)),
        }
    }

    async fn heartbeat(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        delivery: &Delivery,
    ) -> Result<(), QueueError> {
        match (self, &delivery.handle) {
            (Self::Nats(nats), DeliveryHandle::Nats(message)) => {
                nats.heartbeat(stream, message).await
            }
            (Self::Redis(redis), DeliveryHandle::Redis { entry_id }) => {
                redis.heartbeat(stream, group, consumer, entry_id).await
            }
            _ => Err(mismatch(stream)),
        }
    }

    /// Sends acknowledgements still buffered in the client.
    async fn flush(&self) -> Result<(), QueueError> {
        match self {
            Self::Nats(nats) => nats.flush().await,
            Self::Redis(_) => Ok(()),
        }
    }

    async fn depth(&self, stream: &str, group: &str, lease: Duration) -> Result<u64, QueueError> {
        match self {
            Self::Nats(nats) => nats.depth(stream, group, lease).await,
            Self::Redis(redis) => redis.depth(stream, group).await,
        }
    }
}

/// A delivery handed back to a backend other than the one it came from: a bug, reported rather
/// than panicking inside a worker.
fn mismatch(stream: &str) -> QueueError {
    QueueError::Broker {
        backend: BackendKind::Redis,
        operation: "settle a delivery from another backend",
        stream: stream.to_owned(),
        source: "delivery and backend do not match".into(),
    }
}

/// The job queue of one deployment. Cloning is cheap: clones share connections.
#[derive(Clone, Debug)]
pub struct Queue {
    /// Where this process publishes.
    primary: Backend,
    /// The other backend, which consumers also drain (see the module docs).
    secondary: Option<Backend>,
    metrics: QueueMetrics,
    options: Arc<QueueOptions>,
}

impl Queue {
    /// Connects to the deployment's queue: NATS JetStream when `nats.url` is set and answers
    /// within the connect timeout, otherwise Redis, with one warning line saying why.
    ///
    /// # Errors
    ///
    /// Fails only when the Redis URL is unusable: an unreachable broker is not an error here
    /// (publishing reports it, and readiness shows it).
    pub async fn connect(
        nats: &NatsConfig,
        redis: &RedisConfig,
        options: QueueOptions,
        metrics: &Metrics,
    ) -> Result<Self, QueueError> {
        let redis_backend =
            Backend::Redis(Box::new(redis_streams::RedisBackend::new(redis, &options)?));
        let Some(url) = &nats.url else {
            tracing::info!("job queue on Redis Streams: NATS_URL is not set");
            return Ok(Self::assemble(redis_backend, None, options, metrics));
        };
        match nats::NatsBackend::connect(url, nats.token.as_ref(), &options).await {
            Ok(nats) => {
                tracing::info!(nats = %url, "job queue on NATS JetStream");
                Ok(Self::assemble(
                    Backend::Nats(Box::new(nats)),
                    Some(redis_backend),
                    options,
                    metrics,
                ))
            }
            Err(error) => {
                tracing::warn!(
                    nats = %url,
                    error = %crate::service::error_chain(&error),
                    "job queue on Redis Streams: NATS_URL is set but NATS JetStream is not reachable; \
                     consumers keep trying NATS and drain both"
                );
                let lazy =
                    nats::NatsBackend::connect_in_background(url, nats.token.as_ref(), &options)
                        .await;
                let secondary = match lazy {
                    Ok(lazy) => Some(Backend::Nats(Box::new(lazy))),
                    Err(error) => {
                        tracing::warn!(error = %crate::service::error_chain(&error), "NATS will not be drained");
                        None
                    }
                };
                Ok(Self::assemble(redis_backend, secondary, options, metrics))
            }
        }
    }

    /// A queue on NATS JetStream only.
    ///
    /// # Errors
    ///
    /// Fails when NATS does not answer within the connect timeout or has no JetStream.
    pub async fn nats(
        nats: &NatsConfig,
        options: QueueOptions,
        metrics: &Metrics,
    ) -> Result<Self, QueueError> {
        let url = nats
            .url
            .as_ref()
            .ok_or_else(|| QueueError::NatsUnavailable("NATS_URL is not set".into()))?;
        let backend = nats::NatsBackend::connect(url, nats.token.as_ref(), &options).await?;
        Ok(Self::assemble(Backend::Nats(Box::new(backend)), None, options, metrics))
    }

    /// A queue on Redis Streams only.
    ///
    /// # Errors
    ///
    /// Fails when the URL is unusable.
    pub fn redis(
        redis: &RedisConfig,
        options: QueueOptions,
        metrics: &Metrics,
    ) -> Result<Self, QueueError> {
        let backend = redis_streams::RedisBackend::new(redis, &options)?;
        Ok(Self::assemble(Backend::Redis(Box::new(backend)), None, options, metrics))
    }

    fn assemble(
        primary: Backend,
        secondary: Option<Backend>,
        options: QueueOptions,
        metrics: &Metrics,
    ) -> Self {
        let queue_metrics = QueueMetrics::register(metrics);
        queue_metrics.set_backend(primary.kind());
        Self { primary, secondary, metrics: queue_metrics, options: Arc::new(options) }
    }

    /// Returns the backend this process publishes to.
    pub fn backend(&self) -> BackendKind {
        self.primary.kind()
    }

    /// Returns the queue's metrics.
    pub fn metrics(&self) -> &QueueMetrics {
        &self.metrics
    }

    /// A readiness check named `queue` that pings the active broker and reports which it is.
    pub fn readiness_check(&self) -> ReadinessCheck {
        let queue = self.clone();
        ReadinessCheck::with_detail("queue", move || {
            let queue = queue.clone();
            async move { queue.primary.ping().await.map(|()| format!("backend: {}", queue.backend())) }
        })
    }

    /// Publishes `job` to `stream` and returns its id once the broker has durably accepted it.
    ///
    /// # Errors
    ///
    /// Fails when the name is invalid, the job cannot be serialized, or the broker does not
    /// confirm within the publish timeout. The job may then still have been stored; consumers
    /// must tolerate duplicates anyway (delivery is at least once).
    pub async fn publish<J: Serialize>(&self, stream: &str, job: &J) -> Result<String, QueueError> {
        self.publish_with_id(stream, &uuid::Uuid::new_v4().to_string(), job).await
    }

    /// Publishes `job` under a chosen `id`, such as one derived from the event that caused it,
    /// and returns the id once the broker has durably accepted the job.
    ///
    /// Publishing the same id again (a producer retrying after a crash) is how at-least-once
    /// producers stay idempotent: NATS drops the repeat within its deduplication window, and
    /// consumers that record finished job ids (as the email worker does) skip it on either
    /// backend.
    ///
    /// # Errors
    ///
    /// As [`Queue::publish`].
    pub async fn publish_with_id<J: Serialize>(
        &self,
        stream: &str,
        id: &str,
        job: &J,
    ) -> Result<String, QueueError> {
        validate_name("stream", stream)?;
        let id = id.to_owned();
        let envelope = OutgoingEnvelope { id: &id, retries: 0, published_at_ms: now_ms(), job };
        let payload = serde_json::to_vec(&envelope)
            .map_err(|source| QueueError::Encode { stream: stream.to_owned(), source })?;
        let payload = Bytes::from(payload);
        let backend = self.primary.kind();
        let timeout = self.options.publish_timeout;
        let published =
            tokio::time::timeout(timeout, self.primary.publish(stream, &id, payload)).await;
        let result = match published {
            Ok(result) => result,
            Err(_) => {
                Err(QueueError::PublishTimeout { backend, stream: stream.to_owned(), timeout })
            }
        };
        match &result {
            Ok(()) => self.metrics.published(stream),
            Err(error) => {
                self.metrics.publish_failed(stream);
                tracing::warn!(stream, %backend, error = %crate::service::error_chain(error), "publish failed");
            }
        }
        result.map(|()| id)
    }

    /// Returns up to `limit` of the newest dead letters of `stream`, on the active backend.
    ///
    /// # Errors
    ///
    /// Fails when the broker cannot be read.
    pub async fn dead_letters(
        &self,
        stream: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        validate_name("stream", stream)?;
        self.primary.dead_letters(stream, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_use_an_alphabet_every_backend_accepts() {
        for good in ["mail", "push-events", "index_jobs", "a", "0day"] {
            assert!(validate_name("stream", good).is_ok(), "{good}");
        }
        for bad in ["", "Mail", "a.b", "a b", "-x", "x>", "x*", &"x".repeat(65)] {
            assert!(validate_name("stream", bad).is_err(), "{bad}");
        }
    }
}
