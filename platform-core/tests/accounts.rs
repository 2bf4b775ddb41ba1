//! Account routes in-process, against real PostgreSQL and Redis.

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use platform_core::accounts::{AccountMail, Accounts, MAIL_STREAM, router};
use platform_core::config::{DatabaseConfig, EnvReader, RedisConfig, SessionConfig};
use platform_core::db::{CORE_MIGRATIONS, Database};
use platform_core::queue::{ConsumerOptions, Job, JobError, Queue, QueueOptions};
use platform_core::redis::Redis;
use platform_core::telemetry::Metrics;
use platform_test_support::{fresh_database, service_env, unique_name};
use tower::ServiceExt as _;

const PASSWORD: &str = "correct horse battery";

struct Answer {
    status: StatusCode,
    set_cookie: Option<String>,
    body: serde_json::Value,
    text: String,
}

/// Every body the suite received, to check that no hash ever left the server.
struct App {
    router: Router,
    queue: Queue,
    bodies: std::sync::Mutex<Vec<String>>,
    client: std::sync::Mutex<std::net::SocketAddr>,
}

impl App {
    async fn new(cookie_secure: bool) -> anyhow::Result<Self> {
        let url = fresh_database().await?;
        let vars = HashMap::from([
            ("APP_DATABASE_URL".to_owned(), url),
            ("APP_REDIS_URL".to_owned(), service_env("PLATFORM_TEST_REDIS_URL")),
            (
                "APP_SESSION_SECRET".to_owned(),
                "a-session-secret-for-the-accounts-tests-0123".to_owned(),
            ),
            ("APP_COOKIE_SECURE".to_owned(), cookie_secure.to_string()),
        ]);
        let mut env = EnvReader::new(&vars);
        let read = (
            DatabaseConfig::read(&mut env),
            RedisConfig::read(&mut env),
            SessionConfig::read(&mut env),
        );
        let (database, redis, session) = env.finish(read)?;
        let database = Database::connect(&database);
        database.migrate(CORE_MIGRATIONS).await?;
        let namespace = unique_name("accounts");
        let options = QueueOptions { namespace: namespace.clone(), ..QueueOptions::default() };
        let queue = Queue::redis(&redis, options, &Metrics::new("test"))?;
        let accounts = Accounts::new(database, Redis::connect(&redis)?, queue.clone(), &session)?
            .with_namespace(namespace);
        let client = std::sync::Mutex::new("127.0.0.1:40000".parse()?);
        Ok(Self { router: router(accounts), queue, bodies: std::sync::Mutex::default(), client })
    }

    /// Makes the following requests come from `address`.
    fn use_client_address(&self, address: &str) {
        *self.client.lock().expect("not poisoned") = address.parse().expect("a socket address");
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        cookie: Option<&str>,
    ) -> Answer {
        self.call_with(method, path, body, cookie, None).await
    }

    async fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        cookie: Option<&str>,
        csrf: Option<&str>,
    ) -> Answer {
        let client = *self.client.lock().expect("not poisoned");
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .extension(axum::extract::ConnectInfo(client));
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
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
        let set_cookie = response
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        self.bodies.lock().expect("not poisoned").push(text.clone());
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        Answer { status, set_cookie, body, text }
    }

    async fn register(&self, username: &str, email: &str, password: &str) -> Answer {
        let body = serde_json::json!({"username": username, "email": email, "password": password});
        self.call("POST", "/api/auth/register", Some(body), None).await
    }

    async fn login(&self, login: &str, password: &str, cookie: Option<&str>) -> Answer {
        let body = serde_json::json!({"login": login, "password": password});
        self.call("POST", "/api/auth/login", Some(body), cookie).await
    }

    /// Consumes the mail stream until `count` mails arrived (or 20 s passed) and returns them.
    async fn mails(&self, count: usize) -> anyhow::Result<Vec<AccountMail>> {
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = tokio_util::sync::CancellationToken::new();
        let consumer = tokio::spawn({
            let (queue, received, until) =
                (self.queue.clone(), received.clone(), stop.clone().cancelled_owned());
            async move {
                let handler = move |job: Job<AccountMail>| {
                    let received = received.clone();
                    async move {
                        received.lock().expect("not poisoned").push(job.payload);
                        Ok::<(), JobError>(())
                    }
                };
                queue.consume(MAIL_STREAM, "test", ConsumerOptions::default(), handler, until).await
            }
        });
        platform_test_support::eventually("mail jobs", std::time::Duration::from_secs(20), || {
            received.lock().expect("not poisoned").len() >= count
        })
        .await?;
        stop.cancel();
        consumer.await??;
        let mails = received.lock().expect("not poisoned").clone();
        Ok(mails)
    }

    fn assert_no_hash_ever_left(&self) {
        for body in self.bodies.lock().expect("not poisoned").iter() {
            assert!(!body.contains("$argon2"), "a password hash in a response: {body}");
            assert!(!body.contains("password_hash"), "a password hash field in a response: {body}");
        }
    }
}

