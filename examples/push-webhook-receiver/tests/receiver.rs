//! The receiver as a real process: signed deliveries are printed, forged ones are refused.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use platform_git::signature::signature_headers;
use serde_json::json;

const PROGRAM: &str = env!("CARGO_BIN_EXE_example-push-webhook-receiver");
const SECRET: &str = "It's a Secret to Everybody";

/// The receiver, killed when dropped, with its standard output line by line.
struct Receiver {
    child: Child,
    lines: mpsc::Receiver<String>,
    url: String,
}

impl Receiver {
    /// Starts the program with `WEBHOOK_SECRET=secret` on a port the system picks.
    fn start(secret: &str) -> anyhow::Result<Self> {
        let mut child = Command::new(PROGRAM)
            .env_clear()
            .env("WEBHOOK_SECRET", secret)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut receiver = Self { child, lines, url: String::new() };
        let first = receiver.next_line()?;
        let addr = first.strip_prefix("listening on ").ok_or_else(|| {
            anyhow::anyhow!("expected the listening address first, got {first:?}")
        })?;
        receiver.url = format!("http://{addr}/");
        Ok(receiver)
    }

    /// The next line printed, waiting up to 10 seconds for it.
    fn next_line(&self) -> anyhow::Result<String> {
        self.lines
            .recv_timeout(Duration::from_secs(10))
            .map_err(|error| anyhow::anyhow!("no line from the receiver: {error}"))
    }

    /// Posts `body` as `event` with the headers the platform sends, signed as `signed` would
    /// be with `secret` (no signature for `None`); returns the answer's status.
    async fn send(
        &self,
        event: &str,
        body: &[u8],
        secret: Option<&str>,
        signed: &[u8],
    ) -> anyhow::Result<u16> {
        let delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
        let mut request = reqwest::Client::new()
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("X-GitHub-Event", event)
            .header("X-GitHub-Delivery", delivery)
            .body(body.to_vec());
        for (name, value) in signature_headers(secret, delivery, 1_700_000_000, signed) {
            request = request.header(name, value);
        }
        Ok(request.send().await?.status().as_u16())
    }

    /// Posts `body` as `event`, signed with `secret` as the platform signs it.
    async fn post(&self, event: &str, body: &[u8], secret: Option<&str>) -> anyhow::Result<u16> {
        self.send(event, body, secret, body).await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn push_payload(commits: &[(&str, &str, &str)]) -> Vec<u8> {
    let commits: Vec<_> = commits
        .iter()
        .map(|(id, author, message)| {
            json!({
                "id": id,
                "tree_id": "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
                "distinct": true,
                "message": message,
                "timestamp": "2026-12-02T15:27:39Z",
                "author": {"name": author, "email": "alice@example.com", "username": "alice"},
                "committer": {"name": author, "email": "alice@example.com", "username": "alice"},
                "added": ["README.md"],
                "removed": [],
                "modified": [],
            })
        })
        .collect();
    let body = json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": commits.last().map_or(json!(null), |commit| commit["id"].clone()),
        "repository": {"id": 1, "name": "demo", "full_name": "alice/demo"},
        "pusher": {"name": "alice", "email": "alice@example.com"},
        "created": true,
        "deleted": false,
        "forced": false,
        "commits": commits,
        "total_commits": commits.len(),
    });
    serde_json::to_vec(&body).expect("a JSON value serializes")
}

#[tokio::test]
async fn signed_pushes_are_printed_and_forged_ones_refused() -> anyhow::Result<()> {
    let receiver = Receiver::start(SECRET)?;

    assert_eq!(
        receiver.post("ping", br#"{"zen":"Prefer the simple tree."}"#, Some(SECRET)).await?,
        204
    );
    assert_eq!(receiver.next_line()?, "ping: delivery 72d3162e-cc78-11e3-81ab-4c9367dc0958");

    let push = push_payload(&[
        ("1f3a9c0d2b4e6f8a0c2e4a6c8e0a2c4e6a8c0e2a", "Alice Liddell", "Add the README"),
        ("9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d", "Bob", "Fix the build\n\nIt was broken."),
        ("5d41402abc4b2a76b9719d911017c592a1b2c3d4", "Eve\u{7}", "Clear\u{1b}[2J it\r\nall"),
    ]);
    assert_eq!(receiver.post("push", &push, Some(SECRET)).await?, 204);
    assert_eq!(receiver.next_line()?, "1f3a9c0 Alice Liddell: Add the README (on alice/demo main)");
    assert_eq!(receiver.next_line()?, "9e8d7c6 Bob: Fix the build (on alice/demo main)");
    // Control characters are not passed to the terminal.
    assert_eq!(
        receiver.next_line()?,
        "5d41402 Eve\u{FFFD}: Clear\u{FFFD}[2J it (on alice/demo main)"
    );

    // Signed with another secret, unsigned, or signed for other bytes: refused, nothing printed.
    let forged = push_payload(&[("abcdef0123456789abcdef0123456789abcdef01", "Mallory", "Forged")]);
    assert_eq!(receiver.post("push", &forged, Some("guessed")).await?, 401);
    assert_eq!(receiver.post("push", &forged, None).await?, 401);
    let signed = push_payload(&[("abcdef0123456789abcdef0123456789abcdef01", "Alice", "Real")]);
    assert_eq!(receiver.send("push", &forged, Some(SECRET), &signed).await?, 401);

    // Signed, but not a push payload.
    assert_eq!(receiver.post("push", br#"{"zen":"not a push"}"#, Some(SECRET)).await?, 400);
    assert_eq!(receiver.post("push", b"payload=%7B%7D", Some(SECRET)).await?, 400);

    // Longer than GitHub's cap on payloads: refused unread, whatever its signature.
    let huge = vec![b' '; 25 * 1024 * 1024 + 1];
    assert_eq!(receiver.post("push", &huge, Some(SECRET)).await?, 413);

    // The next line printed is the next accepted delivery's: nothing came of the refused ones.
    let last = push_payload(&[("0123456789abcdef0123456789abcdef01234567", "Carol", "Last one")]);
    assert_eq!(receiver.post("push", &last, Some(SECRET)).await?, 204);
    assert_eq!(receiver.next_line()?, "0123456 Carol: Last one (on alice/demo main)");
    Ok(())
}

#[test]
fn without_a_secret_it_refuses_to_start_and_names_the_variable() -> anyhow::Result<()> {
    let output = Command::new(PROGRAM).env_clear().env("LISTEN_ADDR", "127.0.0.1:0").output()?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("WEBHOOK_SECRET is not set"), "stderr: {stderr}");
    Ok(())
}
