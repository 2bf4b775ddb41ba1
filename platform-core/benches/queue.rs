//! Throughput of the job queue against the raw broker, in the same run.
//!
//! Run with `scripts/bench.sh queue` (it starts the brokers), or with `PLATFORM_TEST_REDIS_URL`
//! and `PLATFORM_TEST_NATS_URL` set: `cargo bench -p platform-core --bench queue`.
//!
//! For each backend, 1 KiB jobs are published (64 publishes in flight, each waiting for the
//! broker's confirmation), then consumed and acknowledged (64 jobs in flight). "raw" does the
//! same with the client library directly: JetStream publish + pull fetch + ack, or
//! `XADD` + `XREADGROUP` + `XACK`. Each figure is the median of several runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, stream};
use futures_util::StreamExt as _;
use platform_core::config::{NatsConfig, RedisConfig, SecretUrl};
use platform_core::queue::{ConsumerOptions, Job, JobError, Queue, QueueOptions};
use platform_core::telemetry::Metrics;
use tokio_util::sync::CancellationToken;

const JOBS: usize = 20_000;
const IN_FLIGHT: usize = 64;
const RUNS: usize = 5;

#[derive(serde::Serialize, serde::Deserialize)]
struct Blob {
    data: String,
}

fn blob() -> Blob {
    Blob { data: "x".repeat(1024) }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/bench.sh queue"))
}

fn namespace(run: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("bench_{run}_{nanos}")
}

/// (publish seconds, consume seconds)
type Timing = (f64, f64);

