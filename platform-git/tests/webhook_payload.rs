//! Webhook payloads against git itself: repositories made and pushed to by the real `git`, each
//! payload's commits, paths, flags, people and times compared with what git prints for the same
//! push (`git rev-list`, `git diff-tree -M`, `git log`, `git merge-base`).

use std::cell::Cell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, Utc};
use gix::bstr::ByteSlice;
use platform_git::browse::{Browser, Limits, Repo};
use platform_git::events::{PushEvent, RefChange};
use platform_git::records::RepoRecord;
use platform_git::webhooks::HookEvent;
use platform_git::webhooks::payload::{
    EventPayload, MAX_PAYLOAD_COMMITS, PayloadContext, Person, ping_payload, push_payloads,
    push_payloads_blocking,
};
use serde_json::{Value, json};

const ZERO: &str = "0000000000000000000000000000000000000000";
const PUBLIC: &str = "https://forge.example.com";
const HTML: &str = "https://forge.example.com/ada/engine";

/// Runs git isolated from the caller's configuration, failing the test when git fails.
fn git_in(dir: &Path, env: &[(&str, String)], args: &[&str]) -> String {
    let mut command = Command::new("git");
    command
        .arg("-C")
        .arg(dir)
        .args(["-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false"])
        .args(["-c", "tag.gpgsign=false", "-c", "gc.auto=0", "-c", "core.symlinks=true"])
        .args(["-c", "core.fileMode=true", "-c", "core.quotePath=false"])
        .args(args)
        .env("HOME", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("LC_ALL", "C")
        .env("GIT_AUTHOR_NAME", "Zoë Author")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Cole Committer")
        .env("GIT_COMMITTER_EMAIL", "cole@example.com");
    for var in ["GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY"] {
        command.env_remove(var);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("git runs");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A working repository and the bare repository it pushes to (the forge's copy).
struct Forge {
    _dir: tempfile::TempDir,
    work: PathBuf,
    bare: PathBuf,
    /// Seconds since the epoch of the next commit: every commit a minute after the last.
    clock: Cell<i64>,
}

impl Forge {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let work = dir.path().join("work");
        let bare = dir.path().join("engine.git");
        git_in(dir.path(), &[], &["init", "-q", "work"]);
        git_in(dir.path(), &[], &["init", "-q", "--bare", "engine.git"]);
        Self { _dir: dir, work, bare, clock: Cell::new(1_704_067_200) }
    }

    fn work(&self, args: &[&str]) -> String {
        git_in(&self.work, &self.dates("+0000"), args)
    }

    fn server(&self, args: &[&str]) -> String {
        git_in(&self.bare, &[], args)
    }

    /// The dates of a commit now: committed in time zone `zone`, written two hours earlier in
    /// another one (so a payload cannot pass off the author's time as the committer's).
    fn dates(&self, zone: &str) -> Vec<(&'static str, String)> {
        let now = self.clock.get();
        vec![
            ("GIT_AUTHOR_DATE", format!("{} +0100", now - 7200)),
            ("GIT_COMMITTER_DATE", format!("{now} {zone}")),
        ]
    }

    fn write(&self, path: &str, content: &str) {
        let path = self.work.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("a directory");
        std::fs::write(path, content).expect("a file");
    }

    /// Commits everything, in time zone `zone`; returns the commit's id.
    fn commit_in(&self, zone: &str, message: &str) -> String {
        self.clock.set(self.clock.get() + 60);
        let env = self.dates(zone);
        git_in(&self.work, &env, &["add", "-A"]);
        git_in(&self.work, &env, &["commit", "-q", "--allow-empty", "-m", message]);
        self.work(&["rev-parse", "HEAD"]).trim().to_owned()
    }

    fn commit(&self, message: &str) -> String {
        self.commit_in("+0000", message)
    }

    fn server_refs(&self) -> Vec<(String, String)> {
        self.server(&["for-each-ref", "--format=%(refname) %(objectname)"])
            .lines()
            .filter_map(|line| line.split_once(' '))
            .map(|(name, id)| (name.to_owned(), id.to_owned()))
            .collect()
    }

    /// Pushes `refspecs` (forced) and returns the push event the forge would publish.
    fn push(&self, refspecs: &[&str]) -> PushEvent {
        let before = self.server_refs();
        let bare = self.bare.to_str().expect("a UTF-8 path");
        let mut args = vec!["push", "-q", "--force", bare];
        args.extend(refspecs);
        self.work(&args);
        let after = self.server_refs();
        let names: BTreeSet<&String> = before.iter().chain(&after).map(|(name, _)| name).collect();
        let id_in = |refs: &[(String, String)], name: &str| {
            refs.iter().find(|(n, _)| n == name).map_or(ZERO.to_owned(), |(_, id)| id.clone())
        };
        let refs = names
            .into_iter()
            .map(|name| RefChange {
                name: name.clone(),
                old: id_in(&before, name),
                new: id_in(&after, name),
            })
            .filter(|change| change.old != change.new)
            .collect();
        PushEvent {
            id: uuid::Uuid::new_v4(),
            repository_id: 42,
            repository: "ada/engine".to_owned(),
            pusher_id: 7,
            pusher: "ada".to_owned(),
            refs,
            pushed_at: DateTime::from_timestamp(self.clock.get() + 30, 0).expect("a time"),
            sequence: None,
        }
    }

    fn payloads(&self, event: &PushEvent, max_commits: usize) -> Vec<EventPayload> {
        let repo = Repo::open(&self.bare, Limits::default()).expect("the repository opens");
        let mut context = context();
        context.max_commits = max_commits;
        push_payloads_blocking(&repo, event, &context).expect("payloads")
    }

    /// `git rev-list --reverse <args>` in the forge's repository.
    fn rev_list(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec!["rev-list", "--reverse"];
        all.extend(args);
        self.server(&all).lines().map(str::to_owned).collect()
    }

    /// The forge's branches and tags other than `name`, for `git rev-list ... --not`.
    fn other_refs(&self, name: &str) -> Vec<String> {
        self.server_refs()
            .into_iter()
            .map(|(other, _)| other)
            .filter(|other| other != name)
            .collect()
    }
}

fn record() -> RepoRecord {
    let at = |seconds| DateTime::<Utc>::from_timestamp(seconds, 0).expect("a time");
    RepoRecord {
        id: 42,
        owner_id: 7,
        owner: "ada".to_owned(),
        name: "engine".to_owned(),
        description: "A small engine".to_owned(),
        is_private: false,
        default_branch: "main".to_owned(),
        created_at: at(1_700_000_000),
        updated_at: at(1_700_000_100),
        size_bytes: 4097,
        pushed_at: Some(at(1_700_000_200)),
        forked_from: None,
        private_lineage: false,
        push_count: 3,
        branch_count: 1,
        tag_count: 0,
        language: Some("Rust".to_owned()),
    }
}

fn context() -> PayloadContext {
    let sender = Person {
        login: "ada".to_owned(),
        id: 7,
        email: Some("ada@example.com".to_owned()),
        avatar_url: None,
    };
    let mut context = PayloadContext::new(record(), PUBLIC.parse().expect("a URL"), sender);
    context.ssh_url = Some("ssh://git@forge.example.com/ada/engine.git".to_owned());
    context
}

/// The payload of `event` for `ref_name`, which must be the only one.
fn find<'a>(payloads: &'a [EventPayload], event: HookEvent, ref_name: &str) -> &'a Value {
    let found: Vec<&EventPayload> = payloads
        .iter()
        .filter(|p| p.event == event && p.ref_name.as_deref() == Some(ref_name))
        .collect();
    assert_eq!(found.len(), 1, "{event} payloads of {ref_name}");
    &found[0].body
}

fn events_of(payloads: &[EventPayload], ref_name: &str) -> Vec<HookEvent> {
    payloads.iter().filter(|p| p.ref_name.as_deref() == Some(ref_name)).map(|p| p.event).collect()
}

fn ids(push: &Value) -> Vec<String> {
    push["commits"]
        .as_array()
        .expect("commits")
        .iter()
        .map(|commit| commit["id"].as_str().expect("an id").to_owned())
        .collect()
}

fn strings(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|path| path.as_str().expect("a path").to_owned())
        .collect()
}

