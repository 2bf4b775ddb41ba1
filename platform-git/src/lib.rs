//! Git hosting: everything between a `git` client and a bare repository.
//!
//! Serve the repositories under a directory over smart HTTP, to users of your own (here from
//! code; [`local::LocalUsers::from_file`] reads them from a file):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use platform_git::local::{LocalUser, LocalUsers};
//! use platform_git::store::RepoStore;
//! use platform_git::transport::GitService;
//! use tower::ServiceExt as _;
//!
//! let dir = tempfile::tempdir()?;
//! let store = RepoStore::new(dir.path().join("repos"));
//! store.create("ada", "engine", "main").await?;
//! let ada = LocalUser::new("ada").with_token("s3cret-token");
//! let users = LocalUsers::new(vec![ada], vec!["ada/*".to_owned()])?;
//!
//! let git = GitService::builder(users.clone(), users, store)
//!     .on_push(|push| println!("{} pushed to {}", push.pusher, push.repository))
//!     .build(&dir.path().join("state"))?;
//! let app = platform_git::http::router(git.clone());
//! // In a program: axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()),
//! // and platform_git::ssh::GitSsh::new(git, host_key_pem, SshOptions::default()) beside it.
//!
//! let advertisement = http::Request::get("/ada/engine.git/info/refs?service=git-upload-pack")
//!     .body(axum::body::Body::empty())?;
//! assert_eq!(app.oneshot(advertisement).await?.status(), 200);
//! # Ok(()) }
//! ```
//!
//! The transports ask four traits of [`backend`] who callers are, what they may do, where
//! repositories live and where push events go; [`local`] answers from a file, and the
//! platform's services answer from PostgreSQL ([`postgres`]).
//!
//! - [`store`] keeps bare repositories on disk;
//! - [`http`] serves git over smart HTTP with the real `git` binary, applying the push policy of
//!   [`hooks`] and reporting one [`events::PushEvent`] per push; [`pktline`] reads git's framing;
//! - [`ssh`] serves the same over SSH (russh), running git commands and nothing else; both
//!   transports share [`transport`];
//! - [`browse`] reads refs, history, trees, blobs, diffs, blame and archives with gix;
//! - [`signature`] signs webhook deliveries and lets a receiver check them.
//!
//! With `postgres`, the platform's own parts:
//!
//! - [`records`], [`permissions`] and [`protection`] keep repository records, collaborators and
//!   branch protection rules in PostgreSQL (tables created by [`GIT_MIGRATIONS`]), and
//!   [`events::PushEvents`] puts push events on the durable queue through an outbox;
//! - [`api`] is the repository REST API, with its OpenAPI description, serving [`browse`] under
//!   `/api/repos/{owner}/{name}/...`;
//! - [`watches`] keeps who watches which repository and queues a mail to each of them who can
//!   still read it after a push;
//! - [`reactions`] is what follows a push, as the `git_hook` worker pool runs it: repository
//!   metadata, [`webhooks`] (GitHub-compatible, signed, retried, behind an SSRF guard) and
//!   notifications, each job on its own and once per push.
//!
//! # Features
//!
//! | feature | what it adds | pulls in |
//! |---|---|---|
//! | `http` | [`http`], git over smart HTTP as an axum `Router` | axum, tower-http |
//! | `ssh` | [`ssh`], git over SSH | russh |
//! | `local` | [`local`], users, tokens, keys and grants from a file or code | toml, argon2 |
//! | `browse` | [`browse`], reading repositories | gix |
//! | `postgres` | records, permissions, outbox, webhooks, reactions, [`postgres`] | `platform-core` (diesel, Redis, NATS), reqwest, `browse` |
//! | `api` | [`api`], the REST API and its OpenAPI description | utoipa-axum, `postgres`, `http` |
//!
//! The default is all of them, as the platform's services use it. A program serving git from
//! its own users needs `default-features = false, features = ["http", "ssh", "local"]`.

#[cfg(feature = "api")]
pub mod api;
pub mod backend;
#[cfg(feature = "browse")]
pub mod browse;
pub mod events;
pub mod hooks;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "local")]
pub mod local;
pub mod permissions;
pub mod pktline;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod protection;
#[cfg(feature = "postgres")]
pub mod reactions;
#[cfg(feature = "postgres")]
pub mod records;
pub mod redact;
pub mod signature;
#[cfg(feature = "ssh")]
pub mod ssh;
pub mod store;
pub mod transport;
#[cfg(feature = "postgres")]
pub mod watches;
#[cfg(feature = "postgres")]
pub mod webhooks;

/// The migrations of `platform-git`'s tables (repositories, collaborators, protected branches).
/// They refer to `users`, so run them after
/// [`CORE_MIGRATIONS`](platform_core::db::CORE_MIGRATIONS).
#[cfg(feature = "postgres")]
pub const GIT_MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("migrations");
