//! The repository API in-process, against real PostgreSQL, Redis and the real `git`.

mod common;

use std::path::PathBuf;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use platform_core::accounts::{Scope, access_tokens, password};
use platform_core::db::Database;
use platform_git::api::RepoApi;
use platform_git::store::RepoStore;
use platform_test_support::{unique_name, unverified_user, verified_user};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use common::PASSWORD;

struct Answer {
    status: StatusCode,
    body: Value,
    text: String,
}

struct App {
    router: Router,
    database: Database,
    repos_root: PathBuf,
    password_hash: String,
    /// Every body the suite received, to check that no hash ever left the server.
    bodies: std::sync::Mutex<Vec<String>>,
}

/// A user of the suite, with a token holding every scope.
struct Member {
    id: i64,
    name: String,
    token: String,
}

impl App {
    async fn new() -> anyhow::Result<Self> {
        let common::Backing { database, accounts, .. } = common::backing(None).await?;
        let repos_root = std::env::temp_dir().join(unique_name("repos"));
        let repos = RepoApi::new(
            accounts.clone(),
            RepoStore::new(&repos_root),
            "https://git.example.com".parse()?,
        )
        .with_ssh_base("ssh://git@git.example.com:2222");
        let routes = platform_core::accounts::api(accounts).merge(platform_git::api::api(repos));
        let password_hash = password::hash(PASSWORD)?;
        Ok(Self {
            router: platform_core::api::documented(routes, "platform", "test"),
            database,
            repos_root,
            password_hash,
            bodies: std::sync::Mutex::default(),
        })
    }

    /// Creates a user directly (registration is the accounts suite's), with an all-scope token.
    async fn member(&self, name: &str) -> anyhow::Result<Member> {
        self.member_with(name, &[Scope::Admin]).await
    }

    async fn member_with(&self, name: &str, scopes: &[Scope]) -> anyhow::Result<Member> {
        let (id, token) = verified_user(&self.database, name, &self.password_hash, scopes).await?;
        Ok(Member { id, name: name.to_owned(), token })
    }

    async fn token_for(&self, member: &Member, scopes: &[Scope]) -> anyhow::Result<String> {
        let mut conn = self.database.get().await?;
        Ok(access_tokens::create(&mut conn, member.id, "scoped", scopes, None).await?.0)
    }

    async fn make_platform_admin(&self, member: &Member) -> anyhow::Result<()> {
        use diesel_async::RunQueryDsl as _;
        let mut conn = self.database.get().await?;
        diesel::sql_query("UPDATE users SET is_admin = true WHERE id = $1")
            .bind::<diesel::sql_types::BigInt, _>(member.id)
            .execute(&mut conn)
            .await?;
        Ok(())
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Answer {
        self.send(method, path, body, token.map(|t| format!("Bearer {t}")), None, None).await
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        authorization: Option<String>,
        cookie: Option<&str>,
        csrf: Option<&str>,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .extension(axum::extract::ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 1))));
        if let Some(authorization) = authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
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
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        self.bodies.lock().expect("not poisoned").push(text.clone());
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer { status, body, text }
    }

    async fn create_repo(&self, owner: &Member, name: &str, private: bool) -> Answer {
        let body = json!({"name": name, "private": private, "description": "a test repository"});
        self.call("POST", "/api/repos", Some(body), Some(&owner.token)).await
    }

    fn disk_path(&self, owner: &str, name: &str) -> PathBuf {
        self.repos_root
            .join(owner.to_ascii_lowercase())
            .join(format!("{}.git", name.to_ascii_lowercase()))
    }

    fn assert_no_secret_ever_left(&self, tokens: &[&str]) {
        for body in self.bodies.lock().expect("not poisoned").iter() {
            assert!(!body.contains("$argon2"), "a password hash in a response: {body}");
            assert!(!body.contains("password_hash"), "a password hash field: {body}");
            assert!(!body.contains("token_hash"), "a token hash field: {body}");
            for token in tokens {
                assert!(!body.contains(token), "a token in a response: {body}");
            }
        }
    }
}

fn assert_error(answer: &Answer, status: StatusCode, code: &str, field: Option<&str>) {
    assert_eq!(answer.status, status, "{}", answer.text);
    assert_eq!(answer.body["error"]["code"], code, "{}", answer.text);
    if let Some(field) = field {
        assert_eq!(answer.body["error"]["field"], field, "{}", answer.text);
    }
}

