//! `metrics_aggregator` against the references it stands in for: Prometheus scraping the same
//! targets itself, and a Loki receiver fed by the clients directly.
//!
//! Run with `scripts/bench.sh aggregator` (it installs Prometheus and builds the aggregator in
//! release; about five minutes), or `cargo bench -p metrics_aggregator --bench aggregator` after
//! `cargo build --release -p metrics_aggregator`.
//!
//! 1. Scraping. `BENCH_AGGREGATOR_TARGETS` (30) endpoints in this process each serve
//!    `BENCH_AGGREGATOR_SERIES` (10,000) samples in the 0.0.4 text format (test-support's
//!    `synthetic_exposition`: counter families alternating with histograms), about 0.9 MB per
//!    scrape. The aggregator (a release process, its default limits) and then Prometheus
//!    (Debian's package, a fresh data directory) scrape all of them every
//!    `BENCH_AGGREGATOR_INTERVAL` (5) seconds with a timeout one second shorter, one at a time;
//!    the aggregator's merged exposition is read once an interval, as the one Prometheus of a
//!    deployment would. After every target is up and two more intervals have passed, each is
//!    measured for `BENCH_AGGREGATOR_SECONDS` (30): its CPU time (`/proc/PID/stat`) and the
//!    samples it scraped in that time (the endpoints count the scrapes they answer, so both are
//!    counted the same way), resident memory at the end and its peak (`VmRSS`, `VmHWM`). For the
//!    aggregator the window starts and ends between two rounds, so it holds whole rounds.
//!    Efficiency is samples scraped per CPU second; goal: the aggregator at least 0.5x
//!    Prometheus. "round" is the aggregator's time from discovery to the merged exposition
//!    (`aggregator_scrape_cycle_seconds`, read every interval); Prometheus spreads its scrapes
//!    over the interval and has no round, so each is also given its per-target
//!    `scrape_duration_seconds` (median and largest over the window).
//! 2. Logs. `BENCH_AGGREGATOR_LOG_CLIENTS` (4) clients each push
//!    `BENCH_AGGREGATOR_LOG_PUSHES` (50) pushes of 1,000 JSON lines (about 300 bytes each, as
//!    the services write them, with a `request_id` in structured metadata) as protobuf + Snappy,
//!    one push at a time each, to test-support's `LokiReceiver` directly ("direct") or to the
//!    aggregator forwarding to that receiver ("aggregator"). Lines per second are the lines
//!    divided by the time from the first push to the last entry the receiver decoded; "accepted"
//!    is the time until the aggregator had answered every push. The aggregator's buffer is set
//!    large enough that nothing is dropped, and it must drop nothing. Goal: at least 0.8x direct.
//!
//! Every figure is the median of `BENCH_AGGREGATOR_RUNS` (3) runs, the two sides alternating
//! (and a first, untimed push of each log side). `BENCH_AGGREGATOR_ONLY=scrape` or `logs` runs
//! one half.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use platform_core::loki::{self, Entry, LabelPair, PushRequest, Stream};
use platform_test_support::{
    Exposition, LokiReceiver, MetricsEndpoint, ProcessUsage, Prometheus, ServiceProcess,
    synthetic_exposition, workspace_binary,
};

const LINES_PER_PUSH: usize = 1_000;

struct Settings {
    targets: usize,
    series: usize,
    interval: u64,
    window: Duration,
    runs: usize,
    log_clients: usize,
    log_pushes: usize,
}

