//! Archives of a commit's tree (`.tar.gz`, `.zip`), as `git archive` makes them: files marked
//! `export-ignore` in the tree's `.gitattributes` are left out, and every entry carries the
//! commit's time.

use gix::ObjectId;

use super::{BrowseError, Repo, Result};

/// The container of an archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// A gzip-compressed tar file.
    TarGz,
    /// A zip file.
    Zip,
}

impl ArchiveFormat {
    /// The file name extension, with its dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::TarGz => ".tar.gz",
            Self::Zip => ".zip",
        }
    }

    /// The media type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::TarGz => "application/gzip",
            Self::Zip => "application/zip",
        }
    }
}

impl Repo {
    /// Writes commit `at`'s tree as an archive into `out`, every path under `prefix/`.
    ///
    /// `out` is written front to back (zip needs `Seek` in its signature only): a writer that
    /// streams to a client and cannot seek is fine.
    ///
    /// # Errors
    ///
    /// [`BrowseError::Git`] when an object cannot be read or `out` fails.
    pub fn archive(
        &self,
        at: ObjectId,
        prefix: &str,
        format: ArchiveFormat,
        out: impl std::io::Write + std::io::Seek,
    ) -> Result<()> {
        let commit = self.commit_info(at)?;
        let (mut stream, _index) = self
            .repo
            .worktree_stream(commit.tree)
            .map_err(BrowseError::git("cannot read the tree to archive"))?;
        let options = gix_archive::Options {
            format: match format {
                ArchiveFormat::TarGz => gix_archive::Format::TarGz { compression_level: None },
                ArchiveFormat::Zip => gix_archive::Format::Zip { compression_level: None },
            },
            tree_prefix: Some(format!("{prefix}/").into()),
            modification_time: commit.committer.seconds,
        };
        gix_archive::write_stream_seek(&mut stream, |stream| stream.next_entry(), out, options)
            .map_err(|error| BrowseError::Git {
                context: "cannot write an archive",
                source: Box::new(error),
            })
    }
}
