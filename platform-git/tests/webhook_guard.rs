//! The SSRF guard and the delivery client against real receivers on real addresses.
//!
//! Each test runs in a network namespace of its own: it creates one (`ip netns add`, as root),
//! with an `/etc/hosts` of its own (`/etc/netns/<name>/hosts`, which `ip netns exec` mounts over
//! `/etc/hosts`), and runs itself again inside it. There, an interface (one end of a veth pair) carries private,
//! metadata, unique-local and "public" (documentation range) addresses, receivers listen on
//! them, and a real [`DeliveryClient`] sends to them. Nothing leaves the namespace: it has no
//! route to anywhere else. The namespace and its `/etc/netns` directory are removed whatever
//! happens.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt as _;
use hmac::{Hmac, Mac as _};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use platform_git::webhooks::client::{
    AttemptOutcome, ClientOptions, DeliveryClient, OutgoingRequest,
};
use platform_git::webhooks::guard::{AllowList, Guard};
use platform_git::webhooks::sign::signature_headers;
use sha2::Sha256;
use tokio::net::TcpListener;

const IP: &str = "/usr/sbin/ip";
/// Set (to the test's name) when the test runs inside its namespace.
const INSIDE: &str = "WEBHOOK_GUARD_TEST_NETNS";
/// A file the inner run writes once its body passed: an inner run that ran no test fails.
const DONE_FILE: &str = "WEBHOOK_GUARD_TEST_DONE";

const HOSTS: &str = "\
127.0.0.1 localhost
::1 localhost
10.77.0.2 internal.test
192.168.77.2 private.test
169.254.169.254 metadata.test
203.0.113.7 public.test
203.0.113.7 mixed.test
10.77.0.2 mixed.test
";

/// The addresses of the namespace's interface `d0`.
const ADDRESSES: [&str; 5] =
    ["10.77.0.2/24", "192.168.77.2/24", "169.254.169.254/32", "203.0.113.7/24", "fd77::2/64"];

/// The port every receiver listens on (the namespace is the test's own: nothing else is there).
const PORT: u16 = 8080;

