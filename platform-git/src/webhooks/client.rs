//! The HTTP client of webhook deliveries: one POST, guarded, bounded, and recorded.
//!
//! A [`DeliveryClient`] is built once and shared. It never follows a redirect (a 3xx answer is a
//! failed attempt: following one would let a receiver send us anywhere), never uses a proxy from
//! the environment (a proxy would connect on our behalf, past the guard), resolves host names
//! through the [`Guard`] and checks an IP-literal host before connecting. Each attempt is bounded
//! in time ([`ClientOptions::timeout`]) and in what it reads of the answer
//! ([`ClientOptions::read_limit`]), and is recorded in full in an [`AttemptOutcome`] (headers
//! sent and received, the first [`ClientOptions::response_cap`] bytes of the answer).
//!
//! ```no_run
//! use platform_git::webhooks::client::{ClientOptions, DeliveryClient, OutgoingRequest};
//! use platform_git::webhooks::guard::{AllowList, Guard};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let guard = Guard::new(AllowList::parse("")?);
//! let client = DeliveryClient::new(guard, ClientOptions::default())?;
//! let outcome = client
//!     .send(OutgoingRequest {
//!         url: "https://hooks.example.com/forge".parse()?,
//!         verify_tls: true,
//!         headers: vec![("X-GitHub-Event".to_owned(), "ping".to_owned())],
//!         body: bytes::Bytes::from_static(b"{\"zen\":\"Keep it simple.\"}"),
//!     })
//!     .await;
//! if !outcome.delivered() {
//!     eprintln!("delivery failed: {}", outcome.error.as_deref().unwrap_or("?"));
//! }
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use url::Url;

use super::guard::{Guard, GuardError};

/// How a [`DeliveryClient`] bounds and labels its attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// The whole attempt: resolving, connecting, sending, the answer's headers and reading its
    /// body (default 10 s).
    pub timeout: Duration,
    /// Resolving, connecting and the TLS handshake, within [`timeout`](Self::timeout)
    /// (default 5 s); kept apart so that an unreachable receiver is told from a slow one.
    pub connect_timeout: Duration,
    /// How much of the answer's body is recorded (default 64 KiB).
    pub response_cap: usize,
    /// How much of the answer's body is read at most (default 1 MiB): reading a short body to
    /// its end lets the connection be reused; past this, the connection is dropped.
    pub read_limit: usize,
    /// The `User-Agent` sent unless a request names its own.
    pub user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            response_cap: 64 * 1024,
            read_limit: 1024 * 1024,
            user_agent: concat!("platform-Hookshot/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// One delivery attempt to make: always a POST.
#[derive(Clone)]
pub struct OutgoingRequest {
    /// The hook's payload URL.
    pub url: Url,
    /// Whether the receiver's certificate is verified (the hook's setting; on by default).
    pub verify_tls: bool,
    /// The headers to send, in order: event, delivery id, signatures, the hook's own. A
    /// `Content-Type` (default `application/json`), `User-Agent` and `Accept` are added when
    /// absent; `Host`, `Content-Length`, `Transfer-Encoding` and `Connection` belong to the
    /// client and are refused.
    pub headers: Vec<(String, String)>,
    /// The payload.
    pub body: Bytes,
}

impl fmt::Debug for OutgoingRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hook's own headers may hold credentials: names only.
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("OutgoingRequest")
            .field("url", &self.url.as_str())
            .field("verify_tls", &self.verify_tls)
            .field("headers", &names)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// What happened in one attempt, as the delivery log shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptOutcome {
    /// When the attempt started.
    pub started_at: DateTime<Utc>,
    /// How long it took, up to the end of reading the answer (or the failure).
    pub duration: Duration,
    /// Every header sent, in order, including those the client adds (`Content-Type`,
    /// `User-Agent`, `Accept`, `Host`, `Content-Length`). Empty when the request could not be
    /// built.
    pub request_headers: Vec<(String, String)>,
    /// The answer's status, if one came.
    pub status: Option<u16>,
    /// The answer's headers (values that are not UTF-8 are shown lossily).
    pub response_headers: Vec<(String, String)>,
    /// The first [`ClientOptions::response_cap`] bytes of the answer's body.
    pub response_body: Vec<u8>,
    /// Whether the body was longer than what [`response_body`](Self::response_body) holds.
    pub response_truncated: bool,
    /// Why the attempt failed, or what went wrong after a 2xx answer: `connect timed out after
    /// 5s`, `refused by the SSRF guard: ...`, `redirect (302) not followed`, `receiver answered
    /// 500 Internal Server Error`, ...
    pub error: Option<String>,
    /// The answer's `Retry-After` (seconds, or an HTTP date turned into a delay from now).
    pub retry_after: Option<Duration>,
}

