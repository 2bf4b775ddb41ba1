//! The static file service over a real socket: reqwest for the HTTP behaviours, raw requests for
//! the traversal corpus (a client library would normalise the paths first).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use platform_storage::Root;
use platform_storage::serve::{StaticFiles, StaticOptions};
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};

const HELLO: &str = "hello world";

struct Server {
    addr: SocketAddr,
    dir: PathBuf,
    client: reqwest::Client,
}

impl Server {
    /// Serves `<dir>/root`, next to `<dir>/outside` (a secret the root must not reveal).
    async fn start() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(platform_test_support::unique_name("static"));
        let root = dir.join("root");
        write(&root.join("a/hello.txt"), HELLO.as_bytes());
        write(&root.join("style.css"), b"body { color: red }");
        write(&root.join("app.js"), b"console.log('identity')");
        write(&root.join("app.js.gz"), b"gzip bytes");
        write(&root.join("app.js.br"), b"brotli bytes");
        write(&root.join("files/blobs/ab/cd/abcd"), b"content-addressed");
        write(&root.join(".hidden"), b"hidden");
        write(&dir.join("outside/secret.txt"), b"TOP SECRET");
        std::os::unix::fs::symlink("../outside/secret.txt", root.join("link"))?;
        std::os::unix::fs::symlink("../outside", root.join("linkdir"))?;
        std::os::unix::fs::symlink("a/hello.txt", root.join("inner-link"))?;

