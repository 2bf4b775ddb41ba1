//! A real Prometheus server (Debian's `prometheus` package) in a temporary directory.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

/// A running Prometheus; dropping it kills it and removes its data.
pub struct Prometheus {
    child: Child,
    port: u16,
    dir: PathBuf,
    client: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus with `config` (a `prometheus.yml`) on a free loopback port.
    pub async fn start(config: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(crate::unique_name("prometheus"));
        std::fs::create_dir_all(dir.join("data"))?;
        std::fs::write(dir.join("prometheus.yml"), config)?;
        let port = crate::free_port();
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start prometheus: install Debian's prometheus package (scripts/services.sh install)")?;
        let prometheus = Self { child, port, dir, client: reqwest::Client::new() };
        let ready = format!("http://127.0.0.1:{port}/-/ready");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = prometheus.client.get(&ready).send().await
                && response.status().is_success()
            {
                return Ok(prometheus);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("prometheus was not ready within 30 s:\n{}", prometheus.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process id.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// What Prometheus logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Runs an instant query; returns `data.result`.
    pub async fn query(&self, expr: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let response: serde_json::Value = self
            .client
            .get(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query(&[("query", expr)])
            .send()
            .await?
            .json()
            .await?;
        if response["status"] != "success" {
            bail!("query {expr:?} failed: {response}");
        }
        Ok(response["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// Polls `expr` until `done` holds for its result, for `limit` at most.
    pub async fn wait_for(
        &self,
        expr: &str,
        limit: Duration,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let result = self.query(expr).await?;
            if done(&result) {
                return Ok(result);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{expr:?} never gave what was expected within {limit:?}; last: {result:?}\nlog:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
