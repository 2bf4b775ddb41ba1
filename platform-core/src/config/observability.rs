//! The sections of `metrics_aggregator` (what it scrapes, where logs go) and of every service's
//! log shipping.

use std::net::SocketAddr;
use std::time::Duration;

use url::Url;

use super::SecretUrl;
use super::env::{
    EnvReader, parse_positive, parse_socket_addr, secret_url_with_schemes, url_with_schemes,
};

/// Where a service sends its log records besides standard output: `APP_LOG_PUSH_URL` (the
/// aggregator's base URL, which serves Loki's push API), `APP_INSTANCE` and
/// `APP_LOG_BUFFER_BYTES`.
///
/// | variable | default | meaning |
/// |---|---|---|
/// | `APP_LOG_PUSH_URL` | unset: standard output only | base URL of a Loki push API (`/loki/api/v1/push` is appended) |
/// | `APP_INSTANCE` | the host name | the `instance` label of the service's log streams |
/// | `APP_LOG_BUFFER_BYTES` | `8388608` | log lines held while the sink is slow or down; more are dropped and counted |
#[derive(Clone, Debug)]
pub struct LogPushConfig {
    /// The push endpoint, `/loki/api/v1/push` under the configured base URL.
    pub url: Url,
    /// The `instance` label.
    pub instance: String,
    /// The most bytes of log lines held before new ones are dropped.
    pub buffer_bytes: usize,
}

impl LogPushConfig {
    /// Reads the section: `None` inside when `APP_LOG_PUSH_URL` is unset.
    pub fn read(env: &mut EnvReader<'_>) -> Option<Option<Self>> {
        let url = env.optional("APP_LOG_PUSH_URL", url_with_schemes(&["http", "https"]));
        let instance = env.or_default("APP_INSTANCE", default_instance(), |raw| {
            let raw = raw.trim();
            if raw.is_empty() { Err("must not be empty".to_owned()) } else { Ok(raw.to_owned()) }
        });
        let buffer_bytes = env.or_default("APP_LOG_BUFFER_BYTES", 8 << 20, parse_positive);
        let (url, instance, buffer_bytes) = (url?, instance?, buffer_bytes?);
        Some(url.map(|base| Self { url: push_url(base), instance, buffer_bytes }))
    }
}

/// `/loki/api/v1/push` under `base`, unless `base` already is the push endpoint.
pub fn push_url(mut base: Url) -> Url {
    if !base.path().ends_with("/loki/api/v1/push") {
        let path = format!("{}/loki/api/v1/push", base.path().trim_end_matches('/'));
        base.set_path(&path);
    }
    base
}

/// The host name, as Kubernetes sets it to the pod's name.
fn default_instance() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// A set of scrape targets found in DNS, one entry of `APP_METRICS_DISCOVERY`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsTargets {
    /// The `service` label of the targets.
    pub service: String,
    /// What to look up.
    pub lookup: DnsLookup,
    /// The metrics path on each target (default `/metrics`).
    pub path: String,
}

/// How a [`DnsTargets`] entry finds its targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsLookup {
    /// SRV records (`_http._tcp.platform-app-pods`): each names a host and port.
    Srv(String),
    /// A and AAAA records of a name: each address with `port` is a target.
    Address {
        /// The name, such as a headless Service's.
        name: String,
        /// The metrics port.
        port: u16,
    },
}

/// A fixed scrape target, one entry of `APP_METRICS_TARGETS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticTarget {
    /// The `service` label.
    pub service: String,
    /// The metrics URL; its `host:port` is the `instance` label.
    pub url: Url,
}

/// What `metrics_aggregator` scrapes, and how.
///
/// | variable | default | meaning |
/// |---|---|---|
/// | `APP_METRICS_DISCOVERY` | none | `service=_port._tcp.name[/path]` (SRV) or `service=name:port[/path]` (A/AAAA), comma-separated |
/// | `APP_METRICS_TARGETS` | none | `service=http://host:port/path`, comma-separated |
/// | `APP_METRICS_DNS_SERVER` | the system's resolver | `ip:port` of the DNS server discovery asks |
/// | `APP_METRICS_SCRAPE_INTERVAL_SECONDS` | `15` | how often every target is scraped |
/// | `APP_METRICS_SCRAPE_TIMEOUT_SECONDS` | `10` | the longest one scrape may take (below the interval) |
/// | `APP_METRICS_SAMPLE_LIMIT` | `50000` | the most samples one target may expose |
/// | `APP_METRICS_BODY_LIMIT_BYTES` | `16777216` | the largest exposition one target may send |
#[derive(Clone, Debug)]
pub struct ScrapeConfig {
    /// Targets found in DNS.
    pub discovery: Vec<DnsTargets>,
    /// Fixed targets.
    pub targets: Vec<StaticTarget>,
    /// The DNS server to ask instead of the system's.
    pub dns_server: Option<SocketAddr>,
    /// The scrape interval.
    pub interval: Duration,
    /// The timeout of one scrape.
    pub timeout: Duration,
    /// The most samples per target.
    pub sample_limit: usize,
    /// The largest body per target.
    pub body_limit: usize,
}

