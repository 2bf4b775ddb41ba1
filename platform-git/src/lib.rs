//! Git hosting: everything between a `git` client and a bare repository.
//!
//! `platform-git` will own:
//!
//! - bare repositories on disk under `APP_REPOS_ROOT` (`{owner}/{name}.git`), created, renamed,
//!   forked and deleted safely under concurrent access;
//! - repository records and permissions in PostgreSQL, and the repository REST API;
//! - smart HTTP (upload-pack, receive-pack, protocol v2) as an axum `Router`, served by the real
//!   `git` binary in stateless-RPC mode;
//! - an SSH server (russh) that runs only git commands;
//! - push policy (protected branches, size limits) and exactly one push event per push on the
//!   durable queue;
//! - reading refs, trees, blobs, commits and diffs with gix.
//!
//! It depends on `platform-storage` and `platform-core`.
