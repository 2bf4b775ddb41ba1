//! Typed configuration from environment variables: the chart's ConfigMap.
//!
//! Configuration is built from *sections* (database, Redis, SMTP, ...). Each service asks only for
//! the sections it needs, through one of the service configurations in [`services`], or by
//! composing sections itself with an [`EnvReader`]. Loading reports every missing or invalid
//! variable at once, by name, and never repeats the value of a secret.
//!
//! ```
//! use std::collections::HashMap;
//! use platform_core::config::StaticServerConfig;
//!
//! let env = HashMap::from([
//!     ("STATIC_ROOT".to_owned(), "/data".to_owned()),
//!     ("APP_REPOS_ROOT".to_owned(), "/data/repos".to_owned()),
//! ]);
//! let config = StaticServerConfig::from_env_map(&env)?;
//! assert_eq!(config.static_root, std::path::Path::new("/data"));
//! assert_eq!(config.public_dirs, ["avatars", "files", "media"]);
//! assert_eq!(config.http.addr.port(), 8081);
//! # Ok::<(), platform_core::config::ConfigError>(())
//! ```
//!
//! A problem is reported by variable:
//!
//! ```
//! use std::collections::HashMap;
//! use platform_core::config::StaticServerConfig;
//!
//! let env = HashMap::from([
//!     ("STATIC_ROOT".to_owned(), "data".to_owned()),
//!     ("APP_REPOS_ROOT".to_owned(), "/data/repos".to_owned()),
//! ]);
//! let error = StaticServerConfig::from_env_map(&env).unwrap_err();
//! assert_eq!(
//!     error.to_string(),
//!     "configuration is invalid:\n  STATIC_ROOT: must be an absolute path (got \"data\")"
//! );
//! ```

mod database;
mod env;
mod observability;
mod secret;
pub mod services;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use secrecy::SecretString;
use url::Url;

pub use database::{DatabaseConfig, DatabaseTls, SslMode};
pub use env::{ConfigError, EnvReader, Problem, Sections};
pub use observability::{
    DnsLookup, DnsTargets, LogPushConfig, LokiConfig, ScrapeConfig, StaticTarget, push_url,
};
pub use secret::{SecretUrl, SshHostKey};
pub use services::{
    AppConfig, EmailWorkerConfig, GitHookConfig, GitServerConfig, MetricsAggregatorConfig,
    StaticServerConfig,
};

use env::{
    parse_absolute_path, parse_bool, parse_port, parse_positive, parse_socket_addr,
    secret_url_with_schemes, url_with_schemes,
};

/// Collects the process environment into a map, the input of every `from_env_map`.
///
/// Variables whose name or value is not valid Unicode are skipped: none of ours can be.
pub fn process_env() -> std::collections::HashMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// Logging and tracing: `APP_LOG_LEVEL`, `OTEL_EXPORTER_OTLP_ENDPOINT`, and where log records
/// are pushed ([`LogPushConfig`]).
#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    /// A `tracing` filter directive such as `info` or `info,platform_git=debug` (default `info`).
    pub log_level: String,
    /// Where to export traces over OTLP/gRPC; tracing export is disabled when unset.
    pub otlp_endpoint: Option<Url>,
    /// Where log records are pushed besides standard output; only there when unset.
    pub log_push: Option<LogPushConfig>,
}

impl TelemetryConfig {
    /// Reads the section, recording problems in `env`.
    pub fn read(env: &mut EnvReader<'_>) -> Option<Self> {
        let log_level = env.or_default("APP_LOG_LEVEL", "info".to_owned(), |raw| {
            tracing_subscriber::EnvFilter::try_new(raw)
                .map(|_| raw.to_owned())
                .map_err(|e| format!("not a valid log filter such as info or debug ({e})"))
        });
        let otlp_endpoint =
            env.optional("OTEL_EXPORTER_OTLP_ENDPOINT", url_with_schemes(&["http", "https"]));
        let log_push = LogPushConfig::read(env);
        Some(Self { log_level: log_level?, otlp_endpoint: otlp_endpoint?, log_push: log_push? })
    }
}

