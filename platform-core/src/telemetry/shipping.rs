//! Shipping a service's log records to a Loki push API, off the request path.
//!
//! The JSON formatter writes each record once, to standard output and into a [`LogQueue`]
//! bounded in bytes. Queuing is a short critical section and never waits on the network: when
//! the queue is full the record is dropped and counted. A thread of its own drains the queue
//! about once a second (sooner when a batch is full), pushes protobuf + Snappy to the sink, and
//! retries 429, 5xx and network errors with capped, jittered backoff while records keep queuing
//! behind the batch in flight.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogPushConfig;
use crate::loki::{self, Entry, LabelPair, PushRequest, Stream};
use crate::queue::Backoff;

/// The size at which the queue wakes the shipper before its next tick.
const BATCH_BYTES: usize = 512 * 1024;
/// How often the shipper sends what has queued.
const BATCH_WAIT: Duration = Duration::from_secs(1);
/// How long the last records may take to leave when the process ends.
const FINAL_FLUSH: Duration = Duration::from_secs(3);

/// Why a log record was not shipped.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DropLabels {
    /// `buffer_full` (the sink was slow or down too long) or `rejected` (the sink refused the
    /// batch with a 4xx other than 429).
    reason: &'static str,
}

/// The process's log shipping counters, registered in every service's [`super::Metrics`].
pub(crate) struct ShippingMetrics {
    pub(crate) shipped: Counter,
    pub(crate) dropped: Family<DropLabels, Counter>,
    pub(crate) buffer_bytes: Gauge,
}

pub(crate) static SHIPPING: LazyLock<ShippingMetrics> = LazyLock::new(|| ShippingMetrics {
    shipped: Counter::default(),
    dropped: Family::default(),
    buffer_bytes: Gauge::default(),
});

impl ShippingMetrics {
    /// Makes both drop counters appear at 0, so that alerts on them see them from the start.
    pub(crate) fn count_drops_from_zero(&self) {
        for reason in ["buffer_full", "rejected"] {
            let _ = self.dropped.get_or_create(&DropLabels { reason });
        }
    }
}

struct Record {
    unix_nanos: i128,
    level: Level,
    line: String,
}

#[derive(Default)]
struct Queued {
    records: VecDeque<Record>,
    last_nanos: i128,
}

/// Records waiting to be shipped, bounded in bytes (queued and in flight together).
pub(crate) struct LogQueue {
    queued: Mutex<Queued>,
    bytes: AtomicUsize,
    capacity: usize,
    wake: tokio::sync::Notify,
}

impl LogQueue {
    fn new(capacity: usize) -> Self {
        Self {
            queued: Mutex::new(Queued::default()),
            bytes: AtomicUsize::new(0),
            capacity,
            wake: tokio::sync::Notify::new(),
        }
    }

    fn push(&self, level: Level, line: String) {
        let size = line.len();
        let before = self.bytes.fetch_add(size, Ordering::Relaxed);
        if before + size > self.capacity {
            self.bytes.fetch_sub(size, Ordering::Relaxed);
            SHIPPING.dropped.get_or_create(&DropLabels { reason: "buffer_full" }).inc();
            return;
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
        {
            let mut queued = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
            // Stamped under the lock, so the queue's order is time order even across threads.
            let unix_nanos = now.max(queued.last_nanos + 1);
            queued.last_nanos = unix_nanos;
            queued.records.push_back(Record { unix_nanos, level, line });
        }
        SHIPPING.buffer_bytes.set((before + size) as i64);
        if before + size >= BATCH_BYTES && before < BATCH_BYTES {
            self.wake.notify_one();
        }
    }

    /// Takes queued records up to about `max_bytes`; they still count against the bound until
    /// [`Self::release`].
    fn take(&self, max_bytes: usize) -> Vec<Record> {
        let mut queued = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
        let mut taken = Vec::new();
        let mut bytes = 0;
        while let Some(record) = queued.records.pop_front() {
            bytes += record.line.len();
            taken.push(record);
            if bytes >= max_bytes {
                break;
            }
        }
        taken
    }

    fn release(&self, records: &[Record]) {
        let size: usize = records.iter().map(|r| r.line.len()).sum();
        let after = self.bytes.fetch_sub(size, Ordering::Relaxed).saturating_sub(size);
        SHIPPING.buffer_bytes.set(after as i64);
    }
}

/// The formatter's writer for one record: collects its bytes, queues them when dropped.
pub(crate) struct RecordWriter<'a> {
    queue: &'a LogQueue,
    level: Level,
    bytes: Vec<u8>,
}

