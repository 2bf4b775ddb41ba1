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

/// The commits [`Repo::rev_list`] lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevList {
    /// Their ids, in git's order: newest first.
    pub commits: Vec<ObjectId>,
    /// Whether these are all of them: false when the walk stopped at its limit.
    pub complete: bool,
}

/// A walk from several tips at once, in git's order, each commit marked with the tips that
/// reach it (a bit per kind of tip): what `git rev-list` does when some tips are excluded.
struct Painted<'a> {
    walk: Walk<'a>,
    reach: HashMap<ObjectId, u8>,
}

impl<'a> Painted<'a> {
    /// Starts at `tips`, each with its marks, queued in the order given.
    fn new(repo: &'a Repo, tips: &[(ObjectId, u8)]) -> Result<Self> {
        let mut painted = Self { walk: Walk::new(repo), reach: HashMap::new() };
        for (id, marks) in tips {
            *painted.reach.entry(*id).or_default() |= marks;
        }
        for (id, _) in tips {
            painted.walk.push(*id)?;
        }
        Ok(painted)
    }

    /// Takes the next commit and passes its marks on to its parents (and, through the parents
    /// already read, to everything below them).
    fn pop(&mut self) -> Result<Option<ObjectId>> {
        let Some((_, _, id)) = self.walk.queue.pop() else { return Ok(None) };
        let marks = self.marks(id);
        let parents = self.walk.node(id)?.parents.clone();
        for parent in parents {
            match self.reach.get(&parent).copied() {
                None => {
                    self.reach.insert(parent, marks);
                    self.walk.push(parent)?;
                }
                Some(old) if old | marks != old => {
                    spread(parent, marks, &mut self.reach, &self.walk.nodes)
                }
                Some(_) => {}
            }
        }
        Ok(Some(id))
    }

    /// The marks of `id` so far.
    fn marks(&self, id: ObjectId) -> u8 {
        self.reach.get(&id).copied().unwrap_or_default()
    }

    /// Whether a queued commit has marks `matters` holds for.
    fn queued_any(&self, matters: impl Fn(u8) -> bool) -> bool {
        self.walk.queue.iter().any(|(_, _, id)| matters(self.marks(*id)))
    }
}

/// When a painted walk ends: a few commits after only those that no longer matter are queued
/// (git's SLOP), for clocks that went backwards.
struct Slop(u32);

impl Default for Slop {
    fn default() -> Self {
        Self(Self::EXTRA)
    }
}

impl Slop {
    /// Extra commits taken once only those that no longer matter are queued.
    const EXTRA: u32 = 5;

    /// Counts one more commit taken; `settled` says whether only commits that no longer
    /// matter are queued. Returns whether the walk is done.
    fn done(&mut self, settled: bool) -> bool {
        if !settled {
            self.0 = Self::EXTRA;
            return false;
        }
        self.0 -= 1;
        self.0 == 0
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
        let deadline = Deadline::after(self.limits.walk_time, "the comparison");
        let shared = FROM_BASE | FROM_HEAD;
        let mut painted = Painted::new(self, &[(base, FROM_BASE), (head, FROM_HEAD)])?;
        let mut popped = Vec::new();
        let mut slop = Slop::default();
        let mut steps = 0u32;
        while let Some(id) = painted.pop()? {
            steps += 1;
            if steps.is_multiple_of(128) {
                deadline.check()?;
            }
            popped.push(id);
            if slop.done(!painted.queued_any(|marks| marks != shared)) {
                break;
            }
        }
        let ahead: Vec<ObjectId> =
            popped.iter().filter(|id| painted.marks(**id) == FROM_HEAD).copied().collect();
        let behind = popped.iter().filter(|id| painted.marks(**id) == FROM_BASE).count();
        let commits = ahead
            .iter()
            .rev()
            .take(limit)
            .map(|id| self.commit_info(*id))
            .collect::<Result<_>>()?;
        Ok(Divergence { ahead: ahead.len(), behind, commits })
    }

    /// Lists the commits reachable from `include` and from none of `exclude`, in the order
    /// `git rev-list <include> --not <exclude>` prints them (newest first; `--reverse` is the
    /// list read backwards), stopping after `limit` commits.
    ///
    /// The walk is the one [`Repo::divergence`] makes, with any number of tips on either side:
    /// it ends once no queued commit is reachable from `include` alone, so the history below
    /// the excluded tips is not walked. Every tip must be a commit (peel tags first).
    ///
    /// # Errors
    ///
    /// [`BrowseError::NotFound`] when a tip is no commit, [`BrowseError::TooSlow`] past
    /// [`Limits::walk_time`](super::Limits::walk_time).
    pub fn rev_list(
        &self,
        include: &[ObjectId],
        exclude: &[ObjectId],
        limit: usize,
    ) -> Result<RevList> {
        const INCLUDED: u8 = 1;
        const EXCLUDED: u8 = 2;
        let listed = |marks: u8| marks == INCLUDED;
        let deadline = Deadline::after(self.limits.walk_time, "the history walk");
        let tips: Vec<(ObjectId, u8)> = include
            .iter()
            .map(|id| (*id, INCLUDED))
            .chain(exclude.iter().map(|id| (*id, EXCLUDED)))
            .collect();
        let mut painted = Painted::new(self, &tips)?;
        // Only the commits listed when taken: a commit excluded then stays excluded, and one
        // listed is excluded later only when a clock went backwards (and is dropped below).
        let mut popped = Vec::new();
        let mut complete = true;
        let mut slop = Slop::default();
        let mut steps = 0u32;
        while let Some(id) = painted.pop()? {
            steps += 1;
            if steps.is_multiple_of(128) {
                deadline.check()?;
            }
            if listed(painted.marks(id)) {
                if popped.len() == limit {
                    complete = false;
                    break;
                }
                popped.push(id);
            }
            if slop.done(!painted.queued_any(listed)) {
                break;
            }
        }
        popped.retain(|id| listed(painted.marks(*id)));
        Ok(RevList { commits: popped, complete })
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
