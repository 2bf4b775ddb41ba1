//! Run with: `WEBHOOK_SECRET=<the hook's secret> cargo run -p example-push-webhook-receiver` (needs
//! nothing else running; point a webhook of the platform at it to see your pushes).
//!
//! Receives the platform's webhooks, checks each one's `X-Hub-Signature-256` against
//! `WEBHOOK_SECRET` and prints one line per pushed commit: short id, author, the message's first
//! line, repository and branch. Listens on `LISTEN_ADDR` (default `127.0.0.1:8099`).

use std::sync::Arc;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Router, routing::post};
use platform_git::signature::verify_hub_signature;
use serde::Deserialize;

/// What this program reads of GitHub's push payload; the other fields are ignored.
#[derive(Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    repository: Repository,
    commits: Vec<Commit>,
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
}

#[derive(Deserialize)]
struct Commit {
    id: String,
    message: String,
    author: Author,
}

#[derive(Deserialize)]
struct Author {
    name: String,
}

async fn receive(State(secret): State<Arc<str>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    // The exact bytes received are checked, before anything is parsed.
    if !verify_hub_signature(&secret, &body, header("x-hub-signature-256").unwrap_or_default()) {
        return StatusCode::UNAUTHORIZED;
    }
    match header("x-github-event") {
        Some("ping") => println!("ping: delivery {}", header("x-github-delivery").unwrap_or("?")),
        Some("push") => {
            let Ok(push) = serde_json::from_slice::<Push>(&body) else {
                return StatusCode::BAD_REQUEST;
            };
            let (repo, branch) = (&push.repository.full_name, push.git_ref.as_str());
            let branch = safe(branch.strip_prefix("refs/heads/").unwrap_or(branch));
            for commit in &push.commits {
                let short = commit.id.get(..7).unwrap_or(&commit.id);
                let author = safe(&commit.author.name);
                let subject = safe(commit.message.lines().next().unwrap_or_default());
                println!("{short} {author}: {subject} (on {repo} {branch})");
            }
        }
        _ => {} // `create`, `delete` and `repository` events are not this program's business.
    }
    StatusCode::NO_CONTENT
}

/// Replaces control characters, so that what a pusher wrote cannot drive the terminal.
fn safe(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '\u{FFFD}' } else { c }).collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secret = std::env::var("WEBHOOK_SECRET")
        .ok()
        .filter(|secret| !secret.is_empty())
        .context("WEBHOOK_SECRET is not set: give it the secret the hook was created with")?;
    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:8099".to_owned());
    let app = Router::new()
        .route("/", post(receive))
        // GitHub caps payloads at 25 MB; a longer body is answered 413.
        .layer(DefaultBodyLimit::max(25 * 1024 * 1024))
        .with_state(Arc::<str>::from(secret));
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("failed to listen on LISTEN_ADDR {addr:?}"))?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
