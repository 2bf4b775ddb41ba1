//! The example worker as a real process: crash recovery and backend selection.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use example_queue::{ExampleConfig, RenderThumbnail, STREAM};
use platform_core::queue::{BackendKind, Queue};
use platform_core::telemetry::Metrics;
use platform_test_support::{
    ServiceProcess, eventually, free_port, service_env, unique_name, wait_for_status,
};

const WORKER: &str = env!("CARGO_BIN_EXE_worker");

fn worker_env(namespace: &str, nats_url: Option<&str>) -> HashMap<String, String> {
    let mut env = HashMap::from([
        ("APP_REDIS_URL".to_owned(), service_env("PLATFORM_TEST_REDIS_URL")),
        ("QUEUE_NAMESPACE".to_owned(), namespace.to_owned()),
        ("WORKER_CONCURRENCY".to_owned(), "4".to_owned()),
        ("WORKER_LEASE_SECS".to_owned(), "2".to_owned()),
    ]);
    if let Some(url) = nats_url {
        env.insert("NATS_URL".to_owned(), url.to_owned());
    }
    env
}

/// Images a worker logged with `message`, from its JSON log lines.
fn images(worker: &ServiceProcess, message: &str) -> BTreeSet<u64> {
    worker
        .output()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["message"] == message)
        .filter_map(|event| event["image"].as_u64())
        .collect()
}

async fn a_killed_workers_jobs_are_finished_by_another(kind: BackendKind) -> anyhow::Result<()> {
    let namespace = unique_name("ex");
    let nats_url = (kind == BackendKind::Nats).then(|| service_env("PLATFORM_TEST_NATS_URL"));
    let env = worker_env(&namespace, nats_url.as_deref());
    let config = ExampleConfig::from_env_map(&env)?;
    let producer =
        Queue::connect(&config.nats, &config.redis, config.queue, &Metrics::new("test")).await?;
    assert_eq!(producer.backend(), kind);
    for image in 0..20 {
        producer.publish(STREAM, &RenderThumbnail { image, work_ms: 1_500 }).await?;
    }

    let mut first = ServiceProcess::start(Path::new(WORKER), &env).await?;
    eventually("the first worker to hold jobs", Duration::from_secs(30), || {
        images(&first, "rendering").len() >= 4
    })
    .await?;
    first.kill().await?;
    let held_when_killed: BTreeSet<u64> =
        images(&first, "rendering").difference(&images(&first, "rendered")).copied().collect();
    assert!(!held_when_killed.is_empty(), "the worker died holding unacknowledged jobs");

    let second = ServiceProcess::start(Path::new(WORKER), &env).await?;
    eventually("every image rendered", Duration::from_secs(90), || {
        let done: BTreeSet<u64> =
            images(&first, "rendered").union(&images(&second, "rendered")).copied().collect();
        done.len() == 20
    })
    .await?;
    let by_second = images(&second, "rendered");
    assert!(
        held_when_killed.is_subset(&by_second),
        "jobs held by the killed worker {held_when_killed:?} were finished by the other: {by_second:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_a_killed_workers_jobs_are_finished_by_another() -> anyhow::Result<()> {
    a_killed_workers_jobs_are_finished_by_another(BackendKind::Redis).await
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_a_killed_workers_jobs_are_finished_by_another() -> anyhow::Result<()> {
    a_killed_workers_jobs_are_finished_by_another(BackendKind::Nats).await
}

/// Starts a worker, returns its readiness detail, queue_backend metric line, and output.
async fn selection(nats_url: Option<&str>) -> anyhow::Result<(String, String, String)> {
    let env = worker_env(&unique_name("ex"), nats_url);
    let mut worker = ServiceProcess::start(Path::new(WORKER), &env).await?;
    let ready = wait_for_status(&worker.url("/readyz"), 200, Duration::from_secs(10)).await?;
    let report: serde_json::Value = serde_json::from_str(&ready)?;
    let detail = report["checks"][0]["detail"].as_str().unwrap_or_default().to_owned();
    let metrics = reqwest::get(worker.url("/metrics")).await?.text().await?;
    let backend_line =
        metrics.lines().find(|l| l.starts_with("queue_backend{")).unwrap_or_default().to_owned();
    worker.terminate()?;
    assert_eq!(worker.wait(Duration::from_secs(30)).await?.code(), Some(0));
    Ok((detail, backend_line, worker.output()))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_reports_which_backend_it_chose_and_why() -> anyhow::Result<()> {
    let warning = "NATS_URL is set but NATS JetStream is not reachable";

    let (detail, metric, output) = selection(Some(&service_env("PLATFORM_TEST_NATS_URL"))).await?;
    assert_eq!(
        (detail.as_str(), metric.as_str()),
        ("backend: nats", r#"queue_backend{backend="nats"} 1"#)
    );
    assert!(!output.contains(warning));

    let (detail, metric, output) = selection(None).await?;
    assert_eq!(
        (detail.as_str(), metric.as_str()),
        ("backend: redis", r#"queue_backend{backend="redis"} 1"#)
    );
    assert!(output.contains("job queue on Redis Streams: NATS_URL is not set"), "{output}");
    assert!(!output.contains(warning));

    let closed = format!("nats://127.0.0.1:{}", free_port());
    let (detail, metric, output) = selection(Some(&closed)).await?;
    assert_eq!(
        (detail.as_str(), metric.as_str()),
        ("backend: redis", r#"queue_backend{backend="redis"} 1"#)
    );
    assert_eq!(output.matches(warning).count(), 1, "one warning line:\n{output}");
    Ok(())
}
