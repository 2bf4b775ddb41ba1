//! Receiving log records on Loki's push API and forwarding them to Loki in batches.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use url::Url;

use crate::config::LokiConfig;
use crate::loki::{self, Entry, PushError, PushRequest, Stream};
use crate::queue::Backoff;
use crate::telemetry::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: Cow<'static, str>,
}

#[derive(Clone)]
struct LogMetrics {
    received: Counter,
    sent: Counter,
    sent_bytes: Counter,
    dropped: Family<ReasonLabels, Counter>,
    dropped_bytes: Family<ReasonLabels, Counter>,
    retries: Counter,
    duration: Histogram,
    responses: Family<StatusLabels, Counter>,
    buffered: Gauge,
}

impl LogMetrics {
    fn register(metrics: &Metrics) -> Self {
        let this = Self {
            received: Counter::default(),
            sent: Counter::default(),
            sent_bytes: Counter::default(),
            dropped: Family::default(),
            dropped_bytes: Family::default(),
            retries: Counter::default(),
            duration: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            responses: Family::default(),
            buffered: Gauge::default(),
        };
        metrics.register(
            "loki_entries_received",
            "Log entries received on the push API",
            this.received.clone(),
        );
        metrics.register("loki_entries_sent", "Log entries Loki accepted", this.sent.clone());
        metrics.register(
            "loki_bytes_sent",
            "Bytes of log lines Loki accepted",
            this.sent_bytes.clone(),
        );
        metrics.register(
            "loki_entries_dropped",
            "Log entries not forwarded: no_sink (LOKI_URL unset), buffer_full, rejected (a 4xx)",
            this.dropped.clone(),
        );
        metrics.register(
            "loki_bytes_dropped",
            "Bytes of log lines not forwarded, by the same reasons",
            this.dropped_bytes.clone(),
        );
        metrics.register("loki_batch_retries", "Pushes to Loki retried", this.retries.clone());
        metrics.register(
            "loki_request_duration_seconds",
            "How long pushes to Loki took",
            this.duration.clone(),
        );
        metrics.register(
            "loki_requests",
            "Pushes to Loki, by status (network for no answer)",
            this.responses.clone(),
        );
        for reason in ["no_sink", "buffer_full", "rejected"] {
            let _ = this.dropped.get_or_create(&ReasonLabels { reason });
            let _ = this.dropped_bytes.get_or_create(&ReasonLabels { reason });
        }
        metrics.register(
            "loki_buffered_bytes",
            "Bytes of log lines waiting for Loki",
            this.buffered.clone(),
        );
        this
    }

    fn drop_entries(&self, reason: &'static str, entries: u64, bytes: u64) {
        self.dropped.get_or_create(&ReasonLabels { reason }).inc_by(entries);
        self.dropped_bytes.get_or_create(&ReasonLabels { reason }).inc_by(bytes);
    }
}

/// Entries of one tenant not yet sealed into a batch, by stream.
struct Open {
    streams: HashMap<String, Vec<Entry>>,
    /// Streams in the order they first appeared, so a batch keeps arrival order.
    order: Vec<String>,
    bytes: usize,
    entries: usize,
    since: Instant,
}

/// A batch ready to send.
struct Batch {
    tenant: Option<String>,
    body: Vec<u8>,
    bytes: usize,
    entries: usize,
}

#[derive(Default)]
struct Pending {
    open: BTreeMap<Option<String>, Open>,
    sealed: VecDeque<Batch>,
    /// Bytes of lines held, open, sealed and in flight.
    bytes: usize,
}

/// Where the records go.
struct Sink {
    url: Url,
    credentials: Option<(String, String)>,
}

/// Why a push was refused: the request is answered 400 with it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IngestError {
    #[error(transparent)]
    Body(#[from] PushError),
}

/// Takes pushes from services and any Loki client, and sends them on to Loki.
pub(crate) struct LogForwarder {
    config: LokiConfig,
    sink: Option<Sink>,
    client: reqwest::Client,
    pending: Mutex<Pending>,
    wake: tokio::sync::Notify,
    metrics: LogMetrics,
}

