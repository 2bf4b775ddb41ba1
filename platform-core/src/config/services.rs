//! The configuration of each shipped service: exactly the sections it uses.
//!
//! Each type has `from_env()`, which reads the process environment, and `from_env_map()`, which
//! reads a map and is what tests use. Both report every problem at once.

use std::collections::HashMap;
use std::path::PathBuf;

use super::{GitLimitsConfig, UploadLimitsConfig, WebhookConfig};

use super::{
    AiConfig, AskConfig, CodeSearchConfig, ConfigError, DatabaseConfig, DomainConfig,
    EmbeddingConfig, EnvReader, HttpConfig, LokiConfig, NatsConfig, QdrantConfig, RedisConfig,
    ScrapeConfig, Sections, SessionConfig, SmtpConfig, SshConfig, StorageRoots, TelemetryConfig,
    process_env,
};

/// The chart's port of each service.
pub mod ports {
    /// `app`, the API server.
    pub const APP: u16 = 3000;
    /// `gitserver`, git over HTTP.
    pub const GITSERVER_HTTP: u16 = 8021;
    /// `email_worker`.
    pub const EMAIL_WORKER: u16 = 8084;
    /// `git_hook`.
    pub const GIT_HOOK: u16 = 8083;
    /// `metrics_aggregator`.
    pub const METRICS_AGGREGATOR: u16 = 9090;
    /// `static_server`.
    pub const STATIC_SERVER: u16 = 8081;
}

macro_rules! from_env {
    () => {
        /// Loads the configuration from the process environment.
        ///
        /// # Errors
        ///
        /// Returns every missing or invalid variable at once.
        pub fn from_env() -> Result<Self, ConfigError> {
            Self::from_env_map(&process_env())
        }
    };
}

/// `app` (port 3000): the REST API, accounts, uploads and search.
#[derive(Clone, Debug)]
pub struct AppConfig {
    /// Logging and tracing.
    pub telemetry: TelemetryConfig,
    /// The HTTP listener.
    pub http: HttpConfig,
    /// PostgreSQL.
    pub database: DatabaseConfig,
    /// Redis.
    pub redis: RedisConfig,
    /// The optional NATS queue backend.
    pub nats: NatsConfig,
    /// The public URL.
    pub domain: DomainConfig,
    /// Session cookies.
    pub session: SessionConfig,
    /// `APP_REPOS_ROOT`.
    pub repos_root: PathBuf,
    /// `APP_AVATAR_PATH`.
    pub avatar_path: PathBuf,
    /// `STORAGE_PATH`.
    pub storage_path: PathBuf,
    /// Upload limits.
    pub uploads: UploadLimitsConfig,
    /// The chat and embedding API.
    pub ai: AiConfig,
    /// Ask-the-code.
    pub ask: AskConfig,
    /// The embedding model.
    pub embedding: EmbeddingConfig,
    /// Qdrant.
    pub qdrant: QdrantConfig,
    /// Code search.
    pub code_search: CodeSearchConfig,
    /// Outbound webhooks.
    pub webhooks: WebhookConfig,
}

impl AppConfig {
    from_env!();

    /// Loads the configuration from `vars`.
    ///
    /// # Errors
    ///
    /// Returns every missing or invalid variable at once.
    pub fn from_env_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut env = EnvReader::new(vars);
        let services = (
            TelemetryConfig::read(&mut env),
            HttpConfig::read(&mut env, ports::APP),
            DatabaseConfig::read(&mut env),
            RedisConfig::read(&mut env),
            NatsConfig::read(&mut env),
            DomainConfig::read(&mut env),
            SessionConfig::read(&mut env),
        );
        let roots = (
            StorageRoots::repos(&mut env),
            StorageRoots::avatars(&mut env),
            StorageRoots::files(&mut env),
            UploadLimitsConfig::read(&mut env),
        );
        let ai = AiConfig::read(&mut env);
        let embedding = EmbeddingConfig::read(&mut env, ai.as_ref());
        let qdrant = QdrantConfig::read(&mut env);
        let code_search = CodeSearchConfig::read(&mut env);
        let ask = AskConfig::read(&mut env);
        let webhooks = WebhookConfig::read(&mut env);
        let (
            (telemetry, http, database, redis, nats, domain, session),
            (repos_root, avatar_path, storage_path, uploads),
            ai,
            embedding,
            (qdrant, code_search, ask),
            webhooks,
        ) = env.finish((
            services.complete(),
            roots.complete(),
            ai,
            embedding,
            (qdrant, code_search, ask).complete(),
            webhooks,
        ))?;
        Ok(Self {
            telemetry,
            http,
            database,
            redis,
            nats,
            domain,
            session,
            repos_root,
            avatar_path,
            storage_path,
            uploads,
            ai,
            embedding,
            qdrant,
            code_search,
            ask,
            webhooks,
        })
    }
}

