//! Trees and what is at a path: directory listings, files, symlinks and submodules.

use gix::ObjectId;
use gix::bstr::{BStr, BString, ByteSlice, ByteVec};
use gix::object::tree::EntryKind as GixKind;

use super::{BrowseError, Repo, Result, display_path};

/// What a tree entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A regular file with the executable bit.
    Executable,
    /// A symbolic link (its blob is the target).
    Symlink,
    /// A directory.
    Dir,
    /// A submodule: a commit of another repository.
    Submodule,
}

impl EntryKind {
    fn from_gix(kind: GixKind) -> Self {
        match kind {
            GixKind::Tree => Self::Dir,
            GixKind::Blob => Self::File,
            GixKind::BlobExecutable => Self::Executable,
            GixKind::Link => Self::Symlink,
            GixKind::Commit => Self::Submodule,
        }
    }

    /// git's object type for it: `blob`, `tree` or `commit`.
    pub fn object_type(self) -> &'static str {
        match self {
            Self::File | Self::Executable | Self::Symlink => "blob",
            Self::Dir => "tree",
            Self::Submodule => "commit",
        }
    }

    /// GitHub's contents type for it: `file`, `dir`, `symlink` or `submodule`.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::File | Self::Executable => "file",
            Self::Symlink => "symlink",
            Self::Dir => "dir",
            Self::Submodule => "submodule",
        }
    }

    /// The mode git records.
    pub fn mode(self) -> u32 {
        match self {
            Self::File => 0o100644,
            Self::Executable => 0o100755,
            Self::Symlink => 0o120000,
            Self::Dir => 0o040000,
            Self::Submodule => 0o160000,
        }
    }
}

/// One entry of a tree listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    /// Its path from the listed tree.
    pub path: BString,
    /// Its name (the last segment).
    pub name: BString,
    /// What it is.
    pub kind: EntryKind,
    /// The blob, tree or submodule commit.
    pub id: ObjectId,
    /// For blobs, the size in bytes.
    pub size: Option<u64>,
}

/// A tree's entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeListing {
    /// The tree's id.
    pub id: ObjectId,
    /// Its entries: a recursive listing names each directory before its contents.
    pub entries: Vec<TreeEntry>,
    /// Whether entries were left out past [`Limits::tree_entries`](super::Limits::tree_entries).
    pub truncated: bool,
}

/// What is at a path of a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contents {
    /// A file, with its content when it is no larger than
    /// [`Limits::inline_bytes`](super::Limits::inline_bytes).
    File {
        /// The entry.
        entry: TreeEntry,
        /// The bytes, when small enough.
        content: Option<Vec<u8>>,
    },
    /// A symbolic link.
    Symlink {
        /// The entry.
        entry: TreeEntry,
        /// Where it points.
        target: BString,
    },
    /// A submodule.
    Submodule {
        /// The entry (its id is the commit).
        entry: TreeEntry,
        /// Its URL from `.gitmodules`, when given there.
        url: Option<String>,
    },
    /// A directory and its entries.
    Dir {
        /// The entry (the root has an empty path).
        entry: TreeEntry,
        /// The entries, not recursive.
        entries: Vec<TreeEntry>,
    },
}

fn name_of(path: &BStr) -> BString {
    path.rsplit_str("/").next().unwrap_or_default().into()
}

impl Repo {
    /// Finds `path` in tree `root`: the root itself for an empty path.
    pub(super) fn entry_at(&self, root: ObjectId, path: &BStr) -> Result<TreeEntry> {
        if path.is_empty() {
            return Ok(TreeEntry {
                path: BString::default(),
                name: BString::default(),
                kind: EntryKind::Dir,
                id: root,
                size: None,
            });
        }
        let (mode, id) = self
            .lookup(root, path)?
            .ok_or_else(|| BrowseError::not_found("path", display_path(path)))?;
        let kind = EntryKind::from_gix(mode.kind());
        let size = self.blob_size(kind, id)?;
        Ok(TreeEntry { path: path.to_owned(), name: name_of(path), kind, id, size })
    }

    /// The mode and id at `path` of tree `root`, if there is something. Only directories are
    /// entered: a path through a file or a submodule (whose commit is another repository's,
    /// missing here) names nothing, where gix's `lookup_entry` fails to read the missing commit.
    pub(super) fn lookup(
        &self,
        root: ObjectId,
        path: &BStr,
    ) -> Result<Option<(gix::object::tree::EntryMode, ObjectId)>> {
        let mut tree = self.repo.find_tree(root).map_err(BrowseError::git("cannot read a tree"))?;
        let mut components = path.split(|&b| b == b'/').peekable();
        while let Some(name) = components.next() {
            let Some(entry) = tree.find_entry(name) else { return Ok(None) };
            let (mode, id) = (entry.mode(), entry.object_id());
            if components.peek().is_none() {
                return Ok(Some((mode, id)));
            }
            if !mode.is_tree() {
                return Ok(None);
            }
            tree = self.repo.find_tree(id).map_err(BrowseError::git("cannot read a tree"))?;
        }
        Ok(None)
    }

    fn blob_size(&self, kind: EntryKind, id: ObjectId) -> Result<Option<u64>> {
        Ok(match kind {
            EntryKind::File | EntryKind::Executable | EntryKind::Symlink => Some(
                self.repo.find_header(id).map_err(BrowseError::git("cannot read a blob"))?.size(),
            ),
            EntryKind::Dir | EntryKind::Submodule => None,
        })
    }

