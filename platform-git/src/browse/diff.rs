//! Diffs between trees: which files changed and how (with rename detection, as `git diff -M`),
//! line counts, and patches in git's unified format.

use gix::ObjectId;
use gix::bstr::{BStr, BString, ByteSlice, ByteVec};
use gix::diff::blob::unified_diff::{ConsumeHunk, ContextSize, DiffLineKind, HunkHeader};
use gix::diff::blob::{Algorithm, InternedInput, UnifiedDiff};
use gix::object::tree::EntryKind as GixKind;

use super::{BrowseError, CommitInfo, Repo, Result};

/// What happened to a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeStatus {
    /// It is new.
    Added,
    /// It is gone.
    Removed,
    /// Its content or mode changed.
    Modified,
    /// It moved, perhaps with changes ([`FileChange::similarity`] says how much stayed).
    Renamed,
    /// It changed kind: a file became a symlink or the other way round.
    Changed,
}

impl ChangeStatus {
    /// GitHub's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Removed => "removed",
            Self::Modified => "modified",
            Self::Renamed => "renamed",
            Self::Changed => "changed",
        }
    }

    /// `git diff --name-status`'s letter for it.
    pub fn letter(self) -> char {
        match self {
            Self::Added => 'A',
            Self::Removed => 'D',
            Self::Modified => 'M',
            Self::Renamed => 'R',
            Self::Changed => 'T',
        }
    }
}

/// One changed file of a [`Diff`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileChange {
    /// What happened.
    pub status: ChangeStatus,
    /// Its path (after the change; before it, for a removed file).
    pub path: BString,
    /// Where it was before a rename.
    pub previous_path: Option<BString>,
    /// For a rename, how much of the content stayed, in percent.
    pub similarity: Option<u8>,
    /// The blob (or submodule commit) before, when there was one.
    pub old_id: Option<ObjectId>,
    /// The blob (or submodule commit) after, when there is one.
    pub new_id: Option<ObjectId>,
    /// The mode before (`0o100644`, `0o100755`, `0o120000`, `0o160000`).
    pub old_mode: Option<u32>,
    /// The mode after.
    pub new_mode: Option<u32>,
    /// Lines added.
    pub additions: u32,
    /// Lines removed.
    pub deletions: u32,
    /// Whether either side is binary (a NUL in its first 8,000 bytes, as git decides): no
    /// lines are counted and no patch is made.
    pub binary: bool,
    /// The hunks, in unified format with three lines of context, when asked for and within the
    /// limits.
    pub patch: Option<BString>,
    /// Whether something was left out: the patch (past a line limit) or the line counts (a side
    /// larger than [`Limits::diff_blob_bytes`](super::Limits::diff_blob_bytes)).
    pub truncated: bool,
}

/// The changes between two trees.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// The changed files, by path, at most [`Limits::diff_files`](super::Limits::diff_files).
    pub files: Vec<FileChange>,
    /// How many files changed in all.
    pub total_files: usize,
    /// Lines added in the files listed.
    pub additions: u64,
    /// Lines removed in the files listed.
    pub deletions: u64,
}

impl Diff {
    /// Whether files were left out of [`Diff::files`].
    pub fn truncated(&self) -> bool {
        self.total_files > self.files.len()
    }
}

/// The text forms of a diff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchFormat {
    /// `git diff`'s output.
    Diff,
    /// `git format-patch`'s: one mail per commit, then its diff.
    Patch,
}

/// A patch in text, ready to send.
pub type Patch = Vec<u8>;

/// Bytes git looks at to decide whether a file is binary.
const BINARY_PROBE: usize = 8000;

fn mode_bits(mode: gix::object::tree::EntryMode) -> u32 {
    u32::from(mode.value())
}

struct Side {
    id: ObjectId,
    kind: GixKind,
}

