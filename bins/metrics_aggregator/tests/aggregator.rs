//! `metrics_aggregator` as a process: scrape failures that stay with their target, targets that
//! come and go with DNS, and the log path through Loki outages, refusals and no Loki at all.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use platform_core::loki::{self, Entry, PushRequest, Stream};
use platform_test_support::{
    DnsServer, Exposition, LokiReceiver, MetricsEndpoint, ServiceProcess, workspace_binary,
};

const AGGREGATOR: &str = env!("CARGO_BIN_EXE_metrics_aggregator");

async fn aggregator(env: &[(&str, String)]) -> anyhow::Result<ServiceProcess> {
    let env: HashMap<String, String> =
        env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    ServiceProcess::start(AGGREGATOR.as_ref(), &env).await
}

async fn text(url: &str) -> anyhow::Result<String> {
    Ok(reqwest::get(url).await?.error_for_status()?.text().await?)
}

/// The value of the first sample whose line starts with `prefix` (name and labels).
fn sample(exposition: &str, prefix: &str) -> Option<f64> {
    exposition
        .lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line[prefix.len()..].split_whitespace().next()?.parse().ok())
}

/// A client's push of `lines`, each a nanosecond after the one before, across pushes too.
fn push_body(lines: impl IntoIterator<Item = String>) -> Vec<u8> {
    static CLOCK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let base = 1_800_000_000_000_000_000i128;
    let entries = lines
        .into_iter()
        .map(|line| {
            let tick = CLOCK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Entry::new(base + i128::from(tick), line)
        })
        .collect();
    loki::encode(&PushRequest {
        streams: vec![Stream {
            labels: r#"{service="client", level="info"}"#.to_owned(),
            entries,
            hash: 0,
        }],
    })
}