fn git(args: &[&str]) -> anyhow::Result<String> {
    let output = std::process::Command::new("git").args(args).output()?;
    anyhow::ensure!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_created_repository_is_a_bare_repository_git_accepts() -> anyhow::Result<()> {
    let app = App::new().await?;
    let ada = app.member("ada").await?;
    let body =
        json!({"name": "Engine", "description": "difference engine", "default_branch": "trunk"});
    let created = app.call("POST", "/api/repos", Some(body), Some(&ada.token)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.body["full_name"], "ada/Engine");
    assert_eq!(created.body["default_branch"], "trunk");
    assert_eq!(created.body["private"], false);
    assert_eq!(created.body["permission"], "owner");
    assert_eq!(created.body["clone_url"], "https://git.example.com/ada/Engine.git");
    assert_eq!(created.body["ssh_url"], "ssh://git@git.example.com:2222/ada/Engine.git");

    let path = app.disk_path("ada", "Engine");
    let git_dir = path.to_string_lossy().into_owned();
    assert_eq!(git(&["--git-dir", &git_dir, "rev-parse", "--is-bare-repository"])?, "true");
    assert_eq!(git(&["--git-dir", &git_dir, "symbolic-ref", "HEAD"])?, "refs/heads/trunk");
    git(&["--git-dir", &git_dir, "fsck", "--strict"])?;

    // git can push to it and clone from it.
    let work = std::env::temp_dir().join(unique_name("work"));
    let work_arg = work.to_string_lossy().into_owned();
    git(&["init", "--quiet", "--initial-branch=trunk", &work_arg])?;
    git(&[
        "-C",
        &work_arg,
        "-c",
        "user.name=Ada",
        "-c",
        "user.email=ada@example.com",
        "commit",
        "--quiet",
        "--allow-empty",
        "-m",
        "first",
    ])?;
    git(&["-C", &work_arg, "push", "--quiet", &git_dir, "trunk"])?;
    let clone = work.with_extension("clone").to_string_lossy().into_owned();
    git(&["clone", "--quiet", &git_dir, &clone])?;
    assert_eq!(git(&["-C", &clone, "log", "--format=%s"])?, "first");

    let fetched = app.call("GET", "/api/repos/ADA/engine", None, None).await;
    assert_eq!(fetched.status, StatusCode::OK, "{}", fetched.text);
    assert_eq!(fetched.body["name"], "Engine");
    assert!(fetched.body["permission"].is_null(), "anonymous callers have no permission field");
    app.assert_no_secret_ever_left(&[&ada.token]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn names_are_checked_and_unique_per_owner_without_regard_to_case() -> anyhow::Result<()> {
    let app = App::new().await?;
    let ada = app.member("ada").await?;
    let grace = app.member("grace").await?;
    for name in ["../escape", "a/b", ".hidden", "-dash", "engine.git", "api", "", "a b", "é"] {
        let answer = app.create_repo(&ada, name, false).await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", Some("name"));
    }
    let long = "x".repeat(101);
    assert_error(
        &app.create_repo(&ada, &long, false).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("name"),
    );
    assert_eq!(app.create_repo(&ada, "Engine", false).await.status, StatusCode::CREATED);
    assert_error(
        &app.create_repo(&ada, "ENGINE", true).await,
        StatusCode::CONFLICT,
        "conflict",
        Some("name"),
    );
    assert_eq!(app.create_repo(&grace, "engine", false).await.status, StatusCode::CREATED);

    let bad_branch = json!({"name": "other", "default_branch": "bad..branch"});
    let answer = app.call("POST", "/api/repos", Some(bad_branch), Some(&ada.token)).await;
    assert_error(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("default_branch"),
    );
    let long_description = json!({"name": "other", "description": "d".repeat(1001)});
    let answer = app.call("POST", "/api/repos", Some(long_description), Some(&ada.token)).await;
    assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", Some("description"));
    assert!(!app.disk_path("ada", "other").exists(), "a refused repository left files behind");

    let nul =
        app.call("POST", "/api/repos", Some(json!({"name": "a\u{0}b"})), Some(&ada.token)).await;
    assert_error(&nul, StatusCode::BAD_REQUEST, "bad_request", None);
    assert_error(
        &app.call("GET", "/api/repos/ada/en%00gine", None, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn listings_show_what_the_caller_can_see_one_page_at_a_time() -> anyhow::Result<()> {
    let app = App::new().await?;
    let ada = app.member("ada").await?;
    let grace = app.member("grace").await?;
    let linus = app.member("linus").await?;
    for (name, private) in [("alpha", false), ("beta", true), ("gamma", false)] {
        assert_eq!(app.create_repo(&ada, name, private).await.status, StatusCode::CREATED);
    }
    assert_eq!(app.create_repo(&grace, "delta", true).await.status, StatusCode::CREATED);
    let role = json!({"role": "read"});
    let added = app
        .call("PUT", "/api/repos/grace/delta/collaborators/linus", Some(role), Some(&grace.token))
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.text);

    let names = |answer: &Answer| -> Vec<String> {
        answer.body["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["full_name"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let anonymous = app.call("GET", "/api/repos", None, None).await;
    assert_eq!(names(&anonymous), ["ada/alpha", "ada/gamma"]);
    assert_eq!(anonymous.body["total"], 2);
    let linus_sees = app.call("GET", "/api/repos", None, Some(&linus.token)).await;
    assert_eq!(names(&linus_sees), ["ada/alpha", "ada/gamma", "grace/delta"]);
    let ada_sees = app.call("GET", "/api/repos?per_page=2", None, Some(&ada.token)).await;
    assert_eq!(names(&ada_sees), ["ada/alpha", "ada/beta"]);
    assert_eq!(ada_sees.body["total"], 3);
    let page_two = app.call("GET", "/api/repos?per_page=2&page=2", None, Some(&ada.token)).await;
    assert_eq!(names(&page_two), ["ada/gamma"]);
    assert_eq!(page_two.body["page"], 2);

    let mine = app.call("GET", "/api/user/repos", None, Some(&linus.token)).await;
    assert_eq!(names(&mine), ["grace/delta"]);
    assert_eq!(mine.body["items"][0]["permission"], "read");
    assert_error(
        &app.call("GET", "/api/user/repos", None, None).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        None,
    );
    let of_grace = app.call("GET", "/api/users/grace/repos", None, Some(&ada.token)).await;
    assert_eq!(names(&of_grace), Vec::<String>::new());
    let of_ada = app.call("GET", "/api/users/ADA/repos", None, None).await;
    assert_eq!(names(&of_ada), ["ada/alpha", "ada/gamma"]);
    assert_error(
        &app.call("GET", "/api/users/nobody/repos", None, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    for query in ["per_page=0", "per_page=101", "page=0"] {
        let answer = app.call("GET", &format!("/api/repos?{query}"), None, None).await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", None);
    }
    assert_error(
        &app.call("GET", "/api/repos?page=abc", None, None).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        None,
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_rename_and_delete_change_the_disk_with_the_record() -> anyhow::Result<()> {
    let app = App::new().await?;
    let ada = app.member("ada").await?;
    let grace = app.member("grace").await?;
    assert_eq!(app.create_repo(&ada, "engine", false).await.status, StatusCode::CREATED);
    assert_eq!(app.create_repo(&ada, "taken", false).await.status, StatusCode::CREATED);

    let changes =
        json!({"description": "analytical", "private": true, "default_branch": "develop"});
    let updated = app.call("PATCH", "/api/repos/ada/engine", Some(changes), Some(&ada.token)).await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.text);
    assert_eq!(updated.body["description"], "analytical");
    assert_eq!(updated.body["private"], true);
    assert_eq!(updated.body["default_branch"], "develop");
    let git_dir = app.disk_path("ada", "engine").to_string_lossy().into_owned();
    assert_eq!(git(&["--git-dir", &git_dir, "symbolic-ref", "HEAD"])?, "refs/heads/develop");
    assert_error(
        &app.call("GET", "/api/repos/ada/engine", None, Some(&grace.token)).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    let bad = json!({"default_branch": "HEAD:x"});
    let answer = app.call("PATCH", "/api/repos/ada/engine", Some(bad), Some(&ada.token)).await;
    assert_error(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("default_branch"),
    );

    let rename = |name: &str| json!({"name": name});
    let answer = app
        .call("POST", "/api/repos/ada/engine/rename", Some(rename("Taken")), Some(&ada.token))
        .await;
    assert_error(&answer, StatusCode::CONFLICT, "conflict", Some("name"));
    let answer = app
        .call("POST", "/api/repos/ada/engine/rename", Some(rename("..")), Some(&ada.token))
        .await;
    assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", Some("name"));
    assert!(app.disk_path("ada", "engine").exists(), "a refused rename moved the repository");
    let renamed = app
        .call("POST", "/api/repos/ada/engine/rename", Some(rename("Motor")), Some(&ada.token))
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.text);
    assert_eq!(renamed.body["full_name"], "ada/Motor");
    assert!(!app.disk_path("ada", "engine").exists());
    assert!(app.disk_path("ada", "motor").exists());
    assert_eq!(
        app.call("GET", "/api/repos/ada/engine", None, Some(&ada.token)).await.status,
        StatusCode::NOT_FOUND
    );
    // Only the case changes: same directory, new spelling.
    let recased = app
        .call("POST", "/api/repos/ada/motor/rename", Some(rename("MOTOR")), Some(&ada.token))
        .await;
    assert_eq!(recased.status, StatusCode::OK, "{}", recased.text);
    assert!(app.disk_path("ada", "motor").exists());

    let deleted = app.call("DELETE", "/api/repos/ada/motor", None, Some(&ada.token)).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text);
    assert!(!app.disk_path("ada", "motor").exists());
    assert_eq!(
        app.call("GET", "/api/repos/ada/motor", None, Some(&ada.token)).await.status,
        StatusCode::NOT_FOUND
    );
    // The name is free again.
    assert_eq!(app.create_repo(&ada, "motor", false).await.status, StatusCode::CREATED);

    // A fork copies every ref; it keeps the original's visibility and default branch.
    let git_dir = app.disk_path("ada", "motor").to_string_lossy().into_owned();
    let work = std::env::temp_dir().join(unique_name("fork-work"));
    let work_arg = work.to_string_lossy().into_owned();
    git(&["init", "--quiet", "--initial-branch=main", &work_arg])?;
    git(&[
        "-C",
        &work_arg,
        "-c",
        "user.name=Ada",
        "-c",
        "user.email=ada@example.com",
        "commit",
        "--quiet",
        "--allow-empty",
        "-m",
        "first",
    ])?;
    git(&["-C", &work_arg, "push", "--quiet", &git_dir, "main", "main:topic"])?;
    let fork =
        app.call("POST", "/api/repos/ada/motor/forks", Some(json!({})), Some(&grace.token)).await;
    assert_eq!(fork.status, StatusCode::CREATED, "{}", fork.text);
    assert_eq!(fork.body["full_name"], "grace/motor");
    let fork_dir = app.disk_path("grace", "motor").to_string_lossy().into_owned();
    assert_eq!(
        git(&["--git-dir", &fork_dir, "for-each-ref", "--format=%(refname)"])?,
        "refs/heads/main\nrefs/heads/topic"
    );
    let again =
        app.call("POST", "/api/repos/ada/motor/forks", Some(json!({})), Some(&grace.token)).await;
    assert_error(&again, StatusCode::CONFLICT, "conflict", Some("name"));
    let named = json!({"name": "motor-2"});
    let renamed_fork =
        app.call("POST", "/api/repos/ada/motor/forks", Some(named), Some(&grace.token)).await;
    assert_eq!(renamed_fork.status, StatusCode::CREATED, "{}", renamed_fork.text);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn collaborators_and_protected_branches_are_managed_by_admins() -> anyhow::Result<()> {
    let app = App::new().await?;
    let ada = app.member("ada").await?;
    let grace = app.member("grace").await?;
    assert_eq!(app.create_repo(&ada, "engine", true).await.status, StatusCode::CREATED);
    let path = "/api/repos/ada/engine/collaborators/grace";

    let added = app.call("PUT", path, Some(json!({"role": "write"})), Some(&ada.token)).await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.text);
    assert_eq!(added.body["username"], "grace");
    assert_eq!(added.body["role"], "write");
    let changed = app.call("PUT", path, Some(json!({"role": "admin"})), Some(&ada.token)).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    assert_eq!(changed.body["role"], "admin");
    let listed =
        app.call("GET", "/api/repos/ada/engine/collaborators", None, Some(&grace.token)).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    assert_eq!(listed.body.as_array().map(Vec::len), Some(1));
    assert_eq!(listed.body[0]["role"], "admin");

    let answer = app
        .call(
            "PUT",
            "/api/repos/ada/engine/collaborators/ada",
            Some(json!({"role": "read"})),
            Some(&ada.token),
        )
        .await;
    assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", Some("username"));
    let answer = app
        .call(
            "PUT",
            "/api/repos/ada/engine/collaborators/nobody",
            Some(json!({"role": "read"})),
            Some(&ada.token),
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found", None);
    let answer = app.call("PUT", path, Some(json!({"role": "owner"})), Some(&ada.token)).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request", None);

    let rules = "/api/repos/ada/engine/protected-branches";
    let rule = json!({"pattern": "release/*", "push_access": "admin"});
    let created = app.call("POST", rules, Some(rule.clone()), Some(&grace.token)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.body["push_access"], "admin");
    assert_eq!(created.body["allow_force_push"], false);
    assert_error(
        &app.call("POST", rules, Some(rule), Some(&ada.token)).await,
        StatusCode::CONFLICT,
        "conflict",
        Some("pattern"),
    );
    for pattern in ["", "bad..name", "a b", "-x", "ends/", "x.lock", "a:b"] {
        let answer =
            app.call("POST", rules, Some(json!({"pattern": pattern})), Some(&ada.token)).await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", Some("pattern"));
    }
    let main = app.call("POST", rules, Some(json!({"pattern": "main"})), Some(&ada.token)).await;
    assert_eq!(main.status, StatusCode::CREATED, "{}", main.text);
    let listed = app.call("GET", rules, None, Some(&ada.token)).await;
    let patterns: Vec<&str> = listed
        .body
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["pattern"].as_str())
        .collect();
    assert_eq!(patterns, ["main", "release/*"]);

    let id = created.body["id"].as_i64().unwrap_or_default();
    let rule_path = format!("{rules}/{id}");
    assert_eq!(
        app.call("DELETE", &rule_path, None, Some(&ada.token)).await.status,
        StatusCode::NO_CONTENT
    );
    assert_error(
        &app.call("DELETE", &rule_path, None, Some(&ada.token)).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );

    assert_eq!(
        app.call("DELETE", path, None, Some(&ada.token)).await.status,
        StatusCode::NO_CONTENT
    );
    assert_error(
        &app.call("DELETE", path, None, Some(&ada.token)).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    // No longer a collaborator: the private repository is gone from grace's view.
    assert_error(
        &app.call("GET", "/api/repos/ada/engine", None, Some(&grace.token)).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    app.assert_no_secret_ever_left(&[&ada.token, &grace.token]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_act_within_their_scopes_and_sessions_need_the_csrf_token() -> anyhow::Result<()> {
    let app = App::new().await?;
    let ada = app.member("ada").await?;
    let read_only = app.token_for(&ada, &[Scope::RepoRead]).await?;
    let write = app.token_for(&ada, &[Scope::RepoWrite]).await?;

    assert_error(
        &app.call("POST", "/api/repos", Some(json!({"name": "engine"})), Some(&read_only)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    );
    let created =
        app.call("POST", "/api/repos", Some(json!({"name": "engine"})), Some(&write)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(
        app.call("GET", "/api/repos/ada/engine", None, Some(&read_only)).await.status,
        StatusCode::OK
    );
    assert_error(
        &app.call("DELETE", "/api/repos/ada/engine", None, Some(&write)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    );
    assert_error(
        &app.call("GET", "/api/repos", None, Some("plat_not-a-token")).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        None,
    );

    let login = app
        .send(
            "POST",
            "/api/auth/login",
            Some(json!({"login": "ada", "password": PASSWORD})),
            None,
            None,
            None,
        )
        .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text);
    let csrf = login.body["csrf_token"].as_str().unwrap_or_default().to_owned();
    let cookie = app
        .router
        .clone()
        .oneshot(
            Request::post("/api/auth/login")
                .header(header::CONTENT_TYPE, "application/json")
                .extension(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                    [127, 0, 0, 1],
                    1,
                ))))
                .body(Body::from(json!({"login": "ada", "password": PASSWORD}).to_string()))?,
        )
        .await?
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
        .unwrap_or_default();
    // The second login made a new session with its own CSRF token.
    let session = app.send("GET", "/api/auth/session", None, None, Some(&cookie), None).await;
    let csrf_now = session.body["csrf_token"].as_str().unwrap_or_default().to_owned();
    assert_ne!(csrf, csrf_now);
    let body = json!({"name": "by-browser"});
    let refused =
        app.send("POST", "/api/repos", Some(body.clone()), None, Some(&cookie), None).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "forbidden", None);
    let created =
        app.send("POST", "/api/repos", Some(body), None, Some(&cookie), Some(&csrf_now)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    app.assert_no_secret_ever_left(&[&ada.token, &read_only, &write]);
    Ok(())
}

/// Who calls, in the authorization matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Anonymous,
    Stranger,
    Reader,
    Writer,
    Admin,
    Owner,
    PlatformAdmin,
}

const EVERYONE: [Who; 7] = [
    Who::Anonymous,
    Who::Stranger,
    Who::Reader,
    Who::Writer,
    Who::Admin,
    Who::Owner,
    Who::PlatformAdmin,
];

/// The status each caller gets: `read` routes need read access, `list collaborators` write,
/// changes admin, and deleting the owner.
fn expected(route: &str, who: Who, private: bool) -> u16 {
    let level = match who {
        Who::Anonymous | Who::Stranger => 0,
        Who::Reader => 1,
        Who::Writer => 2,
        Who::Admin => 3,
        Who::Owner | Who::PlatformAdmin => 4,
    };
    let (needed, success, needs_sign_in) = match route {
        "get" | "list rules" => (1, 200, false),
        "list collaborators" => (2, 200, true),
        "update" | "rename" => (3, 200, true),
        "add rule" | "add collaborator" => (3, 201, true),
        "delete" => (4, 204, true),
        other => panic!("unknown route {other}"),
    };
    if who == Who::Anonymous && needs_sign_in {
        return 401;
    }
    let visible = !private || level > 0;
    if !visible {
        return 404;
    }
    // Strangers and anonymous callers read public repositories.
    let level = if level == 0 && !private { 1 } else { level };
    if level >= needed { success } else { 403 }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_authorization_matrix_of_repository_routes() -> anyhow::Result<()> {
    let app = App::new().await?;
    let owner = app.member("owner").await?;
    let members = [
        (Who::Stranger, app.member("stranger").await?),
        (Who::Reader, app.member("reader").await?),
        (Who::Writer, app.member("writer").await?),
        (Who::Admin, app.member("admin-collaborator").await?),
        (Who::PlatformAdmin, app.member("operator").await?),
    ];
    let newcomer = app.member("newcomer").await?;
    app.make_platform_admin(&members[4].1).await?;
    let token_of = |who: Who| -> Option<String> {
        match who {
            Who::Anonymous => None,
            Who::Owner => Some(owner.token.clone()),
            other => members.iter().find(|(w, _)| *w == other).map(|(_, m)| m.token.clone()),
        }
    };

    let mut failures = Vec::new();
    let mut cells = 0;
    for private in [false, true] {
        for who in EVERYONE {
            // A fresh repository per caller, since some routes rename or delete it.
            let name = format!("{}-{:?}", if private { "private" } else { "public" }, who)
                .to_ascii_lowercase();
            let created = app.create_repo(&owner, &name, private).await;
            assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
            for (role, member) in [("read", 1), ("write", 2), ("admin", 3)] {
                let path =
                    format!("/api/repos/owner/{name}/collaborators/{}", members[member].1.name);
                let answer =
                    app.call("PUT", &path, Some(json!({"role": role})), Some(&owner.token)).await;
                assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
            }
            let base = format!("/api/repos/owner/{name}");
            let token = token_of(who);
            let routes: [(&str, &str, String, Option<Value>); 8] = [
                ("get", "GET", base.clone(), None),
                ("list rules", "GET", format!("{base}/protected-branches"), None),
                ("list collaborators", "GET", format!("{base}/collaborators"), None),
                ("update", "PATCH", base.clone(), Some(json!({"description": "changed"}))),
                (
                    "add rule",
                    "POST",
                    format!("{base}/protected-branches"),
                    Some(json!({"pattern": "main"})),
                ),
                (
                    "add collaborator",
                    "PUT",
                    format!("{base}/collaborators/{}", newcomer.name),
                    Some(json!({"role": "read"})),
                ),
                (
                    "rename",
                    "POST",
                    format!("{base}/rename"),
                    Some(json!({"name": format!("{name}-renamed")})),
                ),
                ("delete", "DELETE", format!("{base}-renamed"), None),
            ];
            let mut renamed = false;
            for (route, method, path, body) in routes {
                // Delete the renamed repository when the rename went through, else the original.
                let path = if route == "delete" && !renamed { base.clone() } else { path };
                let answer = app.call(method, &path, body, token.as_deref()).await;
                cells += 1;
                let want = expected(route, who, private);
                if answer.status.as_u16() != want {
                    failures.push(format!(
                        "{who:?} {route} on a {} repository: got {}, want {want} ({})",
                        if private { "private" } else { "public" },
                        answer.status,
                        answer.text
                    ));
                }
                if route == "rename" && answer.status == StatusCode::OK {
                    renamed = true;
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
    assert_eq!(cells, 2 * 7 * 8);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_describes_every_route() -> anyhow::Result<()> {
    let app = App::new().await?;
    let answer = app.call("GET", "/api/openapi.json", None, None).await;
    assert_eq!(answer.status, StatusCode::OK);
    let document = answer.body;
    assert!(document["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{document}");
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().into_iter().flatten() {
        for (method, operation) in item.as_object().into_iter().flatten() {
            operations.push(format!("{} {path}", method.to_uppercase()));
            let responses = operation["responses"].as_object();
            assert!(
                responses.is_some_and(|r| r.keys().any(|s| s.starts_with('2'))
                    && r.keys().any(|s| s.starts_with('4'))),
                "{method} {path} documents no success or no failure"
            );
        }
    }
    operations.sort();
    let expected = [
        "DELETE /api/repos/{owner}/{name}",
        "DELETE /api/repos/{owner}/{name}/collaborators/{username}",
        "DELETE /api/repos/{owner}/{name}/hooks/{id}",
        "DELETE /api/repos/{owner}/{name}/protected-branches/{id}",
        "DELETE /api/repos/{owner}/{name}/subscription",
        "DELETE /api/user/keys/{id}",
        "DELETE /api/user/tokens/{id}",
        "GET /api/auth/session",
        "GET /api/repos",
        "GET /api/repos/{owner}/{name}",
        "GET /api/repos/{owner}/{name}/blame/{path}",
        "GET /api/repos/{owner}/{name}/branches",
        "GET /api/repos/{owner}/{name}/branches/{ref}",
        "GET /api/repos/{owner}/{name}/collaborators",
        "GET /api/repos/{owner}/{name}/commits",
        "GET /api/repos/{owner}/{name}/commits/{ref}",
        "GET /api/repos/{owner}/{name}/compare/{ref}",
        "GET /api/repos/{owner}/{name}/contents",
        "GET /api/repos/{owner}/{name}/contents/{path}",
        "GET /api/repos/{owner}/{name}/git/trees/{ref}",
        "GET /api/repos/{owner}/{name}/hooks",
        "GET /api/repos/{owner}/{name}/hooks/{id}",
        "GET /api/repos/{owner}/{name}/hooks/{id}/deliveries",
        "GET /api/repos/{owner}/{name}/hooks/{id}/deliveries/{delivery_id}",
        "GET /api/repos/{owner}/{name}/languages",
        "GET /api/repos/{owner}/{name}/protected-branches",
        "GET /api/repos/{owner}/{name}/raw/{path}",
        "GET /api/repos/{owner}/{name}/readme",
        "GET /api/repos/{owner}/{name}/readme/{path}",
        "GET /api/repos/{owner}/{name}/subscribers",
        "GET /api/repos/{owner}/{name}/subscription",
        "GET /api/repos/{owner}/{name}/tags",
        "GET /api/repos/{owner}/{name}/tags/{ref}",
        "GET /api/repos/{owner}/{name}/tarball/{ref}",
        "GET /api/repos/{owner}/{name}/zipball/{ref}",
        "GET /api/user",
        "GET /api/user/keys",
        "GET /api/user/repos",
        "GET /api/user/subscriptions",
        "GET /api/user/tokens",
        "GET /api/users/{username}/repos",
        "PATCH /api/repos/{owner}/{name}",
        "PATCH /api/repos/{owner}/{name}/hooks/{id}",
        "POST /api/auth/login",
        "POST /api/auth/logout",
        "POST /api/auth/password-reset",
        "POST /api/auth/password-reset/confirm",
        "POST /api/auth/register",
        "POST /api/auth/verify-email",
        "POST /api/auth/verify-email/resend",
        "POST /api/repos",
        "POST /api/repos/{owner}/{name}/forks",
        "POST /api/repos/{owner}/{name}/hooks",
        "POST /api/repos/{owner}/{name}/hooks/{id}/deliveries/{delivery_id}/attempts",
        "POST /api/repos/{owner}/{name}/hooks/{id}/pings",
        "POST /api/repos/{owner}/{name}/hooks/{id}/tests",
        "POST /api/repos/{owner}/{name}/protected-branches",
        "POST /api/repos/{owner}/{name}/rename",
        "POST /api/user/keys",
        "POST /api/user/tokens",
        "PUT /api/repos/{owner}/{name}/collaborators/{username}",
        "PUT /api/repos/{owner}/{name}/subscription",
        "PUT /api/user/password",
    ];
    assert_eq!(operations, expected);
    let schemas = &document["components"]["schemas"];
    for schema in
        ["Repository", "RepositoryPage", "Collaborator", "ProtectedBranch", "ErrorBody", "User"]
    {
        assert!(schemas.get(schema).is_some(), "schema {schema} missing");
    }
    assert!(document["components"]["securitySchemes"]["token"].is_object());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn forks_of_private_repositories_stay_private_and_go_with_access() -> anyhow::Result<()> {
    let app = App::new().await?;
    let ada = app.member("ada").await?;
    let grace = app.member("grace").await?;
    let linus = app.member("linus").await?;
    assert_eq!(app.create_repo(&ada, "secret", true).await.status, StatusCode::CREATED);
    assert_eq!(app.create_repo(&ada, "open", false).await.status, StatusCode::CREATED);
    for (repo, who) in [("secret", "grace"), ("open", "grace")] {
        let path = format!("/api/repos/ada/{repo}/collaborators/{who}");
        let added = app.call("PUT", &path, Some(json!({"role": "read"})), Some(&ada.token)).await;
        assert_eq!(added.status, StatusCode::CREATED, "{}", added.text);
    }
    let fork =
        app.call("POST", "/api/repos/ada/secret/forks", Some(json!({})), Some(&grace.token)).await;
    assert_eq!(fork.status, StatusCode::CREATED, "{}", fork.text);
    assert_eq!(fork.body["private"], true);
    // A fork of private history cannot be made public, nor can a fork of that fork.
    let public = app
        .call(
            "PATCH",
            "/api/repos/grace/secret",
            Some(json!({"private": false})),
            Some(&grace.token),
        )
        .await;
    assert_eq!(public.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", public.text);
    assert_eq!(public.body["error"]["field"], "private");
    let path = "/api/repos/grace/secret/collaborators/linus";
    app.call("PUT", path, Some(json!({"role": "read"})), Some(&grace.token)).await;
    let again = app
        .call(
            "POST",
            "/api/repos/grace/secret/forks",
            Some(json!({"name": "copy"})),
            Some(&linus.token),
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
    let public = app
        .call("PATCH", "/api/repos/linus/copy", Some(json!({"private": false})), Some(&linus.token))
        .await;
    assert_eq!(public.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", public.text);
    assert_eq!(
        app.call("GET", "/api/repos/grace/secret", None, None).await.status,
        StatusCode::NOT_FOUND
    );
    let open_fork =
        app.call("POST", "/api/repos/ada/open/forks", Some(json!({})), Some(&grace.token)).await;
    assert_eq!(open_fork.status, StatusCode::CREATED);

    // Removed from the private repository, grace loses her fork of it, on disk too; her fork
    // of the public one stays.
    for repo in ["secret", "open"] {
        let path = format!("/api/repos/ada/{repo}/collaborators/grace");
        assert_eq!(
            app.call("DELETE", &path, None, Some(&ada.token)).await.status,
            StatusCode::NO_CONTENT
        );
    }
    let gone = app.call("GET", "/api/repos/grace/secret", None, Some(&grace.token)).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert!(!app.disk_path("grace", "secret").exists(), "the fork is still on disk");
    assert_eq!(app.call("GET", "/api/repos/grace/open", None, None).await.status, StatusCode::OK);
    assert!(app.disk_path("grace", "open").exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unverified_account_cannot_create_or_fork_repositories() -> anyhow::Result<()> {
    let app = App::new().await?;
    let ada = app.member("ada").await?;
    assert_eq!(app.create_repo(&ada, "engine", false).await.status, StatusCode::CREATED);
    let (_, token) =
        unverified_user(&app.database, "newcomer", &app.password_hash, &[Scope::Admin]).await?;
    let created = app.call("POST", "/api/repos", Some(json!({"name": "mine"})), Some(&token)).await;
    assert_eq!(created.status, StatusCode::FORBIDDEN, "{}", created.text);
    assert!(created.text.contains("verify your email address first"), "{}", created.text);
    let forked =
        app.call("POST", "/api/repos/ada/engine/forks", Some(json!({})), Some(&token)).await;
    assert_eq!(forked.status, StatusCode::FORBIDDEN, "{}", forked.text);
    assert!(
        !app.disk_path("newcomer", "mine").exists()
            && !app.disk_path("newcomer", "engine").exists()
    );
    Ok(())
}
