//! The example run as a user runs it: on a git repository, twice.

use std::path::Path;
use std::process::Command;

use platform_test_support::service_env;

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Example", "-c", "user.email=example@example.com"])
        .args(args)
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

fn search(repo: &Path, index: &Path, query: &str) -> (String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_search-local-repo"))
        .arg("--model")
        .arg(service_env("PLATFORM_TEST_EMBED_MODEL_DIR"))
        .arg("--index")
        .arg(index)
        .arg(repo)
        .arg(query)
        .output()
        .expect("the example runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    (stdout, stderr)
}

#[test]
fn a_local_repository_is_indexed_once_and_searched_by_meaning() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("src")).expect("mkdir");
    std::fs::write(
        repo.join("src/session.rs"),
        "/// Drops every session whose time to live has passed.\npub fn expire_sessions(store: &mut SessionStore, now: Instant) {\n    store.sessions.retain(|session| session.expires_at > now);\n}\n",
    )
    .expect("write");
    std::fs::write(
        repo.join("src/image.py"),
        "def resize_image(image, width, height):\n    \"\"\"Scale a picture to the given size.\"\"\"\n    return image.resize((width, height))\n",
    )
    .expect("write");
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let index = dir.path().join("index");

    let (stdout, stderr) = search(&repo, &index, "remove stale logins");
    assert!(stdout.starts_with("src/session.rs:1-4"), "{stdout}\n{stderr}");
    assert!(stderr.contains("2 files written") && stderr.contains("2 chunks embedded"), "{stderr}");

    // The second run finds the index up to date: nothing is embedded again.
    let (stdout, stderr) = search(&repo, &index, "make a picture smaller");
    assert!(stdout.starts_with("src/image.py:1-3"), "{stdout}\n{stderr}");
    assert!(stderr.contains("0 files written") && stderr.contains("0 chunks embedded"), "{stderr}");
}
