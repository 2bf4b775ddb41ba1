//! The bodies GitHub sends for `push`, `create`, `delete` and `ping`, made from the repository
//! itself through [`crate::browse`].
//!
//! A [`PushEvent`] becomes, for each ref it moved, one `push` payload, plus a `create` payload
//! for a branch or tag it created and a `delete` payload for one it deleted, in that order
//! ([`push_payloads`]). Their fields are GitHub's, with GitHub's meaning:
//!
//! - `before` and `after` are the ids the ref held (forty zeros for none): for an annotated tag,
//!   the tag object's id, while `commits` and `head_commit` are about the commit it tags;
//! - `commits` are those reachable from `after` and not from `before`, oldest first, as
//!   `git rev-list --reverse before..after` lists them. For a new ref, those reachable from
//!   none of the repository's other branches and tags (so a branch made from another one lists
//!   nothing). Each says whether it is `distinct`: reachable from no other branch or tag. The
//!   other branches and tags are taken as they were before the push: those it moved at their
//!   old ids, the rest as they are when the payloads are made (normally just after the push).
//!   So a branch and a tag pushed together at a new commit both list it, as distinct.
//!   A commit's `added`, `removed` and `modified` paths are against
//!   its first parent (everything is added by a root commit), with renames detected as
//!   `git diff -M` does and told as GitHub tells them: the old path removed, the new one added;
//! - `forced` is set when `before` is no ancestor of `after`; `base_ref` names the branch whose
//!   tip a new branch or tag points at; `compare` is the web page of the change.
//!
//! At most [`MAX_PAYLOAD_COMMITS`] commits are listed: the newest ones (see there why), while
//! `total_commits` (Gitea's field) counts them all, up to [`MAX_COUNTED_COMMITS`].
//!
//! Commit authors and committers get a `username` only when it is known: the sender's own
//! email is, and [`EventPayload::set_usernames`] fills in others the caller looks up.
//!
//! ```no_run
//! # async fn run(
//! #     browser: platform_git::browse::Browser,
//! #     path: std::path::PathBuf,
//! #     event: platform_git::events::PushEvent,
//! #     record: platform_git::records::RepoRecord,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use platform_git::webhooks::payload::{PayloadContext, Person, push_payloads};
//!
//! let sender = Person { login: event.pusher.clone(), id: event.pusher_id, email: None, avatar_url: None };
//! let context = PayloadContext::new(record, "https://forge.example.com".parse()?, sender);
//! for payload in push_payloads(&browser, path, &event, &context).await? {
//!     let body = serde_json::to_vec(&payload.body)?;
//!     println!("{} {:?}: {} bytes", payload.event, payload.ref_name, body.len());
//! }
//! # Ok(()) }
//! ```

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;

use chrono::{DateTime, SecondsFormat, Utc};
use gix::ObjectId;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde_json::{Value, json};
use url::Url;

use super::HookEvent;
use crate::browse::{
    BrowseError, Browser, ChangeStatus, CommitInfo, Repo, Signature, display_path,
};
use crate::events::{PushEvent, RefChange};
use crate::records::RepoRecord;

/// The most commits one `push` payload lists, GitHub's cap (its documentation: "the array
/// includes a maximum of 2048 commits").
///
/// A push of more lists its *newest* 2048, oldest first, ending at `after`: a walk from
/// `after` finds them first, so they are exact however long the rest of the history is, and
/// they are the ones a receiver acts on (the older ones are `{compare}` away). Gitea keeps the
/// newest as well; GitHub does not document which it keeps.
pub const MAX_PAYLOAD_COMMITS: usize = 2048;

/// The most commits counted in `total_commits`: past it the walk stops, and the count says
/// this many. It bounds the work a push of an unrelated history (or of a whole mirror) makes.
pub const MAX_COUNTED_COMMITS: usize = 100_000;

/// The forty zeros that stand for "no object" in `before` and `after`.
const NO_OBJECT: &str = "0000000000000000000000000000000000000000";

