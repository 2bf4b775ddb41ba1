//! Redis: a bb8 pool of multiplexed connections.
//!
//! ```no_run
//! # async fn run(config: &platform_core::config::RedisConfig) -> Result<(), platform_core::redis::RedisError> {
//! use platform_core::redis::Redis;
//!
//! let redis = Redis::connect(config)?;
//! redis.ping().await?;
//! let mut conn = redis.get().await?;
//! let _: () = bb8_redis::redis::AsyncCommands::set(&mut *conn, "greeting", "hello").await
//!     .map_err(platform_core::redis::RedisError::Command)?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use bb8_redis::RedisConnectionManager;
use bb8_redis::redis;

use crate::config::RedisConfig;

/// A pooled Redis connection.
pub type RedisConnection<'a> = bb8::PooledConnection<'a, RedisConnectionManager>;

/// The error returned by [`Redis`] operations.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The URL was rejected by the client.
    #[error("invalid Redis URL")]
    InvalidUrl(#[source] redis::RedisError),
    /// No pooled connection became available in time, or opening one failed.
    #[error("failed to get a Redis connection from the pool")]
    Pool(#[source] bb8::RunError<redis::RedisError>),
    /// A command failed.
    #[error("Redis command failed")]
    Command(#[source] redis::RedisError),
}

/// A pool of Redis connections. Cloning is cheap: clones share the pool.
#[derive(Clone)]
pub struct Redis {
    pool: bb8::Pool<RedisConnectionManager>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("state", &self.pool.state()).finish()
    }
}

impl Redis {
    /// Creates the pool. No connection is opened until one is needed, so a service starts
    /// (and reports not ready) while Redis is down, and recovers when it returns.
    ///
    /// # Errors
    ///
    /// Fails when the URL is not one the Redis client accepts.
    pub fn connect(config: &RedisConfig) -> Result<Self, RedisError> {
        let manager = RedisConnectionManager::new(config.url.expose().as_str())
            .map_err(RedisError::InvalidUrl)?;
        let pool = bb8::Pool::builder()
            .max_size(16)
            .connection_timeout(Duration::from_secs(5))
            .build_unchecked(manager);
        Ok(Self { pool })
    }

    /// Takes a connection from the pool, waiting up to five seconds.
    ///
    /// # Errors
    ///
    /// Fails when no connection can be had in time.
    pub async fn get(&self) -> Result<RedisConnection<'_>, RedisError> {
        self.pool.get().await.map_err(RedisError::Pool)
    }

    /// Checks that Redis answers `PING`.
    ///
    /// # Errors
    ///
    /// Fails when no connection can be had or the command fails.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut conn = self.get().await?;
        let _: String =
            redis::cmd("PING").query_async(&mut *conn).await.map_err(RedisError::Command)?;
        Ok(())
    }

    /// Returns the underlying bb8 pool, for code that needs it directly.
    pub fn pool(&self) -> &bb8::Pool<RedisConnectionManager> {
        &self.pool
    }
}