impl ScrapeConfig {
    /// Reads the section, recording problems in `env`.
    pub fn read(env: &mut EnvReader<'_>) -> Option<Self> {
        let discovery = env.or_default("APP_METRICS_DISCOVERY", Vec::new(), parse_discovery);
        let targets = env.or_default("APP_METRICS_TARGETS", Vec::new(), parse_static_targets);
        let dns_server = env.optional("APP_METRICS_DNS_SERVER", parse_socket_addr);
        let interval: Option<u64> =
            env.or_default("APP_METRICS_SCRAPE_INTERVAL_SECONDS", 15, parse_positive);
        let timeout: Option<u64> =
            env.or_default("APP_METRICS_SCRAPE_TIMEOUT_SECONDS", 10, parse_positive);
        let sample_limit = env.or_default("APP_METRICS_SAMPLE_LIMIT", 50_000, parse_positive);
        let body_limit = env.or_default("APP_METRICS_BODY_LIMIT_BYTES", 16 << 20, parse_positive);
        let (interval, timeout) = (interval?, timeout?);
        if timeout >= interval {
            env.problem(
                "APP_METRICS_SCRAPE_TIMEOUT_SECONDS",
                format!(
                    "{timeout} must be below APP_METRICS_SCRAPE_INTERVAL_SECONDS ({interval}), \
                     so one slow target never delays the next round"
                ),
            );
            return None;
        }
        Some(Self {
            discovery: discovery?,
            targets: targets?,
            dns_server: dns_server?,
            interval: Duration::from_secs(interval),
            timeout: Duration::from_secs(timeout),
            sample_limit: sample_limit?,
            body_limit: body_limit?,
        })
    }
}

fn entries(raw: &str) -> impl Iterator<Item = Result<(&str, &str), String>> {
    raw.split(',').map(str::trim).filter(|entry| !entry.is_empty()).map(|entry| {
        let (service, target) = entry
            .split_once('=')
            .ok_or_else(|| format!("entry {entry:?} must be service=target"))?;
        let service = service.trim();
        if service.is_empty()
            || !service.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "entry {entry:?}: the service name must be letters, digits, - or _"
            ));
        }
        Ok((service, target.trim()))
    })
}

fn parse_discovery(raw: &str) -> Result<Vec<DnsTargets>, String> {
    entries(raw)
        .map(|entry| {
            let (service, target) = entry?;
            let (name, path) = match target.find('/') {
                Some(slash) => (&target[..slash], target[slash..].to_owned()),
                None => (target, "/metrics".to_owned()),
            };
            let lookup = if name.starts_with('_') {
                DnsLookup::Srv(name.to_owned())
            } else {
                let (host, port) = name.rsplit_once(':').ok_or_else(|| {
                    format!("entry {service}={target}: an address lookup needs name:port (or an SRV name starting with _)")
                })?;
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| format!("entry {service}={target}: {port:?} is not a port"))?;
                DnsLookup::Address { name: host.to_owned(), port }
            };
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(format!("entry {service}={target}: not a DNS name"));
            }
            Ok(DnsTargets { service: service.to_owned(), lookup, path })
        })
        .collect()
}

fn parse_static_targets(raw: &str) -> Result<Vec<StaticTarget>, String> {
    let parse_url = url_with_schemes(&["http", "https"]);
    entries(raw)
        .map(|entry| {
            let (service, target) = entry?;
            let mut url = parse_url(target).map_err(|e| format!("entry for {service}: {e}"))?;
            if url.path() == "/" {
                url.set_path("/metrics");
            }
            Ok(StaticTarget { service: service.to_owned(), url })
        })
        .collect()
}

/// Where `metrics_aggregator` forwards the log records it receives.
///
/// | variable | default | meaning |
/// |---|---|---|
/// | `LOKI_URL` | unset: records are accepted, counted and discarded | Loki's base URL (may carry basic-auth credentials) |
/// | `LOKI_TENANT_ID` | none | `X-Scope-OrgID` of records that arrive without one |
/// | `LOKI_BUFFER_BYTES` | `67108864` | records held while Loki is slow or down; more are dropped and counted |
/// | `LOKI_BATCH_BYTES` | `1048576` | a batch is sent when it reaches this size… |
/// | `LOKI_BATCH_WAIT_MILLISECONDS` | `1000` | …or this long after its first record |
/// | `LOKI_MAX_BACKOFF_SECONDS` | `10` | the longest wait between retries of a batch |
#[derive(Clone, Debug)]
pub struct LokiConfig {
    /// Loki's push endpoint; `None` discards records.
    pub url: Option<SecretUrl>,
    /// The default tenant.
    pub tenant: Option<String>,
    /// The buffer bound, in bytes of lines.
    pub buffer_bytes: usize,
    /// The size that sends a batch.
    pub batch_bytes: usize,
    /// The age that sends a batch.
    pub batch_wait: Duration,
    /// The retry backoff's cap.
    pub max_backoff: Duration,
}

