//! A content-addressed blob store: each blob is stored once, under its SHA-256.

use std::fmt;
use std::io::Write as _;
use std::str::FromStr;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use sha2::{Digest as _, Sha256};

use crate::root::{Root, StorageError};

/// A blob's name: the lowercase hex SHA-256 of its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(String);

impl BlobId {
    /// Returns the id of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(hex::encode(Sha256::digest(bytes)))
    }

    /// Returns the hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns where the blob lives, relative to the store's root: `blobs/ab/cd/abcd…`. The
    /// two levels of directories keep any one directory small.
    pub fn relative_path(&self) -> String {
        format!("{BLOB_DIR}/{}/{}/{}", &self.0[..2], &self.0[2..4], self.0)
    }

    /// Like [`BlobId::relative_path`], with `.extension` appended: stored so, a blob is served
    /// with the content type its extension names.
    pub fn relative_path_with_extension(&self, extension: &str) -> String {
        format!("{}.{extension}", self.relative_path())
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The error returned when a string is not a blob id.
#[derive(Debug, thiserror::Error)]
#[error("not a blob id (64 lowercase hex digits): {0:?}")]
pub struct InvalidBlobId(String);

impl FromStr for BlobId {
    type Err = InvalidBlobId;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.len() == 64
            && value.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(value.to_owned()))
        } else {
            Err(InvalidBlobId(value.to_owned()))
        }
    }
}

/// The directory of the store's root that holds blobs.
pub const BLOB_DIR: &str = "blobs";

/// The error returned by [`BlobStore`].
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The blob is larger than the limit; nothing was stored.
    #[error("larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The body could not be read.
    #[error("cannot read the upload")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The staging file failed.
    #[error("cannot stage the upload")]
    Staging(#[source] std::io::Error),
}

/// A blob in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBlob {
    /// Its id.
    pub id: BlobId,
    /// Its size in bytes.
    pub size: u64,
    /// Whether this call stored it (false: the same bytes were there already).
    pub created: bool,
}

/// Blobs under `blobs/` of a root (the files root, `STORAGE_PATH`).
#[derive(Clone, Debug)]
pub struct BlobStore {
    root: Root,
}

impl BlobStore {
    /// Returns the store in `root`.
    pub fn new(root: Root) -> Self {
        Self { root }
    }

    /// Stores `bytes`, once.
    ///
    /// # Errors
    ///
    /// Fails when the storage does.
    pub fn put(&self, bytes: &[u8]) -> Result<StoredBlob, BlobError> {
        let id = BlobId::of(bytes);
        let path = id.relative_path();
        let created = !self.root.contains_file(&path);
        if created {
            self.root.write_atomic(&path, bytes)?;
        }
        Ok(StoredBlob { id, size: bytes.len() as u64, created })
    }

    /// Stores what `body` yields, hashing it on the way to a staging file, and refusing it as
    /// soon as it exceeds `limit` bytes (nothing is kept then). Memory use does not grow with the
    /// blob's size.
    ///
    /// # Errors
    ///
    /// [`BlobError::TooLarge`] past the limit; otherwise when the body or the storage fails.
    pub async fn put_stream<S, E>(&self, body: S, limit: u64) -> Result<StoredBlob, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::error::Error + Send + Sync + 'static,
    {
        self.stream_to(body, limit, None).await
    }

    /// Like [`BlobStore::put_stream`], storing the blob at
    /// [`BlobId::relative_path_with_extension`].
    ///
    /// # Errors
    ///
    /// As [`BlobStore::put_stream`].
    pub async fn put_stream_with_extension<S, E>(
        &self,
        body: S,
        limit: u64,
        extension: &str,
    ) -> Result<StoredBlob, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::error::Error + Send + Sync + 'static,
    {
        self.stream_to(body, limit, Some(extension)).await
    }

    async fn stream_to<S, E>(
        &self,
        mut body: S,
        limit: u64,
        extension: Option<&str>,
    ) -> Result<StoredBlob, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::error::Error + Send + Sync + 'static,
    {
        let staging = self.root.staging_dir()?;
        let mut file = tempfile::NamedTempFile::new_in(&staging).map_err(BlobError::Staging)?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| BlobError::Body(Box::new(e)))?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(BlobError::TooLarge { limit });
            }
            hasher.update(&chunk);
            // Small synchronous writes into the page cache; the fsync happens once, below.
            file.write_all(&chunk).map_err(BlobError::Staging)?;
        }
        let id = BlobId(hex::encode(hasher.finalize()));
        let path = match extension {
            Some(extension) => id.relative_path_with_extension(extension),
            None => id.relative_path(),
        };
        if self.root.contains_file(&path) {
            return Ok(StoredBlob { id, size, created: false });
        }
        file.as_file().sync_all().map_err(BlobError::Staging)?;
        let staged = file.into_temp_path();
        self.root.persist(&staged, &path)?;
        // Renamed away: nothing left for the guard to delete.
        let _ = staged.keep();
        Ok(StoredBlob { id, size, created: true })
    }

    /// Opens the blob `id`.
    ///
    /// # Errors
    ///
    /// [`StorageError::NotFound`] when there is no such blob.
    pub fn open(&self, id: &BlobId) -> Result<(std::fs::File, std::fs::Metadata), StorageError> {
        self.root.open_file(&id.relative_path())
    }
}
