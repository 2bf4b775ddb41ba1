//! The browsing routes of the repository API in-process, against real PostgreSQL and Redis, on
//! the history tests/fixtures/browse-history.sh makes with the real `git`, pushed into
//! repositories created through the API. Every answer is checked against what `git` prints.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use base64::Engine as _;
use platform_core::accounts::{Scope, password};
use platform_core::db::Database;
use platform_git::api::RepoApi;
use platform_git::store::RepoStore;
use platform_test_support::{unique_name, verified_user};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use common::PASSWORD;

/// The name the fixture's history gets in most tests: not the fixture's own `history`, so the
/// archives' top directory shows it comes from the repository's name.
const REPO: &str = "chronicle";

/// Where answers link to.
const PUBLIC_URL: &str = "https://git.example.com";

/// The browsing routes (under `/api/repos/{owner}/{name}/`), one request each. The `readme/docs`
/// one reads a branch the tests add, as no directory of the fixture has a README.
const ROUTES: [&str; 17] = [
    "branches",
    "branches/main",
    "tags",
    "tags/v1.0",
    "commits",
    "commits/main",
    "compare/v0.1...main",
    "git/trees/main",
    "contents",
    "contents/README.md",
    "raw/README.md",
    "blame/README.md",
    "tarball/main",
    "zipball/v0.1",
    "readme",
    "readme/docs?ref=docs-readme",
    "languages",
];

/// How a request authenticates.
#[derive(Clone, Copy, Debug)]
enum Auth<'a> {
    Anonymous,
    /// `Authorization: Bearer <token>`.
    Token(&'a str),
    /// The session cookie of `POST /api/auth/login`.
    Cookie(&'a str),
    /// `Authorization: Basic` with this user name and [`PASSWORD`].
    Basic(&'a str),
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    bytes: Vec<u8>,
    body: Value,
    text: String,
}

impl Answer {
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or("")
    }

    /// The error message of an error answer.
    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
}

/// A user of the suite.
struct Member {
    name: String,
    token: String,
}

struct App {
    router: Router,
    database: Database,
    /// The store's root, removed with the app.
    repos: tempfile::TempDir,
    password_hash: String,
    /// Holds `history.git`, as the fixture script made it.
    fixture: tempfile::TempDir,
}

impl App {
    async fn new() -> anyhow::Result<Self> {
        let common::Backing { database, accounts, .. } = common::backing(None).await?;
        let repos_root = tempfile::Builder::new().prefix(&unique_name("browse-repos")).tempdir()?;
        let repos =
            RepoApi::new(accounts.clone(), RepoStore::new(repos_root.path()), PUBLIC_URL.parse()?);
        let routes = platform_core::accounts::api(accounts).merge(platform_git::api::api(repos));
        let fixture = tempfile::tempdir()?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/browse-history.sh");
        let status = Command::new("bash").arg(script).arg(fixture.path()).status()?;
        anyhow::ensure!(status.success(), "the fixture script failed");
        Ok(Self {
            router: platform_core::api::documented(routes, "platform", "test"),
            database,
            repos: repos_root,
            password_hash: password::hash(PASSWORD)?,
            fixture,
        })
    }

    fn history(&self) -> PathBuf {
        self.fixture.path().join("history.git")
    }

    async fn member(&self, name: &str, scopes: &[Scope]) -> anyhow::Result<Member> {
        let (_, token) = verified_user(&self.database, name, &self.password_hash, scopes).await?;
        Ok(Member { name: name.to_owned(), token })
    }

    /// Signs `member` in with their password; returns the session cookie (`name=value`).
    async fn login(&self, member: &Member) -> anyhow::Result<String> {
        let body = json!({"login": member.name, "password": PASSWORD});
        let request = Request::post("/api/auth/login")
            .header(header::CONTENT_TYPE, "application/json")
            .extension(axum::extract::ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 1))))
            .body(Body::from(body.to_string()))?;
        let response = self.router.clone().oneshot(request).await?;
        anyhow::ensure!(response.status() == StatusCode::OK, "login: {}", response.status());
        let cookie = response
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .map(str::to_owned);
        cookie.ok_or_else(|| anyhow::anyhow!("the login set no cookie"))
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        auth: Auth<'_>,
        headers: &[(header::HeaderName, &str)],
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .extension(axum::extract::ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 1))));
        match auth {
            Auth::Anonymous => {}
            Auth::Token(token) => {
                request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
            }
            Auth::Cookie(cookie) => request = request.header(header::COOKIE, cookie),
            Auth::Basic(user) => {
                let credentials =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{PASSWORD}"));
                request = request.header(header::AUTHORIZATION, format!("Basic {credentials}"));
            }
        }
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .expect("a valid request");
        let response = self.router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        // A body that breaks off (a streamed archive that failed) shows in `text`.
        let (bytes, text) = match axum::body::to_bytes(response.into_body(), usize::MAX).await {
            Ok(bytes) => (bytes.to_vec(), String::from_utf8_lossy(&bytes).into_owned()),
            Err(error) => (Vec::new(), format!("<the body broke off: {error}>")),
        };
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer { status, headers, bytes, body, text }
    }

    async fn get(&self, path: &str, auth: Auth<'_>) -> Answer {
        self.send("GET", path, None, auth, &[]).await
    }

    async fn get_with(
        &self,
        path: &str,
        auth: Auth<'_>,
        headers: &[(header::HeaderName, &str)],
    ) -> Answer {
        self.send("GET", path, None, auth, headers).await
    }

    /// Creates `owner/name` through the API and pushes the fixture's every ref into it; returns
    /// where it is on disk.
    async fn history_repo(
        &self,
        owner: &Member,
        name: &str,
        private: bool,
    ) -> anyhow::Result<PathBuf> {
        let body = json!({"name": name, "private": private});
        let created =
            self.send("POST", "/api/repos", Some(body), Auth::Token(&owner.token), &[]).await;
        anyhow::ensure!(created.status == StatusCode::CREATED, "create: {}", created.text);
        anyhow::ensure!(created.body["default_branch"] == "main", "{}", created.text);
        let disk = self
            .repos
            .path()
            .join(owner.name.to_ascii_lowercase())
            .join(format!("{}.git", name.to_ascii_lowercase()));
        git(&self.history(), &["push", "--quiet", "--mirror", path_str(&disk)?])?;
        anyhow::ensure!(git_text(&disk, &["symbolic-ref", "HEAD"])? == "refs/heads/main");
        anyhow::ensure!(
            git_text(&disk, &["rev-parse", "main"])?
                == git_text(&self.history(), &["rev-parse", "main"])?
        );
        Ok(disk)
    }

    /// The repository routes' base for `owner/name`.
    fn base(owner: &Member, name: &str) -> String {
        format!("/api/repos/{}/{name}", owner.name)
    }
}

/// A test's usual start: the app, `ada` (every scope) and her public `chronicle` with the
/// fixture's history.
async fn setup() -> anyhow::Result<(App, Member, PathBuf)> {
    let app = App::new().await?;
    let ada = app.member("ada", &[Scope::Admin]).await?;
    let disk = app.history_repo(&ada, REPO, false).await?;
    Ok((app, ada, disk))
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().ok_or_else(|| anyhow::anyhow!("a non-UTF-8 temporary path"))
}

/// Runs git in `dir` without any user or system configuration; returns what it printed.
fn git_bytes<S: AsRef<std::ffi::OsStr>>(dir: &Path, args: &[S]) -> anyhow::Result<Vec<u8>> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Tess Tester")
        .env("GIT_AUTHOR_EMAIL", "tess@example.com")
        .env("GIT_COMMITTER_NAME", "Tess Tester")
        .env("GIT_COMMITTER_EMAIL", "tess@example.com")
        .output()?;
    let shown: Vec<_> =
        args.iter().map(|arg| arg.as_ref().to_string_lossy().into_owned()).collect();
    anyhow::ensure!(
        output.status.success(),
        "git {shown:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output.stdout)
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<Vec<u8>> {
    git_bytes(dir, args)
}

fn git_text(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    Ok(String::from_utf8(git(dir, args)?)?.trim().to_owned())
}

fn git_lines(dir: &Path, args: &[&str]) -> anyhow::Result<Vec<String>> {
    Ok(git_text(dir, args)?.lines().map(str::to_owned).collect())
}

/// Commits `content` as `file` on top of branch `base` of the repository at `disk` and pushes
/// the commit to `branch` there, as a client would; returns the commit's id.
fn push_commit(
    disk: &Path,
    base: &str,
    branch: &str,
    file: &str,
    content: &str,
) -> anyhow::Result<String> {
    let work = tempfile::tempdir()?;
    git(work.path(), &["clone", "--quiet", path_str(disk)?, "."])?;
    git(work.path(), &["checkout", "--quiet", "-B", "work", &format!("origin/{base}")])?;
    let target = work.path().join(file);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&target, content)?;
    git(work.path(), &["add", file])?;
    git(work.path(), &["commit", "--quiet", "-m", &format!("Write {file}")])?;
    git(work.path(), &["push", "--quiet", "origin", &format!("HEAD:refs/heads/{branch}")])?;
    git_text(work.path(), &["rev-parse", "HEAD"])
}

