//! A Loki push API receiver that decodes what it is sent exactly as Loki documents it, and keeps
//! every entry for tests to check.
//!
//! It has its own protobuf definitions of Loki's `push.proto` (not the platform's), so a mistake
//! in the platform's encoding shows up here rather than being shared by both ends.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

#[derive(Clone, PartialEq, prost::Message)]
struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    streams: Vec<StreamAdapter>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StreamAdapter {
    #[prost(string, tag = "1")]
    labels: String,
    #[prost(message, repeated, tag = "2")]
    entries: Vec<EntryAdapter>,
    #[prost(uint64, tag = "3")]
    hash: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    timestamp: Option<ProtoTimestamp>,
    #[prost(string, tag = "2")]
    line: String,
    #[prost(message, repeated, tag = "3")]
    structured_metadata: Vec<LabelPairAdapter>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LabelPairAdapter {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
struct ProtoTimestamp {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// One log entry as the receiver got it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LokiEntry {
    /// `X-Scope-OrgID`, when sent.
    pub tenant: Option<String>,
    /// The stream's labels.
    pub labels: BTreeMap<String, String>,
    /// Nanoseconds since the Unix epoch.
    pub unix_nanos: i128,
    /// The line.
    pub line: String,
    /// Structured metadata.
    pub metadata: BTreeMap<String, String>,
}

#[derive(Default)]
struct Shared {
    entries: Mutex<Vec<LokiEntry>>,
    errors: Mutex<Vec<String>>,
    requests: Mutex<Vec<StatusCode>>,
    faults: Mutex<VecDeque<StatusCode>>,
    /// The newest timestamp per tenant and stream, to check order across pushes.
    newest: Mutex<HashMap<(Option<String>, String), i128>>,
    changed: tokio::sync::Notify,
}

/// A Loki push endpoint on loopback: `POST /loki/api/v1/push`. Dropping it stops it.
pub struct LokiReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    connections: Mutex<Option<JoinSet<()>>>,
}

impl LokiReceiver {
    /// Starts a receiver on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        let listener =
            TcpListener::bind("127.0.0.1:0").await.context("binding the Loki receiver")?;
        let addr = listener.local_addr()?;
        let receiver = Self { addr, shared: Arc::default(), connections: Mutex::new(None) };
        receiver.serve(listener);
        Ok(receiver)
    }

    fn serve(&self, listener: TcpListener) {
        let app =
            Router::new().route("/loki/api/v1/push", post(push)).with_state(self.shared.clone());
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            // Each connection is a task of this set, so stopping ends open keep-alive connections too.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        *self.connections.lock().unwrap_or_else(PoisonError::into_inner) = Some(tasks);
    }

    /// The base URL (`http://127.0.0.1:PORT`), what `LOKI_URL` or `APP_LOG_PUSH_URL` take.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops listening and closes every connection: clients get "connection refused".
    pub fn go_down(&self) {
        if let Some(mut tasks) =
            self.connections.lock().unwrap_or_else(PoisonError::into_inner).take()
        {
            tasks.abort_all();
        }
    }

    /// Listens again on the same port after [`Self::go_down`].
    pub async fn come_back(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => {
                    self.serve(listener);
                    return Ok(());
                }
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e).context("rebinding the Loki receiver's port"),
            }
        }
    }

    /// Answers the next `times` pushes with `status` (and keeps nothing of them).
    pub fn fail_next(&self, status: u16, times: usize) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut faults = self.shared.faults.lock().unwrap_or_else(PoisonError::into_inner);
        faults.extend(std::iter::repeat_n(status, times));
    }

    /// Every entry received so far, in arrival order.
    pub fn entries(&self) -> Vec<LokiEntry> {
        self.shared.entries.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// How many entries it has received so far.
    pub fn count(&self) -> usize {
        self.shared.entries.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Waits until at least `count` entries have arrived, for `timeout` at most.
    pub async fn wait_for_count(&self, count: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.shared.changed.notified();
            let received = self.count();
            if received >= count {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                bail!(
                    "the Loki receiver got {received} of {count} entries within {timeout:?}, errors {:?}",
                    self.protocol_errors()
                );
            }
        }
    }

    /// The statuses answered, one per push request.
    pub fn requests(&self) -> Vec<u16> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|s| s.as_u16())
            .collect()
    }

    /// Everything wrong with what was sent: undecodable bodies, bad labels, entries out of order.
    pub fn protocol_errors(&self) -> Vec<String> {
        self.shared.errors.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits until `done` holds for the entries received, for `timeout` at most.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[LokiEntry]) -> bool,
    ) -> anyhow::Result<Vec<LokiEntry>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.shared.changed.notified();
            let entries = self.entries();
            if done(&entries) {
                return Ok(entries);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                bail!(
                    "the Loki receiver did not get what was expected within {timeout:?}: {} entries, errors {:?}",
                    entries.len(),
                    self.protocol_errors()
                );
            }
        }
    }
}

impl Drop for LokiReceiver {
    fn drop(&mut self) {
        self.go_down();
    }
}

