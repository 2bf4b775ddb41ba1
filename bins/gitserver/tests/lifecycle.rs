//! `gitserver` starting and stopping as Kubernetes starts and stops it: alive but not ready
//! while another replica holds the migration lock; clones and pushes over HTTP and SSH that are
//! running at SIGTERM finish, while new connections are refused.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use diesel::sql_types::BigInt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use platform_core::accounts::{Scope, password, ssh_keys};
use platform_core::db::CORE_MIGRATIONS;
use platform_git::records::{self, NewRepo};
use platform_git::store::RepoStore;
use platform_test_support::{
    Direction, PausingProxy, ServiceProcess, free_port, fresh_database, migrated_database,
    service_env, unique_name, verified_user, wait_for_status,
};

const GITSERVER: &str = env!("CARGO_BIN_EXE_gitserver");

/// The key `Database::migrate_all` locks ("platform" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x0070_6c61_7466_6f72;

/// What a transfer carries: enough that it is caught in the middle.
const PAYLOAD_BYTES: usize = 8 << 20;

fn git(args: &[&str], cwd: &Path, ssh: Option<&str>) -> anyhow::Result<String> {
    let mut command = std::process::Command::new("git");
    command
        .args(["-c", "credential.helper=", "-c", "user.name=T", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(cwd);
    if let Some(ssh) = ssh {
        command.env("GIT_SSH_COMMAND", ssh);
    }
    let output = command.output()?;
    anyhow::ensure!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

fn ssh_keygen(path: &Path) -> anyhow::Result<String> {
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(path)
        .status()?;
    anyhow::ensure!(status.success(), "ssh-keygen failed");
    Ok(std::fs::read_to_string(path.with_extension("pub"))?)
}

/// Incompressible bytes, so that a pack is as large as its files.
fn noise(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn gitserver_env(
    database_url: String,
    repos: &Path,
    host_key: &Path,
) -> anyhow::Result<HashMap<String, String>> {
    Ok(HashMap::from([
        ("APP_DATABASE_URL".to_owned(), database_url),
        ("APP_REDIS_URL".to_owned(), service_env("PLATFORM_TEST_REDIS_URL")),
        ("APP_DOMAIN_URL".to_owned(), "http://localhost:8021".to_owned()),
        ("APP_REPOS_ROOT".to_owned(), repos.to_string_lossy().into_owned()),
        ("APP_SSH_SERVER_PRIVATE_KEY".to_owned(), hex::encode(std::fs::read(host_key)?)),
        ("APP_SSH_PORT".to_owned(), free_port().to_string()),
        ("APP_SHUTDOWN_GRACE_SECONDS".to_owned(), "60".to_owned()),
    ]))
}

#[tokio::test(flavor = "multi_thread")]
async fn started_while_another_replica_migrates_it_is_alive_and_waits_to_be_ready()
-> anyhow::Result<()> {
    let scratch = std::env::temp_dir().join(unique_name("gitserver-start"));
    std::fs::create_dir_all(scratch.join("repos"))?;
    let host_key = scratch.join("host_key");
    ssh_keygen(&host_key)?;
    let database_url = fresh_database().await?;
    // Another replica's migration, still running.
    let mut holder = AsyncPgConnection::establish(&database_url).await?;
    diesel::sql_query("SELECT pg_advisory_lock($1)")
        .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
        .execute(&mut holder)
        .await?;

    let env = gitserver_env(database_url, &scratch.join("repos"), &host_key)?;
    let server =
        ServiceProcess::start_until(Path::new(GITSERVER), &env, "port bound; starting").await?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    // Longer than a liveness probe's window of failures (3 x 1 s here): every probe is answered.
    let held = Instant::now();
    while held.elapsed() < Duration::from_secs(5) {
        let alive = client.get(server.url("/healthz")).send().await?;
        assert_eq!(alive.status(), 200, "/healthz while migrations wait");
        let ready = client.get(server.url("/readyz")).send().await?;
        assert_eq!(ready.status(), 503);
        let body = ready.text().await?;
        assert!(body.contains("applying database migrations"), "{body}");
        let api = client.get(server.url("/ada/repo.git/info/refs")).send().await?;
        assert_eq!(api.status(), 503, "git is not served before the schema is there");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(server.id().is_some(), "gitserver exited while waiting:\n{}", server.output());
    assert!(!server.output().contains("\"listening\""), "{}", server.output());

    diesel::sql_query("SELECT pg_advisory_unlock($1)")
        .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
        .execute(&mut holder)
        .await?;
    wait_for_status(&server.url("/readyz"), 200, Duration::from_secs(60)).await?;
    assert!(server.output().contains("applied database migrations"), "{}", server.output());
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// A running gitserver with one private repository `ada/big` holding [`PAYLOAD_BYTES`].
struct Fixture {
    scratch: PathBuf,
    server: ServiceProcess,
    ssh_addr: SocketAddr,
    token: String,
    user_key: PathBuf,
    disk: String,
    /// A clone with the first commit, to push from.
    work: PathBuf,
}

impl Fixture {
    async fn start() -> anyhow::Result<Self> {
        let scratch = std::env::temp_dir().join(unique_name("gitserver-drain"));
        let repos = scratch.join("repos");
        std::fs::create_dir_all(&repos)?;
        let (database_url, database) =
            migrated_database([CORE_MIGRATIONS, platform_git::GIT_MIGRATIONS]).await?;
        let hash = password::hash("correct horse battery")?;
        let (user_id, token) = verified_user(&database, "ada", &hash, &[Scope::RepoWrite]).await?;
        let user_key = scratch.join("ada_key");
        let public = ssh_keygen(&user_key)?;
        {
            let mut conn = database.get().await?;
            let parsed = ssh_keys::parse(&public).map_err(anyhow::Error::msg)?;
            ssh_keys::add(&mut conn, user_id, "laptop", &parsed).await?;
            let new = NewRepo {
                owner_id: user_id,
                name: "big",
                description: "",
                is_private: true,
                default_branch: "main",
                forked_from: None,
            };
            records::insert(&mut conn, new).await?;
        }
        RepoStore::new(&repos).create("ada", "big", "main").await?;

        let host_key = scratch.join("host_key");
        ssh_keygen(&host_key)?;
        let env = gitserver_env(database_url, &repos, &host_key)?;
        let ssh_port: u16 = env["APP_SSH_PORT"].parse()?;
        let server = ServiceProcess::start(Path::new(GITSERVER), &env).await?;
        wait_for_status(&server.url("/readyz"), 200, Duration::from_secs(30)).await?;

        let work = scratch.join("work");
        std::fs::create_dir_all(&work)?;
        git(&["init", "--quiet", "--initial-branch=main"], &work, None)?;
        git(&["config", "core.compression", "0"], &work, None)?;
        std::fs::write(work.join("first.bin"), noise(PAYLOAD_BYTES, 0x2545_f491_4f6c_dd1d))?;
        git(&["add", "."], &work, None)?;
        git(&["commit", "--quiet", "-m", "first"], &work, None)?;
        let fixture = Self {
            disk: repos.join("ada/big.git").to_string_lossy().into_owned(),
            scratch,
            ssh_addr: SocketAddr::from(([127, 0, 0, 1], ssh_port)),
            token,
            user_key,
            work,
            server,
        };
        git(
            &["push", "--quiet", &fixture.http_url(fixture.server.addr()), "main"],
            &fixture.work,
            None,
        )?;
        Ok(fixture)
    }

    fn http_url(&self, addr: SocketAddr) -> String {
        format!("http://ada:{}@{addr}/ada/big.git", self.token)
    }

    fn ssh_url(addr: SocketAddr) -> String {
        format!("ssh://git@{addr}/ada/big.git")
    }

    fn ssh_command(&self) -> String {
        format!(
            "ssh -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no \
             -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            self.user_key.display()
        )
    }

    /// A commit of [`PAYLOAD_BYTES`] more on top of the first, ready to push.
    fn second_commit(&self) -> anyhow::Result<String> {
        std::fs::write(self.work.join("second.bin"), noise(PAYLOAD_BYTES, 0x9e37_79b9_7f4a_7c15))?;
        git(&["add", "."], &self.work, None)?;
        git(&["commit", "--quiet", "-m", "second"], &self.work, None)?;
        git(&["rev-parse", "HEAD"], &self.work, None)
    }

    /// With a transfer held in the middle: SIGTERM, then new connections to both ports must be
    /// refused while it is held; then it goes on.
    async fn terminate_during(&self, proxy: &PausingProxy) -> anyhow::Result<()> {
        tokio::time::timeout(Duration::from_secs(60), proxy.held()).await?;
        self.server.terminate()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        for addr in [self.server.addr(), self.ssh_addr] {
            while tokio::net::TcpStream::connect(addr).await.is_ok() {
                anyhow::ensure!(Instant::now() < deadline, "{addr} still accepts after SIGTERM");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Held for a while after the stop, to show that nothing cut it meanwhile.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(self.server.id().is_some(), "gitserver exited with a transfer open");
        proxy.resume();
        Ok(())
    }

    async fn exits_cleanly(mut self) -> anyhow::Result<()> {
        let status = self.server.wait(Duration::from_secs(30)).await?;
        assert!(status.success(), "gitserver exited with {status}:\n{}", self.server.output());
        let _ = std::fs::remove_dir_all(&self.scratch);
        Ok(())
    }
}

/// Runs `git` in the background.
fn spawn_git(
    args: Vec<String>,
    cwd: PathBuf,
    ssh: Option<String>,
) -> tokio::task::JoinHandle<anyhow::Result<String>> {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        git(&args, &cwd, ssh.as_deref())
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_clone_running_at_sigterm_completes() -> anyhow::Result<()> {
    let fixture = Fixture::start().await?;
    let expected = git(&["--git-dir", &fixture.disk, "rev-parse", "main"], &fixture.scratch, None)?;
    let proxy = PausingProxy::start(fixture.server.addr(), Direction::Downstream, 1 << 20).await?;
    let target = fixture.scratch.join("clone");
    let clone = spawn_git(
        vec![
            "clone".into(),
            "--quiet".into(),
            fixture.http_url(proxy.addr()),
            target.to_string_lossy().into_owned(),
        ],
        fixture.scratch.clone(),
        None,
    );
    fixture.terminate_during(&proxy).await?;
    clone.await??;
    assert_eq!(git(&["rev-parse", "HEAD"], &target, None)?, expected);
    assert_eq!(std::fs::metadata(target.join("first.bin"))?.len(), PAYLOAD_BYTES as u64);
    fixture.exits_cleanly().await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_push_running_at_sigterm_completes() -> anyhow::Result<()> {
    let fixture = Fixture::start().await?;
    let pushed = fixture.second_commit()?;
    let proxy = PausingProxy::start(fixture.server.addr(), Direction::Upstream, 1 << 20).await?;
    let push = spawn_git(
        vec!["push".into(), "--quiet".into(), fixture.http_url(proxy.addr()), "main".into()],
        fixture.work.clone(),
        None,
    );
    fixture.terminate_during(&proxy).await?;
    push.await??;
    let main = git(&["--git-dir", &fixture.disk, "rev-parse", "main"], &fixture.scratch, None)?;
    assert_eq!(main, pushed, "the push's ref update was kept");
    fixture.exits_cleanly().await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ssh_clone_running_at_sigterm_completes() -> anyhow::Result<()> {
    let fixture = Fixture::start().await?;
    let expected = git(&["--git-dir", &fixture.disk, "rev-parse", "main"], &fixture.scratch, None)?;
    let proxy = PausingProxy::start(fixture.ssh_addr, Direction::Downstream, 1 << 20).await?;
    let target = fixture.scratch.join("clone");
    let clone = spawn_git(
        vec![
            "clone".into(),
            "--quiet".into(),
            Fixture::ssh_url(proxy.addr()),
            target.to_string_lossy().into_owned(),
        ],
        fixture.scratch.clone(),
        Some(fixture.ssh_command()),
    );
    fixture.terminate_during(&proxy).await?;
    clone.await??;
    assert_eq!(git(&["rev-parse", "HEAD"], &target, None)?, expected);
    assert_eq!(std::fs::metadata(target.join("first.bin"))?.len(), PAYLOAD_BYTES as u64);
    fixture.exits_cleanly().await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ssh_push_running_at_sigterm_completes() -> anyhow::Result<()> {
    let fixture = Fixture::start().await?;
    let pushed = fixture.second_commit()?;
    let proxy = PausingProxy::start(fixture.ssh_addr, Direction::Upstream, 1 << 20).await?;
    let push = spawn_git(
        vec!["push".into(), "--quiet".into(), Fixture::ssh_url(proxy.addr()), "main".into()],
        fixture.work.clone(),
        Some(fixture.ssh_command()),
    );
    fixture.terminate_during(&proxy).await?;
    push.await??;
    let main = git(&["--git-dir", &fixture.disk, "rev-parse", "main"], &fixture.scratch, None)?;
    assert_eq!(main, pushed, "the push's ref update was kept");
    fixture.exits_cleanly().await
}