        let options = StaticOptions {
            keep_open_for: std::time::Duration::from_millis(500),
            ..StaticOptions::default()
        };
        let files = StaticFiles::new(Root::open(&root)?, options);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, files.router()).await });
        Ok(Self { addr, dir, client: reqwest::Client::new() })
    }

    async fn get(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(StatusCode, HeaderMap, String)> {
        self.request(reqwest::Method::GET, path, headers).await
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(StatusCode, HeaderMap, String)> {
        let mut request = self.client.request(method, format!("http://{}{path}", self.addr));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await?;
        let (status, headers) = (response.status(), response.headers().clone());
        Ok((status, headers, response.text().await?))
    }

    /// Sends `target` byte for byte and returns the status code and the whole answer.
    async fn raw(&self, target: &str) -> anyhow::Result<(u16, String)> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(self.addr).await?;
        let request = format!("GET {target} HTTP/1.1\r\nHost: static\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut answer))
            .await
            .map_err(|_| anyhow::anyhow!("{target}: no complete answer within 5 s"))??;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer.get(9..12).and_then(|code| code.parse().ok()).unwrap_or(0);
        Ok((status, answer))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("has a parent")).expect("creates directories");
    std::fs::write(path, bytes).expect("writes");
}

fn header(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

#[tokio::test]
async fn files_come_with_type_validators_and_nosniff() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (status, headers, body) = server.get("/a/hello.txt", &[]).await?;
    assert_eq!((status, body.as_str()), (StatusCode::OK, HELLO));
    assert!(header(&headers, header::CONTENT_TYPE).starts_with("text/plain"));
    assert_eq!(header(&headers, header::CONTENT_LENGTH), "11");
    let etag = header(&headers, header::ETAG);
    assert!(etag.starts_with('"') && !etag.starts_with("W/"), "a strong ETag: {etag}");
    assert!(!header(&headers, header::LAST_MODIFIED).is_empty());
    assert_eq!(header(&headers, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    assert_eq!(header(&headers, header::CACHE_CONTROL), "public, no-cache");
    assert_eq!(header(&headers, header::ACCEPT_RANGES), "bytes");

    let (_, css, _) = server.get("/style.css", &[]).await?;
    assert!(header(&css, header::CONTENT_TYPE).starts_with("text/css"));

    let (status, head, body) = server.request(reqwest::Method::HEAD, "/a/hello.txt", &[]).await?;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    assert_eq!(header(&head, header::ETAG), etag);
    assert_eq!(header(&head, header::CONTENT_LENGTH), "11");

    let (status, _, _) = server.request(reqwest::Method::POST, "/a/hello.txt", &[]).await?;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    let (status, _, body) = server.get("/inner-link", &[]).await?;
    assert_eq!((status, body.as_str()), (StatusCode::OK, HELLO), "a symlink within the root works");
    Ok(())
}

#[tokio::test]
async fn conditional_requests_answer_304_and_etags_win_over_dates() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (_, headers, _) = server.get("/a/hello.txt", &[]).await?;
    let (etag, date) = (header(&headers, header::ETAG), header(&headers, header::LAST_MODIFIED));

    let (status, not_modified, body) =
        server.get("/a/hello.txt", &[("if-none-match", etag)]).await?;
    assert_eq!((status, body.as_str()), (StatusCode::NOT_MODIFIED, ""));
    assert_eq!(header(&not_modified, header::ETAG), etag);
    assert_eq!(header(&not_modified, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    let list = format!("\"other\", {etag}");
    assert_eq!(
        server.get("/a/hello.txt", &[("if-none-match", &list)]).await?.0,
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(
        server.get("/a/hello.txt", &[("if-none-match", "\"other\"")]).await?.0,
        StatusCode::OK
    );
    assert_eq!(
        server.get("/a/hello.txt", &[("if-modified-since", date)]).await?.0,
        StatusCode::NOT_MODIFIED
    );
    // RFC 9110 §13.2.2: with If-None-Match present, If-Modified-Since is ignored.
    let both = [("if-none-match", "\"other\""), ("if-modified-since", date)];
    assert_eq!(server.get("/a/hello.txt", &both).await?.0, StatusCode::OK);
    assert_eq!(
        server.get("/a/hello.txt", &[("if-match", "\"other\"")]).await?.0,
        StatusCode::PRECONDITION_FAILED
    );
    Ok(())
}

#[tokio::test]
async fn single_ranges_are_served_and_if_range_guards_them() -> anyhow::Result<()> {
    let server = Server::start().await?;
    for (range, part, content_range) in [
        ("bytes=0-4", "hello", "bytes 0-4/11"),
        ("bytes=6-", "world", "bytes 6-10/11"),
        ("bytes=-5", "world", "bytes 6-10/11"),
        ("bytes=6-100", "world", "bytes 6-10/11"),
    ] {
        let (status, headers, body) = server.get("/a/hello.txt", &[("range", range)]).await?;
        assert_eq!((status, body.as_str()), (StatusCode::PARTIAL_CONTENT, part), "{range}");
        assert_eq!(header(&headers, header::CONTENT_RANGE), content_range, "{range}");
        assert_eq!(header(&headers, header::CONTENT_LENGTH), "5", "{range}");
    }
    let (status, headers, _) = server.get("/a/hello.txt", &[("range", "bytes=100-200")]).await?;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&headers, header::CONTENT_RANGE), "bytes */11");

    let (_, headers, _) = server.get("/a/hello.txt", &[]).await?;
    let (etag, date) = (header(&headers, header::ETAG), header(&headers, header::LAST_MODIFIED));
    let ranged = |validator: &str| {
        [("range", "bytes=0-4"), ("if-range", validator)].map(|(n, v)| (n, v.to_owned()))
    };
    for (validator, expected) in [
        (etag.to_owned(), StatusCode::PARTIAL_CONTENT),
        (date.to_owned(), StatusCode::PARTIAL_CONTENT),
        ("\"stale\"".to_owned(), StatusCode::OK),
        ("Mon, 01 Jan 2001 00:00:00 GMT".to_owned(), StatusCode::OK),
    ] {
        let headers = ranged(&validator);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let (status, _, body) = server.get("/a/hello.txt", &headers).await?;
        assert_eq!(status, expected, "If-Range {validator}");
        assert_eq!(body.len(), if expected == StatusCode::OK { 11 } else { 5 });
    }
    Ok(())
}

#[tokio::test]
async fn precompressed_variants_go_to_clients_that_accept_them() -> anyhow::Result<()> {
    let server = Server::start().await?;
    for (accept, encoding, body) in [
        ("br, gzip", "br", "brotli bytes"),
        ("gzip", "gzip", "gzip bytes"),
        ("identity", "", "console.log('identity')"),
    ] {
        let (status, headers, text) = server.get("/app.js", &[("accept-encoding", accept)]).await?;
        assert_eq!((status, text.as_str()), (StatusCode::OK, body), "{accept}");
        assert_eq!(header(&headers, header::CONTENT_ENCODING), encoding, "{accept}");
        assert!(header(&headers, header::CONTENT_TYPE).contains("javascript"), "{accept}");
        assert!(header(&headers, header::VARY).to_ascii_lowercase().contains("accept-encoding"));
    }
    let (_, plain, _) = server.get("/app.js", &[]).await?;
    let (_, gzip, _) = server.get("/app.js", &[("accept-encoding", "gzip")]).await?;
    assert_ne!(
        header(&plain, header::ETAG),
        header(&gzip, header::ETAG),
        "one ETag per representation"
    );
    Ok(())
}

#[tokio::test]
async fn content_addressed_files_are_immutable_and_directories_are_not_listed() -> anyhow::Result<()>
{
    let server = Server::start().await?;
    let (status, headers, body) = server.get("/files/blobs/ab/cd/abcd", &[]).await?;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "content-addressed"));
    assert_eq!(header(&headers, header::CACHE_CONTROL), "public, max-age=31536000, immutable");
    for directory in ["/a", "/a/", "/", "/files/blobs/"] {
        let (status, headers, body) = server.get(directory, &[]).await?;
        assert_eq!(status, StatusCode::NOT_FOUND, "{directory}");
        assert!(!body.contains("hello.txt"), "{directory} listed: {body}");
        assert_eq!(header(&headers, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    }
    Ok(())
}

#[tokio::test]
async fn the_traversal_corpus_gets_404_and_nothing_from_outside() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let corpus = [
        "/../outside/secret.txt",
        "/a/../../outside/secret.txt",
        "/./a/../../outside/secret.txt",
        "/%2e%2e/outside/secret.txt",
        "/%2E%2E/outside/secret.txt",
        "/a/%2e%2e/%2e%2e/outside/secret.txt",
        "/%252e%252e/outside/secret.txt",
        "/..%2foutside%2fsecret.txt",
        "/a/..%2f..%2foutside%2fsecret.txt",
        "/..%5coutside%5csecret.txt",
        "/..\\outside\\secret.txt",
        "/a\\..\\..\\outside\\secret.txt",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
        "/%2Fetc/passwd",
        "/etc/passwd",
        "/link",
        "/linkdir/secret.txt",
        "/.hidden",
        "/%2ehidden",
        "/a/hello.txt%00.png",
        "/a/%00",
        "/%c0%ae%c0%ae/outside/secret.txt",
    ];
    for target in corpus {
        let (status, answer) = server.raw(target).await?;
        assert_eq!(status, 404, "{target}:\n{answer}");
        assert!(!answer.contains("TOP SECRET"), "{target} leaked:\n{answer}");
    }
    // The corpus was refused, not the server broken.
    assert_eq!(server.raw("/a/hello.txt").await?.0, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn large_files_stream_whole_and_in_ranges_even_when_not_cached() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let path = server.dir.join("root/large.bin");
    let content: Vec<u8> = (0..3 * 1024 * 1024 + 17)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &content)?;
    let file = std::fs::File::open(&path)?;
    file.sync_all()?;
    // Out of the page cache, so that reads go to the blocking pool rather than the fast path.
    rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed)?;

    let url = format!("http://{}/large.bin", server.addr);
    let whole = server.client.get(&url).send().await?.bytes().await?;
    assert!(whole.as_ref() == content.as_slice(), "the whole file, byte for byte");
    rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed)?;
    let part = server.client.get(&url).header("range", "bytes=1000000-2999999").send().await?;
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert!(part.bytes().await?.as_ref() == &content[1_000_000..3_000_000]);
    Ok(())
}

