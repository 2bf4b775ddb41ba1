//! The pre-receive hook on its own, with the real `git`: it admits exactly the updates the
//! server's verdicts name, whatever else git is asked to apply.

use std::path::{Path, PathBuf};
use std::process::Output;

use platform_git::hooks;
use platform_test_support::unique_name;

fn git(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> anyhow::Result<Output> {
    let mut command = std::process::Command::new("git");
    command
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .current_dir(cwd)
        .env_remove(hooks::POLICY_ENV)
        .env_remove(hooks::MAX_BLOB_ENV);
    for (name, value) in env {
        command.env(name, value);
    }
    Ok(command.output()?)
}

fn ok(output: Output) -> anyhow::Result<String> {
    anyhow::ensure!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

/// A bare repository, a working copy with two commits, and the hooks.
struct Setup {
    scratch: PathBuf,
    bare: PathBuf,
    work: PathBuf,
    hooks: PathBuf,
}

impl Setup {
    fn new() -> anyhow::Result<Self> {
        let scratch = std::env::temp_dir().join(unique_name("hooks"));
        let (bare, work) = (scratch.join("bare.git"), scratch.join("work"));
        std::fs::create_dir_all(&work)?;
        ok(git(&["init", "--quiet", "--bare", &bare.to_string_lossy()], &scratch, &[])?)?;
        ok(git(&["init", "--quiet", "--initial-branch=main"], &work, &[])?)?;
        for i in 0..2 {
            std::fs::write(work.join(format!("file{i}.txt")), format!("content {i}\n"))?;
            ok(git(&["add", "."], &work, &[])?)?;
            ok(git(&["commit", "--quiet", "-m", &format!("commit {i}")], &work, &[])?)?;
        }
        let hooks = hooks::install(&scratch.join("hooks"))?;
        Ok(Self { scratch, bare, work, hooks })
    }

    fn head(&self) -> anyhow::Result<String> {
        ok(git(&["rev-parse", "HEAD"], &self.work, &[])?)
    }

    /// Pushes `refspec` with the hooks installed and `policy` as the verdict file's content
    /// (no verdict file at all when `None`).
    fn push(&self, refspec: &str, policy: Option<&str>, max_blob: u64) -> anyhow::Result<Output> {
        let receive_pack = format!("git -c core.hooksPath={} receive-pack", self.hooks.display());
        let policy_file = self.scratch.join(unique_name("policy"));
        let max_blob = max_blob.to_string();
        let mut env = vec![(hooks::MAX_BLOB_ENV, max_blob.as_str())];
        let policy_path = policy_file.to_string_lossy().into_owned();
        if let Some(policy) = policy {
            std::fs::write(&policy_file, policy)?;
            env.push((hooks::POLICY_ENV, policy_path.as_str()));
        }
        git(
            &["push", "--receive-pack", &receive_pack, &self.bare.to_string_lossy(), refspec],
            &self.work,
            &env,
        )
    }

    fn refs(&self) -> anyhow::Result<String> {
        ok(git(&["for-each-ref", "--format=%(refname) %(objectname)"], &self.bare, &[])?)
    }
}

const ZERO: &str = "0000000000000000000000000000000000000000";

#[test]
fn only_the_updates_a_verdict_names_exactly_are_admitted() -> anyhow::Result<()> {
    let setup = Setup::new()?;
    let head = setup.head()?;
    let parent = ok(git(&["rev-parse", "HEAD~1"], &setup.work, &[])?)?;
    let stderr = |output: &Output| String::from_utf8_lossy(&output.stderr).into_owned();

    let refused = [
        // The server read no command at all: git's update is refused.
        (
            Some(String::new()),
            "refs/heads/main: this update was not among the commands of the push",
        ),
        // A verdict for another new id, or another ref, is no verdict for this update.
        (Some(format!("allow\t{ZERO}\t{parent}\trefs/heads/main\n")), "was not among the commands"),
        (Some(format!("allow\t{ZERO}\t{head}\trefs/heads/other\n")), "was not among the commands"),
        // A refusal is never undone by a later line.
        (
            Some(format!(
                "deny\t{ZERO}\t{head}\trefs/heads/main\tmain is protected: no\n\
                 allow\t{ZERO}\t{head}\trefs/heads/main\n"
            )),
            "error: main is protected: no",
        ),
        // No verdicts at all: nothing is admitted.
        (None, "the push policy is unavailable"),
    ];
    for (policy, message) in refused {
        let output = setup.push("main", policy.as_deref(), 0)?;
        assert!(!output.status.success(), "{policy:?} admitted the push");
        assert!(stderr(&output).contains(message), "{policy:?}: {}", stderr(&output));
        assert_eq!(setup.refs()?, "", "{policy:?} moved a ref");
    }

    let admitted = format!("allow\t{ZERO}\t{head}\trefs/heads/main\n");
    ok(setup.push("main", Some(&admitted), 0)?)?;
    assert_eq!(setup.refs()?, format!("refs/heads/main {head}"));
    Ok(())
}

#[test]
fn no_force_verdicts_refuse_rewrites_and_admit_fast_forwards() -> anyhow::Result<()> {
    let setup = Setup::new()?;
    let head = setup.head()?;
    let parent = ok(git(&["rev-parse", "HEAD~1"], &setup.work, &[])?)?;
    ok(setup.push(
        "HEAD~1:refs/heads/main",
        Some(&format!("allow\t{ZERO}\t{parent}\trefs/heads/main\n")),
        0,
    )?)?;
    ok(setup.push("main", Some(&format!("no-force\t{parent}\t{head}\trefs/heads/main\n")), 0)?)?;
    ok(git(&["commit", "--quiet", "--amend", "-m", "rewritten"], &setup.work, &[])?)?;
    let rewritten = setup.head()?;
    let output = setup.push(
        "+main",
        Some(&format!("no-force\t{head}\t{rewritten}\trefs/heads/main\n")),
        0,
    )?;
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("refs/heads/main is protected: force pushes are not allowed")
    );
    assert_eq!(setup.refs()?, format!("refs/heads/main {head}"));
    Ok(())
}

#[test]
fn blobs_over_the_limit_are_found_once_per_push_and_named() -> anyhow::Result<()> {
    let setup = Setup::new()?;
    std::fs::create_dir_all(setup.work.join("assets"))?;
    std::fs::write(setup.work.join("assets/big.bin"), vec![7_u8; 5000])?;
    ok(git(&["add", "."], &setup.work, &[])?)?;
    ok(git(&["commit", "--quiet", "-m", "big"], &setup.work, &[])?)?;
    let head = setup.head()?;
    let policy = |name: &str| format!("allow\t{ZERO}\t{head}\trefs/heads/{name}\n");
    let output = setup.push("main", Some(&policy("main")), 4096)?;
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains(
            "error: refs/heads/main: assets/big.bin is 5000 bytes, over the limit of 4096 bytes per file"
        ),
        "{message}"
    );
    assert_eq!(setup.refs()?, "");
    // Under a higher limit it lands; a later push that brings no new blob is not charged for
    // one the repository already holds.
    ok(setup.push("main", Some(&policy("main")), 8192)?)?;
    ok(setup.push("main:refs/heads/copy", Some(&policy("copy")), 4096)?)?;
    assert!(setup.refs()?.contains("refs/heads/copy"));
    Ok(())
}