/// Where a service's HTTP server listens, `APP_HTTP_ADDR` (default: the chart's port on all
/// interfaces), and how long it lets work in flight finish once told to stop,
/// `APP_SHUTDOWN_GRACE_SECONDS` (default 25: inside Kubernetes' default termination grace period
/// of 30 s; the chart derives it from the pod's).
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// The socket address to bind. Port 0 asks the system for a free port.
    pub addr: SocketAddr,
    /// After SIGTERM: how long requests, git operations, SSH sessions and jobs in flight may
    /// take to finish before they are abandoned.
    pub shutdown_grace: std::time::Duration,
}

/// The default of `APP_SHUTDOWN_GRACE_SECONDS`.
pub const DEFAULT_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(25);

impl HttpConfig {
    /// Reads the section; `default_port` is the service's port in the chart.
    pub fn read(env: &mut EnvReader<'_>, default_port: u16) -> Option<Self> {
        let default = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), default_port);
        let addr = env.or_default("APP_HTTP_ADDR", default, parse_socket_addr);
        let grace = env.or_default(
            "APP_SHUTDOWN_GRACE_SECONDS",
            DEFAULT_SHUTDOWN_GRACE.as_secs(),
            parse_positive::<u64>,
        );
        Some(Self { addr: addr?, shutdown_grace: std::time::Duration::from_secs(grace?) })
    }
}

/// Redis: `APP_REDIS_URL` (`rediss://` for TLS) and `APP_REDIS_CA_FILE`, the CA certificates
/// (PEM) that sign the server's certificate when they are not the system's.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// The connection URL (`redis://host:6379`, `rediss://` for TLS).
    pub url: SecretUrl,
    /// The PEM of `APP_REDIS_CA_FILE`, when set.
    pub ca_pem: Option<std::sync::Arc<[u8]>>,
}

impl RedisConfig {
    /// A configuration for `url` alone.
    pub fn new(url: SecretUrl) -> Self {
        Self { url, ca_pem: None }
    }

    /// Reads the section, recording problems in `env`.
    pub fn read(env: &mut EnvReader<'_>) -> Option<Self> {
        let url = env.required("APP_REDIS_URL", secret_url_with_schemes(&["redis", "rediss"]));
        let ca_pem = env.optional("APP_REDIS_CA_FILE", |raw| {
            let path = parse_absolute_path(raw)?;
            database::read_certificates(&path)?;
            std::fs::read(&path).map(Into::into).map_err(|e| format!("cannot read it: {e}"))
        });
        Some(Self { url: url?, ca_pem: ca_pem? })
    }
}

/// The optional NATS JetStream queue backend: `NATS_URL` and `NATS_TOKEN`.
#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// The server URL (`nats://host:4222`); when unset the queue runs on Redis.
    pub url: Option<SecretUrl>,
    /// The authentication token, if the server requires one.
    pub token: Option<SecretString>,
}

impl NatsConfig {
    /// Reads the section, recording problems in `env`.
    pub fn read(env: &mut EnvReader<'_>) -> Option<Self> {
        let url = env.optional("NATS_URL", secret_url_with_schemes(&["nats", "tls", "ws", "wss"]));
        let token = env.optional("NATS_TOKEN", |raw| Ok(SecretString::from(raw)));
        Some(Self { url: url?, token: token? })
    }
}

/// The public addresses of the deployment: `APP_DOMAIN_URL`, used to build links in mail and API
/// responses, and where users reach git over SSH, `APP_SSH_PUBLIC_HOST` (default: the host of
/// `APP_DOMAIN_URL`) and `APP_SSH_PUBLIC_PORT` (default: `APP_SSH_PORT`, else 2222), for the SSH
/// clone addresses shown in the API and in webhook payloads.
#[derive(Clone, Debug)]
pub struct DomainConfig {
    /// For example `https://git.example.com`.
    pub public_url: Url,
    /// The host name or address users connect to over SSH.
    pub ssh_host: String,
    /// The port users connect to over SSH (which a load balancer may map to the server's).
    pub ssh_port: u16,
}

