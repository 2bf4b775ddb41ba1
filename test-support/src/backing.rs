//! What in-process suites stand on: a fresh database with its schema, the accounts and a queue
//! around it, and users made directly in the database.
//!
//! These helpers take platform-core's types, so platform-core's own tests cannot use them (they
//! would link a second copy of platform-core, whose types do not match the first's).

use std::collections::HashMap;
use std::time::Duration;

use diesel_migrations::EmbeddedMigrations;
use platform_core::accounts::{Accounts, Scope, access_tokens, users};
use platform_core::config::{DatabaseConfig, EnvReader, RedisConfig, SessionConfig};
use platform_core::db::Database;
use platform_core::queue::{Queue, QueueOptions};
use platform_core::redis::Redis;
use platform_core::telemetry::Metrics;

use crate::{fresh_database, service_env, unique_name};

/// The session secret of every [`Backing`]'s accounts.
const SESSION_SECRET: &str = "a-session-secret-for-the-platform-tests";

/// Creates a fresh database ([`fresh_database`]), applies `sets` of migrations to it in order
/// (such as `[CORE_MIGRATIONS, GIT_MIGRATIONS]`) and returns its URL and a pool of it.
///
/// # Errors
///
/// Fails when the test PostgreSQL is not reachable or a migration fails.
pub async fn migrated_database(
    sets: impl IntoIterator<Item = EmbeddedMigrations>,
) -> anyhow::Result<(String, Database)> {
    let url = fresh_database().await?;
    let vars = HashMap::from([("APP_DATABASE_URL".to_owned(), url.clone())]);
    let mut env = EnvReader::new(&vars);
    let read = (DatabaseConfig::read(&mut env), Some(()));
    let database = Database::connect(&env.finish(read)?.0);
    database.migrate_all(sets).await?;
    Ok((url, database))
}

/// A fresh database with the accounts around it (sessions and attempt counters on the shared
/// Redis) and a queue, all under a key prefix of their own, so suites run in parallel.
#[derive(Debug)]
pub struct Backing {
    /// The database, migrated.
    pub database: Database,
    /// The accounts, on [`Backing::database`] and [`Backing::queue`].
    pub accounts: Accounts,
    /// The queue, on Redis; it waits at most 2 seconds for a publish.
    pub queue: Queue,
}

impl Backing {
    /// Prepares a backing: a database migrated with `sets` ([`migrated_database`]), the accounts,
    /// and a queue on the Redis at `queue_redis_url` (the shared one when `None`; a test that
    /// stops its own Redis passes that one's). The accounts' and the queue's keys start with
    /// a name unique to this call, made from `prefix` ([`unique_name`]).
    ///
    /// # Errors
    ///
    /// Fails when a service is not reachable, a migration fails or a URL is invalid.
    pub async fn start(
        prefix: &str,
        sets: impl IntoIterator<Item = EmbeddedMigrations>,
        queue_redis_url: Option<&str>,
    ) -> anyhow::Result<Self> {
        let (_, database) = migrated_database(sets).await?;
        let vars = HashMap::from([
            ("APP_REDIS_URL".to_owned(), service_env("PLATFORM_TEST_REDIS_URL")),
            ("APP_SESSION_SECRET".to_owned(), SESSION_SECRET.to_owned()),
        ]);
        let mut env = EnvReader::new(&vars);
        let read = (RedisConfig::read(&mut env), SessionConfig::read(&mut env));
        let (redis, session) = env.finish(read)?;
        let queue_redis = match queue_redis_url {
            Some(url) => {
                let vars = HashMap::from([("APP_REDIS_URL".to_owned(), url.to_owned())]);
                let mut env = EnvReader::new(&vars);
                let read = (RedisConfig::read(&mut env), Some(()));
                env.finish(read)?.0
            }
            None => redis.clone(),
        };
        let namespace = unique_name(prefix);
        let options = QueueOptions {
            namespace: namespace.clone(),
            publish_timeout: Duration::from_secs(2),
            ..QueueOptions::default()
        };
        let queue = Queue::redis(&queue_redis, options, &Metrics::new("test"))?;
        let accounts =
            Accounts::new(database.clone(), Redis::connect(&redis)?, queue.clone(), &session)?
                .with_namespace(namespace);
        Ok(Self { database, accounts, queue })
    }
}

/// Creates the user `name` directly in `database`, with the address `name@example.com`
/// (verified) and the password hash `password_hash`, and gives them an access token holding
/// `scopes`; returns their id and the token.
///
/// # Errors
///
/// Fails when the database does, or the name is taken.
pub async fn verified_user(
    database: &Database,
    name: &str,
    password_hash: &str,
    scopes: &[Scope],
) -> anyhow::Result<(i64, String)> {
    user(database, name, password_hash, scopes, true).await
}

/// Like [`verified_user`], but the address stays unverified: the user may sign in and read, but
/// not create anything.
///
/// # Errors
///
/// Fails when the database does, or the name is taken.
pub async fn unverified_user(
    database: &Database,
    name: &str,
    password_hash: &str,
    scopes: &[Scope],
) -> anyhow::Result<(i64, String)> {
    user(database, name, password_hash, scopes, false).await
}

async fn user(
    database: &Database,
    name: &str,
    password_hash: &str,
    scopes: &[Scope],
    verified: bool,
) -> anyhow::Result<(i64, String)> {
    let mut conn = database.get().await?;
    let user =
        users::create(&mut conn, name, &format!("{name}@example.com"), password_hash).await?;
    if verified {
        users::mark_email_verified(&mut conn, user.id).await?;
    }
    let (token, _) = access_tokens::create(&mut conn, user.id, "tests", scopes, None).await?;
    Ok((user.id, token))
}
