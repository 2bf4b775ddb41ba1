//! A webhook receiver: an HTTP server that records every request and answers as told.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request a [`Receiver`] got.
#[derive(Clone, Debug)]
pub struct Received {
    /// The request target (path and query).
    pub path: String,
    /// Headers, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// The body, exactly.
    pub body: Vec<u8>,
    /// When it was read in full, before any delay.
    pub read_at: Instant,
    /// When it was answered: after any delay, just before the answer was written.
    pub at: Instant,
    /// The status it was answered with.
    pub status: u16,
}

impl Received {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(key, _)| *key == name).map(|(_, value)| value.as_str())
    }
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    /// Per path: how many of its first requests fail, with which status and extra headers.
    failing: HashMap<String, Failing>,
    seen_by_path: HashMap<String, usize>,
    delay: Duration,
    /// Per path: a delay that replaces [`State::delay`].
    delay_by_path: HashMap<String, Duration>,
    /// Whether a connection stays open for the next request.
    keep_alive: bool,
}

struct Failing {
    count: usize,
    status: u16,
    headers: Vec<(String, String)>,
}

/// An HTTP/1.1 server on a port of its own that records requests. Each path answers `200 OK`
/// unless [`Receiver::fail_first`] says otherwise. It reads one request per connection and
/// closes it (what a receiver behind a simple proxy does), so no connection reuse hides work,
/// unless [`Receiver::set_keep_alive`] keeps connections open (what most receivers do, and what
/// a benchmark wants: no TCP set-up per request on either side).
#[derive(Clone)]
pub struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Receiver {
    /// Starts a receiver on `bind` (such as `127.0.0.1:0`).
    ///
    /// # Errors
    ///
    /// Fails when the address cannot be bound.
    pub async fn start(bind: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let receiver = Self { addr, state };
        let serving = receiver.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let serving = serving.clone();
                tokio::spawn(async move {
                    let _ = serving.serve(stream).await;
                });
            }
        });
        Ok(receiver)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL of `path` on it.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The first `count` requests to `path` are answered `status`.
    pub fn fail_first(&self, path: &str, count: usize, status: u16) {
        self.fail_first_with(path, count, status, &[]);
    }

    /// The first `count` requests to `path` are answered `status` with `headers` added (such
    /// as `Retry-After`, or the `Location` of a redirect).
    pub fn fail_first_with(&self, path: &str, count: usize, status: u16, headers: &[(&str, &str)]) {
        let headers =
            headers.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect();
        self.lock().failing.insert(path.to_owned(), Failing { count, status, headers });
    }

    /// Every answer waits `delay` first.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Answers on `path` wait `delay` first, whatever [`Receiver::set_delay`] says.
    pub fn set_delay_on(&self, path: &str, delay: Duration) {
        self.lock().delay_by_path.insert(path.to_owned(), delay);
    }

    /// Connections stay open after an answer for the client's next request (HTTP/1.1
    /// persistent connections), unless the client asks to close; `false` (the default) closes
    /// each one after its first answer. It applies to requests answered from now on.
    pub fn set_keep_alive(&self, keep_alive: bool) {
        self.lock().keep_alive = keep_alive;
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// How many requests were answered so far, without copying them.
    pub fn received_count(&self) -> usize {
        self.lock().received.len()
    }

    /// Everything received so far, forgotten by the receiver: what it records next starts
    /// from nothing. What each path answers, and how many requests each has seen, is kept.
    pub fn take_received(&self) -> Vec<Received> {
        std::mem::take(&mut self.lock().received)
    }

    /// What was received on `path`.
    pub fn received_on(&self, path: &str) -> Vec<Received> {
        self.lock().received.iter().filter(|got| got.path == path).cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn serve(&self, mut stream: tokio::net::TcpStream) -> anyhow::Result<()> {
        // What was read past the end of one request belongs to the next one.
        let mut buffer = Vec::new();
        loop {
            let Some((path, headers, body)) = read_request(&mut stream, &mut buffer).await? else {
                return Ok(());
            };
            let client_closes = headers
                .iter()
                .any(|(name, value)| name == "connection" && value.eq_ignore_ascii_case("close"));
            let read_at = Instant::now();
            let (status, extra, delay, keep_alive) = {
                let mut state = self.lock();
                let seen = state.seen_by_path.entry(path.clone()).or_default();
                *seen += 1;
                let seen = *seen;
                let (status, extra) = match state.failing.get(&path) {
                    Some(failing) if seen <= failing.count => {
                        (failing.status, failing.headers.clone())
                    }
                    _ => (200, Vec::new()),
                };
                let delay = state.delay_by_path.get(&path).copied().unwrap_or(state.delay);
                (status, extra, delay, state.keep_alive && !client_closes)
            };
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            self.lock().received.push(Received {
                path,
                headers,
                body,
                read_at,
                at: Instant::now(),
                status,
            });
            let extra: String =
                extra.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
            let answer = format!(
                "HTTP/1.1 {status} {}\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n{extra}connection: {}\r\n\r\nok",
                if status == 200 { "OK" } else { "Failing" },
                if keep_alive { "keep-alive" } else { "close" },
            );
            stream.write_all(answer.as_bytes()).await?;
            if !keep_alive {
                stream.shutdown().await?;
                return Ok(());
            }
        }
    }
}

/// A request's target, headers and body.
type Request = (String, Vec<(String, String)>, Vec<u8>);

/// Reads one request from `stream`, starting with what `buffer` holds, and leaves in `buffer`
/// what was read past its end; `None` when the client closed the connection before starting
/// another request.
async fn read_request(
    stream: &mut tokio::net::TcpStream,
    buffer: &mut Vec<u8>,
) -> anyhow::Result<Option<Request>> {
    let mut chunk = [0_u8; 16 * 1024];
    let header_end = loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 && buffer.is_empty() {
            return Ok(None);
        }
        anyhow::ensure!(read > 0, "connection closed before the headers ended");
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let path = request_line.split(' ').nth(1).unwrap_or("/").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse::<usize>().ok())
        .unwrap_or(0);
    while buffer.len() < header_end + length {
        let read = stream.read(&mut chunk).await?;
        anyhow::ensure!(read > 0, "connection closed before the body ended");
        buffer.extend_from_slice(&chunk[..read]);
    }
    let body = buffer[header_end..header_end + length].to_vec();
    buffer.drain(..header_end + length);
    Ok(Some((path, headers, body)))
}
