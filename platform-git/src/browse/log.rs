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

/// What a walk needs of a commit, read once without decoding its people or message.
#[derive(Clone, Debug)]
struct Node {
    time: i64,
    tree: ObjectId,
    parents: Vec<ObjectId>,
}

/// A date-ordered walk (git's default order: newest committer date first, ties in the order
/// commits were queued), with each commit's [`Node`] read once.
struct Walk<'a> {
    repo: &'a Repo,
    queue: BinaryHeap<(i64, Reverse<u64>, ObjectId)>,
    nodes: HashMap<ObjectId, Node>,
    queued: HashSet<ObjectId>,
    order: u64,
    entries: HashMap<ObjectId, EntryState>,
}

impl<'a> Walk<'a> {
    fn new(repo: &'a Repo) -> Self {
        Self {
            repo,
            queue: BinaryHeap::new(),
            nodes: HashMap::new(),
            queued: HashSet::new(),
            order: 0,
            entries: HashMap::new(),
        }
    }

    fn node(&mut self, id: ObjectId) -> Result<&Node> {
        if !self.nodes.contains_key(&id) {
            let commit = self.repo.commit(id)?;
            let failed = |error| BrowseError::Git {
                context: "cannot decode a commit",
                source: Box::new(error),
            };
            let mut iter = gix::objs::CommitRefIter::from_bytes(&commit.data, id.kind());
            let tree = iter.tree_id().map_err(failed)?;
            let parents: Vec<ObjectId> = iter.parent_ids().collect();
            let time = iter.committer().map(|signature| signature.seconds()).unwrap_or_default();
            self.nodes.insert(id, Node { time, tree, parents });
        }
        Ok(&self.nodes[&id])
    }

    /// Queues `id` unless it was queued before.
    fn push(&mut self, id: ObjectId) -> Result<()> {
        if !self.queued.insert(id) {
            return Ok(());
        }
        let time = self.node(id)?.time;
        self.order += 1;
        self.queue.push((time, Reverse(self.order), id));
        Ok(())
    }

    /// The state of `path` in `tree`, memoised by tree.
    fn entry(&mut self, tree: ObjectId, path: &BStr) -> Result<EntryState> {
        if let Some(state) = self.entries.get(&tree) {
            return Ok(*state);
        }
        let entry = self.repo.lookup(tree, path)?;
        let state = entry.map(|(mode, id)| (id, mode.value()));
        self.entries.insert(tree, state);
        Ok(state)
    }
}

/// Which tips reach a commit, in a comparison's walk.
const FROM_BASE: u8 = 1;
const FROM_HEAD: u8 = 2;

