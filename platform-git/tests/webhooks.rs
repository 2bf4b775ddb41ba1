//! Webhooks end to end: the hook API in-process, the delivery engine running in the test, real
//! PostgreSQL and Redis (the real queue), and a real HTTP receiver on a loopback port.

mod common;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use platform_core::accounts::password;
use platform_core::db::Database;
use platform_core::queue::Queue;
use platform_core::telemetry::Metrics;
use platform_git::api::RepoApi;
use platform_git::store::RepoStore;
use platform_git::webhooks::client::{ClientOptions, DeliveryClient};
use platform_git::webhooks::deliveries::{self, DeliveryDetail, DeliveryState};
use platform_git::webhooks::engine::{DELIVERY_STREAM, DeliveryEngine, DeliveryOptions, Wake};
use platform_git::webhooks::guard::{AllowList, Guard};
use platform_git::webhooks::hooks::{self, ContentType, EventSet, Hook, NewHook};
use platform_test_support::{Received, Receiver, unique_name, verified_user};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use common::PASSWORD;

/// How long anything the engine should do promptly may take before a test gives up.
const PROMPTLY: Duration = Duration::from_secs(15);

struct Answer {
    status: StatusCode,
    body: Value,
    text: String,
}

/// The API twice over the same database: `router` lets payload URLs point at loopback (where
/// the receiver is), `strict` has the default SSRF guard.
struct App {
    router: Router,
    strict: Router,
    database: Database,
    queue: Queue,
    repos_root: PathBuf,
    password_hash: String,
}

struct Member {
    name: String,
    token: String,
}

/// A delivery engine running in the test until dropped.
struct Running {
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Options for tests: retries, pauses and sweeps in milliseconds rather than minutes.
fn fast() -> DeliveryOptions {
    DeliveryOptions {
        first_retry: Duration::from_millis(200),
        sweep_every: Duration::from_millis(50),
        first_pause: Duration::from_secs(60),
        ..DeliveryOptions::default()
    }
}

fn loopback_guard() -> anyhow::Result<Guard> {
    Ok(Guard::new(AllowList::parse("loopback")?))
}

impl App {
    async fn new() -> anyhow::Result<Self> {
        let common::Backing { database, accounts, queue } = common::backing(None).await?;
        let repos_root = std::env::temp_dir().join(unique_name("hook-repos"));
        let public_url: url::Url = "https://git.example.com".parse()?;
        let repos = RepoApi::new(accounts.clone(), RepoStore::new(&repos_root), public_url.clone())
            .with_webhook_guard(loopback_guard()?);
        let strict = RepoApi::new(accounts.clone(), RepoStore::new(&repos_root), public_url);
        let routes =
            platform_core::accounts::api(accounts.clone()).merge(platform_git::api::api(repos));
        let strict_routes =
            platform_core::accounts::api(accounts).merge(platform_git::api::api(strict));
        Ok(Self {
            router: platform_core::api::documented(routes, "platform", "test"),
            strict: platform_core::api::documented(strict_routes, "platform", "test"),
            database,
            queue,
            repos_root,
            password_hash: password::hash(PASSWORD)?,
        })
    }

    async fn member(&self, name: &str) -> anyhow::Result<Member> {
        let scopes = [platform_core::accounts::Scope::Admin];
        let (_, token) = verified_user(&self.database, name, &self.password_hash, &scopes).await?;
        Ok(Member { name: name.to_owned(), token })
    }