fn setting<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(value) => {
            value.parse().ok().with_context(|| format!("{name}: {value:?} is not a number"))
        }
        Err(_) => Ok(default),
    }
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let settings = Self {
            targets: setting("BENCH_AGGREGATOR_TARGETS", 30)?,
            series: setting("BENCH_AGGREGATOR_SERIES", 10_000)?,
            interval: setting("BENCH_AGGREGATOR_INTERVAL", 5)?,
            window: Duration::from_secs(setting("BENCH_AGGREGATOR_SECONDS", 30)?),
            runs: setting("BENCH_AGGREGATOR_RUNS", 3)?,
            log_clients: setting("BENCH_AGGREGATOR_LOG_CLIENTS", 4)?,
            log_pushes: setting("BENCH_AGGREGATOR_LOG_PUSHES", 50)?,
        };
        ensure!(settings.interval >= 2, "BENCH_AGGREGATOR_INTERVAL: at least 2 seconds");
        ensure!(settings.runs >= 1 && settings.targets >= 1, "runs and targets: at least 1");
        Ok(settings)
    }
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let binary = workspace_binary("metrics_aggregator");
    println!(
        "metrics_aggregator ({}) against Prometheus and a Loki receiver fed directly",
        binary.display()
    );
    // BENCH_AGGREGATOR_ONLY=scrape or logs runs one half.
    let only = std::env::var("BENCH_AGGREGATOR_ONLY").unwrap_or_default();
    let scrape =
        if only == "logs" { String::new() } else { scrape_bench(&settings, &binary).await? };
    let logs = if only == "scrape" { String::new() } else { log_bench(&settings, &binary).await? };
    println!("\n{scrape}\n{logs}");
    Ok(())
}

/// One side's measurement of one scraping run.
#[derive(Default)]
struct ScrapeRun {
    samples_per_cpu_second: f64,
    cpu_share: f64,
    round_seconds: f64,
    target_p50_seconds: f64,
    target_max_seconds: f64,
    resident: u64,
    peak_resident: u64,
}

async fn scrape_bench(settings: &Settings, binary: &Path) -> anyhow::Result<String> {
    let exposition: std::sync::Arc<str> = synthetic_exposition(settings.series).into();
    let mut endpoints = Vec::new();
    for _ in 0..settings.targets {
        endpoints.push(MetricsEndpoint::start(Exposition::Text(exposition.clone())).await?);
    }
    println!(
        "scraping: {} targets x {} samples ({} KiB each), every {} s, {} s windows",
        settings.targets,
        settings.series,
        exposition.len() / 1024,
        settings.interval,
        settings.window.as_secs()
    );
    let mut aggregator_runs = Vec::new();
    let mut prometheus_runs = Vec::new();
    for run in 0..settings.runs {
        let aggregator_first = run % 2 == 0;
        for side in 0..2 {
            if (side == 0) == aggregator_first {
                let measured = scrape_with_aggregator(settings, binary, &endpoints).await?;
                println!(
                    "  run {run}: aggregator {:.0} samples/CPU s",
                    measured.samples_per_cpu_second
                );
                aggregator_runs.push(measured);
            } else {
                let measured = scrape_with_prometheus(settings, &endpoints).await?;
                println!(
                    "  run {run}: prometheus {:.0} samples/CPU s",
                    measured.samples_per_cpu_second
                );
                prometheus_runs.push(measured);
            }
        }
    }
    let aggregator = median_run(&aggregator_runs);
    let prometheus = median_run(&prometheus_runs);
    let mut table = format!(
        "## Scraping {} targets x {} samples every {} s (median of {} runs)\n\n\
         | | samples / CPU s | CPU (of one core) | round | target scrape p50 | max | RSS | peak RSS |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
        settings.targets, settings.series, settings.interval, settings.runs
    );
    for (name, run) in [("aggregator", &aggregator), ("prometheus", &prometheus)] {
        let round = if run.round_seconds.is_nan() {
            "-".to_owned()
        } else {
            format!("{:.0} ms", run.round_seconds * 1e3)
        };
        let _ = writeln!(
            table,
            "| {name} | {:.0} | {:.1}% | {round} | {:.0} ms | {:.0} ms | {:.0} MiB | {:.0} MiB |",
            run.samples_per_cpu_second,
            run.cpu_share * 100.0,
            run.target_p50_seconds * 1e3,
            run.target_max_seconds * 1e3,
            mib(run.resident),
            mib(run.peak_resident),
        );
    }
    let ratio = aggregator.samples_per_cpu_second / prometheus.samples_per_cpu_second;
    let _ = writeln!(
        table,
        "\nEfficiency, aggregator / Prometheus: {ratio:.2}x (goal: at least 0.5x) {}",
        if ratio >= 0.5 { "met" } else { "NOT met" }
    );
    Ok(table)
}

