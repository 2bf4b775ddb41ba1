//! Watching repositories: the subscription routes in-process, who a push is told to, and the
//! mails queued for them, against real PostgreSQL, Redis, NATS and the real `git`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use diesel_async::RunQueryDsl as _;
use platform_core::accounts::{Accounts, MAIL_STREAM, Scope, password};
use platform_core::config::{NatsConfig, SecretUrl};
use platform_core::db::Database;
use platform_core::queue::{ConsumerOptions, Job, JobError, Queue, QueueOptions};
use platform_core::telemetry::Metrics;
use platform_git::api::RepoApi;
use platform_git::browse::{Browser, Limits};
use platform_git::events::{PushEvent, RefChange};
use platform_git::store::RepoStore;
use platform_git::watches::{self, Notifier};
use platform_test_support::{service_env, unique_name, verified_user};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use common::{PASSWORD, ZERO};

const PUBLIC_URL: &str = "https://git.example.com";

struct Answer {
    status: StatusCode,
    body: Value,
    text: String,
}

struct App {
    router: Router,
    database: Database,
    queue: Queue,
    repos_root: PathBuf,
    password_hash: String,
}

/// A user of the suite, with a token holding every scope.
struct Member {
    id: i64,
    name: String,
    token: String,
}

impl App {
    async fn new() -> anyhow::Result<Self> {
        let common::Backing { database, accounts, queue } = common::backing(None).await?;
        let repos_root = std::env::temp_dir().join(unique_name("repos"));
        Ok(Self {
            router: router(accounts, &repos_root)?,
            database,
            queue,
            repos_root,
            password_hash: password::hash(PASSWORD)?,
        })
    }

    async fn member(&self, name: &str) -> anyhow::Result<Member> {
        let (id, token) =
            verified_user(&self.database, name, &self.password_hash, &[Scope::Admin]).await?;
        Ok(Member { id, name: name.to_owned(), token })
    }

    async fn sql(&self, statement: &str, id: i64) -> anyhow::Result<()> {
        let mut conn = self.database.get().await?;
        diesel::sql_query(statement)
            .bind::<diesel::sql_types::BigInt, _>(id)
            .execute(&mut conn)
            .await?;
        Ok(())
    }

    async fn unverified(&self, name: &str) -> anyhow::Result<Member> {
        let member = self.member(name).await?;
        self.sql("UPDATE users SET email_verified_at = NULL WHERE id = $1", member.id).await?;
        Ok(member)
    }

    async fn platform_admin(&self, name: &str) -> anyhow::Result<Member> {
        let member = self.member(name).await?;
        self.sql("UPDATE users SET is_admin = true WHERE id = $1", member.id).await?;
        Ok(member)
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .extension(axum::extract::ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 1))));
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .expect("valid request");
        let response = self.router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer { status, body, text }
    }

    async fn create_repo(&self, owner: &Member, name: &str, private: bool) -> anyhow::Result<i64> {
        let body = json!({"name": name, "private": private});
        let answer = self.call("POST", "/api/repos", Some(body), Some(&owner.token)).await;
        anyhow::ensure!(answer.status == StatusCode::CREATED, "{}", answer.text);
        answer.body["id"].as_i64().ok_or_else(|| anyhow::anyhow!("no id: {}", answer.text))
    }

    async fn watch(&self, who: &Member, repo: &str) -> Answer {
        self.call("PUT", &format!("/api/repos/{repo}/subscription"), None, Some(&who.token)).await
    }

    async fn collaborate(&self, owner: &Member, repo: &str, who: &Member, role: &str) {
        let path = format!("/api/repos/{repo}/collaborators/{}", who.name);
        let answer = self.call("PUT", &path, Some(json!({"role": role})), Some(&owner.token)).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    }

    async fn recipients(&self, repository_id: i64, pusher: &Member) -> anyhow::Result<Vec<String>> {
        let mut conn = self.database.get().await?;
        let recipients = watches::recipients(&mut conn, repository_id, pusher.id).await?;
        Ok(recipients.into_iter().map(|r| r.username).collect())
    }

    fn disk_path(&self, owner: &str, name: &str) -> PathBuf {
        self.repos_root.join(owner).join(format!("{name}.git"))
    }
}

