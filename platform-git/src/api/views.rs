//! What the browsing routes answer, shaped as GitHub's REST API answers so its clients work.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use gix::bstr::ByteSlice;
use serde::Serialize;

use super::browse::encode_path;
use crate::browse::{
    Blame, Branch, CommitInfo, Contents, Diff, FileChange, Readme, Signature, Tag, TreeEntry,
    TreeListing,
};

/// Builds the URLs answers link to.
#[derive(Clone, Debug)]
pub(super) struct Urls {
    pub(super) repo: String,
}

impl Urls {
    fn commit(&self, sha: &str) -> String {
        format!("{}/commits/{sha}", self.repo)
    }

    // Refs are encoded too: git allows `#`, `&`, `+` and `%` in their names.
    fn raw(&self, path: &[u8], reference: &str) -> String {
        let reference = encode_path(reference.as_bytes());
        format!("{}/raw/{}?ref={reference}", self.repo, encode_path(path))
    }

    fn contents(&self, path: &[u8], reference: &str) -> String {
        let reference = encode_path(reference.as_bytes());
        format!("{}/contents/{}?ref={reference}", self.repo, encode_path(path))
    }

    pub(super) fn archive(&self, kind: &str, reference: &str) -> String {
        format!("{}/{kind}/{}", self.repo, encode_path(reference.as_bytes()))
    }
}

/// A person and time of a commit or tag.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct PersonView {
    /// The name.
    pub name: String,
    /// The email address.
    pub email: String,
    /// When, in UTC.
    pub date: DateTime<Utc>,
}

impl From<&Signature> for PersonView {
    fn from(signature: &Signature) -> Self {
        Self { name: signature.name.clone(), email: signature.email.clone(), date: signature.time }
    }
}

/// A commit named by id.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct CommitRef {
    /// The commit id.
    pub sha: String,
    /// Its API URL.
    pub url: String,
}

/// A tree named by id.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct TreeRef {
    /// The tree id.
    pub sha: String,
}

/// What git records of a commit.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct CommitDetail {
    /// Who wrote it.
    pub author: PersonView,
    /// Who committed it.
    pub committer: PersonView,
    /// The whole message.
    pub message: String,
    /// Its tree.
    pub tree: TreeRef,
}

/// Line totals of a commit.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct StatsView {
    /// Lines added.
    pub additions: u64,
    /// Lines removed.
    pub deletions: u64,
    /// Both.
    pub total: u64,
}

/// A changed file.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct FileView {
    /// The blob after the change (absent for a removed file).
    pub sha: Option<String>,
    /// The path (lossy UTF-8; `raw_url` addresses the exact bytes).
    pub filename: String,
    /// `added`, `removed`, `modified`, `renamed` or `changed` (a file became a symlink, or back).
    pub status: String,
    /// Lines added.
    pub additions: u32,
    /// Lines removed.
    pub deletions: u32,
    /// Both.
    pub changes: u32,
    /// The path before a rename.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_filename: Option<String>,
    /// For a rename, how much stayed, in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<u8>,
    /// Whether either side is binary (no lines counted, no patch).
    pub binary: bool,
    /// Whether the patch or the counts were left out (past the diff limits).
    pub truncated: bool,
    /// The hunks in unified format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// The file's bytes after the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_url: Option<String>,
}

impl FileView {
    pub(super) fn new(file: &FileChange, urls: &Urls, at: &str) -> Self {
        Self {
            sha: file.new_id.map(|id| id.to_string()),
            filename: file.path.to_str_lossy().into_owned(),
            status: file.status.as_str().to_owned(),
            additions: file.additions,
            deletions: file.deletions,
            changes: file.additions + file.deletions,
            previous_filename: file
                .previous_path
                .as_ref()
                .map(|path| path.to_str_lossy().into_owned()),
            similarity: file.similarity,
            binary: file.binary,
            truncated: file.truncated,
            patch: file.patch.as_ref().map(|patch| patch.to_str_lossy().into_owned()),
            raw_url: file.new_id.map(|_| urls.raw(&file.path, at)),
        }
    }
}

/// A commit.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct CommitView {
    /// The commit id.
    pub sha: String,
    /// Its API URL.
    pub url: String,
    /// What git records.
    pub commit: CommitDetail,
    /// Its parents, first parent first.
    pub parents: Vec<CommitRef>,
    /// Line totals against the first parent (one commit only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<StatsView>,
    /// The changed files against the first parent (one commit only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<FileView>>,
    /// How many files changed, when more than `files` lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_files: Option<usize>,
}

impl CommitView {
    pub(super) fn new(info: &CommitInfo, urls: &Urls) -> Self {
        let sha = info.id.to_string();
        Self {
            url: urls.commit(&sha),
            commit: CommitDetail {
                author: (&info.author).into(),
                committer: (&info.committer).into(),
                message: info.message.clone(),
                tree: TreeRef { sha: info.tree.to_string() },
            },
            parents: info
                .parents
                .iter()
                .map(|parent| CommitRef {
                    sha: parent.to_string(),
                    url: urls.commit(&parent.to_string()),
                })
                .collect(),
            sha,
            stats: None,
            files: None,
            total_files: None,
        }
    }