/// The name of the enclosing test function.
macro_rules! test_name {
    () => {{
        fn here() {}
        let path = std::any::type_name_of_val(&here);
        path.strip_suffix("::here")
            .and_then(|path| path.rsplit("::").next())
            .expect("a function path")
    }};
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn the_default_guard_refuses_internal_addresses_and_nothing_reaches_them() {
    in_netns(test_name!(), async {
        let private = Receiver::start("10.77.0.2", Answer::Ok).await?;
        let other_private = Receiver::start("192.168.77.2", Answer::Ok).await?;
        let metadata = Receiver::start("169.254.169.254", Answer::Ok).await?;
        let loopback = Receiver::start("127.0.0.1", Answer::Ok).await?;
        let unique_local = Receiver::start("fd77::2", Answer::Ok).await?;
        let client = client(AllowList::default(), ClientOptions::default())?;

        let refused = [
            ("http://10.77.0.2:8080/hook", "payload URL address 10.77.0.2 is a private address"),
            ("http://192.168.77.2:8080/hook", "address 192.168.77.2 is a private address"),
            (
                "http://169.254.169.254:8080/latest/meta-data/",
                "address 169.254.169.254 is a cloud metadata address",
            ),
            ("http://127.0.0.1:8080/hook", "address 127.0.0.1 is a loopback address"),
            (
                "http://[::ffff:127.0.0.1]:8080/hook",
                "address ::ffff:127.0.0.1 (that is 127.0.0.1) is a loopback address",
            ),
            ("http://[fd77::2]:8080/hook", "address fd77::2 is a unique-local address"),
            (
                "http://internal.test:8080/hook",
                "payload URL host \"internal.test\" resolves to 10.77.0.2, a private address; \
                 allow it with APP_WEBHOOK_ALLOWED_HOSTS",
            ),
            ("http://private.test:8080/hook", "\"private.test\" resolves to 192.168.77.2"),
            (
                "http://metadata.test:8080/hook",
                "\"metadata.test\" resolves to 169.254.169.254, a cloud metadata address",
            ),
            // One refused address refuses the host, whatever else it resolves to.
            ("http://mixed.test:8080/hook", "\"mixed.test\" resolves to 10.77.0.2"),
        ];
        for (url, message) in refused {
            let outcome = client.send(post(url)).await;
            let error = outcome.error.as_deref().unwrap_or_default();
            ensure!(
                error.starts_with("refused by the SSRF guard: ") && error.contains(message),
                "{url}: expected a refusal containing {message:?}, got {outcome:?}"
            );
            ensure!(outcome.status.is_none() && !outcome.delivered(), "{url}: {outcome:?}");
        }
        for receiver in [&private, &other_private, &metadata, &loopback, &unique_local] {
            ensure!(
                receiver.connections() == 0,
                "{} was connected to {} times",
                receiver.address,
                receiver.connections()
            );
        }
        // The public address next to them is reached (the receivers above are reachable too:
        // the tests with allow lists deliver to each of them).
        let public = Receiver::start("203.0.113.7", Answer::Ok).await?;
        let outcome = client.send(post("http://mixed.test:8080/hook")).await;
        ensure!(!outcome.delivered() && public.connections() == 0, "{outcome:?}");
        let outcome = client.send(post("http://public.test:8080/hook")).await;
        ensure!(outcome.delivered(), "{outcome:?}");
        Ok(())
    });
}

#[test]
fn a_public_receiver_gets_exactly_the_body_and_headers_sent() {
    in_netns(test_name!(), async {
        let public = Receiver::start("203.0.113.7", Answer::Ok).await?;
        let client = client(AllowList::default(), ClientOptions::default())?;
        let body = Bytes::from_static(br#"{"ref":"refs/heads/main","zen":"Keep it simple."}"#);
        let mut headers = vec![
            ("X-GitHub-Event".to_owned(), "push".to_owned()),
            ("X-GitHub-Delivery".to_owned(), "dlv-1".to_owned()),
        ];
        headers.extend(signature_headers(Some("s3cret"), "dlv-1", 1_700_000_000, &body));
        let request = OutgoingRequest {
            url: "http://public.test:8080/hooks/forge?x=1".parse()?,
            verify_tls: true,
            headers,
            body: body.clone(),
        };
        let outcome = client.send(request).await;
        ensure!(outcome.delivered() && outcome.error.is_none(), "{outcome:?}");
        ensure!(outcome.status == Some(200), "{outcome:?}");
        ensure!(outcome.response_body == b"ok" && !outcome.response_truncated, "{outcome:?}");
        ensure!(
            header(&outcome.response_headers, "x-receiver") == Some("test"),
            "{:?}",
            outcome.response_headers
        );
        ensure!(outcome.retry_after.is_none(), "{outcome:?}");

        let received = public.requests();
        ensure!(received.len() == 1, "{received:?}");
        let received = &received[0];
        ensure!(received.method == "POST" && received.target == "/hooks/forge?x=1", "{received:?}");
        ensure!(received.body == body, "the body arrived changed: {received:?}");
        // Exactly what the outcome says was sent, no more and no less.
        let mut sent = outcome.request_headers.clone();
        let mut got = received.headers.clone();
        sent.iter_mut().for_each(|(name, _)| name.make_ascii_lowercase());
        sent.sort();
        got.sort();
        ensure!(sent == got, "sent {sent:?}\nreceived {got:?}");
        for (name, value) in [
            ("content-type", "application/json"),
            ("host", "public.test:8080"),
            ("x-github-event", "push"),
            ("webhook-id", "dlv-1"),
            ("webhook-timestamp", "1700000000"),
        ] {
            ensure!(header(&got, name) == Some(value), "{name}: {got:?}");
        }
        ensure!(
            header(&got, "user-agent").is_some_and(|agent| agent.starts_with("platform-Hookshot/")),
            "{got:?}"
        );
        // The receiver can verify the signature over the bytes it got.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret")?;
        mac.update(&received.body);
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        ensure!(header(&got, "x-hub-signature-256") == Some(expected.as_str()), "{got:?}");
        Ok(())
    });
}

#[test]
fn a_cidr_entry_lets_its_addresses_through_and_only_those() {
    in_netns(test_name!(), async {
        let private = Receiver::start("10.77.0.2", Answer::Ok).await?;
        let other_private = Receiver::start("192.168.77.2", Answer::Ok).await?;
        let client = client(AllowList::parse("10.77.0.0/24")?, ClientOptions::default())?;

        let outcome = client.send(post("http://10.77.0.2:8080/literal")).await;
        ensure!(outcome.delivered(), "{outcome:?}");
        let outcome = client.send(post("http://internal.test:8080/named")).await;
        ensure!(outcome.delivered(), "{outcome:?}");
        let outcome = client.send(post("http://[::ffff:10.77.0.2]:8080/mapped")).await;
        ensure!(outcome.delivered(), "{outcome:?}");
        let targets: Vec<String> = private.requests().into_iter().map(|got| got.target).collect();
        ensure!(targets == ["/literal", "/named", "/mapped"], "{targets:?}");

        let outcome = client.send(post("http://192.168.77.2:8080/hook")).await;
        ensure!(refused_with(&outcome, "192.168.77.2 is a private address"), "{outcome:?}");
        ensure!(other_private.connections() == 0, "192.168.77.2 was connected to");
        Ok(())
    });
}

#[test]
fn private_allows_private_ranges_but_never_metadata_nor_loopback() {
    in_netns(test_name!(), async {
        let private = Receiver::start("192.168.77.2", Answer::Ok).await?;
        let unique_local = Receiver::start("fd77::2", Answer::Ok).await?;
        let metadata = Receiver::start("169.254.169.254", Answer::Ok).await?;
        let loopback = Receiver::start("127.0.0.1", Answer::Ok).await?;
        let client = client(AllowList::parse("private")?, ClientOptions::default())?;

        for url in ["http://192.168.77.2:8080/hook", "http://private.test:8080/hook"] {
            let outcome = client.send(post(url)).await;
            ensure!(outcome.delivered(), "{url}: {outcome:?}");
        }
        let outcome = client.send(post("http://[fd77::2]:8080/hook")).await;
        ensure!(outcome.delivered(), "{outcome:?}");
        ensure!(private.requests().len() == 2 && unique_local.requests().len() == 1);

        for (url, message) in [
            ("http://169.254.169.254:8080/latest/", "169.254.169.254 is a cloud metadata address"),
            ("http://metadata.test:8080/latest/", "resolves to 169.254.169.254, a cloud metadata"),
            ("http://[::ffff:169.254.169.254]:8080/", "(that is 169.254.169.254) is a cloud"),
            ("http://127.0.0.1:8080/hook", "127.0.0.1 is a loopback address"),
        ] {
            let outcome = client.send(post(url)).await;
            ensure!(refused_with(&outcome, message), "{url}: {outcome:?}");
        }
        ensure!(metadata.connections() == 0, "the metadata address was connected to");
        ensure!(loopback.connections() == 0, "the loopback address was connected to");
        Ok(())
    });
}

#[test]
fn entries_naming_a_host_loopback_or_metadata_allow_exactly_those() {
    in_netns(test_name!(), async {
        let private = Receiver::start("10.77.0.2", Answer::Ok).await?;
        let metadata = Receiver::start("169.254.169.254", Answer::Ok).await?;
        let loopback = Receiver::start("127.0.0.1", Answer::Ok).await?;

        // A host allowed by name goes wherever it resolves; its address alone is not allowed.
        let by_name = client(AllowList::parse("INTERNAL.test")?, ClientOptions::default())?;
        let outcome = by_name.send(post("http://internal.test:8080/named")).await;
        ensure!(outcome.delivered(), "{outcome:?}");
        let outcome = by_name.send(post("http://10.77.0.2:8080/literal")).await;
        ensure!(refused_with(&outcome, "10.77.0.2 is a private address"), "{outcome:?}");
        let outcome = by_name.send(post("http://mixed.test:8080/other-name")).await;
        ensure!(refused_with(&outcome, "\"mixed.test\" resolves to 10.77.0.2"), "{outcome:?}");
        let targets: Vec<String> = private.requests().into_iter().map(|got| got.target).collect();
        ensure!(targets == ["/named"], "{targets:?}");

        let exact = client(AllowList::parse("169.254.169.254")?, ClientOptions::default())?;
        let outcome = exact.send(post("http://169.254.169.254:8080/latest/")).await;
        ensure!(outcome.delivered(), "{outcome:?}");
        ensure!(metadata.requests().len() == 1);

        let local = client(AllowList::parse("loopback")?, ClientOptions::default())?;
        for url in ["http://127.0.0.1:8080/v4", "http://[::ffff:127.0.0.1]:8080/mapped"] {
            let outcome = local.send(post(url)).await;
            ensure!(outcome.delivered(), "{url}: {outcome:?}");
        }
        ensure!(loopback.requests().len() == 2);
        Ok(())
    });
}

#[test]
fn a_redirect_is_a_failure_and_its_target_is_never_contacted() {
    in_netns(test_name!(), async {
        let target = Receiver::start_on("203.0.113.7", 8081, Answer::Ok, None).await?;
        let redirecting = Receiver::start(
            "203.0.113.7",
            Answer::Redirect("http://203.0.113.7:8081/elsewhere".to_owned()),
        )
        .await?;
        let client = client(AllowList::default(), ClientOptions::default())?;
        let outcome = client.send(post("http://public.test:8080/hook")).await;
        ensure!(outcome.status == Some(302) && !outcome.delivered(), "{outcome:?}");
        ensure!(
            outcome.error.as_deref()
                == Some("redirect (302 to http://203.0.113.7:8081/elsewhere) not followed"),
            "{outcome:?}"
        );
        ensure!(redirecting.requests().len() == 1);
        ensure!(target.connections() == 0, "the redirect target was contacted");
        Ok(())
    });
}

#[test]
fn timeouts_and_unreachable_receivers_give_clear_errors() {
    in_netns(test_name!(), async {
        let _slow = Receiver::start("203.0.113.7", Answer::Sleep(Duration::from_secs(5))).await?;
        let _stalling = Receiver::start_on("203.0.113.7", 8081, Answer::StallBody, None).await?;
        let options = ClientOptions {
            timeout: Duration::from_millis(600),
            connect_timeout: Duration::from_millis(300),
            ..ClientOptions::default()
        };
        let client = client(AllowList::default(), options)?;

        let started = Instant::now();
        let outcome = client.send(post("http://public.test:8080/slow")).await;
        ensure!(
            outcome.error.as_deref() == Some("timed out after 600ms waiting for the response"),
            "{outcome:?}"
        );
        ensure!(outcome.status.is_none(), "{outcome:?}");
        ensure!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());

        let outcome = client.send(post("http://public.test:8081/stall")).await;
        ensure!(outcome.status == Some(200) && outcome.delivered(), "{outcome:?}");
        ensure!(
            outcome.error.as_deref()
                == Some("delivered, but timed out after 600ms reading the response body"),
            "{outcome:?}"
        );
        ensure!(outcome.response_body == b"first part", "{outcome:?}");

        // 203.0.113.99 is on d0's network, where nothing answers.
        let outcome = client.send(post("http://203.0.113.99:8080/hook")).await;
        ensure!(outcome.error.as_deref() == Some("connect timed out after 300ms"), "{outcome:?}");

        let outcome = client.send(post("http://203.0.113.7:9/closed")).await;
        ensure!(
            outcome.error.as_deref()
                == Some("failed to connect: Connection refused (os error 111)"),
            "{outcome:?}"
        );

        let outcome = client.send(post("http://nowhere.test:8080/hook")).await;
        let error = outcome.error.as_deref().unwrap_or_default();
        ensure!(
            error.starts_with("failed to resolve payload URL host \"nowhere.test\": "),
            "{outcome:?}"
        );
        Ok(())
    });
}

#[test]
fn answers_are_recorded_within_the_cap_and_read_within_the_limit() {
    in_netns(test_name!(), async {
        let _huge = Receiver::start("203.0.113.7", Answer::Body(3 * 1024 * 1024)).await?;
        let endless = Receiver::start_on("203.0.113.7", 8081, Answer::Endless, None).await?;
        let _busy = Receiver::start_on("203.0.113.7", 8082, Answer::Busy, None).await?;
        let options = ClientOptions { timeout: Duration::from_secs(20), ..Default::default() };
        let client = client(AllowList::default(), options)?;

        let outcome = client.send(post("http://public.test:8080/huge")).await;
        ensure!(outcome.delivered() && outcome.error.is_none(), "{:?}", outcome.error);
        ensure!(outcome.response_body.len() == 64 * 1024, "{}", outcome.response_body.len());
        ensure!(outcome.response_body == pattern(64 * 1024), "the recorded body is not its start");
        ensure!(outcome.response_truncated);

        // An answer that never ends is read up to the read limit, then dropped.
        let started = Instant::now();
        let outcome = client.send(post("http://public.test:8081/endless")).await;
        ensure!(outcome.delivered() && outcome.error.is_none(), "{:?}", outcome.error);
        ensure!(outcome.response_body == pattern(64 * 1024) && outcome.response_truncated);
        ensure!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
        let produced = endless.produced.load(Ordering::SeqCst);
        ensure!(produced < 16 * 1024 * 1024, "the client read on: {produced} bytes produced");

        let outcome = client.send(post("http://public.test:8082/busy")).await;
        ensure!(outcome.status == Some(503) && !outcome.delivered(), "{outcome:?}");
        ensure!(
            outcome.error.as_deref() == Some("receiver answered 503 Service Unavailable"),
            "{outcome:?}"
        );
        ensure!(outcome.retry_after == Some(Duration::from_secs(7)), "{outcome:?}");
        ensure!(outcome.response_body == b"come back later", "{outcome:?}");
        Ok(())
    });
}

#[test]
fn tls_is_verified_unless_the_hook_turns_it_off() {
    in_netns(test_name!(), async {
        let dir = tempfile::tempdir()?;
        let tls = self_signed_tls(dir.path())?;
        let receiver = Receiver::start_on("203.0.113.7", 8443, Answer::Ok, Some(tls)).await?;
        let client = client(AllowList::default(), ClientOptions::default())?;

        let outcome = client.send(post("https://public.test:8443/hook")).await;
        ensure!(
            outcome.error.as_deref()
                == Some("failed to connect: invalid peer certificate: UnknownIssuer"),
            "{outcome:?}"
        );
        ensure!(receiver.requests().is_empty());

        let mut unverified = post("https://public.test:8443/hook");
        unverified.verify_tls = false;
        let outcome = client.send(unverified).await;
        ensure!(outcome.delivered(), "{outcome:?}");
        ensure!(receiver.requests().len() == 1);
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn client(allow: AllowList, options: ClientOptions) -> anyhow::Result<DeliveryClient> {
    Ok(DeliveryClient::new(Guard::new(allow), options)?)
}

fn post(url: &str) -> OutgoingRequest {
    OutgoingRequest {
        url: url.parse().expect("a valid URL in the test"),
        verify_tls: true,
        headers: vec![("X-GitHub-Event".to_owned(), "ping".to_owned())],
        body: Bytes::from_static(br#"{"zen":"Design for failure."}"#),
    }
}

fn refused_with(outcome: &AttemptOutcome, message: &str) -> bool {
    outcome.status.is_none()
        && outcome.error.as_deref().is_some_and(|error| {
            error.starts_with("refused by the SSRF guard: ") && error.contains(message)
        })
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
}

/// `len` bytes of a recognizable pattern.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|index| b"0123456789abcdef"[index % 16]).collect()
}

/// What a receiver answers.
#[derive(Clone, Debug)]
enum Answer {
    /// 200 `ok`.
    Ok,
    /// 302 to this location.
    Redirect(String),
    /// 200 after this long.
    Sleep(Duration),
    /// 200 with this many bytes of [`pattern`].
    Body(usize),
    /// 200 with a body that never ends.
    Endless,
    /// 200, a first chunk, then nothing, ever.
    StallBody,
    /// 503 with `Retry-After: 7`.
    Busy,
}

#[derive(Clone, Debug)]
struct Received {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

/// An HTTP (or HTTPS) receiver that records every connection and request.
struct Receiver {
    address: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Received>>>,
    /// Bytes of an endless body handed to the connection so far.
    produced: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(ip: &str, answer: Answer) -> anyhow::Result<Self> {
        Self::start_on(ip, PORT, answer, None).await
    }

    async fn start_on(
        ip: &str,
        port: u16,
        answer: Answer,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> anyhow::Result<Self> {
        let address = SocketAddr::new(ip.parse()?, port);
        let listener =
            TcpListener::bind(address).await.with_context(|| format!("bind {address}"))?;
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let produced = Arc::new(AtomicUsize::new(0));
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn({
            let (connections, requests, produced) =
                (connections.clone(), requests.clone(), produced.clone());
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    connections.fetch_add(1, Ordering::SeqCst);
                    let (requests, produced, answer) =
                        (requests.clone(), produced.clone(), answer.clone());
                    let service = hyper::service::service_fn(move |request| {
                        respond(request, answer.clone(), requests.clone(), produced.clone())
                    });
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let http = hyper::server::conn::http1::Builder::new();
                        // Errors are the client's doing (a dropped connection): ignored.
                        match acceptor {
                            Some(acceptor) => {
                                if let Ok(stream) = acceptor.accept(stream).await {
                                    let _ =
                                        http.serve_connection(TokioIo::new(stream), service).await;
                                }
                            }
                            None => {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    });
                }
            }
        });
        Ok(Self { address, connections, requests, produced, task })
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> Vec<Received> {
        self.requests.lock().expect("the receiver's lock is never poisoned").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn respond(
    request: Request<Incoming>,
    answer: Answer,
    requests: Arc<Mutex<Vec<Received>>>,
    produced: Arc<AtomicUsize>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|collected| collected.to_bytes()).unwrap_or_default();
    requests.lock().expect("the receiver's lock is never poisoned").push(Received {
        method: parts.method.to_string(),
        target: parts.uri.path_and_query().map(ToString::to_string).unwrap_or_default(),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned())
            })
            .collect(),
        body,
    });
    let response = Response::builder().header("x-receiver", "test");
    let response = match answer {
        Answer::Ok => response.body(Body::from("ok")),
        Answer::Redirect(location) => {
            response.status(StatusCode::FOUND).header("location", location).body(Body::empty())
        }
        Answer::Sleep(duration) => {
            tokio::time::sleep(duration).await;
            response.body(Body::from("late"))
        }
        Answer::Body(len) => response.body(Body::from(pattern(len))),
        Answer::Endless => {
            let chunk = Bytes::from(pattern(16 * 1024));
            let stream = futures_util::stream::repeat(chunk).map(move |chunk| {
                produced.fetch_add(chunk.len(), Ordering::SeqCst);
                Ok::<_, Infallible>(chunk)
            });
            response.body(Body::from_stream(stream))
        }
        Answer::StallBody => {
            let first = futures_util::stream::once(async { Ok::<_, Infallible>("first part") });
            response.body(Body::from_stream(first.chain(futures_util::stream::pending())))
        }
        Answer::Busy => response
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("retry-after", "7")
            .body(Body::from("come back later")),
    };
    Ok(response.expect("a valid response"))
}

/// A server configuration with a self-signed certificate for `public.test`, made by `openssl`.
fn self_signed_tls(dir: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let output = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
        .args(["-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "2"])
        .args(["-subj", "/CN=public.test", "-addext", "subjectAltName=DNS:public.test"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .current_dir(dir)
        .output()
        .context("cannot run openssl")?;
    ensure!(output.status.success(), "openssl: {}", String::from_utf8_lossy(&output.stderr));
    let certificates =
        CertificateDer::pem_file_iter(dir.join("cert.pem"))?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(dir.join("key.pem"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certificates, key)?;
    Ok(Arc::new(config))
}

// ---------------------------------------------------------------------------------------------
// The namespace.

/// Runs `body` inside a network namespace made for this test (see the module docs).
fn in_netns(test: &str, body: impl Future<Output = anyhow::Result<()>>) {
    if std::env::var(INSIDE).as_deref() == Ok(test) {
        set_up_interfaces().expect("the namespace's interfaces are set up");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a runtime for the test");
        runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(60), body).await })
            .expect("the test finished within 60 s")
            .expect("the test passed inside its namespace");
        let done = std::env::var_os(DONE_FILE).expect("the outer run names a done file");
        std::fs::write(done, test).expect("the done file is written");
        return;
    }
    drop(body);
    let namespace = Namespace::create().expect("a network namespace (this test runs as root)");
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let done = scratch.path().join("done");
    let exe = std::env::current_exe().expect("the test binary's path");
    let status = Command::new(IP)
        .args(["netns", "exec", &namespace.name])
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(INSIDE, test)
        .env(DONE_FILE, &done)
        .status()
        .expect("ip netns exec runs");
    assert!(status.success(), "the test failed inside namespace {}: {status}", namespace.name);
    assert!(
        std::fs::read_to_string(&done).is_ok_and(|ran| ran == test),
        "the test did not run inside its namespace"
    );
}

fn set_up_interfaces() -> anyhow::Result<()> {
    run(&["link", "set", "lo", "up"])?;
    // A veth pair whose far end answers nothing (no `dummy` driver on every kernel): the
    // addresses on d0 are local, any other address of their networks never answers.
    run(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"])?;
    run(&["link", "set", "d1", "up"])?;
    run(&["link", "set", "d0", "up"])?;
    for address in ADDRESSES {
        if address.contains(':') {
            run(&["-6", "addr", "add", address, "dev", "d0", "nodad"])?;
        } else {
            run(&["addr", "add", address, "dev", "d0"])?;
        }
    }
    Ok(())
}

fn run(args: &[&str]) -> anyhow::Result<()> {
    let output =
        Command::new(IP).args(args).output().with_context(|| format!("cannot run {IP}"))?;
    ensure!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// A network namespace and its `/etc/netns/<name>` files, deleted on drop.
struct Namespace {
    name: String,
    etc: PathBuf,
}

impl Namespace {
    fn create() -> anyhow::Result<Self> {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let name =
            format!("whguard-{}-{}", std::process::id(), COUNT.fetch_add(1, Ordering::SeqCst));
        let etc = Path::new("/etc/netns").join(&name);
        // Created first, so that a failure below still cleans up what was made.
        let namespace = Self { name, etc };
        std::fs::create_dir_all(&namespace.etc)?;
        std::fs::write(namespace.etc.join("hosts"), HOSTS)?;
        // Names not in hosts fail at once instead of waiting for a resolver.
        std::fs::write(
            namespace.etc.join("resolv.conf"),
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )?;
        run(&["netns", "add", &namespace.name])?;
        Ok(namespace)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let deleted = Command::new(IP).args(["netns", "delete", &self.name]).status();
        if !deleted.is_ok_and(|status| status.success()) {
            eprintln!("could not delete network namespace {}", self.name);
        }
        if let Err(error) = std::fs::remove_dir_all(&self.etc) {
            eprintln!("could not remove {}: {error}", self.etc.display());
        }
    }
}