#[tokio::test]
async fn kept_open_files_never_outlive_a_change_of_the_file_or_its_path() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let root = server.dir.join("root");
    let path = root.join("a/page.html");
    write(&path, b"first");
    let page = "/a/page.html";
    let (_, first, body) = server.get(page, &[]).await?;
    assert_eq!(body, "first");
    // Kept open now: a second request comes from the kept file.
    assert_eq!(server.get(page, &[]).await?.2, "first");

    // Replaced by rename (a new inode), as atomic writes do.
    let replacement = root.join("a/page.new");
    write(&replacement, b"second");
    std::fs::rename(&replacement, &path)?;
    let (_, second, body) = server.get(page, &[]).await?;
    assert_eq!(body, "second");
    assert_ne!(header(&first, header::ETAG), header(&second, header::ETAG));

    // Rewritten in place (the same inode, the same size).
    std::fs::write(&path, b"third!")?;
    let (_, third, body) = server.get(page, &[]).await?;
    assert_eq!(body, "third!");
    assert_ne!(header(&second, header::ETAG), header(&third, header::ETAG));

    // Made a symlink out of the root: refused, although a file was kept under that path.
    std::fs::remove_file(&path)?;
    std::os::unix::fs::symlink(server.dir.join("outside/secret.txt"), &path)?;
    let (status, _, body) = server.get(page, &[]).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!body.contains("TOP SECRET"));

    // Removed.
    std::fs::remove_file(&path)?;
    assert_eq!(server.get(page, &[]).await?.0, StatusCode::NOT_FOUND);
    write(&path, b"back");
    assert_eq!(server.get(page, &[]).await?.2, "back");
    Ok(())
}

