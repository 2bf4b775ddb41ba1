//! `static_server` as a process: files from `STATIC_ROOT` next to the service shell's routes.

use std::collections::HashMap;
use std::time::Duration;

use platform_test_support::{ServiceProcess, unique_name, wait_for_status};

#[tokio::test(flavor = "multi_thread")]
async fn serves_static_root_beside_health_and_metrics() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(unique_name("static-root"));
    std::fs::create_dir_all(dir.join("root/files/blobs/ab/cd"))?;
    std::fs::write(dir.join("root/files/blobs/ab/cd/abcd"), "blob")?;
    std::fs::write(dir.join("secret"), "TOP SECRET")?;
    std::os::unix::fs::symlink("../../secret", dir.join("root/files/escape"))?;
    let env = HashMap::from([
        ("STATIC_ROOT".to_owned(), dir.join("root").to_string_lossy().into_owned()),
        ("APP_REPOS_ROOT".to_owned(), dir.join("repos").to_string_lossy().into_owned()),
    ]);
    let server = ServiceProcess::start(env!("CARGO_BIN_EXE_static_server").as_ref(), &env).await?;
    wait_for_status(&server.url("/readyz"), 200, Duration::from_secs(10)).await?;

    let blob = reqwest::get(server.url("/files/blobs/ab/cd/abcd")).await?;
    assert_eq!(blob.status(), 200);
    let headers = blob.headers().clone();
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "public, max-age=31536000, immutable");
    assert!(headers.contains_key("etag") && headers.contains_key("last-modified"));
    assert_eq!(blob.text().await?, "blob");

    for refused in ["/files/escape", "/files/", "/files/blobs/ab/cd/missing"] {
        let response = reqwest::get(server.url(refused)).await?;
        assert_eq!(response.status(), 404, "{refused}");
        assert!(!response.text().await?.contains("TOP SECRET"));
    }
    let prefixed = reqwest::get(server.url("/static/files/blobs/ab/cd/abcd")).await?;
    assert_eq!(prefixed.status(), 200, "also under /static/, where app's URLs point");
    assert_eq!(prefixed.text().await?, "blob");
    let metrics = reqwest::get(server.url("/metrics")).await?.text().await?;
    assert!(metrics.contains("http_requests_total"), "requests are counted:\n{metrics}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// A bare repository at `repos/owner/private.git` holding `TOP SECRET` in a blob; returns its
/// blob's loose object path relative to the repository.
fn private_repository(repos: &std::path::Path) -> anyhow::Result<String> {
    let repo = repos.join("owner/private.git");
    let git = |args: &[&str]| -> anyhow::Result<String> {
        let output = std::process::Command::new("git").args(args).current_dir(&repo).output()?;
        anyhow::ensure!(output.status.success(), "git {args:?} failed");
        Ok(String::from_utf8(output.stdout)?.trim().to_owned())
    };
    std::fs::create_dir_all(&repo)?;
    git(&["init", "--quiet", "--bare"])?;
    let blob = {
        use std::io::Write as _;
        let mut child = std::process::Command::new("git")
            .args(["hash-object", "-w", "--stdin"])
            .current_dir(&repo)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        child.stdin.take().expect("piped").write_all(b"TOP SECRET")?;
        String::from_utf8(child.wait_with_output()?.stdout)?.trim().to_owned()
    };
    Ok(format!("objects/{}/{}", &blob[..2], &blob[2..]))
}

#[tokio::test(flavor = "multi_thread")]
async fn repositories_inside_static_root_are_never_served() -> anyhow::Result<()> {
    // The layout of the chart's example values: the repositories at /data/repos, inside
    // STATIC_ROOT=/data. Only the public directories are served, and a symlink in one of them
    // cannot reach the repositories either.
    let dir = std::env::temp_dir().join(unique_name("static-nested"));
    let data = dir.join("data");
    let object = private_repository(&data.join("repos"))?;
    std::fs::create_dir_all(data.join("avatars"))?;
    std::fs::write(data.join("avatars/ada.png"), "avatar")?;
    std::fs::create_dir_all(data.join("media"))?;
    std::os::unix::fs::symlink("../repos/owner/private.git", data.join("media/private.git"))?;
    std::fs::write(data.join("top-level.txt"), "not in a public directory")?;
    let env = HashMap::from([
        ("STATIC_ROOT".to_owned(), data.to_string_lossy().into_owned()),
        ("APP_REPOS_ROOT".to_owned(), data.join("repos").to_string_lossy().into_owned()),
    ]);
    let server = ServiceProcess::start(env!("CARGO_BIN_EXE_static_server").as_ref(), &env).await?;
    wait_for_status(&server.url("/readyz"), 200, Duration::from_secs(10)).await?;
    assert_eq!(reqwest::get(server.url("/avatars/ada.png")).await?.text().await?, "avatar");
    let mut refused = vec!["/top-level.txt".to_owned(), "/media/private.git/config".to_owned()];
    for file in ["config", "HEAD", object.as_str()] {
        refused.push(format!("/repos/owner/private.git/{file}"));
        refused.push(format!("/static/repos/owner/private.git/{file}"));
        refused.push(format!("/media/private.git/{file}"));
    }
    for path in refused {
        let response = reqwest::get(server.url(&path)).await?;
        assert_eq!(response.status(), 404, "{path}");
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_public_directory_overlapping_the_repositories_stops_the_start() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(unique_name("static-overlap"));
    let data = dir.join("data");
    private_repository(&data.join("files/repos"))?;
    let cases = [
        // The repositories inside a served directory.
        (data.join("files/repos"), "avatars,files"),
        // A served directory inside the repositories.
        (data.clone(), "avatars"),
    ];
    for (repos, public) in cases {
        // Under `timeout`: a server that starts after all is stopped, and fails the test.
        let output = std::process::Command::new("timeout")
            .args(["10", env!("CARGO_BIN_EXE_static_server")])
            .env_clear()
            .env("STATIC_ROOT", &data)
            .env("APP_REPOS_ROOT", &repos)
            .env("STATIC_PUBLIC_DIRS", public)
            .env("APP_HTTP_ADDR", "127.0.0.1:0")
            .output()?;
        assert!(!output.status.success(), "{} with {public} started", repos.display());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("overlaps the repositories")
                && stderr.contains(&repos.canonicalize()?.display().to_string()),
            "{stderr}"
        );
    }
    let output = std::process::Command::new("timeout")
        .args(["10", env!("CARGO_BIN_EXE_static_server")])
        .env_clear()
        .env("STATIC_ROOT", &data)
        .env("APP_REPOS_ROOT", data.join("repos"))
        .env("STATIC_PUBLIC_DIRS", "../repos")
        .output()?;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("STATIC_PUBLIC_DIRS"));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
