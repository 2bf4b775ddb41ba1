//! The PostgreSQL and Redis pools against real servers.

use std::collections::HashMap;

use platform_core::config::{DatabaseConfig, EnvReader, RedisConfig};
use platform_core::db::{CORE_MIGRATIONS, Database};
use platform_core::redis::Redis;
use platform_test_support::{free_port, fresh_database, service_env};

fn database_config(url: &str) -> DatabaseConfig {
    let vars = HashMap::from([("APP_DATABASE_URL".to_owned(), url.to_owned())]);
    let mut env = EnvReader::new(&vars);
    let section = DatabaseConfig::read(&mut env);
    env.finish((section,)).expect("valid URL").0
}

fn redis_config(url: &str) -> RedisConfig {
    let vars = HashMap::from([("APP_REDIS_URL".to_owned(), url.to_owned())]);
    let mut env = EnvReader::new(&vars);
    let section = RedisConfig::read(&mut env);
    env.finish((section,)).expect("valid URL").0
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_migrations_apply_each_migration_exactly_once() -> anyhow::Result<()> {
    let url = fresh_database().await?;
    let runs = (0..4).map(|_| {
        let database = Database::connect(&database_config(&url));
        tokio::spawn(async move { database.migrate(CORE_MIGRATIONS).await })
    });
    let mut applied = Vec::new();
    for run in runs.collect::<Vec<_>>() {
        applied.extend(run.await??);
    }
    let expected = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))?.count();
    assert_eq!(applied.len(), expected, "each migration applied once in total: {applied:?}");

    let database = Database::connect(&database_config(&url));
    assert!(database.migrate(CORE_MIGRATIONS).await?.is_empty(), "nothing left to apply");
    database.ping().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_database_fails_ping_without_revealing_the_password() {
    let url = format!("postgres://user:hunter2-secret@127.0.0.1:{}/app", free_port());
    let database = Database::connect(&database_config(&url));
    let error = database.ping().await.expect_err("nothing listens there");
    let mut text = format!("{error} {error:?} {database:?}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    assert!(!text.contains("hunter2-secret"), "{text}");
}

#[tokio::test]
async fn redis_answers_ping_and_an_unreachable_one_does_not() -> anyhow::Result<()> {
    Redis::connect(&redis_config(&service_env("PLATFORM_TEST_REDIS_URL")))?.ping().await?;
    let down = Redis::connect(&redis_config(&format!("redis://127.0.0.1:{}", free_port())))?;
    assert!(down.ping().await.is_err());
    Ok(())
}