impl DomainConfig {
    /// Reads the section, recording problems in `env`.
    pub fn read(env: &mut EnvReader<'_>) -> Option<Self> {
        let public_url = env.required("APP_DOMAIN_URL", |raw| {
            let url = url_with_schemes(&["http", "https"])(raw)?;
            if url.query().is_some() || url.fragment().is_some() {
                return Err("must not have a query or fragment".to_owned());
            }
            Ok(url)
        });
        let ssh_host = env.optional("APP_SSH_PUBLIC_HOST", |raw| {
            url::Host::parse(raw)
                .map(|host| host.to_string())
                .map_err(|e| format!("must be a host name or an IP address ({e})"))
        });
        // APP_SSH_PORT is gitserver's to check (SshConfig); here it is only a default.
        let listen_port = env
            .raw("APP_SSH_PORT")
            .and_then(|raw| parse_port(raw).ok())
            .unwrap_or(DEFAULT_SSH_PORT);
        let ssh_port = env.optional("APP_SSH_PUBLIC_PORT", parse_port);
        // Problems with the SSH address are recorded; its defaults stand in meanwhile, so that
        // what derives from the public URL (mail's sender) is not reported missing as well.
        let public_url = public_url?;
        let ssh_host = match ssh_host.flatten() {
            Some(host) => host,
            None => public_url.host_str().unwrap_or("localhost").to_owned(),
        };
        let ssh_port = ssh_port.flatten().unwrap_or(listen_port);
        Some(Self { public_url, ssh_host, ssh_port })
    }

    /// The base of SSH clone addresses, `ssh://git@HOST[:PORT]` (no port when it is 22): a
    /// repository's is `{base}/{owner}/{name}.git`.
    pub fn ssh_base(&self) -> String {
        // IPv6 addresses are kept in brackets, as URLs write them.
        let host = &self.ssh_host;
        match self.ssh_port {
            22 => format!("ssh://git@{host}"),
            port => format!("ssh://git@{host}:{port}"),
        }
    }
}

/// Web sessions: `APP_SESSION_SECRET` (at least 32 bytes) and `APP_COOKIE_SECURE` (default false).
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// The key that signs session cookies.
    pub secret: SecretString,
    /// Whether cookies carry the `Secure` attribute (set it behind HTTPS).
    pub cookie_secure: bool,
    /// The proxies (`APP_TRUSTED_PROXIES`: addresses or CIDR blocks, comma-separated) whose
    /// `X-Forwarded-For` names the client; empty: the peer is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// `APP_TRUSTED_PROXIES`: the proxies (addresses or CIDR blocks, comma-separated) whose
/// `X-Forwarded-For` names the client; empty when unset (the peer is the client).
pub fn trusted_proxies(env: &mut EnvReader<'_>) -> Option<Vec<ipnet::IpNet>> {
    env.or_default("APP_TRUSTED_PROXIES", Vec::new(), parse_networks)
}

/// Parses comma-separated addresses (`10.0.0.1`) and CIDR blocks (`10.0.0.0/8`).
fn parse_networks(raw: &str) -> Result<Vec<ipnet::IpNet>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("{item:?} is not an IP address or CIDR block"))
        })
        .collect()
}

/// The shortest session secret accepted, in bytes.
pub const MIN_SESSION_SECRET_BYTES: usize = 32;

impl SessionConfig {
    /// Reads the section, recording problems in `env`.
    pub fn read(env: &mut EnvReader<'_>) -> Option<Self> {
        let secret = env.required("APP_SESSION_SECRET", |raw| {
            if raw.len() < MIN_SESSION_SECRET_BYTES {
                return Err(format!(
                    "must be at least {MIN_SESSION_SECRET_BYTES} bytes (got {}); generate one with \
                     openssl rand -base64 48",
                    raw.len()
                ));
            }
            Ok(SecretString::from(raw))
        });
        let cookie_secure = env.or_default("APP_COOKIE_SECURE", false, parse_bool);
        let trusted_proxies = trusted_proxies(env);
        Some(Self {
            secret: secret?,
            cookie_secure: cookie_secure?,
            trusted_proxies: trusted_proxies?,
        })
    }
}

/// The storage roots on the shared volume.
///
/// Each service reads only the roots it uses, so each is its own reader function.
#[derive(Clone, Debug)]
pub struct StorageRoots;

impl StorageRoots {
    /// `APP_REPOS_ROOT`: where bare repositories live (`/data/repos`).
    pub fn repos(env: &mut EnvReader<'_>) -> Option<PathBuf> {
        env.required("APP_REPOS_ROOT", parse_absolute_path)
    }

    /// `APP_AVATAR_PATH`: where avatars live (`/data/avatars`).
    pub fn avatars(env: &mut EnvReader<'_>) -> Option<PathBuf> {
        env.required("APP_AVATAR_PATH", parse_absolute_path)
    }