/// `gitserver` (ports 8021 and 2222): git over smart HTTP and SSH.
#[derive(Clone, Debug)]
pub struct GitServerConfig {
    /// Logging and tracing.
    pub telemetry: TelemetryConfig,
    /// The HTTP listener.
    pub http: HttpConfig,
    /// The SSH listener and host key.
    pub ssh: SshConfig,
    /// PostgreSQL.
    pub database: DatabaseConfig,
    /// Redis.
    pub redis: RedisConfig,
    /// The optional NATS queue backend.
    pub nats: NatsConfig,
    /// The public URL.
    pub domain: DomainConfig,
    /// `APP_REPOS_ROOT`.
    pub repos_root: PathBuf,
    /// Push size, file size and time limits.
    pub git_limits: GitLimitsConfig,
    /// `APP_TRUSTED_PROXIES`, for the client addresses of the sign-in attempt limits.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl GitServerConfig {
    from_env!();

    /// Loads the configuration from `vars`.
    ///
    /// # Errors
    ///
    /// Returns every missing or invalid variable at once.
    pub fn from_env_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut env = EnvReader::new(vars);
        let read = (
            TelemetryConfig::read(&mut env),
            HttpConfig::read(&mut env, ports::GITSERVER_HTTP),
            SshConfig::read(&mut env),
            DatabaseConfig::read(&mut env),
            RedisConfig::read(&mut env),
            NatsConfig::read(&mut env),
            DomainConfig::read(&mut env),
            StorageRoots::repos(&mut env),
            GitLimitsConfig::read(&mut env),
            super::trusted_proxies(&mut env),
        );
        let (telemetry, http, ssh, database, redis, nats, domain, repos_root, git_limits, proxies) =
            env.finish(read)?;
        Ok(Self {
            telemetry,
            http,
            ssh,
            database,
            redis,
            nats,
            domain,
            repos_root,
            git_limits,
            trusted_proxies: proxies,
        })
    }
}

/// `email_worker` (port 8084): sends queued mail; a single active instance.
#[derive(Clone, Debug)]
pub struct EmailWorkerConfig {
    /// Logging and tracing.
    pub telemetry: TelemetryConfig,
    /// The HTTP listener (health and metrics).
    pub http: HttpConfig,
    /// PostgreSQL.
    pub database: DatabaseConfig,
    /// Redis.
    pub redis: RedisConfig,
    /// The optional NATS queue backend.
    pub nats: NatsConfig,
    /// The public URL, for links in mail.
    pub domain: DomainConfig,
    /// The SMTP relay.
    pub smtp: SmtpConfig,
}

impl EmailWorkerConfig {
    from_env!();

    /// Loads the configuration from `vars`.
    ///
    /// # Errors
    ///
    /// Returns every missing or invalid variable at once.
    pub fn from_env_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut env = EnvReader::new(vars);
        let services = (
            TelemetryConfig::read(&mut env),
            HttpConfig::read(&mut env, ports::EMAIL_WORKER),
            DatabaseConfig::read(&mut env),
            RedisConfig::read(&mut env),
            NatsConfig::read(&mut env),
        );
        let domain = DomainConfig::read(&mut env);
        let smtp = SmtpConfig::read(&mut env, domain.as_ref());
        let ((telemetry, http, database, redis, nats), domain, smtp) =
            env.finish((services.complete(), domain, smtp))?;
        Ok(Self { telemetry, http, database, redis, nats, domain, smtp })
    }
}

/// `git_hook` (port 8083): the worker pool that reacts to pushes.
#[derive(Clone, Debug)]
pub struct GitHookConfig {
    /// Logging and tracing.
    pub telemetry: TelemetryConfig,
    /// The HTTP listener (health and metrics).
    pub http: HttpConfig,
    /// PostgreSQL.
    pub database: DatabaseConfig,
    /// Redis.
    pub redis: RedisConfig,
    /// The optional NATS queue backend.
    pub nats: NatsConfig,
    /// The public URL.
    pub domain: DomainConfig,
    /// `APP_REPOS_ROOT`.
    pub repos_root: PathBuf,
    /// The chat and embedding API.
    pub ai: AiConfig,
    /// The embedding model.
    pub embedding: EmbeddingConfig,
    /// Qdrant.
    pub qdrant: QdrantConfig,
    /// Code search.
    pub code_search: CodeSearchConfig,
    /// Outbound webhooks.
    pub webhooks: WebhookConfig,
}

impl GitHookConfig {
    from_env!();