/// `platform_session=...` from a Set-Cookie header, ready to send back.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().expect("a cookie").to_owned()
}

fn assert_error(answer: &Answer, status: StatusCode, code: &str, field: Option<&str>) {
    assert_eq!(answer.status, status, "{}", answer.text);
    assert_eq!(answer.body["error"]["code"], code, "{}", answer.text);
    assert!(answer.body["error"]["message"].is_string(), "{}", answer.text);
    match field {
        Some(field) => assert_eq!(answer.body["error"]["field"], field, "{}", answer.text),
        None => assert!(answer.body["error"].get("field").is_none(), "{}", answer.text),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn registration_enforces_names_addresses_and_the_password_policy() -> anyhow::Result<()> {
    let app = App::new(false).await?;
    let created = app.register("Ada", "ada@example.com", PASSWORD).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.body["username"], "Ada");
    assert_eq!(created.body["email_verified"], false);

    assert_error(
        &app.register("ada", "other@example.com", PASSWORD).await,
        StatusCode::CONFLICT,
        "conflict",
        Some("username"),
    );
    assert_error(
        &app.register("grace", "ADA@example.com", PASSWORD).await,
        StatusCode::CONFLICT,
        "conflict",
        Some("email"),
    );
    assert_error(
        &app.register("../etc", "x@example.com", PASSWORD).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("username"),
    );
    assert_error(
        &app.register("admin", "x@example.com", PASSWORD).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("username"),
    );
    assert_error(
        &app.register("grace", "not-an-address", PASSWORD).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("email"),
    );
    assert_error(
        &app.register("grace", "grace@example.com", "short").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("password"),
    );

    let malformed = app
        .call("POST", "/api/auth/register", Some(serde_json::json!({"username": 3})), None)
        .await;
    assert_error(&malformed, StatusCode::BAD_REQUEST, "bad_request", None);
    app.assert_no_hash_ever_left();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn login_sets_a_hardened_session_cookie_and_logout_ends_the_session() -> anyhow::Result<()> {
    let app = App::new(false).await?;
    app.register("grace", "grace@example.com", PASSWORD).await;

    assert_error(
        &app.call("GET", "/api/user", None, None).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        None,
    );
    let wrong = app.login("grace", "wrong password!", None).await;
    assert_error(&wrong, StatusCode::UNAUTHORIZED, "invalid_credentials", None);
    let unknown = app.login("nobody", PASSWORD, None).await;
    assert_eq!(unknown.text, wrong.text, "unknown users and wrong passwords look the same");

    let signed_in = app.login("GRACE@example.com", PASSWORD, None).await;
    assert_eq!(signed_in.status, StatusCode::OK, "{}", signed_in.text);
    assert_eq!(signed_in.body["user"]["username"], "grace");
    assert!(!signed_in.text.contains(PASSWORD));
    let csrf = signed_in.body["csrf_token"].as_str().expect("a CSRF token").to_owned();
    let set_cookie = signed_in.set_cookie.expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(set_cookie.contains(attribute), "{attribute} missing: {set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "APP_COOKIE_SECURE=false: {set_cookie}");
    let cookie = cookie_pair(&set_cookie);

    let me = app.call("GET", "/api/user", None, Some(&cookie)).await;
    assert_eq!((me.status, me.body["username"].as_str()), (StatusCode::OK, Some("grace")));

    let session = app.call("GET", "/api/auth/session", None, Some(&cookie)).await;
    assert_eq!(session.body["csrf_token"], csrf.as_str());

    // A cookie alone cannot write: a page on another site could send it, not the token.
    let forged = app.call("POST", "/api/auth/logout", None, Some(&cookie)).await;
    assert_error(&forged, StatusCode::FORBIDDEN, "forbidden", None);
    let wrong = app.call_with("POST", "/api/auth/logout", None, Some(&cookie), Some("guess")).await;
    assert_error(&wrong, StatusCode::FORBIDDEN, "forbidden", None);
    assert_eq!(app.call("GET", "/api/user", None, Some(&cookie)).await.status, StatusCode::OK);

    let logout = app.call_with("POST", "/api/auth/logout", None, Some(&cookie), Some(&csrf)).await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    assert!(logout.set_cookie.is_some_and(|c| c.contains("Max-Age=0")), "the cookie is cleared");
    let replayed = app.call("GET", "/api/user", None, Some(&cookie)).await;
    assert_error(&replayed, StatusCode::UNAUTHORIZED, "unauthenticated", None);
    app.assert_no_hash_ever_left();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn login_never_keeps_a_session_id_the_client_brought() -> anyhow::Result<()> {
    let app = App::new(true).await?;
    app.register("hopper", "hopper@example.com", PASSWORD).await;
    let first = app.login("hopper", PASSWORD, None).await.set_cookie.expect("cookie");
    assert!(first.contains("Secure"), "APP_COOKIE_SECURE=true: {first}");
    let first = cookie_pair(&first);

    // Logging in again while holding a session yields a new id and ends the old one.
    let second =
        cookie_pair(&app.login("hopper", PASSWORD, Some(&first)).await.set_cookie.expect("cookie"));
    assert_ne!(first, second);
    assert_eq!(
        app.call("GET", "/api/user", None, Some(&first)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.call("GET", "/api/user", None, Some(&second)).await.status, StatusCode::OK);

    // A forged or altered cookie is refused.
    let (name, value) = second.split_once('=').expect("name=value");
    let last = if value.ends_with('A') { 'B' } else { 'A' };
    let tampered = format!("{name}={}{last}", &value[..value.len() - 1]);
    assert_eq!(
        app.call("GET", "/api/user", None, Some(&tampered)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let unsigned = format!("{name}=some-session-id");
    assert_eq!(
        app.call("GET", "/api/user", None, Some(&unsigned)).await.status,
        StatusCode::UNAUTHORIZED
    );
    app.assert_no_hash_ever_left();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_logins_are_limited_per_account_and_per_address() -> anyhow::Result<()> {
    let app = App::new(false).await?;
    app.register("turing", "turing@example.com", PASSWORD).await;
    app.register("lovelace", "lovelace@example.com", PASSWORD).await;

    app.use_client_address("127.0.0.2:40000");
    for _ in 0..5 {
        assert_eq!(
            app.login("turing", "wrong password!", None).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // The account is locked for a while, even with the right password and from elsewhere.
    app.use_client_address("127.0.0.3:40000");
    let limited = app.login("Turing", PASSWORD, None).await;
    assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited", None);
    // Other accounts are not affected.
    assert_eq!(app.login("lovelace", PASSWORD, None).await.status, StatusCode::OK);

    // One address guessing across many accounts is stopped too.
    app.use_client_address("127.0.0.4:40000");
    for n in 0..30 {
        let answer = app.login(&format!("nobody{n}"), "wrong password!", None).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "attempt {n}");
    }
    assert_error(
        &app.login("lovelace", PASSWORD, None).await,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        None,
    );
    app.use_client_address("127.0.0.5:40000");
    assert_eq!(app.login("lovelace", PASSWORD, None).await.status, StatusCode::OK);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limited_answer_says_when_to_retry() -> anyhow::Result<()> {
    let app = App::new(false).await?;
    app.register("knuth", "knuth@example.com", PASSWORD).await;
    for _ in 0..5 {
        app.login("knuth", "wrong password!", None).await;
    }
    let client = *app.client.lock().expect("not poisoned");
    let request = Request::post("/api/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .extension(axum::extract::ConnectInfo(client))
        .body(Body::from(
            serde_json::json!({"login": "knuth", "password": PASSWORD}).to_string(),
        ))?;
    let response = app.router.clone().oneshot(request).await?;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()[header::RETRY_AFTER].to_str()?.parse()?;
    assert!((1..=900).contains(&retry_after), "{retry_after}");
    Ok(())
}

fn token_of(mail: &AccountMail) -> &str {
    match mail {
        AccountMail::VerifyEmail { token, .. } | AccountMail::ResetPassword { token, .. } => token,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn registration_mails_a_single_use_verification_token() -> anyhow::Result<()> {
    let app = App::new(false).await?;
    app.register("liskov", "liskov@example.com", PASSWORD).await;
    let mails = app.mails(1).await?;
    let AccountMail::VerifyEmail { username, to, token, .. } = &mails[0] else {
        anyhow::bail!("expected a verification mail, got {mails:?}");
    };
    assert_eq!((username.as_str(), to.as_str()), ("liskov", "liskov@example.com"));

    let bogus = app
        .call("POST", "/api/auth/verify-email", Some(serde_json::json!({"token": "nope"})), None)
        .await;
    assert_error(&bogus, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", Some("token"));
    let verified = app
        .call("POST", "/api/auth/verify-email", Some(serde_json::json!({"token": token})), None)
        .await;
    assert_eq!(verified.status, StatusCode::NO_CONTENT, "{}", verified.text);
    let again = app
        .call("POST", "/api/auth/verify-email", Some(serde_json::json!({"token": token})), None)
        .await;
    assert_error(&again, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", Some("token"));

    let signed_in = app.login("liskov", PASSWORD, None).await;
    assert_eq!(signed_in.body["user"]["email_verified"], true);
    app.assert_no_hash_ever_left();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mailed_reset_token_sets_a_new_password_once_and_ends_every_session() -> anyhow::Result<()>
{
    let app = App::new(false).await?;
    app.register("dijkstra", "dijkstra@example.com", PASSWORD).await;
    let cookie =
        cookie_pair(&app.login("dijkstra", PASSWORD, None).await.set_cookie.expect("cookie"));

    let unknown = app
        .call(
            "POST",
            "/api/auth/password-reset",
            Some(serde_json::json!({"email": "nobody@example.com"})),
            None,
        )
        .await;
    assert_eq!(unknown.status, StatusCode::ACCEPTED, "no hint whether the address exists");
    let known = app
        .call(
            "POST",
            "/api/auth/password-reset",
            Some(serde_json::json!({"email": "DIJKSTRA@example.com"})),
            None,
        )
        .await;
    assert_eq!(known.status, StatusCode::ACCEPTED);
    let mails = app.mails(2).await?;
    assert_eq!(mails.len(), 2, "the verification mail and one reset mail: {mails:?}");
    let reset = mails
        .iter()
        .find(|m| matches!(m, AccountMail::ResetPassword { .. }))
        .expect("a reset mail");
    let token = token_of(reset);

    let confirm = |password: &str| serde_json::json!({"token": token, "password": password});
    let weak =
        app.call("POST", "/api/auth/password-reset/confirm", Some(confirm("short")), None).await;
    assert_error(&weak, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", Some("password"));
    let new_password = "a brand new passphrase";
    let done = app
        .call("POST", "/api/auth/password-reset/confirm", Some(confirm(new_password)), None)
        .await;
    assert_eq!(
        done.status,
        StatusCode::NO_CONTENT,
        "a refused password did not use the token up: {}",
        done.text
    );
    let reused = app
        .call(
            "POST",
            "/api/auth/password-reset/confirm",
            Some(confirm("yet another passphrase")),
            None,
        )
        .await;
    assert_error(&reused, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", Some("token"));

    assert_eq!(
        app.call("GET", "/api/user", None, Some(&cookie)).await.status,
        StatusCode::UNAUTHORIZED,
        "sessions ended"
    );
    assert_eq!(app.login("dijkstra", PASSWORD, None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.login("dijkstra", new_password, None).await.status, StatusCode::OK);
    app.assert_no_hash_ever_left();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn changing_the_password_needs_the_current_one_and_ends_every_session() -> anyhow::Result<()>
{
    let app = App::new(false).await?;
    app.register("hamilton", "hamilton@example.com", PASSWORD).await;
    let first = app.login("hamilton", PASSWORD, None).await;
    let cookie = cookie_pair(first.set_cookie.as_deref().expect("cookie"));
    let csrf = first.body["csrf_token"].as_str().expect("token").to_owned();
    let other_device =
        cookie_pair(&app.login("hamilton", PASSWORD, None).await.set_cookie.expect("cookie"));

    let change = |current: &str, new: &str| serde_json::json!({"current_password": current, "new_password": new});
    let without_token = app
        .call(
            "PUT",
            "/api/user/password",
            Some(change(PASSWORD, "apollo guidance computer")),
            Some(&cookie),
        )
        .await;
    assert_error(&without_token, StatusCode::FORBIDDEN, "forbidden", None);
    let wrong = app
        .call_with(
            "PUT",
            "/api/user/password",
            Some(change("not it at all", "apollo guidance computer")),
            Some(&cookie),
            Some(&csrf),
        )
        .await;
    assert_error(
        &wrong,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("current_password"),
    );
    let changed = app
        .call_with(
            "PUT",
            "/api/user/password",
            Some(change(PASSWORD, "apollo guidance computer")),
            Some(&cookie),
            Some(&csrf),
        )
        .await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT, "{}", changed.text);

    for session in [&cookie, &other_device] {
        assert_eq!(
            app.call("GET", "/api/user", None, Some(session)).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        app.login("hamilton", "apollo guidance computer", None).await.status,
        StatusCode::OK
    );
    app.assert_no_hash_ever_left();
    Ok(())
}