    /// `STORAGE_PATH`: where uploaded files and blobs live (`/data/files`).
    pub fn files(env: &mut EnvReader<'_>) -> Option<PathBuf> {
        env.required("STORAGE_PATH", parse_absolute_path)
    }

    /// `STATIC_ROOT`: what the static server serves (`/data`).
    pub fn static_root(env: &mut EnvReader<'_>) -> Option<PathBuf> {
        env.required("STATIC_ROOT", parse_absolute_path)
    }
}

/// The OpenAI-compatible API: `APP_AI_BASIC_URL` and `APP_AI_API_KEY`.
#[derive(Clone, Debug)]
pub struct AiConfig {
    /// The API base URL, for example `https://api.openai.com/v1`.
    pub base_url: Url,
    /// The API key sent as a bearer token.
    pub api_key: SecretString,
}

impl AiConfig {
    /// Reads the section, recording problems in `env`.
    pub fn read(env: &mut EnvReader<'_>) -> Option<Self> {
        let base_url = env.required("APP_AI_BASIC_URL", url_with_schemes(&["http", "https"]));
        let api_key = env.required("APP_AI_API_KEY", |raw| Ok(SecretString::from(raw)));
        Some(Self { base_url: base_url?, api_key: api_key? })
    }
}

/// The embedding model: `APP_EMBED_MODEL_PATH` (a local model directory, run in-process), or
/// an OpenAI-compatible API: `APP_EMBED_MODEL_NAME` (default `text-embedding-3-small`),
/// `APP_EMBED_MODEL_DIMENSIONS` (default 1536), and `APP_EMBED_MODEL_BASE_URL` /
/// `APP_EMBED_MODEL_API_KEY`, which default to the AI API's.
///
/// Code is sent to an API only when the operator named one for embeddings
/// (`APP_EMBED_MODEL_NAME` or `APP_EMBED_MODEL_BASE_URL`): the chat API's address alone is no
/// consent to send every repository's code there.
#[derive(Clone, Debug)]
pub struct EmbeddingConfig {
    /// `APP_EMBED_MODEL_PATH`: the directory of a local sentence-transformers model
    /// (`config.json`, `tokenizer.json`, `model.safetensors`); when set it is used, and no code
    /// leaves the process.
    pub model_path: Option<PathBuf>,
    /// Whether an embeddings API was named (`APP_EMBED_MODEL_NAME` or `_BASE_URL` set).
    pub api_configured: bool,
    /// The model name sent to the embeddings endpoint.
    pub model: String,
    /// The length of each embedding vector.
    pub dimensions: u32,
    /// The API base URL.
    pub base_url: Url,
    /// The API key.
    pub api_key: SecretString,
}

impl EmbeddingConfig {
    /// Reads the section; `ai` supplies the defaults for the base URL and key.
    pub fn read(env: &mut EnvReader<'_>, ai: Option<&AiConfig>) -> Option<Self> {
        let model =
            env.or_default("APP_EMBED_MODEL_NAME", "text-embedding-3-small".to_owned(), |raw| {
                Ok(raw.to_owned())
            });
        let dimensions = env.or_default("APP_EMBED_MODEL_DIMENSIONS", 1536, parse_positive);
        let base_url =
            env.optional("APP_EMBED_MODEL_BASE_URL", url_with_schemes(&["http", "https"]));
        let api_key = env.optional("APP_EMBED_MODEL_API_KEY", |raw| Ok(SecretString::from(raw)));
        let model_path = env.optional("APP_EMBED_MODEL_PATH", parse_absolute_path);
        let api_configured = env.raw("APP_EMBED_MODEL_NAME").is_some()
            || env.raw("APP_EMBED_MODEL_BASE_URL").is_some();
        // When the AI section itself is invalid its variables are already reported; a missing
        // default here is a consequence, not a second problem.
        let base_url = base_url?.or_else(|| ai.map(|ai| ai.base_url.clone()))?;
        let api_key = api_key?.or_else(|| ai.map(|ai| ai.api_key.clone()))?;
        Some(Self {
            model_path: model_path?,
            api_configured,
            model: model?,
            dimensions: dimensions?,
            base_url,
            api_key,
        })
    }
}

