//! `git_hook` as a process, behind `gitserver` and `app` processes, against real PostgreSQL,
//! NATS and Redis, with pushes made by the real `git` over HTTP and over SSH.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::{Deployment, SECRET, User, assert_signed, git, git_with, json, poll};
use platform_test_support::{Received, Receiver};
use serde_json::Value;

/// The deliveries of `event` whose body has `key` equal to `value`.
fn deliveries<'a>(
    received: &'a [Received],
    event: &str,
    key: &str,
    value: &str,
) -> Vec<&'a Received> {
    received
        .iter()
        .filter(|got| got.header("x-github-event") == Some(event))
        .filter(|got| json(got)[key].as_str() == Some(value))
        .collect()
}

async fn wait_for(
    receiver: &Receiver,
    what: &str,
    found: impl Fn(&[Received]) -> bool,
) -> anyhow::Result<Vec<Received>> {
    poll(Duration::from_secs(60), what, || {
        let received = receiver.received();
        let done = found(&received);
        async move { Ok(done.then_some(received)) }
    })
    .await
}

/// What git says a commit changed against its first parent, as GitHub's lists.
fn changes(
    work: &Path,
    commit: &str,
) -> anyhow::Result<(BTreeSet<String>, BTreeSet<String>, BTreeSet<String>)> {
    let listing =
        git(work, &["diff-tree", "-r", "--no-commit-id", "--name-status", "-M", "--root", commit])?;
    let (mut added, mut removed, mut modified) = Default::default();
    for line in listing.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            [status, old, new] if status.starts_with('R') => {
                BTreeSet::insert(&mut removed, (*old).to_owned());
                BTreeSet::insert(&mut added, (*new).to_owned());
            }
            ["A", path] => {
                BTreeSet::insert(&mut added, (*path).to_owned());
            }
            ["D", path] => {
                BTreeSet::insert(&mut removed, (*path).to_owned());
            }
            [_, path] => {
                BTreeSet::insert(&mut modified, (*path).to_owned());
            }
            _ => anyhow::bail!("unexpected diff-tree line {line:?}"),
        }
    }
    Ok((added, removed, modified))
}

fn listed(value: &Value) -> BTreeSet<String> {
    value.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
}

/// The push payload says what `git log before..after` and `git diff-tree` say.
fn assert_matches_git(work: &Path, push: &Value, range: &str) -> anyhow::Result<()> {
    let expected: Vec<String> =
        git(work, &["rev-list", "--reverse", range])?.lines().map(str::to_owned).collect();
    let commits = push["commits"].as_array().expect("commits");
    let ids: Vec<&str> = commits.iter().filter_map(|commit| commit["id"].as_str()).collect();
    assert_eq!(ids, expected, "commits of {range}");
    for commit in commits {
        let id = commit["id"].as_str().expect("id");
        let (added, removed, modified) = changes(work, id)?;
        assert_eq!(listed(&commit["added"]), added, "added by {id}");
        assert_eq!(listed(&commit["removed"]), removed, "removed by {id}");
        assert_eq!(listed(&commit["modified"]), modified, "modified by {id}");
        let message = git(work, &["log", "-1", "--format=%B", id])?;
        assert_eq!(
            commit["message"].as_str().map(str::trim_end),
            Some(message.trim_end()),
            "message of {id}"
        );
        assert_eq!(
            commit["tree_id"].as_str(),
            Some(git(work, &["rev-parse", &format!("{id}^{{tree}}")])?.as_str())
        );
        assert_eq!(commit["author"]["email"], "ada@example.com");
    }
    assert_eq!(push["head_commit"]["id"], push["after"]);
    Ok(())
}

async fn create_hook(
    app: &platform_test_support::ServiceProcess,
    owner: &User,
    repo: &str,
    url: &str,
) -> anyhow::Result<Value> {
    let response = reqwest::Client::new()
        .post(app.url(&format!("/api/repos/{repo}/hooks")))
        .bearer_auth(&owner.token)
        .json(&serde_json::json!({
            "name": "web",
            "config": { "url": url, "content_type": "json", "secret": SECRET },
            "events": ["*"],
        }))
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await?;
    anyhow::ensure!(status == 201, "creating the hook answered {status}: {text}");
    assert!(!text.contains(SECRET), "the secret came back: {text}");
    Ok(serde_json::from_str(&text)?)
}

