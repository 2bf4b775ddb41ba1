//! Bare repositories on disk, checked with the real `git`.

use std::path::{Path, PathBuf};
use std::process::Command;

use platform_git::store::{RepoStore, StoreError};
use platform_test_support::unique_name;

fn root() -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name("repos"));
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    dir
}

fn git(args: &[&str], dir: &Path) -> String {
    let output = Command::new("git").args(args).current_dir(dir).output().expect("git runs");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test]
async fn a_created_repository_is_a_bare_repository_git_accepts() -> anyhow::Result<()> {
    let store = RepoStore::new(root());
    let path = store.create("Ada", "Engine", "trunk").await?;
    assert!(path.ends_with("ada/engine.git"), "{path:?}");
    assert_eq!(git(&["rev-parse", "--is-bare-repository"], &path), "true");
    assert_eq!(git(&["symbolic-ref", "HEAD"], &path), "refs/heads/trunk");
    git(&["fsck", "--no-progress"], &path);
    assert!(store.exists("ada", "ENGINE").await?, "names are unique without regard to case");

    // A clone of it works, and a push lands in it.
    let work = root();
    git(&["clone", "--quiet", &path.to_string_lossy(), "work"], &work);
    let clone = work.join("work");
    git(
        &[
            "-c",
            "user.name=Ada",
            "-c",
            "user.email=ada@example.com",
            "commit",
            "--allow-empty",
            "-q",
            "-m",
            "first",
        ],
        &clone,
    );
    git(&["push", "--quiet", "origin", "HEAD:trunk"], &clone);
    assert_eq!(git(&["rev-list", "--count", "trunk"], &path), "1");
    Ok(())
}

#[tokio::test]
async fn names_are_checked_before_anything_touches_the_disk() -> anyhow::Result<()> {
    let root = root();
    let store = RepoStore::new(&root);
    for (owner, name) in [
        ("ada", "../escape"),
        ("ada", "x.git"),
        ("ada", ".hidden"),
        ("ada", "a/b"),
        ("../ada", "x"),
        ("ada", ""),
    ] {
        let error = store.create(owner, name, "main").await.expect_err("refused");
        assert!(matches!(error, StoreError::InvalidName { .. }), "{owner}/{name}: {error}");
    }
    let error = store.create("ada", "ok", "bad..branch").await.expect_err("refused");
    assert!(matches!(error, StoreError::InvalidName { what: "branch", .. }), "{error}");
    let error = store.create("ada", "ok", "--upload-pack=evil").await.expect_err("refused");
    assert!(matches!(error, StoreError::InvalidName { what: "branch", .. }), "{error}");
    assert_eq!(std::fs::read_dir(&root)?.count(), 0, "nothing was written");
    Ok(())
}

#[tokio::test]
async fn concurrent_creations_of_one_name_have_exactly_one_winner() -> anyhow::Result<()> {
    let root = root();
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            // Separate stores, as separate replicas would have: only the file system arbitrates.
            let store = RepoStore::new(&root);
            tokio::spawn(async move { store.create("grace", "compiler", "main").await })
        })
        .collect();
    let mut created = 0;
    for attempt in attempts {
        match attempt.await? {
            Ok(_) => created += 1,
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(other) => anyhow::bail!("unexpected error: {other}"),
        }
    }
    assert_eq!(created, 1);
    let leftovers: Vec<_> = std::fs::read_dir(root.join("grace"))?
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers, ["compiler.git"], "no staging directories left behind");
    Ok(())
}

#[tokio::test]
async fn rename_fork_and_delete() -> anyhow::Result<()> {
    let store = RepoStore::new(root());
    let original = store.create("linus", "kernel", "main").await?;
    let work = root();
    git(&["clone", "--quiet", &original.to_string_lossy(), "work"], &work);
    let clone = work.join("work");
    git(
        &[
            "-c",
            "user.name=L",
            "-c",
            "user.email=l@example.com",
            "commit",
            "--allow-empty",
            "-q",
            "-m",
            "init",
        ],
        &clone,
    );
    git(&["push", "--quiet", "origin", "HEAD:main"], &clone);

    let forked = store.fork(("linus", "kernel"), ("greg", "kernel")).await?;
    assert_eq!(git(&["rev-list", "--count", "main"], &forked), "1", "the fork has the history");
    assert_eq!(git(&["remote"], &forked), "", "and no link back to its source");
    assert!(matches!(
        store.fork(("linus", "kernel"), ("greg", "kernel")).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    assert!(matches!(
        store.fork(("linus", "nothing"), ("greg", "x")).await,
        Err(StoreError::NotFound { .. })
    ));

    let renamed = store.rename(("linus", "kernel"), ("linus", "linux")).await?;
    assert!(!store.exists("linus", "kernel").await? && store.exists("linus", "linux").await?);
    assert_eq!(git(&["rev-list", "--count", "main"], &renamed), "1");
    assert!(matches!(
        store.rename(("linus", "linux"), ("greg", "kernel")).await,
        Err(StoreError::AlreadyExists { .. })
    ));

    store.delete("greg", "kernel").await?;
    assert!(!store.exists("greg", "kernel").await?);
    assert!(matches!(store.delete("greg", "kernel").await, Err(StoreError::NotFound { .. })));
    Ok(())
}