type Paths = (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>);

/// What `git diff-tree -r -M --name-status` says `commit` did against its first parent (or
/// with `--root`), as GitHub's added, removed and modified: a rename is its old path removed
/// and its new one added; a change of type is a modification.
fn git_paths(repo: &Path, commit: &str) -> Paths {
    let parents = git_in(repo, &[], &["rev-list", "--parents", "-n1", commit]);
    let parent = parents.split_whitespace().nth(1).map(str::to_owned);
    let mut args = vec!["diff-tree", "-r", "-M", "--name-status", "-z", "--no-commit-id"];
    match &parent {
        Some(parent) => args.extend([parent.as_str(), commit]),
        None => args.extend(["--root", commit]),
    }
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(&args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git runs");
    assert!(output.status.success());
    let mut fields = output.stdout.split(|&b| b == 0).filter(|field| !field.is_empty());
    let (mut added, mut removed, mut modified) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let text = |field: &[u8]| field.to_str_lossy().into_owned();
    while let Some(status) = fields.next() {
        let first = text(fields.next().expect("a path"));
        match status[0] {
            b'A' => added.insert(first),
            b'D' => removed.insert(first),
            b'M' | b'T' => modified.insert(first),
            b'R' => {
                removed.insert(first);
                added.insert(text(fields.next().expect("the new path")))
            }
            other => panic!("unexpected status {}", char::from(other)),
        };
    }
    (added, removed, modified)
}

/// Checks every field of a payload commit against git.
fn assert_commit_is_gits(repo: &Path, commit: &Value) {
    let id = commit["id"].as_str().expect("an id");
    let show = |format: &str| git_in(repo, &[], &["log", "-1", &format!("--format={format}"), id]);
    assert_eq!(commit["tree_id"], show("%T").trim(), "tree of {id}");
    assert_eq!(commit["message"], show("%B").trim_end_matches('\n'), "message of {id}");
    assert_eq!(commit["timestamp"], show("%cI").trim(), "timestamp of {id}");
    assert_eq!(commit["url"], format!("{HTML}/commit/{id}"));
    assert_eq!(commit["author"]["name"], show("%an").trim(), "author of {id}");
    assert_eq!(commit["author"]["email"], show("%ae").trim(), "author of {id}");
    assert_eq!(commit["committer"]["name"], show("%cn").trim(), "committer of {id}");
    assert_eq!(commit["committer"]["email"], show("%ce").trim(), "committer of {id}");
    let ours =
        (strings(&commit["added"]), strings(&commit["removed"]), strings(&commit["modified"]));
    assert_eq!(ours, git_paths(repo, id), "added, removed, modified of {id}");
}

/// Checks `commits` and `distinct` of a push to `name` against `git rev-list`.
fn assert_commits_are_gits(forge: &Forge, push: &Value, name: &str, listed: &[&str]) {
    let expected = forge.rev_list(listed);
    assert_eq!(ids(push), expected, "commits of {name}");
    assert_eq!(push["total_commits"], expected.len());
    let mut not_elsewhere: Vec<&str> = listed.to_vec();
    let others = forge.other_refs(name);
    not_elsewhere.push("--not");
    not_elsewhere.extend(others.iter().map(String::as_str));
    let distinct: BTreeSet<String> = forge.rev_list(&not_elsewhere).into_iter().collect();
    for commit in push["commits"].as_array().expect("commits") {
        let id = commit["id"].as_str().expect("an id");
        assert_eq!(commit["distinct"], distinct.contains(id), "distinct of {id}");
        assert_commit_is_gits(&forge.bare, commit);
    }
}

#[test]
fn a_fast_forward_lists_before_to_after_with_their_paths() {
    let forge = Forge::new();
    forge.write("README.md", "# Engine\n");
    forge.write("src/lib.rs", "pub fn one() -> u32 { 1 }\n");
    forge.write("run.sh", "echo run\n");
    forge.write("old/name.txt", "a file that will move\nwith enough lines\nto be found\n");
    let root = forge.commit("Initial commit\n\nWith a body.\n");
    let first = forge.push(&["main"]);
    let payloads = forge.payloads(&first, MAX_PAYLOAD_COMMITS);
    let push = find(&payloads, HookEvent::Push, "refs/heads/main");
    assert_eq!(push["created"], true);
    assert_eq!(push["before"], ZERO);
    assert_eq!(push["after"], root);
    assert_eq!(push["compare"], format!("{HTML}/compare/main"));
    assert_eq!(push["base_ref"], Value::Null);
    assert_commits_are_gits(&forge, push, "refs/heads/main", &["main"]);
    assert_eq!(ids(push), [root.as_str()], "a new repository's first push lists its root");
    assert_eq!(strings(&push["commits"][0]["added"]).len(), 4, "a root commit adds everything");
    assert_eq!(events_of(&payloads, "refs/heads/main"), [HookEvent::Push, HookEvent::Create]);

    // Edits, an addition, a removal, a rename, a mode change and a file turned into a symlink,
    // in several time zones.
    forge.write("src/lib.rs", "pub fn one() -> u32 { 11 }\n");
    forge.write("src/two.rs", "pub fn two() {}\n");
    forge.commit_in("+0200", "Edit lib, add two");
    std::fs::remove_file(forge.work.join("README.md")).expect("removed");
    std::fs::create_dir_all(forge.work.join("new")).expect("a directory");
    forge.work(&["mv", "old/name.txt", "new/name.txt"]);
    forge.commit_in("-0530", "Remove README, move name.txt");
    let script = forge.work.join("run.sh");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("executable");
    std::fs::remove_file(forge.work.join("src/two.rs")).expect("removed");
    std::os::unix::fs::symlink("lib.rs", forge.work.join("src/two.rs")).expect("a symlink");
    let head = forge.commit("Make run.sh executable\n\nAnd src/two.rs a link.\n");
    let update = forge.push(&["main"]);
    let payloads = forge.payloads(&update, MAX_PAYLOAD_COMMITS);
    assert_eq!(events_of(&payloads, "refs/heads/main"), [HookEvent::Push]);
    let push = find(&payloads, HookEvent::Push, "refs/heads/main");
    assert_eq!(push["ref"], "refs/heads/main");
    assert_eq!(push["before"], root);
    assert_eq!(push["after"], head);
    assert_eq!(
        (&push["created"], &push["deleted"], &push["forced"]),
        (&json!(false), &json!(false), &json!(false))
    );
    assert_eq!(push["compare"], format!("{HTML}/compare/{}...{}", &root[..12], &head[..12]));
    assert_commits_are_gits(&forge, push, "refs/heads/main", &[&format!("{root}..{head}")]);
    assert_eq!(ids(push).len(), 3);
    let commits = push["commits"].as_array().expect("commits");
    assert!(commits[0]["timestamp"].as_str().expect("a time").ends_with("+02:00"));
    assert!(commits[1]["timestamp"].as_str().expect("a time").ends_with("-05:30"));
    assert_eq!(
        strings(&commits[1]["removed"]),
        BTreeSet::from(["README.md".to_owned(), "old/name.txt".to_owned()])
    );
    assert_eq!(strings(&commits[1]["added"]), BTreeSet::from(["new/name.txt".to_owned()]));
    assert_eq!(
        strings(&commits[2]["modified"]),
        BTreeSet::from(["run.sh".to_owned(), "src/two.rs".to_owned()])
    );
    assert_eq!(push["head_commit"], commits[2]);
    assert_eq!(push["head_commit"]["id"], head);
    // The sender's own email names them; the committer's is unknown.
    assert_eq!(commits[0]["author"]["username"], "ada");
    assert_eq!(commits[0]["committer"]["username"], Value::Null);

    assert_eq!(push["pusher"], json!({"name": "ada", "email": "ada@example.com"}));
    assert_eq!(push["sender"]["login"], "ada");
    assert_eq!(push["sender"]["id"], 7);
    assert_eq!(push["sender"]["type"], "User");
    let repository = &push["repository"];
    assert_eq!(repository["full_name"], "ada/engine");
    assert_eq!(repository["html_url"], HTML);
    assert_eq!(repository["url"], format!("{PUBLIC}/api/repos/ada/engine"));
    assert_eq!(repository["clone_url"], format!("{HTML}.git"));
    assert_eq!(repository["ssh_url"], "ssh://git@forge.example.com/ada/engine.git");
    assert_eq!(repository["created_at"], 1_700_000_000, "push payloads give seconds");
    assert_eq!(repository["pushed_at"], update.pushed_at.timestamp());
    assert_eq!(repository["updated_at"], "2023-11-14T22:15:00Z");
    assert_eq!(repository["master_branch"], "main");
    assert_eq!(repository["default_branch"], "main");
    assert_eq!(repository["size"], 5, "kilobytes, rounded up");
    assert_eq!(repository["owner"]["login"], "ada");
    assert_eq!(repository["owner"]["email"], "ada@example.com");
    assert_eq!(repository["visibility"], "public");
    assert_eq!(repository["language"], "Rust");
    assert_eq!(repository["private"], false);
}

#[test]
fn a_force_push_is_forced_and_lists_what_is_new() {
    let forge = Forge::new();
    forge.write("a.txt", "a\n");
    forge.commit("One");
    forge.write("a.txt", "b\n");
    let old = forge.commit("Two");
    forge.push(&["main"]);
    forge.work(&["reset", "-q", "--hard", "HEAD~1"]);
    forge.write("b.txt", "c\n");
    forge.commit("Two, again");
    forge.write("b.txt", "d\n");
    let new = forge.commit("Three");
    let event = forge.push(&["main"]);
    let payloads = forge.payloads(&event, MAX_PAYLOAD_COMMITS);
    let push = find(&payloads, HookEvent::Push, "refs/heads/main");
    assert_eq!(push["forced"], true);
    assert_eq!(push["before"], old);
    assert_eq!(push["after"], new);
    assert_commits_are_gits(&forge, push, "refs/heads/main", &[&format!("{old}..{new}")]);
    assert_eq!(ids(push).len(), 2);

    // Back to an ancestor: forced, nothing new, head_commit still told.
    let ancestor = forge.work(&["rev-parse", "HEAD~2"]).trim().to_owned();
    let event = forge.push(&[&format!("{ancestor}:refs/heads/main")]);
    let payloads = forge.payloads(&event, MAX_PAYLOAD_COMMITS);
    let push = find(&payloads, HookEvent::Push, "refs/heads/main");
    assert_eq!(push["forced"], true);
    assert_eq!(ids(push), Vec::<String>::new());
    assert_eq!(push["head_commit"]["id"], ancestor);
    assert_eq!(push["head_commit"]["distinct"], true);
}

#[test]
fn branches_made_moved_and_deleted() {
    let forge = Forge::new();
    forge.write("a.txt", "a\n");
    let main = forge.commit("One");
    forge.push(&["main"]);

    // A new branch at main's tip: nothing new, based on main.
    forge.work(&["branch", "same"]);
    let event = forge.push(&["same"]);
    let payloads = forge.payloads(&event, MAX_PAYLOAD_COMMITS);
    assert_eq!(events_of(&payloads, "refs/heads/same"), [HookEvent::Push, HookEvent::Create]);
    let push = find(&payloads, HookEvent::Push, "refs/heads/same");
    assert_eq!(push["created"], true);
    assert_eq!(push["forced"], false);
    assert_eq!(push["base_ref"], "refs/heads/main");
    assert_eq!(push["compare"], format!("{HTML}/compare/same"));
    assert_eq!(ids(push), Vec::<String>::new());
    assert_eq!(push["head_commit"]["id"], main);
    assert_eq!(push["head_commit"]["distinct"], false, "main has it");
    let create = find(&payloads, HookEvent::Create, "refs/heads/same");
    assert_eq!(create["ref"], "same");
    assert_eq!(create["ref_type"], "branch");
    assert_eq!(create["master_branch"], "main");
    assert_eq!(create["description"], "A small engine");
    assert_eq!(create["pusher_type"], "user");
    assert_eq!(create["sender"]["login"], "ada");
    assert_eq!(create["repository"]["created_at"], "2023-11-14T22:13:20Z", "ISO 8601 outside push");
    assert!(create.get("commits").is_none());
    assert!(create["repository"].get("master_branch").is_none());

    // A new branch with commits of its own: those no other branch or tag has.
    forge.work(&["checkout", "-q", "-b", "feature/x"]);
    forge.write("f.txt", "f\n");
    forge.commit("Feature one");
    forge.write("f.txt", "ff\n");
    let feature = forge.commit("Feature two");
    let event = forge.push(&["feature/x"]);
    let payloads = forge.payloads(&event, MAX_PAYLOAD_COMMITS);
    let push = find(&payloads, HookEvent::Push, "refs/heads/feature/x");
    assert_eq!(push["base_ref"], Value::Null);
    assert_eq!(push["compare"], format!("{HTML}/compare/feature/x"));
    let others = forge.other_refs("refs/heads/feature/x");
    let mut listed = vec![feature.as_str(), "--not"];
    listed.extend(others.iter().map(String::as_str));
    assert_commits_are_gits(&forge, push, "refs/heads/feature/x", &listed);
    assert_eq!(ids(push).len(), 2);

    // main fast-forwards to feature/x: its commits are listed, not distinct (feature/x has
    // them); then one commit only main has.
    forge.work(&["checkout", "-q", "main"]);
    forge.work(&["merge", "-q", "--ff-only", "feature/x"]);
    forge.write("m.txt", "m\n");
    let tip = forge.commit("Main only");
    let event = forge.push(&["main"]);
    let payloads = forge.payloads(&event, MAX_PAYLOAD_COMMITS);
    let push = find(&payloads, HookEvent::Push, "refs/heads/main");
    assert_eq!(push["forced"], false);
    assert_commits_are_gits(&forge, push, "refs/heads/main", &[&format!("{main}..{tip}")]);
    let distinct: Vec<&Value> =
        push["commits"].as_array().expect("commits").iter().map(|c| &c["distinct"]).collect();
    assert_eq!(distinct, [&json!(false), &json!(false), &json!(true)]);

    // Deleting a branch.
    let event = forge.push(&[":feature/x"]);
    let payloads = forge.payloads(&event, MAX_PAYLOAD_COMMITS);
    assert_eq!(events_of(&payloads, "refs/heads/feature/x"), [HookEvent::Push, HookEvent::Delete]);
    let push = find(&payloads, HookEvent::Push, "refs/heads/feature/x");
    assert_eq!(push["deleted"], true);
    assert_eq!(push["created"], false);
    assert_eq!(push["forced"], false);
    assert_eq!(push["before"], feature);
    assert_eq!(push["after"], ZERO);
    assert_eq!(push["compare"], format!("{HTML}/compare/{}...000000000000", &feature[..12]));
    assert_eq!(push["commits"], json!([]));
    assert_eq!(push["total_commits"], 0);
    assert_eq!(push["head_commit"], Value::Null);
    let delete = find(&payloads, HookEvent::Delete, "refs/heads/feature/x");
    assert_eq!(delete["ref"], "feature/x");
    assert_eq!(delete["ref_type"], "branch");
    assert_eq!(delete["pusher_type"], "user");
    assert_eq!(delete["repository"]["full_name"], "ada/engine");
    assert!(delete.get("master_branch").is_none(), "GitHub's delete has no master_branch");
}

#[test]
fn tags_lightweight_and_annotated() {
    let forge = Forge::new();
    forge.write("a.txt", "a\n");
    let main = forge.commit("One");
    forge.push(&["main"]);

    forge.work(&["tag", "v1"]);
    let annotated_env = forge.dates("+0100");
    git_in(&forge.work, &annotated_env, &["tag", "-a", "v1.1", "-m", "Release 1.1"]);
    // An annotated tag of a commit no branch has.
    forge.work(&["checkout", "-q", "--detach"]);
    forge.write("hotfix.txt", "fix\n");
    let hotfix = forge.commit("Hotfix");
    git_in(&forge.work, &annotated_env, &["tag", "-a", "v1.2", "-m", "Hotfix release"]);
    let event = forge.push(&["v1", "v1.1", "v1.2"]);
    assert_eq!(event.refs.len(), 3);
    let payloads = forge.payloads(&event, MAX_PAYLOAD_COMMITS);

    let push = find(&payloads, HookEvent::Push, "refs/tags/v1");
    assert_eq!(push["after"], main);
    assert_eq!(push["created"], true);
    assert_eq!(push["base_ref"], "refs/heads/main");
    assert_eq!(push["compare"], format!("{HTML}/compare/v1"));
    assert_eq!(ids(push), Vec::<String>::new());
    assert_eq!(push["head_commit"]["id"], main);
    let create = find(&payloads, HookEvent::Create, "refs/tags/v1");
    assert_eq!((&create["ref"], &create["ref_type"]), (&json!("v1"), &json!("tag")));

    // `after` is the tag object; the commits are about the commit it tags.
    let v1_1 = forge.server(&["rev-parse", "refs/tags/v1.1"]).trim().to_owned();
    assert_ne!(v1_1, main);
    let push = find(&payloads, HookEvent::Push, "refs/tags/v1.1");
    assert_eq!(push["after"], v1_1);
    assert_eq!(push["base_ref"], "refs/heads/main");
    assert_eq!(push["head_commit"]["id"], main);
    assert_eq!(ids(push), Vec::<String>::new());
    let create = find(&payloads, HookEvent::Create, "refs/tags/v1.1");
    assert_eq!((&create["ref"], &create["ref_type"]), (&json!("v1.1"), &json!("tag")));

    let tag_object = forge.server(&["rev-parse", "refs/tags/v1.2"]).trim().to_owned();
    let push = find(&payloads, HookEvent::Push, "refs/tags/v1.2");
    assert_eq!(push["after"], tag_object);
    assert_eq!(push["base_ref"], Value::Null);
    assert_eq!(ids(push), [hotfix.as_str()]);
    assert_eq!(push["head_commit"]["id"], hotfix);
    assert_eq!(push["head_commit"]["distinct"], true);
    let others = forge.other_refs("refs/tags/v1.2");
    let mut listed = vec!["refs/tags/v1.2^{commit}", "--not"];
    listed.extend(others.iter().map(String::as_str));
    assert_commits_are_gits(&forge, push, "refs/tags/v1.2", &listed);

    // Moving an annotated tag elsewhere, then deleting it.
    forge.work(&["tag", "-f", "-a", "v1.1", "-m", "Moved", &hotfix]);
    let event = forge.push(&["v1.1"]);
    let payloads = forge.payloads(&event, MAX_PAYLOAD_COMMITS);
    assert_eq!(events_of(&payloads, "refs/tags/v1.1"), [HookEvent::Push]);
    let push = find(&payloads, HookEvent::Push, "refs/tags/v1.1");
    assert_eq!(push["forced"], false, "main's tip is an ancestor of the hotfix");
    assert_eq!(push["before"], v1_1);
    assert_ne!(push["after"], v1_1);
    assert_eq!(ids(push), [hotfix.as_str()]);
    assert_eq!(push["commits"][0]["distinct"], false, "v1.2 has it");

    let event = forge.push(&[":refs/tags/v1"]);
    let payloads = forge.payloads(&event, MAX_PAYLOAD_COMMITS);
    assert_eq!(events_of(&payloads, "refs/tags/v1"), [HookEvent::Push, HookEvent::Delete]);
    let delete = find(&payloads, HookEvent::Delete, "refs/tags/v1");
    assert_eq!((&delete["ref"], &delete["ref_type"]), (&json!("v1"), &json!("tag")));
}

#[test]
fn refs_pushed_together_are_measured_against_the_refs_before_the_push() {
    let forge = Forge::new();
    forge.write("a.txt", "a\n");
    let old = forge.commit("One");
    forge.push(&["main"]);
    forge.write("a.txt", "b\n");
    let new = forge.commit("Two");
    forge.work(&["tag", "v2"]);
    forge.work(&["branch", "also"]);
    let event = forge.push(&["main", "v2", "also"]);
    assert_eq!(event.refs.len(), 3);
    let payloads = forge.payloads(&event, MAX_PAYLOAD_COMMITS);
    // Before the push there was only main, at `old`: each of the three brings `new`, and no
    // other ref had it.
    assert_eq!(forge.rev_list(&[&new, "--not", &old]), [new.as_str()]);
    for name in ["refs/heads/main", "refs/tags/v2", "refs/heads/also"] {
        let push = find(&payloads, HookEvent::Push, name);
        assert_eq!(ids(push), [new.as_str()], "commits of {name}");
        assert_eq!(push["commits"][0]["distinct"], true, "distinct in {name}");
        assert_commit_is_gits(&forge.bare, &push["commits"][0]);
    }
    assert_eq!(find(&payloads, HookEvent::Push, "refs/tags/v2")["base_ref"], "refs/heads/main");
    assert_eq!(find(&payloads, HookEvent::Push, "refs/heads/also")["base_ref"], "refs/heads/main");
    assert_eq!(find(&payloads, HookEvent::Push, "refs/heads/main")["base_ref"], Value::Null);
}

#[test]
fn past_the_cap_the_newest_commits_are_listed_and_all_counted() {
    let forge = Forge::new();
    forge.write("n.txt", "0\n");
    let base = forge.commit("Base");
    forge.push(&["main"]);
    for n in 1..=12 {
        forge.write("n.txt", &format!("{n}\n"));
        forge.commit(&format!("Commit {n}"));
    }
    let event = forge.push(&["main"]);
    let payloads = forge.payloads(&event, 5);
    let push = find(&payloads, HookEvent::Push, "refs/heads/main");
    let all = forge.rev_list(&[&format!("{base}..main")]);
    assert_eq!(all.len(), 12);
    assert_eq!(push["total_commits"], 12);
    assert_eq!(ids(push), all[7..], "the newest five, oldest first");
    assert_eq!(push["head_commit"]["id"], all[11]);
    for commit in push["commits"].as_array().expect("commits") {
        assert_commit_is_gits(&forge.bare, commit);
    }
}

/// The browsing fixture (merges, renames, type changes, a submodule, binary files, non-UTF-8
/// names): a push of main from v0.1, every commit checked against git.
#[test]
fn a_push_of_the_browse_fixture_equals_git() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/browse-history.sh");
    let status = Command::new("bash").arg(script).arg(dir.path()).status().expect("bash runs");
    assert!(status.success(), "the fixture script failed");
    let path = dir.path().join("history.git");
    let rev = |name: &str| git_in(&path, &[], &["rev-parse", name]).trim().to_owned();
    let (old, new) = (rev("v0.1"), rev("main"));
    let event = PushEvent {
        id: uuid::Uuid::new_v4(),
        repository_id: 42,
        repository: "ada/engine".to_owned(),
        pusher_id: 7,
        pusher: "ada".to_owned(),
        refs: vec![RefChange {
            name: "refs/heads/main".to_owned(),
            old: old.clone(),
            new: new.clone(),
        }],
        pushed_at: Utc::now(),
        sequence: None,
    };
    let repo = Repo::open(&path, Limits::default()).expect("the repository opens");
    let payloads = push_payloads_blocking(&repo, &event, &context()).expect("payloads");
    let push = find(&payloads, HookEvent::Push, "refs/heads/main");
    let rev_list = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["rev-list", "--reverse"];
        all.extend(args);
        git_in(&path, &[], &all).lines().map(str::to_owned).collect()
    };
    let expected = rev_list(&[&format!("{old}..{new}")]);
    assert!(expected.len() > 20);
    assert_eq!(ids(push), expected);
    assert_eq!(push["forced"], false);
    let others: Vec<String> = git_in(&path, &[], &["for-each-ref", "--format=%(refname)"])
        .lines()
        .filter(|name| *name != "refs/heads/main")
        .map(str::to_owned)
        .collect();
    let mut args = vec![format!("{old}..{new}"), "--not".to_owned()];
    args.extend(others);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let distinct: BTreeSet<String> = rev_list(&args).into_iter().collect();
    assert!(!distinct.is_empty() && distinct.len() < expected.len());
    let mut seen_rename = false;
    for commit in push["commits"].as_array().expect("commits") {
        let id = commit["id"].as_str().expect("an id");
        assert_eq!(commit["distinct"], distinct.contains(id), "distinct of {id}");
        assert_commit_is_gits(&path, commit);
        seen_rename |= strings(&commit["added"]).contains("COPYING");
    }
    assert!(seen_rename, "the fixture renames LICENSE to COPYING");
}