impl AttemptOutcome {
    /// Returns whether the receiver accepted the delivery: it answered 2xx.
    ///
    /// A failure to read the rest of the body after a 2xx status does not undo that (it is
    /// noted in [`error`](Self::error)).
    pub fn delivered(&self) -> bool {
        self.status.is_some_and(|status| (200..300).contains(&status))
    }

    /// The outcome of an attempt that failed before anything was sent (an invalid payload URL,
    /// say): started now, lasting nothing, with `error` as its reason.
    pub fn not_sent(error: impl Into<String>) -> Self {
        Self { error: Some(error.into()), ..Self::new(Utc::now()) }
    }

    fn new(started_at: DateTime<Utc>) -> Self {
        Self {
            started_at,
            duration: Duration::ZERO,
            request_headers: Vec::new(),
            status: None,
            response_headers: Vec::new(),
            response_body: Vec::new(),
            response_truncated: false,
            error: None,
            retry_after: None,
        }
    }
}

/// The error returned by [`DeliveryClient::new`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TLS configuration could not be built.
    #[error("failed to configure TLS for webhook deliveries")]
    Tls(#[source] rustls::Error),
    /// The HTTP client could not be built.
    #[error("failed to build the webhook HTTP client")]
    Build(#[source] reqwest::Error),
}

/// The client that makes webhook delivery attempts; see the [module documentation](self).
///
/// Cheap to clone: clones share connection pools.
#[derive(Clone, Debug)]
pub struct DeliveryClient {
    guard: Guard,
    options: Arc<ClientOptions>,
    verified: reqwest::Client,
    unverified: reqwest::Client,
}

impl DeliveryClient {
    /// Builds the client: one HTTP client that verifies certificates against the Mozilla roots
    /// (`webpki-roots`) and one that does not, both with aws-lc-rs as their crypto provider
    /// whatever the process default is.
    ///
    /// # Errors
    ///
    /// [`ClientError`] if TLS or the HTTP client cannot be set up (not expected at run time).
    pub fn new(guard: Guard, options: ClientOptions) -> Result<Self, ClientError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verified = http_client(&guard, &options, tls_config(&provider, true)?)?;
        let unverified = http_client(&guard, &options, tls_config(&provider, false)?)?;
        Ok(Self { guard, options: Arc::new(options), verified, unverified })
    }

    /// The guard the client checks with.
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// The options the client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Makes one attempt: POSTs `request` and records what happened. Never fails: a failure is
    /// an [`AttemptOutcome`] with an [`error`](AttemptOutcome::error).
    pub async fn send(&self, request: OutgoingRequest) -> AttemptOutcome {
        let start = Instant::now();
        let mut outcome = AttemptOutcome::new(Utc::now());
        self.attempt(request, &mut outcome).await;
        outcome.duration = start.elapsed();
        outcome
    }

    async fn attempt(&self, request: OutgoingRequest, outcome: &mut AttemptOutcome) {
        let headers = match self.request_headers(&request) {
            Ok(headers) => headers,
            Err(error) => {
                outcome.error = Some(error);
                return;
            }
        };
        outcome.request_headers = recorded_headers(&headers, &request);
        if let Err(error) = self.guard.precheck_url(&request.url) {
            outcome.error = Some(format!("refused by the SSRF guard: {error}"));
            return;
        }
        let client = if request.verify_tls { &self.verified } else { &self.unverified };
        let sent = client.post(request.url).headers(headers).body(request.body).send().await;
        let mut response = match sent {
            Ok(response) => response,
            Err(error) => {
                outcome.error = Some(self.describe_send_error(&error));
                return;
            }
        };
        let status = response.status();
        outcome.status = Some(status.as_u16());
        outcome.response_headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned())
            })
            .collect();
        outcome.retry_after = retry_after(response.headers(), SystemTime::now());
        outcome.error = if status.is_redirection() {
            let location = response
                .headers()
                .get(header::LOCATION)
                .map(|location| format!(" to {}", String::from_utf8_lossy(location.as_bytes())))
                .unwrap_or_default();
            Some(format!("redirect ({}{location}) not followed", status.as_u16()))
        } else if !status.is_success() {
            Some(format!("receiver answered {status}"))
        } else {
            None
        };
        let body_error = self.read_body(&mut response, outcome).await;
        if let (None, Some(body_error)) = (&outcome.error, body_error) {
            outcome.error = Some(format!("delivered, but {body_error}"));
        }
    }

    /// Reads the answer's body into `outcome`, up to the read limit; returns what went wrong.
    async fn read_body(
        &self,
        response: &mut reqwest::Response,
        outcome: &mut AttemptOutcome,
    ) -> Option<String> {
        let cap = self.options.response_cap;
        let mut read = 0usize;
        loop {
            if read >= self.options.read_limit {
                // Dropping the response closes the connection: the rest is never read.
                outcome.response_truncated = true;
                return None;
            }
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    read = read.saturating_add(chunk.len());
                    let room = cap.saturating_sub(outcome.response_body.len());
                    if chunk.len() > room {
                        outcome.response_truncated = true;
                    }
                    outcome.response_body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) => return None,
                Err(error) if error.is_timeout() => {
                    outcome.response_truncated = true;
                    return Some(format!(
                        "timed out after {:?} reading the response body",
                        self.options.timeout
                    ));
                }
                Err(error) => {
                    outcome.response_truncated = true;
                    return Some(format!(
                        "failed to read the response body: {}",
                        root_cause(&error)
                    ));
                }
            }
        }
    }

    /// The headers to send, with the client's defaults added.
    fn request_headers(&self, request: &OutgoingRequest) -> Result<HeaderMap, String> {
        const RESERVED: [HeaderName; 4] =
            [header::HOST, header::CONTENT_LENGTH, header::TRANSFER_ENCODING, header::CONNECTION];
        let mut headers = HeaderMap::new();
        for (name, value) in &request.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("invalid request header name {name:?}"))?;
            if RESERVED.contains(&name) {
                return Err(format!("request header {name:?} is set by the client"));
            }
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("invalid value for request header {name:?}"))?;
            headers.append(name, value);
        }
        let defaults = [
            (header::CONTENT_TYPE, "application/json"),
            (header::USER_AGENT, self.options.user_agent.as_str()),
            (header::ACCEPT, "*/*"),
        ];
        for (name, value) in defaults {
            if !headers.contains_key(&name) {
                let value = HeaderValue::from_str(value)
                    .map_err(|_| format!("invalid value for request header {name:?}"))?;
                headers.insert(name, value);
            }
        }
        Ok(headers)
    }

    fn describe_send_error(&self, error: &reqwest::Error) -> String {
        if let Some(guard) = find_source::<GuardError>(error) {
            // A resolver failure is no refusal: it says why, and may pass on a retry.
            return if guard.is_transient() {
                chain(guard)
            } else {
                format!("refused by the SSRF guard: {guard}")
            };
        }
        if error.is_timeout() && error.is_connect() {
            format!("connect timed out after {:?}", self.options.connect_timeout)
        } else if error.is_timeout() {
            format!("timed out after {:?} waiting for the response", self.options.timeout)
        } else if error.is_connect() {
            format!("failed to connect: {}", root_cause(error))
        } else {
            format!("request failed: {}", root_cause(error))
        }
    }
}