impl LogForwarder {
    pub(crate) fn new(config: &LokiConfig, metrics: &Metrics) -> Self {
        let sink = config.url.as_ref().map(|url| {
            let mut url = url.expose().clone();
            let credentials = (!url.username().is_empty()).then(|| {
                let user = percent_decode(url.username());
                let password = url.password().map(percent_decode).unwrap_or_default();
                (user, password)
            });
            // The credentials go in a header, so no error message can ever repeat them.
            let _ = url.set_username("");
            let _ = url.set_password(None);
            Sink { url, credentials }
        });
        Self {
            config: config.clone(),
            sink,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            pending: Mutex::new(Pending::default()),
            wake: tokio::sync::Notify::new(),
            metrics: LogMetrics::register(metrics),
        }
    }

    /// Whether records are forwarded at all (`LOKI_URL` is set).
    pub(crate) fn forwards(&self) -> bool {
        self.sink.is_some()
    }

    /// Takes one push body. Records beyond the buffer bound are dropped and counted; a body that
    /// is not a valid push is refused as a whole.
    pub(crate) fn ingest(
        &self,
        body: &[u8],
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        tenant: Option<&str>,
    ) -> Result<(), IngestError> {
        let push = loki::decode(body, content_type, content_encoding)?;
        let mut streams = Vec::with_capacity(push.streams.len());
        for stream in push.streams {
            // Canonical labels: the same stream from two clients is one stream.
            let labels = loki::parse_labels(&stream.labels)?;
            let labels = loki::format_labels(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            streams.push((labels, stream.entries));
        }
        let entries: usize = streams.iter().map(|(_, e)| e.len()).sum();
        self.metrics.received.inc_by(entries as u64);
        if self.sink.is_none() {
            let bytes: usize = streams.iter().flat_map(|(_, e)| e).map(Entry::size).sum();
            self.metrics.drop_entries("no_sink", entries as u64, bytes as u64);
            return Ok(());
        }
        let tenant = tenant.map(str::to_owned).or_else(|| self.config.tenant.clone());
        let (mut dropped, mut dropped_bytes) = (0u64, 0u64);
        let mut wake = false;
        {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            let pending = &mut *pending;
            for (labels, stream_entries) in streams {
                for entry in stream_entries {
                    let size = entry.size();
                    if pending.bytes + size > self.config.buffer_bytes {
                        dropped += 1;
                        dropped_bytes += size as u64;
                        continue;
                    }
                    pending.bytes += size;
                    let open = pending.open.entry(tenant.clone()).or_insert_with(|| Open {
                        streams: HashMap::new(),
                        order: Vec::new(),
                        bytes: 0,
                        entries: 0,
                        since: Instant::now(),
                    });
                    let stream = open.streams.entry(labels.clone()).or_insert_with(|| {
                        open.order.push(labels.clone());
                        Vec::new()
                    });
                    stream.push(entry);
                    open.bytes += size;
                    open.entries += 1;
                    if open.bytes >= self.config.batch_bytes {
                        let open = pending.open.remove(&tenant).expect("just used");
                        pending.sealed.push_back(seal(tenant.clone(), open));
                        wake = true;
                    }
                }
            }
            self.metrics.buffered.set(pending.bytes as i64);
        }
        if dropped > 0 {
            self.metrics.drop_entries("buffer_full", dropped, dropped_bytes);
        }
        if wake {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Sends batches until `stopping` resolves, then what is left, for `final_flush` at most.
    pub(crate) async fn run(
        &self,
        stopping: impl std::future::Future<Output = ()>,
        final_flush: Duration,
    ) {
        let Some(sink) = &self.sink else {
            stopping.await;
            return;
        };
        let backoff = Backoff { initial: Duration::from_millis(500), max: self.config.max_backoff };
        let tick = (self.config.batch_wait / 4).max(Duration::from_millis(20));
        let mut stopping = std::pin::pin!(stopping);
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            // Batches ready go out back to back; only with none ready is there a wait.
            let Some(batch) = self.next_batch(deadline.is_some()) else {
                if deadline.is_some() {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(tick) => {}
                    () = self.wake.notified() => {}
                    () = &mut stopping => deadline = Some(tokio::time::Instant::now() + final_flush),
                }
                continue;
            };
            let mut attempt = 0;
            loop {
                attempt += 1;
                let outcome = match deadline {
                    Some(deadline) => tokio::time::timeout_at(deadline, self.push(sink, &batch))
                        .await
                        .unwrap_or(Outcome::Retry("the process is ending".to_owned())),
                    None => self.push(sink, &batch).await,
                };
                match outcome {
                    Outcome::Sent => {
                        self.metrics.sent.inc_by(batch.entries as u64);
                        self.metrics.sent_bytes.inc_by(batch.bytes as u64);
                        break;
                    }
                    Outcome::Rejected(reason) => {
                        self.metrics.drop_entries(
                            "rejected",
                            batch.entries as u64,
                            batch.bytes as u64,
                        );
                        tracing::warn!(entries = batch.entries, %reason, "Loki refused a batch; it is dropped");
                        break;
                    }
                    Outcome::Retry(reason) => {
                        if let Some(deadline) = deadline
                            && tokio::time::Instant::now() >= deadline
                        {
                            tracing::warn!(entries = batch.entries, %reason, "log entries not sent at exit");
                            break;
                        }
                        self.metrics.retries.inc();
                        if attempt == 1 {
                            tracing::warn!(%reason, "push to Loki failed; retrying with backoff");
                        }
                        let pause = tokio::time::sleep(backoff.delay(attempt));
                        match deadline {
                            Some(_) => pause.await,
                            None => tokio::select! {
                                () = pause => {}
                                () = &mut stopping => deadline = Some(tokio::time::Instant::now() + final_flush),
                            },
                        }
                    }
                }
            }
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending.bytes -= batch.bytes;
            self.metrics.buffered.set(pending.bytes as i64);
        }
    }

    /// The oldest sealed batch, sealing open ones that waited long enough (all of them when
    /// `flush`).
    fn next_batch(&self, flush: bool) -> Option<Batch> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.sealed.is_empty() {
            let wait = self.config.batch_wait;
            let due: Vec<Option<String>> = pending
                .open
                .iter()
                .filter(|(_, open)| flush || open.since.elapsed() >= wait)
                .map(|(tenant, _)| tenant.clone())
                .collect();
            for tenant in due {
                if let Some(open) = pending.open.remove(&tenant) {
                    pending.sealed.push_back(seal(tenant, open));
                }
            }
        }
        pending.sealed.pop_front()
    }

    async fn push(&self, sink: &Sink, batch: &Batch) -> Outcome {
        let mut request = self
            .client
            .post(sink.url.clone())
            .header("content-type", "application/x-protobuf")
            .body(batch.body.clone());
        if let Some(tenant) = &batch.tenant {
            request = request.header("x-scope-orgid", tenant);
        }
        if let Some((user, password)) = &sink.credentials {
            request = request.basic_auth(user, Some(password));
        }
        let started = Instant::now();
        let response = request.send().await;
        let status: Cow<'static, str> = match &response {
            Ok(response) => response.status().as_u16().to_string().into(),
            Err(_) => "network".into(),
        };
        self.metrics.duration.observe(started.elapsed().as_secs_f64());
        self.metrics.responses.get_or_create(&StatusLabels { status }).inc();
        match response {
            Err(error) => Outcome::Retry(crate::service::error_chain(&error)),
            Ok(response) if response.status().is_success() => Outcome::Sent,
            Ok(response)
                if response.status().as_u16() == 429 || response.status().is_server_error() =>
            {
                Outcome::Retry(format!("Loki answered {}", response.status()))
            }
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                Outcome::Rejected(format!(
                    "Loki answered {status}: {}",
                    text.chars().take(300).collect::<String>()
                ))
            }
        }
    }
}

enum Outcome {
    Sent,
    Retry(String),
    Rejected(String),
}

fn seal(tenant: Option<String>, mut open: Open) -> Batch {
    let streams = open
        .order
        .iter()
        .filter_map(|labels| {
            let entries = open.streams.remove(labels)?;
            Some(Stream { labels: labels.clone(), entries, hash: 0 })
        })
        .collect();
    Batch {
        tenant,
        body: loki::encode(&PushRequest { streams }),
        bytes: open.bytes,
        entries: open.entries,
    }
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned()
}