#[tokio::test]
async fn payloads_through_a_browser_and_usernames() {
    let forge = Forge::new();
    forge.write("a.txt", "a\n");
    forge.commit("One");
    let event = forge.push(&["main"]);
    let browser = Browser::new(Limits::default());
    let mut payloads =
        push_payloads(&browser, forge.bare.clone(), &event, &context()).await.expect("payloads");
    assert_eq!(payloads.len(), 2);
    let push = &mut payloads[0];
    assert_eq!(push.event, HookEvent::Push);
    assert_eq!(push.unresolved_emails(), BTreeSet::from(["cole@example.com".to_owned()]));
    push.set_usernames(|email| (email == "cole@example.com").then(|| "cole".to_owned()));
    assert!(push.unresolved_emails().is_empty());
    assert_eq!(push.body["commits"][0]["committer"]["username"], "cole");
    assert_eq!(push.body["head_commit"]["committer"]["username"], "cole");
    assert_eq!(push.body["commits"][0]["author"]["username"], "ada");
}

#[test]
fn a_ping_names_the_hook() {
    let hook = json!({"id": 9, "type": "Repository", "active": true, "events": ["push"]});
    let ping = ping_payload(&context(), 9, hook.clone());
    assert_eq!(ping.event, HookEvent::Ping);
    assert_eq!(ping.ref_name, None);
    assert!(!ping.body["zen"].as_str().expect("a sentence").is_empty());
    assert_eq!(ping.body["hook_id"], 9);
    assert_eq!(ping.body["hook"], hook);
    assert_eq!(ping.body["repository"]["full_name"], "ada/engine");
    assert_eq!(ping.body["repository"]["pushed_at"], "2023-11-14T22:16:40Z");
    assert_eq!(ping.body["sender"]["login"], "ada");
}