/// How two commits' histories relate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// Commits reachable from head and not from base (`git rev-list --count base..head`).
    pub ahead: usize,
    /// Commits reachable from base and not from head.
    pub behind: usize,
    /// The first of the `ahead` commits, oldest first, as many as asked for.
    pub commits: Vec<CommitInfo>,
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
        while let Some((time, _, id)) = walk.queue.pop() {
            steps += 1;
            if steps.is_multiple_of(128) {
                deadline.check()?;
            }
            let node = walk.node(id)?.clone();
            let shown = match &query.path {
                None => {
                    for parent in &node.parents {
                        walk.push(*parent)?;
                    }
                    true
                }
                Some(path) => {
                    let mine = walk.entry(node.tree, path.as_ref())?;
                    let mut same_parent = None;
                    for parent in &node.parents {
                        let parent_tree = walk.node(*parent)?.tree;
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
                            for parent in &node.parents {
                                walk.push(*parent)?;
                            }
                            !node.parents.is_empty() || mine.is_some()
                        }
                    }
                }
            };
            if !shown
                || query.since.is_some_and(|since| time < since)
                || query.until.is_some_and(|until| time > until)
            {
                continue;
            }
            // People and message are decoded only for commits a filter or the page needs.
            let info = if author.is_some() || skipped >= query.skip {
                Some(self.commit_info(id)?)
            } else {
                None
            };
            if let (Some(author), Some(info)) = (author.as_deref(), &info)
                && !by(info, author)
            {
                continue;
            }
            if skipped < query.skip {
                skipped += 1;
                continue;
            }
            if commits.len() == query.limit {
                return Ok(LogPage { commits, more: true });
            }
            commits.extend(info);
        }
        Ok(LogPage { commits, more: false })
    }

    /// Tells how `head` and `base` diverged (`git rev-list --left-right --count base...head`),
    /// listing the first `limit` commits `head` has that `base` lacks, oldest first.
    ///
    /// Both tips are walked together by date, each commit marked with the tips that reach it,
    /// the way git limits a walk: the walk ends once every queued commit is reached from both
    /// (plus a few more, for clocks that went backwards), so a long shared history is not
    /// walked to its root.
    ///
    /// # Errors
    ///
    /// [`BrowseError::TooSlow`] past [`Limits::walk_time`](super::Limits::walk_time).
    pub fn divergence(&self, base: ObjectId, head: ObjectId, limit: usize) -> Result<Divergence> {
        /// Extra commits popped once only shared ones are queued (git's SLOP).
        const SLOP: u32 = 5;
        let deadline = Deadline::after(self.limits.walk_time, "the comparison");
        let mut walk = Walk::new(self);
        let mut reach: HashMap<ObjectId, u8> = HashMap::new();
        let mut popped = Vec::new();
        reach.insert(base, FROM_BASE);
        *reach.entry(head).or_default() |= FROM_HEAD;
        walk.push(base)?;
        walk.push(head)?;
        let mut slop = SLOP;
        let mut steps = 0u32;
        while let Some((_, _, id)) = walk.queue.pop() {
            steps += 1;
            if steps.is_multiple_of(128) {
                deadline.check()?;
            }
            let marks = reach.get(&id).copied().unwrap_or_default();
            let parents = walk.node(id)?.parents.clone();
            for parent in parents {
                let known = reach.get(&parent).copied();
                match known {
                    None => {
                        reach.insert(parent, marks);
                        walk.push(parent)?;
                    }
                    Some(old) if old | marks != old => {
                        spread(parent, marks, &mut reach, &walk.nodes)
                    }
                    Some(_) => {}
                }
            }
            popped.push(id);
            let shared = FROM_BASE | FROM_HEAD;
            if walk.queue.iter().all(|(_, _, id)| reach.get(id) == Some(&shared)) {
                slop -= 1;
                if slop == 0 {
                    break;
                }
            } else {
                slop = SLOP;
            }
        }
        let ahead: Vec<ObjectId> =
            popped.iter().filter(|id| reach.get(*id) == Some(&FROM_HEAD)).copied().collect();
        let behind = popped.iter().filter(|id| reach.get(*id) == Some(&FROM_BASE)).count();
        let commits = ahead
            .iter()
            .rev()
            .take(limit)
            .map(|id| self.commit_info(*id))
            .collect::<Result<_>>()?;
        Ok(Divergence { ahead: ahead.len(), behind, commits })
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

/// Adds `marks` to `id` and to every commit below it that the walk has read.
fn spread(
    id: ObjectId,
    marks: u8,
    reach: &mut HashMap<ObjectId, u8>,
    nodes: &HashMap<ObjectId, Node>,
) {
    let mut stack = vec![id];
    while let Some(id) = stack.pop() {
        let entry = reach.entry(id).or_default();
        if *entry | marks == *entry {
            continue;
        }
        *entry |= marks;
        // Only into commits the walk already reached: the others get their marks when the
        // commit above them is popped.
        if let Some(node) = nodes.get(&id) {
            stack.extend(node.parents.iter().copied().filter(|parent| reach.contains_key(parent)));
        }
    }
}

fn by(info: &CommitInfo, author: &str) -> bool {
    info.author.email.to_lowercase() == author || info.author.name.to_lowercase() == author
}
