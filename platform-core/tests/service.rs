//! The service shell: operational endpoints in-process, limits and shutdown over real sockets.

use std::io;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use platform_core::service::{ReadinessCheck, RouteLimits, ServiceShell};
use tower::ServiceExt as _;

async fn call(
    router: &Router,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = router.clone().oneshot(request).await.expect("routers are infallible");
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body reads");
    (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
}

fn get_request(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).expect("valid request")
}

fn failing(name: &'static str, message: &'static str) -> ReadinessCheck {
    ReadinessCheck::new(name, move || async move { Err::<(), _>(io::Error::other(message)) })
}

fn passing(name: &'static str) -> ReadinessCheck {
    ReadinessCheck::new(name, || async { Ok::<(), io::Error>(()) })
}

#[tokio::test]
async fn healthz_answers_while_readyz_names_the_failing_dependency() {
    let router = ServiceShell::new("test")
        .with_readiness(passing("redis"))
        .with_readiness(failing("database", "connection refused"))
        .router();

    let (status, _, body) = call(&router, get_request("/healthz")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#"{"status":"alive"}"#));

    let (status, headers, body) = call(&router, get_request("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["content-type"], "application/json");
    let report: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(report["status"], "unavailable");
    assert_eq!(report["failed"], serde_json::json!(["database"]));
    assert_eq!(report["checks"][0]["name"], "redis");
    assert_eq!(report["checks"][0]["ok"], true);
    assert_eq!(report["checks"][1]["error"], "connection refused");
}

#[tokio::test]
async fn readyz_is_ok_when_every_check_passes() {
    let router = ServiceShell::new("test")
        .with_readiness(passing("a"))
        .with_readiness(passing("b"))
        .router();
    let (status, _, body) = call(&router, get_request("/readyz")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(r#""status":"ready""#));
}

#[tokio::test]
async fn a_check_that_hangs_fails_within_its_timeout() {
    let hanging = ReadinessCheck::new("slow", || async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<(), io::Error>(())
    });
    let router = ServiceShell::new("test").with_readiness(hanging).router();
    let started = Instant::now();
    let (status, _, body) = call(&router, get_request("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("no answer within 3 s"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_directory_check_names_the_missing_path() {
    let missing = std::env::temp_dir().join(platform_test_support::unique_name("absent"));
    let router = ServiceShell::new("test")
        .with_readiness(ReadinessCheck::directory("static_root", &missing))
        .router();
    let (status, _, body) = call(&router, get_request("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("cannot read directory"), "{body}");

    std::fs::create_dir_all(&missing).expect("temp dir is writable");
    let (status, _, _) = call(&router, get_request("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn requests_are_counted_by_route_pattern_and_status() {
    let routes = Router::new()
        .route("/items/{id}", get(|Path(id): Path<u32>| async move { id.to_string() }));
    let router = ServiceShell::new("test").with_routes(routes).router();
    for path in ["/items/1", "/items/2", "/items/x", "/nowhere"] {
        call(&router, get_request(path)).await;
    }
    let (status, headers, metrics) = call(&router, get_request("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("application/openmetrics-text")
    );
    for line in [
        r#"http_requests_total{method="GET",route="/items/{id}",status="200"} 2"#,
        r#"http_requests_total{method="GET",route="/items/{id}",status="400"} 1"#,
        r#"http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
        r#"http_request_duration_seconds_count{method="GET",route="/items/{id}"} 3"#,
        r#"service_info{service="test","#,
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    assert!(!metrics.contains("/items/1"), "raw paths must not become labels");
}

#[tokio::test]
async fn every_response_says_nosniff() {
    let routes = Router::new()
        .route("/json", get(|| async { axum::Json(serde_json::json!({"ok": true})) }))
        .route("/boom", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }));
    let router = ServiceShell::new("test").with_routes(routes).router();
    for path in ["/healthz", "/readyz", "/metrics", "/json", "/boom", "/missing"] {
        let (_, headers, _) = call(&router, get_request(path)).await;
        assert_eq!(
            headers.get("x-content-type-options").map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "{path}"
        );
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let router = ServiceShell::new("test").router();
    let (_, headers, _) = call(&router, get_request("/healthz")).await;
    assert_eq!(headers["x-request-id"].len(), 36, "a UUID");
    let request = Request::get("/healthz")
        .header("x-request-id", "abc-123")
        .body(Body::empty())
        .expect("valid");
    let (_, headers, _) = call(&router, request).await;
    assert_eq!(headers["x-request-id"], "abc-123");
}

#[tokio::test]
async fn oversized_bodies_get_413_and_slow_handlers_503() {
    let routes = Router::new()
        .route("/upload", post(|body: String| async move { body.len().to_string() }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
    let router = ServiceShell::new("test")
        .with_routes(routes)
        .with_limits(RouteLimits {
            request_timeout: Some(Duration::from_millis(200)),
            body_limit: Some(1024),
        })
        .router();

    let small = Request::post("/upload").body(Body::from(vec![b'a'; 1024])).expect("valid");
    assert_eq!(call(&router, small).await.2, "1024");
    let large = Request::post("/upload").body(Body::from(vec![b'a'; 1025])).expect("valid");
    assert_eq!(call(&router, large).await.0, StatusCode::PAYLOAD_TOO_LARGE);

    let started = Instant::now();
    assert_eq!(call(&router, get_request("/slow")).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_panicking_handler_answers_500_and_the_service_goes_on() {
    let routes = Router::new().route(
        "/boom",
        get(|| async {
            if true {
                panic!("handler bug")
            }
        }),
    );
    let router = ServiceShell::new("test").with_routes(routes).router();
    assert_eq!(call(&router, get_request("/boom")).await.0, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(call(&router, get_request("/healthz")).await.0, StatusCode::OK);
}

/// A service answering every path with it, or panicking on `/boom`.
fn echo_service() -> impl tower::Service<
    Request<Body>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future: Send,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(|request: Request<Body>| async move {
        let path = request.uri().path().to_owned();
        assert!(path != "/boom", "service bug");
        Ok(axum::response::IntoResponse::into_response(format!("service saw {path}")))
    })
}

#[tokio::test]
async fn a_service_answers_every_other_path_with_the_shell_around_it() {
    // Without routes or limits the service is called directly.
    let router = ServiceShell::new("test")
        .with_service(echo_service())
        .with_limits(RouteLimits { request_timeout: None, body_limit: None })
        .router();
    let (status, headers, body) = call(&router, get_request("/any/path")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "service saw /any/path"));
    assert_eq!(headers["x-request-id"].len(), 36, "the shell's layers apply");
    assert_eq!(call(&router, get_request("/boom")).await.0, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(call(&router, get_request("/healthz")).await.2, r#"{"status":"alive"}"#);
    let metrics = call(&router, get_request("/metrics")).await.2;
    for line in [
        r#"http_requests_total{method="GET",route="unmatched",status="200"} 1"#,
        r#"http_requests_total{method="GET",route="unmatched",status="500"} 1"#,
        r#"http_requests_total{method="GET",route="/healthz",status="200"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }

    // Next to routes (and with the default limits), it answers what they do not.
    let routes = Router::new().route("/route", get(|| async { "route" }));
    let router =
        ServiceShell::new("test").with_routes(routes).with_service(echo_service()).router();
    assert_eq!(call(&router, get_request("/route")).await.2, "route");
    assert_eq!(call(&router, get_request("/other")).await.2, "service saw /other");
}

/// Starts a shell on a real socket with a `/slow` route; returns its address and the server task.
async fn serve_slow(
    grace: Duration,
    work: Duration,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let routes = Router::new().route(
        "/slow",
        get(move || async move {
            tokio::time::sleep(work).await;
            "done"
        }),
    );
    let shell = ServiceShell::new("test").with_routes(routes).with_shutdown_grace(grace);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("loopback binds");
    let addr = listener.local_addr().expect("bound");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        shell
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
            .expect("serves");
    });
    (addr, stop, server)
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_and_refuses_new_connections() {
    let (addr, stop, server) =
        serve_slow(Duration::from_secs(10), Duration::from_millis(1500)).await;
    let in_flight = tokio::spawn(reqwest::get(format!("http://{addr}/slow")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(()).expect("server is running");

    let response = in_flight.await.expect("joins").expect("the in-flight request completes");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "done");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns")
        .expect("no panic");
    assert!(reqwest::get(format!("http://{addr}/healthz")).await.is_err(), "no longer accepting");
}

#[tokio::test]
async fn shutdown_gives_up_on_requests_that_outlast_the_grace_period() {
    let (addr, stop, server) =
        serve_slow(Duration::from_millis(500), Duration::from_secs(60)).await;
    let in_flight = tokio::spawn(reqwest::get(format!("http://{addr}/slow")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    stop.send(()).expect("server is running");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns")
        .expect("no panic");
    assert!(started.elapsed() < Duration::from_secs(3));
    // The abandoned connection ends with the runtime, as it does when `main` returns.
    in_flight.abort();
}

/// Reads from `stream` until it closes; returns what came and how long it took.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> (String, Duration) {
    use tokio::io::AsyncReadExt as _;
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0_u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(read)) => received.extend_from_slice(&buf[..read]),
            Err(_) => panic!("the connection stayed open for 10 s"),
        }
    }
    (String::from_utf8_lossy(&received).into_owned(), started.elapsed())
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_cut_off() {
    use tokio::io::AsyncWriteExt as _;
    let shell = ServiceShell::new("test").with_header_timeout(Duration::from_millis(800));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("loopback binds");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(async move { shell.serve(listener, std::future::pending()).await });

    // A header line every 300 ms never completes a request: cut off at the bound, not after
    // the last line.
    let mut trickle = tokio::net::TcpStream::connect(addr).await.expect("connects");
    trickle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.expect("sends");
    let started = Instant::now();
    let feeding = tokio::spawn(async move {
        for i in 0..30 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if trickle.write_all(format!("X-Slow-{i}: y\r\n").as_bytes()).await.is_err() {
                return (trickle, i);
            }
        }
        (trickle, 30)
    });
    let (mut trickle, lines) = feeding.await.expect("joins");
    let (_, _) = read_until_closed(&mut trickle).await;
    assert!(lines < 10, "the server took {lines} header lines");
    assert!(started.elapsed() < Duration::from_secs(4), "cut off after {:?}", started.elapsed());

    // A connection that never says anything, and one left idle after an answer.
    let mut silent = tokio::net::TcpStream::connect(addr).await.expect("connects");
    let (said, took) = read_until_closed(&mut silent).await;
    assert!(took < Duration::from_secs(3), "a silent connection stayed {took:?}");
    assert!(!said.contains("200 OK"), "{said}");
    let mut idle = tokio::net::TcpStream::connect(addr).await.expect("connects");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("sends");
    let (said, took) = read_until_closed(&mut idle).await;
    assert!(said.starts_with("HTTP/1.1 200"), "{said}");
    assert!(took < Duration::from_secs(3), "an idle connection stayed {took:?}");

    // Requests that come in time are answered as ever.
    let response = reqwest::get(format!("http://{addr}/healthz")).await.expect("answers");
    assert_eq!(response.status(), 200);
}
