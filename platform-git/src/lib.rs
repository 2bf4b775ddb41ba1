//! Git hosting: everything between a `git` client and a bare repository.
//!
//! ```no_run
//! # async fn run() -> Result<(), platform_git::store::StoreError> {
//! let store = platform_git::store::RepoStore::new("/data/repos");
//! store.create("ada", "engine", "main").await?;
//! # Ok(()) }
//! ```
//!
//! [`store`] keeps bare repositories on disk. `platform-git` will also own:
//!
//! - repository records and permissions in PostgreSQL, and the repository REST API;
//! - smart HTTP (upload-pack, receive-pack, protocol v2) as an axum `Router`, served by the real
//!   `git` binary in stateless-RPC mode;
//! - an SSH server (russh) that runs only git commands;
//! - push policy (protected branches, size limits) and exactly one push event per push on the
//!   durable queue;
//! - reading refs, trees, blobs, commits and diffs with gix.
//!
//! It depends on `platform-storage` and `platform-core`.

pub mod store;