/// A user as payloads show them (`sender`, `pusher`, a repository's `owner`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Person {
    /// The user name.
    pub login: String,
    /// The user id.
    pub id: i64,
    /// The email address, when it may be shown (`pusher.email`).
    pub email: Option<String>,
    /// The address of the avatar, when there is one to show.
    pub avatar_url: Option<String>,
}

/// Where payloads come from: the repository, the platform's address and who acted.
#[derive(Clone, Debug)]
pub struct PayloadContext {
    /// The repository, as it is now (names in URLs are its current ones).
    pub repository: RepoRecord,
    /// The platform's public address (`APP_DOMAIN_URL`); web and API URLs are made from it.
    pub public_url: Url,
    /// Who acted: the pusher, or whoever asked for a ping.
    pub sender: Person,
    /// The address to clone over SSH, when SSH is served (`ssh_url`).
    pub ssh_url: Option<String>,
    /// The most commits a `push` payload lists: [`MAX_PAYLOAD_COMMITS`] unless lowered.
    pub max_commits: usize,
}

impl PayloadContext {
    /// A context for `repository` on the platform at `public_url`, sent by `sender`, without
    /// an SSH address and with GitHub's cap on commits.
    pub fn new(repository: RepoRecord, public_url: Url, sender: Person) -> Self {
        Self { repository, public_url, sender, ssh_url: None, max_commits: MAX_PAYLOAD_COMMITS }
    }

    /// The repository's web page: `{public_url}/{owner}/{name}`.
    pub fn html_url(&self) -> String {
        format!("{}/{}/{}", self.base(), self.repository.owner, self.repository.name)
    }

    fn base(&self) -> &str {
        self.public_url.as_str().trim_end_matches('/')
    }
}

/// One payload to deliver: the event it is sent as (`X-GitHub-Event`), the ref it is about and
/// the body. The delivery layer serializes the body and signs the bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct EventPayload {
    /// The event.
    pub event: HookEvent,
    /// The full ref name (`refs/heads/main`), none for a ping.
    pub ref_name: Option<String>,
    /// The JSON body.
    pub body: Value,
}

impl EventPayload {
    /// Returns the email addresses of the listed commits' authors and committers that have no
    /// `username` yet: what to look up for [`EventPayload::set_usernames`].
    pub fn unresolved_emails(&self) -> BTreeSet<String> {
        let mut emails = BTreeSet::new();
        for commit in self.commit_objects() {
            for role in ["author", "committer"] {
                let person = &commit[role];
                if person["username"].is_null()
                    && let Some(email) = person["email"].as_str()
                {
                    emails.insert(email.to_owned());
                }
            }
        }
        emails
    }

    /// Sets the `username` of each commit author and committer whose email `username_of`
    /// knows (the user who has that verified address), leaving the others `null`.
    pub fn set_usernames(&mut self, username_of: impl Fn(&str) -> Option<String>) {
        for commit in self.commit_objects_mut() {
            for role in ["author", "committer"] {
                let person = &mut commit[role];
                if !person["username"].is_null() {
                    continue;
                }
                if let Some(name) = person["email"].as_str().and_then(&username_of) {
                    person["username"] = Value::String(name);
                }
            }
        }
    }

    fn commit_objects(&self) -> impl Iterator<Item = &Value> {
        let listed = self.body["commits"].as_array().into_iter().flatten();
        listed.chain(Some(&self.body["head_commit"]).filter(|head| head.is_object()))
    }

    fn commit_objects_mut(&mut self) -> impl Iterator<Item = &mut Value> {
        let Value::Object(body) = &mut self.body else { return Vec::new().into_iter() };
        let mut found = Vec::new();
        for (key, value) in body.iter_mut() {
            match (key.as_str(), value) {
                ("commits", Value::Array(commits)) => found.extend(commits.iter_mut()),
                ("head_commit", head @ Value::Object(_)) => found.push(head),
                _ => {}
            }
        }
        found.into_iter()
    }
}

