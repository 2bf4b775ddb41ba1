//! PostgreSQL: a diesel-async connection pool and embedded migrations.
//!
//! ```no_run
//! # async fn run(config: &platform_core::config::DatabaseConfig) -> Result<(), platform_core::db::DbError> {
//! use platform_core::db::{CORE_MIGRATIONS, Database};
//!
//! let database = Database::connect(config);
//! let applied = database.migrate(CORE_MIGRATIONS).await?;
//! println!("applied {} migrations", applied.len());
//! let mut conn = database.get().await?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use diesel::sql_types::BigInt;
use diesel_async::pooled_connection::bb8::{Pool, PooledConnection};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::config::DatabaseConfig;

mod prepared;
mod tls;
pub use prepared::PreparedSql;

/// The migrations of `platform-core`'s own tables (accounts and the identities every service
/// checks).
pub const CORE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The advisory lock key held while migrations run: any fixed 64-bit number unlikely to collide
/// with an application's own locks ("platform" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x0070_6c61_7466_6f72;

/// How long [`Database::migrate`] keeps retrying when PostgreSQL is not reachable yet, as when
/// the database and the services start together.
const MIGRATE_CONNECT_DEADLINE: Duration = Duration::from_secs(60);

/// The error returned by [`Database`] operations.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be opened.
    #[error("failed to connect to PostgreSQL")]
    Connect(#[source] diesel::ConnectionError),
    /// No pooled connection became available in time, or opening one failed.
    #[error("failed to get a PostgreSQL connection from the pool")]
    Pool(#[source] bb8::RunError<diesel_async::pooled_connection::PoolError>),
    /// No connection could be opened in time; the last attempt's error.
    #[error("cannot connect to PostgreSQL: {0}")]
    Unreachable(String),
    /// A query failed.
    #[error("PostgreSQL query failed")]
    Query(#[from] diesel::result::Error),
    /// Applying migrations failed.
    #[error("failed to apply database migrations")]
    Migration(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The server does not keep a session's state between statements: a pooler in transaction
    /// or statement mode (PgBouncer's `pool_mode = transaction`) is in between.
    #[error(
        "APP_DATABASE_URL leads to a connection pooler in transaction mode (such as PgBouncer \
         with pool_mode = transaction): a session's advisory lock was seen from another \
         session. Migrations and email_worker's lease need session-level locks: use session \
         pooling or connect to PostgreSQL directly"
    )]
    TransactionPooling,
}

/// A pool of PostgreSQL connections.
///
/// Cloning is cheap: clones share the pool. Connections are opened on demand, so a service
/// starts (and reports not ready) while the database is down, and recovers when it returns.
#[derive(Clone)]
pub struct Database {
    pool: Pool<AsyncPgConnection>,
    config: DatabaseConfig,
    connector: tls::Connector,
    last_error: crate::pool_errors::LastError,
    /// What the driver is given: the URL without libpq's TLS parameters.
    driver_url: String,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("url", &self.config.url)
            .field("state", &self.pool.state())
            .finish()
    }
}