/// What the request will carry on the wire, in order: `headers`, then the `Host` and
/// `Content-Length` the HTTP/1.1 client adds.
fn recorded_headers(headers: &HeaderMap, request: &OutgoingRequest) -> Vec<(String, String)> {
    let mut recorded: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| {
            (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned())
        })
        .collect();
    if let Some(host) = request.url.host_str() {
        let host = match request.url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        recorded.push((header::HOST.as_str().to_owned(), host));
    }
    recorded.push((header::CONTENT_LENGTH.as_str().to_owned(), request.body.len().to_string()));
    recorded
}

/// Reads `Retry-After`: delay-seconds, or an HTTP date (a date in the past means now).
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The first error of type `E` in `error`'s chain of sources.
fn find_source<E: std::error::Error + 'static>(error: &reqwest::Error) -> Option<&E> {
    let mut source = std::error::Error::source(error);
    while let Some(current) = source {
        if let Some(found) = current.downcast_ref::<E>() {
            return Some(found);
        }
        source = current.source();
    }
    None
}

/// `error` and its sources, joined by ": ".
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(current) = source {
        text.push_str(": ");
        text.push_str(&current.to_string());
        source = current.source();
    }
    text
}

/// The innermost error of `error`'s chain: "Connection refused (os error 111)", "invalid peer
/// certificate: UnknownIssuer"; the outer layers only say "error sending request".
fn root_cause(error: &reqwest::Error) -> String {
    let mut current: &dyn std::error::Error = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

fn http_client(
    guard: &Guard,
    options: &ClientOptions,
    tls: rustls::ClientConfig,
) -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(options.timeout)
        .connect_timeout(options.connect_timeout.min(options.timeout))
        .dns_resolver(Arc::new(guard.clone()))
        .build()
        .map_err(ClientError::Build)
}

