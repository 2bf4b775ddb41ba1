//! Git hosting: everything between a `git` client and a bare repository.
//!
//! ```no_run
//! # async fn run() -> Result<(), platform_git::store::StoreError> {
//! let store = platform_git::store::RepoStore::new("/data/repos");
//! store.create("ada", "engine", "main").await?;
//! # Ok(()) }
//! ```
//!
//! - [`store`] keeps bare repositories on disk;
//! - [`records`], [`permissions`] and [`protection`] keep repository records, collaborators and
//!   branch protection rules in PostgreSQL (tables created by [`GIT_MIGRATIONS`]);
//! - [`api`] is the repository REST API, with its OpenAPI description;
//! - [`http`] serves git over smart HTTP with the real `git` binary, applying the push policy of
//!   [`hooks`] and publishing one [`events::PushEvent`] per push; [`pktline`] reads git's framing.
//!
//! - [`ssh`] serves the same over SSH (russh), running git commands and nothing else; both
//!   transports share [`transport`].
//!
//! - [`browse`] reads refs, history, trees, blobs, diffs, blame and archives with gix, served by
//!   [`api`] under `/api/repos/{owner}/{name}/...`.
//!
//! - [`watches`] keeps who watches which repository and queues a mail to each of them who can
//!   still read it after a push.
//!
//! - [`reactions`] is what follows a push, as the `git_hook` worker pool runs it: repository
//!   metadata, [`webhooks`] (GitHub-compatible, signed, retried, behind an SSRF guard) and
//!   notifications, each job on its own and once per push.
//!
//! It depends on `platform-storage` and `platform-core`.

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