async fn push(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let fault = shared.faults.lock().unwrap_or_else(PoisonError::into_inner).pop_front();
    let status = match fault {
        Some(status) => status,
        None => match decode(&headers, &body) {
            Ok(entries) => {
                record(&shared, entries);
                StatusCode::NO_CONTENT
            }
            Err(error) => {
                shared
                    .errors
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(format!("{error:#}"));
                StatusCode::BAD_REQUEST
            }
        },
    };
    shared.requests.lock().unwrap_or_else(PoisonError::into_inner).push(status);
    shared.changed.notify_waiters();
    status.into_response()
}

fn record(shared: &Shared, entries: Vec<LokiEntry>) {
    let mut newest = shared.newest.lock().unwrap_or_else(PoisonError::into_inner);
    let mut errors = Vec::new();
    for entry in &entries {
        let key = (entry.tenant.clone(), format!("{:?}", entry.labels));
        let last = newest.entry(key).or_insert(i128::MIN);
        if entry.unix_nanos < *last {
            errors.push(format!(
                "entry out of order in stream {:?}: {} after {}",
                entry.labels, entry.unix_nanos, last
            ));
        }
        *last = (*last).max(entry.unix_nanos);
    }
    shared.errors.lock().unwrap_or_else(PoisonError::into_inner).extend(errors);
    shared.entries.lock().unwrap_or_else(PoisonError::into_inner).extend(entries);
}

fn decode(headers: &HeaderMap, body: &[u8]) -> anyhow::Result<Vec<LokiEntry>> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let tenant = header("x-scope-orgid");
    let mut inflated = Vec::new();
    let body = match header("content-encoding").as_deref() {
        None | Some("") => body,
        Some("gzip") => {
            flate2::read::GzDecoder::new(body).read_to_end(&mut inflated).context("gzip body")?;
            &inflated
        }
        Some(other) => bail!("unexpected Content-Encoding {other:?}"),
    };
    let content_type = header("content-type").unwrap_or_default();
    let mime = content_type.split(';').next().unwrap_or_default().trim().to_owned();
    let mut entries = Vec::new();
    match mime.as_str() {
        "application/x-protobuf" => {
            let raw = snap::raw::Decoder::new().decompress_vec(body).context("raw Snappy")?;
            let push = PushRequest::decode(raw.as_slice()).context("PushRequest protobuf")?;
            for stream in push.streams {
                let labels = parse_labels(&stream.labels)?;
                check_order(
                    &stream.entries.iter().map(|e| timestamp(e.timestamp)).collect::<Vec<_>>(),
                    &labels,
                )?;
                for entry in stream.entries {
                    entries.push(LokiEntry {
                        tenant: tenant.clone(),
                        labels: labels.clone(),
                        unix_nanos: timestamp(entry.timestamp),
                        line: entry.line,
                        metadata: entry
                            .structured_metadata
                            .into_iter()
                            .map(|p| (p.name, p.value))
                            .collect(),
                    });
                }
            }
        }
        "application/json" => {
            let push: serde_json::Value = serde_json::from_slice(body).context("JSON body")?;
            let streams = push["streams"].as_array().context("JSON push without streams")?;
            for stream in streams {
                let labels: BTreeMap<String, String> =
                    serde_json::from_value(stream["stream"].clone())
                        .context("JSON stream labels")?;
                let values = stream["values"].as_array().context("JSON stream without values")?;
                let mut times = Vec::new();
                for value in values {
                    let time: i128 = value[0]
                        .as_str()
                        .context("timestamp string")?
                        .parse()
                        .context("timestamp")?;
                    times.push(time);
                    entries.push(LokiEntry {
                        tenant: tenant.clone(),
                        labels: labels.clone(),
                        unix_nanos: time,
                        line: value[1].as_str().context("line string")?.to_owned(),
                        metadata: serde_json::from_value(value.get(2).cloned().unwrap_or_default())
                            .unwrap_or_default(),
                    });
                }
                check_order(&times, &labels)?;
            }
        }
        other => bail!("unexpected Content-Type {other:?}"),
    }
    Ok(entries)
}

fn timestamp(timestamp: Option<ProtoTimestamp>) -> i128 {
    timestamp.map_or(0, |t| i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos))
}

fn check_order(times: &[i128], labels: &BTreeMap<String, String>) -> anyhow::Result<()> {
    if times.windows(2).any(|pair| pair[1] < pair[0]) {
        bail!("entries of stream {labels:?} are not in time order");
    }
    Ok(())
}

/// Parses `{name="value", ...}` strictly, as Loki does.
fn parse_labels(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .with_context(|| format!("labels {text:?} are not enclosed in braces"))?;
    let mut labels = BTreeMap::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let name: String =
            std::iter::from_fn(|| chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_'))
                .collect();
        if name.is_empty() || chars.next() != Some('=') || chars.next() != Some('"') {
            bail!("labels {text:?} are not name=\"value\" pairs");
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c @ ('\\' | '"')) => value.push(c),
                    _ => bail!("labels {text:?} have a bad escape"),
                },
                Some(c) => value.push(c),
                None => bail!("labels {text:?} end inside a value"),
            }
        }
        if labels.insert(name, value).is_some() {
            bail!("labels {text:?} repeat a name");
        }
        match chars.next() {
            None => break,
            Some(',') => {}
            Some(_) => bail!("labels {text:?} are not separated by commas"),
        }
    }
    if labels.is_empty() {
        bail!("a stream without labels");
    }
    Ok(labels)
}