/// Makes the payloads of `event` (see the [module docs](self)) from the repository at `path`,
/// on one of tokio's blocking threads through `browser`.
///
/// # Errors
///
/// [`BrowseError::Repository`] when `path` is no readable repository, and as
/// [`push_payloads_blocking`].
pub async fn push_payloads(
    browser: &Browser,
    path: PathBuf,
    event: &PushEvent,
    context: &PayloadContext,
) -> Result<Vec<EventPayload>, BrowseError> {
    let event = event.clone();
    let context = context.clone();
    browser.run(path, move |repo| push_payloads_blocking(repo, &event, &context)).await
}

/// Makes the payloads of `event` from `repo`, blocking on its reads: [`push_payloads`] without
/// a [`Browser`].
///
/// # Errors
///
/// [`BrowseError::Malformed`] for a ref change whose ids are not object ids,
/// [`BrowseError::Git`] when the repository cannot be read, [`BrowseError::TooSlow`] when a
/// history walk passes [`Limits::walk_time`](crate::browse::Limits::walk_time).
pub fn push_payloads_blocking(
    repo: &Repo,
    event: &PushEvent,
    context: &PayloadContext,
) -> Result<Vec<EventPayload>, BrowseError> {
    let tips = RefTips::read(repo, event)?;
    let mut payloads = Vec::new();
    for change in &event.refs {
        payloads.extend(ref_payloads(repo, context, event, change, &tips)?);
    }
    Ok(payloads)
}

/// Makes the `ping` payload of hook `hook_id`, described by `hook` (the hook as the API shows
/// it), sent when the hook is made and on request.
pub fn ping_payload(context: &PayloadContext, hook_id: i64, hook: Value) -> EventPayload {
    const ZEN: [&str; 6] = [
        "Small commits, clear messages.",
        "History is read more often than it is written.",
        "A push is a promise kept.",
        "Prefer the simple tree.",
        "Every branch ends somewhere.",
        "Merge what you understand.",
    ];
    let zen = ZEN[usize::try_from(hook_id.rem_euclid(ZEN.len() as i64)).unwrap_or_default()];
    let pushed_at = context.repository.pushed_at;
    EventPayload {
        event: HookEvent::Ping,
        ref_name: None,
        body: json!({
            "zen": zen,
            "hook_id": hook_id,
            "hook": hook,
            "repository": repository(context, pushed_at, Shape::Other),
            "sender": user(context, &context.sender),
        }),
    }
}

/// Makes the `repository` payload of `action` (`renamed`, `edited`, `publicized` or
/// `privatized`, as GitHub names them) for the repository as it is now; `changes` says what it
/// was before, in GitHub's shape (`{"repository": {"name": {"from": "old"}}}` for a rename,
/// `{"description": {"from": "..."}}` for an edit), or is `null`.
pub fn repository_payload(context: &PayloadContext, action: &str, changes: Value) -> EventPayload {
    let mut body = json!({
        "action": action,
        "repository": repository(context, context.repository.pushed_at, Shape::Other),
        "sender": user(context, &context.sender),
    });
    if !changes.is_null() {
        body["changes"] = changes;
    }
    EventPayload { event: HookEvent::Repository, ref_name: None, body }
}

/// What a ref is, by its name's prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RefKind {
    Branch,
    Tag,
    Other,
}

impl RefKind {
    /// The kind of `name` and its short name (`main` for `refs/heads/main`; other refs keep
    /// their full name).
    fn of(name: &str) -> (Self, &str) {
        if let Some(short) = name.strip_prefix("refs/heads/") {
            (Self::Branch, short)
        } else if let Some(short) = name.strip_prefix("refs/tags/") {
            (Self::Tag, short)
        } else {
            (Self::Other, name)
        }
    }