impl Repo {
    /// Returns the changes from tree `old` (none: the empty tree) to tree `new`, with patches
    /// when `patches` is set.
    ///
    /// # Errors
    ///
    /// [`BrowseError::Git`] when an object cannot be read.
    pub fn diff_trees(&self, old: Option<ObjectId>, new: ObjectId, patches: bool) -> Result<Diff> {
        let changes = self.tree_changes(old, new)?;
        let total_files = changes.len();
        let mut diff = Diff { total_files, ..Diff::default() };
        let mut patch_lines = 0usize;
        for change in changes.into_iter().take(self.limits.diff_files) {
            let mut file = self.file_change(change)?;
            let want_patch = patches && patch_lines < self.limits.patch_lines;
            self.count_lines(&mut file, want_patch)?;
            if patches && !want_patch && !file.binary {
                file.truncated = true;
            }
            if let Some(patch) = &file.patch {
                patch_lines += patch.lines().count();
            }
            diff.additions += u64::from(file.additions);
            diff.deletions += u64::from(file.deletions);
            diff.files.push(file);
        }
        Ok(diff)
    }

    /// Returns the changes a commit made against its first parent (everything, for a root).
    ///
    /// # Errors
    ///
    /// As [`Repo::diff_trees`].
    pub fn commit_diff(&self, commit: &CommitInfo, patches: bool) -> Result<Diff> {
        let parent_tree = match commit.parents.first() {
            Some(parent) => Some(self.commit_info(*parent)?.tree),
            None => None,
        };
        self.diff_trees(parent_tree, commit.tree, patches)
    }

    /// Returns every file changed from tree `old` (none: the empty tree) to tree `new`, by path,
    /// with renames detected as `git diff-tree -r -M` detects them: what a list of touched
    /// paths needs. Unlike [`Repo::diff_trees`] no file limit applies and no lines are counted
    /// (`additions`, `deletions`, `binary` and `truncated` stay unset, `patch` is none), so no
    /// blob is read but by rename detection.
    ///
    /// # Errors
    ///
    /// [`BrowseError::Git`] when a tree cannot be read.
    pub fn changed_files(&self, old: Option<ObjectId>, new: ObjectId) -> Result<Vec<FileChange>> {
        self.tree_changes(old, new)?.into_iter().map(|change| self.file_change(change)).collect()
    }

    /// What gix diffs blobs with. Attributes of a bare repository come only from its
    /// configuration and `info/attributes` (as for git itself), so an empty index stands in for
    /// a worktree's: gix's own default reads the whole tree at `HEAD` into an index first.
    pub(super) fn resource_cache(&self) -> Result<gix::diff::blob::Platform> {
        let index = gix::index::State::new(self.repo.object_hash());
        let attributes = self
            .repo
            .attributes_only(&index, gix::worktree::stack::state::attributes::Source::IdMapping)
            .map_err(BrowseError::git("cannot read attributes"))?
            .detach();
        gix::diff::resource_cache(
            &self.repo,
            gix::diff::blob::pipeline::Mode::ToGit,
            attributes,
            Default::default(),
        )
        .map_err(BrowseError::git("cannot prepare a diff"))
    }

    fn tree_changes(
        &self,
        old: Option<ObjectId>,
        new: ObjectId,
    ) -> Result<Vec<gix::diff::tree_with_rewrites::Change>> {
        let empty = self.repo.empty_tree();
        let old_tree = match old {
            Some(id) => self.repo.find_tree(id).map_err(BrowseError::git("cannot read a tree"))?,
            None => empty.clone(),
        };
        let new_tree = self.repo.find_tree(new).map_err(BrowseError::git("cannot read a tree"))?;
        let mut cache = self.resource_cache()?;
        let options = gix::diff::tree_with_rewrites::Options {
            location: Some(gix::diff::tree::recorder::Location::Path),
            rewrites: Some(gix::diff::Rewrites {
                copies: None,
                percentage: Some(0.5),
                limit: 1000,
                track_empty: false,
            }),
        };
        let mut out = Vec::new();
        gix::diff::tree_with_rewrites(
            gix::objs::TreeRefIter::from_bytes(&old_tree.data, old_tree.id.kind()),
            gix::objs::TreeRefIter::from_bytes(&new_tree.data, new_tree.id.kind()),
            &mut cache,
            &mut Default::default(),
            &self.repo.objects,
            |change| -> gix::Result<_> {
                if !change.entry_mode().is_tree() {
                    out.push(change.into_owned());
                }
                Ok(gix::diff::tree_with_rewrites::Action::Continue(()))
            },
            options,
        )
        .map_err(|error| BrowseError::Git {
            context: "cannot diff two trees",
            source: Box::new(error),
        })?;
        out.sort_by(|a, b| a.location().cmp(b.location()));
        Ok(out)
    }

