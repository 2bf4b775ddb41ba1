//! Branches, tags and turning what a URL names into a commit.

use gix::ObjectId;
use gix::bstr::ByteSlice;

use super::{BrowseError, Repo, Result, Signature};

/// A branch and the commit it points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Branch {
    /// The name without `refs/heads/`.
    pub name: String,
    /// The commit.
    pub commit: ObjectId,
}

/// A tag, peeled to its commit, with the tag object when it is annotated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    /// The name without `refs/tags/`.
    pub name: String,
    /// The commit it ends at (none when it names a tree or blob).
    pub commit: Option<ObjectId>,
    /// The annotated tag, when there is one.
    pub annotated: Option<TagInfo>,
}

/// An annotated tag object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagInfo {
    /// The tag object's id.
    pub id: ObjectId,
    /// Its message (lossy UTF-8).
    pub message: String,
    /// Who tagged, when recorded.
    pub tagger: Option<Signature>,
    /// The object it points at directly.
    pub target: ObjectId,
}

/// A commit that a URL named, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The commit.
    pub id: ObjectId,
    /// Whether the URL gave the full commit id, so the answer can never change.
    pub immutable: bool,
}

/// Checks a branch, tag or ref name from a URL the way git would accept it.
fn check_ref_name(name: &str) -> Result<()> {
    let malformed = |reason| BrowseError::Malformed { what: "ref", name: name.to_owned(), reason };
    if name.is_empty() {
        return Err(malformed("a ref cannot be empty"));
    }
    if name.starts_with('-') {
        return Err(malformed("a ref cannot start with `-`"));
    }
    if name.bytes().any(|b| b.is_ascii_control() || b" ~^:?*[\\".contains(&b)) {
        return Err(malformed(
            "a ref cannot contain spaces, control characters or any of ~^:?*[\\",
        ));
    }
    gix::validate::reference::name_partial(name.as_bytes().as_bstr()).map_err(|_| {
        malformed("git does not allow this ref name (`..`, `@{`, `.lock`, `//` ...)")
    })?;
    Ok(())
}