impl Database {
    /// Creates the pool. No connection is opened until one is needed.
    pub fn connect(config: &DatabaseConfig) -> Self {
        let connector = tls::Connector::new(&config.tls);
        let driver_url = config.tls.driver_url(config.url.expose());
        let mut setup = ManagerConfig::default();
        let opener = connector.clone();
        setup.custom_setup = Box::new(move |url| {
            let opener = opener.clone();
            let url = url.to_owned();
            Box::pin(async move { opener.connect(&url).await })
        });
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
            driver_url.as_str(),
            setup,
        );
        let last_error = crate::pool_errors::LastError::new("PostgreSQL");
        let pool = Pool::builder()
            .max_size(config.max_connections)
            .connection_timeout(Duration::from_secs(5))
            .idle_timeout(Some(Duration::from_secs(300)))
            .test_on_check_out(true)
            // A connection that cannot be opened says why, rather than "timed out".
            .retry_connection(false)
            .error_sink(Box::new(last_error.clone()))
            .build_unchecked(manager);
        Self { pool, config: config.clone(), connector, last_error, driver_url }
    }

    /// Takes a connection from the pool, waiting up to five seconds.
    ///
    /// # Errors
    ///
    /// Fails when no connection can be had in time.
    pub async fn get(&self) -> Result<PooledConnection<'_, AsyncPgConnection>, DbError> {
        self.pool.get().await.map_err(|error| match (&error, self.last_error.take()) {
            (bb8::RunError::TimedOut, Some(last)) => DbError::Unreachable(last),
            _ => DbError::Pool(error),
        })
    }

    /// Checks that PostgreSQL answers a query.
    ///
    /// # Errors
    ///
    /// Fails when no connection can be had or the query fails.
    pub async fn ping(&self) -> Result<(), DbError> {
        let mut conn = self.get().await?;
        diesel::sql_query("SELECT 1").execute(&mut conn).await?;
        Ok(())
    }

    /// Applies the pending migrations of `migrations` and returns the versions applied.
    ///
    /// The migrations run on a dedicated connection holding a PostgreSQL advisory lock, so
    /// replicas starting together apply each migration exactly once: the others wait for the
    /// lock, then find nothing pending. The lock is released when the connection closes, even if
    /// this process dies. PostgreSQL may still be starting: connecting is retried for a minute.
    ///
    /// Must run on Tokio's multi-threaded runtime, since diesel's migration runner blocks.
    ///
    /// # Errors
    ///
    /// Fails when PostgreSQL stays unreachable or a migration fails (its transaction is rolled
    /// back).
    pub async fn migrate(&self, migrations: EmbeddedMigrations) -> Result<Vec<String>, DbError> {
        self.migrate_all([migrations]).await
    }

    /// Like [`Database::migrate`] for several sets (such as each library's), applied in order
    /// under one hold of the lock, so replicas never split the work between them.
    ///
    /// # Errors
    ///
    /// As for [`Database::migrate`]; the sets after a failing one are not applied.
    pub async fn migrate_all(
        &self,
        sets: impl IntoIterator<Item = EmbeddedMigrations>,
    ) -> Result<Vec<String>, DbError> {
        let mut conn = self.connect_with_retry().await?;
        diesel::sql_query("SELECT pg_advisory_lock($1)")
            .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
            .execute(&mut conn)
            .await?;
        if let Err(error) = self.ensure_sessions_are_kept().await {
            let _ = diesel::sql_query("SELECT pg_advisory_unlock($1)")
                .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
                .execute(&mut conn)
                .await;
            return Err(error);
        }
        let mut harness = AsyncMigrationHarness::new(conn);
        let mut applied = Ok(Vec::new());
        for migrations in sets {
            match harness.run_pending_migrations(migrations) {
                Ok(versions) => {
                    if let Ok(all) = &mut applied {
                        all.extend(versions.iter().map(ToString::to_string));
                    }
                }
                Err(error) => {
                    applied = Err(DbError::Migration(error));
                    break;
                }
            }
        }
        let mut conn = harness.into_inner();
        // Closing the connection would release the lock too; unlocking keeps the log quiet.
        diesel::sql_query("SELECT pg_advisory_unlock($1)")
            .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
            .execute(&mut conn)
            .await?;
        let applied = applied?;
        if applied.is_empty() {
            tracing::info!("database schema is up to date");
        } else {
            tracing::info!(migrations = ?applied, "applied database migrations");
        }
        Ok(applied)
    }

    /// With the migration lock held by one connection, a second one must not get it: if it
    /// does, both ran on the same server session, which only a pooler in transaction or
    /// statement mode does (it hands the session that holds the lock to whoever asks next).
    /// A pooler that happens to give the second connection another session goes unnoticed.
    async fn ensure_sessions_are_kept(&self) -> Result<(), DbError> {
        #[derive(diesel::QueryableByName)]
        struct Taken {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            taken: bool,
        }
        let mut other = self.connect_with_retry().await?;
        let probe: Taken = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS taken")
            .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
            .get_result(&mut other)
            .await?;
        if probe.taken {
            // Given back on the shared session: it was taken twice there, once by each.
            let _ = diesel::sql_query("SELECT pg_advisory_unlock($1)")
                .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
                .execute(&mut other)
                .await;
            return Err(DbError::TransactionPooling);
        }
        Ok(())
    }

    async fn connect_with_retry(&self) -> Result<AsyncPgConnection, DbError> {
        let deadline = tokio::time::Instant::now() + MIGRATE_CONNECT_DEADLINE;
        let mut delay = Duration::from_millis(200);
        loop {
            match self.connector.connect(&self.driver_url).await {
                Ok(conn) => return Ok(conn),
                Err(error) if tokio::time::Instant::now() + delay < deadline => {
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "PostgreSQL is not reachable yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(error) => return Err(DbError::Connect(error)),
            }
        }
    }

    /// Returns the underlying bb8 pool, for code that needs it directly.
    pub fn pool(&self) -> &Pool<AsyncPgConnection> {
        &self.pool
    }
}