    pub(super) fn with_diff(mut self, diff: &Diff, urls: &Urls) -> Self {
        self.stats = Some(StatsView {
            additions: diff.additions,
            deletions: diff.deletions,
            total: diff.additions + diff.deletions,
        });
        self.files =
            Some(diff.files.iter().map(|file| FileView::new(file, urls, &self.sha)).collect());
        self.total_files = diff.truncated().then_some(diff.total_files);
        self
    }
}

/// A branch.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct BranchView {
    /// The name.
    pub name: String,
    /// Its commit.
    pub commit: CommitRef,
    /// Whether a protection rule covers it.
    pub protected: bool,
}

impl BranchView {
    pub(super) fn new(branch: &Branch, urls: &Urls, protected: bool) -> Self {
        let sha = branch.commit.to_string();
        Self {
            name: branch.name.clone(),
            commit: CommitRef { url: urls.commit(&sha), sha },
            protected,
        }
    }
}

/// One branch with its whole commit.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct BranchDetail {
    /// The name.
    pub name: String,
    /// Its commit.
    pub commit: CommitView,
    /// Whether a protection rule covers it.
    pub protected: bool,
}

/// An annotated tag object.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct TagObjectView {
    /// The tag object's id.
    pub sha: String,
    /// Its message.
    pub message: String,
    /// Who tagged, and when.
    pub tagger: Option<PersonView>,
}

/// A tag.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct TagView {
    /// The name.
    pub name: String,
    /// The commit it ends at (absent when it names a tree or blob).
    pub commit: Option<CommitRef>,
    /// The annotation, for an annotated tag.
    pub tag: Option<TagObjectView>,
    /// The archive of the tag as zip.
    pub zipball_url: String,
    /// The archive of the tag as tar.gz.
    pub tarball_url: String,
}

impl TagView {
    pub(super) fn new(tag: &Tag, urls: &Urls) -> Self {
        Self {
            name: tag.name.clone(),
            commit: tag
                .commit
                .map(|id| CommitRef { sha: id.to_string(), url: urls.commit(&id.to_string()) }),
            tag: tag.annotated.as_ref().map(|annotated| TagObjectView {
                sha: annotated.id.to_string(),
                message: annotated.message.clone(),
                tagger: annotated.tagger.as_ref().map(PersonView::from),
            }),
            zipball_url: urls.archive("zipball", &tag.name),
            tarball_url: urls.archive("tarball", &tag.name),
        }
    }
}

/// A comparison of two commits.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct CompareView {
    /// `identical`, `ahead` (head has commits base lacks), `behind` or `diverged`.
    pub status: String,
    /// Commits in head not in base.
    pub ahead_by: usize,
    /// Commits in base not in head.
    pub behind_by: usize,
    /// Same as `ahead_by`.
    pub total_commits: usize,
    /// The base commit.
    pub base_commit: CommitView,
    /// Their best common ancestor.
    pub merge_base_commit: Option<CommitView>,
    /// The commits in head not in base, oldest first (at most 250).
    pub commits: Vec<CommitView>,
    /// The files changed from the merge base to head.
    pub files: Vec<FileView>,
    /// How many files changed, when more than `files` lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_files: Option<usize>,
}

/// One entry of a tree listing.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct TreeEntryView {
    /// The path from the listed tree (lossy UTF-8).
    pub path: String,
    /// git's mode: `100644`, `100755`, `120000`, `040000`, `160000`.
    pub mode: String,
    /// `blob`, `tree` or `commit` (a submodule).
    #[serde(rename = "type")]
    pub kind: String,
    /// The object id.
    pub sha: String,
    /// For blobs, the size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

impl From<&TreeEntry> for TreeEntryView {
    fn from(entry: &TreeEntry) -> Self {
        Self {
            path: entry.path.to_str_lossy().into_owned(),
            mode: format!("{:06o}", entry.kind.mode()),
            kind: entry.kind.object_type().to_owned(),
            sha: entry.id.to_string(),
            size: entry.size,
        }
    }
}

/// A tree listing.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct TreeView {
    /// The tree's id.
    pub sha: String,
    /// Its entries (a recursive listing names each directory before its contents).
    pub tree: Vec<TreeEntryView>,
    /// Whether entries were left out (past 100,000).
    pub truncated: bool,
}

impl From<&TreeListing> for TreeView {
    fn from(listing: &TreeListing) -> Self {
        Self {
            sha: listing.id.to_string(),
            tree: listing.entries.iter().map(TreeEntryView::from).collect(),
            truncated: listing.truncated,
        }
    }
}