fn router(accounts: Accounts, repos_root: &Path) -> anyhow::Result<Router> {
    let repos = RepoApi::new(accounts.clone(), RepoStore::new(repos_root), PUBLIC_URL.parse()?);
    let routes = platform_core::accounts::api(accounts).merge(platform_git::api::api(repos));
    Ok(platform_core::api::documented(routes, "platform", "test"))
}

fn logins(answer: &Answer) -> Vec<String> {
    answer.body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["login"].as_str().map(str::to_owned))
        .collect()
}

fn full_names(answer: &Answer) -> Vec<String> {
    answer.body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["full_name"].as_str().map(str::to_owned))
        .collect()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|name| (*name).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_watches_and_unwatches_a_repository() -> anyhow::Result<()> {
    let app = App::new().await?;
    let ada = app.member("ada").await?;
    let bob = app.member("bob").await?;
    app.create_repo(&ada, "engine", false).await?;
    let subscription = "/api/repos/ada/engine/subscription";

    let answer = app.call("GET", subscription, None, Some(&bob.token)).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.text);
    assert_eq!(answer.body["error"]["code"], "not_found");
    assert_eq!(answer.body["error"]["message"], "subscription \"ada/engine\" not found");

    // No body at all, as `gh api -X PUT` sends it.
    let watched = app.watch(&bob, "ada/engine").await;
    assert_eq!(watched.status, StatusCode::OK, "{}", watched.text);
    assert_eq!(watched.body["subscribed"], true);
    assert_eq!(watched.body["ignored"], false);
    assert!(watched.body["reason"].is_null(), "{}", watched.text);
    assert_eq!(watched.body["url"], format!("{PUBLIC_URL}/api/repos/ada/engine/subscription"));
    assert_eq!(watched.body["repository_url"], format!("{PUBLIC_URL}/api/repos/ada/engine"));
    assert!(watched.body["created_at"].is_string(), "{}", watched.text);
    // Watching again changes nothing, GitHub's body included.
    let again = app
        .call(
            "PUT",
            subscription,
            Some(json!({"subscribed": true, "ignored": false})),
            Some(&bob.token),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.body, watched.body);
    let got = app.call("GET", subscription, None, Some(&bob.token)).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text);
    assert_eq!(got.body, watched.body);

    // The repository's watchers, and the user's watched repositories.
    let subscribers = app.call("GET", "/api/repos/ada/engine/subscribers", None, None).await;
    assert_eq!(subscribers.status, StatusCode::OK, "{}", subscribers.text);
    assert_eq!(subscribers.body["items"], json!([{"login": "bob", "id": bob.id}]));
    assert_eq!(subscribers.body["total"], 1);
    let mine = app.call("GET", "/api/user/subscriptions", None, Some(&bob.token)).await;
    assert_eq!(mine.status, StatusCode::OK, "{}", mine.text);
    assert_eq!(full_names(&mine), names(&["ada/engine"]));
    assert_eq!(mine.body["items"][0]["permission"], "read");
    assert_eq!(mine.body["total"], 1);
    let none = app.call("GET", "/api/user/subscriptions", None, Some(&ada.token)).await;
    assert_eq!(none.body["items"], json!([]), "{}", none.text);

    // What is refused.
    let unsupported =
        app.call("PUT", subscription, Some(json!({"ignored": true})), Some(&bob.token)).await;
    assert_eq!(unsupported.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", unsupported.text);
    assert_eq!(unsupported.body["error"]["field"], "ignored");
    let malformed = app.send_raw("PUT", subscription, "{\"subscribed\":", &bob.token).await;
    assert_eq!(malformed, StatusCode::BAD_REQUEST);
    for (method, path) in [
        ("GET", subscription),
        ("PUT", subscription),
        ("DELETE", subscription),
        ("GET", "/api/user/subscriptions"),
    ] {
        let answer = app.call(method, path, None, None).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{method} {path}: {}", answer.text);
    }
    let mut conn = app.database.get().await?;
    let (read_only, _) = platform_core::accounts::access_tokens::create(
        &mut conn,
        bob.id,
        "read",
        &[Scope::RepoRead],
        None,
    )
    .await?;
    drop(conn);
    let forbidden = app.call("DELETE", subscription, None, Some(&read_only)).await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN, "{}", forbidden.text);
    let readable = app.call("GET", subscription, None, Some(&read_only)).await;
    assert_eq!(readable.status, StatusCode::OK, "{}", readable.text);

    // Unwatching, twice.
    for _ in 0..2 {
        let answer = app.call("DELETE", subscription, None, Some(&bob.token)).await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.text);
    }
    let gone = app.call("GET", subscription, None, Some(&bob.token)).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.text);
    let subscribers = app.call("GET", "/api/repos/ada/engine/subscribers", None, None).await;
    assert_eq!(subscribers.body["items"], json!([]), "{}", subscribers.text);
    let mine = app.call("GET", "/api/user/subscriptions", None, Some(&bob.token)).await;
    assert_eq!(mine.body["items"], json!([]), "{}", mine.text);
    Ok(())
}