async fn ours(queue: Queue) -> Timing {
    let started = Instant::now();
    let job = blob();
    futures_util::stream::iter(0..JOBS)
        .map(|_| queue.publish("bench", &job))
        .buffer_unordered(IN_FLIGHT)
        .for_each(|r| async move { r.map(drop).expect("publish") })
        .await;
    let published = started.elapsed().as_secs_f64();

    let done = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let started = Instant::now();
    let consumer = tokio::spawn({
        let (queue, done, stop) = (queue.clone(), Arc::clone(&done), stop.clone());
        async move {
            let options = ConsumerOptions {
                concurrency: IN_FLIGHT,
                fetch_wait: Duration::from_millis(100),
                ..Default::default()
            };
            queue
                .consume(
                    "bench",
                    "bench",
                    options,
                    move |_job: Job<Blob>| {
                        let done = Arc::clone(&done);
                        async move {
                            done.fetch_add(1, Ordering::Relaxed);
                            Ok::<(), JobError>(())
                        }
                    },
                    stop.cancelled_owned(),
                )
                .await
                .expect("consume")
        }
    });
    while done.load(Ordering::Relaxed) < JOBS {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let consumed = started.elapsed().as_secs_f64();
    stop.cancel();
    consumer.await.expect("consumer stops");
    (published, consumed)
}

async fn raw_nats(url: &str) -> Timing {
    let client = async_nats::connect(url).await.expect("NATS");
    let js = jetstream::new(client);
    let name = namespace("raw");
    let stream = js
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{name}.jobs")],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("stream");
    let payload = bytes::Bytes::from(serde_json::to_vec(&blob()).expect("JSON"));
    let started = Instant::now();
    futures_util::stream::iter(0..JOBS)
        .map(|_| {
            let (js, payload, subject) = (js.clone(), payload.clone(), format!("{name}.jobs"));
            async move { js.publish(subject, payload).await.expect("publish").await.expect("ack") }
        })
        .buffer_unordered(IN_FLIGHT)
        .for_each(|_| async {})
        .await;
    let published = started.elapsed().as_secs_f64();

    let consumer = stream
        .create_consumer(pull::Config { durable_name: Some("raw".into()), ..Default::default() })
        .await
        .expect("consumer");
    let started = Instant::now();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(IN_FLIGHT)
        .messages()
        .await
        .expect("pull")
        .take(JOBS);
    while let Some(message) = messages.next().await {
        message.expect("message").ack().await.expect("ack");
    }
    let consumed = started.elapsed().as_secs_f64();
    js.delete_stream(&name).await.expect("cleanup");
    (published, consumed)
}

async fn raw_redis(url: &str) -> Timing {
    let client = redis::Client::open(url).expect("URL");
    let mut conn = client.get_multiplexed_async_connection().await.expect("Redis");
    let key = namespace("raw");
    let payload = serde_json::to_vec(&blob()).expect("JSON");
    let started = Instant::now();
    futures_util::stream::iter(0..JOBS)
        .map(|_| {
            let (mut conn, key, payload) = (conn.clone(), key.clone(), payload.clone());
            async move {
                redis::cmd("XADD")
                    .arg(&key)
                    .arg("*")
                    .arg("d")
                    .arg(payload)
                    .query_async::<String>(&mut conn)
                    .await
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .for_each(|r| async move { r.map(drop).expect("XADD") })
        .await;
    let published = started.elapsed().as_secs_f64();

    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg("g")
        .arg("0")
        .query_async::<()>(&mut conn)
        .await
        .expect("group");
    let started = Instant::now();
    let mut done = 0;
    while done < JOBS {
        let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("c")
            .arg("COUNT")
            .arg(IN_FLIGHT)
            .arg("STREAMS")
            .arg(&key)
            .arg(">")
            .query_async(&mut conn)
            .await
            .expect("XREADGROUP");
        let ids: Vec<String> = reply.keys.into_iter().flat_map(|k| k.ids).map(|e| e.id).collect();
        done += ids.len();
        if !ids.is_empty() {
            redis::cmd("XACK")
                .arg(&key)
                .arg("g")
                .arg(&ids)
                .query_async::<i64>(&mut conn)
                .await
                .expect("XACK");
        }
    }
    let consumed = started.elapsed().as_secs_f64();
    redis::cmd("DEL").arg(&key).query_async::<i64>(&mut conn).await.expect("cleanup");
    (published, consumed)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn row(backend: &str, raw: &[Timing], ours: &[Timing]) {
    let rate = |t: &[Timing], pick: fn(&Timing) -> f64| {
        median(t.iter().map(|x| JOBS as f64 / pick(x)).collect())
    };
    for (phase, pick) in [
        ("publish", (|t: &Timing| t.0) as fn(&Timing) -> f64),
        ("consume", |t: &Timing| t.1),
        ("both", |t: &Timing| t.0 + t.1),
    ] {
        let (r, o) = (rate(raw, pick), rate(ours, pick));
        println!("| {backend:<6} | {phase:<8} | {r:>12.0} | {o:>12.0} | {:>5.2}x |", o / r);
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let redis_url = env("PLATFORM_TEST_REDIS_URL");
    let nats_url = env("PLATFORM_TEST_NATS_URL");
    let metrics = Metrics::new("bench");
    let (mut raw_n, mut ours_n, mut raw_r, mut ours_r) = (vec![], vec![], vec![], vec![]);
    for _ in 0..RUNS {
        raw_n.push(raw_nats(&nats_url).await);
        let nats =
            NatsConfig { url: Some(SecretUrl::new(nats_url.parse().expect("URL"))), token: None };
        let options = QueueOptions { namespace: namespace("ours"), ..Default::default() };
        ours_n.push(ours(Queue::nats(&nats, options, &metrics).await.expect("NATS queue")).await);

        raw_r.push(raw_redis(&redis_url).await);
        let redis = RedisConfig::new(SecretUrl::new(redis_url.parse().expect("URL")));
        let options = QueueOptions { namespace: namespace("ours"), ..Default::default() };
        ours_r.push(ours(Queue::redis(&redis, options, &metrics).expect("Redis queue")).await);
    }
    println!(
        "{JOBS} jobs of 1 KiB, {IN_FLIGHT} in flight, median of {RUNS} runs (jobs per second)"
    );
    println!("| broker | phase    |          raw |        queue | ratio |");
    println!("|--------|----------|--------------|--------------|-------|");
    row("nats", &raw_n, &ours_n);
    row("redis", &raw_r, &ours_r);
}
