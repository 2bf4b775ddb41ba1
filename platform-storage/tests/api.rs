//! The avatar and attachment routes over a real socket, against PostgreSQL and Redis.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Duration;

use platform_core::accounts::Scope;
use platform_core::db::CORE_MIGRATIONS;
use platform_core::service::{RouteLimits, ServiceShell};
use platform_storage::api::{StorageApi, UploadLimits};
use platform_storage::avatars::AvatarOptions;
use platform_storage::{AvatarRoot, FilesRoot, STORAGE_MIGRATIONS};
use platform_test_support::{Backing, unique_name, verified_user};
use reqwest::StatusCode;

const STATIC_URL: &str = "https://forge.example.com/static/";

struct Setup {
    base: String,
    token: String,
    dir: PathBuf,
    client: reqwest::Client,
}

impl Setup {
    async fn start() -> anyhow::Result<Self> {
        Self::start_with_body_limit(None).await
    }

    /// Serves the routes in the service shell, with its body limit when given (as app does).
    async fn start_with_body_limit(body_limit: Option<usize>) -> anyhow::Result<Self> {
        let Backing { database, accounts, .. } =
            Backing::start("storage", [CORE_MIGRATIONS, STORAGE_MIGRATIONS], None).await?;
        let scopes = [Scope::Admin, Scope::RepoWrite];
        let (_, token) = verified_user(&database, "ada", "not-a-real-hash", &scopes).await?;

        let dir = std::env::temp_dir().join(unique_name("uploads"));
        let limits = UploadLimits {
            attachment_bytes: 64 * 1024,
            avatar: AvatarOptions { max_upload_bytes: 200 * 1024, ..AvatarOptions::default() },
        };
        let api = StorageApi::new(
            accounts,
            AvatarRoot::open(dir.join("avatars"))?,
            &FilesRoot::open(dir.join("files"))?,
            &STATIC_URL.parse()?,
            limits,
        );
        let (mut router, _) = platform_storage::api::api(api).split_for_parts();
        if let Some(body_limit) = body_limit {
            let limits = RouteLimits { body_limit: Some(body_limit), ..RouteLimits::default() };
            router =
                ServiceShell::new("storage-tests").with_routes(router).with_limits(limits).router();
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, router).await });
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self { base, token, dir, client })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(StatusCode, reqwest::header::HeaderMap, serde_json::Value)> {
        let mut request =
            self.client.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.header("content-type", "application/octet-stream").body(body);
        }
        let response = request.send().await?;
        let (status, headers) = (response.status(), response.headers().clone());
        let text = response.text().await?;
        Ok((status, headers, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)))
    }

    /// The file a static URL points at, on disk.
    fn file_of(&self, url: &str) -> PathBuf {
        self.dir.join(url.strip_prefix(STATIC_URL).expect("a static URL"))
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| {
                    let path = entry.path();
                    if path.is_dir() { files_under(&path) } else { 1 }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// A JPEG with an EXIF APP1 segment holding a GPS marker.
fn jpeg_with_gps(marker: &[u8]) -> Vec<u8> {
    let image = image::RgbImage::from_fn(300, 200, |x, y| image::Rgb([x as u8, y as u8, 90]));
    let mut jpeg = Vec::new();
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .expect("encodes");
    let mut segment = b"Exif\0\0MM\0*\0\0\0\x08GPS ".to_vec();
    segment.extend(marker);
    let length = u16::try_from(segment.len() + 2).expect("small").to_be_bytes();
    let mut out = jpeg[..2].to_vec();
    out.extend([0xFF, 0xE1, length[0], length[1]]);
    out.extend(segment);
    out.extend(&jpeg[2..]);
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_uploaded_avatar_is_served_as_a_png_without_its_metadata() -> anyhow::Result<()> {
    let setup = Setup::start().await?;
    let (status, _, default) =
        setup.send(reqwest::Method::GET, "/api/users/ada/avatar", None).await?;
    assert_eq!(status, StatusCode::FOUND, "{default}");

    let marker = b"51.500729N 0.124625W";
    let upload = jpeg_with_gps(marker);
    assert!(contains(&upload, marker));
    let (status, _, body) =
        setup.send(reqwest::Method::PUT, "/api/user/avatar", Some(upload)).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let url = body["url"].as_str().unwrap_or_default().to_owned();
    assert!(url.starts_with(&format!("{STATIC_URL}avatars/")) && url.ends_with(".png"), "{url}");
    let stored = std::fs::read(setup.file_of(&url))?;
    assert_eq!(image::guess_format(&stored)?, image::ImageFormat::Png);
    assert!(!contains(&stored, marker), "the GPS data is gone");
    let decoded = image::load_from_memory(&stored)?;
    assert_eq!((decoded.width(), decoded.height()), (256, 256));

    let (status, headers, _) =
        setup.send(reqwest::Method::GET, "/api/users/ada/avatar", None).await?;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(headers["location"], url.as_str());
    let (status, _, _) = setup.send(reqwest::Method::GET, "/api/users/nobody/avatar", None).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _, _) = setup.send(reqwest::Method::DELETE, "/api/user/avatar", None).await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, headers, _) = setup.send(reqwest::Method::GET, "/api/users/ada/avatar", None).await?;
    assert_ne!(headers["location"], url.as_str(), "back to the generated avatar");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_or_wrong_uploads_are_refused_and_write_nothing() -> anyhow::Result<()> {
    let setup = Setup::start().await?;
    let avatars = setup.dir.join("avatars");
    let before = files_under(&avatars);
    let (status, _, body) =
        setup.send(reqwest::Method::PUT, "/api/user/avatar", Some(vec![0xFF; 300 * 1024])).await?;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "too_large");
    let (status, _, body) = setup
        .send(reqwest::Method::PUT, "/api/user/avatar", Some(b"<svg onload=alert(1)>".to_vec()))
        .await?;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    assert_eq!(files_under(&avatars), before, "nothing written");

    let files = setup.dir.join("files");
    let (status, _, body) =
        setup.send(reqwest::Method::POST, "/api/attachments", Some(vec![b'a'; 100 * 1024])).await?;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let (status, _, body) = setup
        .send(reqwest::Method::POST, "/api/attachments", Some(b"<html><script>x</script>".to_vec()))
        .await?;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    assert_eq!(files_under(&files.join("blobs")), 0, "no blob kept");
    assert_eq!(files_under(&files.join(".staging")), 0, "no staging file left");

    let anonymous =
        setup.client.post(format!("{}/api/attachments", setup.base)).body("x").send().await?;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_without_length_over_the_limit_is_refused_with_413() -> anyhow::Result<()> {
    // app's body limit is the largest upload limit: an attachment of unknown length meets it
    // while streaming, before the attachment's own limit does.
    let setup = Setup::start_with_body_limit(Some(64 * 1024)).await?;
    for size in [8 * 1024, 100 * 1024] {
        // Sent by hand: chunked, without Content-Length.
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let address = setup.base.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        let head = format!(
            "POST /api/attachments HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n",
            setup.token
        );
        stream.write_all(head.as_bytes()).await?;
        for _ in 0..size / 1024 {
            // A peer that answered early may close before the rest arrives.
            if stream
                .write_all(&[b"400\r\n".as_slice(), &[b'a'; 1024], b"\r\n"].concat())
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = stream.write_all(b"0\r\n\r\n").await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        if size > 64 * 1024 {
            assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
            assert!(answer.contains("too_large"), "{answer}");
        } else {
            assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
        }
    }
    assert_eq!(files_under(&setup.dir.join("files/.staging")), 0, "no staging file left");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn attachments_are_stored_once_by_content_with_their_type() -> anyhow::Result<()> {
    let setup = Setup::start().await?;
    let mut png = Vec::new();
    image::DynamicImage::ImageRgba8(image::RgbaImage::new(4, 4))
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)?;
    let (status, _, first) =
        setup.send(reqwest::Method::POST, "/api/attachments", Some(png.clone())).await?;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["content_type"], "image/png");
    assert_eq!(first["size"], png.len());
    let url = first["url"].as_str().unwrap_or_default();
    assert!(
        url.starts_with(&format!("{STATIC_URL}files/blobs/")) && url.ends_with(".png"),
        "{url}"
    );
    assert_eq!(std::fs::read(setup.file_of(url))?, png);
    let (_, _, again) = setup.send(reqwest::Method::POST, "/api/attachments", Some(png)).await?;
    assert_eq!(again["url"], first["url"], "stored once");
    assert_eq!(files_under(&setup.dir.join("files/blobs")), 1);

    let (status, _, text) = setup
        .send(reqwest::Method::POST, "/api/attachments", Some(b"build log\nok\n".to_vec()))
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    assert_eq!(text["content_type"], "text/plain");
    assert!(text["url"].as_str().unwrap_or_default().ends_with(".txt"));
    Ok(())
}
