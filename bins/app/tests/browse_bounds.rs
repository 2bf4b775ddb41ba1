//! The browsing routes of the `app` process on a repository made to hit every bound: a 50 MB
//! file, a commit of 10,000 files and a history of 100,000 commits. Each answer stays within its
//! documented limit, and the process's peak resident memory stays under [`MEMORY_BOUND_MIB`].

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use platform_test_support::{ProcessUsage, ServiceProcess, fresh_database, wait_for_status};

const APP: &str = env!("CARGO_BIN_EXE_app");

mod common;
use common::app_env;

/// The peak resident memory `app` may reach serving all of this, in MiB: the 50 MB file is held
/// once while it is sent, plus each blocking thread's object cache.
const MEMORY_BOUND_MIB: u64 = 256;

const HISTORY: usize = 100_000;
const FILES: usize = 10_000;
const HUGE_BYTES: usize = 50 << 20;

/// Writes the history with `git fast-import`: a root with `deep/only-in-root.txt`, 100,000
/// commits changing `counter.txt`, a commit adding 10,000 files (tag `many`), and one adding a
/// 50 MB text file (tag `huge`), which `main` ends at.
fn build_repository(path: &Path) -> anyhow::Result<()> {
    let init = Command::new("git")
        .args(["init", "--quiet", "--bare", "--initial-branch=main"])
        .arg(path)
        .status()?;
    anyhow::ensure!(init.success(), "git init failed");
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet", "--done"])
        .current_dir(path)
        .stdin(Stdio::piped())
        .spawn()?;
    let mut input = std::io::BufWriter::new(child.stdin.take().expect("piped"));
    let mut time = 1_600_000_000u64;
    let mut commit = |input: &mut dyn std::io::Write,
                      message: &str,
                      body: &mut dyn FnMut(&mut dyn std::io::Write) -> std::io::Result<()>|
     -> std::io::Result<()> {
        time += 60;
        write!(
            input,
            "commit refs/heads/main\ncommitter Bound <bound@example.com> {time} +0000\ndata {}\n{message}\n",
            message.len() + 1
        )?;
        body(input)
    };
    let inline =
        |input: &mut dyn std::io::Write, path: &str, content: &[u8]| -> std::io::Result<()> {
            write!(input, "M 100644 inline {path}\ndata {}\n", content.len())?;
            input.write_all(content)?;
            input.write_all(b"\n")
        };
    commit(&mut input, "root", &mut |input| {
        inline(input, "deep/only-in-root.txt", b"here once\n")?;
        inline(input, "README.md", b"# Bounds\n")
    })?;
    for n in 1..HISTORY {
        commit(&mut input, &format!("count {n}"), &mut |input| {
            inline(input, "counter.txt", format!("{n}\n").as_bytes())
        })?;
    }
    commit(&mut input, "many files", &mut |input| {
        for n in 0..FILES {
            inline(input, &format!("many/f{n:05}.txt"), format!("file {n}\n").as_bytes())?;
        }
        Ok(())
    })?;
    writeln!(
        input,
        "tag many\nfrom refs/heads/main\ntagger Bound <bound@example.com> 1700000000 +0000\ndata 5\nmany\n"
    )?;
    commit(&mut input, "a huge file", &mut |input| {
        let line = b"all work and no play makes a very large text file\n";
        let mut content = Vec::with_capacity(HUGE_BYTES);
        while content.len() + line.len() <= HUGE_BYTES {
            content.extend_from_slice(line);
        }
        content.resize(HUGE_BYTES, b'\n');
        inline(input, "huge.txt", &content)
    })?;
    writeln!(
        input,
        "tag huge\nfrom refs/heads/main\ntagger Bound <bound@example.com> 1700000001 +0000\ndata 5\nhuge\n"
    )?;
    writeln!(input, "done")?;
    drop(input);
    anyhow::ensure!(child.wait()?.success(), "git fast-import failed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_file_a_huge_commit_and_a_long_history_are_answered_within_their_bounds()
-> anyhow::Result<()> {
    let data: PathBuf = std::env::temp_dir().join(platform_test_support::unique_name("bounds"));
    let repo = data.join("repos/bound/big.git");
    std::fs::create_dir_all(repo.parent().expect("a parent"))?;
    build_repository(&repo)?;

    let database = fresh_database().await?;
    let app = ServiceProcess::start(Path::new(APP), &app_env(&database, &data)).await?;
    wait_for_status(&app.url("/readyz"), 200, Duration::from_secs(60)).await?;
    let mut conn = AsyncPgConnection::establish(&database).await?;
    for statement in [
        "INSERT INTO users (username, email, password_hash) VALUES ('bound', 'bound@example.com', 'none')",
        "INSERT INTO repositories (owner_id, name, default_branch) SELECT id, 'big', 'main' FROM users",
    ] {
        diesel::sql_query(statement).execute(&mut conn).await?;
    }
    let base = app.url("/api/repos/bound/big");
    let client = reqwest::Client::new();
    let json = |path: String| {
        let client = client.clone();
        async move {
            let started = std::time::Instant::now();
            let response = client.get(&path).send().await?;
            eprintln!("{path}: {} in {:?}", response.status(), started.elapsed());
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await?;
            anyhow::Ok((status, body))
        }
    };

    // The 50 MB file: described without its content, its bytes streamed in full.
    let (status, file) = json(format!("{base}/contents/huge.txt")).await?;
    assert_eq!(status, 200, "{file}");
    assert_eq!(file["size"], HUGE_BYTES);
    assert!(file.get("content").is_none(), "a 50 MB file came inline");
    assert!(file["download_url"].as_str().is_some_and(|url| url.contains("/raw/huge.txt?ref=")));
    let mut raw = client.get(format!("{base}/raw/huge.txt")).send().await?;
    assert_eq!(raw.status(), 200);
    let mut received = 0usize;
    while let Some(piece) = raw.chunk().await? {
        received += piece.len();
    }
    assert_eq!(received, HUGE_BYTES);
    // Its commit's diff leaves the file's lines out and says so.
    let (status, commit) = json(format!("{base}/commits/huge")).await?;
    assert_eq!(status, 200);
    assert_eq!(commit["files"][0]["filename"], "huge.txt");
    assert_eq!(commit["files"][0]["truncated"], true);
    assert!(commit["files"][0].get("patch").is_none());

    // The 10,000-file commit: 300 files listed, the count given, the text diff cut the same way.
    let (status, commit) = json(format!("{base}/commits/many")).await?;
    assert_eq!(status, 200);
    assert_eq!(commit["files"].as_array().map(Vec::len), Some(300));
    assert_eq!(commit["total_files"], FILES);
    let diff = client.get(format!("{base}/commits/many.diff")).send().await?.text().await?;
    assert_eq!(diff.matches("diff --git ").count(), 300);
    let (status, tree) = json(format!("{base}/git/trees/many?recursive=true")).await?;
    assert_eq!(status, 200);
    assert_eq!(tree["truncated"], false);
    assert_eq!(tree["tree"].as_array().map(Vec::len), Some(FILES + 5));
    let archive = client.get(format!("{base}/tarball/many")).send().await?.bytes().await?;
    let mut unpacked = tar::Archive::new(flate2::read::GzDecoder::new(archive.as_ref()));
    let files = unpacked
        .entries()?
        .filter_map(Result::ok)
        .filter(|entry| entry.header().entry_type().is_file())
        .count();
    assert_eq!(files, FILES + 3);

    // The long history: any page, and a comparison across all of it, bounded.
    let (status, page) = json(format!("{base}/commits?sha=main&per_page=100&page=900")).await?;
    assert_eq!(status, 200);
    assert_eq!(page.as_array().map(Vec::len), Some(100));
    assert_eq!(page[0]["commit"]["message"], format!("count {}\n", HISTORY + 1 - 89_900));
    let (status, walk) = json(format!("{base}/commits?sha=main&path=deep")).await?;
    match status {
        200 => assert_eq!(walk[0]["commit"]["message"], "root\n"),
        // A slow machine may pass the walk's time limit: that is the documented answer.
        422 => assert!(
            walk["error"]["message"].as_str().is_some_and(|m| m.contains("longer than the limit")),
            "{walk}"
        ),
        other => panic!("the walk of 100,000 commits answered {other}: {walk}"),
    }
    let root = page_root(&client, &base).await?;
    let (status, compare) = json(format!("{base}/compare/{root}...main")).await?;
    assert_eq!(status, 200, "{compare}");
    assert_eq!(compare["ahead_by"], HISTORY + 1);
    assert_eq!(compare["commits"].as_array().map(Vec::len), Some(250));
    assert_eq!(compare["files"].as_array().map(Vec::len), Some(300));

    let pid = app.id().ok_or_else(|| anyhow::anyhow!("app has no pid"))?;
    let peak = ProcessUsage::of(pid)?.peak_resident_bytes >> 20;
    assert!(peak < MEMORY_BOUND_MIB, "app's peak resident memory was {peak} MiB");
    eprintln!("app's peak resident memory: {peak} MiB");
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

/// The root commit's id, from the last page of the history.
async fn page_root(client: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let page: serde_json::Value = client
        .get(format!("{base}/commits?sha=main&per_page=100&page={}", (HISTORY + 2).div_ceil(100)))
        .send()
        .await?
        .json()
        .await?;
    let last = page
        .as_array()
        .and_then(|commits| commits.last())
        .ok_or_else(|| anyhow::anyhow!("an empty last page"))?;
    assert_eq!(last["commit"]["message"], "root\n");
    Ok(last["sha"].as_str().unwrap_or_default().to_owned())
}
