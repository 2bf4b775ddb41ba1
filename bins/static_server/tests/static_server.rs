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
    std::os::unix::fs::symlink("../secret", dir.join("root/escape"))?;
    let env = HashMap::from([(
        "STATIC_ROOT".to_owned(),
        dir.join("root").to_string_lossy().into_owned(),
    )]);
    let server = ServiceProcess::start(env!("CARGO_BIN_EXE_static_server").as_ref(), &env).await?;
    wait_for_status(&server.url("/readyz"), 200, Duration::from_secs(10)).await?;

    let blob = reqwest::get(server.url("/files/blobs/ab/cd/abcd")).await?;
    assert_eq!(blob.status(), 200);
    let headers = blob.headers().clone();
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "public, max-age=31536000, immutable");
    assert!(headers.contains_key("etag") && headers.contains_key("last-modified"));
    assert_eq!(blob.text().await?, "blob");

    for refused in ["/escape", "/files/", "/files/blobs/ab/cd/missing"] {
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
