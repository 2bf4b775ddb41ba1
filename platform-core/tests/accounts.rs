//! Account routes in-process, against real PostgreSQL and Redis.

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use platform_core::accounts::attempts::Verdict;
use platform_core::accounts::{
    AccountMail, Accounts, MAIL_STREAM, Scope, UserRecord, access_tokens, router, users,
};
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
    accounts: Accounts,
    queue: Queue,
    bodies: std::sync::Mutex<Vec<String>>,
    client: std::sync::Mutex<std::net::SocketAddr>,
    namespace: String,
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
            // Requests from 127.0.0.100 come through a proxy, as from an ingress.
            ("APP_TRUSTED_PROXIES".to_owned(), "127.0.0.100".to_owned()),
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
            .with_namespace(namespace.clone());
        let client = std::sync::Mutex::new("127.0.0.1:40000".parse()?);
        Ok(Self {
            router: router(accounts.clone()),
            accounts,
            queue,
            bodies: std::sync::Mutex::default(),
            client,
            namespace,
        })
    }

    /// Logs in with `X-Forwarded-For: forwarded` from the current client address.
    async fn call_with_forwarded(
        &self,
        forwarded: &str,
        login: &str,
        password: &str,
    ) -> StatusCode {
        let body = serde_json::json!({"login": login, "password": password});
        let request = Request::post("/api/auth/login")
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-forwarded-for", forwarded)
            .extension(axum::extract::ConnectInfo(*self.client.lock().expect("not poisoned")))
            .body(Body::from(body.to_string()))
            .expect("valid request");
        self.router.clone().oneshot(request).await.expect("infallible").status()
    }

    /// Removes the index of `user_id`'s sessions, as its expiry does while a session kept alive
    /// by use lives on.
    async fn forget_session_index(&self, user_id: i64) -> anyhow::Result<()> {
        let client = redis::Client::open(service_env("PLATFORM_TEST_REDIS_URL"))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let key = format!("{}:user-sessions:{user_id}", self.namespace);
        redis::cmd("DEL").arg(key).query_async::<()>(&mut conn).await?;
        Ok(())
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

    async fn call_bearer(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        token: &str,
    ) -> Answer {
        self.call_headers(method, path, body, None, None, Some(token)).await
    }

    async fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        cookie: Option<&str>,
        csrf: Option<&str>,
    ) -> Answer {
        self.call_headers(method, path, body, cookie, csrf, None).await
    }

    async fn call_headers(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        cookie: Option<&str>,
        csrf: Option<&str>,
        bearer: Option<&str>,
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
        if let Some(token) = bearer {
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
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.text);
    assert_eq!(created.body["username"], "Ada");
    let signed_in = app.login("ada", PASSWORD, None).await;
    assert_eq!(signed_in.body["user"]["email_verified"], false);

    assert_error(
        &app.register("ada", "other@example.com", PASSWORD).await,
        StatusCode::CONFLICT,
        "conflict",
        Some("username"),
    );
    // A taken address is answered like a free one (nothing to enumerate or squat), no account
    // is made, and its owner is told instead.
    let taken = app.register("grace", "ADA@example.com", PASSWORD).await;
    assert_eq!(taken.status, StatusCode::ACCEPTED, "{}", taken.text);
    assert_eq!(
        serde_json::json!({"username": taken.body["username"], "email": taken.body["email"], "message": taken.body["message"]}),
        serde_json::json!({"username": "grace", "email": "ADA@example.com", "message": created.body["message"]}),
    );
    assert_eq!(app.login("grace", PASSWORD, None).await.status, StatusCode::UNAUTHORIZED);
    // The queue may hand the two mails over in either order.
    let mails = app.mails(2).await?;
    assert!(
        mails
            .iter()
            .any(|m| matches!(m, AccountMail::VerifyEmail { to, .. } if to == "ada@example.com")),
        "{mails:?}"
    );
    assert!(
        mails.iter().any(|m| matches!(m, AccountMail::AccountExists { to, username, .. } if to == "ada@example.com" && username == "Ada")),
        "{mails:?}"
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

    // Behind the trusted proxy, each client is counted by the address it forwards; a client
    // that is not a proxy cannot pick its own.
    app.use_client_address("127.0.0.100:40000");
    for n in 0..30 {
        let answer =
            app.call_with_forwarded("198.51.100.1", &format!("nobody{n}"), "wrong password!").await;
        assert_eq!(answer, StatusCode::UNAUTHORIZED, "attempt {n}");
    }
    let limited = app.call_with_forwarded("198.51.100.1", "lovelace", PASSWORD).await;
    assert_eq!(limited, StatusCode::TOO_MANY_REQUESTS);
    let other_client = app.call_with_forwarded("198.51.100.2", "lovelace", PASSWORD).await;
    assert_eq!(other_client, StatusCode::OK);
    app.use_client_address("127.0.0.4:40000");
    // 127.0.0.4 is limited, and claiming another address does not help it.
    let spoofed = app.call_with_forwarded("198.51.100.3", "lovelace", PASSWORD).await;
    assert_eq!(spoofed, StatusCode::TOO_MANY_REQUESTS);
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
        AccountMail::AccountExists { .. } => panic!("{mail:?} carries no token"),
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
    let signed_in = app.login("dijkstra", PASSWORD, None).await;
    let cookie = cookie_pair(signed_in.set_cookie.as_deref().expect("cookie"));
    app.forget_session_index(signed_in.body["user"]["id"].as_i64().expect("id")).await?;

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
    let again = app
        .call(
            "POST",
            "/api/auth/password-reset",
            Some(serde_json::json!({"email": "dijkstra@example.com"})),
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    let mails = app.mails(3).await?;
    assert_eq!(mails.len(), 3, "the verification mail and two reset mails: {mails:?}");
    let resets: Vec<&AccountMail> =
        mails.iter().filter(|m| matches!(m, AccountMail::ResetPassword { .. })).collect();
    let (earlier, token) = (token_of(resets[0]).to_owned(), token_of(resets[1]));

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

    // Used, it also ends every other reset mail of the account, older ones included.
    let older = app
        .call(
            "POST",
            "/api/auth/password-reset/confirm",
            Some(serde_json::json!({"token": earlier, "password": "yet another passphrase"})),
            None,
        )
        .await;
    assert_error(&older, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", Some("token"));

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
async fn reset_mails_are_throttled_per_account_and_per_address() -> anyhow::Result<()> {
    let app = App::new(false).await?;
    app.register("noether", "noether@example.com", PASSWORD).await;
    let reset = || {
        app.call(
            "POST",
            "/api/auth/password-reset",
            Some(serde_json::json!({"email": "noether@example.com"})),
            None,
        )
    };
    app.use_client_address("127.0.0.30:40000");
    for n in 0..6 {
        assert_eq!(reset().await.status, StatusCode::ACCEPTED, "request {n}");
    }
    // From elsewhere too: the account's limit holds.
    app.use_client_address("127.0.0.31:40000");
    assert_eq!(reset().await.status, StatusCode::ACCEPTED);
    let mails = app.mails(4).await?;
    let resets = mails.iter().filter(|m| matches!(m, AccountMail::ResetPassword { .. })).count();
    assert_eq!(resets, 3, "{mails:?}");
    // One address asking for many accounts (or for addresses that have none) is held too.
    app.use_client_address("127.0.0.32:40000");
    for n in 0..10 {
        let email = format!("user{n}@example.com");
        app.register(&format!("user{n}"), &email, PASSWORD).await;
        let answer = app
            .call(
                "POST",
                "/api/auth/password-reset",
                Some(serde_json::json!({"email": email})),
                None,
            )
            .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);
    }
    app.register("late", "late@example.com", PASSWORD).await;
    let answer = app
        .call(
            "POST",
            "/api/auth/password-reset",
            Some(serde_json::json!({"email": "late@example.com"})),
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    // Eleven verification mails and ten reset mails; the eleventh request sent nothing.
    let mails = app.mails(21).await?;
    let resets = mails.iter().filter(|m| matches!(m, AccountMail::ResetPassword { .. })).count();
    assert_eq!(resets, 10, "{mails:?}");
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
    // However old a session, and whatever became of the index of the user's sessions, it ends.
    app.forget_session_index(first.body["user"]["id"].as_i64().expect("id")).await?;

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

/// Registers `username`, verifies the address and signs in; returns (cookie, CSRF token).
async fn signed_in(app: &App, username: &str) -> (String, String) {
    app.register(username, &format!("{username}@example.com"), PASSWORD).await;
    let mut conn = app.accounts.database().get().await.expect("a connection");
    let user = users::find_by_username(&mut conn, username).await.expect("found").expect("exists");
    users::mark_email_verified(&mut conn, user.id).await.expect("verified");
    let answer = app.login(username, PASSWORD, None).await;
    let cookie = cookie_pair(answer.set_cookie.as_deref().expect("cookie"));
    (cookie, answer.body["csrf_token"].as_str().expect("token").to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn access_tokens_are_shown_once_scoped_and_revocable() -> anyhow::Result<()> {
    let app = App::new(false).await?;
    let (cookie, csrf) = signed_in(&app, "ritchie").await;
    let create = |name: &str, scopes: &[&str]| serde_json::json!({"name": name, "scopes": scopes});

    let created = app
        .call_with(
            "POST",
            "/api/user/tokens",
            Some(create("ci", &["repo:read"])),
            Some(&cookie),
            Some(&csrf),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let read_token = created.body["token"].as_str().expect("the token, once").to_owned();
    assert!(read_token.starts_with("plat_"));
    let admin = app
        .call_with(
            "POST",
            "/api/user/tokens",
            Some(create("admin", &["admin"])),
            Some(&cookie),
            Some(&csrf),
        )
        .await;
    let admin_token = admin.body["token"].as_str().expect("token").to_owned();

    let bad_scope = app
        .call_with(
            "POST",
            "/api/user/tokens",
            Some(create("x", &["root"])),
            Some(&cookie),
            Some(&csrf),
        )
        .await;
    assert_error(&bad_scope, StatusCode::BAD_REQUEST, "bad_request", None);
    let no_scope = app
        .call_with("POST", "/api/user/tokens", Some(create("x", &[])), Some(&cookie), Some(&csrf))
        .await;
    assert_error(&no_scope, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", Some("scopes"));

    // The token authenticates API calls, within its scopes.
    let me = app.call_bearer("GET", "/api/user", None, &read_token).await;
    assert_eq!(me.body["username"], "ritchie");
    let escalate = app
        .call_bearer("POST", "/api/user/tokens", Some(create("more", &["admin"])), &read_token)
        .await;
    assert_error(&escalate, StatusCode::FORBIDDEN, "forbidden", None);
    let listed = app.call_bearer("GET", "/api/user/tokens", None, &admin_token).await;
    assert_eq!(listed.body.as_array().map(Vec::len), Some(2), "{}", listed.text);
    assert!(
        !listed.text.contains(&read_token) && !listed.text.contains("token_hash"),
        "never shown again"
    );

    let id = created.body["id"].as_i64().expect("id");
    let revoked =
        app.call_bearer("DELETE", &format!("/api/user/tokens/{id}"), None, &admin_token).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    assert_error(
        &app.call_bearer("GET", "/api/user", None, &read_token).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        None,
    );
    assert_error(
        &app.call_bearer("DELETE", &format!("/api/user/tokens/{id}"), None, &admin_token).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    assert_error(
        &app.call_bearer("GET", "/api/user", None, "plat_forged").await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        None,
    );

    // Another user's token list is theirs alone.
    let (other_cookie, other_csrf) = signed_in(&app, "thompson").await;
    let theirs = app
        .call_with(
            "DELETE",
            &format!("/api/user/tokens/{}", admin.body["id"]),
            None,
            Some(&other_cookie),
            Some(&other_csrf),
        )
        .await;
    assert_error(&theirs, StatusCode::NOT_FOUND, "not_found", None);
    app.assert_no_hash_ever_left();
    Ok(())
}

fn keygen(args: &[&str]) -> anyhow::Result<(String, String)> {
    let dir = std::env::temp_dir().join(unique_name("keys"));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("key");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-C", "me@laptop", "-f"])
        .arg(&path)
        .args(args)
        .status()?;
    anyhow::ensure!(status.success(), "ssh-keygen {args:?} failed");
    let public = std::fs::read_to_string(path.with_extension("pub"))?;
    let listed = std::process::Command::new("ssh-keygen").arg("-lf").arg(&path).output()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok((public, String::from_utf8_lossy(&listed.stdout).into_owned()))
}

#[tokio::test(flavor = "multi_thread")]
async fn ssh_keys_belong_to_one_user_and_weak_ones_are_refused() -> anyhow::Result<()> {
    let app = App::new(false).await?;
    let (cookie, csrf) = signed_in(&app, "torvalds").await;
    let add = |key: &str| serde_json::json!({"name": "laptop", "key": key});

    let (ed25519, listed) = keygen(&["-t", "ed25519"])?;
    let added = app
        .call_with("POST", "/api/user/keys", Some(add(&ed25519)), Some(&cookie), Some(&csrf))
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.text);
    let fingerprint = added.body["fingerprint"].as_str().expect("fingerprint");
    assert!(
        listed.contains(fingerprint),
        "same fingerprint as ssh-keygen: {listed} vs {fingerprint}"
    );
    assert!(
        !added.body["public_key"].as_str().unwrap_or_default().contains("me@laptop"),
        "comment dropped"
    );

    let (other_cookie, other_csrf) = signed_in(&app, "kernighan").await;
    let taken = app
        .call_with(
            "POST",
            "/api/user/keys",
            Some(add(&ed25519)),
            Some(&other_cookie),
            Some(&other_csrf),
        )
        .await;
    assert_error(&taken, StatusCode::CONFLICT, "conflict", Some("key"));

    let (rsa_small, _) = keygen(&["-t", "rsa", "-b", "1024"])?;
    let refused = app
        .call_with("POST", "/api/user/keys", Some(add(&rsa_small)), Some(&cookie), Some(&csrf))
        .await;
    assert_error(&refused, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", Some("key"));
    assert!(refused.text.contains("2048"), "{}", refused.text);
    let (rsa, _) = keygen(&["-t", "rsa", "-b", "2048"])?;
    let accepted =
        app.call_with("POST", "/api/user/keys", Some(add(&rsa)), Some(&cookie), Some(&csrf)).await;
    assert_eq!(accepted.status, StatusCode::CREATED, "{}", accepted.text);
    let (dsa, _) = keygen(&["-t", "dsa"])?;
    let dsa_refused =
        app.call_with("POST", "/api/user/keys", Some(add(&dsa)), Some(&cookie), Some(&csrf)).await;
    assert_error(&dsa_refused, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", Some("key"));
    assert!(dsa_refused.text.contains("DSA keys are not accepted"), "{}", dsa_refused.text);
    let garbage = app
        .call_with(
            "POST",
            "/api/user/keys",
            Some(add("ssh-ed25519 not-base64")),
            Some(&cookie),
            Some(&csrf),
        )
        .await;
    assert_error(&garbage, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", Some("key"));

    let keys = app.call("GET", "/api/user/keys", None, Some(&cookie)).await;
    assert_eq!(keys.body.as_array().map(Vec::len), Some(2));
    let not_a_key =
        app.call_with("DELETE", "/api/user/keys/abc", None, Some(&cookie), Some(&csrf)).await;
    assert_error(&not_a_key, StatusCode::NOT_FOUND, "not_found", None);
    let id = added.body["id"].as_i64().expect("id");
    let foreign = app
        .call_with(
            "DELETE",
            &format!("/api/user/keys/{id}"),
            None,
            Some(&other_cookie),
            Some(&other_csrf),
        )
        .await;
    assert_error(&foreign, StatusCode::NOT_FOUND, "not_found", None);
    let deleted = app
        .call_with("DELETE", &format!("/api/user/keys/{id}"), None, Some(&cookie), Some(&csrf))
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    // Once deleted, the key is free for its new owner.
    let reused = app
        .call_with(
            "POST",
            "/api/user/keys",
            Some(add(&ed25519)),
            Some(&other_cookie),
            Some(&other_csrf),
        )
        .await;
    assert_eq!(reused.status, StatusCode::CREATED);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn git_credentials_are_a_password_or_the_users_own_token() -> anyhow::Result<()> {
    let app = App::new(false).await?;
    let (cookie, csrf) = signed_in(&app, "hopper2").await;
    let created = app
        .call_with(
            "POST",
            "/api/user/tokens",
            Some(serde_json::json!({"name": "git", "scopes": ["repo:write"]})),
            Some(&cookie),
            Some(&csrf),
        )
        .await;
    let token = created.body["token"].as_str().expect("token").to_owned();
    signed_in(&app, "mallory").await;

    let client: std::net::IpAddr = "127.0.0.9".parse()?;
    let valid = |verdict: Verdict<(UserRecord, Option<Vec<Scope>>)>| match verdict {
        Verdict::Valid((user, scopes)) => Some((user.username, scopes)),
        _ => None,
    };
    let by_password = app.accounts.authenticate_basic("hopper2", PASSWORD, client).await?;
    assert_eq!(valid(by_password), Some(("hopper2".to_owned(), None)));
    let by_token = app.accounts.authenticate_basic("HOPPER2@example.com", &token, client).await?;
    assert_eq!(valid(by_token), Some(("hopper2".to_owned(), Some(vec![Scope::RepoWrite]))));
    assert!(
        valid(app.accounts.authenticate_basic("mallory", &token, client).await?).is_none(),
        "a token works only for its owner"
    );
    let wrong = app.accounts.authenticate_basic("hopper2", "wrong password!", client).await?;
    assert!(matches!(wrong, Verdict::Invalid));
    let nobody = app.accounts.authenticate_basic("nobody", PASSWORD, client).await?;
    assert!(matches!(nobody, Verdict::Invalid));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unverified_account_can_sign_in_but_not_make_tokens_or_keys() -> anyhow::Result<()> {
    let app = App::new(false).await?;
    app.register("newcomer", "newcomer@example.com", PASSWORD).await;
    let answer = app.login("newcomer", PASSWORD, None).await;
    assert_eq!(answer.status, StatusCode::OK);
    let cookie = cookie_pair(answer.set_cookie.as_deref().expect("cookie"));
    let csrf = answer.body["csrf_token"].as_str().expect("token").to_owned();
    assert_eq!(app.call("GET", "/api/user", None, Some(&cookie)).await.status, StatusCode::OK);
    let token = serde_json::json!({"name": "ci", "scopes": ["repo:read"]});
    let refused = app
        .call_with("POST", "/api/user/tokens", Some(token.clone()), Some(&cookie), Some(&csrf))
        .await;
    assert_error(&refused, StatusCode::FORBIDDEN, "forbidden", None);
    assert!(refused.text.contains("verify your email address first"), "{}", refused.text);
    let key = serde_json::json!({"name": "laptop", "key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"});
    let refused =
        app.call_with("POST", "/api/user/keys", Some(key), Some(&cookie), Some(&csrf)).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "forbidden", None);
    // Once the address is verified, both work.
    let mut conn = app.accounts.database().get().await?;
    let user = users::find_by_username(&mut conn, "newcomer").await?.expect("exists");
    users::mark_email_verified(&mut conn, user.id).await?;
    let created =
        app.call_with("POST", "/api/user/tokens", Some(token), Some(&cookie), Some(&csrf)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn simultaneous_guesses_cannot_overtake_the_limit() -> anyhow::Result<()> {
    let app = App::new(false).await?;
    app.register("hamming", "hamming@example.com", PASSWORD).await;
    // 40 at once, 39 of them wrong: each is counted before its password is checked, so no more
    // than the limit of 5 is ever verified.
    let attempts = (0..40).map(|i| {
        let password = if i == 20 { PASSWORD.to_owned() } else { format!("wrong password {i}") };
        let app = &app;
        async move { app.login("hamming", &password, None).await.status }
    });
    let statuses = futures_util::future::join_all(attempts).await;
    let checked = statuses.iter().filter(|s| **s != StatusCode::TOO_MANY_REQUESTS).count();
    assert!(checked <= 5, "{checked} attempts were checked: {statuses:?}");
    assert!(statuses.iter().all(|s| [200, 401, 429].contains(&s.as_u16())), "{statuses:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn git_credentials_share_the_logins_limits() -> anyhow::Result<()> {
    let app = App::new(false).await?;
    let (cookie, csrf) = signed_in(&app, "dijkstra").await;
    let created = app
        .call_with(
            "POST",
            "/api/user/tokens",
            Some(serde_json::json!({"name": "ci", "scopes": ["repo:read"]})),
            Some(&cookie),
            Some(&csrf),
        )
        .await;
    let token = created.body["token"].as_str().expect("token").to_owned();
    let attacker: std::net::IpAddr = "127.0.0.20".parse()?;
    for _ in 0..5 {
        let verdict =
            app.accounts.authenticate_basic("dijkstra", "wrong password!", attacker).await?;
        assert!(matches!(verdict, Verdict::Invalid));
    }
    // Locked for the API login and for git alike, even with the right password and elsewhere.
    let elsewhere: std::net::IpAddr = "127.0.0.21".parse()?;
    let verdict = app.accounts.authenticate_basic("dijkstra", PASSWORD, elsewhere).await?;
    assert!(matches!(verdict, Verdict::Limited(_)), "{verdict:?}");
    app.use_client_address("127.0.0.21:40000");
    let answer = app.login("dijkstra", PASSWORD, None).await;
    assert_error(&answer, StatusCode::TOO_MANY_REQUESTS, "rate_limited", None);
    // The user's token still works (from an address within its limit).
    let verdict = app.accounts.authenticate_basic("dijkstra", &token, elsewhere).await?;
    assert!(matches!(verdict, Verdict::Valid(_)), "{verdict:?}");

    // Wrong tokens count too: an address guessing them is stopped, tokens and passwords alike.
    let guesser: std::net::IpAddr = "127.0.0.22".parse()?;
    for n in 0..30 {
        let guess = format!("{}{n:040}", access_tokens::TOKEN_PREFIX);
        let verdict = app.accounts.authenticate_basic("dijkstra", &guess, guesser).await?;
        assert!(matches!(verdict, Verdict::Invalid), "guess {n}: {verdict:?}");
    }
    let verdict = app.accounts.authenticate_basic("dijkstra", &token, guesser).await?;
    assert!(matches!(verdict, Verdict::Limited(_)), "{verdict:?}");
    app.use_client_address("127.0.0.22:40000");
    app.register("dahl", "dahl@example.com", PASSWORD).await;
    let answer = app.login("dahl", PASSWORD, None).await;
    assert_error(&answer, StatusCode::TOO_MANY_REQUESTS, "rate_limited", None);
    assert!(app.accounts.address_limited(guesser).await?.is_some());
    Ok(())
}
