//! Git over smart HTTP with the real `git` client, against real PostgreSQL and Redis.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use platform_core::accounts::{Scope, access_tokens, password, users};
use platform_core::db::Database;
use platform_core::queue::{ConsumerOptions, Job, JobError, Queue};
use platform_git::api::RepoApi;
use platform_git::events::{PUSH_STREAM, PushEvent, PushEvents};
use platform_git::store::RepoStore;
use platform_git::transport::{GitOptions, GitService};
use platform_test_support::{Broker, BrokerKind, eventually, unique_name, verified_user};
use serde_json::json;

use common::PASSWORD;

struct Member {
    name: String,
    token: String,
}

struct Server {
    base: String,
    database: Database,
    queue: Queue,
    events: PushEvents,
    repos_root: PathBuf,
    scratch: PathBuf,
    password_hash: String,
    http: reqwest::Client,
    _broker: Option<Broker>,
}

impl Server {
    async fn start() -> anyhow::Result<Self> {
        Self::start_with(GitOptions::default(), None).await
    }

    /// Serves the repository API and git on a loopback port; events go to `queue_url` (the
    /// shared Redis when `None`).
    async fn start_with(options: GitOptions, broker: Option<Broker>) -> anyhow::Result<Self> {
        let common::Backing { database, accounts, queue } =
            common::backing(broker.as_ref().map(Broker::url)).await?;
        let scratch = std::env::temp_dir().join(unique_name("git-http"));
        let repos_root = scratch.join("repos");
        let store = RepoStore::new(&repos_root);
        let events = PushEvents::new(database.clone(), queue.clone());
        let git = GitService::new(
            accounts.clone(),
            store.clone(),
            events.clone(),
            options,
            &scratch.join("state"),
        )?;
        let api = RepoApi::new(accounts, store, "http://git.example.com".parse()?);
        let router =
            platform_git::api::api(api).split_for_parts().0.merge(platform_git::http::router(git));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .await
        });
        Ok(Self {
            base,
            database,
            queue,
            events,
            repos_root,
            scratch,
            password_hash: password::hash(PASSWORD)?,
            http: reqwest::Client::new(),
            _broker: broker,
        })
    }

    async fn member(&self, name: &str) -> anyhow::Result<Member> {
        let (_, token) =
            verified_user(&self.database, name, &self.password_hash, &[Scope::Admin]).await?;
        Ok(Member { name: name.to_owned(), token })
    }

    async fn token(&self, member: &Member, scopes: &[Scope]) -> anyhow::Result<String> {
        let mut conn = self.database.get().await?;
        let user = users::find_by_username(&mut conn, &member.name).await?.expect("exists");
        Ok(access_tokens::create(&mut conn, user.id, "scoped", scopes, None).await?.0)
    }

    async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
        as_: &Member,
    ) -> anyhow::Result<reqwest::StatusCode> {
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&as_.token)
            .json(&body)
            .send()
            .await?;
        Ok(response.status())
    }

    async fn create_repo(&self, owner: &Member, name: &str, private: bool) -> anyhow::Result<()> {
        let status = self
            .api(
                reqwest::Method::POST,
                "/api/repos",
                json!({"name": name, "private": private}),
                owner,
            )
            .await?;
        anyhow::ensure!(status == 201, "creating {name}: {status}");
        Ok(())
    }

    /// The clone URL, with `user:secret` credentials when given.
    fn url(&self, repo: &str, credentials: Option<(&str, &str)>) -> String {
        match credentials {
            Some((user, secret)) => {
                let secret: String = secret
                    .bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                            char::from(b).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect();
                let with_credentials = format!("http://{user}:{secret}@");
                format!("{}/{repo}.git", self.base.replacen("http://", &with_credentials, 1))
            }
            None => format!("{}/{repo}.git", self.base),
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.scratch.join(unique_name(name))
    }

    fn disk(&self, repo: &str) -> String {
        self.repos_root.join(format!("{repo}.git")).to_string_lossy().into_owned()
    }

    /// Collects push events from the queue.
    fn collect_events(&self) -> (Arc<Mutex<Vec<PushEvent>>>, tokio_util::sync::CancellationToken) {
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = tokio_util::sync::CancellationToken::new();
        let (queue, sink, until) =
            (self.queue.clone(), received.clone(), stop.clone().cancelled_owned());
        tokio::spawn(async move {
            let handler = move |job: Job<PushEvent>| {
                let sink = sink.clone();
                async move {
                    sink.lock().expect("not poisoned").push(job.payload);
                    Ok::<(), JobError>(())
                }
            };
            let result = queue
                .consume(PUSH_STREAM, "tests", ConsumerOptions::default(), handler, until)
                .await;
            if let Err(error) = &result {
                eprintln!("push event consumer failed: {error:?}");
            }
            result
        });
        (received, stop)
    }
}

/// Runs `git` (the given binary) with no credential helpers or prompts.
fn run_git(git: &str, args: &[&str], cwd: Option<&Path>) -> anyhow::Result<Output> {
    let mut command = std::process::Command::new(git);
    command
        .args([
            "-c",
            "credential.helper=",
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
        ])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "")
        .env_remove("GIT_DIR");
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    Ok(command.output()?)
}