    /// GitHub's `ref_type`, for branches and tags.
    fn ref_type(self) -> Option<&'static str> {
        match self {
            Self::Branch => Some("branch"),
            Self::Tag => Some("tag"),
            Self::Other => None,
        }
    }
}

/// The repository's branches and tags, full name and commit (tags of trees and blobs left
/// out).
struct RefTips {
    /// As they are now.
    now: Vec<(String, ObjectId)>,
    /// As they were before the push: the refs it moved at their old commits, the others as
    /// they are now. What `commits` and `distinct` are measured against.
    before_push: Vec<(String, ObjectId)>,
}

impl RefTips {
    fn read(repo: &Repo, event: &PushEvent) -> Result<Self, BrowseError> {
        let mut now = Vec::new();
        for branch in repo.branches()? {
            if is_commit(repo, branch.commit)? {
                now.push((format!("refs/heads/{}", branch.name), branch.commit));
            }
        }
        for tag in repo.tags()? {
            if let Some(commit) = tag.commit {
                now.push((format!("refs/tags/{}", tag.name), commit));
            }
        }
        let moved = |name: &str| event.refs.iter().any(|change| change.name == name);
        let mut before_push: Vec<(String, ObjectId)> =
            now.iter().filter(|(name, _)| !moved(name)).cloned().collect();
        for change in &event.refs {
            let (kind, _) = RefKind::of(&change.name);
            if kind == RefKind::Other {
                continue;
            }
            if let Some(old) = object_id(&change.old)?
                && let Some(commit) = peel(repo, old)?
            {
                before_push.push((change.name.clone(), commit));
            }
        }
        Ok(Self { now, before_push })
    }

    /// The commits of every branch and tag but `name`, before the push, each once.
    fn others(&self, name: &str) -> Vec<ObjectId> {
        let mut others: Vec<ObjectId> =
            self.before_push.iter().filter(|(other, _)| other != name).map(|(_, id)| *id).collect();
        others.sort();
        others.dedup();
        others
    }
}

/// Whether `id` names a commit the repository has.
fn is_commit(repo: &Repo, id: ObjectId) -> Result<bool, BrowseError> {
    let header = repo.gix().try_find_header(id).map_err(|error| BrowseError::Git {
        context: "cannot read an object header",
        source: Box::new(error),
    })?;
    Ok(header.is_some_and(|header| header.kind() == gix::object::Kind::Commit))
}

/// Reads an id of a [`RefChange`]: none for the forty zeros.
fn object_id(hex: &str) -> Result<Option<ObjectId>, BrowseError> {
    if hex.bytes().all(|b| b == b'0') {
        return Ok(None);
    }
    ObjectId::from_hex(hex.as_bytes()).map(Some).map_err(|_| BrowseError::Malformed {
        what: "ref change",
        name: hex.to_owned(),
        reason: "not an object id",
    })
}

