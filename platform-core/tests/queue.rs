//! The job queue's conformance suite, run against real NATS JetStream and real Redis.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use platform_core::config::{NatsConfig, RedisConfig, SecretUrl};
use platform_core::queue::{
    BackendKind, Backoff, ConsumerOptions, Job, JobError, Queue, QueueOptions,
};
use platform_core::telemetry::Metrics;
use platform_test_support::{Broker, BrokerKind, eventually, service_env, unique_name};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Work {
    n: u32,
    #[serde(default)]
    sleep_ms: u64,
}

fn redis_config(url: &str) -> RedisConfig {
    RedisConfig::new(SecretUrl::new(url.parse().expect("valid URL")))
}

fn nats_config(url: Option<&str>) -> NatsConfig {
    NatsConfig { url: url.map(|u| SecretUrl::new(u.parse().expect("valid URL"))), token: None }
}

fn options(namespace: &str) -> QueueOptions {
    QueueOptions {
        namespace: namespace.to_owned(),
        publish_timeout: Duration::from_secs(2),
        nats_connect_timeout: Duration::from_secs(2),
        shutdown_grace: None,
    }
}

fn fast() -> ConsumerOptions {
    ConsumerOptions {
        concurrency: 8,
        max_attempts: 3,
        backoff: Backoff { initial: Duration::from_millis(300), max: Duration::from_secs(2) },
        lease: Duration::from_secs(2),
        shutdown_grace: Duration::from_secs(10),
        fetch_wait: Duration::from_millis(200),
        name: None,
    }
}

/// A queue on `kind` against the shared test brokers, in a namespace of its own.
async fn queue(kind: BackendKind, namespace: &str) -> anyhow::Result<Queue> {
    queue_at(kind, namespace, &broker_url(kind)).await
}

fn broker_url(kind: BackendKind) -> String {
    match kind {
        BackendKind::Redis => service_env("PLATFORM_TEST_REDIS_URL"),
        BackendKind::Nats => service_env("PLATFORM_TEST_NATS_URL"),
    }
}

async fn queue_at(kind: BackendKind, namespace: &str, url: &str) -> anyhow::Result<Queue> {
    queue_with_metrics(kind, namespace, url, &Metrics::new("test")).await
}

async fn queue_with_metrics(
    kind: BackendKind,
    namespace: &str,
    url: &str,
    metrics: &Metrics,
) -> anyhow::Result<Queue> {
    Ok(match kind {
        BackendKind::Redis => Queue::redis(&redis_config(url), options(namespace), metrics)?,
        BackendKind::Nats => {
            Queue::nats(&nats_config(Some(url)), options(namespace), metrics).await?
        }
    })
}

/// Runs a consumer in the background; cancel the token to stop it.
fn spawn_consumer<H, Fut>(
    queue: &Queue,
    stream: &'static str,
    options: ConsumerOptions,
    handler: H,
) -> (CancellationToken, tokio::task::JoinHandle<()>)
where
    H: Fn(Job<Work>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), JobError>> + Send + 'static,
{
    let stop = CancellationToken::new();
    let queue = queue.clone();
    let until = stop.clone().cancelled_owned();
    let task = tokio::spawn(async move {
        queue.consume(stream, "workers", options, handler, until).await.expect("valid names");
    });
    (stop, task)
}

type Seen = Arc<Mutex<HashMap<u32, Vec<(u32, Instant)>>>>;
type HandlerFuture = std::pin::Pin<Box<dyn Future<Output = Result<(), JobError>> + Send>>;

/// A handler that records (attempt, time) per job number, then behaves as `outcome` says.
fn recording(
    seen: &Seen,
    outcome: impl Fn(&Job<Work>) -> Result<(), JobError> + Send + Sync + 'static,
) -> impl Fn(Job<Work>) -> HandlerFuture + Send + Sync + 'static {
    let seen = Arc::clone(seen);
    let outcome = Arc::new(outcome);
    move |job: Job<Work>| {
        let seen = Arc::clone(&seen);
        let outcome = Arc::clone(&outcome);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(job.payload.sleep_ms)).await;
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(job.payload.n)
                .or_default()
                .push((job.attempt, Instant::now()));
            outcome(&job)
        })
    }
}