/// A file, directory entry, symlink or submodule, as the contents route shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ContentView {
    /// `file`, `dir`, `symlink` or `submodule`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The name.
    pub name: String,
    /// The path (lossy UTF-8).
    pub path: String,
    /// The blob, tree or submodule commit.
    pub sha: String,
    /// The size in bytes (0 for directories and submodules).
    pub size: u64,
    /// The API URL of this entry.
    pub url: String,
    /// The raw bytes' URL, for files and symlinks.
    pub download_url: Option<String>,
    /// `base64` when `content` is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// The bytes, base64, for files up to 1 MiB (larger: follow `download_url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// A symlink's target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// A submodule's URL from `.gitmodules`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submodule_git_url: Option<String>,
}

impl ContentView {
    pub(super) fn entry(entry: &TreeEntry, urls: &Urls, at: &str) -> Self {
        let downloadable = entry.size.is_some();
        Self {
            kind: entry.kind.content_type().to_owned(),
            name: entry.name.to_str_lossy().into_owned(),
            path: entry.path.to_str_lossy().into_owned(),
            sha: entry.id.to_string(),
            size: entry.size.unwrap_or(0),
            url: urls.contents(&entry.path, at),
            download_url: downloadable.then(|| urls.raw(&entry.path, at)),
            encoding: None,
            content: None,
            target: None,
            submodule_git_url: None,
        }
    }

    fn with_content(mut self, content: Option<&[u8]>) -> Self {
        use base64::Engine as _;
        if let Some(content) = content {
            self.encoding = Some("base64".to_owned());
            self.content = Some(base64::engine::general_purpose::STANDARD.encode(content));
        }
        self
    }
}

/// The answer of the contents route: one item, or a directory's entries.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ContentsView {
    /// A directory's entries.
    Dir(Vec<ContentView>),
    /// A file, symlink or submodule.
    Item(Box<ContentView>),
}

impl ContentsView {
    pub(super) fn new(contents: &Contents, urls: &Urls, at: &str) -> Self {
        match contents {
            Contents::Dir { entries, .. } => {
                Self::Dir(entries.iter().map(|entry| ContentView::entry(entry, urls, at)).collect())
            }
            Contents::File { entry, content } => Self::Item(Box::new(
                ContentView::entry(entry, urls, at).with_content(content.as_deref()),
            )),
            Contents::Symlink { entry, target } => Self::Item(Box::new(ContentView {
                target: Some(target.to_str_lossy().into_owned()),
                ..ContentView::entry(entry, urls, at)
            })),
            Contents::Submodule { entry, url } => Self::Item(Box::new(ContentView {
                submodule_git_url: url.clone(),
                ..ContentView::entry(entry, urls, at)
            })),
        }
    }
}

/// A README.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ReadmeView {
    /// The file.
    #[serde(flatten)]
    pub file: ContentView,
    /// The content as sanitized HTML (Markdown rendered).
    pub html: Option<String>,
}

impl ReadmeView {
    pub(super) fn new(readme: &Readme, urls: &Urls, at: &str) -> Self {
        Self {
            file: ContentView::entry(&readme.entry, urls, at)
                .with_content(readme.content.as_deref()),
            html: readme.html.clone(),
        }
    }
}

/// The commit of a blame range.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct BlameCommitView {
    /// The commit id.
    pub sha: String,
    /// Who wrote it.
    pub author: PersonView,
    /// Who committed it.
    pub committer: PersonView,
    /// The message's first line.
    pub summary: String,
}

/// Lines one commit last changed.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct BlameRangeView {
    /// The first line, from 1.
    pub starting_line: u32,
    /// The last line.
    pub ending_line: u32,
    /// The commit (see `commits`).
    pub commit: String,
    /// Where the lines started in that commit's file.
    pub original_starting_line: u32,
    /// The file's path in that commit, when it was another.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_path: Option<String>,
}

/// A file's blame.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct BlameView {
    /// The ranges, covering every line in order.
    pub ranges: Vec<BlameRangeView>,
    /// The commits the ranges name, by id.
    pub commits: BTreeMap<String, BlameCommitView>,
}

impl From<&Blame> for BlameView {
    fn from(blame: &Blame) -> Self {
        Self {
            ranges: blame
                .ranges
                .iter()
                .map(|range| BlameRangeView {
                    starting_line: range.start_line,
                    ending_line: range.start_line + range.lines - 1,
                    commit: range.commit.to_string(),
                    original_starting_line: range.original_start_line,
                    original_path: range
                        .original_path
                        .as_ref()
                        .map(|path| path.to_str_lossy().into_owned()),
                })
                .collect(),
            commits: blame
                .commits
                .iter()
                .map(|commit| {
                    (
                        commit.id.to_string(),
                        BlameCommitView {
                            sha: commit.id.to_string(),
                            author: (&commit.author).into(),
                            committer: (&commit.committer).into(),
                            summary: commit.summary().to_owned(),
                        },
                    )
                })
                .collect(),
        }
    }
}
