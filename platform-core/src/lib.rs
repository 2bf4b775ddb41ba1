//! The foundation every platform service stands on.
//!
//! `platform-core` owns what is common to all services of a git-hosting backend and knows nothing
//! of git, mail or AI:
//!
//! - [`config`]: typed configuration from environment variables, every problem reported at once;
//! - [`telemetry`]: JSON logs, OTLP trace export, the Prometheus registry;
//! - [`db`]: the PostgreSQL pool and migrations that never race between replicas;
//! - [`redis`]: the Redis pool;
//! - [`service`]: the HTTP shell with `/healthz`, `/readyz`, `/metrics` and graceful shutdown;
//! - [`shutdown`]: waiting for SIGTERM.
//!
//! - [`queue`]: the durable job queue, on NATS JetStream or Redis Streams;
//! - [`accounts`]: users, passwords and sessions, with their HTTP routes;
//! - [`api`]: the JSON error every API answers with.
//!
//! # Quick start
//!
//! A service with its own route, a readiness check on PostgreSQL, and graceful shutdown:
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use platform_core::config::{DatabaseConfig, EnvReader, HttpConfig, TelemetryConfig, process_env};
//! use platform_core::db::{CORE_MIGRATIONS, Database};
//! use platform_core::service::{ReadinessCheck, ServiceShell};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let vars = process_env();
//!     let mut env = EnvReader::new(&vars);
//!     let sections = (
//!         TelemetryConfig::read(&mut env),
//!         HttpConfig::read(&mut env, 8080),
//!         DatabaseConfig::read(&mut env),
//!     );
//!     let (telemetry, http, database) = env.finish(sections)?;
//!
//!     let _telemetry = platform_core::telemetry::init("hello", &telemetry)?;
//!     let database = Database::connect(&database);
//!     database.migrate(CORE_MIGRATIONS).await?;
//!
//!     let shell = ServiceShell::new("hello")
//!         .with_routes(Router::new().route("/hello", get(|| async { "hello" })))
//!         .with_readiness(ReadinessCheck::database(database));
//!     let listener = tokio::net::TcpListener::bind(http.addr).await?;
//!     shell.serve(listener, platform_core::shutdown::signal()).await?;
//!     Ok(())
//! }
//! ```

pub mod accounts;
pub mod api;
pub mod config;
pub mod db;
pub mod queue;
pub mod redis;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