fn count(seen: &Seen) -> usize {
    seen.lock().unwrap_or_else(PoisonError::into_inner).len()
}

async fn acks_each_job_once(kind: BackendKind) -> anyhow::Result<()> {
    let namespace = unique_name("q");
    let metrics = Metrics::new("test");
    let queue = queue_with_metrics(kind, &namespace, &broker_url(kind), &metrics).await?;
    for n in 0..50 {
        queue.publish("work", &Work { n, sleep_ms: 0 }).await?;
    }
    let seen = Seen::default();
    let (stop, task) = spawn_consumer(&queue, "work", fast(), recording(&seen, |_| Ok(())));
    eventually("50 jobs", Duration::from_secs(20), || count(&seen) == 50).await?;
    // Long enough for any unacknowledged job to come back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    task.await?;
    assert!(queue.dead_letters("work", 10).await?.is_empty());
    let text = metrics.encode();
    for line in [
        r#"queue_published_total{stream="work"} 50"#,
        r#"queue_acked_total{stream="work",group="workers"} 50"#,
        r#"queue_in_flight{stream="work",group="workers"} 0"#,
        r#"queue_depth{stream="work",group="workers"} 0"#,
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    assert!(seen.values().all(|deliveries| deliveries.len() == 1), "{seen:?}");
    assert!(seen.values().all(|deliveries| deliveries[0].0 == 1), "first attempts");
    Ok(())
}

async fn retries_with_exponential_backoff(kind: BackendKind) -> anyhow::Result<()> {
    let queue = queue(kind, &unique_name("q")).await?;
    queue.publish("work", &Work { n: 1, sleep_ms: 0 }).await?;
    let seen = Seen::default();
    let handler =
        recording(
            &seen,
            |job| {
                if job.attempt < 3 { Err(JobError::retry("not yet")) } else { Ok(()) }
            },
        );
    let (stop, task) = spawn_consumer(&queue, "work", fast(), handler);
    eventually("three attempts", Duration::from_secs(20), || {
        seen.lock().unwrap_or_else(PoisonError::into_inner).get(&1).is_some_and(|d| d.len() == 3)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    task.await?;

    assert!(queue.dead_letters("work", 10).await?.is_empty());
    let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    let deliveries = &seen[&1];
    assert_eq!(
        deliveries.iter().map(|d| d.0).collect::<Vec<_>>(),
        [1, 2, 3],
        "no fourth attempt after success"
    );
    let first_gap = deliveries[1].1 - deliveries[0].1;
    let second_gap = deliveries[2].1 - deliveries[1].1;
    // 300 ms then 600 ms, each jittered by at most 20%; fetching adds latency, never less.
    assert!(first_gap >= Duration::from_millis(240), "{first_gap:?}");
    assert!(second_gap >= Duration::from_millis(480), "{second_gap:?}");
    Ok(())
}

async fn dead_letters_after_the_last_attempt(kind: BackendKind) -> anyhow::Result<()> {
    let queue = queue(kind, &unique_name("q")).await?;
    let failing_id = queue.publish("work", &Work { n: 1, sleep_ms: 0 }).await?;
    let refused_id = queue.publish("work", &Work { n: 2, sleep_ms: 0 }).await?;
    let seen = Seen::default();
    let handler = recording(&seen, |job| match job.payload.n {
        1 => Err(JobError::retry("smtp relay timed out")),
        _ => Err(JobError::permanent("550 no such user")),
    });
    let (stop, task) = spawn_consumer(&queue, "work", fast(), handler);
    let deadline = Instant::now() + Duration::from_secs(20);
    let dead = loop {
        let dead = queue.dead_letters("work", 10).await?;
        if dead.len() == 2 || Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    task.await?;

    assert_eq!(dead.len(), 2, "{dead:?}");
    let failing =
        dead.iter().find(|d| d.id == failing_id).expect("the retried job is dead-lettered");
    assert_eq!(failing.attempts, 3);
    assert_eq!(failing.error, "smtp relay timed out (gave up after 3 attempts)");
    assert_eq!(failing.job, serde_json::json!({"n": 1, "sleep_ms": 0}));
    let refused =
        dead.iter().find(|d| d.id == refused_id).expect("the refused job is dead-lettered");
    assert_eq!((refused.attempts, refused.error.as_str()), (1, "550 no such user"));
    let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    assert_eq!(seen[&1].len(), 3, "exactly max_attempts attempts");
    assert_eq!(seen[&2].len(), 1, "a permanent failure is not retried");
    Ok(())
}

async fn undecodable_jobs_are_dead_lettered_at_once(kind: BackendKind) -> anyhow::Result<()> {
    let queue = queue(kind, &unique_name("q")).await?;
    let id = queue.publish("work", &serde_json::json!({"unexpected": true})).await?;
    let seen = Seen::default();
    let (stop, task) = spawn_consumer(&queue, "work", fast(), recording(&seen, |_| Ok(())));
    let deadline = Instant::now() + Duration::from_secs(20);
    let dead = loop {
        let dead = queue.dead_letters("work", 10).await?;
        if !dead.is_empty() || Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop.cancel();
    task.await?;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id);
    assert!(dead[0].error.starts_with("cannot decode the job"), "{}", dead[0].error);
    assert_eq!(count(&seen), 0, "the handler never saw it");
    Ok(())
}

async fn heartbeats_keep_a_long_job_from_being_redelivered(
    kind: BackendKind,
) -> anyhow::Result<()> {
    let queue = queue(kind, &unique_name("q")).await?;
    // Three leases long, while a second consumer of the same group waits for work.
    queue.publish("work", &Work { n: 1, sleep_ms: 6_000 }).await?;
    let seen = Seen::default();
    let (stop_a, task_a) = spawn_consumer(&queue, "work", fast(), recording(&seen, |_| Ok(())));
    let (stop_b, task_b) = spawn_consumer(&queue, "work", fast(), recording(&seen, |_| Ok(())));
    eventually("the long job", Duration::from_secs(20), || count(&seen) == 1).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop_a.cancel();
    stop_b.cancel();
    task_a.await?;
    task_b.await?;
    let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    assert_eq!(seen[&1].len(), 1, "handled once, never redelivered: {seen:?}");
    Ok(())
}

async fn competing_consumers_split_ten_thousand_jobs(kind: BackendKind) -> anyhow::Result<()> {
    const JOBS: u32 = 10_000;
    let namespace = unique_name("q");
    let producer = queue(kind, &namespace).await?;
    let publishing = futures_util::stream::iter(0..JOBS)
        .map(|n| {
            let producer = producer.clone();
            async move { producer.publish("work", &Work { n, sleep_ms: 0 }).await }
        })
        .buffer_unordered(64);
    let published: Vec<_> = publishing.collect().await;
    assert!(published.iter().all(Result::is_ok));

    let seen = Seen::default();
    let per_consumer: Vec<Arc<Mutex<u32>>> = (0..3).map(|_| Arc::default()).collect();
    let mut consumers = Vec::new();
    for share in &per_consumer {
        let queue = queue(kind, &namespace).await?;
        let share = Arc::clone(share);
        let record = recording(&seen, move |_| {
            *share.lock().unwrap_or_else(PoisonError::into_inner) += 1;
            Ok(())
        });
        consumers.push(spawn_consumer(
            &queue,
            "work",
            ConsumerOptions { concurrency: 32, lease: Duration::from_secs(15), ..fast() },
            record,
        ));
    }
    eventually("10,000 jobs", Duration::from_secs(120), || count(&seen) == JOBS as usize).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (stop, task) in consumers {
        stop.cancel();
        task.await?;
    }
    let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    assert_eq!(seen.len(), JOBS as usize, "every job processed");
    let twice = seen.values().filter(|d| d.len() > 1).count();
    assert_eq!(twice, 0, "in the normal case no job is processed twice");
    let shares: Vec<u32> =
        per_consumer.iter().map(|s| *s.lock().unwrap_or_else(PoisonError::into_inner)).collect();
    assert!(shares.iter().all(|&s| s > 0), "every consumer took a share: {shares:?}");
    Ok(())
}

async fn acknowledged_publishes_survive_a_broker_restart(kind: BackendKind) -> anyhow::Result<()> {
    let mut broker = Broker::start(match kind {
        BackendKind::Redis => BrokerKind::Redis,
        BackendKind::Nats => BrokerKind::Nats,
    })?;
    let namespace = unique_name("q");
    let queue = queue_at(kind, &namespace, &broker.url()).await?;
    for n in 0..100 {
        queue.publish("work", &Work { n, sleep_ms: 0 }).await?;
    }
    broker.stop()?;

    let started = Instant::now();
    let failed = queue.publish("work", &Work { n: 1000, sleep_ms: 0 }).await;
    assert!(failed.is_err(), "publishing to a stopped broker must fail");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "within the 2 s publish timeout, took {:?}",
        started.elapsed()
    );

    broker.restart()?;
    let seen = Seen::default();
    let (stop, task) = spawn_consumer(&queue, "work", fast(), recording(&seen, |_| Ok(())));
    eventually("the 100 jobs published before the restart", Duration::from_secs(60), || {
        let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
        (0..100).all(|n| seen.contains_key(&n))
    })
    .await?;
    stop.cancel();
    task.await?;
    Ok(())
}

async fn shutdown_finishes_jobs_in_flight_and_stops_fetching(
    kind: BackendKind,
) -> anyhow::Result<()> {
    let queue = queue(kind, &unique_name("q")).await?;
    queue.publish("work", &Work { n: 1, sleep_ms: 1_500 }).await?;
    let seen = Seen::default();
    let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let record = recording(&seen, |_| Ok(()));
    let handler = {
        let started = Arc::clone(&started);
        move |job: Job<Work>| {
            started.store(true, std::sync::atomic::Ordering::SeqCst);
            record(job)
        }
    };
    let (stop, task) = spawn_consumer(&queue, "work", fast(), handler);
    // Ask the consumer to stop while the job runs.
    eventually("the job to start", Duration::from_secs(20), || {
        started.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await?;
    let stopping = Instant::now();
    stop.cancel();
    // After the fetch under way when stop came (`fetch_wait`, 200 ms), nothing is fetched; the
    // job in flight still runs for about a second.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    queue.publish("work", &Work { n: 2, sleep_ms: 0 }).await?;
    task.await?;
    assert!(stopping.elapsed() >= Duration::from_millis(1_000), "it waited for the job in flight");
    assert_eq!(count(&seen), 1, "the job in flight finished; nothing new was fetched");

    // The finished job was acknowledged: a new consumer gets only the second one.
    let (stop, task) = spawn_consumer(&queue, "work", fast(), recording(&seen, |_| Ok(())));
    eventually("the second job", Duration::from_secs(20), || count(&seen) == 2).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    task.await?;
    let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    assert_eq!((seen[&1].len(), seen[&2].len()), (1, 1), "{seen:?}");
    Ok(())
}

async fn a_panicking_handler_counts_as_a_failed_attempt(kind: BackendKind) -> anyhow::Result<()> {
    let queue = queue(kind, &unique_name("q")).await?;
    queue.publish("work", &Work { n: 1, sleep_ms: 0 }).await?;
    let seen = Seen::default();
    let handler = recording(&seen, |job| {
        assert!(job.attempt > 1, "a bug in the handler on the first attempt");
        Ok(())
    });
    let (stop, task) = spawn_consumer(&queue, "work", fast(), handler);
    eventually("the second attempt", Duration::from_secs(20), || {
        seen.lock().unwrap_or_else(PoisonError::into_inner).get(&1).is_some_and(|d| d.len() == 2)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    task.await?;
    assert_eq!(
        seen.lock().unwrap_or_else(PoisonError::into_inner)[&1].len(),
        2,
        "retried once, then acknowledged"
    );
    Ok(())
}

use futures_util::StreamExt as _;

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $test() -> anyhow::Result<()> {
                    super::$test(super::BackendKind::Redis).await
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $test() -> anyhow::Result<()> {
                    super::$test(super::BackendKind::Nats).await
                }
            )*
        }
    };
}

conformance!(
    acks_each_job_once,
    retries_with_exponential_backoff,
    dead_letters_after_the_last_attempt,
    undecodable_jobs_are_dead_lettered_at_once,
    heartbeats_keep_a_long_job_from_being_redelivered,
    competing_consumers_split_ten_thousand_jobs,
    acknowledged_publishes_survive_a_broker_restart,
    shutdown_finishes_jobs_in_flight_and_stops_fetching,
    a_panicking_handler_counts_as_a_failed_attempt,
);

#[tokio::test(flavor = "multi_thread")]
async fn without_nats_url_the_queue_runs_on_redis() -> anyhow::Result<()> {
    let metrics = Metrics::new("test");
    let redis = redis_config(&service_env("PLATFORM_TEST_REDIS_URL"));
    let queue =
        Queue::connect(&nats_config(None), &redis, options(&unique_name("q")), &metrics).await?;
    assert_eq!(queue.backend(), BackendKind::Redis);
    assert!(metrics.encode().contains(r#"queue_backend{backend="redis"} 1"#));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_nats_falls_back_to_redis_within_the_connect_timeout() -> anyhow::Result<()>
{
    let metrics = Metrics::new("test");
    let redis = redis_config(&service_env("PLATFORM_TEST_REDIS_URL"));
    let closed = format!("nats://127.0.0.1:{}", platform_test_support::free_port());
    let started = Instant::now();
    let queue =
        Queue::connect(&nats_config(Some(&closed)), &redis, options(&unique_name("q")), &metrics)
            .await?;
    assert_eq!(queue.backend(), BackendKind::Redis);
    assert!(started.elapsed() < Duration::from_secs(5));
    queue.publish("work", &Work { n: 1, sleep_ms: 0 }).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn consumers_on_nats_also_drain_jobs_a_producer_left_on_redis() -> anyhow::Result<()> {
    let namespace = unique_name("q");
    let metrics = Metrics::new("test");
    let redis = redis_config(&service_env("PLATFORM_TEST_REDIS_URL"));
    let nats_url = service_env("PLATFORM_TEST_NATS_URL");
    // A producer that found NATS down at its start, and a consumer that found it up.
    let producer = Queue::redis(&redis, options(&namespace), &metrics)?;
    let consumer =
        Queue::connect(&nats_config(Some(&nats_url)), &redis, options(&namespace), &metrics)
            .await?;
    assert_eq!(consumer.backend(), BackendKind::Nats);
    producer.publish("work", &Work { n: 7, sleep_ms: 0 }).await?;
    consumer.publish("work", &Work { n: 8, sleep_ms: 0 }).await?;

    let seen = Seen::default();
    let (stop, task) = spawn_consumer(&consumer, "work", fast(), recording(&seen, |_| Ok(())));
    eventually("jobs from both backends", Duration::from_secs(20), || count(&seen) == 2).await?;
    stop.cancel();
    task.await?;
    Ok(())
}

/// With both brokers configured each has a fetch loop; one waiting on a broker with nothing to
/// give (a long `fetch_wait` on Redis here) must not keep the free slots from the other.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_fallback_broker_never_holds_back_jobs_on_the_other() -> anyhow::Result<()> {
    let namespace = unique_name("q");
    let metrics = Metrics::new("test");
    let redis = redis_config(&service_env("PLATFORM_TEST_REDIS_URL"));
    let nats_url = service_env("PLATFORM_TEST_NATS_URL");
    let queue =
        Queue::connect(&nats_config(Some(&nats_url)), &redis, options(&namespace), &metrics)
            .await?;
    assert_eq!(queue.backend(), BackendKind::Nats);
    let concurrency = 4;
    let options = ConsumerOptions {
        concurrency,
        fetch_wait: Duration::from_secs(15),
        lease: Duration::from_secs(60),
        ..fast()
    };
    let seen = Seen::default();
    let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handler = {
        let recorded = recording(&seen, |_| Ok(()));
        let (running, most) = (Arc::clone(&running), Arc::clone(&most));
        move |job: Job<Work>| {
            let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
            let done = recorded(job);
            let running = Arc::clone(&running);
            Box::pin(async move {
                let result = done.await;
                running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                result
            }) as HandlerFuture
        }
    };
    let (stop, task) = spawn_consumer(&queue, "work", options, handler);
    // One at a time: each must be taken long before a fetch on the idle broker ends (15 s).
    for n in 0..12 {
        queue.publish("work", &Work { n, sleep_ms: 0 }).await?;
        let wanted = usize::try_from(n)? + 1;
        eventually(&format!("job {n} handled"), Duration::from_secs(10), || count(&seen) == wanted)
            .await?;
    }
    // Many at once: still no more than `concurrency` running, though both loops fetched.
    for n in 100..140 {
        queue.publish("work", &Work { n, sleep_ms: 50 }).await?;
    }
    eventually("the burst handled", Duration::from_secs(20), || count(&seen) == 52).await?;
    let most = most.load(std::sync::atomic::Ordering::SeqCst);
    assert!(most <= concurrency && most > 1, "at most {concurrency} at once, saw {most}");
    stop.cancel();
    task.await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_stream_names_are_refused_before_reaching_a_broker() -> anyhow::Result<()> {
    let queue = queue(BackendKind::Redis, &unique_name("q")).await?;
    let error = queue.publish("Bad.Name", &1).await.expect_err("dots and capitals are refused");
    assert!(error.to_string().contains("invalid stream name \"Bad.Name\""), "{error}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_trimming_keeps_what_any_group_has_not_acknowledged() -> anyhow::Result<()> {
    let namespace = unique_name("q");
    let queue = queue(BackendKind::Redis, &namespace).await?;
    let client = ::redis::Client::open(service_env("PLATFORM_TEST_REDIS_URL"))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let key = format!("{namespace}:queue:work");
    let length = |mut conn: ::redis::aio::MultiplexedConnection| {
        let key = key.clone();
        async move { ::redis::cmd("XLEN").arg(&key).query_async::<u64>(&mut conn).await }
    };
    for n in 0..10 {
        queue.publish("work", &Work { n, sleep_ms: 0 }).await?;
    }

    // Group "slow" holds two jobs without acknowledging them; group "fast" handles all ten.
    let slow_seen = Seen::default();
    let holding = ConsumerOptions {
        concurrency: 2,
        lease: Duration::from_secs(60),
        shutdown_grace: Duration::from_millis(200),
        ..fast()
    };
    let stop_slow = CancellationToken::new();
    let slow = tokio::spawn({
        let (queue, until) = (queue.clone(), stop_slow.clone().cancelled_owned());
        let handler = recording(&slow_seen, |_| Ok(()));
        async move {
            let hold = move |job: Job<Work>| {
                handler(Job { payload: Work { sleep_ms: 600_000, ..job.payload.clone() }, ..job })
            };
            queue.consume("work", "slow", holding, hold, until).await.expect("valid names");
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fast_seen = Seen::default();
    let stop_fast = CancellationToken::new();
    let fast_task = tokio::spawn({
        let (queue, until) = (queue.clone(), stop_fast.clone().cancelled_owned());
        let handler = recording(&fast_seen, |_| Ok(()));
        async move { queue.consume("work", "fast", fast(), handler, until).await.expect("valid names") }
    });
    eventually("the fast group", Duration::from_secs(20), || count(&fast_seen) == 10).await?;
    // Trimming runs every 10 s in each consumer: give it two chances.
    tokio::time::sleep(Duration::from_secs(21)).await;
    assert_eq!(length(conn.clone()).await?, 10, "nothing the slow group still needs was trimmed");

    // The slow group's consumer dies; a new member finishes all ten, including the two held.
    stop_slow.cancel();
    slow.await?;
    let (stop, task) = {
        let stop = CancellationToken::new();
        let (queue, until) = (queue.clone(), stop.clone().cancelled_owned());
        let handler = recording(&slow_seen, |_| Ok(()));
        let options = ConsumerOptions { lease: Duration::from_secs(1), ..fast() };
        (
            stop,
            tokio::spawn(async move {
                queue.consume("work", "slow", options, handler, until).await.expect("valid names")
            }),
        )
    };
    eventually("the slow group", Duration::from_secs(30), || count(&slow_seen) == 10).await?;

    // Once every group has acknowledged everything, trimming removes it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while length(conn.clone()).await? > 1 {
        anyhow::ensure!(Instant::now() < deadline, "acknowledged entries were never trimmed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.cancel();
    stop_fast.cancel();
    task.await?;
    fast_task.await?;
    ::redis::cmd("PING").query_async::<String>(&mut conn).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_token_authentication_is_used_and_never_revealed() -> anyhow::Result<()> {
    const TOKEN: &str = "s3cret-nats-token-value";
    let broker = Broker::start_with_token(BrokerKind::Nats, Some(TOKEN))?;
    let metrics = Metrics::new("test");
    let with_token = |token: Option<&str>| NatsConfig {
        url: Some(SecretUrl::new(broker.url().parse().expect("valid URL"))),
        token: token.map(secrecy::SecretString::from),
    };

    let queue = Queue::nats(&with_token(Some(TOKEN)), options(&unique_name("q")), &metrics).await?;
    queue.publish("work", &Work { n: 1, sleep_ms: 0 }).await?;

    for wrong in [None, Some("not-the-token")] {
        let refused = Queue::nats(&with_token(wrong), options(&unique_name("q")), &metrics).await;
        let error = refused.expect_err("the server requires the token");
        let mut text = format!("{error} {error:?}");
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        assert!(!text.contains(TOKEN), "{text}");
        assert!(wrong.is_none_or(|w| !text.contains(w)), "{text}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_queues_shutdown_grace_is_every_consumers() -> anyhow::Result<()> {
    let namespace = unique_name("q");
    let options =
        QueueOptions { shutdown_grace: Some(Duration::from_millis(300)), ..options(&namespace) };
    let redis = redis_config(&broker_url(BackendKind::Redis));
    let queue = Queue::redis(&redis, options, &Metrics::new("test"))?;
    queue.publish("work", &Work { n: 1, sleep_ms: 0 }).await?;
    let started = Arc::new(tokio::sync::Notify::new());
    let stop = CancellationToken::new();
    // The consumer's own options would let the job run on for a minute after the stop.
    let consumer = ConsumerOptions { shutdown_grace: Duration::from_secs(60), ..fast() };
    let task = tokio::spawn({
        let (queue, until, started) =
            (queue.clone(), stop.clone().cancelled_owned(), Arc::clone(&started));
        let handler = move |_job: Job<Work>| {
            let started = Arc::clone(&started);
            async move {
                started.notify_one();
                std::future::pending::<Result<(), JobError>>().await
            }
        };
        async move { queue.consume("work", "held", consumer, handler, until).await }
    });
    tokio::time::timeout(Duration::from_secs(10), started.notified()).await?;
    let stopping = Instant::now();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), task).await???;
    let took = stopping.elapsed();
    assert!(took >= Duration::from_millis(300), "the job was not given its grace: {took:?}");
    assert!(took < Duration::from_secs(10), "the consumer's own grace was used: {took:?}");
    Ok(())
}