    fn file_change(&self, change: gix::diff::tree_with_rewrites::Change) -> Result<FileChange> {
        use gix::diff::tree_with_rewrites::Change;
        let blank = |status, path: BString| FileChange {
            status,
            path,
            previous_path: None,
            similarity: None,
            old_id: None,
            new_id: None,
            old_mode: None,
            new_mode: None,
            additions: 0,
            deletions: 0,
            binary: false,
            patch: None,
            truncated: false,
        };
        Ok(match change {
            Change::Addition { location, entry_mode, id, .. } => FileChange {
                new_id: Some(id),
                new_mode: Some(mode_bits(entry_mode)),
                ..blank(ChangeStatus::Added, location)
            },
            Change::Deletion { location, entry_mode, id, .. } => FileChange {
                old_id: Some(id),
                old_mode: Some(mode_bits(entry_mode)),
                ..blank(ChangeStatus::Removed, location)
            },
            Change::Modification { location, previous_entry_mode, previous_id, entry_mode, id } => {
                let status = if previous_entry_mode.kind() == entry_mode.kind()
                    || (is_file(previous_entry_mode.kind()) && is_file(entry_mode.kind()))
                {
                    ChangeStatus::Modified
                } else {
                    ChangeStatus::Changed
                };
                FileChange {
                    old_id: Some(previous_id),
                    new_id: Some(id),
                    old_mode: Some(mode_bits(previous_entry_mode)),
                    new_mode: Some(mode_bits(entry_mode)),
                    ..blank(status, location)
                }
            }
            Change::Rewrite {
                source_location,
                source_entry_mode,
                source_id,
                diff,
                entry_mode,
                id,
                location,
                ..
            } => {
                let similarity = diff.map_or(100, |stats| (stats.similarity * 100.0).floor() as u8);
                FileChange {
                    previous_path: Some(source_location),
                    similarity: Some(similarity.min(100)),
                    old_id: Some(source_id),
                    new_id: Some(id),
                    old_mode: Some(mode_bits(source_entry_mode)),
                    new_mode: Some(mode_bits(entry_mode)),
                    ..blank(ChangeStatus::Renamed, location)
                }
            }
        })
    }

    /// The bytes a side shows in a diff: a blob's content, a symlink's target, or git's line
    /// for a submodule commit. `None` when it is larger than the limit.
    fn side_content(&self, side: Option<&Side>) -> Result<Option<Vec<u8>>> {
        let Some(side) = side else { return Ok(Some(Vec::new())) };
        if side.kind == GixKind::Commit {
            return Ok(Some(format!("Subproject commit {}\n", side.id).into_bytes()));
        }
        let header =
            self.repo.find_header(side.id).map_err(BrowseError::git("cannot read a blob"))?;
        if header.size() > self.limits.diff_blob_bytes {
            return Ok(None);
        }
        Ok(Some(self.blob(side.id)?))
    }

    fn count_lines(&self, file: &mut FileChange, want_patch: bool) -> Result<()> {
        let side = |id: Option<ObjectId>, mode: Option<u32>| {
            id.zip(mode).map(|(id, mode)| Side { id, kind: kind_of(mode) })
        };
        let old = side(file.old_id, file.old_mode);
        let new = side(file.new_id, file.new_mode);
        if file.old_id == file.new_id {
            return Ok(());
        }
        let (Some(before), Some(after)) =
            (self.side_content(old.as_ref())?, self.side_content(new.as_ref())?)
        else {
            file.truncated = true;
            return Ok(());
        };
        if is_binary(&before) || is_binary(&after) {
            file.binary = true;
            return Ok(());
        }
        let input = InternedInput::new(
            gix::diff::blob::sources::byte_lines(&before),
            gix::diff::blob::sources::byte_lines(&after),
        );
        let mut line_diff = gix::diff::blob::Diff::compute(Algorithm::Myers, &input);
        line_diff.postprocess_lines(&input);
        file.additions = line_diff.count_additions();
        file.deletions = line_diff.count_removals();
        if want_patch {
            let lines = (file.additions + file.deletions) as usize;
            if lines > self.limits.patch_lines_per_file {
                file.truncated = true;
            } else {
                let hunks = UnifiedDiff::new(
                    &line_diff,
                    &input,
                    GitHunks::default(),
                    ContextSize::symmetrical(3),
                )
                .consume()
                .map_err(|error| BrowseError::Git {
                    context: "cannot write a patch",
                    source: Box::new(error),
                })?;
                file.patch = Some(hunks);
            }
        }
        Ok(())
    }