impl App {
    async fn send_raw(&self, method: &str, path: &str, body: &str, token: &str) -> StatusCode {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .expect("valid request");
        self.router.clone().oneshot(request).await.expect("infallible").status()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_are_paginated_by_name() -> anyhow::Result<()> {
    let app = App::new().await?;
    let ada = app.member("ada").await?;
    let mut watchers = Vec::new();
    for name in ["zoe", "Bea", "carl", "dana", "eli"] {
        let member = app.member(name).await?;
        assert_eq!(app.watch(&member, "ada/missing").await.status, StatusCode::NOT_FOUND);
        watchers.push(member);
    }
    for repo in ["b-two", "A-one", "c-three"] {
        app.create_repo(&ada, repo, false).await?;
        assert_eq!(app.watch(&watchers[0], &format!("ada/{repo}")).await.status, StatusCode::OK);
    }
    for member in &watchers[1..] {
        assert_eq!(app.watch(member, "ada/A-one").await.status, StatusCode::OK);
    }
    let page = |n: u32| format!("/api/repos/ada/A-one/subscribers?per_page=2&page={n}");
    let first = app.call("GET", &page(1), None, None).await;
    assert_eq!(logins(&first), names(&["Bea", "carl"]), "{}", first.text);
    assert_eq!((first.body["page"].clone(), first.body["per_page"].clone()), (json!(1), json!(2)));
    assert_eq!(first.body["total"], 5);
    assert_eq!(logins(&app.call("GET", &page(3), None, None).await), names(&["zoe"]));
    assert_eq!(logins(&app.call("GET", &page(4), None, None).await), Vec::<String>::new());
    let bad = app.call("GET", "/api/repos/ada/A-one/subscribers?per_page=101", None, None).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.text);

    let zoe = &watchers[0];
    let mine = |n: u32| format!("/api/user/subscriptions?per_page=2&page={n}");
    let first = app.call("GET", &mine(1), None, Some(&zoe.token)).await;
    assert_eq!(full_names(&first), names(&["ada/A-one", "ada/b-two"]), "{}", first.text);
    assert_eq!(first.body["total"], 3);
    let second = app.call("GET", &mine(2), None, Some(&zoe.token)).await;
    assert_eq!(full_names(&second), names(&["ada/c-three"]), "{}", second.text);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_repository_is_not_found_by_those_who_cannot_read_it() -> anyhow::Result<()> {
    let app = App::new().await?;
    let ada = app.member("ada").await?;
    let carol = app.member("carol").await?;
    let eve = app.member("eve").await?;
    app.create_repo(&ada, "secret", true).await?;
    app.collaborate(&ada, "ada/secret", &carol, "read").await;
    assert_eq!(app.watch(&carol, "ada/secret").await.status, StatusCode::OK);
    assert_eq!(app.watch(&ada, "ada/secret").await.status, StatusCode::OK);

    // To a stranger (or anonymous, for the list) every route answers as for a repository that
    // does not exist.
    let routes = [
        ("GET", "subscription"),
        ("PUT", "subscription"),
        ("DELETE", "subscription"),
        ("GET", "subscribers"),
    ];
    for (method, route) in routes {
        let secret = app
            .call(method, &format!("/api/repos/ada/secret/{route}"), None, Some(&eve.token))
            .await;
        let missing = app
            .call(method, &format!("/api/repos/ada/nothing/{route}"), None, Some(&eve.token))
            .await;
        assert_eq!(secret.status, StatusCode::NOT_FOUND, "{method} {route}: {}", secret.text);
        assert_eq!(secret.text, missing.text, "{method} {route}");
    }
    let anonymous = app.call("GET", "/api/repos/ada/secret/subscribers", None, None).await;
    assert_eq!(anonymous.status, StatusCode::NOT_FOUND, "{}", anonymous.text);
    let readers =
        app.call("GET", "/api/repos/ada/secret/subscribers", None, Some(&carol.token)).await;
    assert_eq!(logins(&readers), names(&["ada", "carol"]), "{}", readers.text);

    // A collaborator removed is a stranger: their watch is neither shown nor listed.
    let removed = app
        .call("DELETE", "/api/repos/ada/secret/collaborators/carol", None, Some(&ada.token))
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{}", removed.text);
    let theirs =
        app.call("GET", "/api/repos/ada/secret/subscription", None, Some(&carol.token)).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND, "{}", theirs.text);
    assert_eq!(theirs.body["error"]["message"], "repository not found");
    let mine = app.call("GET", "/api/user/subscriptions", None, Some(&carol.token)).await;
    assert_eq!(mine.body["items"], json!([]), "{}", mine.text);
    assert_eq!(mine.body["total"], 0);
    let readers =
        app.call("GET", "/api/repos/ada/secret/subscribers", None, Some(&ada.token)).await;
    assert_eq!(logins(&readers), names(&["ada"]), "{}", readers.text);

    // A public repository made private loses its watchers who cannot read it any more.
    app.create_repo(&ada, "engine", false).await?;
    assert_eq!(app.watch(&eve, "ada/engine").await.status, StatusCode::OK);
    let mine = app.call("GET", "/api/user/subscriptions", None, Some(&eve.token)).await;
    assert_eq!(full_names(&mine), names(&["ada/engine"]), "{}", mine.text);
    let hidden = app
        .call("PATCH", "/api/repos/ada/engine", Some(json!({"private": true})), Some(&ada.token))
        .await;
    assert_eq!(hidden.status, StatusCode::OK, "{}", hidden.text);
    let mine = app.call("GET", "/api/user/subscriptions", None, Some(&eve.token)).await;
    assert_eq!(mine.body["items"], json!([]), "{}", mine.text);
    let readers =
        app.call("GET", "/api/repos/ada/engine/subscribers", None, Some(&ada.token)).await;
    assert_eq!(logins(&readers), Vec::<String>::new(), "{}", readers.text);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_is_told_to_the_watchers_who_can_still_read_it() -> anyhow::Result<()> {
    let app = App::new().await?;
    let ada = app.member("ada").await?; // the owner
    let bob = app.member("bob").await?; // a writer, who pushes
    let carol = app.member("carol").await?; // a reader
    let dave = app.unverified("dave").await?; // a reader without a verified address
    let erin = app.member("erin").await?; // a reader who is removed
    let root = app.platform_admin("root").await?; // no collaborator, but an administrator
    let frank = app.member("frank").await?; // a reader who does not watch
    let secret = app.create_repo(&ada, "secret", true).await?;
    app.collaborate(&ada, "ada/secret", &bob, "write").await;
    for reader in [&carol, &dave, &erin, &frank] {
        app.collaborate(&ada, "ada/secret", reader, "read").await;
    }
    for watcher in [&ada, &bob, &carol, &dave, &erin, &root] {
        let answer = app.watch(watcher, "ada/secret").await;
        assert_eq!(answer.status, StatusCode::OK, "{}: {}", watcher.name, answer.text);
    }
    assert_eq!(app.recipients(secret, &bob).await?, names(&["ada", "carol", "erin", "root"]));
    let path = "/api/repos/ada/secret/collaborators/erin";
    assert_eq!(
        app.call("DELETE", path, None, Some(&ada.token)).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.recipients(secret, &bob).await?, names(&["ada", "carol", "root"]));
    // The owner pushing: the writer is told instead.
    assert_eq!(app.recipients(secret, &ada).await?, names(&["bob", "carol", "root"]));
    // Verifying the address later counts from then on.
    app.sql("UPDATE users SET email_verified_at = now() WHERE id = $1", dave.id).await?;
    assert_eq!(app.recipients(secret, &bob).await?, names(&["ada", "carol", "dave", "root"]));

    // A public repository is read by anyone, until it is made private.
    let engine = app.create_repo(&ada, "engine", false).await?;
    app.collaborate(&ada, "ada/engine", &carol, "read").await;
    for watcher in [&carol, &frank] {
        assert_eq!(app.watch(watcher, "ada/engine").await.status, StatusCode::OK);
    }
    assert_eq!(app.recipients(engine, &ada).await?, names(&["carol", "frank"]));
    let path = "/api/repos/ada/engine";
    let body = json!({"private": true});
    assert_eq!(app.call("PATCH", path, Some(body), Some(&ada.token)).await.status, StatusCode::OK);
    assert_eq!(app.recipients(engine, &ada).await?, names(&["carol"]));
    // Nobody watching but the pusher: nobody to tell.
    let quiet = app.create_repo(&ada, "quiet", false).await?;
    assert_eq!(app.watch(&ada, "ada/quiet").await.status, StatusCode::OK);
    assert_eq!(app.recipients(quiet, &ada).await?, Vec::<String>::new());
    Ok(())
}

/// Runs `git` in `dir` with a fixed identity and, when `at` is given, that commit time (so
/// the order of history is the same for git and gix); returns its trimmed output.
fn git_at(dir: &Path, args: &[&str], at: Option<u32>) -> anyhow::Result<String> {
    let mut command = std::process::Command::new("git");
    command.args(["-c", "user.name=Ada Lovelace", "-c", "user.email=ada@example.com"]);
    command.args(args).current_dir(dir);
    if let Some(at) = at {
        let date = format!("@{} +0000", 1_700_000_000 + at * 60);
        command.env("GIT_AUTHOR_DATE", &date).env("GIT_COMMITTER_DATE", &date);
    }
    let output = command.output()?;
    anyhow::ensure!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    git_at(dir, args, None)
}

/// A working copy whose history is pushed to a bare repository in two pushes.
struct History {
    work: tempfile::TempDir,
    clock: u32,
}

impl History {
    fn new() -> anyhow::Result<Self> {
        let work = tempfile::tempdir()?;
        git(work.path(), &["init", "--quiet", "--initial-branch=main"])?;
        Ok(Self { work, clock: 0 })
    }

    fn commit(&mut self, message: &str) -> anyhow::Result<String> {
        self.clock += 1;
        let dir = self.work.path();
        std::fs::write(dir.join(format!("file-{}", self.clock)), message)?;
        git(dir, &["add", "."])?;
        git_at(dir, &["commit", "--quiet", "-m", message], Some(self.clock))?;
        git(dir, &["rev-parse", "HEAD"])
    }

    fn git(&mut self, args: &[&str]) -> anyhow::Result<String> {
        self.clock += 1;
        git_at(self.work.path(), args, Some(self.clock))
    }

    /// What git says `tip` gained over `hidden`: the newest `newest` commits as the mail lists
    /// them, and how many in all.
    fn gained(&self, tip: &str, hidden: &[&str], newest: usize) -> anyhow::Result<(Value, u64)> {
        let not: Vec<String> = hidden.iter().map(|id| format!("^{id}")).collect();
        let mut count = vec!["rev-list", "--count", tip];
        count.extend(not.iter().map(String::as_str));
        let total: u64 = git(self.work.path(), &count)?.parse()?;
        let limit = format!("-n{newest}");
        let mut log = vec!["log", "--format=%H%x09%an%x09%s", &limit, tip];
        log.extend(not.iter().map(String::as_str));
        let commits: Vec<Value> = git(self.work.path(), &log)?
            .lines()
            .map(|line| {
                let mut fields = line.splitn(3, '\t');
                let (id, author, summary) = (fields.next(), fields.next(), fields.next());
                json!({"id": id, "author": author, "summary": summary})
            })
            .collect();
        Ok((Value::Array(commits), total))
    }
}

/// Consumes `stream` as `group` until `count` jobs came and a second passed without another,
/// or `limit` passed; returns each job's id and payload.
async fn take(queue: &Queue, group: &str, count: usize) -> anyhow::Result<Vec<(String, Value)>> {
    let taken: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let consumer = {
        let (queue, taken, stop, group) =
            (queue.clone(), Arc::clone(&taken), stop.clone(), group.to_owned());
        tokio::spawn(async move {
            let handler = move |job: Job<Value>| {
                let taken = Arc::clone(&taken);
                async move {
                    taken.lock().expect("not poisoned").push((job.id, job.payload));
                    Ok::<(), JobError>(())
                }
            };
            let options = ConsumerOptions {
                fetch_wait: Duration::from_millis(100),
                ..ConsumerOptions::default()
            };
            queue.consume(MAIL_STREAM, &group, options, handler, stop.cancelled_owned()).await
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while taken.lock().expect("not poisoned").len() < count
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    consumer.await??;
    let taken = taken.lock().expect("not poisoned").clone();
    Ok(taken)
}

fn by_id(jobs: Vec<(String, Value)>) -> BTreeMap<String, Value> {
    jobs.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_queues_one_mail_per_recipient_under_ids_of_the_event() -> anyhow::Result<()> {
    let app = App::new().await?;
    let ada = app.member("ada").await?;
    let bob = app.member("bob").await?;
    let carol = app.member("carol").await?;
    let dave = app.unverified("dave").await?;
    let root = app.platform_admin("root").await?;
    let engine = app.create_repo(&ada, "engine", true).await?;
    app.collaborate(&ada, "ada/engine", &bob, "write").await;
    app.collaborate(&ada, "ada/engine", &carol, "read").await;
    app.collaborate(&ada, "ada/engine", &dave, "read").await;
    for watcher in [&bob, &carol, &dave, &root] {
        assert_eq!(app.watch(watcher, "ada/engine").await.status, StatusCode::OK);
    }

    // The first push: main, a branch that the second push deletes, and a side branch that the
    // second push merges into main.
    let mut history = History::new()?;
    for n in 1..=3 {
        history.commit(&format!("base {n}"))?;
    }
    let old_main = history.git(&["rev-parse", "HEAD"])?;
    let old_gone = history.git(&["rev-parse", "HEAD~1"])?;
    history.git(&["branch", "gone", "HEAD~1"])?;
    history.git(&["checkout", "--quiet", "-b", "side", "HEAD~2"])?;
    history.commit("side 1")?;
    let side = history.commit("side 2")?;
    history.git(&["checkout", "--quiet", "main"])?;
    let bare = app.disk_path("ada", "engine");
    let bare = bare.to_str().expect("a UTF-8 path");
    history.git(&["push", "--quiet", bare, "main", "gone", "side"])?;
    // The second: main gains ten commits and the merge of side (twelve commits in all, as
    // `old..new` counts them: side's were in the repository, not in main); a new branch starts
    // from the new main; `gone` is deleted.
    for n in 1..=4 {
        history.commit(&format!("main {n}"))?;
    }
    history.git(&["merge", "--quiet", "--no-ff", "-m", "Merge side", "side"])?;
    for n in 5..=9 {
        history.commit(&format!("main {n}"))?;
    }
    let new_main = history.git(&["rev-parse", "HEAD"])?;
    history.git(&["checkout", "--quiet", "-b", "feature"])?;
    history.commit("feature 1")?;
    let feature = history.commit("Feature: the second\n\nwith a body")?;
    history.git(&["push", "--quiet", bare, "main", "feature", ":gone"])?;

    let event = PushEvent {
        id: uuid::Uuid::new_v4(),
        repository_id: engine,
        repository: "ada/engine".to_owned(),
        pusher_id: bob.id,
        pusher: "bob".to_owned(),
        refs: vec![
            RefChange {
                name: "refs/heads/main".into(),
                old: old_main.clone(),
                new: new_main.clone(),
            },
            RefChange { name: "refs/heads/feature".into(), old: ZERO.into(), new: feature.clone() },
            RefChange { name: "refs/heads/gone".into(), old: old_gone.clone(), new: ZERO.into() },
        ],
        pushed_at: chrono::Utc::now(),
        sequence: None,
    };
    let (main_commits, main_total) = history.gained(&new_main, &[&old_main], 10)?;
    assert_eq!(main_total, 12, "the fixture's own count");
    // The new branch gained what no ref had before the push: main's new commits too, but not
    // side's.
    let (feature_commits, feature_total) =
        history.gained(&feature, &[&old_main, &old_gone, &side], 10)?;
    assert_eq!(feature_total, 12, "the fixture's own count");
    let refs = json!([
        {"name": "refs/heads/main", "old": old_main, "new": new_main,
         "commits": main_commits, "total_commits": main_total},
        {"name": "refs/heads/feature", "old": ZERO, "new": feature,
         "commits": feature_commits, "total_commits": feature_total},
        {"name": "refs/heads/gone", "old": old_gone, "new": ZERO,
         "commits": [], "total_commits": 0},
    ]);
    let expected: BTreeMap<String, Value> = [&carol, &root]
        .into_iter()
        .map(|watcher| {
            let mail = json!({
                "kind": "push_notification",
                "to": format!("{}@example.com", watcher.name),
                "repository": "ada/engine",
                "pusher": "bob",
                "refs": refs,
            });
            (format!("push-{}-{}", event.id, watcher.id), mail)
        })
        .collect();

    let notifier = Notifier::new(
        app.database.clone(),
        app.queue.clone(),
        Browser::new(Limits::default()),
        RepoStore::new(&app.repos_root),
    );
    assert_eq!(notifier.notify(&event).await?, 2);
    let first = take(&app.queue, "watch-tests", 2).await?;
    assert_eq!(first.len(), 2, "exactly one mail per recipient: {first:#?}");
    assert_eq!(by_id(first), expected);

    // Notified again (a worker that died before acknowledging the event): the same ids, which
    // the email worker sends once.
    assert_eq!(notifier.notify(&event).await?, 2);
    let second = take(&app.queue, "watch-tests", 2).await?;
    assert_eq!(by_id(second), expected);

    // Fewer commits listed when asked; the totals stay.
    let brief = notifier.clone().with_commits_per_ref(1);
    assert_eq!(brief.notify(&event).await?, 2);
    let third = take(&app.queue, "watch-tests", 2).await?;
    for (_, mail) in third {
        assert_eq!(mail["refs"][0]["commits"], json!([main_commits[0]]));
        assert_eq!(mail["refs"][0]["total_commits"], 12);
    }

    // Nobody to tell: nothing read, nothing queued. (A repository deleted since the push has
    // no watchers left either.)
    let quiet = PushEvent { id: uuid::Uuid::new_v4(), pusher_id: ada.id, ..event.clone() };
    for watcher in [&bob, &carol, &dave, &root] {
        let path = "/api/repos/ada/engine/subscription";
        assert_eq!(
            app.call("DELETE", path, None, Some(&watcher.token)).await.status,
            StatusCode::NO_CONTENT
        );
    }
    assert_eq!(app.watch(&ada, "ada/engine").await.status, StatusCode::OK);
    assert_eq!(notifier.notify(&quiet).await?, 0);
    let gone = PushEvent { repository_id: i64::MAX, ..quiet };
    assert_eq!(notifier.notify(&gone).await?, 0);
    assert!(take(&app.queue, "watch-tests", 0).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn on_nats_notifying_an_event_again_is_dropped_by_id() -> anyhow::Result<()> {
    let app = App::new().await?;
    let ada = app.member("ada").await?;
    let carol = app.member("carol").await?;
    let engine = app.create_repo(&ada, "engine", false).await?;
    assert_eq!(app.watch(&carol, "ada/engine").await.status, StatusCode::OK);
    let mut history = History::new()?;
    let tip = history.commit("first")?;
    let bare = app.disk_path("ada", "engine");
    history.git(&["push", "--quiet", bare.to_str().expect("a UTF-8 path"), "main"])?;

    let nats = NatsConfig {
        url: Some(SecretUrl::new(service_env("PLATFORM_TEST_NATS_URL").parse()?)),
        token: None,
    };
    let options = QueueOptions { namespace: unique_name("watch"), ..QueueOptions::default() };
    let queue = Queue::nats(&nats, options, &Metrics::new("test")).await?;
    let notifier = Notifier::new(
        app.database.clone(),
        queue.clone(),
        Browser::new(Limits::default()),
        RepoStore::new(&app.repos_root),
    );
    let event = PushEvent {
        id: uuid::Uuid::new_v4(),
        repository_id: engine,
        repository: "ada/engine".to_owned(),
        pusher_id: ada.id,
        pusher: "ada".to_owned(),
        refs: vec![RefChange {
            name: "refs/heads/main".into(),
            old: ZERO.into(),
            new: tip.clone(),
        }],
        pushed_at: chrono::Utc::now(),
        sequence: None,
    };
    assert_eq!(notifier.notify(&event).await?, 1);
    assert_eq!(notifier.notify(&event).await?, 1);
    let taken = take(&queue, "watch-tests", 1).await?;
    let ids: BTreeSet<&str> = taken.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(taken.len(), 1, "{taken:#?}");
    assert_eq!(ids, BTreeSet::from([format!("push-{}-{}", event.id, carol.id).as_str()]));
    let mail = &taken[0].1;
    assert_eq!(mail["to"], "carol@example.com");
    assert_eq!(mail["refs"][0]["total_commits"], 1);
    assert_eq!(mail["refs"][0]["commits"][0]["id"], tip);
    assert_eq!(mail["refs"][0]["commits"][0]["summary"], "first");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watching_routes_are_documented() -> anyhow::Result<()> {
    let app = App::new().await?;
    let document = app.call("GET", "/api/openapi.json", None, None).await.body;
    for (path, methods) in [
        ("/api/repos/{owner}/{name}/subscription", &["get", "put", "delete"][..]),
        ("/api/repos/{owner}/{name}/subscribers", &["get"][..]),
        ("/api/user/subscriptions", &["get"][..]),
    ] {
        for method in methods {
            let operation = &document["paths"][path][method];
            assert_eq!(operation["tags"][0], "watching", "{method} {path}: {operation}");
            let responses = operation["responses"].as_object();
            assert!(
                responses.is_some_and(|r| r.keys().any(|s| s.starts_with('2'))
                    && r.keys().any(|s| s.starts_with('4'))),
                "{method} {path} documents no success or no failure"
            );
        }
    }
    for schema in ["Subscription", "SetSubscription", "SubscriberPage", "Subscriber"] {
        assert!(document["components"]["schemas"].get(schema).is_some(), "schema {schema} missing");
    }
    Ok(())
}
