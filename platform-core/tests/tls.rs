//! PostgreSQL and Redis over TLS, against real servers that accept nothing else, with
//! certificates made by the test.

use std::collections::HashMap;
use std::time::Duration;

use platform_core::config::{DatabaseConfig, EnvReader, RedisConfig};
use platform_core::db::{CORE_MIGRATIONS, Database, DbError};
use platform_core::queue::{Queue, QueueOptions};
use platform_core::redis::Redis;
use platform_core::telemetry::Metrics;
use platform_test_support::{Certificates, TlsPostgres, TlsRedis, unique_name};

fn read<T>(
    vars: &[(&str, String)],
    section: impl Fn(&mut EnvReader<'_>) -> Option<T>,
) -> anyhow::Result<T> {
    let vars: HashMap<String, String> =
        vars.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    let mut env = EnvReader::new(&vars);
    let read = section(&mut env);
    Ok(env.finish((read,))?.0)
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Whether the connection that answers is encrypted, as the server sees it.
async fn encrypted(database: &Database) -> Result<bool, DbError> {
    use diesel_async::RunQueryDsl as _;
    #[derive(diesel::QueryableByName)]
    struct Ssl {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        ssl: bool,
    }
    let mut conn = database.get().await?;
    let row: Ssl = diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result(&mut conn)
        .await?;
    Ok(row.ssl)
}

#[tokio::test(flavor = "multi_thread")]
async fn postgresql_over_tls_checks_what_each_sslmode_says() -> anyhow::Result<()> {
    platform_core::tls::install_crypto_provider();
    // The server's certificate names localhost, not 127.0.0.1.
    let certificates = Certificates::make(&["localhost"])?;
    let stranger = Certificates::make(&["localhost"])?;
    let server = TlsPostgres::start(&certificates)?;
    let port = server.port();
    let ca = certificates.ca.display().to_string();
    let database = |url: String, ca_file: Option<String>| -> anyhow::Result<Database> {
        let mut vars = vec![("APP_DATABASE_URL", url)];
        vars.extend(ca_file.map(|file| ("APP_DATABASE_CA_FILE", file)));
        Ok(Database::connect(&read(&vars, DatabaseConfig::read)?))
    };

    // verify-full with the CA from the URL, by the name the certificate holds; migrations
    // (their own connection, holding the lock) go the same way.
    let full = database(
        format!(
            "postgres://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={ca}"
        ),
        None,
    )?;
    assert!(encrypted(&full).await?);
    full.migrate(CORE_MIGRATIONS).await?;
    // The CA from APP_DATABASE_CA_FILE instead.
    let from_file = database(
        format!("postgres://postgres@localhost:{port}/postgres?sslmode=verify-full"),
        Some(ca.clone()),
    )?;
    assert!(encrypted(&from_file).await?);

    // The address is not the name in the certificate: verify-full refuses, verify-ca does not.
    let wrong_name = database(
        format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=verify-full"),
        Some(ca.clone()),
    )?;
    let refused = chain(&wrong_name.ping().await.expect_err("the name does not match"));
    assert!(refused.contains("certificate") || refused.contains("NotValidForName"), "{refused}");
    let chain_only = database(
        format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=verify-ca"),
        Some(ca.clone()),
    )?;
    assert!(encrypted(&chain_only).await?);

    // Another CA's trust is no trust.
    let untrusted = database(
        format!("postgres://postgres@localhost:{port}/postgres?sslmode=verify-full"),
        Some(stranger.ca.display().to_string()),
    )?;
    let refused = chain(&untrusted.ping().await.expect_err("signed by another CA"));
    assert!(refused.contains("certificate") || refused.contains("UnknownIssuer"), "{refused}");

    // require encrypts without checking, as libpq does; disable is turned away by the server.
    let required =
        database(format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=require"), None)?;
    assert!(encrypted(&required).await?);
    let plain =
        database(format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable"), None)?;
    let refused = chain(&plain.ping().await.expect_err("the server takes TLS only"));
    assert!(refused.contains("no encryption") || refused.contains("pg_hba"), "{refused}");
    Ok(())
}

#[test]
fn bad_tls_settings_are_named() {
    let problems = |vars: &[(&str, String)]| {
        read(vars, DatabaseConfig::read).map(|_| String::new()).unwrap_or_else(|e| e.to_string())
    };
    let url = "postgres://user:hunter2@db:5432/app".to_owned();
    let text = problems(&[("APP_DATABASE_URL", format!("{url}?sslmode=verify_full"))]);
    assert!(text.contains("APP_DATABASE_URL: sslmode must be disable, prefer, require, verify-ca or verify-full (got \"verify_full\")"), "{text}");
    let text = problems(&[("APP_DATABASE_URL", format!("{url}?sslrootcert=/nonexistent/ca.pem"))]);
    assert!(
        text.contains("APP_DATABASE_URL: sslrootcert: cannot read /nonexistent/ca.pem"),
        "{text}"
    );
    let not_pem = std::env::temp_dir().join(unique_name("not-pem"));
    std::fs::write(&not_pem, "not a certificate").expect("temp dir is writable");
    let text = problems(&[
        ("APP_DATABASE_URL", url.clone()),
        ("APP_DATABASE_CA_FILE", not_pem.display().to_string()),
    ]);
    assert!(
        text.contains("APP_DATABASE_CA_FILE:") && text.contains("no PEM certificate"),
        "{text}"
    );
    let text = problems(&[("APP_DATABASE_URL", format!("{url}?sslcert=/c.pem&sslkey=/k.pem"))]);
    assert!(text.contains("sslcert: client certificates are not supported"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    let redis = read(
        &[
            ("APP_REDIS_URL", "rediss://redis:6380".to_owned()),
            ("APP_REDIS_CA_FILE", not_pem.display().to_string()),
        ],
        RedisConfig::read,
    )
    .map(|_| String::new())
    .unwrap_or_else(|e| e.to_string());
    assert!(
        redis.contains("APP_REDIS_CA_FILE:") && redis.contains("no PEM certificate"),
        "{redis}"
    );
    let _ = std::fs::remove_file(&not_pem);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_over_tls_with_a_private_ca_serves_the_pool_and_the_queue() -> anyhow::Result<()> {
    platform_core::tls::install_crypto_provider();
    let certificates = Certificates::make(&["localhost"])?;
    let server = TlsRedis::start(&certificates).await?;
    let url = format!("rediss://localhost:{}", server.port());
    let ca = certificates.ca.display().to_string();
    let config =
        read(&[("APP_REDIS_URL", url.clone()), ("APP_REDIS_CA_FILE", ca)], RedisConfig::read)?;
    Redis::connect(&config)?.ping().await?;
    let options = QueueOptions { namespace: unique_name("tls"), ..QueueOptions::default() };
    let queue = Queue::redis(&config, options, &Metrics::new("test"))?;
    queue.publish("work", &serde_json::json!({"n": 1})).await?;

    // Without the CA the system's roots are used, and they do not know this one.
    let untrusted = read(&[("APP_REDIS_URL", url)], RedisConfig::read)?;
    let refused = tokio::time::timeout(Duration::from_secs(20), Redis::connect(&untrusted)?.ping())
        .await?
        .expect_err("signed by an unknown CA");
    assert!(
        chain(&refused).contains("certificate") || chain(&refused).contains("UnknownIssuer"),
        "{}",
        chain(&refused)
    );
    // Plain Redis to the TLS port gets nowhere.
    let plain = read(
        &[("APP_REDIS_URL", format!("redis://localhost:{}", server.port()))],
        RedisConfig::read,
    )?;
    assert!(
        tokio::time::timeout(Duration::from_secs(20), Redis::connect(&plain)?.ping())
            .await
            .map_or(true, |r| r.is_err())
    );
    Ok(())
}