fn tls_config(
    provider: &Arc<CryptoProvider>,
    verify: bool,
) -> Result<rustls::ClientConfig, ClientError> {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .map_err(ClientError::Tls)?;
    let config = if verify {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        let verifier =
            AcceptAnyCertificate { algorithms: provider.signature_verification_algorithms };
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    };
    Ok(config)
}

/// The verifier of hooks whose `verify_tls` is off: any certificate, for any name, is accepted;
/// the handshake's signatures are still checked (the connection is encrypted, not
/// authenticated).
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_retry_after(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(value).expect("a valid header value in the test"),
        );
        headers
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").expect("a date");
        let read = |value: &str| retry_after(&with_retry_after(value), now);
        assert_eq!(read("120"), Some(Duration::from_secs(120)));
        assert_eq!(read(" 0 "), Some(Duration::ZERO));
        assert_eq!(read("Sun, 06 Nov 1994 08:51:37 GMT"), Some(Duration::from_secs(120)));
        assert_eq!(read("Sun, 06 Nov 1994 08:00:00 GMT"), Some(Duration::ZERO), "in the past");
        assert_eq!(read("-5"), None);
        assert_eq!(read("soon"), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    fn request(headers: &[(&str, &str)]) -> OutgoingRequest {
        OutgoingRequest {
            url: Url::parse("http://203.0.113.7:8080/hook").expect("a valid URL"),
            verify_tls: true,
            headers: headers
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            body: Bytes::from_static(b"{\"a\":1}"),
        }
    }

    fn client() -> DeliveryClient {
        let options = ClientOptions { user_agent: "test-agent/1".to_owned(), ..Default::default() };
        DeliveryClient::new(Guard::default(), options).expect("a client")
    }

    #[test]
    fn request_headers_add_defaults_and_record_the_wire_headers() {
        let request = request(&[("X-GitHub-Event", "push"), ("x-custom", "a"), ("X-Custom", "b")]);
        let headers = client().request_headers(&request).expect("valid headers");
        assert_eq!(
            recorded_headers(&headers, &request),
            [
                ("x-github-event", "push"),
                ("x-custom", "a"),
                ("x-custom", "b"),
                ("content-type", "application/json"),
                ("user-agent", "test-agent/1"),
                ("accept", "*/*"),
                ("host", "203.0.113.7:8080"),
                ("content-length", "7"),
            ]
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
        );
        let own = request_with_own_defaults();
        let headers = client().request_headers(&own).expect("valid headers");
        assert_eq!(headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes), Some(&b"x/y"[..]));
        assert_eq!(headers.get_all(header::USER_AGENT).iter().count(), 1);
    }

    fn request_with_own_defaults() -> OutgoingRequest {
        request(&[("Content-Type", "x/y"), ("User-Agent", "GitHub-Hookshot/abc")])
    }

    #[test]
    fn bad_or_reserved_request_headers_are_refused_without_their_values() {
        let client = client();
        for (name, value, message) in [
            ("Bad Name", "x", "invalid request header name \"Bad Name\""),
            ("X-Token", "se\ncret", "invalid value for request header \"x-token\""),
            ("Content-Length", "1", "request header \"content-length\" is set by the client"),
            ("host", "evil.example", "request header \"host\" is set by the client"),
        ] {
            let error = client.request_headers(&request(&[(name, value)])).expect_err(name);
            assert_eq!(error, message);
        }
    }

    #[test]
    fn outgoing_request_debug_shows_header_names_only() {
        let debug = format!("{:?}", request(&[("Authorization", "Bearer s3cret")]));
        assert!(debug.contains("Authorization") && !debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn delivered_means_a_2xx_status() {
        let mut outcome = AttemptOutcome::new(Utc::now());
        assert!(!outcome.delivered());
        for (status, delivered) in
            [(200, true), (204, true), (299, true), (302, false), (500, false)]
        {
            outcome.status = Some(status);
            assert_eq!(outcome.delivered(), delivered, "{status}");
        }
    }
}
