//! Account routes in-process, against real PostgreSQL and Redis.

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use platform_core::accounts::{Accounts, router};
use platform_core::config::{DatabaseConfig, EnvReader, RedisConfig, SessionConfig};
use platform_core::db::{CORE_MIGRATIONS, Database};
use platform_core::redis::Redis;
use platform_test_support::{fresh_database, service_env};
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
    bodies: std::sync::Mutex<Vec<String>>,
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
        let accounts = Accounts::new(database, Redis::connect(&redis)?, &session)?;
        Ok(Self { router: router(accounts), bodies: std::sync::Mutex::default() })
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        cookie: Option<&str>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
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
    let set_cookie = signed_in.set_cookie.expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(set_cookie.contains(attribute), "{attribute} missing: {set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "APP_COOKIE_SECURE=false: {set_cookie}");
    let cookie = cookie_pair(&set_cookie);

    let me = app.call("GET", "/api/user", None, Some(&cookie)).await;
    assert_eq!((me.status, me.body["username"].as_str()), (StatusCode::OK, Some("grace")));

    let logout = app.call("POST", "/api/auth/logout", None, Some(&cookie)).await;
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