    /// Lists the tree at `path` of tree `root`, recursively if asked, up to
    /// [`Limits::tree_entries`](super::Limits::tree_entries) entries.
    ///
    /// # Errors
    ///
    /// [`BrowseError::NotFound`] when there is no directory at `path`.
    pub fn tree(&self, root: ObjectId, path: &BStr, recursive: bool) -> Result<TreeListing> {
        let entry = self.entry_at(root, path)?;
        if entry.kind != EntryKind::Dir {
            return Err(BrowseError::not_found("tree", display_path(path)));
        }
        let mut entries = Vec::new();
        let mut truncated = false;
        // Depth first, each directory's entries in tree order before the next sibling.
        let mut stack: Vec<(BString, std::vec::IntoIter<TreeEntry>)> =
            vec![(BString::default(), self.list(entry.id, BStr::new(""))?.into_iter())];
        while let Some((_, iter)) = stack.last_mut() {
            let Some(next) = iter.next() else {
                stack.pop();
                continue;
            };
            if entries.len() == self.limits.tree_entries {
                truncated = true;
                break;
            }
            let descend = recursive && next.kind == EntryKind::Dir;
            let (id, path) = (next.id, next.path.clone());
            entries.push(next);
            if descend {
                let children = self.list(id, path.as_bstr())?;
                stack.push((path, children.into_iter()));
            }
        }
        Ok(TreeListing { id: entry.id, entries, truncated })
    }

    /// The entries of tree `id`, their paths under `prefix`.
    fn list(&self, id: ObjectId, prefix: &BStr) -> Result<Vec<TreeEntry>> {
        let tree = self.repo.find_tree(id).map_err(BrowseError::git("cannot read a tree"))?;
        let mut entries = Vec::new();
        for entry in tree.iter() {
            let entry = entry.map_err(BrowseError::git("cannot decode a tree"))?;
            let kind = EntryKind::from_gix(entry.mode().kind());
            let id = entry.object_id();
            let name: BString = entry.filename().to_owned();
            let mut path = prefix.to_owned();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.push_str(&name);
            let size = self.blob_size(kind, id)?;
            entries.push(TreeEntry { path, name, kind, id, size });
        }
        Ok(entries)
    }

    /// Returns what is at `path` of tree `root`.
    ///
    /// # Errors
    ///
    /// [`BrowseError::NotFound`] naming the path.
    pub fn contents(&self, root: ObjectId, path: &BStr) -> Result<Contents> {
        let entry = self.entry_at(root, path)?;
        Ok(match entry.kind {
            EntryKind::Dir => {
                let entries = self.list(entry.id, path)?;
                Contents::Dir { entry, entries }
            }
            EntryKind::Symlink => {
                let target = self.blob(entry.id)?.into();
                Contents::Symlink { entry, target }
            }
            EntryKind::Submodule => {
                let url = self.submodule_url(root, path)?;
                Contents::Submodule { entry, url }
            }
            EntryKind::File | EntryKind::Executable => {
                let small = entry.size.is_some_and(|size| size <= self.limits.inline_bytes);
                let content = if small { Some(self.blob(entry.id)?) } else { None };
                Contents::File { entry, content }
            }
        })
    }

    /// Returns the file at `path` of tree `root` and its bytes (a symlink's target for a link).
    ///
    /// # Errors
    ///
    /// [`BrowseError::NotFound`] when there is no file there.
    pub fn file(&self, root: ObjectId, path: &BStr) -> Result<(TreeEntry, Vec<u8>)> {
        let entry = self.entry_at(root, path)?;
        match entry.kind {
            EntryKind::File | EntryKind::Executable | EntryKind::Symlink => {
                let data = self.blob(entry.id)?;
                Ok((entry, data))
            }
            EntryKind::Dir | EntryKind::Submodule => {
                Err(BrowseError::not_found("file", display_path(path)))
            }
        }
    }

    /// Returns a blob's bytes.
    ///
    /// # Errors
    ///
    /// [`BrowseError::NotFound`] when `id` is no blob.
    pub fn blob(&self, id: ObjectId) -> Result<Vec<u8>> {
        let object = self
            .repo
            .try_find_object(id)
            .map_err(BrowseError::git("cannot read a blob"))?
            .filter(|object| object.kind == gix::object::Kind::Blob)
            .ok_or_else(|| BrowseError::not_found("blob", id.to_string()))?;
        Ok(object.detach().data)
    }

    fn submodule_url(&self, root: ObjectId, path: &BStr) -> Result<Option<String>> {
        let Ok(entry) = self.entry_at(root, BStr::new(".gitmodules")) else { return Ok(None) };
        if entry.kind != EntryKind::File {
            return Ok(None);
        }
        let data = self.blob(entry.id)?;
        let Ok(modules) = gix::submodule::File::from_bytes(&data, None, &Default::default()) else {
            return Ok(None);
        };
        for name in modules.names() {
            if modules.path(name).is_ok_and(|candidate| candidate.as_bstr() == path) {
                return Ok(modules
                    .url(name)
                    .ok()
                    .map(|url| url.to_bstring().to_str_lossy().into_owned()));
            }
        }
        Ok(None)
    }
}
