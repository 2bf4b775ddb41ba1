//! Redis: a bb8 pool of multiplexed connections.
//!
//! ```no_run
//! # async fn run(config: &platform_core::config::RedisConfig) -> Result<(), platform_core::redis::RedisError> {
//! use platform_core::redis::Redis;
//!
//! let redis = Redis::connect(config)?;
//! redis.ping().await?;
//! let mut conn = redis.get().await?;
//! let _: () = redis::AsyncCommands::set(&mut *conn, "greeting", "hello").await
//!     .map_err(platform_core::redis::RedisError::Command)?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::config::RedisConfig;

/// A pooled Redis connection.
pub type RedisConnection<'a> = bb8::PooledConnection<'a, RedisConnectionManager>;

/// The client `config` describes: `redis://`, or `rediss://` for TLS, whose server certificate
/// is checked against `APP_REDIS_CA_FILE` when set, else the system's roots.
///
/// # Errors
///
/// Fails when the URL or the CA is not one the Redis client accepts.
pub fn client(config: &RedisConfig) -> Result<redis::Client, redis::RedisError> {
    let url = config.url.expose().as_str();
    match &config.ca_pem {
        None => redis::Client::open(url),
        Some(pem) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates { client_tls: None, root_cert: Some(pem.to_vec()) },
        ),
    }
}

/// Opens multiplexed connections for the pool, and checks them with `PING`.
///
/// Our own rather than `bb8-redis`'s, which builds its client from a URL alone: a private CA
/// for `rediss://` needs [`redis::Client::build_with_tls`].
#[derive(Clone, Debug)]
pub struct RedisConnectionManager {
    client: redis::Client,
}

impl bb8::ManageConnection for RedisConnectionManager {
    type Connection = MultiplexedConnection;
    type Error = redis::RedisError;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        self.client.get_multiplexed_async_connection().await
    }

    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        let pong: String = redis::cmd("PING").query_async(conn).await?;
        match pong.as_str() {
            "PONG" => Ok(()),
            _ => Err((redis::ErrorKind::Extension, "PING was not answered PONG").into()),
        }
    }

    fn has_broken(&self, _: &mut Self::Connection) -> bool {
        false
    }
}

/// The error returned by [`Redis`] operations.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The URL was rejected by the client.
    #[error("invalid Redis URL")]
    InvalidUrl(#[source] redis::RedisError),
    /// No pooled connection became available in time, or opening one failed.
    #[error("failed to get a Redis connection from the pool")]
    Pool(#[source] bb8::RunError<redis::RedisError>),
    /// No connection could be opened in time; the last attempt's error.
    #[error("cannot connect to Redis: {0}")]
    Connect(String),
    /// A command failed.
    #[error("Redis command failed")]
    Command(#[source] redis::RedisError),
}

/// A pool of Redis connections. Cloning is cheap: clones share the pool.
#[derive(Clone)]
pub struct Redis {
    pool: bb8::Pool<RedisConnectionManager>,
    last_error: crate::pool_errors::LastError,
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
        let manager =
            RedisConnectionManager { client: client(config).map_err(RedisError::InvalidUrl)? };
        let last_error = crate::pool_errors::LastError::new("Redis");
        let pool = bb8::Pool::builder()
            .max_size(16)
            .connection_timeout(Duration::from_secs(5))
            // A connection that cannot be opened says why, rather than "timed out".
            .retry_connection(false)
            .error_sink(Box::new(last_error.clone()))
            .build_unchecked(manager);
        Ok(Self { pool, last_error })
    }

    /// Takes a connection from the pool, waiting up to five seconds.
    ///
    /// # Errors
    ///
    /// Fails when no connection can be had in time.
    pub async fn get(&self) -> Result<RedisConnection<'_>, RedisError> {
        self.pool.get().await.map_err(|error| match (&error, self.last_error.take()) {
            (bb8::RunError::TimedOut, Some(last)) => RedisError::Connect(last),
            _ => RedisError::Pool(error),
        })
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