fn is_hex(name: &str) -> bool {
    name.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Repo {
    /// Turns a branch name, tag name, full ref (`refs/...`) or commit id (full, or a prefix of at
    /// least 7 digits) into a commit. Branches win over tags, as on GitHub.
    ///
    /// # Errors
    ///
    /// [`BrowseError::Malformed`] for a name no ref can have, [`BrowseError::NotFound`] when
    /// nothing matches or the match is no commit.
    pub fn resolve(&self, name: &str) -> Result<Resolved> {
        if name.len() == 40 && is_hex(name) {
            let id = ObjectId::from_hex(name.as_bytes()).map_err(|_| BrowseError::Malformed {
                what: "ref",
                name: name.to_owned(),
                reason: "not a commit id",
            })?;
            // A tag object's id names its commit too, but only a commit id is forever.
            let peeled = self.peel_to_commit(id, name)?;
            return Ok(Resolved { id: peeled, immutable: peeled == id });
        }
        check_ref_name(name)?;
        let candidates: Vec<String> = if name.starts_with("refs/") {
            vec![name.to_owned()]
        } else {
            vec![format!("refs/heads/{name}"), format!("refs/tags/{name}")]
        };
        for full in &candidates {
            let found = self
                .repo
                .try_find_reference(full.as_str())
                .map_err(BrowseError::git("cannot read a ref"))?;
            if let Some(mut reference) = found {
                let id = reference.peel_to_id().map_err(BrowseError::git("cannot peel a ref"))?;
                let commit = self.peel_to_commit(id.detach(), name)?;
                return Ok(Resolved { id: commit, immutable: false });
            }
        }
        if (7..40).contains(&name.len())
            && is_hex(name)
            && let Ok(prefix) = gix::hash::Prefix::from_hex(name)
        {
            let found = self.repo.objects.lookup_prefix(prefix, None).map_err(|error| {
                BrowseError::Git {
                    context: "cannot look up an abbreviated id",
                    source: Box::new(error),
                }
            })?;
            if let Some(Ok(id)) = found {
                return Ok(Resolved { id: self.peel_to_commit(id, name)?, immutable: false });
            }
        }
        Err(BrowseError::not_found("ref", name))
    }

    fn peel_to_commit(&self, id: ObjectId, name: &str) -> Result<ObjectId> {
        let object = self
            .repo
            .try_find_object(id)
            .map_err(BrowseError::git("cannot read an object"))?
            .ok_or_else(|| BrowseError::not_found("commit", name))?;
        let commit = object
            .peel_to_kind(gix::object::Kind::Commit)
            .map_err(|_| BrowseError::not_found("commit", name))?;
        Ok(commit.id)
    }

    /// Returns the repository's branches, by name.
    ///
    /// # Errors
    ///
    /// [`BrowseError::Git`] when the refs cannot be read.
    pub fn branches(&self) -> Result<Vec<Branch>> {
        let platform = self.repo.references().map_err(BrowseError::git("cannot read refs"))?;
        let mut branches = Vec::new();
        for reference in platform.local_branches().map_err(BrowseError::git("cannot read refs"))? {
            let Ok(mut reference) = reference else { continue };
            let name = reference.name().shorten().to_str_lossy().into_owned();
            let Ok(id) = reference.peel_to_id() else { continue };
            branches.push(Branch { name, commit: id.detach() });
        }
        branches.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(branches)
    }

    /// Returns branch `name`.
    ///
    /// # Errors
    ///
    /// [`BrowseError::NotFound`] naming the branch, [`BrowseError::Malformed`] for a bad name.
    pub fn branch(&self, name: &str) -> Result<Branch> {
        check_ref_name(name)?;
        let full = format!("refs/heads/{name}");
        let mut reference = self
            .repo
            .try_find_reference(full.as_str())
            .map_err(BrowseError::git("cannot read a ref"))?
            .ok_or_else(|| BrowseError::not_found("branch", name))?;
        let id = reference.peel_to_id().map_err(BrowseError::git("cannot peel a ref"))?;
        Ok(Branch { name: name.to_owned(), commit: id.detach() })
    }

    /// Returns the repository's tags, by name, peeled.
    ///
    /// # Errors
    ///
    /// [`BrowseError::Git`] when the refs cannot be read.
    pub fn tags(&self) -> Result<Vec<Tag>> {
        let platform = self.repo.references().map_err(BrowseError::git("cannot read refs"))?;
        let mut tags = Vec::new();
        for reference in platform.tags().map_err(BrowseError::git("cannot read refs"))? {
            let Ok(reference) = reference else { continue };
            let name = reference.name().shorten().to_str_lossy().into_owned();
            let Some(target) = reference.try_id() else { continue };
            tags.push(self.tag_at(name, target.detach())?);
        }
        tags.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(tags)
    }

    /// Returns tag `name`, with its annotation.
    ///
    /// # Errors
    ///
    /// [`BrowseError::NotFound`] naming the tag, [`BrowseError::Malformed`] for a bad name.
    pub fn tag(&self, name: &str) -> Result<Tag> {
        check_ref_name(name)?;
        let full = format!("refs/tags/{name}");
        let reference = self
            .repo
            .try_find_reference(full.as_str())
            .map_err(BrowseError::git("cannot read a ref"))?
            .ok_or_else(|| BrowseError::not_found("tag", name))?;
        let target =
            reference.try_id().ok_or_else(|| BrowseError::not_found("tag", name))?.detach();
        self.tag_at(name.to_owned(), target)
    }

    fn tag_at(&self, name: String, target: ObjectId) -> Result<Tag> {
        let object =
            self.repo.try_find_object(target).map_err(BrowseError::git("cannot read a tag"))?;
        let Some(object) = object else { return Ok(Tag { name, commit: None, annotated: None }) };
        let annotated = if object.kind == gix::object::Kind::Tag {
            let tag = object.clone().into_tag();
            let decoded = tag.decode().map_err(BrowseError::git("cannot decode a tag"))?;
            Some(TagInfo {
                id: target,
                message: decoded.message.to_str_lossy().into_owned(),
                tagger: decoded.tagger().ok().flatten().map(Signature::read),
                target: decoded.target(),
            })
        } else {
            None
        };
        let commit = object.peel_to_kind(gix::object::Kind::Commit).ok().map(|commit| commit.id);
        Ok(Tag { name, commit, annotated })
    }

    /// Returns the branch `HEAD` names (none when HEAD is detached).
    ///
    /// # Errors
    ///
    /// [`BrowseError::Git`] when HEAD cannot be read.
    pub fn head_branch(&self) -> Result<Option<String>> {
        let head = self.repo.head_name().map_err(BrowseError::git("cannot read HEAD"))?;
        Ok(head.map(|name| name.shorten().to_str_lossy().into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::check_ref_name;

    #[test]
    fn names_git_refuses_are_malformed() {
        for bad in [
            "", "-x", "a..b", "a b", "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b", "a@{1}",
            "a.lock", "a//b", "a/",
        ] {
            assert!(check_ref_name(bad).is_err(), "{bad:?} passed");
        }
        for good in ["main", "release/1.x", "v1.0", "refs/heads/main", "feature-x_y"] {
            assert!(check_ref_name(good).is_ok(), "{good:?} refused");
        }
    }
}