fn median_run(runs: &[ScrapeRun]) -> ScrapeRun {
    let pick =
        |field: fn(&ScrapeRun) -> f64| median(&mut runs.iter().map(field).collect::<Vec<_>>());
    ScrapeRun {
        samples_per_cpu_second: pick(|r| r.samples_per_cpu_second),
        cpu_share: pick(|r| r.cpu_share),
        round_seconds: pick(|r| r.round_seconds),
        target_p50_seconds: pick(|r| r.target_p50_seconds),
        target_max_seconds: pick(|r| r.target_max_seconds),
        resident: pick(|r| r.resident as f64) as u64,
        peak_resident: pick(|r| r.peak_resident as f64) as u64,
    }
}

fn scrapes(endpoints: &[MetricsEndpoint]) -> usize {
    endpoints.iter().map(MetricsEndpoint::requests).sum()
}

/// Waits for a moment between two of the aggregator's rounds: every target scraped as often as
/// the others since `baseline` (the counts when the aggregator started), and no scrape for half
/// a second.
async fn between_rounds(endpoints: &[MetricsEndpoint], baseline: &[usize]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = scrapes(endpoints);
    let mut quiet_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = scrapes(endpoints);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= Duration::from_millis(500) && now > 0 {
            let since = |(endpoint, base): (&MetricsEndpoint, &usize)| endpoint.requests() - base;
            let first = since((&endpoints[0], &baseline[0]));
            if endpoints.iter().zip(baseline).all(|pair| since(pair) == first) {
                return Ok(());
            }
        }
        ensure!(Instant::now() < deadline, "the aggregator's rounds never paused");
    }
}

/// The value of every sample of `name` in `text`.
fn values<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = f64> + 'a {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        let rest = if rest.starts_with('{') { &rest[rest.find('}')? + 1..] } else { rest };
        if !rest.starts_with(' ') {
            return None;
        }
        rest.split_whitespace().next()?.parse().ok()
    })
}

async fn scrape_with_aggregator(
    settings: &Settings,
    binary: &Path,
    endpoints: &[MetricsEndpoint],
) -> anyhow::Result<ScrapeRun> {
    let targets: Vec<String> =
        endpoints.iter().map(|e| format!("bench=http://{}/metrics", e.addr())).collect();
    let env = HashMap::from([
        ("APP_METRICS_TARGETS".to_owned(), targets.join(",")),
        ("APP_METRICS_SCRAPE_INTERVAL_SECONDS".to_owned(), settings.interval.to_string()),
        ("APP_METRICS_SCRAPE_TIMEOUT_SECONDS".to_owned(), (settings.interval - 1).to_string()),
    ]);
    let baseline: Vec<usize> = endpoints.iter().map(MetricsEndpoint::requests).collect();
    let aggregator = ServiceProcess::start(binary, &env).await?;
    let pid = aggregator.id().context("the aggregator exited")?;
    let client = reqwest::Client::new();
    let merged_url = aggregator.url("/metrics/all");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = client.get(&merged_url).send().await?.text().await?;
        if values(&text, "up").filter(|up| *up == 1.0).count() == settings.targets {
            break;
        }
        ensure!(Instant::now() < deadline, "not every target was up within 60 s:\n{text:.2000}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2 * settings.interval)).await;

    // The one Prometheus of a deployment: the merged exposition and the aggregator's own
    // metrics, once an interval, inside the window.
    let reading = {
        let client = client.clone();
        let own_url = aggregator.url("/metrics");
        let interval = Duration::from_secs(settings.interval);
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut rounds = Vec::new();
            let mut durations = Vec::new();
            let mut ticks = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = &mut stopped => break,
                }
                let Ok(merged) = fetch(&client, &merged_url).await else { break };
                durations.extend(values(&merged, "scrape_duration_seconds"));
                let Ok(own) = fetch(&client, &own_url).await else { break };
                rounds.extend(values(&own, "aggregator_scrape_cycle_seconds"));
                if rounds.len() > 10_000 {
                    break;
                }
            }
            (rounds, durations)
        });
        (stop, task)
    };
    between_rounds(endpoints, &baseline).await?;
    let (before, scraped_before, started) =
        (ProcessUsage::of(pid)?, scrapes(endpoints), Instant::now());
    tokio::time::sleep(settings.window).await;
    between_rounds(endpoints, &baseline).await?;
    let (after, scraped_after, elapsed) =
        (ProcessUsage::of(pid)?, scrapes(endpoints), started.elapsed());
    let (stop_reading, reading) = reading;
    let _ = stop_reading.send(());
    let (mut rounds, mut durations) = reading.await.unwrap_or_default();
    drop(aggregator);
    let cpu = after.cpu_seconds - before.cpu_seconds;
    let samples = (scraped_after - scraped_before) * settings.series;
    let target_max_seconds = durations.iter().copied().fold(0.0, f64::max);
    Ok(ScrapeRun {
        samples_per_cpu_second: samples as f64 / cpu,
        cpu_share: cpu / elapsed.as_secs_f64(),
        round_seconds: median(&mut rounds),
        target_p50_seconds: median(&mut durations),
        target_max_seconds,
        resident: after.resident_bytes,
        peak_resident: after.peak_resident_bytes,
    })
}

