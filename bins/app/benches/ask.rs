//! Ask-the-code's overhead: time to first token and total time of a streamed answer through
//! `app`, against the same chat-completions server called directly with the same prompt.
//!
//! Run with `scripts/bench.sh ask` (it starts PostgreSQL, Redis and NATS), or with the services
//! of `scripts/services.sh` in the environment: `cargo bench -p app --bench ask`. `APP_BIN` names
//! the `app` binary to run (default: the workspace's `target/debug/app`, which `scripts/bench.sh`
//! builds; its model crates are optimised as in every build, see `.cargo/config.toml`).
//!
//! The chat server is test-support's `ChatServer` (SmolLM2-135M-Instruct, greedy decoding, one
//! generation at a time) in this process; `app` runs as a real process with the local MiniLM
//! model and the embedded store, on a fresh database, with a repository holding the `src/` of
//! platform-ai (about 30 files) pushed and indexed. Each run asks the same question through `app`
//! (`"stream": true`, a new conversation each time), then sends the prompt `app` sent (taken
//! from the server's record: the same messages and `max_tokens`) to the server directly, also
//! streamed. Greedy decoding makes both generate the same tokens. Time to first token is from
//! sending the request to the first piece of text (`app`'s first `token` event, the server's
//! first chunk with content); total is to `app`'s `done` event and the server's `[DONE]`.
//! The overhead is app minus direct at the median of `BENCH_ASK_RUNS` (default 15) runs, after
//! a warm-up of each. The model's own time to first token varies by more than the overhead, so
//! the part before the model is also measured exactly: from sending the question to `app` to
//! the instant the chat server (in this process) had read the prompt. Goal: under 150 ms at p50
//! (authentication, limits, the question's embedding, the hybrid search, building the prompt).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use platform_core::accounts::Scope;
use platform_core::db::CORE_MIGRATIONS;
use platform_git::records::{self, NewRepo};
use platform_git::store::RepoStore;
use platform_test_support::{
    ChatServer, ServiceProcess, migrated_database, service_env, unique_name, verified_user,
    wait_for_status, workspace_root,
};
use serde_json::{Value, json};

