//! Blame: which commit last changed each line of a file, following renames as `git blame` does.

use gix::ObjectId;
use gix::bstr::{BStr, BString};

use super::tree::EntryKind;
use super::{BrowseError, CommitInfo, Repo, Result, display_path};

/// Consecutive lines of a file that one commit last changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlameRange {
    /// The first line, from 1.
    pub start_line: u32,
    /// How many lines.
    pub lines: u32,
    /// The commit that wrote them.
    pub commit: ObjectId,
    /// Where they started in that commit's version of the file, from 1.
    pub original_start_line: u32,
    /// The file's path in that commit, when it was another (before a rename).
    pub original_path: Option<BString>,
}

/// A file's blame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blame {
    /// The ranges, in line order, covering every line.
    pub ranges: Vec<BlameRange>,
    /// The commits the ranges name, each once.
    pub commits: Vec<CommitInfo>,
}

impl Repo {
    /// Blames the file at `path` as of commit `at`.
    ///
    /// This has no time limit of its own (gix's blame cannot be interrupted); callers bound it
    /// with [`Browser::run_within`](super::Browser::run_within).
    ///
    /// # Errors
    ///
    /// [`BrowseError::NotFound`] when there is no file at `path`, [`BrowseError::TooLarge`] past
    /// [`Limits::blame_bytes`](super::Limits::blame_bytes).
    pub fn blame(&self, at: ObjectId, path: &BStr) -> Result<Blame> {
        let commit = self.commit_info(at)?;
        let entry = self.entry_at(commit.tree, path)?;
        if !matches!(entry.kind, EntryKind::File | EntryKind::Executable | EntryKind::Symlink) {
            return Err(BrowseError::not_found("file", display_path(path)));
        }
        if entry.size.unwrap_or(0) > self.limits.blame_bytes {
            return Err(BrowseError::TooLarge(format!(
                "{} is larger than the {} bytes that can be blamed",
                display_path(path),
                self.limits.blame_bytes
            )));
        }
        let failed = |error: gix::Error| BrowseError::Git {
            context: "cannot blame a file",
            source: Box::new(error),
        };
        let options = gix::blame::Options {
            diff_algorithm: self.repo.diff_algorithm().map_err(failed)?,
            ranges: Default::default(),
            since: None,
            // Renames are followed, as `git blame` does.
            rewrites: Some(gix::diff::Rewrites::default()),
            debug_track_path: false,
        };
        let graph = self.repo.commit_graph_if_enabled().map_err(failed)?;
        let mut resources = self.resource_cache()?;
        let outcome = gix::blame::file(
            &self.repo.objects,
            gix::blame::Start::Commit(at),
            graph,
            &mut resources,
            path,
            options,
        )
        .map_err(failed)?;
        let mut ranges: Vec<BlameRange> = outcome
            .entries
            .iter()
            .map(|entry| BlameRange {
                start_line: entry.start_in_blamed_file + 1,
                lines: entry.len.get(),
                commit: entry.commit_id,
                original_start_line: entry.start_in_source_file + 1,
                original_path: entry.source_file_name.clone(),
            })
            .collect();
        ranges.sort_by_key(|range| range.start_line);
        let mut commits: Vec<CommitInfo> = Vec::new();
        for range in &ranges {
            if !commits.iter().any(|commit| commit.id == range.commit) {
                commits.push(self.commit_info(range.commit)?);
            }
        }
        Ok(Blame { ranges, commits })
    }
}