async fn fetch(client: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    Ok(client.get(url).send().await?.error_for_status()?.text().await?)
}

async fn scrape_with_prometheus(
    settings: &Settings,
    endpoints: &[MetricsEndpoint],
) -> anyhow::Result<ScrapeRun> {
    let targets: Vec<String> = endpoints.iter().map(|e| format!("'{}'", e.addr())).collect();
    let config = format!(
        "global:\n  scrape_interval: {}s\n  scrape_timeout: {}s\nscrape_configs:\n  - job_name: bench\n    \
         static_configs:\n      - targets: [{}]\n",
        settings.interval,
        settings.interval - 1,
        targets.join(", ")
    );
    let prometheus = Prometheus::start(&config).await?;
    let pid = prometheus.id().context("prometheus exited")?;
    let all_up = format!("count(up{{job=\"bench\"}} == 1) == {}", settings.targets);
    prometheus.wait_for(&all_up, Duration::from_secs(60), |result| !result.is_empty()).await?;
    tokio::time::sleep(Duration::from_secs(2 * settings.interval)).await;
    let (before, scraped_before, started) =
        (ProcessUsage::of(pid)?, scrapes(endpoints), Instant::now());
    tokio::time::sleep(settings.window).await;
    let (after, scraped_after, elapsed) =
        (ProcessUsage::of(pid)?, scrapes(endpoints), started.elapsed());
    let range = format!("[{}s]", settings.window.as_secs());
    let targets = settings.targets;
    let mut p50 = per_target(
        &prometheus,
        &format!("quantile_over_time(0.5, scrape_duration_seconds{{job=\"bench\"}}{range})"),
        targets,
    )
    .await?;
    let max = per_target(
        &prometheus,
        &format!("max_over_time(scrape_duration_seconds{{job=\"bench\"}}{range})"),
        targets,
    )
    .await?;
    let failed =
        per_target(&prometheus, &format!("min_over_time(up{{job=\"bench\"}}{range})"), targets)
            .await?;
    ensure!(
        failed.iter().all(|up| *up == 1.0),
        "a Prometheus scrape failed:\n{}",
        prometheus.log()
    );
    let cpu = after.cpu_seconds - before.cpu_seconds;
    let samples = (scraped_after - scraped_before) * settings.series;
    Ok(ScrapeRun {
        samples_per_cpu_second: samples as f64 / cpu,
        cpu_share: cpu / elapsed.as_secs_f64(),
        round_seconds: f64::NAN,
        target_p50_seconds: median(&mut p50),
        target_max_seconds: max.into_iter().fold(0.0, f64::max),
        resident: after.resident_bytes,
        peak_resident: after.peak_resident_bytes,
    })
}