const QUESTION: &str = "How does the indexer decide which files of a push to embed again?";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs: usize =
        std::env::var("BENCH_ASK_RUNS").ok().and_then(|raw| raw.parse().ok()).unwrap_or(15);
    let answer_tokens = 24;
    let chat = ChatServer::start(service_env("PLATFORM_TEST_CHAT_MODEL_DIR").as_ref()).await?;
    let (database_url, database) = migrated_database([
        CORE_MIGRATIONS,
        platform_git::GIT_MIGRATIONS,
        platform_storage::STORAGE_MIGRATIONS,
        platform_ai::service::AI_MIGRATIONS,
    ])
    .await?;
    let scratch = std::env::temp_dir().join(unique_name("bench-ask"));
    let repos = scratch.join("repos");
    std::fs::create_dir_all(&repos)?;
    let (user_id, token) = verified_user(
        &database,
        "bench",
        "unused",
        &[Scope::RepoRead, Scope::RepoWrite, Scope::Admin],
    )
    .await?;
    let mut conn = database.get().await?;
    let new = NewRepo {
        owner_id: user_id,
        name: "ai",
        description: "",
        is_private: false,
        default_branch: "main",
        forked_from: None,
    };
    records::insert(&mut conn, new).await?;
    drop(conn);
    let store = RepoStore::new(&repos);
    let bare = store.create("bench", "ai", "main").await?;
    let head = push_sources(&scratch.join("work"), &bare)?;

    let dir = |name: &str| scratch.join(name).display().to_string();
    let env = HashMap::from([
        ("APP_DATABASE_URL".to_owned(), database_url),
        ("APP_REDIS_URL".to_owned(), service_env("PLATFORM_TEST_REDIS_URL")),
        ("NATS_URL".to_owned(), service_env("PLATFORM_TEST_NATS_URL")),
        ("APP_DOMAIN_URL".to_owned(), "http://forge.test".to_owned()),
        ("APP_SESSION_SECRET".to_owned(), "a-bench-session-secret-of-at-least-32-bytes".to_owned()),
        ("APP_REPOS_ROOT".to_owned(), dir("repos")),
        ("APP_AVATAR_PATH".to_owned(), dir("avatars")),
        ("STORAGE_PATH".to_owned(), dir("files")),
        ("APP_AI_BASIC_URL".to_owned(), chat.url().to_owned()),
        ("APP_AI_API_KEY".to_owned(), "sk-bench".to_owned()),
        ("APP_AI_CHAT_MODEL".to_owned(), "smollm2-135m".to_owned()),
        ("APP_AI_CONTEXT_TOKENS".to_owned(), "1000".to_owned()),
        ("APP_AI_ANSWER_TOKENS".to_owned(), answer_tokens.to_string()),
        ("APP_AI_ASKS_PER_MINUTE".to_owned(), "1000".to_owned()),
        ("APP_AI_DAILY_TOKENS".to_owned(), "100000000".to_owned()),
        ("APP_EMBED_MODEL_PATH".to_owned(), service_env("PLATFORM_TEST_EMBED_MODEL_DIR")),
        ("APP_CODE_INDEX_PATH".to_owned(), dir("code-index")),
    ]);
    let binary = std::env::var("APP_BIN")
        .map(Into::into)
        .unwrap_or_else(|_| workspace_root().join("target/debug/app"));
    let app = ServiceProcess::start(&binary, &env).await.context("starting app")?;
    wait_for_status(&app.url("/readyz"), 200, Duration::from_secs(60)).await?;

    let client = reqwest::Client::new();
    let reindex = client
        .post(app.url("/api/repos/bench/ai/code-index/reindex"))
        .bearer_auth(&token)
        .send()
        .await?;
    anyhow::ensure!(reindex.status() == 202, "reindex answered {}", reindex.status());
    let indexed = Instant::now();
    let chunks = loop {
        let status: Value = client
            .get(app.url("/api/repos/bench/ai/code-index"))
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        if status["indexed_commit"] == head.as_str() {
            break status["chunks"].as_i64().unwrap_or(0);
        }
        anyhow::ensure!(indexed.elapsed() < Duration::from_secs(900), "not indexed: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("indexed {chunks} chunks in {:.0} s", indexed.elapsed().as_secs_f64());

    let mut through_app = Vec::new();
    let mut direct = Vec::new();
    let mut prompt_ready = Vec::new();
    let mut prompt_tokens = 0;
    let mut sources = 0;
    for run in 0..=runs {
        let started = Instant::now();
        let (first, total, done) = ask_app(&client, &app, &token, started).await?;
        let sent = chat.recorded().last().cloned().context("no prompt recorded")?;
        let before_model = sent.received_at.saturating_duration_since(started);
        let body = json!({
            "model": sent.model,
            "messages": sent.messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect::<Vec<_>>(),
            "max_completion_tokens": sent.max_tokens,
            "stream": true,
            "stream_options": {"include_usage": true},
            "temperature": 0.0,
        });
        let (direct_first, direct_total, text) = ask_direct(&client, &chat, &body).await?;
        anyhow::ensure!(
            text == done["answer"].as_str().unwrap_or_default(),
            "the same prompt gave another answer: {text:?} vs {done}"
        );
        if run == 0 {
            continue;
        }
        prompt_tokens = done["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
        sources = done["sources"].as_array().map_or(0, Vec::len);
        through_app.push((first, total));
        prompt_ready.push(before_model);
        direct.push((direct_first, direct_total));
    }
    let median = |values: &mut Vec<Duration>| {
        values.sort();
        values[values.len() / 2]
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut app_first: Vec<_> = through_app.iter().map(|(f, _)| *f).collect();
    let mut app_total: Vec<_> = through_app.iter().map(|(_, t)| *t).collect();
    let mut direct_first: Vec<_> = direct.iter().map(|(f, _)| *f).collect();
    let mut direct_total: Vec<_> = direct.iter().map(|(_, t)| *t).collect();
    let mut overhead_first: Vec<Duration> =
        through_app.iter().zip(&direct).map(|(a, d)| a.0.saturating_sub(d.0)).collect();
    let (af, at, df, dt) = (
        median(&mut app_first),
        median(&mut app_total),
        median(&mut direct_first),
        median(&mut direct_total),
    );
    println!(
        "ask: {runs} runs, prompt {prompt_tokens} tokens ({sources} sources of {chunks} chunks), answer {answer_tokens} tokens"
    );
    println!("| path | first token p50 (ms) | total p50 (ms) |");
    println!("|---|---:|---:|");
    println!("| chat server directly | {:.0} | {:.0} |", ms(df), ms(dt));
    println!("| through app | {:.0} | {:.0} |", ms(af), ms(at));
    println!(
        "| overhead (app - direct) | {:.0} | {:.0} |",
        ms(af.saturating_sub(df)),
        ms(at.saturating_sub(dt))
    );
    println!(
        "median of the per-run first-token overheads: {:.0} ms",
        ms(median(&mut overhead_first))
    );
    let slowest = prompt_ready.iter().max().copied().unwrap_or_default();
    println!(
        "before the model (question sent to app -> prompt read by the chat server): p50 {:.0} ms, \
         max {:.0} ms (goal: under 150 ms p50)",
        ms(median(&mut prompt_ready)),
        ms(slowest)
    );
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// Copies platform-ai's `src/` into a work tree, commits it and pushes it to `bare`; the commit.
fn push_sources(work: &Path, bare: &Path) -> anyhow::Result<String> {
    let source = workspace_root().join("platform-ai/src");
    copy_dir(&source, &work.join("src"))?;
    let git = |args: &[&str]| -> anyhow::Result<String> {
        let output = std::process::Command::new("git")
            .args(args)
            .current_dir(work)
            .env("GIT_AUTHOR_NAME", "Bench")
            .env("GIT_AUTHOR_EMAIL", "bench@example.com")
            .env("GIT_COMMITTER_NAME", "Bench")
            .env("GIT_COMMITTER_EMAIL", "bench@example.com")
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8(output.stdout)?.trim().to_owned())
    };
    git(&["init", "-q", "-b", "main"])?;
    git(&["add", "."])?;
    git(&["commit", "-q", "-m", "sources"])?;
    git(&["push", "-q", &bare.display().to_string(), "main"])?;
    git(&["rev-parse", "HEAD"])
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Reads an SSE body as it arrives, calling `on_data` with each event's name and data until it
/// returns `true`.
async fn read_events(
    mut response: reqwest::Response,
    mut on_data: impl FnMut(&str, &str) -> bool,
) -> anyhow::Result<()> {
    let mut buffer = String::new();
    while let Some(chunk) = response.chunk().await? {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut name = "message";
            let mut data = String::new();
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event: ") {
                    name = value;
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data.push_str(value);
                }
            }
            if on_data(name, &data) {
                return Ok(());
            }
        }
    }
    anyhow::bail!("the stream ended early")
}

async fn ask_app(
    client: &reqwest::Client,
    app: &ServiceProcess,
    token: &str,
    started: Instant,
) -> anyhow::Result<(Duration, Duration, Value)> {
    let response = client
        .post(app.url("/api/repos/bench/ai/ask"))
        .bearer_auth(token)
        .json(&json!({"question": QUESTION, "stream": true}))
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 200,
        "ask answered {}: {}",
        response.status(),
        response.text().await?
    );
    let mut first = None;
    let mut done = Value::Null;
    read_events(response, |name, data| {
        match name {
            "token" => {
                first.get_or_insert_with(|| started.elapsed());
            }
            "done" => {
                done = serde_json::from_str(data).unwrap_or_default();
                return true;
            }
            _ => {}
        }
        false
    })
    .await?;
    let total = started.elapsed();
    Ok((first.context("no token")?, total, done))
}

async fn ask_direct(
    client: &reqwest::Client,
    chat: &ChatServer,
    body: &Value,
) -> anyhow::Result<(Duration, Duration, String)> {
    let started = Instant::now();
    let response = client
        .post(format!("{}/chat/completions", chat.url()))
        .bearer_auth("sk-bench")
        .json(body)
        .send()
        .await?;
    anyhow::ensure!(response.status() == 200, "the chat server answered {}", response.status());
    let mut first = None;
    let mut text = String::new();
    read_events(response, |_, data| {
        if data == "[DONE]" {
            return true;
        }
        let chunk: Value = serde_json::from_str(data).unwrap_or_default();
        if let Some(piece) =
            chunk["choices"][0]["delta"]["content"].as_str().filter(|p| !p.is_empty())
        {
            first.get_or_insert_with(|| started.elapsed());
            text.push_str(piece);
        }
        false
    })
    .await?;
    Ok((first.context("no token")?, started.elapsed(), text))
}
