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
//! Configuration comes from the environment, section by section, and reports every problem at
//! once, by variable, never echoing a secret:
//!
//! ```
//! use std::collections::HashMap;
//! use platform_core::config::{DatabaseConfig, EnvReader, HttpConfig};
//!
//! let vars = HashMap::from([
//!     ("APP_HTTP_ADDR".to_owned(), "0.0.0.0:99999".to_owned()),
//!     ("APP_DATABASE_URL".to_owned(), "mysql://app:hunter2@db/app".to_owned()),
//! ]);
//! let mut env = EnvReader::new(&vars);
//! let sections = (HttpConfig::read(&mut env, 8080), DatabaseConfig::read(&mut env));
//! let error = env.finish(sections).expect_err("both variables are wrong").to_string();
//! assert!(error.contains("APP_HTTP_ADDR") && error.contains("APP_DATABASE_URL"), "{error}");
//! assert!(!error.contains("hunter2"));
//!
//! let vars = HashMap::from([("APP_DATABASE_URL".to_owned(), "postgres://db/app".to_owned())]);
//! let mut env = EnvReader::new(&vars);
//! let sections = (HttpConfig::read(&mut env, 8080), DatabaseConfig::read(&mut env));
//! let (http, database) = env.finish(sections)?;
//! assert_eq!(http.addr.port(), 8080);
//! assert_eq!(database.max_connections, 10);
//! # Ok::<(), platform_core::config::ConfigError>(())
//! ```
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
pub mod aggregator;
pub mod api;
pub mod config;
pub mod db;
pub mod loki;
mod pool_errors;
pub mod queue;
pub mod redis;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