#[tokio::test(flavor = "multi_thread")]
async fn pushes_over_http_and_ssh_reach_a_receiver_as_github_sends_them() -> anyhow::Result<()> {
    let deployment = Deployment::new().await?;
    let ada = deployment.user("ada", true).await?;
    let repo_id = deployment.repo(&ada, "engine", false).await?;
    let app = deployment.app().await?;
    let gitserver = deployment.gitserver().await?;
    let hook_worker = deployment.git_hook(&[]).await?;
    let receiver = Receiver::start("127.0.0.1:0").await?;
    let hook = create_hook(&app, &ada, "ada/engine", &receiver.url("/hook")).await?;
    assert_eq!(hook["config"]["has_secret"], true);

    let received = wait_for(&receiver, "the ping", |got| !got.is_empty()).await?;
    assert_eq!(received[0].header("x-github-event"), Some("ping"));
    assert_eq!(received[0].header("content-type"), Some("application/json"));
    assert!(received[0].header("user-agent").is_some_and(|agent| agent.contains("Hookshot")));
    assert_signed(&received[0], SECRET);
    assert_eq!(json(&received[0])["hook_id"], hook["id"]);

    // Over HTTP: a first branch `trunk` in a repository whose default branch `main` does not
    // exist, with adds, a change, a removal and a rename.
    let work = deployment.scratch.join("work");
    std::fs::create_dir_all(&work)?;
    git(&work, &["init", "--quiet", "--initial-branch=trunk"])?;
    std::fs::write(work.join("README.md"), "# engine\n")?;
    std::fs::write(work.join("lib.rs"), "pub fn run() {}\n")?;
    git(&work, &["add", "."])?;
    git(&work, &["commit", "--quiet", "-m", "Start"])?;
    std::fs::write(work.join("lib.rs"), "pub fn run() { loop {} }\n")?;
    std::fs::write(work.join("notes.txt"), "notes\n")?;
    git(&work, &["add", "."])?;
    git(&work, &["commit", "--quiet", "-m", "Run forever\n\nWith a body."])?;
    git(&work, &["mv", "notes.txt", "NOTES.md"])?;
    git(&work, &["rm", "--quiet", "README.md"])?;
    git(&work, &["commit", "--quiet", "-m", "Rename the notes"])?;
    let http = deployment.http_url(&gitserver, &ada, "ada/engine");
    git(&work, &["push", "--quiet", &http, "trunk"])?;
    let first = git(&work, &["rev-parse", "trunk"])?;

    let received = wait_for(&receiver, "create and push of trunk", |got| {
        !deliveries(got, "push", "after", &first).is_empty()
            && !deliveries(got, "create", "ref", "trunk").is_empty()
    })
    .await?;
    let push = deliveries(&received, "push", "after", &first)[0];
    assert_signed(push, SECRET);
    let body = json(push);
    assert_eq!(body["ref"], "refs/heads/trunk");
    assert_eq!(body["created"], true);
    assert_eq!(body["deleted"], false);
    assert_eq!(body["forced"], false);
    assert_eq!(body["before"], "0000000000000000000000000000000000000000");
    assert_eq!(body["repository"]["full_name"], "ada/engine");
    assert_eq!(body["pusher"]["name"], "ada");
    assert_eq!(body["sender"]["login"], "ada");
    assert_matches_git(&work, &body, "trunk")?;
    let create = json(deliveries(&received, "create", "ref", "trunk")[0]);
    assert_eq!(create["ref_type"], "branch");

    // The first push made `trunk` the default branch; the counts and languages follow.
    let repository: Value = poll(Duration::from_secs(30), "the repository's metadata", || {
        let url = app.url("/api/repos/ada/engine");
        let token = ada.token.clone();
        async move {
            let shown: Value =
                reqwest::Client::new().get(url).bearer_auth(token).send().await?.json().await?;
            Ok((shown["push_count"] == 1).then_some(shown))
        }
    })
    .await?;
    assert_eq!(repository["default_branch"], "trunk");
    assert_eq!(repository["branch_count"], 1);
    assert_eq!(repository["language"], "Rust");
    let head = std::fs::read_to_string(deployment.repos().join("ada/engine.git/HEAD"))?;
    assert_eq!(head.trim(), "ref: refs/heads/trunk");

    // Over SSH: two more commits on trunk, a new branch and a tag.
    let before = first.clone();
    std::fs::write(work.join("lib.rs"), "pub fn run() -> u8 { 0 }\n")?;
    git(&work, &["commit", "--quiet", "-am", "Return"])?;
    std::fs::write(work.join("main.rs"), "fn main() {}\n")?;
    git(&work, &["add", "."])?;
    git(&work, &["commit", "--quiet", "-m", "Add a binary"])?;
    git(&work, &["branch", "feature"])?;
    git(&work, &["tag", "-a", "v1.0", "-m", "First release"])?;
    let ssh = deployment.ssh_url("ada/engine");
    let command = deployment.ssh_command(&ada);
    git_with(
        &work,
        &["push", "--quiet", &ssh, "trunk", "feature", "v1.0"],
        &[("GIT_SSH_COMMAND", &command)],
    )?;
    let after = git(&work, &["rev-parse", "trunk"])?;
    let tag = git(&work, &["rev-parse", "v1.0"])?;
    let received = wait_for(&receiver, "the SSH push's deliveries", |got| {
        !deliveries(got, "push", "ref", "refs/heads/trunk")
            .iter()
            .all(|got| json(got)["after"] != after)
            && !deliveries(got, "push", "ref", "refs/tags/v1.0").is_empty()
            && !deliveries(got, "create", "ref", "feature").is_empty()
            && !deliveries(got, "create", "ref", "v1.0").is_empty()
    })
    .await?;
    let update = deliveries(&received, "push", "after", &after)
        .into_iter()
        .find(|got| json(got)["ref"] == "refs/heads/trunk")
        .expect("the push of trunk");
    assert_signed(update, SECRET);
    let body = json(update);
    assert_eq!(body["before"], before.as_str());
    assert_eq!(body["created"], false);
    assert_eq!(
        body["compare"],
        format!("http://forge.test/ada/engine/compare/{}...{}", &before[..12], &after[..12])
    );
    assert_matches_git(&work, &body, &format!("{before}..{after}"))?;
    let tag_push = json(deliveries(&received, "push", "ref", "refs/tags/v1.0")[0]);
    assert_eq!(tag_push["after"], tag.as_str());
    assert_eq!(json(deliveries(&received, "create", "ref", "v1.0")[0])["ref_type"], "tag");

    // A forced push and a deletion, over HTTP.
    git(&work, &["checkout", "--quiet", "feature"])?;
    git(&work, &["reset", "--quiet", "--hard", "HEAD~1"])?;
    std::fs::write(work.join("other.rs"), "// other\n")?;
    git(&work, &["add", "."])?;
    git(&work, &["commit", "--quiet", "-m", "Another way"])?;
    git(&work, &["push", "--quiet", "--force", &http, "feature"])?;
    let rewritten = git(&work, &["rev-parse", "feature"])?;
    git(&work, &["push", "--quiet", &http, ":refs/tags/v1.0", ":refs/heads/feature"])?;
    let received = wait_for(&receiver, "the forced push and the deletions", |got| {
        !deliveries(got, "push", "after", &rewritten).is_empty()
            && !deliveries(got, "delete", "ref", "v1.0").is_empty()
            && !deliveries(got, "delete", "ref", "feature").is_empty()
    })
    .await?;
    assert_eq!(json(deliveries(&received, "delete", "ref", "feature")[0])["ref_type"], "branch");
    let branch_deleted = deliveries(&received, "push", "ref", "refs/heads/feature")
        .into_iter()
        .map(json)
        .find(|body| body["deleted"] == true)
        .expect("the push deleting the branch");
    assert_eq!(branch_deleted["before"], rewritten.as_str());
    assert_eq!(json(deliveries(&received, "push", "after", &rewritten)[0])["forced"], true);
    let deletion = deliveries(&received, "push", "ref", "refs/tags/v1.0")
        .into_iter()
        .map(json)
        .find(|body| body["deleted"] == true)
        .expect("the push deleting the tag");
    assert_eq!(deletion["after"], "0000000000000000000000000000000000000000");
    assert_eq!(deletion["head_commit"], Value::Null);
    assert_eq!(json(deliveries(&received, "delete", "ref", "v1.0")[0])["ref_type"], "tag");

    // Changes to the repository itself: an edit and a rename.
    let client = reqwest::Client::new();
    let edited = client
        .patch(app.url("/api/repos/ada/engine"))
        .bearer_auth(&ada.token)
        .json(&serde_json::json!({ "description": "Runs forever" }))
        .send()
        .await?;
    assert_eq!(edited.status(), 200);
    let renamed = client
        .post(app.url("/api/repos/ada/engine/rename"))
        .bearer_auth(&ada.token)
        .json(&serde_json::json!({ "name": "motor" }))
        .send()
        .await?;
    assert_eq!(renamed.status(), 200);
    let received = wait_for(&receiver, "the repository events", |got| {
        !deliveries(got, "repository", "action", "edited").is_empty()
            && !deliveries(got, "repository", "action", "renamed").is_empty()
    })
    .await?;
    let edit = json(deliveries(&received, "repository", "action", "edited")[0]);
    assert_eq!(edit["changes"]["description"]["from"], "");
    assert_eq!(edit["repository"]["description"], "Runs forever");
    let rename = deliveries(&received, "repository", "action", "renamed")[0];
    assert_signed(rename, SECRET);
    let rename = json(rename);
    assert_eq!(rename["changes"]["repository"]["name"]["from"], "engine");
    assert_eq!(rename["repository"]["full_name"], "ada/motor");

    // What the worker counted.
    let metrics = reqwest::get(hook_worker.url("/metrics")).await?.text().await?;
    for expected in [
        "push_reactions_total{kind=\"webhooks\",result=\"done\"}",
        "push_reactions_total{kind=\"metadata\",result=\"done\"}",
        "push_reactions_total{kind=\"notifications\",result=\"done\"}",
        "webhook_deliveries_total{event=\"push\",outcome=\"delivered\"}",
        "webhook_delivery_duration_seconds_count",
        "webhook_delivery_lag_seconds",
        "push_queue_lag_seconds",
    ] {
        assert!(metrics.contains(expected), "{expected} missing from\n{metrics}");
    }

    // Every delivery arrived once: none of them twice.
    let ids: Vec<&str> =
        received.iter().filter_map(|got| got.header("x-github-delivery")).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "a delivery arrived twice");
    let _ = repo_id;
    Ok(())
}
