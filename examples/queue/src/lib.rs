//! What the queue example's producer and worker share: the job type and configuration.

use std::collections::HashMap;

use platform_core::config::{
    ConfigError, EnvReader, HttpConfig, NatsConfig, RedisConfig, TelemetryConfig,
};
use platform_core::queue::QueueOptions;
use serde::{Deserialize, Serialize};

/// The stream the example uses.
pub const STREAM: &str = "thumbnails";

/// A job: render the thumbnail of image `image`, which takes `work_ms` milliseconds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RenderThumbnail {
    /// Which image.
    pub image: u32,
    /// How long the work takes.
    pub work_ms: u64,
}

/// Configuration of both programs: the chart's variables, plus `QUEUE_NAMESPACE` (default
/// `example`), `WORKER_CONCURRENCY` (default 4) and `WORKER_LEASE_SECS` (default 30).
#[derive(Debug)]
pub struct ExampleConfig {
    /// Logging.
    pub telemetry: TelemetryConfig,
    /// The worker's health and metrics listener (default port 8090).
    pub http: HttpConfig,
    /// Redis, always needed: the queue's fallback.
    pub redis: RedisConfig,
    /// NATS, used when set and reachable.
    pub nats: NatsConfig,
    /// Queue settings.
    pub queue: QueueOptions,
    /// Jobs handled at once by the worker.
    pub concurrency: usize,
    /// The worker's lease on a job, in seconds.
    pub lease_secs: u64,
}

impl ExampleConfig {
    /// Reads the configuration from `vars`.
    ///
    /// # Errors
    ///
    /// Lists every missing or invalid variable.
    pub fn from_env_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let number = |raw: &str| {
            raw.parse::<u64>().map_err(|_| format!("must be a whole number (got {raw:?})"))
        };
        let mut env = EnvReader::new(vars);
        let read = (
            TelemetryConfig::read(&mut env),
            HttpConfig::read(&mut env, 8090),
            RedisConfig::read(&mut env),
            NatsConfig::read(&mut env),
            env.or_default("QUEUE_NAMESPACE", "example".to_owned(), |raw| Ok(raw.to_owned())),
            env.or_default("WORKER_CONCURRENCY", 4, number),
            env.or_default("WORKER_LEASE_SECS", 30, number),
        );
        let (telemetry, http, redis, nats, namespace, concurrency, lease_secs) =
            env.finish(read)?;
        Ok(Self {
            telemetry,
            http,
            redis,
            nats,
            queue: QueueOptions { namespace, ..QueueOptions::default() },
            concurrency: usize::try_from(concurrency).unwrap_or(usize::MAX),
            lease_secs,
        })
    }
}