/// Code search: `APP_CODE_SEARCH_ENABLED` (default `true`; `false` switches indexing and
/// search off for the instance), `APP_CODE_INDEX_PATH` (default `/data/code-index`), where
/// the embedded vector store lives when `APP_QDRANT_URL` is unset, and
/// `APP_EMBEDDED_STORE_ALLOWED` (default `true`), which the chart sets to `false` when `app`
/// may run more than one replica, so that an embedded store is refused there.
#[derive(Clone, Debug)]
pub struct CodeSearchConfig {
    /// Whether repositories are indexed and searched at all.
    pub enabled: bool,
    /// The embedded store's directory.
    pub index_path: PathBuf,
    /// Whether this deployment may use an embedded store (one process only).
    pub embedded_allowed: bool,
    /// `APP_CODE_INDEX_SWEEP_SECONDS` (default 30): how often the index worker looks for
    /// indexes behind their repositories (forks, default-branch changes, lost jobs).
    pub sweep_every: std::time::Duration,
}

impl CodeSearchConfig {
    /// Reads the section, recording problems in `env`.
    pub fn read(env: &mut EnvReader<'_>) -> Option<Self> {
        let enabled = env.or_default("APP_CODE_SEARCH_ENABLED", true, parse_bool);
        let index_path = env.or_default(
            "APP_CODE_INDEX_PATH",
            PathBuf::from("/data/code-index"),
            parse_absolute_path,
        );
        let embedded_allowed = env.or_default("APP_EMBEDDED_STORE_ALLOWED", true, parse_bool);
        let sweep_seconds: Option<u32> =
            env.or_default("APP_CODE_INDEX_SWEEP_SECONDS", 30, parse_positive);
        Some(Self {
            enabled: enabled?,
            index_path: index_path?,
            embedded_allowed: embedded_allowed?,
            sweep_every: std::time::Duration::from_secs(u64::from(sweep_seconds?)),
        })
    }
}

/// Ask-the-code: answers about repositories from their code, by the chat model of the AI API.
///
/// | variable | default | meaning |
/// |---|---|---|
/// | `APP_AI_CHAT_MODEL` | `gpt-4o-mini` | the chat model asked |
/// | `APP_AI_CONTEXT_TOKENS` | `8000` | the prompt's budget: instructions, earlier turns, quoted code and question, and the answer |
/// | `APP_AI_ANSWER_TOKENS` | `1024` | the most tokens one answer may have (within the budget) |
/// | `APP_AI_FIRST_TOKEN_SECONDS` | `20` | the longest wait for the answer to start |
/// | `APP_AI_TIMEOUT_SECONDS` | `60` | the longest one answer may take, question to last token |
/// | `APP_AI_QUESTION_MAX_CHARS` | `4000` | the longest question accepted |
/// | `APP_AI_ASKS_PER_MINUTE` | `10` | questions one user may ask a minute |
/// | `APP_AI_DAILY_TOKENS` | `200000` | tokens (prompt and answer) one user may spend a day (UTC) |
/// | `APP_AI_CONVERSATION_HOURS` | `24` | how long a conversation is kept after its last turn |
#[derive(Clone, Debug)]
pub struct AskConfig {
    /// The chat model.
    pub chat_model: String,
    /// The token budget of one prompt, answer included.
    pub context_tokens: u32,
    /// The most tokens of one answer.
    pub answer_tokens: u32,
    /// The longest wait for the answer to start.
    pub first_token_timeout: std::time::Duration,
    /// The longest one answer may take.
    pub timeout: std::time::Duration,
    /// The longest question, in characters.
    pub question_max_chars: u32,
    /// Questions per user per minute.
    pub asks_per_minute: u32,
    /// Tokens per user per day.
    pub daily_tokens: u64,
    /// How long a conversation is kept after its last turn.
    pub conversation_ttl: std::time::Duration,
}

impl AskConfig {
    /// How long `app`'s API requests may take: `usual`'s limit, or longer when a whole answer
    /// of the chat model may take longer (its timeout and five seconds to store it).
    pub fn request_timeout(&self, usual: crate::service::RouteLimits) -> std::time::Duration {
        let usual = usual.request_timeout.unwrap_or_default();
        usual.max(self.timeout + std::time::Duration::from_secs(5))
    }