fn base64_decode(content: &Value) -> anyhow::Result<Vec<u8>> {
    let text = content.as_str().ok_or_else(|| anyhow::anyhow!("no content: {content}"))?;
    Ok(base64::engine::general_purpose::STANDARD.decode(text.replace('\n', ""))?)
}

fn shas(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|item| item["sha"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_browsing_route_of_a_private_repository_needs_read_access() -> anyhow::Result<()> {
    let app = App::new().await?;
    let owner = app.member("owner", &[Scope::Admin]).await?;
    let reader = app.member("reader", &[Scope::RepoRead]).await?;
    let stranger = app.member("stranger", &[Scope::RepoRead]).await?;
    let secret = app.history_repo(&owner, "secret", true).await?;
    let open = app.history_repo(&owner, "open", false).await?;
    for disk in [&secret, &open] {
        push_commit(disk, "main", "docs-readme", "docs/README.md", "# Docs\n\nHello.\n")?;
    }
    let added = app
        .send(
            "PUT",
            "/api/repos/owner/secret/collaborators/reader",
            Some(json!({"role": "read"})),
            Auth::Token(&owner.token),
            &[],
        )
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.text);
    let cookies =
        [app.login(&owner).await?, app.login(&reader).await?, app.login(&stranger).await?];
    let [owner_cookie, reader_cookie, stranger_cookie] = &cookies;
    let callers: [(&str, Auth<'_>, bool); 7] = [
        ("anonymous", Auth::Anonymous, false),
        ("a stranger's token", Auth::Token(&stranger.token), false),
        ("a stranger's session", Auth::Cookie(stranger_cookie), false),
        ("the reader's token", Auth::Token(&reader.token), true),
        ("the reader's session", Auth::Cookie(reader_cookie), true),
        ("the owner's token", Auth::Token(&owner.token), true),
        ("the owner's session", Auth::Cookie(owner_cookie), true),
    ];

    let mut failures = Vec::new();
    let mut cells = 0;
    for route in ROUTES {
        // What a repository that does not exist answers: a hidden one must answer the same.
        let missing = app.get(&format!("/api/repos/owner/nothing/{route}"), Auth::Anonymous).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{route}: {}", missing.text);
        let mut seen: Option<Vec<u8>> = None;
        for (who, auth, allowed) in callers {
            cells += 1;
            let answer = app.get(&format!("/api/repos/owner/secret/{route}"), auth).await;
            let cache = answer.header(header::CACHE_CONTROL).to_owned();
            if !allowed {
                if answer.status != StatusCode::NOT_FOUND || answer.bytes != missing.bytes {
                    failures.push(format!(
                        "{who} {route}: {} {}, want the 404 of a missing repository {}",
                        answer.status, answer.text, missing.text
                    ));
                }
                if answer.headers.contains_key(header::ETAG) {
                    failures.push(format!("{who} {route}: an ETag on a refusal"));
                }
                continue;
            }
            if answer.status != StatusCode::OK || answer.bytes.is_empty() {
                failures.push(format!("{who} {route}: {} {}", answer.status, answer.text));
                continue;
            }
            // A private repository's answers stay out of shared caches.
            if !cache.is_empty() && (!cache.contains("private") || cache.contains("public")) {
                failures.push(format!("{who} {route}: Cache-Control {cache:?}"));
            }
            // Everyone who may read gets the same answer.
            match &seen {
                Some(first) if *first != answer.bytes => {
                    failures.push(format!("{who} {route}: another answer than the first reader's"));
                }
                Some(_) => {}
                None => seen = Some(answer.bytes),
            }
        }
        // The API takes no passwords: Basic is refused outright, even with the right one.
        cells += 1;
        let basic =
            app.get(&format!("/api/repos/owner/secret/{route}"), Auth::Basic("owner")).await;
        if basic.status != StatusCode::UNAUTHORIZED
            || basic.body["error"]["code"] != "unauthenticated"
        {
            failures.push(format!("Basic {route}: {} {}", basic.status, basic.text));
        }
        // A public repository is anyone's to read, and to cache.
        for (who, auth) in
            [("anonymous", Auth::Anonymous), ("a stranger", Auth::Token(&stranger.token))]
        {
            cells += 1;
            let answer = app.get(&format!("/api/repos/owner/open/{route}"), auth).await;
            let cache = answer.header(header::CACHE_CONTROL);
            if answer.status != StatusCode::OK || answer.bytes.is_empty() {
                failures.push(format!("{who} public {route}: {} {}", answer.status, answer.text));
            } else if !cache.is_empty() && !cache.contains("public") {
                failures.push(format!("{who} public {route}: Cache-Control {cache:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(cells, ROUTES.len() * (7 + 1 + 2));

    // Losing access hides the repository again.
    let removed = app
        .send(
            "DELETE",
            "/api/repos/owner/secret/collaborators/reader",
            None,
            Auth::Token(&owner.token),
            &[],
        )
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{}", removed.text);
    for route in ROUTES {
        let answer =
            app.get(&format!("/api/repos/owner/secret/{route}"), Auth::Token(&reader.token)).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{route}: {}", answer.text);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn history_answers_equal_git() -> anyhow::Result<()> {
    let (app, ada, disk) = setup().await?;
    let auth = Auth::Token(&ada.token);
    let base = App::base(&ada, REPO);

    // A page of history, with GitHub's Link header.
    let all = git_lines(&disk, &["log", "--format=%H", "main"])?;
    assert!(all.len() > 15, "the fixture has a long history");
    let page = app.get(&format!("{base}/commits?sha=main&per_page=5&page=2"), auth).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert_eq!(shas(&page.body), all[5..10]);
    let link = page.header(header::LINK);
    let url = |n: u32| format!("<{PUBLIC_URL}{base}/commits?sha=main&per_page=5&page={n}>");
    assert!(link.contains(&format!("{}; rel=\"next\"", url(3))), "{link}");
    assert!(link.contains(&format!("{}; rel=\"prev\"", url(1))), "{link}");
    assert!(link.contains(&format!("{}; rel=\"first\"", url(1))), "{link}");
    let first = &page.body[0];
    assert_eq!(first["url"], format!("{PUBLIC_URL}{base}/commits/{}", all[5]));
    let author = git_text(&disk, &["log", "-1", "--format=%an|%ae|%aI|%B", &all[5]])?;
    let [name, email, date] = [0, 1, 2].map(|i| author.split('|').nth(i).unwrap_or(""));
    assert_eq!(first["commit"]["author"]["name"], name);
    assert_eq!(first["commit"]["author"]["email"], email);
    let date = chrono::DateTime::parse_from_rfc3339(date)?.with_timezone(&chrono::Utc);
    assert_eq!(
        first["commit"]["author"]["date"],
        date.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let parents = git_text(&disk, &["rev-parse", &format!("{}^@", all[5])])?;
    assert_eq!(shas(&first["parents"]), parents.lines().collect::<Vec<_>>());
    // The last page has no next.
    let pages = all.len().div_ceil(5);
    let last = app.get(&format!("{base}/commits?sha=main&per_page=5&page={pages}"), auth).await;
    assert_eq!(shas(&last.body), all[(pages - 1) * 5..]);
    assert!(!last.header(header::LINK).contains("rel=\"next\""), "{}", last.header(header::LINK));

    // History of one path, with git's simplification.
    for path in ["src/lib.rs", "web/app.js", "src"] {
        let answer = app.get(&format!("{base}/commits?path={path}&per_page=100"), auth).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert_eq!(
            shas(&answer.body),
            git_lines(&disk, &["log", "--format=%H", "main", "--", path])?,
            "{path}"
        );
    }
    let feature = app.get(&format!("{base}/commits?sha=feature&per_page=100"), auth).await;
    assert_eq!(shas(&feature.body), git_lines(&disk, &["log", "--format=%H", "feature"])?);
    // Filters by time and author.
    let window = "since=2024-01-01T00:10:00Z&until=2024-01-01T00:20:00Z";
    let timed = app.get(&format!("{base}/commits?{window}&per_page=100"), auth).await;
    assert_eq!(timed.status, StatusCode::OK, "{}", timed.text);
    let git_timed = git_lines(
        &disk,
        &[
            "log",
            "--format=%H",
            "--since=2024-01-01T00:10:00Z",
            "--until=2024-01-01T00:20:00Z",
            "main",
        ],
    )?;
    assert!(!git_timed.is_empty());
    assert_eq!(shas(&timed.body), git_timed);
    let by_ada = app.get(&format!("{base}/commits?author=ada@example.com&per_page=3"), auth).await;
    assert_eq!(shas(&by_ada.body), all[..3]);
    let by_nobody = app.get(&format!("{base}/commits?author=nobody@example.com"), auth).await;
    assert_eq!(by_nobody.body, json!([]), "{}", by_nobody.text);

    // One commit: its files' statuses and line counts are git's.
    let subjects = git_lines(&disk, &["log", "--format=%H %s", "main"])?;
    let by_subject = |subject: &str| {
        subjects
            .iter()
            .find(|line| line.ends_with(subject))
            .map(|line| line[..40].to_owned())
            .ok_or_else(|| anyhow::anyhow!("no commit {subject:?}"))
    };
    for subject in [
        "Insert blame block, rename LICENSE to COPYING",
        "Move util into src/core",
        "Turn tools/run into a symlink",
        "Rewrite blame middle, redraw logo",
        "Remove obsolete.txt and the legacy directory",
    ] {
        let sha = by_subject(subject)?;
        let answer = app.get(&format!("{base}/commits/{sha}"), auth).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert_eq!(answer.body["sha"], sha.as_str());
        let mut files = BTreeMap::new();
        for file in answer.body["files"].as_array().into_iter().flatten() {
            let name = file["filename"].as_str().unwrap_or("").to_owned();
            let previous = file["previous_filename"].as_str().map(str::to_owned);
            let status = file["status"].as_str().unwrap_or("").to_owned();
            let counts = (file["additions"].as_u64(), file["deletions"].as_u64());
            files.insert(name, (status, previous, counts));
        }
        let expected = git_changes(&disk, &sha)?;
        assert_eq!(files, expected, "{subject}");
        let (additions, deletions) = expected.values().fold((0, 0), |(a, d), (_, _, counts)| {
            (a + counts.0.unwrap_or(0), d + counts.1.unwrap_or(0))
        });
        let stats = &answer.body["stats"];
        assert_eq!(stats["additions"], additions, "{subject}");
        assert_eq!(stats["deletions"], deletions, "{subject}");
        assert_eq!(stats["total"], additions + deletions, "{subject}");

        // The same commit as text.
        let parent = git_text(&disk, &["rev-parse", &format!("{sha}^")])?;
        let git_diff = String::from_utf8(git(&disk, &["diff", "-M", &parent, &sha])?)?;
        let headers = |text: &str| -> Vec<String> {
            text.lines().filter(|line| line.starts_with("diff --git")).map(str::to_owned).collect()
        };
        let suffixed = app.get(&format!("{base}/commits/{sha}.diff"), auth).await;
        assert_eq!(suffixed.status, StatusCode::OK, "{}", suffixed.text);
        assert!(suffixed.header(header::CONTENT_TYPE).starts_with("text/x-diff"));
        assert_eq!(headers(&suffixed.text), headers(&git_diff), "{subject}");
        // Hunk by hunk too, but for the function context git adds after a hunk's `@@`.
        assert_eq!(
            without_hunk_context(&suffixed.text),
            without_hunk_context(&git_diff),
            "{subject}"
        );
        let accepted = app
            .get_with(
                &format!("{base}/commits/{sha}"),
                auth,
                &[(header::ACCEPT, "application/vnd.github.diff")],
            )
            .await;
        assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.text);
        assert_eq!(accepted.text, suffixed.text);
        let patch = app.get(&format!("{base}/commits/{sha}.patch"), auth).await;
        assert_eq!(patch.status, StatusCode::OK, "{}", patch.text);
        assert!(patch.header(header::CONTENT_TYPE).starts_with("text/x-patch"));
        assert!(patch.text.starts_with(&format!("From {sha} ")), "{}", patch.text);
        assert!(patch.text.contains(&format!("Subject: [PATCH] {subject}\n")), "{}", patch.text);
        assert!(
            without_hunk_context(&patch.text).contains(&without_hunk_context(&git_diff)),
            "{subject}: the patch lacks the diff"
        );
    }

    // A comparison: ahead, by git's count, from git's merge base.
    let compare = app.get(&format!("{base}/compare/v0.1...main"), auth).await;
    assert_eq!(compare.status, StatusCode::OK, "{}", compare.text);
    let ahead: u64 = git_text(&disk, &["rev-list", "--count", "v0.1..main"])?.parse()?;
    assert_eq!(compare.body["ahead_by"], ahead);
    assert_eq!(compare.body["behind_by"], 0);
    assert_eq!(compare.body["total_commits"], ahead);
    assert_eq!(compare.body["status"], "ahead");
    let merge_base = git_text(&disk, &["merge-base", "v0.1", "main"])?;
    assert_eq!(compare.body["merge_base_commit"]["sha"], merge_base.as_str());
    assert_eq!(compare.body["base_commit"]["sha"], git_text(&disk, &["rev-parse", "v0.1"])?);
    assert_eq!(
        shas(&compare.body["commits"]),
        git_lines(&disk, &["rev-list", "--reverse", "v0.1..main"])?
    );
    let mut changed: Vec<String> = compare.body["files"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|file| file["filename"].as_str().unwrap_or("").to_owned())
        .collect();
    changed.sort();
    let mut git_changed = git_changes_between(&disk, &merge_base, "main")?;
    git_changed.sort();
    assert_eq!(changed, git_changed);
    let behind = app.get(&format!("{base}/compare/main...v0.1"), auth).await;
    assert_eq!(behind.body["status"], "behind", "{}", behind.text);
    assert_eq!(behind.body["behind_by"], ahead);
    assert_eq!(behind.body["ahead_by"], 0);
    let same = app.get(&format!("{base}/compare/main...main"), auth).await;
    assert_eq!(same.body["status"], "identical", "{}", same.text);
    let compare_diff = app.get(&format!("{base}/compare/v0.1...main.diff"), auth).await;
    assert_eq!(compare_diff.status, StatusCode::OK, "{}", compare_diff.text);
    let git_diff =
        String::from_utf8_lossy(&git(&disk, &["diff", "-M", "v0.1...main"])?).into_owned();
    assert_eq!(without_hunk_context(&compare_diff.text), without_hunk_context(&git_diff));

    // Tags: the annotated one carries its tag object, the lightweight one none.
    let tags = app.get(&format!("{base}/tags"), auth).await;
    assert_eq!(tags.status, StatusCode::OK, "{}", tags.text);
    let names: Vec<&str> =
        tags.body.as_array().into_iter().flatten().filter_map(|tag| tag["name"].as_str()).collect();
    assert_eq!(names, ["v0.1", "v1.0"]);
    let v1 = &tags.body[1];
    assert_eq!(v1["tag"]["sha"], git_text(&disk, &["rev-parse", "v1.0"])?);
    assert_eq!(v1["tag"]["message"], "Release 1.0\n");
    assert_eq!(v1["commit"]["sha"], git_text(&disk, &["rev-parse", "v1.0^{commit}"])?);
    assert_eq!(v1["tarball_url"], format!("{PUBLIC_URL}{base}/tarball/v1.0"));
    let v01 = &tags.body[0];
    assert!(v01["tag"].is_null(), "{v01}");
    assert_eq!(v01["commit"]["sha"], git_text(&disk, &["rev-parse", "v0.1"])?);
    let one = app.get(&format!("{base}/tags/v1.0"), auth).await;
    assert_eq!(one.body, *v1);

    // Branches, one with a slash in its name.
    let branches = app.get(&format!("{base}/branches"), auth).await;
    let listed: Vec<(String, String)> = branches
        .body
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            let name = b["name"].as_str().unwrap_or("").to_owned();
            (name, b["commit"]["sha"].as_str().unwrap_or("").to_owned())
        })
        .collect();
    let git_branches: Vec<(String, String)> = git_lines(
        &disk,
        &["for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads/"],
    )?
    .iter()
    .filter_map(|line| line.split_once(' '))
    .map(|(name, sha)| (name.to_owned(), sha.to_owned()))
    .collect();
    assert_eq!(listed, git_branches);
    let release = app.get(&format!("{base}/branches/release/1.x"), auth).await;
    assert_eq!(release.status, StatusCode::OK, "{}", release.text);
    assert_eq!(release.body["name"], "release/1.x");
    assert_eq!(release.body["commit"]["sha"], git_text(&disk, &["rev-parse", "release/1.x"])?);
    assert_eq!(release.body["commit"]["commit"]["message"], "Merge branch 'feature'\n");
    let paged = app.get(&format!("{base}/branches?per_page=2&page=2"), auth).await;
    assert_eq!(paged.body.as_array().map(Vec::len), Some(2));
    assert_eq!(paged.body[0]["name"], git_branches[2].0.as_str());
    let link = paged.header(header::LINK);
    assert!(
        link.contains("page=3>; rel=\"next\"") && link.contains("page=1>; rel=\"prev\""),
        "{link}"
    );

    // Blame: every line of blame.txt, by git blame's commit and original line.
    let blame = app.get(&format!("{base}/blame/blame.txt"), auth).await;
    assert_eq!(blame.status, StatusCode::OK, "{}", blame.text);
    let porcelain = git_text(&disk, &["blame", "--porcelain", "main", "--", "blame.txt"])?;
    let mut lines = BTreeMap::new();
    for line in porcelain.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() >= 3
            && fields[0].len() == 40
            && fields[0].bytes().all(|b| b.is_ascii_hexdigit())
        {
            lines.insert(
                fields[2].parse::<u64>()?,
                (fields[0].to_owned(), fields[1].parse::<u64>()?),
            );
        }
    }
    assert_eq!(lines.len(), 2000);
    let mut next = 1;
    for range in blame.body["ranges"].as_array().into_iter().flatten() {
        let (start, end) = (range["starting_line"].as_u64(), range["ending_line"].as_u64());
        let (Some(start), Some(end)) = (start, end) else {
            panic!("a range without lines: {range}")
        };
        assert_eq!(start, next, "the ranges cover every line in order");
        let commit = range["commit"].as_str().unwrap_or("");
        assert!(blame.body["commits"][commit]["sha"] == commit, "{commit} is not in commits");
        for (offset, line) in (start..=end).enumerate() {
            let (git_commit, git_original) = &lines[&line];
            assert_eq!(commit, git_commit, "line {line}");
            let original = range["original_starting_line"].as_u64().unwrap_or(0) + offset as u64;
            assert_eq!(original, *git_original, "line {line}");
        }
        next = end + 1;
    }
    assert_eq!(next, 2001);

    // The tree listing.
    let tree = app.get(&format!("{base}/git/trees/main?recursive=1"), auth).await;
    assert_eq!(tree.status, StatusCode::OK, "{}", tree.text);
    assert_eq!(tree.body["sha"], git_text(&disk, &["rev-parse", "main^{tree}"])?);
    let listed: BTreeSet<(String, String)> = tree.body["tree"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            let path = entry["path"].as_str().unwrap_or("").to_owned();
            (path, entry["sha"].as_str().unwrap_or("").to_owned())
        })
        .filter(|(path, _)| path.is_ascii())
        .collect();
    let git_tree: BTreeSet<(String, String)> = git_lines(&disk, &["ls-tree", "-r", "-t", "main"])?
        .iter()
        .filter_map(|line| {
            let (meta, path) = line.split_once('\t')?;
            let sha = meta.split(' ').nth(2)?;
            Some((path.to_owned(), sha.to_owned()))
        })
        .filter(|(path, _)| !path.starts_with('"'))
        .collect();
    assert_eq!(listed, git_tree);
    Ok(())
}

/// `text` with each hunk header cut after its second `@@`, where git names the enclosing
/// function (a line before the hunk).
fn without_hunk_context(text: &str) -> String {
    text.lines()
        .map(|line| match line.strip_prefix("@@ ").and_then(|rest| rest.split_once(" @@")) {
            Some((ranges, _)) => format!("@@ {ranges} @@\n"),
            None => format!("{line}\n"),
        })
        .collect()
}

/// A changed file: status, previous path, lines added and removed.
type Change = (String, Option<String>, (Option<u64>, Option<u64>));

/// `git diff-tree -M` of `sha` against its first parent: each file's status, previous path and
/// line counts (none for binary files), by path.
fn git_changes(disk: &Path, sha: &str) -> anyhow::Result<BTreeMap<String, Change>> {
    let parent = format!("{sha}^");
    let fields = |args: &[&str]| -> anyhow::Result<Vec<String>> {
        let mut all = vec!["diff-tree", "-r", "-M", "-z", "--no-commit-id"];
        all.extend_from_slice(args);
        all.extend([parent.as_str(), sha]);
        Ok(String::from_utf8(git(disk, &all)?)?
            .split('\0')
            .filter(|field| !field.is_empty())
            .map(str::to_owned)
            .collect())
    };
    let mut changes = BTreeMap::new();
    let status = fields(&["--name-status"])?;
    let mut at = 0;
    while at < status.len() {
        let letter = status[at].chars().next().unwrap_or(' ');
        let word = match letter {
            'A' => "added",
            'D' => "removed",
            'M' => "modified",
            'R' => "renamed",
            'T' => "changed",
            other => panic!("git said {other}"),
        };
        if letter == 'R' {
            changes.insert(
                status[at + 2].clone(),
                (word.to_owned(), Some(status[at + 1].clone()), (None, None)),
            );
            at += 3;
        } else {
            changes.insert(status[at + 1].clone(), (word.to_owned(), None, (None, None)));
            at += 2;
        }
    }
    let numstat = fields(&["--numstat"])?;
    let mut at = 0;
    while at < numstat.len() {
        let parts: Vec<&str> = numstat[at].splitn(3, '\t').collect();
        let count = |text: &str| text.parse::<u64>().ok();
        let (path, step) = if parts[2].is_empty() {
            (numstat[at + 2].clone(), 3)
        } else {
            (parts[2].to_owned(), 1)
        };
        // Binary files count no lines, as on GitHub.
        let counts = (count(parts[0]).or(Some(0)), count(parts[1]).or(Some(0)));
        if let Some(change) = changes.get_mut(&path) {
            change.2 = counts;
        }
        at += step;
    }
    Ok(changes)
}

/// The paths `git diff --name-only -M from to` names.
fn git_changes_between(disk: &Path, from: &str, to: &str) -> anyhow::Result<Vec<String>> {
    let output = git(disk, &["diff", "--name-only", "-M", "-z", from, to])?;
    Ok(String::from_utf8_lossy(&output)
        .split('\0')
        .filter(|path| !path.is_empty())
        .map(str::to_owned)
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn contents_and_raw_files_are_gits_bytes_served_safely() -> anyhow::Result<()> {
    let (app, ada, disk) = setup().await?;
    let auth = Auth::Token(&ada.token);
    let base = App::base(&ada, REPO);
    let main = git_text(&disk, &["rev-parse", "main"])?;

    // A file, base64.
    let readme = app.get(&format!("{base}/contents/README.md"), auth).await;
    assert_eq!(readme.status, StatusCode::OK, "{}", readme.text);
    assert_eq!(readme.body["type"], "file");
    assert_eq!(readme.body["encoding"], "base64");
    let bytes = git(&disk, &["cat-file", "blob", "main:README.md"])?;
    assert_eq!(base64_decode(&readme.body["content"])?, bytes);
    assert_eq!(readme.body["sha"], git_text(&disk, &["rev-parse", "main:README.md"])?);
    assert_eq!(readme.body["size"], bytes.len());
    assert_eq!(readme.body["path"], "README.md");

    // Directories tell files, directories, symlinks and submodules apart.
    let root = app.get(&format!("{base}/contents"), auth).await;
    assert_eq!(root.status, StatusCode::OK, "{}", root.text);
    let kinds: BTreeMap<String, String> = root
        .body
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            let name = entry["name"].as_str().unwrap_or("").to_owned();
            (name, entry["type"].as_str().unwrap_or("").to_owned())
        })
        .collect();
    for (name, kind) in [
        ("README.md", "file"),
        ("src", "dir"),
        ("docs", "dir"),
        ("sub", "submodule"),
        ("Makefile", "file"),
    ] {
        assert_eq!(kinds.get(name).map(String::as_str), Some(kind), "{name}: {kinds:?}");
    }
    assert_eq!(kinds.len(), git_lines(&disk, &["ls-tree", "main"])?.len());
    let docs = app.get(&format!("{base}/contents/docs"), auth).await;
    let entry = |name: &str| {
        docs.body
            .as_array()
            .into_iter()
            .flatten()
            .find(|entry| entry["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(entry("readme-link")["type"], "symlink", "{}", docs.text);
    assert_eq!(entry("guide.md")["type"], "file", "{}", docs.text);
    assert_eq!(entry("guide.md")["path"], "docs/guide.md");
    let link = app.get(&format!("{base}/contents/docs/readme-link"), auth).await;
    assert_eq!(link.status, StatusCode::OK, "{}", link.text);
    assert_eq!(link.body["type"], "symlink");
    assert_eq!(link.body["target"], "../COPYING");
    let sub = app.get(&format!("{base}/contents/sub"), auth).await;
    assert_eq!(sub.status, StatusCode::OK, "{}", sub.text);
    assert_eq!(sub.body["type"], "submodule");
    assert_eq!(sub.body["sha"], git_text(&disk, &["rev-parse", "main:sub"])?);
    assert_eq!(sub.body["submodule_git_url"], "../sub.git");

    // A name that is not UTF-8, by its percent-encoded bytes, and by the link the listing gives.
    let latin1 = git_bytes(
        &disk,
        &[
            std::ffi::OsStr::new("cat-file"),
            std::ffi::OsStr::new("blob"),
            std::ffi::OsStr::from_bytes(b"main:caf\xe9.txt"),
        ],
    )?;
    let raw = app.get(&format!("{base}/raw/caf%E9.txt"), auth).await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    assert_eq!(raw.bytes, latin1);
    let listed = root
        .body
        .as_array()
        .into_iter()
        .flatten()
        .find(|entry| entry["name"].as_str().is_some_and(|name| name.starts_with("caf")))
        .cloned()
        .unwrap_or(Value::Null);
    let download = listed["download_url"].as_str().unwrap_or("");
    assert_eq!(download, format!("{PUBLIC_URL}{base}/raw/caf%E9.txt?ref={main}"));
    let followed = app.get(download.trim_start_matches(PUBLIC_URL), auth).await;
    assert_eq!(followed.status, StatusCode::OK, "{}", followed.text);
    assert_eq!(followed.bytes, latin1);
    let contents = app.get(&format!("{base}/contents/caf%E9.txt"), auth).await;
    assert_eq!(contents.status, StatusCode::OK, "{}", contents.text);
    assert_eq!(base64_decode(&contents.body["content"])?, latin1);
    let other = app.get(&format!("{base}/raw/raw%FFname.txt"), auth).await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.text);
    assert_eq!(other.bytes, b"not utf-8 either\n");
    // A `%` in a name is decoded once: `%2541` is `%41`, which names no file here.
    let once = app.get(&format!("{base}/raw/caf%25E9.txt"), auth).await;
    assert_eq!(once.status, StatusCode::NOT_FOUND, "{}", once.text);
    let spaced = app.get(&format!("{base}/raw/with%20space.txt"), auth).await;
    assert_eq!(spaced.bytes, b"spaced out\n");
    let naive = app.get(&format!("{base}/raw/na%C3%AFve.txt"), auth).await;
    assert_eq!(naive.bytes, "naïve\n".as_bytes());

    // Text comes as text/plain that no browser renders or sniffs.
    let raw = app.get(&format!("{base}/raw/README.md"), auth).await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    assert_eq!(raw.bytes, bytes);
    assert_eq!(raw.header(header::CONTENT_TYPE), "text/plain; charset=utf-8");
    assert_eq!(raw.header(header::CONTENT_SECURITY_POLICY), "sandbox");
    assert_eq!(raw.header(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    assert!(raw.text.contains("<script>alert(1)</script>"), "the bytes as they are");
    let accepted = app
        .get_with(
            &format!("{base}/contents/README.md"),
            auth,
            &[(header::ACCEPT, "application/vnd.github.raw")],
        )
        .await;
    assert_eq!(accepted.bytes, bytes);
    assert_eq!(accepted.header(header::CONTENT_TYPE), "text/plain; charset=utf-8");
    assert_eq!(accepted.header(header::CONTENT_SECURITY_POLICY), "sandbox");

    // Anything else is an attachment.
    let with_logo = git_text(
        &disk,
        &["log", "-1", "--format=%H", "--diff-filter=A", "main", "--", "assets/logo.png"],
    )?;
    let logo = git(&disk, &["cat-file", "blob", &format!("{with_logo}:assets/logo.png")])?;
    assert!(logo.contains(&0), "the logo is binary");
    let binary = app.get(&format!("{base}/raw/assets/logo.png?ref={with_logo}"), auth).await;
    assert_eq!(binary.status, StatusCode::OK, "{}", binary.text);
    assert_eq!(binary.bytes, logo);
    assert_eq!(binary.header(header::CONTENT_TYPE), "application/octet-stream");
    assert_eq!(binary.header(header::CONTENT_DISPOSITION), "attachment; filename*=UTF-8''logo.png");
    assert_eq!(binary.header(header::CONTENT_SECURITY_POLICY), "sandbox");
    assert_eq!(binary.header(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    assert_eq!(binary.header(header::CONTENT_LENGTH), logo.len().to_string());
    let gone = app.get(&format!("{base}/raw/assets/logo.png"), auth).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.text);
    let logo_contents =
        app.get(&format!("{base}/contents/assets/logo.png?ref={with_logo}"), auth).await;
    assert_eq!(base64_decode(&logo_contents.body["content"])?, logo);

    // Links carry the ref as it was asked for, encoded: git allows `+`, `#` and `&` in names.
    let odd = push_commit(&disk, "main", "feat+x#1&y", "README.md", "# An odd branch\n")?;
    let encoded = "feat%2Bx%231%26y";
    let listing = app.get(&format!("{base}/contents?ref={encoded}"), auth).await;
    assert_eq!(listing.status, StatusCode::OK, "{}", listing.text);
    let entry = listing
        .body
        .as_array()
        .into_iter()
        .flatten()
        .find(|entry| entry["name"] == "README.md")
        .cloned()
        .unwrap_or(Value::Null);
    let download = entry["download_url"].as_str().unwrap_or("");
    assert_eq!(download, format!("{PUBLIC_URL}{base}/raw/README.md?ref={encoded}"));
    let followed = app.get(download.trim_start_matches(PUBLIC_URL), auth).await;
    assert_eq!(followed.bytes, b"# An odd branch\n", "{download}: {}", followed.text);
    let url = entry["url"].as_str().unwrap_or("");
    let followed = app.get(url.trim_start_matches(PUBLIC_URL), auth).await;
    assert_eq!(base64_decode(&followed.body["content"])?, b"# An odd branch\n", "{url}");
    git(&disk, &["tag", "v2+rc#1", &odd])?;
    let tag = app.get(&format!("{base}/tags/v2%2Brc%231"), auth).await;
    assert_eq!(tag.status, StatusCode::OK, "{}", tag.text);
    let tarball = tag.body["tarball_url"].as_str().unwrap_or("");
    assert_eq!(tarball, format!("{PUBLIC_URL}{base}/tarball/v2%2Brc%231"));
    let archive = app.get(tarball.trim_start_matches(PUBLIC_URL), auth).await;
    assert_eq!(archive.status, StatusCode::OK, "{}", archive.text);
    assert_eq!(
        archive.header(header::CONTENT_DISPOSITION),
        "attachment; filename*=UTF-8''chronicle-v2%2Brc%231.tar.gz"
    );

    // A file past the inline limit (1 MiB) is only linked to, and its raw bytes come whole.
    let large: String = (0..40_000).map(|i| format!("line {i:05} of a large file\n")).collect();
    assert!(large.len() > 1 << 20);
    let big = push_commit(&disk, "main", "large", "large.txt", &large)?;
    let listed = app.get(&format!("{base}/contents/large.txt?ref={big}"), auth).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    assert_eq!(listed.body["size"], large.len());
    assert!(listed.body.get("content").is_none(), "{}", listed.text);
    let download = listed.body["download_url"].as_str().unwrap_or("");
    assert_eq!(download, format!("{PUBLIC_URL}{base}/raw/large.txt?ref={big}"));
    let raw = app.get(download.trim_start_matches(PUBLIC_URL), auth).await;
    assert_eq!(raw.header(header::CONTENT_LENGTH), large.len().to_string());
    assert!(raw.bytes == large.as_bytes(), "the large file's bytes differ");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_are_cached_by_the_commit_they_come_from() -> anyhow::Result<()> {
    let (app, ada, disk) = setup().await?;
    let auth = Auth::Token(&ada.token);
    let base = App::base(&ada, REPO);
    let main = git_text(&disk, &["rev-parse", "main"])?;

    // By full commit id: never changes.
    for route in [
        format!("contents/README.md?ref={main}"),
        format!("raw/README.md?ref={main}"),
        format!("commits/{main}"),
        format!("commits/{main}.diff"),
        format!("git/trees/{main}"),
        format!("tarball/{main}"),
    ] {
        let path = format!("{base}/{route}");
        let first = app.get(&path, auth).await;
        assert_eq!(first.status, StatusCode::OK, "{route}: {}", first.text);
        let etag = first.header(header::ETAG).to_owned();
        assert!(
            etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
            "{route}: {etag:?}"
        );
        let cache = first.header(header::CACHE_CONTROL);
        assert!(cache.contains("immutable") && cache.contains("max-age="), "{route}: {cache}");
        assert!(cache.starts_with("public"), "{route}: {cache}");
        let again = app.get_with(&path, auth, &[(header::IF_NONE_MATCH, &etag)]).await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{route}: {}", again.text);
        assert!(again.bytes.is_empty(), "{route}: a 304 with a body");
        assert_eq!(again.header(header::ETAG), etag);
        let weak = format!("W/{etag}");
        let listed = format!("\"other\", {weak}");
        let again = app.get_with(&path, auth, &[(header::IF_NONE_MATCH, &listed)]).await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{route}");
        let stale = app.get_with(&path, auth, &[(header::IF_NONE_MATCH, "\"other\"")]).await;
        assert_eq!(stale.status, StatusCode::OK, "{route}");
        assert_eq!(stale.bytes, first.bytes, "{route}");
    }
    // Each variant has its own tag: the JSON's does not stand for the diff's.
    let json = app.get(&format!("{base}/commits/{main}"), auth).await;
    let diff = app
        .get_with(
            &format!("{base}/commits/{main}"),
            auth,
            &[
                (header::ACCEPT, "application/vnd.github.diff"),
                (header::IF_NONE_MATCH, json.header(header::ETAG)),
            ],
        )
        .await;
    assert_eq!(diff.status, StatusCode::OK);
    assert!(diff.text.starts_with("diff --git"), "{}", diff.text);
    assert_ne!(diff.header(header::ETAG), json.header(header::ETAG));

    // By branch: revalidated each time, and a push makes the old tag stale.
    let by_branch = [
        "contents/README.md".to_owned(),
        "raw/README.md".to_owned(),
        "commits?sha=main".to_owned(),
        "readme".to_owned(),
        "tarball/main".to_owned(),
    ];
    let mut before = Vec::new();
    for route in &by_branch {
        let path = format!("{base}/{route}");
        let first = app.get(&path, auth).await;
        assert_eq!(first.status, StatusCode::OK, "{route}: {}", first.text);
        let cache = first.header(header::CACHE_CONTROL);
        assert!(cache.contains("no-cache") && !cache.contains("immutable"), "{route}: {cache}");
        let etag = first.header(header::ETAG).to_owned();
        assert!(etag.starts_with('"'), "{route}: {etag:?}");
        let again = app.get_with(&path, auth, &[(header::IF_NONE_MATCH, &etag)]).await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{route}");
        assert!(again.bytes.is_empty());
        before.push((path, etag, first.bytes));
    }
    let new_readme = "# History, rewritten\n\nA new commit on main.\n";
    let pushed = push_commit(&disk, "main", "main", "README.md", new_readme)?;
    assert_ne!(pushed, main);
    for (path, etag, old) in &before {
        let after = app.get_with(path, auth, &[(header::IF_NONE_MATCH, etag)]).await;
        assert_eq!(after.status, StatusCode::OK, "{path}: the old tag still matches");
        assert_ne!(after.header(header::ETAG), etag, "{path}");
        assert_ne!(after.bytes, *old, "{path}");
    }
    let readme = app.get(&format!("{base}/contents/README.md"), auth).await;
    assert_eq!(base64_decode(&readme.body["content"])?, new_readme.as_bytes());
    let raw = app.get(&format!("{base}/raw/README.md"), auth).await;
    assert_eq!(raw.bytes, new_readme.as_bytes());
    let commits = app.get(&format!("{base}/commits?sha=main&per_page=1"), auth).await;
    assert_eq!(shas(&commits.body), std::slice::from_ref(&pushed));
    // The old commit's answers stand.
    let old = app.get(&format!("{base}/raw/README.md?ref={main}"), auth).await;
    assert_eq!(old.bytes, git(&disk, &["cat-file", "blob", &format!("{main}:README.md")])?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_told_apart_from_missing_things() -> anyhow::Result<()> {
    let (app, ada, disk) = setup().await?;
    let auth = Auth::Token(&ada.token);
    let base = App::base(&ada, REPO);

    // 404s name what is missing.
    for (route, named) in [
        ("commits/no-such-ref", "no-such-ref"),
        ("commits?sha=no-such-ref", "no-such-ref"),
        ("contents/README.md?ref=no-such-ref", "no-such-ref"),
        ("raw/README.md?ref=no-such-ref", "no-such-ref"),
        ("git/trees/no-such-ref", "no-such-ref"),
        ("tarball/no-such-ref", "no-such-ref"),
        ("zipball/no-such-ref", "no-such-ref"),
        ("compare/v0.1...no-such-ref", "no-such-ref"),
        ("compare/no-such-ref...main", "no-such-ref"),
        ("branches/no-such-branch", "no-such-branch"),
        ("branches/v1.0", "v1.0"),
        ("tags/no-such-tag", "no-such-tag"),
        ("blame/README.md?ref=no-such-ref", "no-such-ref"),
        ("readme?ref=no-such-ref", "no-such-ref"),
        ("contents/no/such/file.txt", "no/such/file.txt"),
        ("raw/no/such/file.txt", "no/such/file.txt"),
        ("blame/no/such/file.txt", "no/such/file.txt"),
        ("git/trees/main?path=no/such/dir", "no/such/dir"),
        ("readme/no/such/dir", "no/such/dir"),
        ("readme/src", "src"),
        ("raw/src", "src"),
    ] {
        let answer = app.get(&format!("{base}/{route}"), auth).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{route}: {}", answer.text);
        assert_eq!(answer.body["error"]["code"], "not_found", "{route}: {}", answer.text);
        assert!(answer.message().contains(&format!("\"{named}\"")), "{route}: {}", answer.text);
    }

    // 400s for what can never exist.
    for (route, named) in [
        ("contents/a/../b", "a/../b"),
        ("contents/a/%2E%2E/b", "a/../b"),
        ("contents/a/%2e%2e/b", "a/../b"),
        ("contents/../README.md", "../README.md"),
        ("contents/./README.md", "./README.md"),
        ("contents/docs//guide.md", "docs//guide.md"),
        ("raw/a/../b", "a/../b"),
        ("raw/docs/%2E%2E/README.md", "docs/../README.md"),
        ("blame/a/%2E%2E/b", "a/../b"),
        ("readme/a/../b", "a/../b"),
        ("git/trees/main?path=a/../b", "a/../b"),
        ("commits?path=a/../b", "a/../b"),
        ("commits/main..x", "main..x"),
        ("commits?sha=main..x", "main..x"),
        ("contents/README.md?ref=main..x", "main..x"),
        ("raw/README.md?ref=main..x", "main..x"),
        ("git/trees/main..x", "main..x"),
        ("tarball/main..x", "main..x"),
        ("branches/main..x", "main..x"),
        ("tags/v1..0", "v1..0"),
        ("compare/main..x...main", "main..x"),
        ("compare/onlyone", "onlyone"),
        ("compare/main...", "main..."),
        ("compare/...main", "...main"),
    ] {
        let answer = app.get(&format!("{base}/{route}"), auth).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{route}: {}", answer.text);
        assert_eq!(answer.body["error"]["code"], "bad_request", "{route}: {}", answer.text);
        assert!(answer.message().contains(&format!("\"{named}\"")), "{route}: {}", answer.text);
    }

    // An empty repository has nothing yet: no 500s either.
    let body = json!({"name": "empty"});
    let created = app.send("POST", "/api/repos", Some(body), auth, &[]).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let empty = App::base(&ada, "empty");
    for (route, want) in [
        ("branches", StatusCode::OK),
        ("tags", StatusCode::OK),
        ("languages", StatusCode::OK),
        ("commits", StatusCode::NOT_FOUND),
        ("commits/main", StatusCode::NOT_FOUND),
        ("contents", StatusCode::NOT_FOUND),
        ("contents/README.md", StatusCode::NOT_FOUND),
        ("raw/README.md", StatusCode::NOT_FOUND),
        ("readme", StatusCode::NOT_FOUND),
        ("tarball/main", StatusCode::NOT_FOUND),
        ("git/trees/main", StatusCode::NOT_FOUND),
        ("compare/main...main", StatusCode::NOT_FOUND),
    ] {
        let answer = app.get(&format!("{empty}/{route}"), auth).await;
        assert_eq!(answer.status, want, "empty {route}: {}", answer.text);
        if want == StatusCode::NOT_FOUND {
            assert!(answer.message().contains("\"main\""), "empty {route}: {}", answer.text);
        } else {
            assert!(
                matches!(answer.body, Value::Array(ref a) if a.is_empty())
                    || answer.body == json!({}),
                "{}",
                answer.text
            );
        }
    }

    // Nothing odd is an internal error.
    let tree = git_text(&disk, &["rev-parse", "main^{tree}"])?;
    let blob = git_text(&disk, &["rev-parse", "main:README.md"])?;
    let old = git_text(
        &disk,
        &["log", "-1", "--format=%H", "--diff-filter=A", "main", "--", "assets/logo.png"],
    )?;
    let odd = [
        format!("commits/{tree}"),
        format!("commits/{blob}"),
        format!("tarball/{blob}"),
        format!("contents?ref={tree}"),
        "commits/0000000000000000000000000000000000000000".to_owned(),
        "commits/abcdef1".to_owned(),
        "commits/-x".to_owned(),
        "commits?since=yesterday".to_owned(),
        "commits?per_page=0".to_owned(),
        "commits?per_page=101".to_owned(),
        "commits?page=0".to_owned(),
        "branches?page=0".to_owned(),
        "tags?per_page=1000".to_owned(),
        "contents/%00".to_owned(),
        "raw/README.md%00".to_owned(),
        "contents/README.md/x".to_owned(),
        "contents/sub/x".to_owned(),
        "raw/sub".to_owned(),
        "raw/docs".to_owned(),
        "blame/docs".to_owned(),
        "blame/sub".to_owned(),
        "blame/docs/readme-link".to_owned(),
        format!("blame/assets/logo.png?ref={old}"),
        "git/trees/main?path=README.md".to_owned(),
        "git/trees/main?path=sub".to_owned(),
        "git/trees/main?recursive=yes&path=src".to_owned(),
        "readme/README.md".to_owned(),
        "readme/sub".to_owned(),
        "contents/caf%E9.txt%ZZ".to_owned(),
        "compare/main...main...main".to_owned(),
        "compare/v1.0...v0.1.patch".to_owned(),
        "commits/main.diff.patch".to_owned(),
        "tarball/v1.0%0A".to_owned(),
        "languages?ref=x".to_owned(),
        "commits?path=sub/x".to_owned(),
        "commits?path=README.md/x".to_owned(),
        "git/trees/main?path=sub/x".to_owned(),
        "blame/sub/x".to_owned(),
        "raw/sub/x".to_owned(),
        "readme/sub/x".to_owned(),
    ];
    for route in &odd {
        let answer = app.get(&format!("{base}/{route}"), auth).await;
        assert!(
            answer.status.is_success()
                || matches!(answer.status.as_u16(), 400 | 404 | 422)
                    && answer.body["error"]["code"].is_string(),
            "{route}: {} {}",
            answer.status,
            answer.text
        );
    }
    Ok(())
}

type TarEntries = BTreeMap<Vec<u8>, (Vec<u8>, bool)>;

/// The entries of a tar archive: path, then a symlink's target or a file's bytes and whether it
/// is executable. Directories and pax headers are left out.
fn tar_entries(tar: impl std::io::Read) -> anyhow::Result<TarEntries> {
    let mut archive = tar::Archive::new(tar);
    let mut entries = BTreeMap::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        let path = entry.path_bytes().into_owned();
        let executable = entry.header().mode()? & 0o100 != 0;
        if kind.is_symlink() {
            let target = entry.link_name_bytes().map(|name| name.into_owned()).unwrap_or_default();
            entries.insert(path, (target, false));
        } else if kind.is_file() {
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            entries.insert(path, (data, executable));
        }
    }
    Ok(entries)
}

#[tokio::test(flavor = "multi_thread")]
async fn archives_hold_what_git_archive_puts_in_them() -> anyhow::Result<()> {
    let (app, ada, disk) = setup().await?;
    let auth = Auth::Token(&ada.token);
    let base = App::base(&ada, REPO);

    for (reference, top) in [
        ("v1.0", "chronicle-v1.0"),
        ("release/1.x", "chronicle-release-1.x"),
        ("main", "chronicle-main"),
    ] {
        let answer = app.get(&format!("{base}/tarball/{reference}"), auth).await;
        assert_eq!(answer.status, StatusCode::OK, "{reference}: {}", answer.text);
        assert_eq!(answer.header(header::CONTENT_TYPE), "application/gzip");
        assert_eq!(
            answer.header(header::CONTENT_DISPOSITION),
            format!("attachment; filename*=UTF-8''{top}.tar.gz")
        );
        let ours = tar_entries(flate2::read::GzDecoder::new(answer.bytes.as_slice()))?;
        let prefix = format!("--prefix={top}/");
        let theirs =
            tar_entries(git(&disk, &["archive", "--format=tar", &prefix, reference])?.as_slice())?;
        let names = |entries: &TarEntries| -> Vec<String> {
            entries.keys().map(|name| String::from_utf8_lossy(name).into_owned()).collect()
        };
        assert_eq!(names(&ours), names(&theirs), "{reference}");
        assert_eq!(ours, theirs, "{reference}: the same bytes, links and executable bits");
        assert!(
            ours.keys().all(|name| name.starts_with(format!("{top}/").as_bytes())),
            "{reference}: everything under {top}/"
        );
        assert!(ours.contains_key(format!("{top}/README.md").as_bytes()), "{reference}");
        if reference != "release/1.x" {
            assert!(
                !ours.contains_key(format!("{top}/docs/secret.txt").as_bytes()),
                "export-ignore"
            );
            assert!(ours.keys().any(|name| name.ends_with(b"/caf\xe9.txt")), "{reference}");
        }
    }

    // zip holds only UTF-8 names: a tree with others is refused before anything is sent.
    let refused = app.get(&format!("{base}/zipball/main"), auth).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.text);
    assert!(refused.message().contains("caf\u{fffd}.txt"), "{}", refused.text);
    let zip = app.get(&format!("{base}/zipball/v0.1"), auth).await;
    assert_eq!(zip.status, StatusCode::OK, "{}", zip.text);
    assert!(zip.bytes.starts_with(b"PK\x03\x04"), "not a zip");
    assert_eq!(zip.header(header::CONTENT_TYPE), "application/zip");
    assert_eq!(
        zip.header(header::CONTENT_DISPOSITION),
        "attachment; filename*=UTF-8''chronicle-v0.1.zip"
    );
    let at_v01 = git_lines(&disk, &["ls-tree", "-r", "--name-only", "v0.1"])?;
    for file in &at_v01 {
        let name = format!("chronicle-v0.1/{file}");
        assert!(
            zip.bytes.windows(name.len()).any(|window| window == name.as_bytes()),
            "{name} is not in the zip"
        );
    }
    // The zip's end-of-central-directory record counts the files and directories git's does.
    let git_zip = git(&disk, &["archive", "--format=zip", "--prefix=chronicle-v0.1/", "v0.1"])?;
    let count = |zip: &[u8]| -> Option<u16> {
        let at = zip.windows(4).rposition(|window| window == b"PK\x05\x06")?;
        Some(u16::from_le_bytes([*zip.get(at + 10)?, *zip.get(at + 11)?]))
    };
    let files = count(&zip.bytes).ok_or_else(|| anyhow::anyhow!("no central directory"))?;
    assert!(usize::from(files) >= at_v01.len(), "{files} entries");
    assert!(count(&git_zip).is_some());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn readmes_are_rendered_without_scripts() -> anyhow::Result<()> {
    let (app, ada, disk) = setup().await?;
    let auth = Auth::Token(&ada.token);
    let base = App::base(&ada, REPO);
    let readme = app.get(&format!("{base}/readme"), auth).await;
    assert_eq!(readme.status, StatusCode::OK, "{}", readme.text);
    assert_eq!(readme.body["name"], "README.md");
    assert_eq!(readme.body["path"], "README.md");
    assert_eq!(
        base64_decode(&readme.body["content"])?,
        git(&disk, &["cat-file", "blob", "main:README.md"])?
    );
    let html = readme.body["html"].as_str().unwrap_or("");
    assert!(html.contains("<h1>History fixture</h1>"), "{html}");
    assert!(html.contains("<li>plain list item"), "{html}");
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains("alert(1)</script>"), "{html}");
    assert!(html.contains("href=\"docs/guide.md\""), "{html}");
    assert!(html.contains("rel=\"nofollow noopener noreferrer\""), "{html}");

    let page = app
        .get_with(
            &format!("{base}/readme"),
            auth,
            &[(header::ACCEPT, "application/vnd.github.html")],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert_eq!(page.header(header::CONTENT_TYPE), "text/html; charset=utf-8");
    assert_eq!(page.header(header::CONTENT_SECURITY_POLICY), "sandbox");
    assert_eq!(page.text, html);
    let raw = app
        .get_with(
            &format!("{base}/readme"),
            auth,
            &[(header::ACCEPT, "application/vnd.github.raw")],
        )
        .await;
    assert_eq!(raw.header(header::CONTENT_TYPE), "text/plain; charset=utf-8");
    assert_eq!(raw.bytes, git(&disk, &["cat-file", "blob", "main:README.md"])?);

    // A directory's README.
    push_commit(
        &disk,
        "main",
        "docs-readme",
        "docs/README.md",
        "# Docs\n\n<img src=x onerror=alert(1)>\n",
    )?;
    let docs = app.get(&format!("{base}/readme/docs?ref=docs-readme"), auth).await;
    assert_eq!(docs.status, StatusCode::OK, "{}", docs.text);
    assert_eq!(docs.body["path"], "docs/README.md");
    let html = docs.body["html"].as_str().unwrap_or("");
    assert!(html.contains("<h1>Docs</h1>") && !html.contains("onerror"), "{html}");
    let none = app.get(&format!("{base}/readme/docs"), auth).await;
    assert_eq!(none.status, StatusCode::NOT_FOUND, "{}", none.text);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn languages_count_the_bytes_of_code_that_is_not_vendored() -> anyhow::Result<()> {
    let (app, ada, disk) = setup().await?;
    let answer = app.get(&format!("{}/languages", App::base(&ada, REPO)), Auth::Anonymous).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    let mut vendored = 0;
    for line in git_lines(&disk, &["ls-tree", "-r", "-l", "main"])? {
        let Some((meta, path)) = line.split_once('\t') else { continue };
        let fields: Vec<&str> = meta.split_whitespace().collect();
        if fields[0] == "120000" || fields[1] != "blob" {
            continue;
        }
        let size: u64 = fields[3].parse()?;
        let language = match path.rsplit_once('.').map(|(_, extension)| extension) {
            Some("rs") => "Rust",
            Some("py") => "Python",
            Some("js") => "JavaScript",
            Some("go") => "Go",
            Some("sh") => "Shell",
            _ => continue,
        };
        if path.starts_with("vendor/") || path.starts_with("dist/") || path.ends_with(".min.js") {
            vendored += size;
            continue;
        }
        *expected.entry(language).or_default() += size;
    }
    assert!(vendored > 0, "the fixture has vendored code");
    for (language, bytes) in &expected {
        assert_eq!(answer.body[*language], *bytes, "{language}: {}", answer.text);
    }
    assert_eq!(expected.len(), 5, "{expected:?}");
    assert_eq!(
        answer.body["JavaScript"],
        git_text(&disk, &["cat-file", "-s", "main:web/app.js"])?.parse::<u64>()?
    );
    assert!(answer.body.get("Markdown").is_none(), "{}", answer.text);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_describes_the_browsing_routes() -> anyhow::Result<()> {
    let app = App::new().await?;
    let answer = app.get("/api/openapi.json", Auth::Anonymous).await;
    assert_eq!(answer.status, StatusCode::OK);
    let paths = &answer.body["paths"];
    let base = "/api/repos/{owner}/{name}";
    for (path, query) in [
        ("branches", &["page", "per_page"][..]),
        ("branches/{ref}", &[]),
        ("tags", &["page", "per_page"]),
        ("tags/{ref}", &[]),
        ("commits", &["sha", "path", "since", "until", "author", "page", "per_page"]),
        ("commits/{ref}", &[]),
        ("compare/{ref}", &[]),
        ("git/trees/{ref}", &["path", "recursive"]),
        ("contents", &["ref"]),
        ("contents/{path}", &["ref"]),
        ("raw/{path}", &["ref"]),
        ("blame/{path}", &["ref"]),
        ("tarball/{ref}", &[]),
        ("zipball/{ref}", &[]),
        ("readme", &["ref"]),
        ("readme/{path}", &["ref"]),
        ("languages", &[]),
    ] {
        let full = format!("{base}/{path}");
        let operation = &paths[&full]["get"];
        assert!(operation.is_object(), "{full} is not documented");
        let parameters: BTreeSet<(String, String)> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let name = p["name"].as_str().unwrap_or("").to_owned();
                (name, p["in"].as_str().unwrap_or("").to_owned())
            })
            .collect();
        let mut expected: BTreeSet<(String, String)> = full
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| (name.to_owned(), "path".to_owned()))
            .collect();
        expected.extend(query.iter().map(|name| ((*name).to_owned(), "query".to_owned())));
        assert_eq!(parameters, expected, "{full}");
        let responses = operation["responses"].as_object();
        assert!(
            responses
                .is_some_and(|r| r.contains_key("200") && r.keys().any(|s| s.starts_with('4'))),
            "{full} documents no success or no failure"
        );
        assert_eq!(operation["tags"][0], "browsing", "{full}");
    }
    let schemas = &answer.body["components"]["schemas"];
    for schema in [
        "CommitView",
        "BranchView",
        "TagView",
        "CompareView",
        "ContentsView",
        "TreeView",
        "BlameView",
        "ReadmeView",
    ] {
        assert!(schemas.get(schema).is_some(), "schema {schema} missing");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_or_renamed_repository_is_not_read_in_place_of_its_successor()
-> anyhow::Result<()> {
    let app = App::new().await?;
    let ada = app.member("ada", &[Scope::Admin]).await?;
    let token = Auth::Token(&ada.token);
    let main = git_text(&app.history(), &["rev-parse", "main"])?;
    for how in ["DELETE", "rename"] {
        let name = format!("secret-{}", how.to_ascii_lowercase());
        app.history_repo(&ada, &name, true).await?;
        let base = App::base(&ada, &name);
        // Read, so the browser holds it open.
        for route in [format!("commits/{main}"), "raw/README.md".to_owned()] {
            let read = app.get(&format!("{base}/{route}"), token).await;
            assert_eq!(read.status, StatusCode::OK, "{route}: {}", read.text);
        }
        let gone = if how == "DELETE" {
            app.send("DELETE", &base, None, token, &[]).await
        } else {
            let body = json!({"name": format!("{name}-moved")});
            app.send("POST", &format!("{base}/rename"), Some(body), token, &[]).await
        };
        assert!(gone.status.is_success(), "{how}: {}", gone.text);
        // A new, empty, public repository takes the name.
        let body = json!({"name": name, "private": false});
        let created = app.send("POST", "/api/repos", Some(body), token, &[]).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        for route in [
            format!("commits/{main}"),
            format!("raw/README.md?ref={main}"),
            format!("tarball/{main}"),
            "raw/README.md".to_owned(),
            "commits".to_owned(),
        ] {
            let answer = app.get(&format!("{base}/{route}"), Auth::Anonymous).await;
            assert_eq!(
                answer.status,
                StatusCode::NOT_FOUND,
                "after {how}, {route} on the new repository: {}",
                answer.text
            );
        }
        let branches = app.get(&format!("{base}/branches"), Auth::Anonymous).await;
        assert_eq!(branches.body, json!([]), "{}", branches.text);
        let languages = app.get(&format!("{base}/languages"), Auth::Anonymous).await;
        assert_eq!(languages.body, json!({}), "{}", languages.text);
    }
    // The renamed one reads on under its new name.
    let moved = app.get(&format!("/api/repos/ada/secret-rename-moved/commits/{main}"), token).await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.text);
    Ok(())
}
