//! History: commits reachable from a start, newest first, optionally only those that changed a
//! path.
//!
//! The walk is git's default: a queue ordered by committer date, parents in order. With a path,
//! it simplifies history as `git log -- path` does: a commit whose path equals one parent's is
//! not shown, and only that parent is followed (so merges that brought nothing to the path hide
//! the side branch); a root commit is shown when it has the path.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use gix::ObjectId;
use gix::bstr::{BStr, BString};

use super::{BrowseError, CommitInfo, Deadline, Repo, Result};

/// Which commits to list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogQuery {
    /// Where the walk starts.
    pub start: ObjectId,
    /// Only commits that changed this file or directory.
    pub path: Option<BString>,
    /// Only commits committed at or after this time (seconds since the epoch).
    pub since: Option<i64>,
    /// Only commits committed at or before this time.
    pub until: Option<i64>,
    /// Only commits whose author has this email or name (case-insensitive).
    pub author: Option<String>,
    /// Matching commits to pass over first (for pages after the first).
    pub skip: usize,
    /// Matching commits to return.
    pub limit: usize,
}

impl From<ObjectId> for LogQuery {
    fn from(start: ObjectId) -> Self {
        Self { start, path: None, since: None, until: None, author: None, skip: 0, limit: 30 }
    }
}

/// One page of history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogPage {
    /// The commits, newest first.
    pub commits: Vec<CommitInfo>,
    /// Whether more commits match after these.
    pub more: bool,
}

/// An entry's id and mode: what "the path changed" compares.
type EntryState = Option<(ObjectId, u16)>;

struct Walk<'a> {
    repo: &'a Repo,
    queue: BinaryHeap<(i64, Reverse<u64>, ObjectId)>,
    queued: HashSet<ObjectId>,
    order: u64,
    entries: HashMap<ObjectId, EntryState>,
}

impl<'a> Walk<'a> {
    fn new(repo: &'a Repo) -> Self {
        Self {
            repo,
            queue: BinaryHeap::new(),
            queued: HashSet::new(),
            order: 0,
            entries: HashMap::new(),
        }
    }

    fn push(&mut self, id: ObjectId) -> Result<()> {
        if !self.queued.insert(id) {
            return Ok(());
        }
        let commit = self.repo.commit(id)?;
        let time = commit.time().map(|time| time.seconds).unwrap_or_default();
        self.order += 1;
        self.queue.push((time, Reverse(self.order), id));
        Ok(())
    }

    /// The state of `path` in commit `id`'s tree, memoised by tree.
    fn entry(&mut self, tree: ObjectId, path: &BStr) -> Result<EntryState> {
        if let Some(state) = self.entries.get(&tree) {
            return Ok(*state);
        }
        let tree_object =
            self.repo.repo.find_tree(tree).map_err(BrowseError::git("cannot read a tree"))?;
        let entry = tree_object
            .lookup_entry(path.split(|&b| b == b'/'))
            .map_err(BrowseError::git("cannot look up a path"))?;
        let state = entry.map(|entry| (entry.object_id(), entry.mode().value()));
        self.entries.insert(tree, state);
        Ok(state)
    }
}

impl Repo {
    /// Lists the commits `query` asks for.
    ///
    /// # Errors
    ///
    /// [`BrowseError::NotFound`] when the start is no commit, [`BrowseError::TooSlow`] past
    /// [`Limits::walk_time`](super::Limits::walk_time).
    pub fn log(&self, query: &LogQuery) -> Result<LogPage> {
        let deadline = Deadline::after(self.limits.walk_time, "the history walk");
        let author = query.author.as_deref().map(str::to_lowercase);
        let mut walk = Walk::new(self);
        walk.push(query.start)?;
        let mut skipped = 0;
        let mut commits = Vec::new();
        let mut steps = 0u32;
        while let Some((_, _, id)) = walk.queue.pop() {
            steps += 1;
            if steps.is_multiple_of(128) {
                deadline.check()?;
            }
            let info = self.commit_info(id)?;
            let shown = match &query.path {
                None => {
                    for parent in &info.parents {
                        walk.push(*parent)?;
                    }
                    true
                }
                Some(path) => {
                    let mine = walk.entry(info.tree, path.as_ref())?;
                    let mut same_parent = None;
                    for parent in &info.parents {
                        let parent_tree = self.commit_info(*parent)?.tree;
                        if walk.entry(parent_tree, path.as_ref())? == mine {
                            same_parent = Some(*parent);
                            break;
                        }
                    }
                    match same_parent {
                        Some(parent) => {
                            walk.push(parent)?;
                            false
                        }
                        None => {
                            for parent in &info.parents {
                                walk.push(*parent)?;
                            }
                            !info.parents.is_empty() || mine.is_some()
                        }
                    }
                }
            };
            if !shown || !matches(&info, query, author.as_deref()) {
                continue;
            }
            if skipped < query.skip {
                skipped += 1;
                continue;
            }
            if commits.len() == query.limit {
                return Ok(LogPage { commits, more: true });
            }
            commits.push(info);
        }
        Ok(LogPage { commits, more: false })
    }

