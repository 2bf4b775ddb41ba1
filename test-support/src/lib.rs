//! Helpers for the platform's integration tests.
//!
//! Tests run against real services that `scripts/services.sh` starts and describes in
//! environment variables (`PLATFORM_TEST_DATABASE_URL`, `PLATFORM_TEST_REDIS_URL`,
//! `PLATFORM_TEST_NATS_URL`). Each test takes its own database ([`fresh_database`]) or key
//! prefix ([`unique_name`]), so tests run in parallel. [`ServiceProcess`] runs one of our
//! binaries as a real process and kills it when dropped.
//!
//! In-process suites build on [`migrated_database`] or a whole [`Backing`] (the database, the
//! accounts and a queue), and make users with [`verified_user`] and [`unverified_user`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

mod backing;
pub mod chat;
mod dns;
mod embeddings;
mod exposition;
mod loki;
mod pausing;
mod procfs;
mod prometheus;
mod proxy;
mod receiver;
mod smtp;
mod tls_servers;

pub use backing::{Backing, migrated_database, unverified_user, verified_user};
pub use chat::{ChatServer, RecordedChat};
pub use dns::DnsServer;
pub use embeddings::EmbeddingsServer;
pub use exposition::{Exposition, MetricsEndpoint, synthetic_exposition};
pub use loki::{LokiEntry, LokiReceiver};
pub use pausing::{Direction, PausingProxy};
pub use procfs::ProcessUsage;
pub use prometheus::Prometheus;
pub use proxy::TcpProxy;
pub use receiver::{Received, Receiver};
pub use smtp::{CaptureTls, CapturedMail, SMTP_PASSWORD, SMTP_USER, SmtpCapture};
pub use tls_servers::{Certificates, TlsPostgres, TlsRedis};

/// Returns the value of a variable that `scripts/services.sh` exports.
///
/// # Panics
///
/// Panics with instructions when the tests were not started through `scripts/test.sh`.
pub fn service_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test.sh, which starts the services")
    })
}

/// Returns the repository's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support lives in the workspace")
        .to_owned()
}

/// Returns a name unique to this call across processes: `{prefix}_{pid}_{time}_{n}`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}_{}_{nanos}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Creates an empty database on the test PostgreSQL server and returns its URL.
///
/// # Errors
///
/// Fails when the server is not reachable.
pub async fn fresh_database() -> anyhow::Result<String> {
    let admin = service_env("PLATFORM_TEST_DATABASE_URL");
    fresh_database_on(&admin).await
}

/// Creates an empty database on the server `admin_url` points to and returns its URL.
///
/// # Errors
///
/// Fails when the server is not reachable.
pub async fn fresh_database_on(admin_url: &str) -> anyhow::Result<String> {
    let name = unique_name("test");
    let mut conn = AsyncPgConnection::establish(admin_url)
        .await
        .with_context(|| format!("cannot connect to the test PostgreSQL at {admin_url}"))?;
    diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut conn).await?;
    let (base, _) = admin_url.rsplit_once('/').context("database URL has no path")?;
    Ok(format!("{base}/{name}"))
}

/// Returns a free loopback port. Another process may take it before it is used; tests use it
/// only where a service cannot be told to pick its own (port 0).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("the loopback interface has free ports")
}

/// One of our binaries, running as a real process with a chosen environment.
///
/// Its standard output and error are collected line by line. It is killed when dropped.
#[derive(Debug)]
pub struct ServiceProcess {
    child: Child,
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    collectors: Vec<tokio::task::JoinHandle<()>>,
}

impl ServiceProcess {
    /// Starts `program` with exactly `env` (plus `PATH`, and `APP_HTTP_ADDR=127.0.0.1:0` unless
    /// given) and waits until it logs that it is listening.
    ///
    /// # Errors
    ///
    /// Fails, with everything the process printed, when it exits or is silent for 60 seconds.
    pub async fn start(program: &Path, env: &HashMap<String, String>) -> anyhow::Result<Self> {
        Self::start_until(program, env, "listening").await
    }

