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

#[tokio::test(flavor = "multi_thread")]
async fn prepared_sql_is_planned_once_per_connection_and_binds_repeated_placeholders()
-> anyhow::Result<()> {
    use diesel::sql_types::{BigInt, Text};
    use diesel_async::RunQueryDsl as _;
    use platform_core::db::PreparedSql;

    #[derive(diesel::QueryableByName, Debug, PartialEq)]
    struct Row {
        #[diesel(sql_type = Text)]
        name: String,
        #[diesel(sql_type = BigInt)]
        doubled: i64,
    }
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        count: i64,
    }
    const SQL: &str = "SELECT $1 || '/prepared-marker' AS name, $2 + $2 AS doubled";
    let url = fresh_database().await?;
    let database = Database::connect(&database_config(&url));
    let mut conn = database.get().await?;
    for number in 1..=3_i64 {
        let row: Row = PreparedSql::new(SQL)
            .bind::<Text, _>(format!("hook-{number}"))
            .bind::<BigInt, _>(number)
            .get_result(&mut conn)
            .await?;
        assert_eq!(
            row,
            Row { name: format!("hook-{number}/prepared-marker"), doubled: 2 * number }
        );
    }
    let prepared = |marker: &'static str| {
        PreparedSql::new(
            "SELECT count(*) AS count FROM pg_prepared_statements WHERE statement LIKE $1",
        )
        .bind::<Text, _>(format!("%{marker}%"))
    };
    let kept: Count = prepared("prepared-marker").get_result(&mut conn).await?;
    assert_eq!(kept.count, 1, "one prepared statement for three runs");

    // diesel's own sql_query is prepared anew each time, which is why PreparedSql exists.
    diesel::sql_query("SELECT 'unprepared-marker' AS name").execute(&mut conn).await?;
    let unkept: Count = prepared("unprepared-marker").get_result(&mut conn).await?;
    assert_eq!(unkept.count, 0);
    Ok(())
}