fn git_ok(args: &[&str], cwd: Option<&Path>) -> anyhow::Result<String> {
    let output = run_git("git", args, cwd)?;
    anyhow::ensure!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A working copy with `commits` commits on `main`, each adding a file.
fn working_copy(dir: &Path, commits: usize) -> anyhow::Result<()> {
    let path = dir.to_string_lossy().into_owned();
    git_ok(&["init", "--quiet", "--initial-branch=main", &path], None)?;
    for i in 0..commits {
        std::fs::write(dir.join(format!("file{i}.txt")), format!("content {i}\n").repeat(50))?;
        git_ok(&["add", "."], Some(dir))?;
        git_ok(&["commit", "--quiet", "-m", &format!("commit {i}")], Some(dir))?;
    }
    Ok(())
}

/// The gits on this machine: the first on `PATH`, and the other version if one is installed.
fn client_gits() -> Vec<String> {
    let mut gits = vec!["git".to_owned()];
    let version = |git: &str| run_git(git, &["--version"], None).ok().map(|o| o.stdout);
    let default = version("git");
    for candidate in ["/usr/bin/git", "/usr/local/bin/git"] {
        if Path::new(candidate).exists() && version(candidate) != default {
            gits.push(candidate.to_owned());
        }
    }
    gits
}

#[tokio::test(flavor = "multi_thread")]
async fn clone_fetch_and_push_with_every_protocol_and_git_version() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let ada = server.member("ada").await?;
    server.create_repo(&ada, "engine", false).await?;
    let work = server.dir("work");
    working_copy(&work, 5)?;
    let push_url = server.url("ada/engine", Some(("ada", &ada.token)));
    git_ok(&["push", "--quiet", &push_url, "main"], Some(&work))?;
    let head = git_ok(&["rev-parse", "HEAD"], Some(&work))?;

    // The push is recorded: the repository's size on disk and when it was pushed to.
    let recorded = || async {
        let response = server
            .http
            .get(format!("{}/api/repos/ada/engine", server.base))
            .send()
            .await
            .expect("the API answers");
        response.json::<serde_json::Value>().await.unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let repository = loop {
        let repository = recorded().await;
        if repository["pushed_at"].is_string() {
            break repository;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "the push was not recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(repository["size_bytes"].as_i64().is_some_and(|size| size > 10_000), "{repository}");

    for git in client_gits() {
        for protocol in ["0", "2"] {
            let clone = server.dir("clone");
            let clone_arg = clone.to_string_lossy().into_owned();
            let url = server.url("ada/engine", None);
            let output = run_git(
                &git,
                &[
                    "-c",
                    &format!("protocol.version={protocol}"),
                    "clone",
                    "--quiet",
                    &url,
                    &clone_arg,
                ],
                None,
            )?;
            assert!(output.status.success(), "{git} v{protocol} clone: {}", stderr(&output));
            assert_eq!(git_ok(&["rev-parse", "HEAD"], Some(&clone))?, head);
            git_ok(&["fsck", "--strict", "--no-progress"], Some(&clone))?;

            let shallow = server.dir("shallow").to_string_lossy().into_owned();
            let output = run_git(
                &git,
                &[
                    "-c",
                    &format!("protocol.version={protocol}"),
                    "clone",
                    "--quiet",
                    "--depth",
                    "1",
                    &url,
                    &shallow,
                ],
                None,
            )?;
            assert!(output.status.success(), "{git} v{protocol} shallow: {}", stderr(&output));
            assert_eq!(git_ok(&["rev-list", "--count", "HEAD"], Some(Path::new(&shallow)))?, "1");

            let partial = server.dir("partial").to_string_lossy().into_owned();
            let output = run_git(
                &git,
                &[
                    "-c",
                    &format!("protocol.version={protocol}"),
                    "clone",
                    "--quiet",
                    "--filter=blob:none",
                    &url,
                    &partial,
                ],
                None,
            )?;
            assert!(output.status.success(), "{git} v{protocol} partial: {}", stderr(&output));
            // The server took the filter (the blobs left out are counted in the partial clone
            // test below).
            assert!(
                !stderr(&output).contains("filtering not recognized"),
                "{git} v{protocol} partial: {}",
                stderr(&output)
            );
            assert_eq!(
                git_ok(&["config", "remote.origin.partialclonefilter"], Some(Path::new(&partial)))?,
                "blob:none"
            );
            assert!(Path::new(&partial).join("file4.txt").exists(), "checkout fetched the blobs");
        }
    }

    // Protocol v2 is really spoken, not silently downgraded.
    let mut trace = std::process::Command::new("git");
    trace
        .args(["-c", "protocol.version=2", "ls-remote", &server.url("ada/engine", None)])
        .env("GIT_TRACE_PACKET", "1");
    let traced = trace.output()?;
    assert!(traced.status.success());
    let packets = stderr(&traced);
    assert!(packets.contains("< version 2"), "{packets}");
    assert!(packets.contains("> command=ls-refs"), "{packets}");

    // Fetch what another clone pushed: a new branch, a tag, then delete the branch.
    let clone = server.dir("clone");
    let clone_arg = clone.to_string_lossy().into_owned();
    git_ok(&["clone", "--quiet", &server.url("ada/engine", None), &clone_arg], None)?;
    git_ok(&["checkout", "--quiet", "-b", "topic"], Some(&work))?;
    std::fs::write(work.join("topic.txt"), "topic\n")?;
    git_ok(&["add", "."], Some(&work))?;
    git_ok(&["commit", "--quiet", "-m", "topic"], Some(&work))?;
    git_ok(&["tag", "-a", "v1.0", "-m", "release"], Some(&work))?;
    git_ok(&["push", "--quiet", &push_url, "topic", "--tags"], Some(&work))?;
    git_ok(&["fetch", "--quiet", "--tags", "origin"], Some(&clone))?;
    assert_eq!(
        git_ok(&["rev-parse", "origin/topic"], Some(&clone))?,
        git_ok(&["rev-parse", "topic"], Some(&work))?
    );
    assert_eq!(git_ok(&["tag"], Some(&clone))?, "v1.0");
    git_ok(&["push", "--quiet", &push_url, "--delete", "topic"], Some(&work))?;
    let disk = server.disk("ada/engine");
    let refs = git_ok(&["--git-dir", &disk, "for-each-ref", "--format=%(refname)"], None)?;
    assert_eq!(refs, "refs/heads/main\nrefs/tags/v1.0");
    git_ok(&["--git-dir", &disk, "fsck", "--strict", "--no-progress"], None)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn protected_branches_refuse_force_pushes_and_deletion_with_our_message() -> anyhow::Result<()>
{
    let server = Server::start().await?;
    let ada = server.member("ada").await?;
    let grace = server.member("grace").await?;
    server.create_repo(&ada, "engine", false).await?;
    let rules = "/api/repos/ada/engine/protected-branches";
    let status = server.api(reqwest::Method::POST, rules, json!({"pattern": "main"}), &ada).await?;
    assert_eq!(status, 201);
    let status = server
        .api(
            reqwest::Method::POST,
            rules,
            json!({"pattern": "release/*", "push_access": "admin"}),
            &ada,
        )
        .await?;
    assert_eq!(status, 201);
    let status = server
        .api(
            reqwest::Method::PUT,
            "/api/repos/ada/engine/collaborators/grace",
            json!({"role": "write"}),
            &ada,
        )
        .await?;
    assert_eq!(status, 201);

    let work = server.dir("work");
    working_copy(&work, 3)?;
    let url = server.url("ada/engine", Some(("ada", &ada.token)));
    git_ok(&["push", "--quiet", &url, "main", "main:release/1.0", "main:topic"], Some(&work))?;
    let disk = server.disk("ada/engine");
    let refs =
        || git_ok(&["--git-dir", &disk, "for-each-ref", "--format=%(refname) %(objectname)"], None);
    let before = refs()?;

    git_ok(&["reset", "--quiet", "--hard", "HEAD~1"], Some(&work))?;
    std::fs::write(work.join("rewritten.txt"), "history rewritten\n")?;
    git_ok(&["add", "."], Some(&work))?;
    git_ok(&["commit", "--quiet", "-m", "rewrite"], Some(&work))?;
    let forced = run_git("git", &["push", "--force", &url, "main"], Some(&work))?;
    assert!(!forced.status.success());
    assert!(
        stderr(&forced)
            .contains("remote: error: refs/heads/main is protected: force pushes are not allowed"),
        "{}",
        stderr(&forced)
    );
    let deleted = run_git("git", &["push", &url, "--delete", "main"], Some(&work))?;
    assert!(!deleted.status.success());
    assert!(
        stderr(&deleted).contains("remote: error: main is protected: it cannot be deleted"),
        "{}",
        stderr(&deleted)
    );
    // A writer may not push to an admins-only branch at all; the owner may.
    let grace_url = server.url("ada/engine", Some(("grace", &grace.token)));
    let refused =
        run_git("git", &["push", &grace_url, "HEAD:refs/heads/release/1.1"], Some(&work))?;
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains(
            "remote: error: release/1.1 is protected: only administrators may push to it"
        ),
        "{}",
        stderr(&refused)
    );
    assert_eq!(refs()?, before, "a refused push moved a ref");

    // Unprotected branches may be force-pushed and deleted.
    git_ok(&["push", "--quiet", "--force", &grace_url, "HEAD:topic"], Some(&work))?;
    git_ok(&["push", "--quiet", &grace_url, "--delete", "topic"], Some(&work))?;
    git_ok(&["push", "--quiet", &url, "HEAD:refs/heads/release/1.1"], Some(&work))?;
    git_ok(&["--git-dir", &disk, "fsck", "--strict", "--no-progress"], None)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn updates_smuggled_in_a_push_certificate_are_refused_and_no_ref_moves() -> anyhow::Result<()>
{
    let server = Server::start().await?;
    let ada = server.member("ada").await?;
    let grace = server.member("grace").await?;
    server.create_repo(&ada, "engine", false).await?;
    let rules = "/api/repos/ada/engine/protected-branches";
    let admins_only = json!({"pattern": "release/*", "push_access": "admin"});
    for rule in [json!({"pattern": "main"}), admins_only] {
        assert_eq!(server.api(reqwest::Method::POST, rules, rule, &ada).await?, 201);
    }
    let collaborator = "/api/repos/ada/engine/collaborators/grace";
    let status =
        server.api(reqwest::Method::PUT, collaborator, json!({"role": "write"}), &ada).await?;
    assert_eq!(status, 201);
    let work = server.dir("work");
    working_copy(&work, 3)?;
    let url = server.url("ada/engine", Some(("ada", &ada.token)));
    git_ok(&["push", "--quiet", &url, "main", "main:release/1.0"], Some(&work))?;
    let commits = common::HandBuilt::new(&work)?;
    let disk = server.disk("ada/engine");
    let refs =
        || git_ok(&["--git-dir", &disk, "for-each-ref", "--format=%(refname) %(objectname)"], None);
    let before = refs()?;

    for (what, member, update, reason) in commits.refused(&ada, &grace) {
        for certificate in [true, false] {
            let body = common::receive_pack_request(&work, &[update], certificate)?;
            let response = server
                .http
                .post(format!("{}/ada/engine.git/git-receive-pack", server.base))
                .basic_auth(&member.name, Some(&member.token))
                .header("content-type", "application/x-git-receive-pack-request")
                .body(body)
                .send()
                .await?;
            let status = response.status();
            let text = String::from_utf8_lossy(&response.bytes().await?).into_owned();
            if certificate {
                assert_eq!(status, 400, "{what} in a certificate: {text}");
                assert!(text.contains("signed pushes are not supported"), "{what}: {text}");
            } else {
                assert_eq!(status, 200, "{what}: {text}");
                assert!(text.contains(reason), "{what}: {text}");
                assert!(
                    text.contains(&format!("ng {} pre-receive hook declined", update.2)),
                    "{what}: {text}"
                );
            }
            assert_eq!(refs()?, before, "{what} (certificate: {certificate}) moved a ref");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn what_git_says_names_no_server_path() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let ada = server.member("ada").await?;
    server.create_repo(&ada, "engine", false).await?;
    let work = server.dir("work");
    working_copy(&work, 2)?;
    let url = server.url("ada/engine", Some(("ada", &ada.token)));
    git_ok(&["push", "--quiet", &url, "main"], Some(&work))?;
    let lock = Path::new(&server.disk("ada/engine")).join("refs/heads/main.lock");
    std::fs::write(&lock, "")?;
    std::fs::write(work.join("locked.txt"), "locked\n")?;
    git_ok(&["add", "."], Some(&work))?;
    git_ok(&["commit", "--quiet", "-m", "locked"], Some(&work))?;
    let locked = run_git("git", &["push", &url, "main"], Some(&work))?;
    std::fs::remove_file(&lock)?;
    let message = stderr(&locked);
    assert!(!locked.status.success(), "{message}");
    assert!(message.contains("'ada/engine.git/./refs/heads/main.lock'"), "{message}");
    let root = server.repos_root.canonicalize()?.to_string_lossy().into_owned();
    assert!(!message.contains(&root), "{message}");
    git_ok(&["push", "--quiet", &url, "main"], Some(&work))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn partial_clones_and_fetches_of_any_commit_work_over_http_in_every_protocol()
-> anyhow::Result<()> {
    let server = Server::start().await?;
    let ada = server.member("ada").await?;
    server.create_repo(&ada, "engine", false).await?;
    let work = server.dir("work");
    working_copy(&work, 5)?;
    let url = server.url("ada/engine", Some(("ada", &ada.token)));
    git_ok(&["push", "--quiet", &url, "main"], Some(&work))?;
    let old = git_ok(&["rev-parse", "HEAD~2"], Some(&work))?;
    for version in ["0", "1", "2"] {
        let protocol = format!("protocol.version={version}");
        let dest = server.dir("partial");
        let dest_path = dest.to_string_lossy().into_owned();
        let cloned = run_git(
            "git",
            &[
                "-c",
                &protocol,
                "clone",
                "--quiet",
                "--no-checkout",
                "--filter=blob:none",
                &url,
                &dest_path,
            ],
            None,
        )?;
        assert!(cloned.status.success(), "v{version}: {}", stderr(&cloned));
        assert!(
            !stderr(&cloned).contains("filtering not recognized"),
            "v{version}: {}",
            stderr(&cloned)
        );
        let missing = || -> anyhow::Result<usize> {
            let listed =
                git_ok(&["rev-list", "--objects", "--missing=print", "--all"], Some(&dest))?;
            Ok(listed.lines().filter(|line| line.starts_with('?')).count())
        };
        let before = missing()?;
        assert_eq!(before, 5, "v{version}: every blob is left out");
        // An old file, read later, fetches exactly the blob it needs.
        let shown = git_ok(&["-c", &protocol, "show", "HEAD~4:file0.txt"], Some(&dest))?;
        assert!(shown.starts_with("content 0"), "v{version}: {shown}");
        assert_eq!(missing()?, before - 1, "v{version}");

        // A commit that is no branch or tag tip can be fetched by its id.
        if version != "1" {
            let empty = server.dir("by-id");
            git_ok(&["init", "--quiet", &empty.to_string_lossy()], None)?;
            let fetched = run_git(
                "git",
                &["-c", &protocol, "fetch", "--quiet", "--depth", "1", &url, &old],
                Some(&empty),
            )?;
            assert!(fetched.status.success(), "v{version}: {}", stderr(&fetched));
            assert_eq!(git_ok(&["cat-file", "-t", &old], Some(&empty))?, "commit");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_git_sign_ins_are_limited_like_the_login() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let ada = server.member("ada").await?;
    server.create_repo(&ada, "engine", true).await?;
    let refs = format!("{}/ada/engine.git/info/refs?service=git-upload-pack", server.base);
    let attempt =
        |password: &str| server.http.get(&refs).basic_auth("ada", Some(password.to_owned())).send();
    for n in 0..5 {
        assert_eq!(attempt(&format!("wrong {n}")).await?.status(), 401, "attempt {n}");
    }
    let limited = attempt(common::PASSWORD).await?;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"].to_str()?.parse()?;
    assert!((1..=900).contains(&retry_after), "{retry_after}");
    assert!(limited.text().await?.contains("too many failed sign-in attempts"));
    // git shows the refusal, and the clone gets nothing.
    let url = server.url("ada/engine", Some(("ada", common::PASSWORD)));
    let clone =
        run_git("git", &["clone", "--quiet", &url, &server.dir("clone").to_string_lossy()], None)?;
    assert!(!clone.status.success());
    assert!(stderr(&clone).contains("429"), "{}", stderr(&clone));
    // The account's token still works.
    let with_token = server.http.get(&refs).basic_auth("ada", Some(&ada.token)).send().await?;
    assert_eq!(with_token.status(), 200);
    Ok(())
}

/// A stream for `git fast-import`: `commits` commits on `main`, each adding a file and tagged
/// (annotated) `v{n}`, and when `big` is given a commit off the history carrying
/// `assets/big.bin` of that many bytes, tagged `v-big`.
fn tagged_history(commits: usize, big: Option<usize>) -> Vec<u8> {
    let mut stream = Vec::new();
    let data = |stream: &mut Vec<u8>, bytes: &[u8]| {
        stream.extend_from_slice(format!("data {}\n", bytes.len()).as_bytes());
        stream.extend_from_slice(bytes);
        stream.push(b'\n');
    };
    for n in 1..=commits {
        stream.extend_from_slice(
            format!(
                "commit refs/heads/main\nmark :{n}\ncommitter T <t@example.com> {} +0000\n",
                1_700_000_000 + n
            )
            .as_bytes(),
        );
        data(&mut stream, format!("commit {n}").as_bytes());
        if n > 1 {
            stream.extend_from_slice(format!("from :{}\n", n - 1).as_bytes());
        }
        stream.extend_from_slice(format!("M 644 inline files/file{n}.txt\n").as_bytes());
        data(&mut stream, format!("content {n}\n").as_bytes());
        stream.extend_from_slice(
            format!("tag v{n}\nfrom :{n}\ntagger T <t@example.com> {} +0000\n", 1_700_000_000 + n)
                .as_bytes(),
        );
        data(&mut stream, format!("release {n}").as_bytes());
    }
    if let Some(size) = big {
        stream.extend_from_slice(
            b"commit refs/heads/side\nmark :999999\ncommitter T <t@example.com> 1800000000 +0000\n",
        );
        data(&mut stream, b"big");
        stream.extend_from_slice(
            format!("from :{}\nM 644 inline assets/big.bin\n", commits / 2).as_bytes(),
        );
        data(&mut stream, &vec![b'x'; size]);
        stream.extend_from_slice(
            b"tag v-big\nfrom :999999\ntagger T <t@example.com> 1800000000 +0000\n",
        );
        data(&mut stream, b"big release");
    }
    stream
}

#[tokio::test(flavor = "multi_thread")]
async fn five_hundred_tags_in_one_push_land_or_are_refused_by_the_file_that_breaks_the_limit()
-> anyhow::Result<()> {
    let options = GitOptions { max_blob_bytes: 64 * 1024, ..GitOptions::default() };
    let server = Server::start_with(options, None).await?;
    let ada = server.member("ada").await?;
    server.create_repo(&ada, "mirror", false).await?;
    let url = server.url("ada/mirror", Some(("ada", &ada.token)));
    let work = server.dir("work");
    git_ok(&["init", "--quiet", &work.to_string_lossy()], None)?;
    let mut import = std::process::Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(&work)
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    {
        use std::io::Write as _;
        import.stdin.take().expect("piped").write_all(&tagged_history(500, Some(100 * 1024)))?;
    }
    anyhow::ensure!(import.wait()?.success(), "git fast-import failed");
    git_ok(&["update-ref", "-d", "refs/heads/side"], Some(&work))?;
    let disk = server.disk("ada/mirror");
    let refs = || git_ok(&["--git-dir", &disk, "for-each-ref", "--format=%(refname)"], None);

    let refused = run_git("git", &["push", &url, "refs/tags/*:refs/tags/*"], Some(&work))?;
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains(
            "refs/tags/v-big: assets/big.bin is 102400 bytes, over the limit of 65536 bytes per file"
        ),
        "{}",
        stderr(&refused)
    );
    assert_eq!(refs()?, "", "a refused push created refs");

    git_ok(&["tag", "-d", "v-big"], Some(&work))?;
    git_ok(&["push", "--quiet", &url, "main", "refs/tags/*:refs/tags/*"], Some(&work))?;
    assert_eq!(refs()?.lines().filter(|r| r.starts_with("refs/tags/v")).count(), 500);
    assert_eq!(
        git_ok(&["--git-dir", &disk, "rev-parse", "v500^{commit}"], None)?,
        git_ok(&["rev-parse", "main"], Some(&work))?
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn files_over_the_limit_and_pushes_over_the_limit_are_refused() -> anyhow::Result<()> {
    let options =
        GitOptions { max_blob_bytes: 64 * 1024, max_push_bytes: 1 << 20, ..GitOptions::default() };
    let server = Server::start_with(options, None).await?;
    let ada = server.member("ada").await?;
    server.create_repo(&ada, "engine", false).await?;
    let url = server.url("ada/engine", Some(("ada", &ada.token)));
    let work = server.dir("work");
    working_copy(&work, 1)?;
    git_ok(&["push", "--quiet", &url, "main"], Some(&work))?;

    let random = |len: usize| -> Vec<u8> {
        let mut state = 0x2545_f491_4f6c_dd1d_u64 ^ len as u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    };
    std::fs::write(work.join("big.bin"), random(100 * 1024))?;
    git_ok(&["add", "."], Some(&work))?;
    git_ok(&["commit", "--quiet", "-m", "big file"], Some(&work))?;
    let refused = run_git("git", &["push", &url, "main"], Some(&work))?;
    assert!(!refused.status.success());
    assert!(
        stderr(&refused)
            .contains("big.bin is 102400 bytes, over the limit of 65536 bytes per file"),
        "{}",
        stderr(&refused)
    );

    git_ok(&["reset", "--quiet", "--hard", "HEAD~1"], Some(&work))?;
    for i in 0..40 {
        std::fs::write(work.join(format!("part{i}.bin")), random(60 * 1024 + i))?;
    }
    git_ok(&["add", "."], Some(&work))?;
    git_ok(&["commit", "--quiet", "-m", "many parts"], Some(&work))?;
    let refused = run_git("git", &["push", &url, "main"], Some(&work))?;
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert!(
        message.contains("exceeds maximum allowed size") || message.contains("413"),
        "{message}"
    );
    let disk = server.disk("ada/engine");
    assert_eq!(git_ok(&["--git-dir", &disk, "rev-list", "--count", "main"], None)?, "1");
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Anonymous,
    Stranger,
    Reader,
    Writer,
    Owner,
}

#[tokio::test(flavor = "multi_thread")]
async fn the_authorization_matrix_of_clone_and_push() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let owner = server.member("owner").await?;
    let stranger = server.member("stranger").await?;
    let reader = server.member("reader").await?;
    let writer = server.member("writer").await?;
    let work = server.dir("work");
    working_copy(&work, 1)?;
    for (name, private) in [("public", false), ("private", true)] {
        server.create_repo(&owner, name, private).await?;
        for (member, role) in [(&reader, "read"), (&writer, "write")] {
            let path = format!("/api/repos/owner/{name}/collaborators/{}", member.name);
            assert_eq!(
                server.api(reqwest::Method::PUT, &path, json!({"role": role}), &owner).await?,
                201
            );
        }
        let url = server.url(&format!("owner/{name}"), Some(("owner", &owner.token)));
        git_ok(&["push", "--quiet", &url, "main"], Some(&work))?;
    }

    let mut failures = Vec::new();
    let mut cells = 0;
    let mut branch = 0;
    for (who, member) in [
        (Who::Anonymous, None),
        (Who::Stranger, Some(&stranger)),
        (Who::Reader, Some(&reader)),
        (Who::Writer, Some(&writer)),
        (Who::Owner, Some(&owner)),
    ] {
        for secret_kind in ["password", "token"] {
            if who == Who::Anonymous && secret_kind == "token" {
                continue;
            }
            let credentials = member.map(|m| {
                (
                    m.name.as_str(),
                    if secret_kind == "password" { PASSWORD } else { m.token.as_str() },
                )
            });
            for (name, private) in [("public", false), ("private", true)] {
                let url = server.url(&format!("owner/{name}"), credentials);
                let clone = server.dir("clone").to_string_lossy().into_owned();
                let cloned = run_git("git", &["clone", "--quiet", &url, &clone], None)?;
                let may_read = !private || matches!(who, Who::Reader | Who::Writer | Who::Owner);
                cells += 1;
                if cloned.status.success() != may_read {
                    failures
                        .push(format!("{who:?} ({secret_kind}) clone {name}: {}", stderr(&cloned)));
                }
                branch += 1;
                let pushed = run_git(
                    "git",
                    &["push", "--quiet", &url, &format!("main:refs/heads/b{branch}")],
                    Some(&work),
                )?;
                let may_write = matches!(who, Who::Writer | Who::Owner);
                cells += 1;
                if pushed.status.success() != may_write {
                    failures
                        .push(format!("{who:?} ({secret_kind}) push {name}: {}", stderr(&pushed)));
                }
                // Whoever may not, learns nothing more than git's generic refusals.
                if !may_read && who == Who::Anonymous {
                    assert!(
                        stderr(&cloned).contains("could not read Username")
                            || stderr(&cloned).contains("Authentication failed"),
                        "{}",
                        stderr(&cloned)
                    );
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // A read-only token reads but cannot push; a wrong password is refused.
    let read_only = server.token(&writer, &[Scope::RepoRead]).await?;
    let url = server.url("owner/private", Some(("writer", &read_only)));
    let clone = server.dir("clone").to_string_lossy().into_owned();
    assert!(run_git("git", &["clone", "--quiet", &url, &clone], None)?.status.success());
    assert!(
        !run_git("git", &["push", "--quiet", &url, "main:refs/heads/scoped"], Some(&work))?
            .status
            .success()
    );
    let wrong = server.url("owner/public", Some(("writer", "wrong password")));
    let output =
        run_git("git", &["push", "--quiet", &wrong, "main:refs/heads/wrong"], Some(&work))?;
    assert!(!output.status.success());
    assert!(stderr(&output).contains("Authentication failed"), "{}", stderr(&output));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pushes_to_one_branch_have_one_winner() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let ada = server.member("ada").await?;
    server.create_repo(&ada, "engine", false).await?;
    let url = server.url("ada/engine", Some(("ada", &ada.token)));
    let base = server.dir("base");
    working_copy(&base, 1)?;
    git_ok(&["push", "--quiet", &url, "main"], Some(&base))?;

    let mut copies = Vec::new();
    for i in 0..2 {
        let copy = server.dir("copy");
        git_ok(&["clone", "--quiet", &url, &copy.to_string_lossy()], None)?;
        std::fs::write(copy.join(format!("side{i}.txt")), format!("side {i}\n"))?;
        git_ok(&["add", "."], Some(&copy))?;
        git_ok(&["commit", "--quiet", "-m", &format!("side {i}")], Some(&copy))?;
        copies.push(copy);
    }
    let pushes: Vec<_> = copies
        .iter()
        .map(|copy| {
            let (copy, url) = (copy.clone(), url.clone());
            std::thread::spawn(move || run_git("git", &["push", &url, "main"], Some(&copy)))
        })
        .collect();
    let results: Vec<Output> =
        pushes.into_iter().map(|p| p.join().expect("push thread")).collect::<Result<_, _>>()?;
    let won = results.iter().filter(|o| o.status.success()).count();
    assert_eq!(won, 1, "{}", results.iter().map(stderr).collect::<Vec<_>>().join("\n---\n"));
    let loser = results.iter().find(|o| !o.status.success()).map(stderr).unwrap_or_default();
    assert!(
        loser.contains("non-fast-forward")
            || loser.contains("fetch first")
            || loser.contains("failed to update ref")
            || loser.contains("cannot lock ref"),
        "{loser}"
    );
    git_ok(&["--git-dir", &server.disk("ada/engine"), "fsck", "--strict", "--no-progress"], None)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_killed_mid_push_leaves_the_repository_intact() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let ada = server.member("ada").await?;
    server.create_repo(&ada, "engine", false).await?;
    let url = server.url("ada/engine", Some(("ada", &ada.token)));
    let work = server.dir("work");
    working_copy(&work, 1)?;
    git_ok(&["push", "--quiet", &url, "main"], Some(&work))?;
    let disk = server.disk("ada/engine");
    let before = git_ok(&["--git-dir", &disk, "rev-parse", "main"], None)?;

    // A push whose client disappears halfway through its pack: the request is written by hand
    // so that the connection drops at a known point.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let data: Vec<u8> = (0..4 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(work.join("large.bin"), &data)?;
    git_ok(&["add", "."], Some(&work))?;
    git_ok(&["commit", "--quiet", "-m", "large"], Some(&work))?;
    let new = git_ok(&["rev-parse", "HEAD"], Some(&work))?;
    let mut pack_objects = std::process::Command::new("git")
        .args(["pack-objects", "--stdout", "--revs", "--quiet"])
        .current_dir(&work)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    {
        use std::io::Write as _;
        let mut stdin = pack_objects.stdin.take().expect("piped");
        writeln!(stdin, "{new}\n^{before}")?;
    }
    let pack = pack_objects.wait_with_output()?.stdout;
    assert!(pack.len() > 1 << 20, "the pack is {} bytes", pack.len());
    let mut body = Vec::new();
    platform_git::pktline::write(
        &mut body,
        format!("{before} {new} refs/heads/main\0report-status side-band-64k agent=test")
            .as_bytes(),
    );
    body.extend_from_slice(b"0000");
    body.extend_from_slice(&pack[..pack.len() / 2]);
    let credentials = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("ada:{}", ada.token))
    };
    let address = server.base.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&address).await?;
    {
        use tokio::io::AsyncWriteExt as _;
        let head = format!(
            "POST /ada/engine.git/git-receive-pack HTTP/1.1\r\nHost: {address}\r\n\
             Authorization: Basic {credentials}\r\n\
             Content-Type: application/x-git-receive-pack-request\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        );
        socket.write_all(head.as_bytes()).await?;
        socket.write_all(format!("{:x}\r\n", body.len()).as_bytes()).await?;
        socket.write_all(&body).await?;
        socket.write_all(b"\r\n").await?;
        socket.flush().await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(socket);

    // Git on the server sees its input end, refuses the pack and cleans up after itself.
    let objects = Path::new(&disk).join("objects");
    let quarantined = || {
        std::fs::read_dir(&objects)
            .map(|entries| {
                entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with("incoming-"))
            })
            .unwrap_or(false)
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    eventually("git to clean up the aborted push", Duration::from_secs(20), || !quarantined())
        .await?;
    assert_eq!(git_ok(&["--git-dir", &disk, "rev-parse", "main"], None)?, before);
    git_ok(&["--git-dir", &disk, "fsck", "--strict", "--no-progress"], None)?;
    git_ok(&["push", "--quiet", &url, "main"], Some(&work))?;
    assert_eq!(
        git_ok(&["--git-dir", &disk, "rev-parse", "main"], None)?,
        git_ok(&["rev-parse", "HEAD"], Some(&work))?
    );
    git_ok(&["--git-dir", &disk, "fsck", "--strict", "--no-progress"], None)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_push_yields_one_event_even_when_the_queue_is_down() -> anyhow::Result<()> {
    let broker = Broker::start(BrokerKind::Redis)?;
    let mut server = Server::start_with(GitOptions::default(), Some(broker)).await?;
    let ada = server.member("ada").await?;
    server.create_repo(&ada, "engine", false).await?;
    let url = server.url("ada/engine", Some(("ada", &ada.token)));
    let (events, stop) = server.collect_events();
    let work = server.dir("work");
    working_copy(&work, 2)?;
    git_ok(&["push", "--quiet", &url, "main"], Some(&work))?;
    let first = git_ok(&["rev-parse", "main"], Some(&work))?;
    git_ok(&["push", "--quiet", &url, "main:topic", "main:other"], Some(&work))?;
    eventually("two push events", Duration::from_secs(20), || {
        events.lock().expect("not poisoned").len() >= 2
    })
    .await?;
    {
        let events = events.lock().expect("not poisoned");
        assert_eq!(events[0].repository, "ada/engine");
        assert_eq!(events[0].pusher, "ada");
        assert_eq!(events[0].refs.len(), 1);
        assert_eq!(events[0].refs[0].name, "refs/heads/main");
        assert!(events[0].refs[0].old.bytes().all(|b| b == b'0'));
        assert_eq!(events[0].refs[0].new, first);
        let mut names: Vec<&str> = events[1].refs.iter().map(|r| r.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["refs/heads/other", "refs/heads/topic"]);
    }
    stop.cancel();

    // The queue goes away; the push still succeeds, and its event is published once it is back.
    let broker = server._broker.as_mut().expect("own broker");
    broker.stop()?;
    git_ok(&["push", "--quiet", &url, "--delete", "other"], Some(&work))?;
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        count: i64,
    }
    let kept = || async {
        use diesel_async::RunQueryDsl as _;
        let mut conn = server.database.get().await.expect("connection");
        diesel::sql_query("SELECT count(*) AS count FROM push_event_outbox")
            .get_result::<Count>(&mut conn)
            .await
            .map(|c| c.count)
            .unwrap_or(-1)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while kept().await != 1 {
        anyhow::ensure!(std::time::Instant::now() < deadline, "the event was not kept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server._broker.as_mut().expect("own broker").restart()?;
    let (events, stop) = server.collect_events();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while kept().await != 0 {
        anyhow::ensure!(std::time::Instant::now() < deadline, "the kept event was not published");
        let _ = server.events.relay_older_than(Duration::ZERO).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let is_deletion = |e: &PushEvent| {
        e.refs.iter().any(|r| r.name == "refs/heads/other" && r.new.bytes().all(|b| b == b'0'))
    };
    eventually("the kept event", Duration::from_secs(20), || {
        events.lock().expect("not poisoned").iter().any(is_deletion)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = events.lock().expect("not poisoned").clone();
    stop.cancel();
    let deletions: Vec<&PushEvent> = events.iter().filter(|e| is_deletion(e)).collect();
    assert_eq!(deletions.len(), 1, "{events:?}");
    let ids: std::collections::HashSet<_> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), events.len(), "an event arrived twice: {events:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_a_4xx_and_the_server_carries_on() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let ada = server.member("ada").await?;
    server.create_repo(&ada, "engine", false).await?;
    let client = &server.http;
    let endpoint = |service: &str| format!("{}/ada/engine.git/{service}", server.base);
    let post = |service: &'static str, content_type: &'static str, body: Vec<u8>, gzip: bool| {
        let mut request = client
            .post(endpoint(service))
            .basic_auth("ada", Some(&ada.token))
            .header("content-type", content_type)
            .body(body);
        if gzip {
            request = request.header("content-encoding", "gzip");
        }
        request.send()
    };
    let upload = "application/x-git-upload-pack-request";
    let receive = "application/x-git-receive-pack-request";
    let cases: Vec<(&str, reqwest::Response)> = vec![
        (
            "garbage upload-pack",
            post("git-upload-pack", upload, b"zzzz not pkt-lines".to_vec(), false).await?,
        ),
        (
            "truncated pkt-line",
            post("git-upload-pack", upload, b"0032want ".to_vec(), false).await?,
        ),
        (
            "garbage receive-pack",
            post("git-receive-pack", receive, b"\x00\x01\x02garbage".to_vec(), false).await?,
        ),
        (
            "bad command",
            post("git-receive-pack", receive, b"0010not a command0000".to_vec(), false).await?,
        ),
        (
            "wrong content type",
            post("git-upload-pack", "application/json", b"0000".to_vec(), false).await?,
        ),
        (
            "truncated gzip",
            post(
                "git-upload-pack",
                upload,
                vec![0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x33, 0x30],
                true,
            )
            .await?,
        ),
        ("not gzip at all", post("git-receive-pack", receive, b"plain text".to_vec(), true).await?),
    ];
    for (case, response) in cases {
        let status = response.status();
        assert!(status.is_client_error(), "{case}: {status} {}", response.text().await?);
    }
    // Paths no repository can have: a clear 400, never a 500 (nor an error in the log).
    for path in ["ada/engine%00.git", "ada%00/engine.git", "ada/engine%0a.git", "ada/%01"] {
        for credentials in [None, Some(("ada", ada.token.as_str()))] {
            let mut request =
                client.get(format!("{}/{path}/info/refs?service=git-upload-pack", server.base));
            if let Some((user, token)) = credentials {
                request = request.basic_auth(user, Some(token));
            }
            let response = request.send().await?;
            assert_eq!(response.status(), 400, "{path}");
            assert_eq!(response.text().await?, "that is not a repository path\n", "{path}");
        }
        let push = client
            .post(format!("{}/{path}/git-receive-pack", server.base))
            .basic_auth("ada", Some(&ada.token))
            .header("content-type", receive)
            .body("0000")
            .send()
            .await?;
        assert_eq!(push.status(), 400, "{path}");
    }
    for path in ["/api/repos/ada/engine%00", "/api/repos/ada%00/engine", "/api/users/ada%00/repos"]
    {
        let response = client.get(format!("{}{path}", server.base)).send().await?;
        assert_eq!(response.status(), 404, "{path}");
    }
    let dumb = client.get(format!("{}/ada/engine.git/info/refs", server.base)).send().await?;
    assert_eq!(dumb.status(), 400);
    let head = client.get(format!("{}/ada/engine.git/HEAD", server.base)).send().await?;
    assert_eq!(head.status(), 404, "no dumb HTTP");

    // Still serving.
    let advert = client
        .get(format!("{}/ada/engine.git/info/refs?service=git-upload-pack", server.base))
        .send()
        .await?;
    assert_eq!(advert.status(), 200);
    assert_eq!(advert.headers()["content-type"], "application/x-git-upload-pack-advertisement");
    assert_eq!(advert.headers()["cache-control"], "no-cache, max-age=0, must-revalidate");
    let anonymous_push = client
        .get(format!("{}/ada/engine.git/info/refs?service=git-receive-pack", server.base))
        .send()
        .await?;
    assert_eq!(anonymous_push.status(), 401);
    assert!(anonymous_push.headers()["www-authenticate"].to_str()?.starts_with("Basic"));
    Ok(())
}