    /// Reads the section, recording problems in `env`.
    pub fn read(env: &mut EnvReader<'_>) -> Option<Self> {
        let chat_model = env.or_default("APP_AI_CHAT_MODEL", "gpt-4o-mini".to_owned(), |raw| {
            let raw = raw.trim();
            if raw.is_empty() { Err("must name a model".to_owned()) } else { Ok(raw.to_owned()) }
        });
        let context_tokens: Option<u32> =
            env.or_default("APP_AI_CONTEXT_TOKENS", 8000, parse_positive);
        let answer_tokens: Option<u32> =
            env.or_default("APP_AI_ANSWER_TOKENS", 1024, parse_positive);
        let first_token: Option<u32> =
            env.or_default("APP_AI_FIRST_TOKEN_SECONDS", 20, parse_positive);
        let timeout: Option<u32> = env.or_default("APP_AI_TIMEOUT_SECONDS", 60, parse_positive);
        let question_max_chars: Option<u32> =
            env.or_default("APP_AI_QUESTION_MAX_CHARS", 4000, parse_positive);
        let asks_per_minute: Option<u32> =
            env.or_default("APP_AI_ASKS_PER_MINUTE", 10, parse_positive);
        let daily_tokens: Option<u64> =
            env.or_default("APP_AI_DAILY_TOKENS", 200_000, parse_positive);
        let hours: Option<u32> = env.or_default("APP_AI_CONVERSATION_HOURS", 24, parse_positive);
        let (context_tokens, answer_tokens) = (context_tokens?, answer_tokens?);
        if answer_tokens.saturating_mul(2) > context_tokens {
            env.problem(
                "APP_AI_ANSWER_TOKENS",
                format!(
                    "{answer_tokens} leaves too little of APP_AI_CONTEXT_TOKENS ({context_tokens}) \
                     for the question and the code: at most half of it"
                ),
            );
            return None;
        }
        Some(Self {
            chat_model: chat_model?,
            context_tokens,
            answer_tokens,
            first_token_timeout: std::time::Duration::from_secs(u64::from(first_token?)),
            timeout: std::time::Duration::from_secs(u64::from(timeout?)),
            question_max_chars: question_max_chars?,
            asks_per_minute: asks_per_minute?,
            daily_tokens: daily_tokens?,
            conversation_ttl: std::time::Duration::from_secs(u64::from(hours?) * 3600),
        })
    }
}

/// The Qdrant vector database: `APP_QDRANT_URL` and `APP_QDRANT_API_KEY`, both optional;
/// code search uses the embedded store when the URL is unset.
#[derive(Clone, Debug)]
pub struct QdrantConfig {
    /// The gRPC URL, for example `http://qdrant:6334`.
    pub url: Option<Url>,
    /// The API key, if the server requires one.
    pub api_key: Option<SecretString>,
}

impl QdrantConfig {
    /// Reads the section, recording problems in `env`.
    pub fn read(env: &mut EnvReader<'_>) -> Option<Self> {
        let url = env.optional("APP_QDRANT_URL", url_with_schemes(&["http", "https"]));
        let api_key = env.optional("APP_QDRANT_API_KEY", |raw| Ok(SecretString::from(raw)));
        Some(Self { url: url?, api_key: api_key? })
    }
}

/// How the SMTP connection is secured: `APP_SMTP_TLS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    /// TLS from the first byte (`implicit`, usually port 465).
    Implicit,
    /// Plain connection upgraded with STARTTLS, which is required (`starttls`, usually port 587).
    StartTls,
    /// No encryption (`none`): only for a relay on the same host or local development.
    None,
}

impl SmtpTls {
    fn parse(raw: &str) -> Result<Self, String> {
        match raw.to_ascii_lowercase().as_str() {
            "implicit" | "tls" => Ok(Self::Implicit),
            "starttls" => Ok(Self::StartTls),
            "none" | "plain" => Ok(Self::None),
            _ => Err(format!("must be implicit, starttls or none (got {raw:?})")),
        }
    }

    /// Returns the usual port for this mode: 465, 587 or 25.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Implicit => 465,
            Self::StartTls => 587,
            Self::None => 25,
        }
    }
}

