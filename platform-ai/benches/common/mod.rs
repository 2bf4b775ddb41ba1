//! What both code search benchmarks need: the corpus on disk, a git repository of it, and
//! where results are kept.

use std::path::{Path, PathBuf};

/// Crates cargo unpacked on this machine: `$CARGO_HOME/registry/src` (one directory per
/// registry, each holding `<name>-<version>` directories).
pub(crate) fn registry_sources() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .expect("CARGO_HOME or HOME");
    home.join("registry").join("src")
}

/// Runs git in `cwd` with a fixed identity; its trimmed output.
pub(crate) fn git(cwd: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .args(args)
        .current_dir(cwd)
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .output()
        .expect("git");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A repository in `dir/repo` with `files` (path in the repository, content) committed, made
/// once; its path and commit.
pub(crate) fn repository<'a>(
    dir: &Path,
    files: impl IntoIterator<Item = (&'a Path, std::borrow::Cow<'a, [u8]>)>,
) -> (PathBuf, gix::ObjectId) {
    let work = dir.join("repo");
    if !work.join(".git").exists() {
        let _ = std::fs::remove_dir_all(&work);
        for (path, content) in files {
            let target = work.join(path);
            std::fs::create_dir_all(target.parent().expect("a parent")).expect("mkdir");
            std::fs::write(&target, content).expect("write");
        }
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["add", "-A", "."]);
        git(&work, &["commit", "-q", "-m", "corpus"]);
    }
    let head = git(&work, &["rev-parse", "HEAD"]);
    (work, gix::ObjectId::from_hex(head.as_bytes()).expect("an id"))
}

/// `target/bench/<name>` (or under `CARGO_TARGET_DIR`), created.
pub(crate) fn bench_dir(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").join("target")
    });
    let dir = target.join("bench").join(name);
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

/// The number in the environment variable `name`, or `default`.
pub(crate) fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|raw| raw.parse().ok()).unwrap_or(default)
}