impl io::Write for RecordWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for RecordWriter<'_> {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.bytes);
        while bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        if bytes.is_empty() {
            return;
        }
        let line = String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        self.queue.push(self.level, line);
    }
}

/// Makes a [`RecordWriter`] per record, for `tracing_subscriber::fmt`.
#[derive(Clone)]
pub(crate) struct QueueWriter(pub(crate) Arc<LogQueue>);

impl<'a> MakeWriter<'a> for QueueWriter {
    type Writer = RecordWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        RecordWriter { queue: &self.0, level: Level::INFO, bytes: Vec::new() }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        RecordWriter { queue: &self.0, level: *meta.level(), bytes: Vec::with_capacity(256) }
    }
}

/// The running shipper; dropping it ships what is left (for a few seconds at most) and stops.
#[derive(Debug)]
pub(crate) struct Shipper {
    stop: tokio::sync::watch::Sender<bool>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Shipper {
    /// Starts shipping the records that `writer` queues to `config.url`.
    pub(crate) fn start(service: &str, config: &LogPushConfig) -> io::Result<(Self, QueueWriter)> {
        let queue = Arc::new(LogQueue::new(config.buffer_bytes));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (finished, done) = std::sync::mpsc::channel();
        let sink = Sink::new(service, config);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let shipped = queue.clone();
        std::thread::Builder::new().name("log-shipper".to_owned()).spawn(move || {
            runtime.block_on(ship(shipped, sink, stopped));
            let _ = finished.send(());
        })?;
        Ok((Self { stop, done }, QueueWriter(queue)))
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        let _ = self.done.recv_timeout(FINAL_FLUSH + Duration::from_secs(1));
    }
}

struct Sink {
    client: reqwest::Client,
    url: url::Url,
    service: String,
    instance: String,
    backoff: Backoff,
}

enum PushOutcome {
    Sent,
    Retry(String),
    Rejected(String),
}

impl Sink {
    fn new(service: &str, config: &LogPushConfig) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            url: config.url.clone(),
            service: service.to_owned(),
            instance: config.instance.clone(),
            backoff: Backoff { initial: Duration::from_millis(250), max: Duration::from_secs(10) },
        }
    }

    fn encode(&self, records: &[Record]) -> Vec<u8> {
        let mut streams: BTreeMap<Level, Vec<Entry>> = BTreeMap::new();
        for record in records {
            let mut entry = Entry::new(record.unix_nanos, record.line.clone());
            entry.structured_metadata = line_ids(&record.line);
            streams.entry(record.level).or_default().push(entry);
        }
        let streams = streams
            .into_iter()
            .map(|(level, entries)| Stream {
                labels: loki::format_labels([
                    ("service", self.service.as_str()),
                    ("instance", self.instance.as_str()),
                    ("level", level_name(level)),
                ]),
                entries,
                hash: 0,
            })
            .collect();
        loki::encode(&PushRequest { streams })
    }

    async fn push(&self, body: Vec<u8>) -> PushOutcome {
        let response = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await;
        match response {
            Err(error) => PushOutcome::Retry(crate::service::error_chain(&error)),
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    PushOutcome::Sent
                } else if status.as_u16() == 429 || status.is_server_error() {
                    PushOutcome::Retry(format!("the sink answered {status}"))
                } else {
                    let text = response.text().await.unwrap_or_default();
                    PushOutcome::Rejected(format!(
                        "the sink answered {status}: {}",
                        text.chars().take(200).collect::<String>()
                    ))
                }
            }
        }
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