async fn push(
    client: &reqwest::Client,
    aggregator: &ServiceProcess,
    body: Vec<u8>,
) -> anyhow::Result<()> {
    let response = client
        .post(aggregator.url("/loki/api/v1/push"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await?;
    anyhow::ensure!(response.status() == 204, "push answered {}", response.status());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_target_fails_alone_and_a_vanished_one_leaves_the_exposition()
-> anyhow::Result<()> {
    let good = MetricsEndpoint::start(Exposition::OpenMetrics(
        "# TYPE fixture_requests counter\nfixture_requests_total{service=\"own\",route=\"/a\"} 3\n\
         # TYPE fixture_temperature gauge\nfixture_temperature 21.5\n# EOF\n"
            .into(),
    ))
    .await?;
    let hang = MetricsEndpoint::start(Exposition::Hang).await?;
    let garbage = MetricsEndpoint::start(Exposition::Text(
        "<html><body>502 Bad Gateway</body></html>\n".into(),
    ))
    .await?;
    let big: String = (0..50).map(|i| format!("big_series{{i=\"{i}\"}} 1\n")).collect();
    let big = MetricsEndpoint::start(Exposition::Text(big.into())).await?;
    let fixed = MetricsEndpoint::start(Exposition::Text("fixed_answer 42\n".into())).await?;

    let dns = DnsServer::start().await?;
    let pods = [
        ("good.fixture-pods", &good),
        ("hang.fixture-pods", &hang),
        ("garbage.fixture-pods", &garbage),
        ("big.fixture-pods", &big),
    ];
    for (pod, _) in &pods {
        dns.set_addresses(pod, &[IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    }
    let srv: Vec<(&str, u16)> =
        pods.iter().map(|(pod, endpoint)| (*pod, endpoint.addr().port())).collect();
    dns.set_services("_http._tcp.fixture-pods", &srv);

    let aggregator = aggregator(&[
        ("APP_METRICS_DNS_SERVER", dns.addr().to_string()),
        ("APP_METRICS_DISCOVERY", "fixture=_http._tcp.fixture-pods".to_owned()),
        ("APP_METRICS_TARGETS", format!("fixed=http://{}/metrics", fixed.addr())),
        ("APP_METRICS_SCRAPE_INTERVAL_SECONDS", "2".to_owned()),
        ("APP_METRICS_SCRAPE_TIMEOUT_SECONDS", "1".to_owned()),
        ("APP_METRICS_SAMPLE_LIMIT", "20".to_owned()),
    ])
    .await?;
    let all = aggregator.url("/metrics/all");
    let up = |instance: &std::net::SocketAddr, service: &str| {
        format!("up{{service=\"{service}\",instance=\"{instance}\"}}")
    };

    let deadline = Instant::now() + Duration::from_secs(30);
    let merged = loop {
        let merged = text(&all).await?;
        if merged.matches("\nup{").count() + usize::from(merged.starts_with("up{")) >= 5 {
            break merged;
        }
        anyhow::ensure!(Instant::now() < deadline, "the first round never finished:\n{merged}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(sample(&merged, &up(&good.addr(), "fixture")), Some(1.0), "{merged}");
    assert_eq!(sample(&merged, &up(&fixed.addr(), "fixed")), Some(1.0), "{merged}");
    for failing in [&hang, &garbage, &big] {
        assert_eq!(sample(&merged, &up(&failing.addr(), "fixture")), Some(0.0), "{merged}");
        let own_series = merged
            .lines()
            .filter(|l| !l.starts_with("up{") && !l.starts_with("scrape_"))
            .any(|l| l.contains(&format!("instance=\"{}\"", failing.addr())));
        assert!(!own_series, "a failed scrape exposes none of its target's series:\n{merged}");
    }
    let hang_duration = sample(
        &merged,
        &format!("scrape_duration_seconds{{service=\"fixture\",instance=\"{}\"}}", hang.addr()),
    )
    .expect("a duration for the hanging target");
    assert!(
        (0.9..1.9).contains(&hang_duration),
        "the hang is cut at the 1 s timeout: {hang_duration}"
    );
    let good_prefix = format!(
        "fixture_requests_total{{service=\"fixture\",instance=\"{}\",exported_service=\"own\",route=\"/a\"}} 3 ",
        good.addr()
    );
    assert!(merged.contains(&good_prefix), "{merged}");
    assert!(merged.contains("# TYPE fixture_requests_total counter\n"), "{merged}");
    assert_eq!(
        sample(
            &merged,
            &format!("scrape_samples_scraped{{service=\"fixture\",instance=\"{}\"}}", good.addr())
        ),
        Some(2.0)
    );
    assert!(
        merged.contains(&format!(
            "fixed_answer{{service=\"fixed\",instance=\"{}\"}} 42 ",
            fixed.addr()
        )),
        "{merged}"
    );

    let own = text(&aggregator.url("/metrics")).await?;
    for reason in ["timeout", "parse", "sample_limit"] {
        let failures = sample(
            &own,
            &format!("aggregator_scrape_failures_total{{service=\"fixture\",reason=\"{reason}\"}}"),
        );
        assert!(failures.is_some_and(|n| n >= 1.0), "{reason} counted:\n{own}");
    }

    // The good pod goes away: its series leave with it.
    dns.set_services("_http._tcp.fixture-pods", &srv[1..]);
    let gone = format!("instance=\"{}\"", good.addr());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let merged = text(&all).await?;
        if !merged.contains(&gone) {
            assert!(merged.contains(&up(&hang.addr(), "fixture")), "the others stay:\n{merged}");
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the vanished target's series stayed:\n{merged}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_survive_a_loki_outage_within_the_buffer_and_refusals_are_not_retried()
-> anyhow::Result<()> {
    let loki = LokiReceiver::start().await?;
    let aggregator = aggregator(&[
        ("LOKI_URL", loki.url()),
        ("LOKI_BUFFER_BYTES", "100000".to_owned()),
        ("LOKI_BATCH_WAIT_MILLISECONDS", "200".to_owned()),
        ("LOKI_MAX_BACKOFF_SECONDS", "2".to_owned()),
    ])
    .await?;
    let client = reqwest::Client::new();

    // Loki is down for 30 s while 150 kB of lines arrive: the first 100 kB wait for it.
    loki.go_down();
    let lines: Vec<String> =
        (0..1000).map(|i| format!("line {i:04} {}", "x".repeat(140))).collect();
    for chunk in lines.chunks(100) {
        push(&client, &aggregator, push_body(chunk.to_vec())).await?;
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    let own = text(&aggregator.url("/metrics")).await?;
    let dropped =
        sample(&own, "loki_entries_dropped_total{reason=\"buffer_full\"}").unwrap_or(0.0) as usize;
    assert!(
        dropped > 0 && dropped < 1000,
        "beyond the bound, entries are dropped and counted:\n{own}"
    );
    assert!(sample(&own, "loki_batch_retries_total").is_some_and(|n| n >= 1.0), "{own}");
    loki.come_back().await?;
    let kept = 1000 - dropped;
    let entries = loki.wait_for(Duration::from_secs(30), |entries| entries.len() >= kept).await?;
    let received: Vec<&str> = entries.iter().map(|e| e.line.as_str()).collect();
    let expected: Vec<&str> = lines[..kept].iter().map(String::as_str).collect();
    assert_eq!(received, expected, "everything within the bound arrives, in order");
    assert!(loki.protocol_errors().is_empty(), "{:?}", loki.protocol_errors());

    // 429 is retried until it goes through.
    loki.fail_next(429, 2);
    push(&client, &aggregator, push_body((0..10).map(|i| format!("after 429 #{i}")))).await?;
    loki.wait_for(Duration::from_secs(20), |entries| {
        entries.iter().filter(|e| e.line.starts_with("after 429")).count() == 10
    })
    .await?;

    // 400 is not: the batch is dropped and counted, and never sent again.
    loki.fail_next(400, 1);
    push(&client, &aggregator, push_body((0..5).map(|i| format!("refused #{i}")))).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while sample(
        &text(&aggregator.url("/metrics")).await?,
        "loki_entries_dropped_total{reason=\"rejected\"}",
    ) != Some(5.0)
    {
        anyhow::ensure!(Instant::now() < deadline, "the refused batch was never counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A stock client's JSON, gzip-compressed, with its own tenant.
    let json = serde_json::json!({"streams": [{"stream": {"service": "json-client"}, "values": [["1800000000000000000", "from json", {"trace_id": "t-1"}]]}]});
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gzip, json.to_string().as_bytes())?;
    let response = client
        .post(aggregator.url("/loki/api/v1/push"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .header("x-scope-orgid", "team-a")
        .body(gzip.finish()?)
        .send()
        .await?;
    assert_eq!(response.status(), 204);
    let entries = loki
        .wait_for(Duration::from_secs(20), |entries| entries.iter().any(|e| e.line == "from json"))
        .await?;
    let json_entry = entries.iter().find(|e| e.line == "from json").expect("waited for");
    assert_eq!(json_entry.tenant.as_deref(), Some("team-a"));
    assert_eq!(json_entry.metadata.get("trace_id").map(String::as_str), Some("t-1"));
    assert!(
        !entries.iter().any(|e| e.line.starts_with("refused")),
        "a refused batch is never retried"
    );
    assert_eq!(loki.requests().iter().filter(|&&s| s == 400).count(), 1);

    // A malformed push is refused with the reason, and nothing of it is kept.
    let response = client
        .post(aggregator.url("/loki/api/v1/push"))
        .header("content-type", "application/x-protobuf")
        .body("not snappy")
        .send()
        .await?;
    assert_eq!(response.status(), 400);
    assert!(response.text().await?.contains("Snappy"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_loki_url_records_are_counted_and_discarded() -> anyhow::Result<()> {
    let aggregator = aggregator(&[]).await?;
    push(&reqwest::Client::new(), &aggregator, push_body((0..7).map(|i| format!("discarded {i}"))))
        .await?;
    let own = text(&aggregator.url("/metrics")).await?;
    assert_eq!(sample(&own, "loki_entries_received_total"), Some(7.0), "{own}");
    assert_eq!(sample(&own, "loki_entries_dropped_total{reason=\"no_sink\"}"), Some(7.0), "{own}");
    assert_eq!(sample(&own, "loki_buffered_bytes"), Some(0.0), "nothing is kept:\n{own}");
    let notices = aggregator.output().matches("LOKI_URL is not set").count();
    assert_eq!(notices, 1, "one info line at start:\n{}", aggregator.output());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_never_waits_on_a_log_sink_that_hangs() -> anyhow::Result<()> {
    // A sink that accepts connections and never answers.
    let sink = std::net::TcpListener::bind("127.0.0.1:0")?;
    let scratch = tempfile::tempdir()?;
    let env = HashMap::from([
        ("STATIC_ROOT".to_owned(), scratch.path().display().to_string()),
        ("APP_REPOS_ROOT".to_owned(), scratch.path().join("repos").display().to_string()),
        ("APP_LOG_PUSH_URL".to_owned(), format!("http://{}", sink.local_addr()?)),
        ("APP_LOG_BUFFER_BYTES".to_owned(), "4096".to_owned()),
        ("APP_LOG_LEVEL".to_owned(), "debug".to_owned()),
    ]);
    let server = ServiceProcess::start(&workspace_binary("static_server"), &env).await?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let mut slowest = Duration::ZERO;
    for i in 0..200 {
        let started = Instant::now();
        let response = client.get(server.url(&format!("/avatars/missing-{i}.png"))).send().await?;
        assert_eq!(response.status(), 404);
        slowest = slowest.max(started.elapsed());
    }
    let own = text(&server.url("/metrics")).await?;
    let dropped = sample(&own, "log_records_dropped_total{reason=\"buffer_full\"}").unwrap_or(0.0);
    assert!(dropped > 0.0, "records beyond the 4 kB buffer are dropped, not waited for:\n{own}");
    let buffered = sample(&own, "log_buffer_bytes").unwrap_or(f64::MAX);
    assert!(buffered <= 4096.0, "the buffer stays within its bound: {buffered}");
    assert!(slowest < Duration::from_secs(1), "no request waited on logging: slowest {slowest:?}");
    drop(sink);
    Ok(())
}
