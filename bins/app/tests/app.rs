//! The `app` binary as a process, against real PostgreSQL and Redis.

use std::path::{Path, PathBuf};
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use platform_test_support::{
    ServiceProcess, free_port, fresh_database, fresh_database_on, wait_for_status, workspace_root,
};

const APP: &str = env!("CARGO_BIN_EXE_app");

mod common;
use common::app_env;

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(platform_test_support::unique_name("app"));
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    dir
}

fn migration_count() -> usize {
    ["platform-core", "platform-git", "platform-storage", "platform-ai"]
        .iter()
        .map(|krate| {
            let dir =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(krate).join("migrations");
            std::fs::read_dir(dir).expect("migrations directory exists").count()
        })
        .sum()
}

#[test]
fn invalid_configuration_lists_every_problem_and_exits_non_zero() {
    let output = std::process::Command::new(APP)
        .env_clear()
        .env("APP_SESSION_SECRET", "twelve-bytes")
        .env("APP_HTTP_ADDR", "not-an-address")
        .output()
        .expect("app starts");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for variable in [
        "APP_DATABASE_URL: missing",
        "APP_REDIS_URL: missing",
        "APP_DOMAIN_URL: missing",
        "APP_SESSION_SECRET: must be at least 32 bytes (got 12)",
        "APP_HTTP_ADDR: must be an address and port",
        "APP_REPOS_ROOT: missing",
        "APP_AVATAR_PATH: missing",
        "STORAGE_PATH: missing",
        "APP_AI_BASIC_URL: missing",
        "APP_AI_API_KEY: missing",
    ] {
        assert!(stderr.contains(variable), "{variable:?} not reported in:\n{stderr}");
    }
    assert!(!stderr.contains("twelve-bytes"), "the secret leaked:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_with_its_dependencies_and_stops_cleanly_on_sigterm() -> anyhow::Result<()> {
    let data = scratch_dir();
    let database = fresh_database().await?;
    let mut app = ServiceProcess::start(Path::new(APP), &app_env(&database, &data)).await?;

    let body = wait_for_status(&app.url("/readyz"), 200, Duration::from_secs(30)).await?;
    let report: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(report["status"], "ready");
    let names: Vec<&str> = report["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["database", "redis", "queue", "repositories", "code_search"]);
    // Code search is optional: off here (no model), said as a detail of a passing check.
    assert_eq!(report["checks"][4]["ok"], true);
    assert!(
        report["checks"][4]["detail"].as_str().is_some_and(|detail| detail.starts_with("off: "))
    );
    assert_eq!(report["checks"][2]["detail"], "backend: redis");
    wait_for_status(&app.url("/healthz"), 200, Duration::from_secs(1)).await?;
    let metrics = wait_for_status(&app.url("/metrics"), 200, Duration::from_secs(1)).await?;
    assert!(
        metrics.contains(r#"http_requests_total{method="GET",route="/readyz",status="200"}"#),
        "{metrics}"
    );

    app.terminate()?;
    let status = app.wait(Duration::from_secs(30)).await?;
    assert_eq!(status.code(), Some(0), "output:\n{}", app.output());
    let output = app.output();
    assert!(output.contains("stop requested"), "{output}");
    for secret in ["a-test-session-secret-of-at-least-32-bytes", "sk-test"] {
        assert!(!output.contains(secret), "a secret was logged:\n{output}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_starting_together_migrate_once_and_both_become_ready() -> anyhow::Result<()> {
    let data = scratch_dir();
    let database = fresh_database().await?;
    let env = app_env(&database, &data);
    let (first, second) = tokio::join!(
        ServiceProcess::start(Path::new(APP), &env),
        ServiceProcess::start(Path::new(APP), &env)
    );
    let (first, second) = (first?, second?);
    for app in [&first, &second] {
        wait_for_status(&app.url("/readyz"), 200, Duration::from_secs(30)).await?;
    }

    let applied_by = [&first, &second]
        .iter()
        .filter(|app| app.output().contains("applied database migrations"))
        .count();
    assert_eq!(
        applied_by,
        1,
        "exactly one replica applies the migrations:\n{}\n---\n{}",
        first.output(),
        second.output()
    );
    assert_eq!(
        [&first, &second]
            .iter()
            .filter(|app| app.output().contains("database schema is up to date"))
            .count(),
        1
    );

    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        count: i64,
    }
    let mut conn = AsyncPgConnection::establish(&database).await?;
    let rows: Vec<Count> =
        diesel::sql_query("SELECT count(*) AS count FROM __diesel_schema_migrations")
            .load(&mut conn)
            .await?;
    assert_eq!(rows[0].count, i64::try_from(migration_count())?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_names_the_database_while_it_is_down_and_recovers_without_restart()
-> anyhow::Result<()> {
    // This test stops PostgreSQL, so it runs its own cluster rather than the shared one.
    let data = scratch_dir();
    let cluster = data.join("postgres");
    let port = free_port();
    let script = workspace_root().join("scripts/postgres.sh");
    let postgres = |args: &[&str]| {
        let status = std::process::Command::new("bash").arg(&script).args(args).status()?;
        anyhow::ensure!(status.success(), "postgres.sh {args:?} failed");
        anyhow::Ok(())
    };
    let cluster_arg = cluster.to_string_lossy().into_owned();
    postgres(&["start", &cluster_arg, &port.to_string()])?;
    let stop_on_exit = StopCluster(script.clone(), cluster_arg.clone());

    let admin = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let database = fresh_database_on(&admin).await?;
    let app = ServiceProcess::start(Path::new(APP), &app_env(&database, &data)).await?;
    wait_for_status(&app.url("/readyz"), 200, Duration::from_secs(30)).await?;

    postgres(&["stop", &cluster_arg])?;
    let body = wait_for_status(&app.url("/readyz"), 503, Duration::from_secs(30)).await?;
    let report: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(report["status"], "unavailable");
    assert_eq!(report["failed"], serde_json::json!(["database"]), "{body}");
    assert!(!body.contains("postgres://"), "the URL must not be reported: {body}");

    postgres(&["start", &cluster_arg, &port.to_string()])?;
    wait_for_status(&app.url("/readyz"), 200, Duration::from_secs(30)).await?;
    drop(stop_on_exit);
    Ok(())
}

/// Stops a test's own PostgreSQL cluster however the test ends.
struct StopCluster(PathBuf, String);

impl Drop for StopCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash").arg(&self.0).args(["stop", &self.1]).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_are_served_over_http() -> anyhow::Result<()> {
    let data = scratch_dir();
    let database = fresh_database().await?;
    let app = ServiceProcess::start(Path::new(APP), &app_env(&database, &data)).await?;
    let client = reqwest::Client::new();
    let registered = client
        .post(app.url("/api/auth/register"))
        .json(&serde_json::json!({"username": "lin", "email": "lin@example.com", "password": "correct horse battery"}))
        .send()
        .await?;
    assert_eq!(registered.status(), 202);
    let signed_in = client
        .post(app.url("/api/auth/login"))
        .json(&serde_json::json!({"login": "lin", "password": "correct horse battery"}))
        .send()
        .await?;
    assert_eq!(signed_in.status(), 200);
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()?
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned();
    let me: serde_json::Value =
        client.get(app.url("/api/user")).header("cookie", cookie).send().await?.json().await?;
    assert_eq!(me["username"], "lin");
    Ok(())
}
