//! The whole deployment seen through `metrics_aggregator`: a real Prometheus that scrapes only
//! the aggregator sees every service's series, and every service's log records reach a Loki
//! push receiver through it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use common::{Deployment, GIT_HOOK};
use platform_test_support::{
    CaptureTls, DnsServer, LokiReceiver, Prometheus, ServiceProcess, SmtpCapture, free_port,
    workspace_binary,
};

const SERVICES: [&str; 6] =
    ["app", "gitserver", "email_worker", "git_hook", "static_server", "metrics_aggregator"];

/// The headless Service's DNS name: Kubernetes names have no underscores.
fn pods_name(service: &str) -> String {
    format!("{}-pods", service.replace('_', "-"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_and_loki_see_every_service_through_the_aggregator() -> anyhow::Result<()> {
    let deployment = Deployment::new().await?;
    let smtp = SmtpCapture::start(CaptureTls::StartTls)?;
    let loki = LokiReceiver::start().await?;
    let dns = DnsServer::start().await?;
    let aggregator_port = free_port();
    let push_url = format!("http://127.0.0.1:{aggregator_port}");
    let discovery: Vec<String> = SERVICES
        .iter()
        .map(|service| format!("{service}=_http._tcp.{}", pods_name(service)))
        .collect();

    let with = |instance: &str, extra: &[(String, String)]| -> Vec<(String, String)> {
        let mut env = vec![
            ("APP_LOG_PUSH_URL".to_owned(), push_url.clone()),
            ("APP_INSTANCE".to_owned(), instance.to_owned()),
            // Request spans (and their ids) reach the log at debug.
            ("APP_LOG_LEVEL".to_owned(), "info,tower_http=debug".to_owned()),
        ];
        env.extend(extra.iter().cloned());
        env
    };
    let start = |binary: std::path::PathBuf, env: Vec<(String, String)>| {
        let deployment = &deployment;
        async move {
            let env: Vec<(&str, String)> =
                env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            deployment.start(&binary, &env).await
        }
    };
    let pair = |k: &str, v: String| (k.to_owned(), v);
    let aggregator = start(
        workspace_binary("metrics_aggregator"),
        with(
            "metrics_aggregator-0",
            &[
                pair("APP_HTTP_ADDR", format!("127.0.0.1:{aggregator_port}")),
                pair("LOKI_URL", loki.url()),
                pair("LOKI_TENANT_ID", "platform".to_owned()),
                pair("APP_METRICS_DNS_SERVER", dns.addr().to_string()),
                pair("APP_METRICS_DISCOVERY", discovery.join(",")),
                pair("APP_METRICS_SCRAPE_INTERVAL_SECONDS", "2".to_owned()),
                pair("APP_METRICS_SCRAPE_TIMEOUT_SECONDS", "1".to_owned()),
            ],
        ),
    )
    .await?;
    let static_dir = deployment.scratch.join("static");
    std::fs::create_dir_all(&static_dir)?;
    let static_root = ("STATIC_ROOT".to_owned(), static_dir.display().to_string());
    let mut processes: Vec<(&str, &str, ServiceProcess)> = Vec::new();
    for (service, instance, binary, extra) in [
        ("app", "app-0", workspace_binary("app"), vec![]),
        ("app", "app-1", workspace_binary("app"), vec![]),
        ("gitserver", "gitserver-0", workspace_binary("gitserver"), vec![]),
        ("email_worker", "email_worker-0", workspace_binary("email_worker"), smtp.env()),
        ("git_hook", "git_hook-0", Path::new(GIT_HOOK).to_owned(), vec![]),
        ("static_server", "static_server-0", workspace_binary("static_server"), vec![static_root]),
    ] {
        let process = start(binary, with(instance, &extra)).await?;
        processes.push((service, instance, process));
    }

    // The cluster DNS of headless Services: one SRV record per pod, each pod's name resolving
    // to its address.
    let loopback = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
    for service in SERVICES {
        let mut pods: Vec<(String, u16)> = processes
            .iter()
            .filter(|(s, _, _)| *s == service)
            .map(|(_, instance, process)| {
                (
                    format!("{}.{}", instance.replace('_', "-"), pods_name(service)),
                    process.addr().port(),
                )
            })
            .collect();
        if service == "metrics_aggregator" {
            pods.push((format!("metrics-aggregator-0.{}", pods_name(service)), aggregator_port));
        }
        for (pod, _) in &pods {
            dns.set_addresses(pod, &loopback);
        }
        let records: Vec<(&str, u16)> =
            pods.iter().map(|(pod, port)| (pod.as_str(), *port)).collect();
        dns.set_services(&format!("_http._tcp.{}", pods_name(service)), &records);
    }

    let prometheus = Prometheus::start(&format!(
        "global:\n  scrape_interval: 2s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: platform\n    \
         honor_labels: true\n    metrics_path: /metrics/all\n    static_configs:\n      - targets: ['127.0.0.1:{aggregator_port}']\n"
    ))
    .await?;
    let expected: BTreeSet<(String, String)> = processes
        .iter()
        .map(|(service, _, process)| ((*service).to_owned(), process.addr().to_string()))
        .chain([("metrics_aggregator".to_owned(), format!("127.0.0.1:{aggregator_port}"))])
        .collect();
    let seen = |result: &[serde_json::Value]| -> BTreeSet<(String, String)> {
        result
            .iter()
            .map(|series| {
                let label =
                    |name: &str| series["metric"][name].as_str().unwrap_or_default().to_owned();
                (label("service"), label("instance"))
            })
            .collect()
    };
    let info = prometheus
        .wait_for("service_info", Duration::from_secs(90), |result| seen(result) == expected)
        .await?;
    for series in &info {
        let metric = &series["metric"];
        assert_eq!(metric["job"], "platform");
        // The services' own `service` label, renamed as Prometheus renames it.
        assert_eq!(metric["exported_service"], metric["service"], "{metric}");
    }
    let up = prometheus.query("up{job=\"platform\", service!=\"\"} == 1").await?;
    assert_eq!(seen(&up), expected, "every target is up");
    let app_requests =
        prometheus.query("sum by (instance) (http_requests_total{service=\"app\"})").await?;
    assert_eq!(app_requests.len(), 2, "both app replicas' request counters: {app_requests:?}");

    // Logs: a request's record carries its id as structured metadata, not as a label.
    let static_server =
        &processes.iter().find(|(s, _, _)| *s == "static_server").expect("started").2;
    let response = reqwest::get(static_server.url("/avatars/missing.png")).await?;
    let request_id = response.headers()["x-request-id"].to_str()?.to_owned();
    let entries = loki
        .wait_for(Duration::from_secs(60), |entries| {
            let instances: BTreeSet<&str> = entries
                .iter()
                .filter_map(|e| e.labels.get("instance").map(String::as_str))
                .collect();
            let all = processes.iter().all(|(_, instance, _)| instances.contains(instance))
                && instances.contains("metrics_aggregator-0");
            all && entries.iter().any(|e| e.metadata.get("request_id") == Some(&request_id))
        })
        .await?;
    assert!(loki.protocol_errors().is_empty(), "{:?}", loki.protocol_errors());
    let mut by_instance: BTreeMap<&str, usize> = BTreeMap::new();
    for entry in &entries {
        let names: Vec<&str> = entry.labels.keys().map(String::as_str).collect();
        assert_eq!(names, ["instance", "level", "service"], "labels of {entry:?}");
        assert!(
            ["trace", "debug", "info", "warn", "error"].contains(&entry.labels["level"].as_str())
        );
        assert_eq!(entry.tenant.as_deref(), Some("platform"));
        let line: serde_json::Value = serde_json::from_str(&entry.line)?;
        assert_eq!(
            line["level"].as_str().map(str::to_ascii_lowercase).as_deref(),
            Some(entry.labels["level"].as_str())
        );
        *by_instance.entry(entry.labels["instance"].as_str()).or_default() += 1;
    }
    for (service, instance, process) in &processes {
        let listening = entries
            .iter()
            .filter(|e| e.labels["instance"] == *instance && e.labels["service"] == *service)
            .any(|e| e.line.contains("\"listening\""));
        assert!(
            listening,
            "{instance}'s start-up line reached Loki; output:\n{}",
            process.output()
        );
    }
    let traced = entries
        .iter()
        .find(|e| e.metadata.get("request_id") == Some(&request_id))
        .expect("waited for");
    assert_eq!(traced.labels["service"], "static_server");
    assert!(traced.line.contains(&request_id));
    drop(aggregator);
    Ok(())
}