/// Outgoing mail: `APP_SMTP_HOST`, `APP_SMTP_PORT` (default by TLS mode), `APP_SMTP_TLS`
/// (default `starttls`), `APP_SMTP_USERNAME` (default: the from address), `APP_SMTP_PASSWORD`,
/// `APP_SMTP_FROM` (default `noreply@` the domain's host), `APP_SMTP_CONNECT_TIMEOUT_SECONDS`
/// (default 10: connecting, TLS and AUTH) and `APP_SMTP_SEND_TIMEOUT_SECONDS` (default 60: each
/// command of a delivery, the message's data included).
#[derive(Clone, Debug)]
pub struct SmtpConfig {
    /// The relay's host name.
    pub host: String,
    /// The relay's port.
    pub port: u16,
    /// How the connection is secured.
    pub tls: SmtpTls,
    /// The AUTH user name.
    pub username: String,
    /// The AUTH password.
    pub password: SecretString,
    /// The envelope and header sender address.
    pub from: String,
    /// The longest connecting, the TLS handshake, the greeting and AUTH may take together.
    pub connect_timeout: std::time::Duration,
    /// The longest one SMTP command of a delivery may wait for its reply.
    pub send_timeout: std::time::Duration,
}

impl SmtpConfig {
    /// Reads the section; `domain` supplies the default sender address.
    pub fn read(env: &mut EnvReader<'_>, domain: Option<&DomainConfig>) -> Option<Self> {
        let host = env.required("APP_SMTP_HOST", |raw| {
            url::Host::parse(raw)
                .map(|_| raw.to_owned())
                .map_err(|e| format!("not a valid host name ({e})"))
        });
        let tls = env.or_default("APP_SMTP_TLS", SmtpTls::StartTls, SmtpTls::parse);
        let port = env.optional("APP_SMTP_PORT", parse_port);
        let password = env.required("APP_SMTP_PASSWORD", |raw| Ok(SecretString::from(raw)));
        let from = env.optional("APP_SMTP_FROM", |raw| {
            let valid = raw
                .split_once('@')
                .is_some_and(|(local, host)| !local.is_empty() && host.contains('.'));
            if valid {
                Ok(raw.to_owned())
            } else {
                Err(format!("not an email address (got {raw:?})"))
            }
        });
        let from = match from? {
            Some(from) => from,
            None => match domain.and_then(|d| d.public_url.host_str()) {
                Some(host) => format!("noreply@{host}"),
                None => {
                    env.problem("APP_SMTP_FROM", "missing, and APP_DOMAIN_URL gives no default");
                    return None;
                }
            },
        };
        let username = env.optional("APP_SMTP_USERNAME", |raw| Ok(raw.to_owned()));
        let connect_timeout =
            env.or_default("APP_SMTP_CONNECT_TIMEOUT_SECONDS", 10, env::parse_positive::<u64>);
        let send_timeout =
            env.or_default("APP_SMTP_SEND_TIMEOUT_SECONDS", 60, env::parse_positive::<u64>);
        let tls = tls?;
        Some(Self {
            host: host?,
            port: port?.unwrap_or(tls.default_port()),
            tls,
            username: username?.unwrap_or_else(|| from.clone()),
            password: password?,
            from,
            connect_timeout: std::time::Duration::from_secs(connect_timeout?),
            send_timeout: std::time::Duration::from_secs(send_timeout?),
        })
    }
}

/// The SSH server: `APP_SSH_SERVER_PRIVATE_KEY` and `APP_SSH_PORT` (default 2222).
#[derive(Clone, Debug)]
pub struct SshConfig {
    /// The host key, decoded and checked.
    pub host_key: SshHostKey,
    /// The socket address the SSH server binds: all interfaces on `APP_SSH_PORT`, or
    /// `APP_SSH_ADDR` when set.
    pub addr: SocketAddr,
}

/// The chart's SSH port.
pub const DEFAULT_SSH_PORT: u16 = 2222;

impl SshConfig {
    /// Reads the section, recording problems in `env`.
    pub fn read(env: &mut EnvReader<'_>) -> Option<Self> {
        let host_key = env.required("APP_SSH_SERVER_PRIVATE_KEY", SshHostKey::from_hex);
        let port = env.or_default("APP_SSH_PORT", DEFAULT_SSH_PORT, parse_port);
        let addr = env.optional("APP_SSH_ADDR", parse_socket_addr);
        let addr = addr?.unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port?));
        Some(Self { host_key: host_key?, addr })
    }
}

/// Upload limits of `app`: `APP_AVATAR_MAX_BYTES` (default 5 MiB) and
/// `APP_ATTACHMENT_MAX_BYTES` (default 25 MiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadLimitsConfig {
    /// The largest avatar upload, in bytes.
    pub avatar_max_bytes: u64,
    /// The largest attachment, in bytes.
    pub attachment_max_bytes: u64,
}

