//! The `gitserver` binary as a process: git over HTTP with the real client, and its memory.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use platform_core::accounts::{Scope, password};
use platform_core::db::CORE_MIGRATIONS;
use platform_git::records::{self, NewRepo};
use platform_git::store::RepoStore;
use platform_test_support::{
    ProcessUsage, ServiceProcess, migrated_database, service_env, unique_name, verified_user,
    wait_for_status,
};

const GITSERVER: &str = env!("CARGO_BIN_EXE_gitserver");

fn git(args: &[&str], cwd: &Path) -> anyhow::Result<String> {
    let output = std::process::Command::new("git")
        .args(["-c", "credential.helper=", "-c", "user.name=T", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(cwd)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_200_mib_push_streams_through_in_bounded_memory() -> anyhow::Result<()> {
    const PUSH_BYTES: usize = 200 << 20;
    const RSS_BOUND: u64 = 64 << 20;
    let scratch = std::env::temp_dir().join(unique_name("gitserver"));
    let repos = scratch.join("repos");
    std::fs::create_dir_all(&repos)?;
    let (database_url, database) =
        migrated_database([CORE_MIGRATIONS, platform_git::GIT_MIGRATIONS]).await?;
    let token = {
        let hash = password::hash("correct horse battery")?;
        let (user_id, token) = verified_user(&database, "ada", &hash, &[Scope::RepoWrite]).await?;
        let mut conn = database.get().await?;
        let new = NewRepo {
            owner_id: user_id,
            name: "big",
            description: "",
            is_private: true,
            default_branch: "main",
            forked_from: None,
        };
        records::insert(&mut conn, new).await?;
        RepoStore::new(&repos).create("ada", "big", "main").await?;
        token
    };

    let key = scratch.join("host_key");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()?;
    anyhow::ensure!(status.success(), "ssh-keygen failed");
    let env = HashMap::from([
        ("APP_DATABASE_URL".to_owned(), database_url),
        ("APP_REDIS_URL".to_owned(), service_env("PLATFORM_TEST_REDIS_URL")),
        ("APP_DOMAIN_URL".to_owned(), "http://localhost:8021".to_owned()),
        ("APP_REPOS_ROOT".to_owned(), repos.to_string_lossy().into_owned()),
        ("APP_SSH_SERVER_PRIVATE_KEY".to_owned(), hex::encode(std::fs::read(&key)?)),
        ("APP_SSH_PORT".to_owned(), platform_test_support::free_port().to_string()),
    ]);
    let server = ServiceProcess::start(Path::new(GITSERVER), &env).await?;
    wait_for_status(&server.url("/readyz"), 200, Duration::from_secs(30)).await?;
    let pid = server.id().ok_or_else(|| anyhow::anyhow!("gitserver is not running"))?;
    let idle = ProcessUsage::of(pid)?.peak_resident_bytes;

    // Incompressible files, stored without compression so the test spends its time pushing.
    let work = scratch.join("work");
    std::fs::create_dir_all(&work)?;
    git(&["init", "--quiet", "--initial-branch=main"], &work)?;
    git(&["config", "core.compression", "0"], &work)?;
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for part in 0..8 {
        let data: Vec<u8> = (0..PUSH_BYTES / 8)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        std::fs::write(work.join(format!("part{part}.bin")), data)?;
    }
    git(&["add", "."], &work)?;
    git(&["commit", "--quiet", "-m", "200 MiB"], &work)?;
    let url = format!("http://ada:{token}@{}/ada/big.git", server.addr());
    git(&["push", "--quiet", &url, "main"], &work)?;

    let peak = ProcessUsage::of(pid)?.peak_resident_bytes;
    let disk = repos.join("ada/big.git").to_string_lossy().into_owned();
    assert_eq!(
        git(&["--git-dir", &disk, "rev-parse", "main"], &work)?,
        git(&["rev-parse", "HEAD"], &work)?
    );
    println!(
        "gitserver peak RSS: {} MiB idle, {} MiB after a {} MiB push (bound {} MiB)",
        idle >> 20,
        peak >> 20,
        PUSH_BYTES >> 20,
        RSS_BOUND >> 20
    );
    assert!(peak < RSS_BOUND, "peak RSS {} MiB", peak >> 20);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