/// The commit `id` is or tags, if it is one the repository has.
fn peel(repo: &Repo, id: ObjectId) -> Result<Option<ObjectId>, BrowseError> {
    match repo.resolve(&id.to_string()) {
        Ok(resolved) => Ok(Some(resolved.id)),
        Err(BrowseError::NotFound { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// The commits a ref change brought: the newest `cap`, oldest first, each with whether it is
/// distinct, and how many there are in all.
struct Pushed {
    listed: Vec<(ObjectId, bool)>,
    total: usize,
    /// Whether `after`'s commit is reachable from no other branch or tag.
    head_distinct: bool,
}

impl Pushed {
    /// Walks from `new`, excluding `old` (none for a new ref, or one whose old commit is gone:
    /// then `others` are excluded instead); `others` are the commits of the other branches and
    /// tags.
    fn walk(
        repo: &Repo,
        old: Option<ObjectId>,
        new: ObjectId,
        others: &[ObjectId],
        cap: usize,
    ) -> Result<Self, BrowseError> {
        let newest_first = |ids: &[ObjectId]| ids.iter().take(cap).rev().copied().collect();
        let Some(old) = old else {
            let brought = repo.rev_list(&[new], others, MAX_COUNTED_COMMITS)?.commits;
            let listed: Vec<ObjectId> = newest_first(&brought);
            return Ok(Self {
                listed: listed.into_iter().map(|id| (id, true)).collect(),
                total: brought.len(),
                head_distinct: !brought.is_empty(),
            });
        };
        let brought = repo.rev_list(&[new], &[old], MAX_COUNTED_COMMITS)?.commits;
        let distinct: HashSet<ObjectId> = if others.is_empty() || brought.is_empty() {
            brought.iter().copied().collect()
        } else {
            let mut exclude = others.to_vec();
            exclude.push(old);
            repo.rev_list(&[new], &exclude, MAX_COUNTED_COMMITS)?.commits.into_iter().collect()
        };
        // A walk from `new` takes `new` first: it is listed unless `old` reaches it.
        let head_distinct = if brought.first() == Some(&new) {
            distinct.contains(&new)
        } else {
            !repo.rev_list(&[new], others, 1)?.commits.is_empty()
        };
        let listed: Vec<ObjectId> = newest_first(&brought);
        Ok(Self {
            listed: listed.into_iter().map(|id| (id, distinct.contains(&id))).collect(),
            total: brought.len(),
            head_distinct,
        })
    }
}

/// The payloads of one ref change.
fn ref_payloads(
    repo: &Repo,
    context: &PayloadContext,
    event: &PushEvent,
    change: &RefChange,
    tips: &RefTips,
) -> Result<Vec<EventPayload>, BrowseError> {
    let (before, after) = (object_id(&change.old)?, object_id(&change.new)?);
    let (created, deleted) = (before.is_none(), after.is_none());
    if created && deleted {
        return Ok(Vec::new());
    }
    let (kind, short) = RefKind::of(&change.name);
    let html_url = context.html_url();
    let old_commit = before.map(|id| peel(repo, id)).transpose()?.flatten();
    let new_commit = after.map(|id| peel(repo, id)).transpose()?.flatten();
    let others = tips.others(&change.name);

    let forced = match (before, old_commit, new_commit) {
        (None, ..) => false,
        _ if deleted => false,
        (Some(_), Some(old), Some(new)) => old != new && repo.merge_base(old, new)? != Some(old),
        // The old object is gone or no commit: not a fast-forward.
        (Some(_), ..) => true,
    };
    let (commits, total, head_commit) = match new_commit {
        Some(new) => {
            let pushed = Pushed::walk(repo, old_commit, new, &others, context.max_commits)?;
            let mut commits = Vec::with_capacity(pushed.listed.len());
            for (id, distinct) in &pushed.listed {
                commits.push(commit(repo, context, &html_url, *id, *distinct)?);
            }
            let head = match (pushed.listed.last(), commits.last()) {
                (Some((id, _)), Some(listed)) if *id == new => listed.clone(),
                _ => commit(repo, context, &html_url, new, pushed.head_distinct)?,
            };
            (commits, pushed.total, head)
        }
        None => (Vec::new(), 0, Value::Null),
    };
    let base_ref = match new_commit {
        Some(new) if created => base_ref(context, &tips.now, &change.name, new),
        _ => None,
    };
    let short12 = |id: Option<ObjectId>| match id {
        Some(id) => id.to_hex_with_len(12).to_string(),
        None => NO_OBJECT[..12].to_owned(),
    };
    let compare = if created {
        format!("{html_url}/compare/{}", utf8_percent_encode(short, REF_IN_PATH))
    } else {
        format!("{html_url}/compare/{}...{}", short12(before), short12(after))
    };
    let repository_object = repository(context, Some(event.pushed_at), Shape::Push);
    let sender = user(context, &context.sender);
    let mut payloads = vec![EventPayload {
        event: HookEvent::Push,
        ref_name: Some(change.name.clone()),
        body: json!({
            "ref": change.name,
            "before": before.map_or_else(|| NO_OBJECT.to_owned(), |id| id.to_string()),
            "after": after.map_or_else(|| NO_OBJECT.to_owned(), |id| id.to_string()),
            "repository": repository_object,
            "pusher": {"name": context.sender.login, "email": context.sender.email},
            "sender": sender,
            "created": created,
            "deleted": deleted,
            "forced": forced,
            "base_ref": base_ref,
            "compare": compare,
            "commits": commits,
            "total_commits": total,
            "head_commit": head_commit,
        }),
    }];
    let Some(ref_type) = kind.ref_type() else { return Ok(payloads) };
    let repository_object = repository(context, Some(event.pushed_at), Shape::Other);
    if created {
        let description = &context.repository.description;
        payloads.push(EventPayload {
            event: HookEvent::Create,
            ref_name: Some(change.name.clone()),
            body: json!({
                "ref": short,
                "ref_type": ref_type,
                "master_branch": context.repository.default_branch,
                "description": (!description.is_empty()).then_some(description),
                "pusher_type": "user",
                "repository": repository_object,
                "sender": sender,
            }),
        });
    } else if deleted {
        payloads.push(EventPayload {
            event: HookEvent::Delete,
            ref_name: Some(change.name.clone()),
            body: json!({
                "ref": short,
                "ref_type": ref_type,
                "pusher_type": "user",
                "repository": repository_object,
                "sender": sender,
            }),
        });
    }
    Ok(payloads)
}

/// What a ref's short name must escape to stand in a URL path (`/` stays).
const REF_IN_PATH: &AsciiSet =
    &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'%').add(b'<').add(b'>').add(b'?').add(b'`');

/// `base_ref` of a new ref pointing at `commit`: the branch (not the ref itself) whose tip it
/// is, the default branch first.
fn base_ref(
    context: &PayloadContext,
    tips: &[(String, ObjectId)],
    name: &str,
    commit: ObjectId,
) -> Option<String> {
    let default = format!("refs/heads/{}", context.repository.default_branch);
    let mut candidates = tips.iter().filter(|(other, id)| {
        *id == commit && other != name && RefKind::of(other).0 == RefKind::Branch
    });
    let first = candidates.clone().next()?;
    Some(candidates.find(|(other, _)| *other == default).unwrap_or(first).0.clone())
}

/// A commit as push payloads show it.
fn commit(
    repo: &Repo,
    context: &PayloadContext,
    html_url: &str,
    id: ObjectId,
    distinct: bool,
) -> Result<Value, BrowseError> {
    let info = repo.commit_info(id)?;
    let Touched { added, removed, modified } = Touched::by(repo, &info)?;
    Ok(json!({
        "id": info.id.to_string(),
        "tree_id": info.tree.to_string(),
        "distinct": distinct,
        "message": info.message.trim_end_matches('\n'),
        // As `git log --format=%cI` prints it: the committer's own offset, `Z` for none.
        "timestamp": info.committer.local_time().to_rfc3339_opts(SecondsFormat::Secs, true),
        "url": format!("{html_url}/commit/{}", info.id),
        "author": git_person(context, &info.author),
        "committer": git_person(context, &info.committer),
        "added": added,
        "removed": removed,
        "modified": modified,
    }))
}

/// A commit's author or committer: `username` is the sender's login for the sender's email,
/// unknown (`null`) otherwise until [`EventPayload::set_usernames`].
fn git_person(context: &PayloadContext, signature: &Signature) -> Value {
    let username = context
        .sender
        .email
        .as_deref()
        .filter(|email| email.eq_ignore_ascii_case(&signature.email))
        .map(|_| context.sender.login.as_str());
    json!({"name": signature.name, "email": signature.email, "username": username})
}

/// The paths a commit added, removed and modified against its first parent, each sorted.
struct Touched {
    added: Vec<String>,
    removed: Vec<String>,
    modified: Vec<String>,
}

impl Touched {
    /// The paths of `info`: everything is added by a root commit; a rename removes the old
    /// path and adds the new one, as GitHub tells it; a change of mode or type modifies.
    fn by(repo: &Repo, info: &CommitInfo) -> Result<Self, BrowseError> {
        let parent_tree = match info.parents.first() {
            Some(parent) => Some(repo.commit_info(*parent)?.tree),
            None => None,
        };
        let mut touched = Self { added: Vec::new(), removed: Vec::new(), modified: Vec::new() };
        for file in repo.changed_files(parent_tree, info.tree)? {
            let path = display_path(file.path.as_ref());
            match file.status {
                ChangeStatus::Added => touched.added.push(path),
                ChangeStatus::Removed => touched.removed.push(path),
                ChangeStatus::Modified | ChangeStatus::Changed => touched.modified.push(path),
                ChangeStatus::Renamed => {
                    if let Some(previous) = &file.previous_path {
                        touched.removed.push(display_path(previous.as_ref()));
                    }
                    touched.added.push(path);
                }
            }
        }
        for list in [&mut touched.added, &mut touched.removed, &mut touched.modified] {
            list.sort();
        }
        Ok(touched)
    }
}

/// Which of GitHub's two repository shapes: push payloads give `created_at` and `pushed_at`
/// in seconds since the epoch (and add `master_branch`), every other event gives ISO 8601.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Push,
    Other,
}

fn iso(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The `repository` object; `pushed_at` is when it was last pushed to.
fn repository(context: &PayloadContext, pushed_at: Option<DateTime<Utc>>, shape: Shape) -> Value {
    let record = &context.repository;
    let base = context.base();
    let html_url = context.html_url();
    let time = |time: DateTime<Utc>| match shape {
        Shape::Push => json!(time.timestamp()),
        Shape::Other => json!(iso(time)),
    };
    let owner_is_sender = record.owner_id == context.sender.id;
    let mut owner = user(
        context,
        &Person {
            login: record.owner.clone(),
            id: record.owner_id,
            email: None,
            avatar_url: context.sender.avatar_url.clone().filter(|_| owner_is_sender),
        },
    );
    if shape == Shape::Push {
        // Push payloads name the owner as a git identity too.
        owner["name"] = json!(record.owner);
        owner["email"] = json!(context.sender.email.as_ref().filter(|_| owner_is_sender));
    }
    let size_kib = u64::try_from(record.size_bytes).unwrap_or_default().div_ceil(1024);
    let mut repository = json!({
        "id": record.id,
        "name": record.name,
        "full_name": format!("{}/{}", record.owner, record.name),
        "private": record.is_private,
        "owner": owner,
        "html_url": html_url,
        "description": (!record.description.is_empty()).then_some(&record.description),
        "fork": record.forked_from.is_some(),
        "url": format!("{base}/api/repos/{}/{}", record.owner, record.name),
        "created_at": time(record.created_at),
        "updated_at": iso(record.updated_at),
        "pushed_at": pushed_at.map(time),
        "clone_url": format!("{html_url}.git"),
        "ssh_url": context.ssh_url,
        "size": size_kib,
        "language": record.language,
        "default_branch": record.default_branch,
        "visibility": if record.is_private { "private" } else { "public" },
    });
    if shape == Shape::Push {
        repository["master_branch"] = json!(record.default_branch);
    }
    repository
}

/// A platform user (`sender`, `owner`).
fn user(context: &PayloadContext, person: &Person) -> Value {
    let base = context.base();
    let mut user = json!({
        "login": person.login,
        "id": person.id,
        "html_url": format!("{base}/{}", person.login),
        "url": format!("{base}/api/users/{}", person.login),
        "type": "User",
        "site_admin": false,
    });
    if let Some(avatar) = &person.avatar_url {
        user["avatar_url"] = json!(avatar);
    }
    user
}