impl UploadLimitsConfig {
    /// Reads the section, recording problems in `env`.
    pub fn read(env: &mut EnvReader<'_>) -> Option<Self> {
        let avatar = env.or_default("APP_AVATAR_MAX_BYTES", 5 << 20, env::parse_positive::<u64>);
        let attachment =
            env.or_default("APP_ATTACHMENT_MAX_BYTES", 25 << 20, env::parse_positive::<u64>);
        Some(Self { avatar_max_bytes: avatar?, attachment_max_bytes: attachment? })
    }
}

/// Limits of the git transports: `APP_GIT_MAX_PUSH_BYTES` (default 2 GiB),
/// `APP_GIT_MAX_FILE_BYTES` (default 100 MiB; the largest file a push may add) and
/// `APP_GIT_TIMEOUT_SECONDS` (default 3600; the longest one clone, fetch or push may take).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitLimitsConfig {
    /// The largest push, in bytes.
    pub max_push_bytes: u64,
    /// The largest file a push may add, in bytes.
    pub max_file_bytes: u64,
    /// The longest one git request may take.
    pub timeout: std::time::Duration,
}

impl GitLimitsConfig {
    /// Reads the section, recording problems in `env`.
    pub fn read(env: &mut EnvReader<'_>) -> Option<Self> {
        let max_push_bytes =
            env.or_default("APP_GIT_MAX_PUSH_BYTES", 2 << 30, env::parse_positive::<u64>);
        let max_file_bytes =
            env.or_default("APP_GIT_MAX_FILE_BYTES", 100 << 20, env::parse_positive::<u64>);
        let timeout = env.or_default("APP_GIT_TIMEOUT_SECONDS", 3600, env::parse_positive::<u64>);
        Some(Self {
            max_push_bytes: max_push_bytes?,
            max_file_bytes: max_file_bytes?,
            timeout: std::time::Duration::from_secs(timeout?),
        })
    }
}

/// Outbound webhooks: `APP_WEBHOOK_ALLOWED_HOSTS` and `APP_WEBHOOK_RETRY_SECONDS`.
///
/// `APP_WEBHOOK_ALLOWED_HOSTS` lists, comma-separated, what payload URLs may reach beyond the
/// public internet: host names (`ci.internal`, or `*.internal` for every subdomain), IP
/// addresses and CIDR blocks (`10.0.0.0/8`, `fd00::/8`), `private` (RFC 1918, CGNAT and
/// unique-local addresses), `loopback`, or `*` (everything, cloud metadata addresses
/// included). Unset: only public addresses. `APP_WEBHOOK_RETRY_SECONDS` (default 30) is the
/// delay before a failed delivery's first retry, doubled for each further one.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct WebhookConfig {
    /// The entries of `APP_WEBHOOK_ALLOWED_HOSTS`, trimmed and in lower case.
    pub allowed_hosts: Vec<String>,
    /// The delay before the first retry.
    pub first_retry: std::time::Duration,
}

impl WebhookConfig {
    /// Reads the section, recording problems in `env`.
    pub fn read(env: &mut EnvReader<'_>) -> Option<Self> {
        let allowed_hosts =
            env.or_default("APP_WEBHOOK_ALLOWED_HOSTS", Vec::new(), parse_allowed_hosts);
        let first_retry =
            env.or_default("APP_WEBHOOK_RETRY_SECONDS", 30, env::parse_positive::<u64>);
        Some(Self {
            allowed_hosts: allowed_hosts?,
            first_retry: std::time::Duration::from_secs(first_retry?),
        })
    }
}

fn parse_allowed_hosts(raw: &str) -> Result<Vec<String>, String> {
    let mut entries = Vec::new();
    for entry in raw.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
        let entry = entry.to_ascii_lowercase();
        let host = entry.strip_prefix("*.").unwrap_or(&entry);
        let is_word = matches!(entry.as_str(), "*" | "private" | "loopback");
        let bare = entry.strip_prefix('[').and_then(|v6| v6.strip_suffix(']')).unwrap_or(&entry);
        let is_net =
            bare.parse::<ipnet::IpNet>().is_ok() || bare.parse::<std::net::IpAddr>().is_ok();
        let is_host = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !(is_word || is_net || is_host) {
            return Err(format!(
                "{entry:?} is not a host name, IP address, CIDR block, `private`, `loopback` or `*`"
            ));
        }
        entries.push(entry);
    }
    Ok(entries)
}