impl LokiConfig {
    /// Reads the section, recording problems in `env`.
    pub fn read(env: &mut EnvReader<'_>) -> Option<Self> {
        let url = env.optional("LOKI_URL", secret_url_with_schemes(&["http", "https"]));
        let tenant = env.optional("LOKI_TENANT_ID", |raw| {
            let raw = raw.trim();
            if raw.is_empty() || raw.contains(['|', '/']) || !raw.is_ascii() {
                Err("must be a non-empty ASCII tenant name without | or /".to_owned())
            } else {
                Ok(raw.to_owned())
            }
        });
        let buffer_bytes = env.or_default("LOKI_BUFFER_BYTES", 64 << 20, parse_positive);
        let batch_bytes = env.or_default("LOKI_BATCH_BYTES", 1 << 20, parse_positive);
        let batch_wait: Option<u64> =
            env.or_default("LOKI_BATCH_WAIT_MILLISECONDS", 1000, parse_positive);
        let max_backoff: Option<u64> =
            env.or_default("LOKI_MAX_BACKOFF_SECONDS", 10, parse_positive);
        Some(Self {
            url: url?.map(|url| SecretUrl::new(push_url(url.expose().clone()))),
            tenant: tenant?,
            buffer_bytes: buffer_bytes?,
            batch_bytes: batch_bytes?,
            batch_wait: Duration::from_millis(batch_wait?),
            max_backoff: Duration::from_secs(max_backoff?),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn read<T>(
        pairs: &[(&str, &str)],
        section: impl FnOnce(&mut EnvReader<'_>) -> Option<T>,
    ) -> Result<T, String> {
        let vars: HashMap<String, String> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let mut env = EnvReader::new(&vars);
        let value = section(&mut env);
        env.finish((value,)).map(|(v,)| v).map_err(|e| e.to_string())
    }

    #[test]
    fn discovery_reads_srv_and_address_entries_with_paths() {
        let config = read(
            &[(
                "APP_METRICS_DISCOVERY",
                "app=_http._tcp.platform-app-pods, gitserver=platform-gitserver-pods:3001/internal/metrics",
            )],
            ScrapeConfig::read,
        )
        .expect("valid");
        assert_eq!(
            config.discovery,
            [
                DnsTargets {
                    service: "app".into(),
                    lookup: DnsLookup::Srv("_http._tcp.platform-app-pods".into()),
                    path: "/metrics".into()
                },
                DnsTargets {
                    service: "gitserver".into(),
                    lookup: DnsLookup::Address {
                        name: "platform-gitserver-pods".into(),
                        port: 3001
                    },
                    path: "/internal/metrics".into()
                },
            ]
        );
        assert_eq!(config.interval, Duration::from_secs(15));
        assert_eq!(config.timeout, Duration::from_secs(10));
    }

    #[test]
    fn bad_scrape_settings_name_the_variable() {
        for (pairs, expected) in [
            (
                &[("APP_METRICS_DISCOVERY", "app")][..],
                "APP_METRICS_DISCOVERY: entry \"app\" must be service=target",
            ),
            (&[("APP_METRICS_DISCOVERY", "app=pods")][..], "needs name:port"),
            (
                &[("APP_METRICS_TARGETS", "app=ftp://x")][..],
                "APP_METRICS_TARGETS: entry for app: URL scheme",
            ),
            (
                &[
                    ("APP_METRICS_SCRAPE_INTERVAL_SECONDS", "5"),
                    ("APP_METRICS_SCRAPE_TIMEOUT_SECONDS", "5"),
                ][..],
                "APP_METRICS_SCRAPE_TIMEOUT_SECONDS: 5 must be below",
            ),
        ] {
            let error = read(pairs, ScrapeConfig::read).expect_err(expected);
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn static_targets_default_to_the_metrics_path_and_loki_urls_to_the_push_path() {
        let config =
            read(&[("APP_METRICS_TARGETS", "app=http://127.0.0.1:3000")], ScrapeConfig::read)
                .expect("valid");
        assert_eq!(config.targets[0].url.as_str(), "http://127.0.0.1:3000/metrics");
        let loki = read(&[("LOKI_URL", "https://user:secret@logs.example/")], LokiConfig::read)
            .expect("valid");
        assert_eq!(loki.url.expect("set").expose().path(), "/loki/api/v1/push");
        let push = read(&[("APP_LOG_PUSH_URL", "http://aggregator:9090")], LogPushConfig::read)
            .expect("valid")
            .expect("set");
        assert_eq!(push.url.as_str(), "http://aggregator:9090/loki/api/v1/push");
        assert!(read(&[], LogPushConfig::read).expect("valid").is_none());
    }
}
