//! Code search end to end: pushes through `gitserver`, index jobs from `git_hook`, indexing and
//! search in `app` (the embedded model and store, as `scripts/run.sh` runs them), with the real
//! MiniLM model and real `git`.

mod common;

use std::time::Duration;

use common::{Deployment, User, git, poll};
use platform_test_support::ServiceProcess;
use serde_json::Value;

const SESSION_RS: &str = "/// Removes the sessions that expired: stale logins are dropped.\n\
pub fn expire_sessions(now: u64, sessions: &mut Vec<(u64, String)>) {\n    \
sessions.retain(|(deadline, _)| *deadline > now);\n}\n";

const PARSER_PY: &str = "def parse_config(text):\n    \
\"\"\"Reads key = value lines into a dictionary.\"\"\"\n    \
pairs = {}\n    for line in text.splitlines():\n        \
key, _, value = line.partition('=')\n        pairs[key.strip()] = value.strip()\n    \
return pairs\n";

/// `GET /api/search/code` as `user` (anonymous when `None`): the answer's status and body.
async fn search(
    app: &ServiceProcess,
    user: Option<&User>,
    query: &str,
) -> anyhow::Result<(u16, Value)> {
    let mut request = reqwest::Client::new()
        .get(app.url("/api/search/code"))
        .query(&[("q", query), ("limit", "5")]);
    if let Some(user) = user {
        request = request.bearer_auth(&user.token);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

/// `GET /api/search/code` anonymously with extra parameters: the hits' `repository:path`.
async fn search_with(app: &ServiceProcess, params: &[(&str, &str)]) -> anyhow::Result<Vec<String>> {
    let response =
        reqwest::Client::new().get(app.url("/api/search/code")).query(params).send().await?;
    anyhow::ensure!(response.status().is_success(), "search answered {}", response.status());
    Ok(found(&response.json().await?))
}

/// The `repository:path` of each hit.
fn found(body: &Value) -> Vec<String> {
    body["hits"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|hit| {
            format!(
                "{}:{}",
                hit["repository"].as_str().unwrap_or("?"),
                hit["path"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// Waits until `user`'s search for `query` has `expected` among its hits (or, with
/// `present` false, no longer has it).
async fn wait_for_hit(
    app: &ServiceProcess,
    user: Option<&User>,
    query: &str,
    expected: &str,
    present: bool,
) -> anyhow::Result<Value> {
    poll(
        Duration::from_secs(180),
        &format!("{query:?} → {expected} (present: {present})"),
        || async {
            let (status, body) = search(app, user, query).await?;
            anyhow::ensure!(status == 200, "search answered {status}: {body}");
            Ok((found(&body).iter().any(|hit| hit == expected) == present).then_some(body))
        },
    )
    .await
}

async fn patch(app: &ServiceProcess, user: &User, path: &str, body: Value) -> anyhow::Result<u16> {
    let response = reqwest::Client::new()
        .patch(app.url(path))
        .bearer_auth(&user.token)
        .json(&body)
        .send()
        .await?;
    Ok(response.status().as_u16())
}

/// Switches indexing of alice/tools on or off as `user`; the answer's status.
async fn indexing(app: &ServiceProcess, user: &User, enabled: bool) -> anyhow::Result<u16> {
    let body = serde_json::json!({ "enabled": enabled });
    patch(app, user, "/api/repos/alice/tools/code-index", body).await
}

/// `app`, `gitserver` and `git_hook` of `deployment`, code search configured by `search_env`.
async fn start_services(
    deployment: &Deployment,
    search_env: &[(&str, String)],
) -> anyhow::Result<(ServiceProcess, ServiceProcess, ServiceProcess)> {
    let app = deployment.start(&platform_test_support::workspace_binary("app"), search_env).await?;
    let gitserver = deployment.gitserver().await?;
    let git_hook = deployment.git_hook(search_env).await?;
    Ok((app, gitserver, git_hook))
}

/// `/readyz` of `app`, and its `code_search` check.
async fn code_search_check(app: &ServiceProcess) -> anyhow::Result<(Value, Value)> {
    let report: Value = reqwest::get(app.url("/readyz")).await?.json().await?;
    let check = report["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|check| check["name"] == "code_search")
        .cloned()
        .unwrap_or_default();
    Ok((report, check))
}

/// The local model's directory, from `scripts/services.sh`.
fn model_dir() -> anyhow::Result<String> {
    std::env::var("PLATFORM_TEST_EMBED_MODEL_DIR").map_err(|_| {
        anyhow::anyhow!("PLATFORM_TEST_EMBED_MODEL_DIR is unset: run scripts/services.sh")
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn pushes_are_searchable_and_results_follow_read_access() -> anyhow::Result<()> {
    let deployment = Deployment::new().await?;
    let model = model_dir()?;
    let search_env = [
        ("APP_EMBED_MODEL_PATH", model),
        ("APP_CODE_INDEX_PATH", deployment.scratch.join("code-index").display().to_string()),
    ];
    let (app, gitserver, _git_hook) = start_services(&deployment, &search_env).await?;

    let alice = deployment.user("alice", true).await?;
    let bob = deployment.user("bob", true).await?;
    deployment.repo(&alice, "tools", false).await?;
    let work = deployment.scratch.join("work");
    std::fs::create_dir_all(work.join("src"))?;
    std::fs::write(work.join("src/session.rs"), SESSION_RS)?;
    std::fs::write(work.join("parser.py"), PARSER_PY)?;
    git(&work, &["init", "-q", "-b", "main"])?;
    git(&work, &["add", "."])?;
    git(&work, &["commit", "-q", "-m", "first"])?;
    let first = git(&work, &["rev-parse", "HEAD"])?;
    let remote = deployment.http_url(&gitserver, &alice, "alice/tools");
    git(&work, &["push", "-q", &remote, "main"])?;

    // The index status says what it holds once the job is done.
    let status_url = app.url("/api/repos/alice/tools/code-index");
    let status = poll(Duration::from_secs(180), "the first index", || async {
        let status: Value = reqwest::get(&status_url).await?.json().await?;
        Ok((status["indexed_commit"] == first.as_str()).then_some(status))
    })
    .await?;
    assert_eq!(status["files"], 2, "{status}");
    assert_eq!(status["pending"], 0, "{status}");
    assert_eq!(status["model"], "all-MiniLM-L6-v2", "{status}");
    assert_eq!(status["last_error"], Value::Null, "{status}");

    // A push is found by meaning, by anyone who can read the repository.
    let (_, body) = search(&app, Some(&bob), "remove stale logins").await?;
    let hit = &body["hits"][0];
    assert_eq!(hit["repository"], "alice/tools", "the best hit: {body}");
    assert_eq!(hit["path"], "src/session.rs", "the best hit: {body}");
    assert_eq!(hit["start_line"], 1);
    assert_eq!(hit["commit"], first.as_str());
    assert!(hit["snippet"].as_str().unwrap_or("").contains("fn expire_sessions"));
    // And by an identifier split at its case boundaries, anonymously.
    let (_, body) = search(&app, None, "parseConfig").await?;
    assert_eq!(found(&body).first().map(String::as_str), Some("alice/tools:parser.py"), "{body}");

    // A rename and a deletion, pushed: the old path is gone, the new one found.
    git(&work, &["mv", "src/session.rs", "src/sessions.rs"])?;
    git(&work, &["rm", "-q", "parser.py"])?;
    git(&work, &["commit", "-q", "-m", "rename and delete"])?;
    git(&work, &["push", "-q", &remote, "main"])?;
    wait_for_hit(&app, Some(&bob), "remove stale logins", "alice/tools:src/sessions.rs", true)
        .await?;
    let (_, body) = search(&app, Some(&bob), "remove stale logins").await?;
    assert!(
        !found(&body).contains(&"alice/tools:src/session.rs".to_owned()),
        "old path still found: {body}"
    );
    wait_for_hit(&app, Some(&bob), "parseConfig", "alice/tools:parser.py", false).await?;

    // A force push back to the first commit restores both files.
    git(&work, &["push", "-q", "--force", &remote, &format!("{first}:refs/heads/main")])?;
    wait_for_hit(&app, Some(&bob), "parseConfig", "alice/tools:parser.py", true).await?;
    wait_for_hit(&app, Some(&bob), "remove stale logins", "alice/tools:src/sessions.rs", false)
        .await?;

    // Filters by language and directory.
    let python = search_with(&app, &[("q", "parseConfig"), ("language", "Python")]).await?;
    assert_eq!(python, ["alice/tools:parser.py"]);
    let rust = search_with(&app, &[("q", "parseConfig"), ("language", "rust")]).await?;
    assert!(!rust.contains(&"alice/tools:parser.py".to_owned()), "{rust:?}");
    let under_src = search_with(&app, &[("q", "parseConfig"), ("path", "src/")]).await?;
    assert!(under_src.iter().all(|hit| hit.starts_with("alice/tools:src/")), "{under_src:?}");
    let scoped = search_with(&app, &[("q", "parseConfig"), ("repo", "alice/tools")]).await?;
    assert!(scoped.contains(&"alice/tools:parser.py".to_owned()), "{scoped:?}");

    // Private now: bob and anonymous callers find nothing at once, alice still does.
    assert_eq!(
        patch(&app, &alice, "/api/repos/alice/tools", serde_json::json!({"private": true})).await?,
        200
    );
    let (status, body) = search(&app, Some(&bob), "parseConfig").await?;
    assert_eq!(status, 200);
    assert!(found(&body).is_empty(), "a private repository shown to bob: {body}");
    let (_, body) = search(&app, None, "parseConfig").await?;
    assert!(found(&body).is_empty(), "a private repository shown anonymously: {body}");
    let (_, body) = search(&app, Some(&alice), "parseConfig").await?;
    assert!(found(&body).contains(&"alice/tools:parser.py".to_owned()), "{body}");
    let hidden = reqwest::Client::new()
        .get(app.url("/api/search/code"))
        .query(&[("q", "parseConfig"), ("repo", "alice/tools")])
        .send()
        .await?;
    assert_eq!(hidden.status().as_u16(), 404, "a private repository named to a stranger");

    // A collaborator reads it; once removed, no longer.
    let collaborator = app.url("/api/repos/alice/tools/collaborators/bob");
    let added = reqwest::Client::new()
        .put(&collaborator)
        .bearer_auth(&alice.token)
        .json(&serde_json::json!({"role": "read"}))
        .send()
        .await?;
    assert!(added.status().is_success(), "adding bob: {}", added.status());
    let (_, body) = search(&app, Some(&bob), "parseConfig").await?;
    assert!(found(&body).contains(&"alice/tools:parser.py".to_owned()), "collaborator bob: {body}");
    let removed =
        reqwest::Client::new().delete(&collaborator).bearer_auth(&alice.token).send().await?;
    assert_eq!(removed.status().as_u16(), 204);
    let (_, body) = search(&app, Some(&bob), "parseConfig").await?;
    assert!(found(&body).is_empty(), "bob removed, still shown: {body}");

    // Deleted: gone for its owner too.
    let deleted = reqwest::Client::new()
        .delete(app.url("/api/repos/alice/tools"))
        .bearer_auth(&alice.token)
        .send()
        .await?;
    assert_eq!(deleted.status().as_u16(), 204);
    let (_, body) = search(&app, Some(&alice), "parseConfig").await?;
    assert!(found(&body).is_empty(), "a deleted repository shown: {body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_embedded_store_has_one_owner_and_is_refused_where_app_may_scale() -> anyhow::Result<()>
{
    let deployment = Deployment::new().await?;
    let model = model_dir()?;
    let index = deployment.scratch.join("code-index").display().to_string();
    let search_env =
        [("APP_EMBED_MODEL_PATH", model.clone()), ("APP_CODE_INDEX_PATH", index.clone())];
    let app_binary = platform_test_support::workspace_binary("app");
    let app = deployment.start(&app_binary, &search_env).await?;

    // /readyz names the mode as a detail; the service is ready.
    let (ready, check) = code_search_check(&app).await?;
    assert_eq!(check["ok"], true, "{ready}");
    let detail = check["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("all-MiniLM-L6-v2") && detail.contains("embedded store"), "{ready}");

    // A second app on the same store stops at start, naming the way out.
    let second = deployment.start(&app_binary, &search_env).await;
    let error = format!(
        "{:#}",
        second.err().ok_or_else(|| anyhow::anyhow!("a second app opened the store"))?
    );
    assert!(error.contains("APP_QDRANT_URL"), "{error}");
    // The first one still searches.
    let (status, _) = search(&app, None, "anything").await?;
    assert_eq!(status, 200);
    drop(app);

    // Where the chart says app may scale, an embedded store is refused outright.
    let other = deployment.scratch.join("other-index").display().to_string();
    let refused = deployment
        .start(
            &app_binary,
            &[
                ("APP_EMBED_MODEL_PATH", model),
                ("APP_CODE_INDEX_PATH", other),
                ("APP_EMBEDDED_STORE_ALLOWED", "false".to_owned()),
            ],
        )
        .await;
    let error = format!(
        "{:#}",
        refused
            .err()
            .ok_or_else(|| anyhow::anyhow!("app started with an embedded store it may not use"))?
    );
    assert!(error.contains("APP_QDRANT_URL") && error.contains("several replicas"), "{error}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn search_without_a_model_answers_503_naming_the_setting() -> anyhow::Result<()> {
    let deployment = Deployment::new().await?;
    let app = deployment.app().await?;
    let (status, body) = search(&app, None, "anything").await?;
    assert_eq!(status, 503, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("APP_EMBED_MODEL_PATH"), "{body}");
    // Everything else keeps working.
    let repos = reqwest::Client::new().get(app.url("/api/repos")).send().await?;
    assert_eq!(repos.status().as_u16(), 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_qdrant_server_down_services_start_and_search_names_the_store()
-> anyhow::Result<()> {
    let deployment = Deployment::new().await?;
    // Nothing listens on this port: the server is down when the services start.
    let qdrant = format!("http://127.0.0.1:{}", platform_test_support::free_port());
    let search_env = [("APP_EMBED_MODEL_PATH", model_dir()?), ("APP_QDRANT_URL", qdrant.clone())];
    let (app, gitserver, _git_hook) = start_services(&deployment, &search_env).await?;
    let alice = deployment.user("alice", true).await?;
    deployment.repo(&alice, "tools", false).await?;
    let work = push_files(
        &deployment,
        &gitserver,
        &alice,
        "alice/tools",
        &[("src/session.rs", SESSION_RS)],
    )?;
    let pushed = git(&work, &["rev-parse", "HEAD"])?;
    // The push lands, and the worker, not switched off, keeps trying and says why it cannot.
    let status_url = app.url("/api/repos/alice/tools/code-index");
    let status = poll(Duration::from_secs(120), "an index attempt", || async {
        let status: Value = reqwest::get(&status_url).await?.json().await?;
        Ok(status["last_error"].is_string().then_some(status))
    })
    .await?;
    assert!(status["last_error"].as_str().unwrap_or_default().contains(&qdrant), "{status}");
    assert_eq!(status["indexed_commit"], Value::Null, "{status}");
    let remote = deployment.http_url(&gitserver, &alice, "alice/tools");
    let heads = git(&work, &["ls-remote", &remote])?;
    assert!(heads.contains(&pushed), "{heads}");

    let (status, body) = search(&app, None, "anything").await?;
    assert_eq!(status, 503, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("vector store"), "{body}");
    // Readiness passes (code search is optional) and says what is wrong, each probe anew.
    let (report, check) = code_search_check(&app).await?;
    assert_eq!(check["ok"], true, "{report}");
    let detail = check["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with("degraded: ") && detail.contains(&qdrant), "{report}");
    Ok(())
}

/// A work tree with `files` committed on `main` and pushed to `owner/name`.
fn push_files(
    deployment: &Deployment,
    gitserver: &ServiceProcess,
    user: &User,
    repo: &str,
    files: &[(&str, &str)],
) -> anyhow::Result<std::path::PathBuf> {
    let work = deployment.scratch.join(common_name(repo));
    for (path, text) in files {
        let file = work.join(path);
        std::fs::create_dir_all(file.parent().unwrap_or(&work))?;
        std::fs::write(file, text)?;
    }
    git(&work, &["init", "-q", "-b", "main"])?;
    git(&work, &["add", "."])?;
    git(&work, &["commit", "-q", "-m", "files"])?;
    git(&work, &["push", "-q", &deployment.http_url(gitserver, user, repo), "main"])?;
    Ok(work)
}

fn common_name(repo: &str) -> String {
    format!("work-{}", repo.replace('/', "-"))
}

#[tokio::test(flavor = "multi_thread")]
async fn forks_and_default_branch_changes_are_indexed_by_the_sweep() -> anyhow::Result<()> {
    let deployment = Deployment::new().await?;
    let model = model_dir()?;
    let search_env = [
        ("APP_EMBED_MODEL_PATH", model),
        ("APP_CODE_INDEX_PATH", deployment.scratch.join("code-index").display().to_string()),
        ("APP_CODE_INDEX_SWEEP_SECONDS", "1".to_owned()),
    ];
    let (app, gitserver, _git_hook) = start_services(&deployment, &search_env).await?;
    let alice = deployment.user("alice", true).await?;
    let bob = deployment.user("bob", true).await?;
    deployment.repo(&alice, "tools", false).await?;
    let work =
        push_files(&deployment, &gitserver, &alice, "alice/tools", &[("parser.py", PARSER_PY)])?;
    wait_for_hit(&app, None, "parseConfig", "alice/tools:parser.py", true).await?;

    // A fork is a new repository no push created: the sweep indexes it.
    let forked = reqwest::Client::new()
        .post(app.url("/api/repos/alice/tools/forks"))
        .bearer_auth(&bob.token)
        .json(&serde_json::json!({}))
        .send()
        .await?;
    assert_eq!(forked.status().as_u16(), 201);
    wait_for_hit(&app, None, "parseConfig", "bob/tools:parser.py", true).await?;

    // Another branch becomes the default: the index follows it.
    git(&work, &["checkout", "-q", "-b", "next"])?;
    git(&work, &["rm", "-q", "parser.py"])?;
    std::fs::write(work.join("session.rs"), SESSION_RS)?;
    git(&work, &["add", "."])?;
    git(&work, &["commit", "-q", "-m", "next"])?;
    git(&work, &["push", "-q", &deployment.http_url(&gitserver, &alice, "alice/tools"), "next"])?;
    // A push to another branch changes nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, body) = search(&app, None, "remove stale logins").await?;
    assert!(!found(&body).contains(&"alice/tools:session.rs".to_owned()), "{body}");
    let changed = patch(
        &app,
        &alice,
        "/api/repos/alice/tools",
        serde_json::json!({"default_branch": "next"}),
    )
    .await?;
    assert_eq!(changed, 200);
    wait_for_hit(&app, None, "remove stale logins", "alice/tools:session.rs", true).await?;
    wait_for_hit(&app, None, "parseConfig", "alice/tools:parser.py", false).await?;
    // The fork keeps its own.
    let (_, body) = search(&app, None, "parseConfig").await?;
    assert!(found(&body).contains(&"bob/tools:parser.py".to_owned()), "{body}");

    // Switched off for the repository: its chunks go; on again: they come back.
    assert_eq!(indexing(&app, &alice, false).await?, 200);
    wait_for_hit(&app, None, "remove stale logins", "alice/tools:session.rs", false).await?;
    assert_eq!(indexing(&app, &alice, true).await?, 200);
    wait_for_hit(&app, None, "remove stale logins", "alice/tools:session.rs", true).await?;
    // Only admins of the repository change it.
    assert_eq!(indexing(&app, &bob, false).await?, 403);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_embeddings_api_down_search_answers_503_and_indexing_catches_up()
-> anyhow::Result<()> {
    let deployment = Deployment::new().await?;
    let model = model_dir()?;
    let api = platform_test_support::EmbeddingsServer::start(std::path::Path::new(&model)).await?;
    let search_env = [
        ("APP_EMBED_MODEL_NAME", "all-MiniLM-L6-v2".to_owned()),
        ("APP_EMBED_MODEL_DIMENSIONS", "384".to_owned()),
        ("APP_EMBED_MODEL_BASE_URL", api.url().to_owned()),
        ("APP_CODE_INDEX_PATH", deployment.scratch.join("code-index").display().to_string()),
        ("APP_CODE_INDEX_SWEEP_SECONDS", "1".to_owned()),
    ];
    let (app, gitserver, _git_hook) = start_services(&deployment, &search_env).await?;
    let alice = deployment.user("alice", true).await?;
    deployment.repo(&alice, "tools", false).await?;
    let work =
        push_files(&deployment, &gitserver, &alice, "alice/tools", &[("parser.py", PARSER_PY)])?;
    wait_for_hit(&app, None, "parseConfig", "alice/tools:parser.py", true).await?;
    assert!(api.inputs() > 0, "the API embedded nothing");

    api.set_down(true);
    // Pushes go on; the search by meaning names what is down, the lexical one still answers.
    std::fs::write(work.join("session.rs"), SESSION_RS)?;
    git(&work, &["add", "."])?;
    git(&work, &["commit", "-q", "-m", "sessions"])?;
    let head = git(&work, &["rev-parse", "HEAD"])?;
    git(&work, &["push", "-q", &deployment.http_url(&gitserver, &alice, "alice/tools"), "main"])?;
    let (status, body) = search(&app, None, "remove stale logins").await?;
    assert_eq!(status, 503, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("embedding model"), "{body}");
    assert!(!message.contains(api.url()), "the API's address in an answer: {body}");
    let lexical = reqwest::Client::new()
        .get(app.url("/api/search/code"))
        .query(&[("q", "parseConfig"), ("ranking", "lexical")])
        .send()
        .await?;
    assert_eq!(lexical.status().as_u16(), 200);
    // The index job fails and says so in the status.
    let status_url = app.url("/api/repos/alice/tools/code-index");
    let failed = poll(Duration::from_secs(180), "the failure in the status", || async {
        let status: Value = reqwest::get(&status_url).await?.json().await?;
        Ok(status["last_error"].is_string().then_some(status))
    })
    .await?;
    assert_ne!(failed["indexed_commit"], head.as_str(), "{failed}");
    assert!(failed["pending"].as_i64().unwrap_or(0) > 0, "{failed}");

    // Back up: the index catches up without another push.
    api.set_down(false);
    let caught_up = poll(Duration::from_secs(180), "the index catching up", || async {
        let status: Value = reqwest::get(&status_url).await?.json().await?;
        Ok((status["indexed_commit"] == head.as_str()).then_some(status))
    })
    .await?;
    assert_eq!(caught_up["last_error"], Value::Null, "{caught_up}");
    wait_for_hit(&app, None, "remove stale logins", "alice/tools:session.rs", true).await?;
    Ok(())
}