/// One value per target of an instant query's answer.
async fn per_target(
    prometheus: &Prometheus,
    query: &str,
    targets: usize,
) -> anyhow::Result<Vec<f64>> {
    let result = prometheus.query(query).await?;
    let values: Vec<f64> =
        result.iter().filter_map(|series| series["value"][1].as_str()?.parse().ok()).collect();
    if values.len() != targets {
        bail!("{query}: {} targets in {result:?}", values.len());
    }
    Ok(values)
}

/// Every client's pushes, each a protobuf + Snappy body, timestamps rising within a client.
fn log_pushes(settings: &Settings) -> Vec<Vec<Vec<u8>>> {
    let base = 1_800_000_000_000_000_000i128;
    (0..settings.log_clients)
        .map(|client| {
            let labels = format!(
                "{{service=\"bench-{client}\", instance=\"bench-{client}-0\", level=\"info\"}}"
            );
            (0..settings.log_pushes)
                .map(|push| {
                    let entries = (0..LINES_PER_PUSH)
                        .map(|i| {
                            let n = push * LINES_PER_PUSH + i;
                            let request_id = format!("{client:02x}{n:030x}");
                            let line = format!(
                                "{{\"timestamp\":\"2027-01-15T08:00:{:02}.{:06}Z\",\"level\":\"INFO\",\
                                 \"fields\":{{\"message\":\"request finished\",\"status\":200,\
                                 \"latency_ms\":{},\"bytes\":{}}},\"target\":\"platform_core::service\",\
                                 \"span\":{{\"request_id\":\"{request_id}\",\"method\":\"GET\",\
                                 \"uri\":\"/api/v1/repos/owner-{}/repo-{}/tree/main\"}}}}",
                                n / 1_000_000 % 60,
                                n % 1_000_000,
                                n % 97,
                                n * 13 % 65_536,
                                n % 50,
                                n % 7
                            );
                            let mut entry = Entry::new(base + n as i128 * 1_000, line);
                            entry.structured_metadata =
                                vec![LabelPair { name: "request_id".into(), value: request_id }];
                            entry
                        })
                        .collect();
                    loki::encode(&PushRequest {
                        streams: vec![Stream { labels: labels.clone(), entries, hash: 0 }],
                    })
                })
                .collect()
        })
        .collect()
}