    /// Starts `workers` delivery engines sharing this app's database and queue.
    fn engines(&self, workers: usize, options: &DeliveryOptions) -> anyhow::Result<Running> {
        let stop = CancellationToken::new();
        for _ in 0..workers {
            let client = DeliveryClient::new(loopback_guard()?, ClientOptions::default())?;
            let engine = DeliveryEngine::new(
                self.database.clone(),
                self.queue.clone(),
                client,
                &Metrics::new("test"),
                options.clone(),
            );
            let stop = stop.clone();
            tokio::spawn(async move {
                if let Err(error) = engine.run(stop.cancelled_owned()).await {
                    panic!("the delivery engine stopped: {error}");
                }
            });
        }
        Ok(Running { stop })
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Answer {
        send(&self.router, method, path, body, token).await
    }

    async fn call_strict(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Answer {
        send(&self.strict, method, path, body, token).await
    }

    /// Creates `owner/name`; returns its id.
    async fn repo(&self, owner: &Member, name: &str, private: bool) -> anyhow::Result<i64> {
        let body = json!({"name": name, "private": private});
        let created = self.call("POST", "/api/repos", Some(body), Some(&owner.token)).await;
        anyhow::ensure!(created.status == StatusCode::CREATED, "{}", created.text);
        created.body["id"].as_i64().ok_or_else(|| anyhow::anyhow!("no id in {}", created.text))
    }

    fn git_dir(&self, owner: &str, name: &str) -> PathBuf {
        self.repos_root
            .join(owner.to_ascii_lowercase())
            .join(format!("{}.git", name.to_ascii_lowercase()))
    }

    /// Inserts a hook directly (no ping is queued): for the engine's tests.
    async fn hook(&self, repository_id: i64, url: &str) -> anyhow::Result<Hook> {
        let mut conn = self.database.get().await?;
        let new = NewHook {
            url: url.to_owned(),
            content_type: ContentType::Json,
            secret: Some("engine-secret".to_owned()),
            events: EventSet::All,
            active: true,
            verify_tls: true,
        };
        Ok(hooks::create(&mut conn, repository_id, new).await?)
    }

    /// Makes `count` deliveries to `hook_id` (payloads `{"n": 0}`, `{"n": 1}`, ...) and wakes
    /// the engine for each; returns their ids in creation order.
    async fn deliveries(&self, hook_id: i64, count: usize) -> anyhow::Result<Vec<uuid::Uuid>> {
        let mut ids = Vec::with_capacity(count);
        {
            let mut conn = self.database.get().await?;
            for n in 0..count {
                let key = unique_name("cause");
                let payload = json!({"n": n}).to_string();
                let id =
                    deliveries::enqueue(&mut conn, hook_id, "push", None, Some(&key), &payload)
                        .await?
                        .ok_or_else(|| anyhow::anyhow!("delivery {n} not made"))?;
                ids.push(id);
            }
        }
        for _ in 0..count {
            self.wake(hook_id).await?;
        }
        Ok(ids)
    }

    /// Makes one delivery to `hook_id` and wakes the engine for it.
    async fn delivery_to(&self, hook_id: i64) -> anyhow::Result<uuid::Uuid> {
        let made = self.deliveries(hook_id, 1).await?;
        made.first().copied().ok_or_else(|| anyhow::anyhow!("no delivery made"))
    }

    async fn wake(&self, hook_id: i64) -> anyhow::Result<()> {
        self.queue.publish(DELIVERY_STREAM, &Wake { hook_id }).await?;
        Ok(())
    }

    async fn delivery(&self, hook_id: i64, id: uuid::Uuid) -> anyhow::Result<DeliveryDetail> {
        let mut conn = self.database.get().await?;
        deliveries::find(&mut conn, hook_id, id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no delivery {id}"))
    }

    async fn hook_record(&self, repository_id: i64, id: i64) -> anyhow::Result<Hook> {
        let mut conn = self.database.get().await?;
        hooks::find(&mut conn, repository_id, id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no hook {id}"))
    }

    /// Waits until the delivery is in `state`.
    async fn settled(
        &self,
        hook_id: i64,
        id: uuid::Uuid,
        state: DeliveryState,
    ) -> anyhow::Result<DeliveryDetail> {
        wait_for(&format!("delivery {id} to be {state:?}"), PROMPTLY, || async move {
            let detail = self.delivery(hook_id, id).await?;
            Ok((detail.delivery.state == state).then_some(detail))
        })
        .await
    }
}

async fn send(
    router: &Router,
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
    .expect("a valid request");
    let response = router.clone().oneshot(request).await.expect("the router is infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("a body");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer { status, body, text }
}

fn assert_error(answer: &Answer, status: StatusCode, code: &str, field: Option<&str>) {
    assert_eq!(answer.status, status, "{}", answer.text);
    assert_eq!(answer.body["error"]["code"], code, "{}", answer.text);
    if let Some(field) = field {
        assert_eq!(answer.body["error"]["field"], field, "{}", answer.text);
    }
}

/// Polls `probe` every 20 ms until it gives something, for at most `limit`.
async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = probe().await? {
            return Ok(found);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `receiver` got at least `count` requests on `path`; returns them.
async fn received(receiver: &Receiver, path: &str, count: usize) -> anyhow::Result<Vec<Received>> {
    wait_for(&format!("{count} requests on {path}"), PROMPTLY, || async move {
        let got = receiver.received_on(path);
        Ok((got.len() >= count).then_some(got))
    })
    .await
}

/// Checks that nothing more than `count` requests arrives on `path` for `quiet`.
async fn no_more(receiver: &Receiver, path: &str, count: usize, quiet: Duration) {
    tokio::time::sleep(quiet).await;
    let got = receiver.received_on(path);
    assert_eq!(
        got.len(),
        count,
        "more requests on {path} than expected: {:?}",
        paths_and_ids(&got)
    );
}

fn paths_and_ids(got: &[Received]) -> Vec<(String, Option<String>, u16)> {
    got.iter()
        .map(|one| {
            (one.path.clone(), one.header("x-github-delivery").map(str::to_owned), one.status)
        })
        .collect()
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Checks every signature of `got` as a receiver would, with `secret`: GitHub's and Gitea's
/// over the body, Standard Webhooks' over `id.timestamp.body` (keyed by the base64 remainder of
/// a `whsec_` secret).
fn assert_signed(got: &Received, secret: &str) {
    let hex = hex::encode(hmac_sha256(secret.as_bytes(), &got.body));
    assert_eq!(got.header("x-hub-signature-256"), Some(&*format!("sha256={hex}")));
    assert_eq!(got.header("x-gitea-signature"), Some(&*hex));
    let id = got.header("webhook-id").expect("a webhook-id header");
    assert_eq!(Some(id), got.header("x-github-delivery"), "webhook-id is the delivery id");
    let timestamp = got.header("webhook-timestamp").expect("a webhook-timestamp header");
    let sent_at: i64 = timestamp.parse().expect("a timestamp in seconds");
    assert!((Utc::now().timestamp() - sent_at).abs() < 60, "timestamp {sent_at} is not now");
    let key = match secret.strip_prefix("whsec_") {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("the test's whsec_ secret is base64"),
        None => secret.as_bytes().to_vec(),
    };
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(&got.body);
    let expected = base64::engine::general_purpose::STANDARD.encode(hmac_sha256(&key, &signed));
    assert_eq!(got.header("webhook-signature"), Some(&*format!("v1,{expected}")));
}

fn json_body(got: &Received) -> Value {
    serde_json::from_slice(&got.body).expect("a JSON body")
}

/// Runs git on the bare repository `git_dir`, isolated from the caller's configuration.
fn git(git_dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Ada Lovelace")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada Lovelace")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .stdin(std::process::Stdio::null())
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

fn ms(duration: chrono::TimeDelta) -> i64 {
    duration.num_milliseconds()
}

// ---------------------------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn hooks_are_created_shown_changed_and_deleted_without_their_secret() -> anyhow::Result<()> {
    let app = App::new().await?;
    let ada = app.member("ada").await?;
    app.repo(&ada, "engine", false).await?;
    let secret = "a-secret-that-never-leaves-2f9c";
    let base = "/api/repos/ada/engine/hooks";
    let mut bodies = Vec::new();

    let json_hook = json!({
        "name": "web",
        "config": {"url": "http://127.0.0.1:9/json", "content_type": "json", "secret": secret,
                   "insecure_ssl": "1"},
        "events": ["push", "create"],
    });
    let created = app.call("POST", base, Some(json_hook), Some(&ada.token)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.body["id"].as_i64().expect("an id");
    assert_eq!(created.body["type"], "Repository");
    assert_eq!(created.body["name"], "web");
    assert_eq!(created.body["active"], true);
    assert_eq!(created.body["events"], json!(["push", "create"]));
    assert_eq!(created.body["config"]["url"], "http://127.0.0.1:9/json");
    assert_eq!(created.body["config"]["content_type"], "json");
    assert_eq!(created.body["config"]["insecure_ssl"], "1");
    assert_eq!(created.body["config"]["has_secret"], true);
    assert_eq!(created.body["url"], format!("https://git.example.com{base}/{id}"));
    assert_eq!(created.body["ping_url"], format!("https://git.example.com{base}/{id}/pings"));
    assert_eq!(created.body["last_response"]["status"], "unused");
    bodies.push(created.text);

    let form_hook = json!({
        "config": {"url": "http://127.0.0.1:9/form", "content_type": "form", "secret": secret,
                   "insecure_ssl": 0},
        "events": ["*"],
        "active": false,
    });
    let form = app.call("POST", base, Some(form_hook), Some(&ada.token)).await;
    assert_eq!(form.status, StatusCode::CREATED, "{}", form.text);
    let form_id = form.body["id"].as_i64().expect("an id");
    assert_eq!(form.body["config"]["content_type"], "form");
    assert_eq!(form.body["config"]["insecure_ssl"], "0");
    assert_eq!(form.body["events"], json!(["*"]));
    assert_eq!(form.body["active"], false);
    bodies.push(form.text);

    // Defaults: json, push only, active, certificates checked, no secret.
    let plain = json!({"config": {"url": "http://127.0.0.1:9/plain"}});
    let plain = app.call("POST", base, Some(plain), Some(&ada.token)).await;
    assert_eq!(plain.status, StatusCode::CREATED, "{}", plain.text);
    assert_eq!(plain.body["events"], json!(["push"]));
    assert_eq!(plain.body["config"]["content_type"], "json");
    assert_eq!(plain.body["config"]["insecure_ssl"], "0");
    assert_eq!(plain.body["config"]["has_secret"], false);

    let shown = app.call("GET", &format!("{base}/{id}"), None, Some(&ada.token)).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.text);
    assert_eq!(shown.body["config"]["has_secret"], true);
    assert_eq!(shown.body["events"], json!(["push", "create"]));
    bodies.push(shown.text);
    let listed = app.call("GET", base, None, Some(&ada.token)).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    let ids: Vec<i64> =
        listed.body.as_array().into_iter().flatten().filter_map(|h| h["id"].as_i64()).collect();
    assert_eq!(ids.len(), 3, "{}", listed.text);
    assert_eq!(&ids[..2], &[id, form_id]);
    bodies.push(listed.text);

    // The ping queued for the active hook shows the hook too, and not its secret.
    let sent = app.call("GET", &format!("{base}/{id}/deliveries"), None, Some(&ada.token)).await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.text);
    assert_eq!(sent.body[0]["event"], "ping", "{}", sent.text);
    let ping_id = sent.body[0]["id"].as_str().expect("a delivery id").to_owned();
    let ping =
        app.call("GET", &format!("{base}/{id}/deliveries/{ping_id}"), None, Some(&ada.token)).await;
    assert_eq!(ping.status, StatusCode::OK, "{}", ping.text);
    bodies.push(ping.text);
    // The inactive hook was not pinged.
    let none =
        app.call("GET", &format!("{base}/{form_id}/deliveries"), None, Some(&ada.token)).await;
    assert_eq!(none.body, json!([]), "{}", none.text);

    // Changes: the URL, events added and removed, the secret removed with "".
    let change = json!({
        "config": {"url": "http://127.0.0.1:9/moved", "secret": ""},
        "add_events": ["delete", "repository"],
        "remove_events": ["create"],
    });
    let changed = app.call("PATCH", &format!("{base}/{id}"), Some(change), Some(&ada.token)).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    assert_eq!(changed.body["config"]["url"], "http://127.0.0.1:9/moved");
    assert_eq!(changed.body["config"]["has_secret"], false);
    assert_eq!(changed.body["config"]["insecure_ssl"], "1", "untouched");
    assert_eq!(changed.body["events"], json!(["push", "delete", "repository"]));
    let changed = app
        .call(
            "PATCH",
            &format!("{base}/{id}"),
            Some(json!({"config": {"secret": "new-one"}})),
            Some(&ada.token),
        )
        .await;
    assert_eq!(changed.body["config"]["has_secret"], true, "{}", changed.text);
    let replaced = app
        .call(
            "PATCH",
            &format!("{base}/{id}"),
            Some(json!({"events": ["create"]})),
            Some(&ada.token),
        )
        .await;
    assert_eq!(replaced.body["events"], json!(["create"]), "{}", replaced.text);

    // Switching off, then on again clears the failures and the pause the engine left.
    let off = app
        .call("PATCH", &format!("{base}/{id}"), Some(json!({"active": false})), Some(&ada.token))
        .await;
    assert_eq!(off.body["active"], false, "{}", off.text);
    {
        use diesel_async::RunQueryDsl as _;
        let mut conn = app.database.get().await?;
        diesel::sql_query(
            "UPDATE webhooks SET failures = 7, disabled_until = now() + interval '1 hour', \
             disabled_reason = 'paused for a while' WHERE id = $1",
        )
        .bind::<diesel::sql_types::BigInt, _>(id)
        .execute(&mut conn)
        .await?;
    }
    let paused = app.call("GET", &format!("{base}/{id}"), None, Some(&ada.token)).await;
    assert_eq!(paused.body["failures"], 7, "{}", paused.text);
    assert_eq!(paused.body["disabled_reason"], "paused for a while");
    assert!(paused.body["disabled_until"].is_string(), "{}", paused.text);
    let on = app
        .call("PATCH", &format!("{base}/{id}"), Some(json!({"active": true})), Some(&ada.token))
        .await;
    assert_eq!(on.status, StatusCode::OK, "{}", on.text);
    assert_eq!(on.body["active"], true);
    assert_eq!(on.body["failures"], 0, "{}", on.text);
    assert_eq!(on.body["disabled_until"], Value::Null, "{}", on.text);
    assert_eq!(on.body["disabled_reason"], Value::Null, "{}", on.text);

    for body in &bodies {
        assert!(!body.contains(secret), "the secret in an answer: {body}");
    }

    let path = format!("{base}/{id}");
    assert_eq!(
        app.call("DELETE", &path, None, Some(&ada.token)).await.status,
        StatusCode::NO_CONTENT
    );
    assert_error(
        &app.call("GET", &path, None, Some(&ada.token)).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    assert_error(
        &app.call("DELETE", &path, None, Some(&ada.token)).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    let deliveries = format!("{path}/deliveries/{ping_id}");
    assert_error(
        &app.call("GET", &deliveries, None, Some(&ada.token)).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    let left = app.call("GET", base, None, Some(&ada.token)).await;
    assert_eq!(left.body.as_array().map(Vec::len), Some(2), "{}", left.text);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn only_repository_admins_see_and_manage_hooks() -> anyhow::Result<()> {
    let app = App::new().await?;
    let ada = app.member("ada").await?;
    let grace = app.member("grace").await?;
    let alan = app.member("alan").await?;
    let linus = app.member("linus").await?;
    app.repo(&ada, "secret", true).await?;
    for (who, role) in [(&grace, "write"), (&alan, "admin")] {
        let path = format!("/api/repos/ada/secret/collaborators/{}", who.name);
        let added = app.call("PUT", &path, Some(json!({"role": role})), Some(&ada.token)).await;
        assert_eq!(added.status, StatusCode::CREATED, "{}", added.text);
    }
    let base = "/api/repos/ada/secret/hooks";
    let new_hook = || json!({"config": {"url": "http://127.0.0.1:9/hook"}});
    let made = app.call("POST", base, Some(new_hook()), Some(&ada.token)).await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    let id = made.body["id"].as_i64().expect("an id");
    let hook = format!("{base}/{id}");
    let deliveries = format!("{hook}/deliveries");

    // An admin collaborator manages them.
    assert_eq!(app.call("GET", base, None, Some(&alan.token)).await.status, StatusCode::OK);
    let by_alan = app.call("POST", base, Some(new_hook()), Some(&alan.token)).await;
    assert_eq!(by_alan.status, StatusCode::CREATED, "{}", by_alan.text);

    // A writer can see the repository but not its hooks.
    let routes: [(&str, &str, Option<Value>); 6] = [
        ("GET", base, None),
        ("POST", base, Some(new_hook())),
        ("GET", &hook, None),
        ("PATCH", &hook, Some(json!({"active": false}))),
        ("DELETE", &hook, None),
        ("GET", &deliveries, None),
    ];
    for (method, path, body) in &routes {
        let answer = app.call(method, path, body.clone(), Some(&grace.token)).await;
        assert_error(&answer, StatusCode::FORBIDDEN, "forbidden", None);
        assert!(answer.text.contains("admin"), "{}", answer.text);
    }
    // A stranger is told the private repository does not exist, exactly as for a missing one.
    for (method, path, body) in &routes {
        let hidden = app.call(method, path, body.clone(), Some(&linus.token)).await;
        let missing_path = path.replace("/ada/secret/", "/ada/no-such-repo/");
        let missing = app.call(method, &missing_path, body.clone(), Some(&linus.token)).await;
        assert_error(&hidden, StatusCode::NOT_FOUND, "not_found", None);
        assert_eq!(hidden.text, missing.text, "{method} {path}");
    }
    // Nobody signed in.
    for (method, path, body) in &routes {
        let answer = app.call(method, path, body.clone(), None).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{method} {path}: {}", answer.text);
    }
    // None of that changed anything.
    let shown = app.call("GET", &hook, None, Some(&ada.token)).await;
    assert_eq!(shown.body["active"], true, "{}", shown.text);
    let listed = app.call("GET", base, None, Some(&ada.token)).await;
    assert_eq!(listed.body.as_array().map(Vec::len), Some(2), "{}", listed.text);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_hook_input_is_refused_naming_the_field() -> anyhow::Result<()> {
    let app = App::new().await?;
    let ada = app.member("ada").await?;
    app.repo(&ada, "engine", false).await?;
    let base = "/api/repos/ada/engine/hooks";
    let url = "http://127.0.0.1:9/hook";
    let cases = [
        (json!({"config": {"url": "ftp://127.0.0.1/hook"}}), "config.url", "http"),
        (json!({"config": {"url": "file:///etc/passwd"}}), "config.url", "http"),
        (json!({"config": {"url": "not a url"}}), "config.url", "not a URL"),
        (json!({"config": {"url": "http://ada:pw@127.0.0.1:9/hook"}}), "config.url", "password"),
        (json!({"config": {"url": "http://token@127.0.0.1:9/hook"}}), "config.url", "user name"),
        (json!({"config": {}}), "config.url", "required"),
        (
            json!({"config": {"url": url}, "events": ["push", "pull_request"]}),
            "events",
            "pull_request",
        ),
        (
            json!({"config": {"url": url, "insecure_ssl": "2"}}),
            "config.insecure_ssl",
            "insecure_ssl",
        ),
        (
            json!({"config": {"url": url, "insecure_ssl": "yes"}}),
            "config.insecure_ssl",
            "insecure_ssl",
        ),
        (json!({"config": {"url": url, "insecure_ssl": 5}}), "config.insecure_ssl", "insecure_ssl"),
        (json!({"config": {"url": url, "secret": "s".repeat(256)}}), "config.secret", "255"),
        (json!({"name": "email", "config": {"url": url}}), "name", "web"),
    ];
    for (body, field, says) in cases {
        let answer = app.call("POST", base, Some(body.clone()), Some(&ada.token)).await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", Some(field));
        let message = answer.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{body}: {message}");
    }
    let listed = app.call("GET", base, None, Some(&ada.token)).await;
    assert_eq!(listed.body, json!([]), "nothing stored: {}", listed.text);

    let made =
        app.call("POST", base, Some(json!({"config": {"url": url}})), Some(&ada.token)).await;
    let hook = format!("{base}/{}", made.body["id"]);
    let changes = [
        (json!({"config": {"url": "gopher://127.0.0.1/"}}), "config.url"),
        (json!({"config": {"url": "http://a:b@127.0.0.1:9/"}}), "config.url"),
        (json!({"add_events": ["fork"]}), "add_events"),
        (json!({"remove_events": ["fork"]}), "remove_events"),
        (json!({"events": ["star"]}), "events"),
        (json!({"config": {"insecure_ssl": "maybe"}}), "config.insecure_ssl"),
    ];
    for (body, field) in changes {
        let answer = app.call("PATCH", &hook, Some(body), Some(&ada.token)).await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", Some(field));
    }
    let shown = app.call("GET", &hook, None, Some(&ada.token)).await;
    assert_eq!(shown.body["config"]["url"], url, "unchanged: {}", shown.text);
    assert_eq!(shown.body["events"], json!(["push"]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_guard_refuses_internal_payload_urls() -> anyhow::Result<()> {
    let app = App::new().await?;
    let ada = app.member("ada").await?;
    app.repo(&ada, "engine", false).await?;
    let base = "/api/repos/ada/engine/hooks";
    let cases = [
        ("http://127.0.0.1:1/x", vec!["127.0.0.1"]),
        // A host name that resolves to loopback (either family).
        ("http://localhost/x", vec!["127.0.0.1", "::1"]),
        ("http://10.1.2.3/", vec!["10.1.2.3"]),
        ("http://169.254.169.254/latest/meta-data", vec!["169.254.169.254"]),
        ("http://[::ffff:127.0.0.1]/", vec!["127.0.0.1"]),
    ];
    for (url, addresses) in &cases {
        let body = json!({"config": {"url": url}});
        let answer = app.call_strict("POST", base, Some(body), Some(&ada.token)).await;
        assert_error(
            &answer,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("config.url"),
        );
        let message = answer.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            addresses.iter().any(|address| message.contains(address)),
            "{url}: the message does not name the address: {message}"
        );
    }
    let metadata = app
        .call_strict("POST", base, Some(json!({"config": {"url": cases[3].0}})), Some(&ada.token))
        .await;
    assert!(metadata.text.contains("metadata"), "{}", metadata.text);
    let listed = app.call_strict("GET", base, None, Some(&ada.token)).await;
    assert_eq!(listed.body, json!([]), "nothing stored: {}", listed.text);

    // A hook made where loopback is allowed cannot be moved to an internal address either.
    let made = app
        .call(
            "POST",
            base,
            Some(json!({"config": {"url": "http://127.0.0.1:9/"}})),
            Some(&ada.token),
        )
        .await;
    let hook = format!("{base}/{}", made.body["id"]);
    let moved = app
        .call_strict(
            "PATCH",
            &hook,
            Some(json!({"config": {"url": "http://10.1.2.3/"}})),
            Some(&ada.token),
        )
        .await;
    assert_error(&moved, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", Some("config.url"));
    let shown = app.call_strict("GET", &hook, None, Some(&ada.token)).await;
    assert_eq!(shown.body["config"]["url"], "http://127.0.0.1:9/", "{}", shown.text);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_hook_is_pinged_signed_inspectable_and_can_be_sent_again() -> anyhow::Result<()> {
    let app = App::new().await?;
    let _engine = app.engines(1, &fast())?;
    let receiver = Receiver::start("127.0.0.1:0").await?;
    let ada = app.member("ada").await?;
    let repository_id = app.repo(&ada, "engine", false).await?;
    let base = "/api/repos/ada/engine/hooks";
    let secret = "It's a Secret to Everybody";
    let body = json!({"config": {"url": receiver.url("/ping"), "secret": secret}});
    let created = app.call("POST", base, Some(body), Some(&ada.token)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.body["id"].as_i64().expect("an id");
    let hook = format!("{base}/{id}");

    let got = received(&receiver, "/ping", 1).await?;
    let ping = &got[0];
    assert_eq!(ping.header("x-github-event"), Some("ping"));
    assert_eq!(ping.header("x-gitea-event"), Some("ping"));
    assert_eq!(ping.header("x-github-hook-id"), Some(&*id.to_string()));
    assert_eq!(ping.header("x-github-hook-installation-target-type"), Some("repository"));
    assert_eq!(
        ping.header("x-github-hook-installation-target-id"),
        Some(&*repository_id.to_string())
    );
    assert_eq!(ping.header("content-type"), Some("application/json"));
    let agent = ping.header("user-agent").unwrap_or_default();
    assert!(agent.starts_with("platform-Hookshot/"), "user agent {agent:?}");
    assert_signed(ping, secret);
    let payload = json_body(ping);
    assert_eq!(payload["hook_id"], id);
    assert!(payload["zen"].is_string(), "{payload}");
    assert_eq!(payload["hook"]["id"], id);
    assert_eq!(payload["hook"]["config"]["has_secret"], true);
    assert_eq!(payload["repository"]["full_name"], "ada/engine");
    assert_eq!(payload["sender"]["login"], "ada");
    assert!(!String::from_utf8_lossy(&ping.body).contains(secret), "the secret in the ping");

    // The delivery log names the same delivery, with what was sent and answered.
    let listed = app.call("GET", &format!("{hook}/deliveries"), None, Some(&ada.token)).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    assert_eq!(listed.body.as_array().map(Vec::len), Some(1), "{}", listed.text);
    let delivery_id = listed.body[0]["id"].as_str().expect("an id").to_owned();
    assert_eq!(ping.header("x-github-delivery"), Some(&*delivery_id));
    assert_eq!(ping.header("x-gitea-delivery"), Some(&*delivery_id));
    let detail_path = format!("{hook}/deliveries/{delivery_id}");
    let detail = wait_for("the ping to be recorded as delivered", PROMPTLY, || async {
        let detail = app.call("GET", &detail_path, None, Some(&ada.token)).await;
        Ok((detail.body["state"] == "delivered").then_some(detail))
    })
    .await?;
    let shown = &detail.body;
    assert_eq!(shown["guid"], delivery_id.as_str());
    assert_eq!(shown["event"], "ping");
    assert_eq!(shown["status"], "OK");
    assert_eq!(shown["status_code"], 200);
    assert_eq!(shown["attempts"], 1);
    assert_eq!(shown["redelivery"], false);
    assert_eq!(shown["repository_id"], repository_id);
    assert_eq!(shown["request"]["headers"]["x-github-event"], "ping", "{}", detail.text);
    assert_eq!(shown["request"]["headers"]["x-github-delivery"], delivery_id.as_str());
    assert_eq!(
        shown["request"]["headers"]["x-hub-signature-256"].as_str(),
        ping.header("x-hub-signature-256")
    );
    let recorded: Value =
        serde_json::from_str(shown["request"]["payload"].as_str().expect("the payload"))?;
    assert_eq!(recorded, payload, "the payload recorded is the one received");
    assert_eq!(shown["response"]["payload"], "ok");
    assert_eq!(shown["response"]["headers"]["content-type"], "text/plain");
    let attempts = shown["attempts_made"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{}", detail.text);
    assert_eq!(attempts[0]["status_code"], 200);
    assert_eq!(attempts[0]["delivered"], true);
    assert_eq!(attempts[0]["url"], receiver.url("/ping"));
    assert!(!detail.text.contains(secret), "the secret in the delivery log");
    let hook_now = app.call("GET", &hook, None, Some(&ada.token)).await;
    assert_eq!(hook_now.body["last_response"]["status"], "active", "{}", hook_now.text);
    assert_eq!(hook_now.body["last_response"]["code"], 200);

    // Sent again on request, under the same id.
    let again = app.call("POST", &format!("{detail_path}/attempts"), None, Some(&ada.token)).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.text);
    let got = received(&receiver, "/ping", 2).await?;
    assert_eq!(got[1].header("x-github-delivery"), Some(&*delivery_id));
    assert_eq!(got[1].body, got[0].body, "the same bytes");
    assert_signed(&got[1], secret);
    let detail = wait_for("the redelivery to be recorded", PROMPTLY, || async {
        let detail = app.call("GET", &detail_path, None, Some(&ada.token)).await;
        let done = detail.body["attempts_made"].as_array().map(Vec::len) == Some(2)
            && detail.body["state"] == "delivered";
        Ok(done.then_some(detail))
    })
    .await?;
    assert_eq!(detail.body["redelivery"], true);
    assert_eq!(detail.body["attempts"], 2);
    let missing = format!("{hook}/deliveries/{}/attempts", uuid::Uuid::new_v4());
    let missing = app.call("POST", &missing, None, Some(&ada.token)).await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found", None);

    // Another ping, on request: a new delivery.
    let pinged = app.call("POST", &format!("{hook}/pings"), None, Some(&ada.token)).await;
    assert_eq!(pinged.status, StatusCode::NO_CONTENT, "{}", pinged.text);
    let got = received(&receiver, "/ping", 3).await?;
    assert_eq!(got[2].header("x-github-event"), Some("ping"));
    let second_id = got[2].header("x-github-delivery").expect("a delivery id");
    assert_ne!(second_id, delivery_id);
    assert_signed(&got[2], secret);
    let listed = app.call("GET", &format!("{hook}/deliveries"), None, Some(&ada.token)).await;
    assert_eq!(listed.body[0]["id"], second_id, "newest first: {}", listed.text);
    assert_eq!(listed.body[1]["id"], delivery_id.as_str());

    // A test push needs a commit on the default branch.
    let tests = format!("{hook}/tests");
    let empty = app.call("POST", &tests, None, Some(&ada.token)).await;
    assert_error(&empty, StatusCode::UNPROCESSABLE_ENTITY, "too_complex", None);
    assert!(empty.text.contains("main"), "{}", empty.text);
    let git_dir = app.git_dir("ada", "engine");
    let tree = git(&git_dir, &["mktree"])?;
    let commit = git(&git_dir, &["commit-tree", &tree, "-m", "The first commit"])?;
    git(&git_dir, &["update-ref", "refs/heads/main", &commit])?;
    let tested = app.call("POST", &tests, None, Some(&ada.token)).await;
    assert_eq!(tested.status, StatusCode::NO_CONTENT, "{}", tested.text);
    let got = received(&receiver, "/ping", 4).await?;
    let push = &got[3];
    assert_eq!(push.header("x-github-event"), Some("push"));
    assert_signed(push, secret);
    let payload = json_body(push);
    assert_eq!(payload["ref"], "refs/heads/main", "{payload}");
    assert_eq!(payload["after"], commit.as_str());
    assert_eq!(payload["head_commit"]["id"], commit.as_str());
    assert_eq!(payload["head_commit"]["message"], "The first commit");
    assert_eq!(payload["commits"][0]["id"], commit.as_str());
    assert_eq!(payload["pusher"]["name"], "ada");
    assert_eq!(payload["repository"]["full_name"], "ada/engine");
    no_more(&receiver, "/ping", 4, Duration::from_millis(300)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_form_hook_gets_the_payload_form_encoded_and_signed_over_the_form_bytes()
-> anyhow::Result<()> {
    let app = App::new().await?;
    let _engine = app.engines(1, &fast())?;
    let receiver = Receiver::start("127.0.0.1:0").await?;
    let ada = app.member("ada").await?;
    app.repo(&ada, "engine", false).await?;
    // A Standard Webhooks secret: its signature is keyed by the decoded remainder.
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let body = json!({
        "config": {"url": receiver.url("/form"), "content_type": "form", "secret": secret},
    });
    let created =
        app.call("POST", "/api/repos/ada/engine/hooks", Some(body), Some(&ada.token)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.body["id"].as_i64().expect("an id");

    let got = received(&receiver, "/form", 1).await?;
    let ping = &got[0];
    assert_eq!(ping.header("content-type"), Some("application/x-www-form-urlencoded"));
    assert_signed(ping, secret);
    let text = std::str::from_utf8(&ping.body)?;
    assert!(text.starts_with("payload="), "{text}");
    assert!(!text.contains('{') && !text.contains(' '), "the JSON is percent-encoded: {text}");
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(ping.body.as_slice())
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    assert_eq!(fields.len(), 1, "{fields:?}");
    let payload: Value = serde_json::from_str(&fields[0].1)?;
    assert_eq!(payload["hook_id"], id);

    // The payload kept is the JSON, which the form carries exactly.
    let delivery_id: uuid::Uuid = ping.header("x-github-delivery").expect("an id").parse()?;
    let detail = app.settled(id, delivery_id, DeliveryState::Delivered).await?;
    assert_eq!(fields[0].1, detail.payload);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The engine
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_receiver_is_retried_with_growing_delays_without_holding_up_other_hooks()
-> anyhow::Result<()> {
    let app = App::new().await?;
    let options = DeliveryOptions { first_retry: Duration::from_millis(300), ..fast() };
    let _engine = app.engines(1, &options)?;
    let receiver = Receiver::start("127.0.0.1:0").await?;
    receiver.fail_first("/failing", 2, 500);
    receiver.set_delay_on("/failing", Duration::from_millis(700));
    let ada = app.member("ada").await?;
    let repository_id = app.repo(&ada, "engine", false).await?;
    let failing = app.hook(repository_id, &receiver.url("/failing")).await?;
    let healthy = app.hook(repository_id, &receiver.url("/healthy")).await?;

    let delivery = app.delivery_to(failing.id).await?;
    let first_other = app.deliveries(healthy.id, 1).await?;
    // The other hook is served while the failing one's first request is still in flight...
    let other = received(&receiver, "/healthy", 1).await?;
    assert!(receiver.received_on("/failing").is_empty(), "the slow receiver answered first");
    // ...and while it waits for its retries.
    let mut next_attempts = Vec::new();
    for attempt in 1..=2 {
        let pending = wait_for(&format!("attempt {attempt} to be recorded"), PROMPTLY, || async {
            let detail = app.delivery(failing.id, delivery).await?;
            let waiting = detail.delivery.state == DeliveryState::Pending
                && detail.delivery.attempts == attempt;
            Ok(waiting.then_some(detail))
        })
        .await?;
        next_attempts.push(pending.delivery.next_attempt_at);
        assert_eq!(pending.delivery.status_code, Some(500));
        let more = app.deliveries(healthy.id, 1).await?;
        let other = app.settled(healthy.id, more[0], DeliveryState::Delivered).await?;
        let delivered_at = other.delivery.delivered_at.expect("a delivery time");
        let retry = app.delivery(failing.id, delivery).await?;
        assert!(
            retry.attempts.len() == attempt as usize,
            "the other hook waited for the failing one's retry: delivered at {delivered_at}"
        );
    }
    let done = app.settled(failing.id, delivery, DeliveryState::Delivered).await?;
    assert_eq!(done.delivery.attempts, 3);
    let statuses: Vec<Option<i32>> = done.attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(statuses, [Some(500), Some(500), Some(200)]);
    let got = receiver.received_on("/failing");
    assert_eq!(got.len(), 3);
    for request in &got {
        assert_eq!(request.header("x-github-delivery"), Some(&*delivery.to_string()), "one id");
    }

    // Each retry waited as DeliveryOptions say: first_retry, then twice that (±20 %).
    let first = options.first_retry;
    for (i, window) in done.attempts.windows(2).enumerate() {
        let (before, after) = (&window[0], &window[1]);
        let ended =
            before.started_at + chrono::TimeDelta::milliseconds(i64::from(before.duration_ms));
        let planned = ms(next_attempts[i] - ended);
        let base = first.as_millis() as i64 * (1 << i);
        assert!(
            planned >= base * 8 / 10 - 20 && planned <= base * 12 / 10 + 50,
            "retry {} planned {planned} ms after the failure, expected {base} ms ± 20 %",
            i + 1
        );
        assert!(after.started_at >= next_attempts[i], "retry {} made before it was due", i + 1);
        let late = ms(after.started_at - next_attempts[i]);
        assert!(late < 1000, "retry {} made {late} ms after it was due", i + 1);
    }
    assert_eq!(other[0].header("x-github-delivery"), Some(&*first_other[0].to_string()));
    let hook = app.hook_record(repository_id, failing.id).await?;
    assert_eq!(hook.failures, 0, "a success resets the count");
    assert_eq!(hook.last_status, Some(200));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_is_honoured() -> anyhow::Result<()> {
    let app = App::new().await?;
    let options = DeliveryOptions { first_retry: Duration::from_millis(100), ..fast() };
    let _engine = app.engines(1, &options)?;
    let receiver = Receiver::start("127.0.0.1:0").await?;
    receiver.fail_first_with("/busy", 1, 503, &[("Retry-After", "3")]);
    let ada = app.member("ada").await?;
    let repository_id = app.repo(&ada, "engine", false).await?;
    let hook = app.hook(repository_id, &receiver.url("/busy")).await?;
    let delivery = app.delivery_to(hook.id).await?;

    let done = app.settled(hook.id, delivery, DeliveryState::Delivered).await?;
    assert_eq!(done.attempts.len(), 2);
    assert_eq!(done.attempts[0].status_code, Some(503));
    let gap = ms(done.attempts[1].started_at - done.attempts[0].started_at);
    assert!(gap >= 3000, "the retry came {gap} ms after a Retry-After of 3 s");
    assert!(gap < 4000, "the retry came {gap} ms after a Retry-After of 3 s: too late");
    let got = receiver.received_on("/busy");
    assert_eq!(got.len(), 2);
    let waited = got[1].read_at.duration_since(got[0].at);
    assert!(waited >= Duration::from_millis(2950), "the receiver saw the retry after {waited:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_410_switches_the_hook_off() -> anyhow::Result<()> {
    let app = App::new().await?;
    let _engine = app.engines(1, &fast())?;
    let receiver = Receiver::start("127.0.0.1:0").await?;
    receiver.fail_first("/gone", 100, 410);
    let ada = app.member("ada").await?;
    let repository_id = app.repo(&ada, "engine", false).await?;
    let hook = app.hook(repository_id, &receiver.url("/gone")).await?;
    let made = app.deliveries(hook.id, 3).await?;

    let first = app.settled(hook.id, made[0], DeliveryState::Failed).await?;
    assert_eq!(first.delivery.status_code, Some(410));
    assert_eq!(first.attempts.len(), 1);
    for later in &made[1..] {
        let detail = app.settled(hook.id, *later, DeliveryState::Failed).await?;
        assert!(detail.attempts.is_empty(), "never sent");
        let error = detail.delivery.error.unwrap_or_default();
        assert!(error.contains("switched off") && error.contains("410"), "{error}");
    }
    let shown = app
        .call("GET", &format!("/api/repos/ada/engine/hooks/{}", hook.id), None, Some(&ada.token))
        .await;
    assert_eq!(shown.body["active"], false, "{}", shown.text);
    let reason = shown.body["disabled_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("410"), "{reason}");
    assert_eq!(shown.body["last_response"]["code"], 410);

    // Nothing more is sent, even when woken with new deliveries.
    app.deliveries(hook.id, 1).await?;
    no_more(&receiver, "/gone", 1, Duration::from_millis(700)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn consecutive_failures_pause_the_hook() -> anyhow::Result<()> {
    let app = App::new().await?;
    let options = DeliveryOptions {
        pause_after: 2,
        first_pause: Duration::from_secs(60),
        // Retries come too late for this test: every request is a first attempt.
        first_retry: Duration::from_secs(60),
        ..fast()
    };
    let _engine = app.engines(1, &options)?;
    let receiver = Receiver::start("127.0.0.1:0").await?;
    receiver.fail_first("/down", 2, 502);
    let ada = app.member("ada").await?;
    let repository_id = app.repo(&ada, "engine", false).await?;
    let hook = app.hook(repository_id, &receiver.url("/down")).await?;
    let made = app.deliveries(hook.id, 4).await?;

    received(&receiver, "/down", 2).await?;
    let before = Utc::now();
    no_more(&receiver, "/down", 2, Duration::from_millis(700)).await;
    let path = format!("/api/repos/ada/engine/hooks/{}", hook.id);
    let shown = app.call("GET", &path, None, Some(&ada.token)).await;
    assert_eq!(shown.body["active"], true, "paused, not switched off: {}", shown.text);
    assert_eq!(shown.body["failures"], 2);
    let until: DateTime<Utc> = shown.body["disabled_until"].as_str().unwrap_or_default().parse()?;
    assert!(until > before + chrono::TimeDelta::seconds(50), "paused until {until}");
    let reason = shown.body["disabled_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("paused") && reason.contains('2'), "{reason}");
    for waiting in &made[2..] {
        let detail = app.delivery(hook.id, *waiting).await?;
        assert_eq!(detail.delivery.state, DeliveryState::Pending);
        assert!(detail.attempts.is_empty(), "sent while paused");
    }

    // Switched on again by its owner, it gets what waited.
    let on = app.call("PATCH", &path, Some(json!({"active": true})), Some(&ada.token)).await;
    assert_eq!(on.body["disabled_until"], Value::Null, "{}", on.text);
    for waiting in &made[2..] {
        app.settled(hook.id, *waiting, DeliveryState::Delivered).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_is_a_failure_and_is_not_followed() -> anyhow::Result<()> {
    let app = App::new().await?;
    let _engine = app.engines(1, &fast())?;
    let receiver = Receiver::start("127.0.0.1:0").await?;
    let target = receiver.url("/elsewhere");
    receiver.fail_first_with("/moved", 1, 302, &[("Location", &target)]);
    let ada = app.member("ada").await?;
    let repository_id = app.repo(&ada, "engine", false).await?;
    let hook = app.hook(repository_id, &receiver.url("/moved")).await?;
    let delivery = app.delivery_to(hook.id).await?;

    let done = app.settled(hook.id, delivery, DeliveryState::Delivered).await?;
    assert_eq!(done.attempts.len(), 2, "the 302 was a failed attempt");
    let redirected = &done.attempts[0];
    assert_eq!(redirected.status_code, Some(302));
    assert!(!redirected.delivered);
    let error = redirected.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("302") && error.contains(&target) && error.contains("not followed"),
        "{error}"
    );
    assert!(receiver.received_on("/elsewhere").is_empty(), "the redirect was followed");
    assert_eq!(receiver.received_on("/moved").len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn one_hooks_deliveries_go_one_at_a_time_and_in_order_across_workers() -> anyhow::Result<()> {
    let app = App::new().await?;
    let _engines = app.engines(2, &fast())?;
    let receiver = Receiver::start("127.0.0.1:0").await?;
    receiver.set_delay(Duration::from_millis(50));
    let ada = app.member("ada").await?;
    let repository_id = app.repo(&ada, "engine", false).await?;
    let hook = app.hook(repository_id, &receiver.url("/ordered")).await?;
    let made = app.deliveries(hook.id, 20).await?;

    let got = received(&receiver, "/ordered", 20).await?;
    no_more(&receiver, "/ordered", 20, Duration::from_millis(300)).await;
    let order: Vec<String> = got
        .iter()
        .map(|one| one.header("x-github-delivery").unwrap_or_default().to_owned())
        .collect();
    let expected: Vec<String> = made.iter().map(ToString::to_string).collect();
    assert_eq!(order, expected, "sent in the order made, each once");
    for (i, pair) in got.windows(2).enumerate() {
        assert!(
            pair[1].read_at >= pair[0].at,
            "request {} arrived before request {i} was answered",
            i + 1
        );
    }
    for (n, one) in got.iter().enumerate() {
        assert_eq!(json_body(one)["n"], n);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_is_given_up_after_max_attempts() -> anyhow::Result<()> {
    let app = App::new().await?;
    let options = DeliveryOptions {
        max_attempts: 3,
        first_retry: Duration::from_millis(100),
        pause_after: 100,
        ..fast()
    };
    let _engine = app.engines(1, &options)?;
    let receiver = Receiver::start("127.0.0.1:0").await?;
    receiver.fail_first("/broken", 1000, 500);
    let ada = app.member("ada").await?;
    let repository_id = app.repo(&ada, "engine", false).await?;
    let hook = app.hook(repository_id, &receiver.url("/broken")).await?;
    let delivery = app.delivery_to(hook.id).await?;

    let failed = app.settled(hook.id, delivery, DeliveryState::Failed).await?;
    assert_eq!(failed.delivery.attempts, 3);
    assert_eq!(failed.attempts.len(), 3);
    assert_eq!(failed.delivery.status_code, Some(500));
    assert!(failed.attempts.iter().all(|attempt| !attempt.delivered));
    no_more(&receiver, "/broken", 3, Duration::from_millis(700)).await;
    let record = app.hook_record(repository_id, hook.id).await?;
    assert!(record.active, "one delivery given up on does not switch the hook off");
    assert_eq!(record.failures, 3);
    Ok(())
}
