//! Where the platform's bytes live on disk, and serving them.
//!
//! - [`root`]: a [`Root`] is a directory that outside input can only reach into: relative paths
//!   are checked (no `..`, no absolute paths, no NUL bytes, no backslashes, no hidden names) and
//!   opened by the kernel beneath the root's handle, so no symlink leads out of it. Writes are
//!   atomic (temporary file in the same directory, fsync, rename, fsync of the directory).
//! - The three roots of a deployment's files as types: [`AvatarRoot`] (`APP_AVATAR_PATH`),
//!   [`FilesRoot`] (`STORAGE_PATH`) and [`StaticRoot`] (`STATIC_ROOT`). Repositories are
//!   `platform-git`'s (`platform_git::store::RepoStore`).
//! - [`blobs`]: a content-addressed store (SHA-256, each blob stored once).
//! - [`avatars`]: uploads re-encoded as fixed-size square PNGs (nothing but pixels survives), and
//!   generated default avatars.
//! - [`serve`]: the static file service behind `static_server`.
//! - [`api`]: the avatar and attachment routes `app` serves.
//!
//! It depends only on `platform-core`.
//!
//! # Example
//!
//! ```
//! use platform_storage::{FilesRoot, blobs::BlobStore};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let files = FilesRoot::open(dir.path()).unwrap();
//! let store = BlobStore::new(files.root().clone());
//! let first = store.put(b"hello").unwrap();
//! let again = store.put(b"hello").unwrap();
//! assert_eq!(first.id, again.id);
//! assert!(first.created && !again.created);
//! assert!(files.contains_file(&first.id.relative_path()));
//!
//! // Paths from outside cannot leave the root.
//! assert!(files.open_file("../etc/passwd").is_err());
//! assert!(files.open_file("/etc/passwd").is_err());
//! ```

pub mod api;
pub mod avatars;
pub mod blobs;
pub mod root;
pub mod serve;

use std::ops::Deref;
use std::path::Path;

use diesel_migrations::{EmbeddedMigrations, embed_migrations};

pub use root::{FileVersion, Root, StorageError};

/// The migrations that create this crate's tables (`user_avatars`); run them with
/// `platform_core::db::Database::migrate_all` together with the core's.
pub const STORAGE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

macro_rules! typed_roots {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name(Root);

        impl $name {
            /// Opens (creating it if needed) the directory at `path`.
            ///
            /// # Errors
            ///
            /// Fails when the directory cannot be created or opened.
            pub fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
                Root::open(path).map(Self)
            }

            /// Returns the untyped root.
            pub fn root(&self) -> &Root {
                &self.0
            }
        }

        impl Deref for $name {
            type Target = Root;

            fn deref(&self) -> &Root {
                &self.0
            }
        }
    )*};
}

typed_roots! {
    /// Avatars as served (`APP_AVATAR_PATH`).
    AvatarRoot;
    /// Uploaded files and the blob store (`STORAGE_PATH`).
    FilesRoot;
    /// Everything `static_server` serves (`STATIC_ROOT`).
    StaticRoot;
}