/// Sends every client's pushes to `url`, the clients at once and each one push at a time;
/// returns when every push was answered.
async fn push_all(
    client: &reqwest::Client,
    url: &str,
    pushes: &[Vec<Vec<u8>>],
) -> anyhow::Result<()> {
    let mut clients = tokio::task::JoinSet::new();
    for bodies in pushes {
        let (client, url, bodies) = (client.clone(), url.to_owned(), bodies.clone());
        clients.spawn(async move {
            for body in bodies {
                let response = client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(body)
                    .send()
                    .await?;
                ensure!(response.status().is_success(), "{url} answered {}", response.status());
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = clients.join_next().await {
        done??;
    }
    Ok(())
}

/// One timed pass of the log side: the time until every push was answered and until the
/// receiver had decoded every line.
struct LogRun {
    accepted: Duration,
    delivered: Duration,
}

async fn log_bench(settings: &Settings, binary: &Path) -> anyhow::Result<String> {
    let pushes = log_pushes(settings);
    let lines = settings.log_clients * settings.log_pushes * LINES_PER_PUSH;
    let bytes: usize = pushes.iter().flatten().map(Vec::len).sum();
    println!(
        "logs: {} clients x {} pushes x {LINES_PER_PUSH} lines ({lines} lines, {:.1} MiB compressed)",
        settings.log_clients,
        settings.log_pushes,
        mib(bytes as u64)
    );
    let client = reqwest::Client::new();
    let mut direct = Vec::new();
    let mut through = Vec::new();
    let mut aggregator_cpu = Vec::new();
    for run in 0..=settings.runs {
        for side in 0..2 {
            let receiver = LokiReceiver::start().await?;
            let via_aggregator = (side == 0) == (run % 2 == 0);
            let (pass, cpu) = if via_aggregator {
                let env = HashMap::from([
                    ("LOKI_URL".to_owned(), receiver.url()),
                    ("LOKI_BUFFER_BYTES".to_owned(), (4u64 << 30).to_string()),
                ]);
                let aggregator = ServiceProcess::start(binary, &env).await?;
                let pid = aggregator.id().context("the aggregator exited")?;
                let before = ProcessUsage::of(pid)?;
                let pass = log_pass(
                    &client,
                    &aggregator.url("/loki/api/v1/push"),
                    &pushes,
                    &receiver,
                    lines,
                )
                .await?;
                let cpu = ProcessUsage::of(pid)?.cpu_seconds - before.cpu_seconds;
                let own = fetch(&client, &aggregator.url("/metrics")).await?;
                let dropped: f64 = values(&own, "loki_entries_dropped_total").sum();
                ensure!(dropped == 0.0, "the aggregator dropped {dropped} entries");
                (pass, Some(cpu))
            } else {
                let url = format!("{}/loki/api/v1/push", receiver.url());
                (log_pass(&client, &url, &pushes, &receiver, lines).await?, None)
            };
            let errors = receiver.protocol_errors();
            ensure!(errors.is_empty(), "the receiver found errors: {errors:?}");
            let name = if via_aggregator { "aggregator" } else { "direct" };
            println!(
                "  run {run}{}: {name} {:.0} lines/s",
                if run == 0 { " (untimed)" } else { "" },
                lines as f64 / pass.delivered.as_secs_f64()
            );
            if run == 0 {
                continue;
            }
            match cpu {
                Some(cpu) => {
                    aggregator_cpu.push(cpu);
                    through.push(pass);
                }
                None => direct.push(pass),
            }
        }
    }
    let rate = |passes: &[LogRun], pick: fn(&LogRun) -> Duration| {
        median(&mut passes.iter().map(|p| lines as f64 / pick(p).as_secs_f64()).collect::<Vec<_>>())
    };
    let direct_rate = rate(&direct, |p| p.delivered);
    let through_rate = rate(&through, |p| p.delivered);
    let mut table = format!(
        "## Logs: {lines} lines from {} clients (median of {} runs)\n\n\
         | | lines/s delivered | lines/s accepted | aggregator CPU per 1,000 lines |\n\
         |---|---:|---:|---:|\n\
         | direct | {direct_rate:.0} | {:.0} | - |\n",
        settings.log_clients,
        settings.runs,
        rate(&direct, |p| p.accepted),
    );
    let _ = writeln!(
        table,
        "| aggregator | {through_rate:.0} | {:.0} | {:.2} ms |",
        rate(&through, |p| p.accepted),
        median(&mut aggregator_cpu) / lines as f64 * 1e6,
    );
    let ratio = through_rate / direct_rate;
    let _ = writeln!(
        table,
        "\nDelivered, aggregator / direct: {ratio:.2}x (goal: at least 0.8x) {}",
        if ratio >= 0.8 { "met" } else { "NOT met" }
    );
    Ok(table)
}

async fn log_pass(
    client: &reqwest::Client,
    url: &str,
    pushes: &[Vec<Vec<u8>>],
    receiver: &LokiReceiver,
    lines: usize,
) -> anyhow::Result<LogRun> {
    let started = Instant::now();
    push_all(client, url, pushes).await?;
    let accepted = started.elapsed();
    receiver.wait_for_count(lines, Duration::from_secs(300)).await?;
    let delivered = started.elapsed();
    ensure!(receiver.count() == lines, "{} entries for {lines} lines", receiver.count());
    Ok(LogRun { accepted, delivered })
}