    /// Writes `diff` as `git diff` prints it.
    ///
    /// # Errors
    ///
    /// [`BrowseError::Git`] when a blob cannot be read.
    pub fn write_diff(&self, diff: &Diff, out: &mut Vec<u8>) -> Result<()> {
        for file in &diff.files {
            if file.status != ChangeStatus::Changed {
                write_file_diff(file, out);
                continue;
            }
            // git prints a change of kind as the old file removed and the new one added.
            let mut removed = FileChange {
                status: ChangeStatus::Removed,
                new_id: None,
                new_mode: None,
                patch: None,
                ..file.clone()
            };
            let mut added = FileChange {
                status: ChangeStatus::Added,
                old_id: None,
                old_mode: None,
                patch: None,
                ..file.clone()
            };
            for half in [&mut removed, &mut added] {
                self.count_lines(half, !file.truncated)?;
                write_file_diff(half, out);
            }
        }
        Ok(())
    }

    /// Writes `commits`, each with its diff against its first parent, as `git format-patch`
    /// prints them (one mail each; merges are left out, as there).
    ///
    /// # Errors
    ///
    /// As [`Repo::commit_diff`].
    pub fn write_patches(&self, commits: &[CommitInfo], out: &mut Vec<u8>) -> Result<()> {
        // As format-patch: merges carry no patch of their own.
        let commits: Vec<&CommitInfo> =
            commits.iter().filter(|commit| commit.parents.len() < 2).collect();
        let total = commits.len();
        for (index, commit) in commits.into_iter().enumerate() {
            let diff = self.commit_diff(commit, true)?;
            let numbering = if total > 1 {
                format!("[PATCH {}/{}]", index + 1, total)
            } else {
                "[PATCH]".to_owned()
            };
            let date = commit.author.local_time();
            let (subject, body) = match commit.message.split_once('\n') {
                Some((subject, body)) => (subject, body.trim_start_matches('\n')),
                None => (commit.message.as_str(), ""),
            };
            out.push_str(format!(
                "From {} Mon Sep 17 00:00:00 2001\nFrom: {} <{}>\nDate: {}\nSubject: {numbering} {subject}\n\n",
                commit.id,
                commit.author.name,
                commit.author.email,
                date.to_rfc2822(),
            ));
            if !body.is_empty() {
                out.push_str(body);
                if !body.ends_with('\n') {
                    out.push(b'\n');
                }
            }
            out.push_str(format!(
                "---\n {} file{} changed, {} insertion{}(+), {} deletion{}(-)\n\n",
                diff.total_files,
                if diff.total_files == 1 { "" } else { "s" },
                diff.additions,
                if diff.additions == 1 { "" } else { "s" },
                diff.deletions,
                if diff.deletions == 1 { "" } else { "s" },
            ));
            self.write_diff(&diff, out)?;
            out.push_str("-- \nplatform\n\n");
        }
        Ok(())
    }
}

fn is_file(kind: GixKind) -> bool {
    matches!(kind, GixKind::Blob | GixKind::BlobExecutable)
}

fn kind_of(mode: u32) -> GixKind {
    match mode {
        0o120000 => GixKind::Link,
        0o160000 => GixKind::Commit,
        0o100755 => GixKind::BlobExecutable,
        0o040000 => GixKind::Tree,
        _ => GixKind::Blob,
    }
}

fn is_binary(data: &[u8]) -> bool {
    data[..data.len().min(BINARY_PROBE)].contains(&0)
}

/// Collects hunks the way git prints them (`@@ -1 +1,2 @@`, `\ No newline at end of file`).
#[derive(Default)]
struct GitHunks {
    out: BString,
}