/// The request and trace ids of a JSON log line, as structured metadata.
fn line_ids(line: &str) -> Vec<LabelPair> {
    #[derive(serde::Deserialize)]
    struct Ids<'a> {
        #[serde(borrow)]
        span: Option<SpanIds<'a>>,
        #[serde(borrow)]
        trace_id: Option<Cow<'a, str>>,
    }
    #[derive(serde::Deserialize)]
    struct SpanIds<'a> {
        #[serde(borrow)]
        request_id: Option<Cow<'a, str>>,
        #[serde(borrow)]
        trace_id: Option<Cow<'a, str>>,
    }
    let Ok(ids) = serde_json::from_str::<Ids<'_>>(line) else { return Vec::new() };
    let (request_id, span_trace) = ids.span.map_or((None, None), |s| (s.request_id, s.trace_id));
    let mut pairs = Vec::new();
    if let Some(trace_id) = ids.trace_id.or(span_trace) {
        pairs.push(LabelPair { name: "trace_id".to_owned(), value: trace_id.into_owned() });
    }
    if let Some(request_id) = request_id {
        pairs.push(LabelPair { name: "request_id".to_owned(), value: request_id.into_owned() });
    }
    pairs
}

async fn ship(queue: Arc<LogQueue>, sink: Sink, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let mut stopping = false;
    loop {
        if !stopping {
            tokio::select! {
                () = tokio::time::sleep(BATCH_WAIT) => {}
                () = queue.wake.notified() => {}
                _ = stopped.changed() => stopping = true,
            }
        }
        let deadline = stopping.then(|| tokio::time::Instant::now() + FINAL_FLUSH);
        loop {
            let batch = queue.take(BATCH_BYTES);
            if batch.is_empty() {
                break;
            }
            let body = sink.encode(&batch);
            let mut attempt = 0;
            loop {
                attempt += 1;
                let outcome = match deadline {
                    Some(deadline) => tokio::time::timeout_at(deadline, sink.push(body.clone()))
                        .await
                        .unwrap_or_else(|_| PushOutcome::Retry("the process is ending".to_owned())),
                    None => sink.push(body.clone()).await,
                };
                match outcome {
                    PushOutcome::Sent => {
                        SHIPPING.shipped.inc_by(batch.len() as u64);
                        break;
                    }
                    PushOutcome::Rejected(reason) => {
                        SHIPPING
                            .dropped
                            .get_or_create(&DropLabels { reason: "rejected" })
                            .inc_by(batch.len() as u64);
                        tracing::warn!(records = batch.len(), %reason, "log records refused by the sink");
                        break;
                    }
                    PushOutcome::Retry(reason) => {
                        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                            tracing::warn!(records = batch.len(), %reason, "log records not sent at exit");
                            queue.release(&batch);
                            return;
                        }
                        if attempt == 1 {
                            tracing::warn!(%reason, "log push failed; retrying with backoff");
                        }
                        let pause = sink.backoff.delay(attempt);
                        tokio::select! {
                            () = tokio::time::sleep(pause) => {}
                            _ = stopped.changed(), if !stopping => {}
                        }
                        stopping = stopping || *stopped.borrow();
                    }
                }
            }
            queue.release(&batch);
            if !stopping && queue.bytes.load(Ordering::Relaxed) < BATCH_BYTES {
                break;
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let queue = LogQueue::new(10);
        let before = SHIPPING.dropped.get_or_create(&DropLabels { reason: "buffer_full" }).get();
        queue.push(Level::INFO, "12345".to_owned());
        queue.push(Level::INFO, "67890".to_owned());
        queue.push(Level::INFO, "x".to_owned());
        let after = SHIPPING.dropped.get_or_create(&DropLabels { reason: "buffer_full" }).get();
        assert!(after > before, "the third record must be counted as dropped");
        let taken = queue.take(usize::MAX);
        assert_eq!(taken.iter().map(|r| r.line.as_str()).collect::<Vec<_>>(), ["12345", "67890"]);
        assert!(taken[0].unix_nanos < taken[1].unix_nanos, "stamps are strictly increasing");
        queue.push(Level::INFO, "y".to_owned());
        assert!(queue.take(usize::MAX).is_empty(), "taken records still count until released");
        queue.release(&taken);
        queue.push(Level::INFO, "z".to_owned());
        assert_eq!(queue.take(usize::MAX)[0].line, "z");
    }

    #[test]
    fn request_and_trace_ids_become_structured_metadata() {
        let line = r#"{"timestamp":"t","level":"INFO","message":"m","span":{"request_id":"r-1","name":"request"},"trace_id":"abc"}"#;
        let pairs = line_ids(line);
        assert_eq!(
            pairs,
            [
                LabelPair { name: "trace_id".into(), value: "abc".into() },
                LabelPair { name: "request_id".into(), value: "r-1".into() },
            ]
        );
        assert!(line_ids("not json").is_empty());
    }
}