    /// Counts the commits reachable from `head` but not from `base` (`git rev-list base..head`),
    /// and lists the first `limit` of them oldest first, as a comparison shows them.
    ///
    /// Both sides are walked together by date, the way git limits a walk: what `base` reaches is
    /// marked uninteresting, and the walk ends once only uninteresting commits are queued (plus a
    /// few more, for clocks that went backwards), so an old base costs no walk to the root.
    ///
    /// # Errors
    ///
    /// [`BrowseError::TooSlow`] past [`Limits::walk_time`](super::Limits::walk_time).
    pub fn commits_between(
        &self,
        base: ObjectId,
        head: ObjectId,
        limit: usize,
    ) -> Result<(usize, Vec<CommitInfo>)> {
        /// Extra commits popped after only uninteresting ones remain (git's SLOP).
        const SLOP: u32 = 5;
        let deadline = Deadline::after(self.limits.walk_time, "the comparison");
        let mut uninteresting: HashMap<ObjectId, bool> = HashMap::new();
        let mut parents_of: HashMap<ObjectId, Vec<ObjectId>> = HashMap::new();
        let mut queue = BinaryHeap::new();
        let mut order = 0u64;
        let mut enqueue = |id: ObjectId,
                           hidden: bool,
                           uninteresting: &mut HashMap<ObjectId, bool>,
                           parents_of: &HashMap<ObjectId, Vec<ObjectId>>,
                           queue: &mut BinaryHeap<(i64, Reverse<u64>, ObjectId)>|
         -> Result<()> {
            match uninteresting.get(&id).copied() {
                Some(true) => {}
                Some(false) if hidden => mark_hidden(id, uninteresting, parents_of),
                Some(false) => {}
                None => {
                    uninteresting.insert(id, hidden);
                    let time = self.commit(id)?.time().map(|time| time.seconds).unwrap_or_default();
                    order += 1;
                    queue.push((time, Reverse(order), id));
                }
            }
            Ok(())
        };
        enqueue(head, false, &mut uninteresting, &parents_of, &mut queue)?;
        enqueue(base, true, &mut uninteresting, &parents_of, &mut queue)?;
        let mut shown = Vec::new();
        let mut slop = SLOP;
        let mut steps = 0u32;
        while let Some((_, _, id)) = queue.pop() {
            steps += 1;
            if steps.is_multiple_of(128) {
                deadline.check()?;
            }
            let info = self.commit_info(id)?;
            let hidden = uninteresting.get(&id).copied().unwrap_or(false);
            for parent in &info.parents {
                enqueue(*parent, hidden, &mut uninteresting, &parents_of, &mut queue)?;
            }
            parents_of.insert(id, info.parents.clone());
            if !hidden {
                shown.push(info);
            }
            if queue.iter().all(|(_, _, id)| uninteresting.get(id).copied().unwrap_or(false)) {
                slop -= 1;
                if slop == 0 {
                    break;
                }
            } else {
                slop = SLOP;
            }
        }
        shown.retain(|info| !uninteresting.get(&info.id).copied().unwrap_or(false));
        let count = shown.len();
        shown.reverse();
        shown.truncate(limit);
        Ok((count, shown))
    }

    /// Returns the best common ancestor of `one` and `two`, if they have one.
    ///
    /// # Errors
    ///
    /// [`BrowseError::Git`] when the history cannot be read.
    pub fn merge_base(&self, one: ObjectId, two: ObjectId) -> Result<Option<ObjectId>> {
        match self.repo.merge_base(one, two) {
            Ok(id) => Ok(id.map(gix::Id::detach)),
            Err(error) => Err(BrowseError::Git {
                context: "cannot find a merge base",
                source: Box::new(error),
            }),
        }
    }
}

/// Marks `id` and everything below it that the walk has seen as reachable from the base.
fn mark_hidden(
    id: ObjectId,
    uninteresting: &mut HashMap<ObjectId, bool>,
    parents_of: &HashMap<ObjectId, Vec<ObjectId>>,
) {
    let mut stack = vec![id];
    while let Some(id) = stack.pop() {
        if uninteresting.insert(id, true) == Some(true) {
            continue;
        }
        if let Some(parents) = parents_of.get(&id) {
            stack.extend(parents.iter().copied());
        }
    }
}

fn matches(info: &CommitInfo, query: &LogQuery, author: Option<&str>) -> bool {
    if query.since.is_some_and(|since| info.committer.seconds < since) {
        return false;
    }
    if query.until.is_some_and(|until| info.committer.seconds > until) {
        return false;
    }
    match author {
        None => true,
        Some(author) => {
            info.author.email.to_lowercase() == author || info.author.name.to_lowercase() == author
        }
    }
}