impl ConsumeHunk for GitHunks {
    type Out = BString;

    fn consume_hunk(
        &mut self,
        header: HunkHeader,
        lines: &[(DiffLineKind, &[u8])],
    ) -> std::io::Result<()> {
        self.out.push_str(format!(
            "@@ -{} +{} @@\n",
            range_text(header.before_hunk_start, header.before_hunk_len),
            range_text(header.after_hunk_start, header.after_hunk_len)
        ));
        for (kind, line) in lines {
            self.out.push(kind.to_prefix() as u8);
            self.out.extend_from_slice(line);
            if !line.ends_with(b"\n") {
                self.out.push_str("\n\\ No newline at end of file\n");
            }
        }
        Ok(())
    }

    fn finish(self) -> Self::Out {
        self.out
    }
}

/// A hunk side's range as git prints it: the length is left out when it is 1, and an empty side
/// names the line before it.
fn range_text(start: u32, len: u32) -> String {
    match len {
        1 => format!("{start}"),
        0 => format!("{},0", start.saturating_sub(1)),
        len => format!("{start},{len}"),
    }
}

/// Quotes a path the way git does when it holds bytes that are not printable ASCII.
fn quoted(prefix: &str, path: &BStr) -> String {
    let needs_quotes = path.iter().any(|&b| !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\');
    if !needs_quotes {
        return format!("{prefix}{path}");
    }
    let mut out = String::from("\"");
    out.push_str(prefix);
    for &byte in path.iter() {
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            0x20..=0x7e => out.push(char::from(byte)),
            other => out.push_str(&format!("\\{other:03o}")),
        }
    }
    out.push('"');
    out
}

fn short(id: Option<ObjectId>) -> String {
    match id {
        Some(id) => id.to_hex_with_len(7).to_string(),
        None => "0000000".to_owned(),
    }
}

fn write_file_diff(file: &FileChange, out: &mut Vec<u8>) {
    let new_path = file.path.as_bstr();
    let old_path = file.previous_path.as_ref().map_or(new_path, |path| path.as_bstr());
    out.push_str(format!("diff --git {} {}\n", quoted("a/", old_path), quoted("b/", new_path)));
    let mode = |mode: Option<u32>| format!("{:06o}", mode.unwrap_or(0));
    match file.status {
        ChangeStatus::Added => out.push_str(format!("new file mode {}\n", mode(file.new_mode))),
        ChangeStatus::Removed => {
            out.push_str(format!("deleted file mode {}\n", mode(file.old_mode)))
        }
        _ => {
            if file.old_mode != file.new_mode {
                out.push_str(format!(
                    "old mode {}\nnew mode {}\n",
                    mode(file.old_mode),
                    mode(file.new_mode)
                ));
            }
            if file.status == ChangeStatus::Renamed {
                out.push_str(format!(
                    "similarity index {}%\nrename from {}\nrename to {}\n",
                    file.similarity.unwrap_or(100),
                    quoted("", old_path),
                    quoted("", new_path)
                ));
            }
        }
    }
    if file.old_id == file.new_id {
        return;
    }
    let unchanged_mode = file.old_mode == file.new_mode && file.old_mode.is_some();
    out.push_str(format!(
        "index {}..{}{}\n",
        short(file.old_id),
        short(file.new_id),
        if unchanged_mode { format!(" {}", mode(file.old_mode)) } else { String::new() }
    ));
    let old_name =
        if file.old_id.is_some() { quoted("a/", old_path) } else { "/dev/null".to_owned() };
    let new_name =
        if file.new_id.is_some() { quoted("b/", new_path) } else { "/dev/null".to_owned() };
    if file.binary {
        out.push_str(format!("Binary files {old_name} and {new_name} differ\n"));
        return;
    }
    if let Some(patch) = &file.patch
        && !patch.is_empty()
    {
        // git ends these names with a tab when they hold a space, so tools can tell where a
        // name ends.
        let tab = |name: &str| if name.contains(' ') { "\t" } else { "" };
        out.push_str(format!(
            "--- {old_name}{}\n+++ {new_name}{}\n",
            tab(&old_name),
            tab(&new_name)
        ));
        out.extend_from_slice(patch);
    }
}
