//! Archives of a commit's tree (`.tar.gz`, `.zip`), as `git archive` makes them: files marked
//! `export-ignore` in the tree's `.gitattributes` are left out, and every entry carries the
//! commit's time.

use gix::ObjectId;
use gix::bstr::{BStr, ByteSlice};

use super::tree::EntryKind;
use super::{BrowseError, Repo, Result, display_path};

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
    /// Checks that commit `at`'s tree can be written as `format`, before anything is sent: zip
    /// holds only UTF-8 names and symlink targets (gix-archive stops at the first other one).
    ///
    /// # Errors
    ///
    /// [`BrowseError::Unsupported`] naming the first path zip cannot hold.
    pub fn check_archivable(&self, at: ObjectId, format: ArchiveFormat) -> Result<()> {
        if format != ArchiveFormat::Zip {
            return Ok(());
        }
        let tree = self.commit_info(at)?.tree;
        for entry in self.tree(tree, BStr::new(""), true)?.entries {
            let utf8 = entry.path.to_str().is_ok()
                && (entry.kind != EntryKind::Symlink || self.blob(entry.id)?.to_str().is_ok());
            if !utf8 {
                return Err(BrowseError::Unsupported(format!(
                    "a zip archive holds only UTF-8 file names, and {:?} is not one: ask for the \
                     tarball",
                    display_path(entry.path.as_bstr())
                )));
            }
        }
        Ok(())
    }

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