#[tokio::test]
async fn kept_files_are_let_go_so_removed_ones_free_their_space() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let path = server.dir.join("root/a/removed.bin");
    write(&path, b"soon gone");
    assert_eq!(server.get("/a/removed.bin", &[]).await?.2, "soon gone");
    std::fs::remove_file(&path)?;
    let held = || {
        std::fs::read_dir("/proc/self/fd").into_iter().flatten().flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| target.to_string_lossy().contains("removed.bin"))
        })
    };
    assert!(held(), "kept open after the first request");
    // Past the keep-open period, any request lets every kept file go.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(server.get("/a/hello.txt", &[]).await?.2, HELLO);
    assert!(!held(), "the removed file is no longer held open");
    Ok(())
}

#[tokio::test]
async fn a_precompressed_sibling_is_found_as_soon_as_it_appears() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let dir = server.dir.join("root/lib");
    write(&dir.join("site.css"), b"plain css");
    // Only a directory unchanged for a second is trusted to stay without siblings.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let accepts = [("accept-encoding", "gzip, br")];
    for _ in 0..2 {
        // The second time, that there are no siblings is known from the first.
        let (_, headers, body) = server.get("/lib/site.css", &accepts).await?;
        assert_eq!(body, "plain css");
        assert!(headers.get(header::CONTENT_ENCODING).is_none());
    }
    write(&dir.join("site.css.gz"), b"gzip css");
    let (_, headers, body) = server.get("/lib/site.css", &accepts).await?;
    assert_eq!((body.as_str(), header(&headers, header::CONTENT_ENCODING)), ("gzip css", "gzip"));
    write(&dir.join("site.css.br"), b"brotli css");
    let (_, headers, body) = server.get("/lib/site.css", &accepts).await?;
    assert_eq!((body.as_str(), header(&headers, header::CONTENT_ENCODING)), ("brotli css", "br"));
    std::fs::remove_file(dir.join("site.css.br"))?;
    std::fs::remove_file(dir.join("site.css.gz"))?;
    let (_, headers, body) = server.get("/lib/site.css", &accepts).await?;
    assert_eq!(body, "plain css");
    assert!(headers.get(header::CONTENT_ENCODING).is_none());
    Ok(())
}
