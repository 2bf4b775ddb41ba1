//! Where the platform's bytes live on disk, and serving them.
//!
//! `platform-storage` will own:
//!
//! - the storage roots as types: repositories (`APP_REPOS_ROOT`), avatars (`APP_AVATAR_PATH`),
//!   files (`STORAGE_PATH`) and the static root (`STATIC_ROOT`);
//! - joins that refuse `..`, absolute paths, NUL bytes and symlinks leading out of a root;
//! - atomic writes (temporary file, fsync, rename) and a content-addressed blob store;
//! - avatar processing, and the static-file `tower::Service` behind `static_server`, with HTTP
//!   caching, conditional requests and byte ranges.
//!
//! It depends only on `platform-core`.