    /// Loads the configuration from `vars`.
    ///
    /// # Errors
    ///
    /// Returns every missing or invalid variable at once.
    pub fn from_env_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut env = EnvReader::new(vars);
        let services = (
            TelemetryConfig::read(&mut env),
            HttpConfig::read(&mut env, ports::GIT_HOOK),
            DatabaseConfig::read(&mut env),
            RedisConfig::read(&mut env),
            NatsConfig::read(&mut env),
            DomainConfig::read(&mut env),
            StorageRoots::repos(&mut env),
        );
        let ai = AiConfig::read(&mut env);
        let embedding = EmbeddingConfig::read(&mut env, ai.as_ref());
        let qdrant = QdrantConfig::read(&mut env);
        let code_search = CodeSearchConfig::read(&mut env);
        let webhooks = WebhookConfig::read(&mut env);
        let (
            (telemetry, http, database, redis, nats, domain, repos_root),
            ai,
            embedding,
            (qdrant, code_search),
            webhooks,
        ) = env.finish((
            services.complete(),
            ai,
            embedding,
            (qdrant, code_search).complete(),
            webhooks,
        ))?;
        Ok(Self {
            telemetry,
            http,
            database,
            redis,
            nats,
            domain,
            repos_root,
            ai,
            embedding,
            qdrant,
            code_search,
            webhooks,
        })
    }
}

/// `metrics_aggregator` (port 9090): scrapes every service and pushes logs to Loki.
#[derive(Clone, Debug)]
pub struct MetricsAggregatorConfig {
    /// Logging and tracing.
    pub telemetry: TelemetryConfig,
    /// The HTTP listener.
    pub http: HttpConfig,
    /// What to scrape.
    pub scrape: ScrapeConfig,
    /// Where received log records go.
    pub loki: LokiConfig,
}

impl MetricsAggregatorConfig {
    from_env!();

    /// Loads the configuration from `vars`.
    ///
    /// # Errors
    ///
    /// Returns every missing or invalid variable at once.
    pub fn from_env_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut env = EnvReader::new(vars);
        let read = (
            TelemetryConfig::read(&mut env),
            HttpConfig::read(&mut env, ports::METRICS_AGGREGATOR),
            ScrapeConfig::read(&mut env),
            LokiConfig::read(&mut env),
        );
        let (telemetry, http, scrape, loki) = env.finish(read)?;
        Ok(Self { telemetry, http, scrape, loki })
    }
}

/// `static_server` (port 8081): serves avatars, blobs and media from `STATIC_ROOT`.
#[derive(Clone, Debug)]
pub struct StaticServerConfig {
    /// Logging and tracing.
    pub telemetry: TelemetryConfig,
    /// The HTTP listener.
    pub http: HttpConfig,
    /// `STATIC_ROOT`.
    pub static_root: PathBuf,
    /// `STATIC_PUBLIC_DIRS`: the directories at the top of `STATIC_ROOT` that are served,
    /// comma-separated (default `avatars,files,media`); nothing else is.
    pub public_dirs: Vec<String>,
    /// `APP_REPOS_ROOT`: never served; the service refuses to start when a served directory
    /// overlaps it.
    pub repos_root: PathBuf,
}

impl StaticServerConfig {
    from_env!();

    /// Loads the configuration from `vars`.
    ///
    /// # Errors
    ///
    /// Returns every missing or invalid variable at once.
    pub fn from_env_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut env = EnvReader::new(vars);
        let read = (
            TelemetryConfig::read(&mut env),
            HttpConfig::read(&mut env, ports::STATIC_SERVER),
            StorageRoots::static_root(&mut env),
            env.or_default("STATIC_PUBLIC_DIRS", default_public_dirs(), parse_public_dirs),
            StorageRoots::repos(&mut env),
        );
        let (telemetry, http, static_root, public_dirs, repos_root) = env.finish(read)?;
        Ok(Self { telemetry, http, static_root, public_dirs, repos_root })
    }
}

fn default_public_dirs() -> Vec<String> {
    ["avatars", "files", "media"].map(str::to_owned).to_vec()
}

/// `avatars,files`: names of directories, one path component each.
fn parse_public_dirs(raw: &str) -> Result<Vec<String>, String> {
    let names: Vec<String> =
        raw.split(',').map(str::trim).filter(|name| !name.is_empty()).map(str::to_owned).collect();
    if names.is_empty() {
        return Err("name at least one directory, such as avatars,files".to_owned());
    }
    for name in &names {
        let plain = name != "."
            && name != ".."
            && !name.starts_with('.')
            && !name.contains(['/', '\\', '\0']);
        if !plain {
            return Err(format!("{name:?} is not a directory name at the top of STATIC_ROOT"));
        }
    }
    Ok(names)
}