    /// Like [`ServiceProcess::start`], but returns once the process logs `message` with an
    /// `addr` (`"port bound; starting"` comes before migrations, `"listening"` after).
    ///
    /// # Errors
    ///
    /// As for [`ServiceProcess::start`].
    pub async fn start_until(
        program: &Path,
        env: &HashMap<String, String>,
        message: &'static str,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(program);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("APP_HTTP_ADDR", "127.0.0.1:0")
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().with_context(|| format!("cannot start {program:?}"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, mut addr_rx) = watch::channel(None::<SocketAddr>);
        let addr_tx = Arc::new(addr_tx);
        let mut collectors = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            collectors.push(tokio::spawn(collect_lines(
                stdout,
                Arc::clone(&lines),
                Arc::clone(&addr_tx),
                message,
            )));
        }
        if let Some(stderr) = child.stderr.take() {
            collectors.push(tokio::spawn(collect_lines(
                stderr,
                Arc::clone(&lines),
                Arc::clone(&addr_tx),
                message,
            )));
        }
        let waited = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                if let Some(addr) = *addr_rx.borrow_and_update() {
                    return Ok(addr);
                }
                tokio::select! {
                    changed = addr_rx.changed() => {
                        if changed.is_err() { bail!("output closed before listening"); }
                    }
                    status = child.wait() => bail!("exited before listening: {:?}", status),
                }
            }
        })
        .await;
        match waited {
            Ok(Ok(addr)) => Ok(Self { child, addr, lines, collectors }),
            Ok(Err(error)) => bail!("{program:?} {error}; output:\n{}", join(&lines)),
            Err(_) => bail!("{program:?} did not listen within 60 s; output:\n{}", join(&lines)),
        }
    }

    /// Returns the process id, while the process runs.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Returns the HTTP address the process listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns `http://{addr}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Returns every line the process has printed so far.
    pub fn output(&self) -> String {
        join(&self.lines)
    }

    /// Sends SIGTERM, as Kubernetes does to stop a pod.
    ///
    /// # Errors
    ///
    /// Fails when the process has no id (it has exited) or `kill` fails.
    pub fn terminate(&self) -> anyhow::Result<()> {
        let pid = self.child.id().context("the process has exited")?;
        let status =
            std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        Ok(())
    }

    /// Kills the process with SIGKILL, as a crash or an out-of-memory kill would.
    ///
    /// # Errors
    ///
    /// Fails when the process cannot be signalled.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await.context("cannot kill the process")
    }

    /// Waits up to `limit` for the process to exit and returns its status.
    ///
    /// # Errors
    ///
    /// Fails when it is still running after `limit`.
    /// Its last lines are collected before this returns (a process can exit before its output
    /// has been read).
    pub async fn wait(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .with_context(|| format!("still running after {limit:?}; output:\n{}", self.output()))?
            .context("cannot wait for the process")?;
        for collector in self.collectors.drain(..) {
            // Its pipes close with it, unless a child of its own holds them open.
            let _ = tokio::time::timeout(Duration::from_secs(5), collector).await;
        }
        Ok(status)
    }
}

fn join(lines: &Mutex<Vec<String>>) -> String {
    lines.lock().unwrap_or_else(PoisonError::into_inner).join("\n")
}

async fn collect_lines(
    stream: impl tokio::io::AsyncRead + Unpin,
    lines: Arc<Mutex<Vec<String>>>,
    addr: Arc<watch::Sender<Option<SocketAddr>>>,
    message: &'static str,
) {
    let mut reader = BufReader::new(stream).lines();
    while let Ok(Some(line)) = reader.next_line().await {
        if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
            && event["message"] == message
            && let Some(listening) = event["addr"].as_str().and_then(|a| a.parse().ok())
        {
            addr.send_replace(Some(listening));
        }
        lines.lock().unwrap_or_else(PoisonError::into_inner).push(line);
    }
}

