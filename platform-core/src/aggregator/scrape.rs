//! Finding the targets, scraping them all at once, and merging what they said.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use url::Url;

use super::AggregatorError;
use super::exposition::{self, Exposition, Kind, TargetLabels};
use crate::config::{DnsLookup, DnsTargets, ScrapeConfig};
use crate::telemetry::Metrics;

/// One endpoint to scrape.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Target {
    pub(crate) service: String,
    /// `host:port`, the `instance` label.
    pub(crate) instance: String,
    pub(crate) url: Url,
}

struct Outcome {
    target: Target,
    duration: Duration,
    result: Result<Exposition, ScrapeFailure>,
}

#[derive(Debug, thiserror::Error)]
enum ScrapeFailure {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Network(String),
    #[error("answered {0}")]
    Status(u16),
    #[error("body over {0} bytes")]
    BodyLimit(usize),
    #[error("body is not UTF-8")]
    Encoding,
    #[error(transparent)]
    Exposition(#[from] exposition::ExpositionError),
}

impl ScrapeFailure {
    fn reason(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Network(_) => "network",
            Self::Status(_) => "status",
            Self::BodyLimit(_) => "body_limit",
            Self::Encoding => "parse",
            Self::Exposition(exposition::ExpositionError::SampleLimit { .. }) => "sample_limit",
            Self::Exposition(_) => "parse",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    service: String,
    reason: &'static str,
}

#[derive(Clone)]
struct ScrapeMetrics {
    targets: Family<ServiceLabels, Gauge>,
    failures: Family<FailureLabels, Counter>,
    cycle_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    series: Gauge,
}

impl ScrapeMetrics {
    fn register(metrics: &Metrics) -> Self {
        let this = Self {
            targets: Family::default(),
            failures: Family::default(),
            cycle_seconds: Gauge::default(),
            series: Gauge::default(),
        };
        metrics.register(
            "aggregator_targets",
            "Scrape targets found, by service",
            this.targets.clone(),
        );
        metrics.register(
            "aggregator_scrape_failures",
            "Scrapes that failed, by service and reason",
            this.failures.clone(),
        );
        metrics.register(
            "aggregator_scrape_cycle_seconds",
            "How long the last round of scrapes took, from discovery to the merged exposition",
            this.cycle_seconds.clone(),
        );
        metrics.register(
            "aggregator_series",
            "Samples in the merged exposition",
            this.series.clone(),
        );
        this
    }
}

/// Scrapes the configured targets every interval and keeps the merged exposition.
pub(crate) struct Scraper {
    config: ScrapeConfig,
    client: reqwest::Client,
    resolver: TokioResolver,
    /// The targets each discovery entry found last, kept when a lookup fails.
    known: Mutex<HashMap<usize, Vec<Target>>>,
    exposition: RwLock<Bytes>,
    metrics: ScrapeMetrics,
}

impl Scraper {
    pub(crate) fn new(config: &ScrapeConfig, metrics: &Metrics) -> Result<Self, AggregatorError> {
        let resolver = match config.dns_server {
            Some(server) => {
                let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
                for connection in &mut name_server.connections {
                    connection.port = server.port();
                }
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![name_server]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio()
                .map_err(|e| AggregatorError::Resolver(e.to_string()))?,
        };
        let mut resolver = resolver;
        // Pods come and go: an answer is trusted for a scrape interval at most.
        resolver.options_mut().positive_max_ttl = Some(config.interval);
        resolver.options_mut().negative_max_ttl = Some(config.interval);
        let resolver = resolver.build().map_err(|e| AggregatorError::Resolver(e.to_string()))?;
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .pool_max_idle_per_host(1)
            .build()
            .map_err(|e| AggregatorError::Client(e.to_string()))?;
        Ok(Self {
            config: config.clone(),
            client,
            resolver,
            known: Mutex::new(HashMap::new()),
            exposition: RwLock::new(Bytes::new()),
            metrics: ScrapeMetrics::register(metrics),
        })
    }

    pub(crate) fn interval(&self) -> Duration {
        self.config.interval
    }

    /// The merged exposition of the last round.
    pub(crate) fn exposition(&self) -> Bytes {
        self.exposition.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// One round: find the targets, scrape them concurrently, publish the merged result.
    pub(crate) async fn cycle(self: &Arc<Self>) {
        let started = Instant::now();
        let targets = self.discover().await;
        let timestamp_ms =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let mut tasks = tokio::task::JoinSet::new();
        for target in targets {
            let this = self.clone();
            tasks.spawn(async move { this.scrape(target, timestamp_ms).await });
        }
        let mut outcomes = Vec::with_capacity(tasks.len());
        while let Some(joined) = tasks.join_next().await {
            if let Ok(outcome) = joined {
                outcomes.push(outcome);
            }
        }
        outcomes.sort_by(|a, b| a.target.cmp(&b.target));
        let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
        for outcome in &outcomes {
            *counts.entry(outcome.target.service.as_str()).or_default() += 1;
            if let Err(failure) = &outcome.result {
                self.metrics
                    .failures
                    .get_or_create(&FailureLabels {
                        service: outcome.target.service.clone(),
                        reason: failure.reason(),
                    })
                    .inc();
                tracing::debug!(
                    service = %outcome.target.service,
                    instance = %outcome.target.instance,
                    error = %failure,
                    "scrape failed"
                );
            }
        }
        self.metrics.targets.clear();
        for (service, count) in counts {
            self.metrics
                .targets
                .get_or_create(&ServiceLabels { service: service.to_owned() })
                .set(count);
        }
        let (merged, series) = merge(&outcomes, timestamp_ms);
        self.metrics.series.set(series as i64);
        *self.exposition.write().unwrap_or_else(PoisonError::into_inner) = Bytes::from(merged);
        self.metrics.cycle_seconds.set(started.elapsed().as_secs_f64());
    }

    async fn discover(&self) -> Vec<Target> {
        let mut found: BTreeSet<Target> = self
            .config
            .targets
            .iter()
            .map(|target| Target {
                service: target.service.clone(),
                instance: instance_of(&target.url),
                url: target.url.clone(),
            })
            .collect();
        let lookups = self
            .config
            .discovery
            .iter()
            .enumerate()
            .map(|(index, entry)| async move { (index, entry, self.lookup(entry).await) });
        for (index, entry, result) in futures_util::future::join_all(lookups).await {
            let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
            match result {
                Ok(targets) => {
                    known.insert(index, targets);
                }
                Err(error) => tracing::warn!(
                    service = %entry.service,
                    lookup = ?entry.lookup,
                    %error,
                    "target discovery failed; keeping the targets found before"
                ),
            }
            found.extend(known.get(&index).into_iter().flatten().cloned());
        }
        found.into_iter().collect()
    }

    async fn lookup(&self, entry: &DnsTargets) -> Result<Vec<Target>, String> {
        let mut addresses: Vec<SocketAddr> = Vec::new();
        match &entry.lookup {
            DnsLookup::Address { name, port } => match self.resolver.lookup_ip(name.as_str()).await
            {
                Ok(ips) => addresses.extend(ips.iter().map(|ip| SocketAddr::new(ip, *port))),
                Err(e) if e.is_no_records_found() => {}
                Err(e) => return Err(e.to_string()),
            },
            DnsLookup::Srv(name) => {
                let records = match self.resolver.srv_lookup(name.as_str()).await {
                    Ok(lookup) => lookup
                        .answers()
                        .iter()
                        .filter_map(|record| match &record.data {
                            RData::SRV(srv) => Some((srv.target.clone(), srv.port)),
                            _ => None,
                        })
                        .collect::<Vec<_>>(),
                    Err(e) if e.is_no_records_found() => Vec::new(),
                    Err(e) => return Err(e.to_string()),
                };
                for (host, port) in records {
                    match self.resolver.lookup_ip(host.clone()).await {
                        Ok(ips) => addresses.extend(ips.iter().map(|ip| SocketAddr::new(ip, port))),
                        Err(e) if e.is_no_records_found() => {}
                        Err(e) => return Err(format!("{host}: {e}")),
                    }
                }
            }
        }
        addresses.sort_unstable();
        addresses.dedup();
        Ok(addresses
            .into_iter()
            .filter_map(|address| {
                let url = Url::parse(&format!("http://{address}{}", entry.path)).ok()?;
                Some(Target { service: entry.service.clone(), instance: address.to_string(), url })
            })
            .collect())
    }

    async fn scrape(&self, target: Target, timestamp_ms: i64) -> Outcome {
        let started = Instant::now();
        let result = tokio::time::timeout(self.config.timeout, self.fetch(&target, timestamp_ms))
            .await
            .unwrap_or(Err(ScrapeFailure::Timeout(self.config.timeout)));
        Outcome { target, duration: started.elapsed(), result }
    }

    async fn fetch(&self, target: &Target, timestamp_ms: i64) -> Result<Exposition, ScrapeFailure> {
        let network = |e: reqwest::Error| {
            if e.is_timeout() {
                ScrapeFailure::Timeout(self.config.timeout)
            } else {
                ScrapeFailure::Network(crate::service::error_chain(&e))
            }
        };
        let mut response = self
            .client
            .get(target.url.clone())
            .header(
                "accept",
                "application/openmetrics-text;version=1.0.0;q=0.9,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            )
            .send()
            .await
            .map_err(network)?;
        if !response.status().is_success() {
            return Err(ScrapeFailure::Status(response.status().as_u16()));
        }
        let open_metrics_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/openmetrics-text"));
        let limit = self.config.body_limit;
        if response.content_length().is_some_and(|length| length > limit as u64) {
            return Err(ScrapeFailure::BodyLimit(limit));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(network)? {
            if body.len() + chunk.len() > limit {
                return Err(ScrapeFailure::BodyLimit(limit));
            }
            body.extend_from_slice(&chunk);
        }
        let text = std::str::from_utf8(&body).map_err(|_| ScrapeFailure::Encoding)?;
        let open_metrics = open_metrics_type || text.trim_end().ends_with("# EOF");
        let labels = TargetLabels::new(&target.service, &target.instance, timestamp_ms);
        Ok(exposition::rewrite(text, open_metrics, &labels, self.config.sample_limit)?)
    }
}

fn instance_of(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port_or_known_default() {
        Some(port) if host.contains(':') => format!("[{host}]:{port}"),
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// Writes one target's value of a series the aggregator makes.
type SyntheticValue = fn(&Outcome) -> String;

struct Merged<'a> {
    kind: Kind,
    help: Option<&'a str>,
    chunks: Vec<&'a str>,
}

/// Writes every target's families, each family once with all targets' samples, families by
/// name and targets in order, then the per-target `up`, `scrape_duration_seconds` and
/// `scrape_samples_scraped`. Returns the text and its number of samples.
fn merge(outcomes: &[Outcome], timestamp_ms: i64) -> (String, usize) {
    let mut families: BTreeMap<&str, Merged<'_>> = BTreeMap::new();
    let mut size = 0;
    let mut series = 0;
    for outcome in outcomes {
        let Ok(exposition) = &outcome.result else { continue };
        series += exposition.samples;
        for family in &exposition.families {
            if matches!(
                family.name.as_str(),
                "up" | "scrape_duration_seconds" | "scrape_samples_scraped"
            ) {
                continue;
            }
            let merged = families.entry(family.name.as_str()).or_insert_with(|| Merged {
                kind: family.kind,
                help: family.help.as_deref(),
                chunks: Vec::new(),
            });
            // A family must have one type; a target that disagrees with the first one seen
            // loses that family rather than making the whole exposition unreadable.
            if merged.kind == family.kind {
                merged.help = merged.help.or(family.help.as_deref());
                merged.chunks.push(&family.lines);
                size += family.lines.len();
            }
        }
    }
    let mut out = String::with_capacity(size + families.len() * 64 + outcomes.len() * 256);
    // Families without samples keep their HELP and TYPE lines, as each target wrote them: they
    // say what a service can report before it has happened.
    for (name, family) in &families {
        if let Some(help) = family.help {
            let _ = writeln!(out, "# HELP {name} {help}");
        }
        let _ = writeln!(out, "# TYPE {name} {}", family.kind.as_str());
        for chunk in &family.chunks {
            out.push_str(chunk);
        }
    }
    let synthetic: [(&str, &str, SyntheticValue); 3] = [
        ("up", "1 if the last scrape of the target succeeded, 0 if not", |o| {
            if o.result.is_ok() { "1".to_owned() } else { "0".to_owned() }
        }),
        ("scrape_duration_seconds", "How long the last scrape of the target took", |o| {
            format!("{}", o.duration.as_secs_f64())
        }),
        (
            "scrape_samples_scraped",
            "Samples the target exposed in its last successful scrape",
            |o| o.result.as_ref().map_or(0, |e| e.samples).to_string(),
        ),
    ];
    for (name, help, value) in synthetic {
        if outcomes.is_empty() {
            break;
        }
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for outcome in outcomes {
            let labels =
                TargetLabels::new(&outcome.target.service, &outcome.target.instance, timestamp_ms);
            let _ =
                writeln!(out, "{name}{{{}}} {} {timestamp_ms}", labels.prefix(), value(outcome));
            series += 1;
        }
    }
    (out, series)
}