/// Polls `url` until it answers `status`, for at most `limit`; returns the last body.
///
/// # Errors
///
/// Fails with the last answer when `status` never came.
pub async fn wait_for_status(url: &str, status: u16, limit: Duration) -> anyhow::Result<String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let last = match client.get(url).send().await {
            Ok(response) if response.status().as_u16() == status => {
                return Ok(response.text().await?);
            }
            Ok(response) => {
                format!("{} {}", response.status(), response.text().await.unwrap_or_default())
            }
            Err(error) => error.to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            bail!("{url} did not answer {status} within {limit:?}; last answer: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A broker process owned by one test, for tests that stop and restart it.
#[derive(Debug)]
pub struct Broker {
    kind: BrokerKind,
    token: Option<String>,
    dir: PathBuf,
    port: u16,
    child: Option<std::process::Child>,
}

/// Which broker a [`Broker`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerKind {
    /// `redis-server` with the append-only file on.
    Redis,
    /// `nats-server -js` with file storage, optionally requiring a token.
    Nats,
}

impl Broker {
    /// Starts a broker of `kind` on a free loopback port, storing its data in a new directory.
    ///
    /// # Errors
    ///
    /// Fails when the server cannot be started or does not listen within 10 seconds.
    pub fn start(kind: BrokerKind) -> anyhow::Result<Self> {
        Self::start_with_token(kind, None)
    }

    /// Starts a broker that requires `token` (NATS `--auth`); Redis ignores it.
    ///
    /// # Errors
    ///
    /// Fails when the server cannot be started or does not listen within 10 seconds.
    pub fn start_with_token(kind: BrokerKind, token: Option<&str>) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(unique_name("broker"));
        std::fs::create_dir_all(&dir)?;
        let token = token.map(str::to_owned);
        let mut broker = Self { kind, token, dir, port: free_port(), child: None };
        broker.restart()?;
        Ok(broker)
    }

    /// Returns the URL clients use.
    pub fn url(&self) -> String {
        match self.kind {
            BrokerKind::Redis => format!("redis://127.0.0.1:{}", self.port),
            BrokerKind::Nats => format!("nats://127.0.0.1:{}", self.port),
        }
    }

    /// Starts the broker again on the same port and data directory.
    ///
    /// # Errors
    ///
    /// Fails when it does not listen within 10 seconds.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let port = self.port.to_string();
        let mut command = match self.kind {
            BrokerKind::Redis => {
                let mut command = std::process::Command::new("redis-server");
                command.args([
                    "--port",
                    &port,
                    "--bind",
                    "127.0.0.1",
                    "--appendonly",
                    "yes",
                    "--save",
                    "",
                ]);
                command.arg("--dir").arg(&self.dir);
                command
            }
            BrokerKind::Nats => {
                let mut command = std::process::Command::new("nats-server");
                command.args(["-js", "-a", "127.0.0.1", "-p", &port]).arg("-sd").arg(&self.dir);
                if let Some(token) = &self.token {
                    command.args(["--auth", token]);
                }
                command
            }
        };
        command.stdout(Stdio::null()).stderr(Stdio::null()).stdin(Stdio::null());
        self.child =
            Some(command.spawn().with_context(|| format!("cannot start {:?}", self.kind))?);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "{:?} did not listen on {}",
                self.kind,
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops the broker gracefully (SIGTERM) and waits for it to exit.
    ///
    /// # Errors
    ///
    /// Fails when it cannot be signalled.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Returns the path of another binary of the workspace, built beside the test's own binaries
/// (`cargo nextest run --workspace` and `cargo test --workspace` build them all).
///
/// # Panics
///
/// Panics, saying how to build it, when it is missing.
pub fn workspace_binary(name: &str) -> PathBuf {
    let dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().and_then(Path::parent).map(Path::to_path_buf))
        .expect("the test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(path.exists(), "{path:?} is missing: build it with `cargo build --workspace`");
    path
}

/// Polls `done` every 20 ms until it holds, for at most `limit`.
///
/// # Errors
///
/// Fails, naming `what`, when `done` never held.
pub async fn eventually(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
