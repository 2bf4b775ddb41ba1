//! Watching repositories: who is told of pushes, and the mails that tell them.
//!
//! A watch is a row of `repository_watches` (created by [`GIT_MIGRATIONS`](crate::GIT_MIGRATIONS)).
//! It stays when its user loses access to the repository (a collaborator removed, a repository
//! made private), but every read here filters by what the user may read *now*, as
//! [`access_for`](crate::permissions::access_for) decides: a public repository by anyone; a
//! private one by its owner, its collaborators and platform administrators. Such a watch is
//! dormant, and wakes if access comes back.
//!
//! After a push, [`Notifier::notify`] queues one [`PushMail`] per [`recipients`] entry on the
//! `mail` stream ([`MAIL_STREAM`]), where the email worker of `platform-mail` sends it. The mail
//! has the wire form of `platform_mail::MailJob::PushNotification` (`platform-git` does not
//! depend on `platform-mail`; a test there keeps the two equal). Each mail's queue id is
//! [`notification_id`], derived from the push event and the recipient, so notifying the same
//! event again (a worker crashed after publishing some) sends nobody a second mail: NATS drops
//! the repeat within its deduplication window, and the email worker skips job ids it has sent.
//!
//! ```no_run
//! # async fn run(
//! #     database: platform_core::db::Database,
//! #     queue: platform_core::queue::Queue,
//! #     event: platform_git::events::PushEvent,
//! # ) -> Result<(), platform_git::watches::WatchError> {
//! use platform_git::browse::{Browser, Limits};
//! use platform_git::store::RepoStore;
//! use platform_git::watches::Notifier;
//!
//! let browser = Browser::new(Limits::default());
//! let notifier = Notifier::new(database, queue, browser, RepoStore::new("/data/repos"));
//! let queued = notifier.notify(&event).await?;
//! println!("{queued} watchers will be mailed");
//! # Ok(()) }
//! ```

use chrono::{DateTime, Utc};
use diesel::OptionalExtension as _;
use diesel::sql_types::{BigInt, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::TryStreamExt as _;
use gix::ObjectId;
use platform_core::accounts::MAIL_STREAM;
use platform_core::db::{Database, DbError};
use platform_core::queue::{Queue, QueueError};
use serde::Serialize;

use crate::browse::{BrowseError, Browser, Repo};
use crate::events::{PushEvent, RefChange};
use crate::records::{RecordError, RepoRecord};
use crate::store::{RepoStore, StoreError};

/// How many of the newest commits of each ref a notification lists, unless
/// [`Notifier::with_commits_per_ref`] says otherwise.
pub const COMMITS_PER_REF: usize = 10;

/// How many commits of one ref are counted at most: a push of a long history (the first push
/// of an imported repository) is told as this many.
pub const COUNTED_COMMITS: usize = 100_000;

/// How many mails [`Notifier::notify`] publishes at a time.
const PUBLISH_CONCURRENCY: usize = 8;

/// Whether user `u` may read repository `r` now: the SQL form of what
/// [`access_for`](crate::permissions::access_for) grants at least read access to.
const CAN_READ: &str = "(NOT r.is_private OR r.owner_id = u.id OR u.is_admin \
     OR EXISTS (SELECT 1 FROM repository_collaborators c \
                WHERE c.repository_id = r.id AND c.user_id = u.id))";

/// The error returned by watch queries and [`Notifier::notify`].
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// No database connection could be had.
    #[error("cannot get a database connection for watches")]
    Connection(#[from] DbError),
    /// A query failed.
    #[error("watch query failed")]
    Query(#[from] diesel::result::Error),
    /// Reading a repository record failed.
    #[error("repository query failed")]
    Record(#[from] RecordError),
    /// The repository's directory could not be named.
    #[error("cannot locate repository {repository} on disk")]
    Location {
        /// `owner/name`.
        repository: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The commits of the push could not be read.
    #[error("cannot read the commits pushed to {repository}")]
    Commits {
        /// `owner/name`.
        repository: String,
        /// Why.
        #[source]
        source: BrowseError,
    },
    /// A mail job was not accepted by the queue; notifying the event again is safe.
    #[error("cannot queue push notification {id}")]
    Publish {
        /// The job id.
        id: String,
        /// Why.
        #[source]
        source: QueueError,
    },
}

impl WatchError {
    /// Returns whether trying again cannot help: the repository's name can never be on disk.
    /// Every other failure (database, repository reads, the queue) may pass.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Location { .. })
    }
}

/// A user's watch of a repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    /// The repository's id.
    pub repository_id: i64,
    /// The watcher's user id.
    pub user_id: i64,
    /// When they started watching.
    pub created_at: DateTime<Utc>,
}

#[derive(diesel::QueryableByName)]
struct WatchRow {
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
}

/// Makes `user_id` watch `repository_id`, or leaves their watch as it is; returns the watch.
/// Whether they may read the repository is the caller's to check (the API does).
///
/// # Errors
///
/// Fails when the query fails (a repository or user that does not exist breaks a foreign key).
pub async fn watch(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
    user_id: i64,
) -> Result<Watch, WatchError> {
    // The no-op update makes the statement return the existing row too.
    let row: WatchRow = diesel::sql_query(
        "INSERT INTO repository_watches (repository_id, user_id) VALUES ($1, $2) \
         ON CONFLICT (repository_id, user_id) \
         DO UPDATE SET created_at = repository_watches.created_at \
         RETURNING created_at",
    )
    .bind::<BigInt, _>(repository_id)
    .bind::<BigInt, _>(user_id)
    .get_result(conn)
    .await?;
    Ok(Watch { repository_id, user_id, created_at: row.created_at })
}

/// Ends `user_id`'s watch of `repository_id`; returns whether there was one.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn unwatch(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
    user_id: i64,
) -> Result<bool, WatchError> {
    let removed = diesel::sql_query(
        "DELETE FROM repository_watches WHERE repository_id = $1 AND user_id = $2",
    )
    .bind::<BigInt, _>(repository_id)
    .bind::<BigInt, _>(user_id)
    .execute(conn)
    .await?;
    Ok(removed > 0)
}

/// Returns `user_id`'s watch of `repository_id`, if they have one (dormant or not).
///
/// # Errors
///
/// Fails when the query fails.
pub async fn find(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
    user_id: i64,
) -> Result<Option<Watch>, WatchError> {
    let row: Option<WatchRow> = diesel::sql_query(
        "SELECT created_at FROM repository_watches WHERE repository_id = $1 AND user_id = $2",
    )
    .bind::<BigInt, _>(repository_id)
    .bind::<BigInt, _>(user_id)
    .get_result(conn)
    .await
    .optional()?;
    Ok(row.map(|row| Watch { repository_id, user_id, created_at: row.created_at }))
}

/// Returns whether `user_id` watches `repository_id` (see [`find`]).
///
/// # Errors
///
/// Fails when the query fails.
pub async fn is_watching(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
    user_id: i64,
) -> Result<bool, WatchError> {
    Ok(find(conn, repository_id, user_id).await?.is_some())
}

/// A watcher of a repository, as listed.
#[derive(Clone, Debug, PartialEq, Eq, diesel::QueryableByName)]
pub struct Watcher {
    /// Their user id.
    #[diesel(sql_type = BigInt)]
    pub user_id: i64,
    /// Their user name.
    #[diesel(sql_type = Text)]
    pub username: String,
    /// When they started watching.
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    total: i64,
}

/// Returns one page of the watchers of `repository_id` who can read it now, by name, and how
/// many there are in all.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn watchers(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Watcher>, i64), WatchError> {
    let from = format!(
        "FROM repository_watches w \
         JOIN repositories r ON r.id = w.repository_id \
         JOIN users u ON u.id = w.user_id \
         WHERE w.repository_id = $1 AND {CAN_READ}"
    );
    let total: Count = diesel::sql_query(format!("SELECT count(*) AS total {from}"))
        .bind::<BigInt, _>(repository_id)
        .get_result(conn)
        .await?;
    let page = diesel::sql_query(format!(
        "SELECT u.id AS user_id, u.username, w.created_at {from} \
         ORDER BY lower(u.username) LIMIT $2 OFFSET $3"
    ))
    .bind::<BigInt, _>(repository_id)
    .bind::<BigInt, _>(limit)
    .bind::<BigInt, _>(offset)
    .load(conn)
    .await?;
    Ok((page, total.total))
}

/// Returns one page of the repositories `user_id` watches and can read now, ordered by owner and
/// name, and how many there are in all.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn watched(
    conn: &mut AsyncPgConnection,
    user_id: i64,
    limit: i64,
    offset: i64,
) -> Result<(Vec<RepoRecord>, i64), WatchError> {
    let from = format!(
        "FROM repository_watches w \
         JOIN repositories r ON r.id = w.repository_id \
         JOIN users o ON o.id = r.owner_id \
         JOIN users u ON u.id = w.user_id \
         WHERE w.user_id = $1 AND {CAN_READ}"
    );
    let total: Count = diesel::sql_query(format!("SELECT count(*) AS total {from}"))
        .bind::<BigInt, _>(user_id)
        .get_result(conn)
        .await?;
    let page: Vec<Location> = diesel::sql_query(format!(
        "SELECT o.username AS owner, r.name {from} \
         ORDER BY lower(o.username), lower(r.name) LIMIT $2 OFFSET $3"
    ))
    .bind::<BigInt, _>(user_id)
    .bind::<BigInt, _>(limit)
    .bind::<BigInt, _>(offset)
    .load(conn)
    .await?;
    // Each record as `records` reads it, so it has every field `RepoRecord` has (some are
    // computed by its query); one that went meanwhile is left out.
    let mut records = Vec::with_capacity(page.len());
    for location in page {
        records.extend(crate::records::find(conn, &location.owner, &location.name).await?);
    }
    Ok((records, total.total))
}

/// A repository's owner and name.
#[derive(diesel::QueryableByName)]
struct Location {
    #[diesel(sql_type = Text)]
    owner: String,
    #[diesel(sql_type = Text)]
    name: String,
}

/// Someone to mail about a push.
#[derive(Clone, Debug, PartialEq, Eq, diesel::QueryableByName)]
pub struct Recipient {
    /// Their user id.
    #[diesel(sql_type = BigInt)]
    pub user_id: i64,
    /// Their user name.
    #[diesel(sql_type = Text)]
    pub username: String,
    /// Their verified address.
    #[diesel(sql_type = Text)]
    pub email: String,
}

/// Returns who is told of a push by `pusher_id` to `repository_id`, in one query: its watchers
/// who can read it now (as the repository and its collaborators are at this moment, not at the
/// push), whose address is verified, except the pusher; by user id.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn recipients(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
    pusher_id: i64,
) -> Result<Vec<Recipient>, WatchError> {
    Ok(diesel::sql_query(format!(
        "SELECT u.id AS user_id, u.username, u.email \
         FROM repository_watches w \
         JOIN repositories r ON r.id = w.repository_id \
         JOIN users u ON u.id = w.user_id \
         WHERE w.repository_id = $1 AND u.id <> $2 AND u.email_verified_at IS NOT NULL \
           AND {CAN_READ} \
         ORDER BY u.id"
    ))
    .bind::<BigInt, _>(repository_id)
    .bind::<BigInt, _>(pusher_id)
    .load(conn)
    .await?)
}

/// "Someone pushed to a repository you watch", for one watcher: the wire form of
/// `platform_mail::MailJob::PushNotification`, `{"kind": "push_notification", ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename = "push_notification")]
pub struct PushMail {
    /// The watcher's address.
    pub to: String,
    /// `owner/name`.
    pub repository: String,
    /// Who pushed.
    pub pusher: String,
    /// The refs the push moved, in the order of the push.
    pub refs: Vec<PushedRef>,
}

/// One ref a push moved, with the newest of the commits it gained.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PushedRef {
    /// The full name, such as `refs/heads/main`.
    pub name: String,
    /// The id before (all zeros when the push created the ref).
    pub old: String,
    /// The id after (all zeros when the push deleted the ref).
    pub new: String,
    /// The newest commits the ref gained, newest first; may be fewer than `total_commits`.
    pub commits: Vec<PushedCommit>,
    /// How many commits the ref gained in all.
    pub total_commits: u32,
}

/// A commit, as a notification lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PushedCommit {
    /// The full id.
    pub id: String,
    /// The first line of the message.
    pub summary: String,
    /// The author's name.
    pub author: String,
}

/// Returns the queue id of the mail telling user `user_id` of push event `event_id`:
/// `push-<event id>-<user id>`, the same every time.
///
/// ```
/// let event = uuid::Uuid::nil();
/// assert_eq!(
///     platform_git::watches::notification_id(event, 42),
///     "push-00000000-0000-0000-0000-000000000000-42"
/// );
/// ```
pub fn notification_id(event_id: uuid::Uuid, user_id: i64) -> String {
    format!("push-{}-{user_id}", event_id.hyphenated())
}

/// Reads what each of `refs` (a push's ref updates, in the repository after the push) gained:
/// its `newest` newest commits in `git rev-list`'s order (newest first), and how many in all
/// (up to [`COUNTED_COMMITS`]), with [`Repo::rev_list`]. Blocking: run it through
/// [`Browser::run`].
///
/// - An updated ref gained `old..new`, what `git log old..new` lists (a force push too).
/// - A created ref gained the commits no other ref had before the push, as
///   `git log new --not <the other refs>` would have listed them then: the refs the push did not
///   touch as they are now, the others at their old ids. (A ref a later push moved is seen
///   where it is now.)
/// - A deleted ref, or one at a tree or blob, gained none.
///
/// A walk that cannot be counted within [`Limits::walk_time`](crate::browse::Limits::walk_time)
/// lists the newest commits only, and counts just those.
///
/// # Errors
///
/// [`BrowseError::Git`] when refs or commits cannot be read.
pub fn pushed_refs(
    repo: &Repo,
    refs: &[RefChange],
    newest: usize,
) -> Result<Vec<PushedRef>, BrowseError> {
    let before = refs_before_push(repo, refs)?;
    refs.iter()
        .map(|change| {
            let (commits, total_commits) = match commit_of(repo, &change.new)? {
                None => (Vec::new(), 0),
                Some(new) => {
                    let hidden = match commit_of(repo, &change.old)? {
                        Some(old) => vec![old],
                        None => before
                            .iter()
                            .filter(|(name, _)| *name != change.name)
                            .map(|(_, id)| *id)
                            .collect(),
                    };
                    gained(repo, new, &hidden, newest)?
                }
            };
            Ok(PushedRef {
                name: change.name.clone(),
                old: change.old.clone(),
                new: change.new.clone(),
                commits,
                total_commits,
            })
        })
        .collect()
}

/// The refs as they were before the push of `refs`, peeled to commits.
fn refs_before_push(
    repo: &Repo,
    refs: &[RefChange],
) -> Result<Vec<(String, ObjectId)>, BrowseError> {
    let platform = repo.gix().references().map_err(git("cannot read refs"))?;
    let mut before = Vec::new();
    for reference in platform.all().map_err(git("cannot read refs"))? {
        let Ok(mut reference) = reference else { continue };
        let name = reference.name().as_bstr().to_string();
        if !name.starts_with("refs/") || refs.iter().any(|change| change.name == name) {
            continue;
        }
        let Ok(id) = reference.peel_to_id() else { continue };
        if let Some(commit) = peel_to_commit(repo, id.detach())? {
            before.push((name, commit));
        }
    }
    for change in refs {
        if let Some(old) = commit_of(repo, &change.old)? {
            before.push((change.name.clone(), old));
        }
    }
    Ok(before)
}

/// Turns a gix failure into [`BrowseError::Git`] saying what was being done.
fn git<E: std::error::Error + Send + Sync + 'static>(
    context: &'static str,
) -> impl FnOnce(E) -> BrowseError {
    move |error| BrowseError::Git { context, source: Box::new(error) }
}

/// The commit a ref update's id names: `None` for all zeros (and anything else that is no
/// commit of this repository).
fn commit_of(repo: &Repo, hex: &str) -> Result<Option<ObjectId>, BrowseError> {
    match ObjectId::from_hex(hex.as_bytes()) {
        Ok(id) if !id.is_null() => peel_to_commit(repo, id),
        Ok(_) => Ok(None),
        Err(_) => {
            tracing::warn!(id = hex, "a push event names no object id");
            Ok(None)
        }
    }
}

fn peel_to_commit(repo: &Repo, id: ObjectId) -> Result<Option<ObjectId>, BrowseError> {
    let object = repo.gix().try_find_object(id).map_err(git("cannot read an object"))?;
    Ok(object
        .and_then(|object| object.peel_to_kind(gix::object::Kind::Commit).ok())
        .map(|commit| commit.id))
}

/// The `newest` newest commits reachable from `tip` and from none of `hidden`, and how many
/// there are (at most [`COUNTED_COMMITS`]).
fn gained(
    repo: &Repo,
    tip: ObjectId,
    hidden: &[ObjectId],
    newest: usize,
) -> Result<(Vec<PushedCommit>, u32), BrowseError> {
    let listed = match repo.rev_list(&[tip], hidden, COUNTED_COMMITS.max(newest)) {
        Ok(listed) => listed,
        Err(BrowseError::TooSlow { .. }) => {
            // Too many to count in time: the newest are told without a count of the others.
            tracing::warn!(tip = %tip, "too many pushed commits to count; listing the newest only");
            repo.rev_list(&[tip], hidden, newest)?
        }
        Err(error) => return Err(error),
    };
    let total = u32::try_from(listed.commits.len()).unwrap_or(u32::MAX);
    let commits = listed
        .commits
        .into_iter()
        .take(newest)
        .map(|id| {
            let info = repo.commit_info(id)?;
            Ok(PushedCommit {
                id: id.to_string(),
                summary: info.summary().to_owned(),
                author: info.author.name,
            })
        })
        .collect::<Result<_, BrowseError>>()?;
    Ok((commits, total))
}

/// Tells the watchers of a repository about each push to it (see the module docs).
///
/// The push-reactions worker calls [`Notifier::notify`] once per push event it takes from the
/// `pushes` stream; on an error it can retry the event as a whole.
#[derive(Clone, Debug)]
pub struct Notifier {
    database: Database,
    queue: Queue,
    browser: Browser,
    store: RepoStore,
    commits_per_ref: usize,
}

impl Notifier {
    /// Reads watches from `database` and repositories through `browser` from `store`, and
    /// publishes to `queue`; each ref's mail lists its [`COMMITS_PER_REF`] newest commits.
    pub fn new(database: Database, queue: Queue, browser: Browser, store: RepoStore) -> Self {
        Self { database, queue, browser, store, commits_per_ref: COMMITS_PER_REF }
    }

    /// Lists `commits` of each ref instead of [`COMMITS_PER_REF`].
    #[must_use]
    pub fn with_commits_per_ref(mut self, commits: usize) -> Self {
        self.commits_per_ref = commits;
        self
    }

    /// Queues one [`PushMail`] for each of the [`recipients`] of `event`, under its
    /// [`notification_id`], and returns how many were queued. The repository is read only when
    /// someone is to be told; one that was deleted since has nobody to tell. Mails name the
    /// repository as it is called now (it may have been renamed since the push).
    ///
    /// Notifying the same event again is safe: mails already queued keep their ids, and the
    /// email worker sends each id once.
    ///
    /// # Errors
    ///
    /// Fails when the database, the repository or the queue does; some mails may have been
    /// queued by then.
    pub async fn notify(&self, event: &PushEvent) -> Result<usize, WatchError> {
        let (recipients, location) = {
            let mut conn = self.database.get().await?;
            let recipients = recipients(&mut conn, event.repository_id, event.pusher_id).await?;
            if recipients.is_empty() {
                return Ok(0);
            }
            let location: Option<Location> = diesel::sql_query(
                "SELECT o.username AS owner, r.name \
                 FROM repositories r JOIN users o ON o.id = r.owner_id WHERE r.id = $1",
            )
            .bind::<BigInt, _>(event.repository_id)
            .get_result(&mut conn)
            .await
            .optional()?;
            let Some(location) = location else { return Ok(0) };
            (recipients, location)
        };
        let repository = format!("{}/{}", location.owner, location.name);
        let path = self
            .store
            .path(&location.owner, &location.name)
            .map_err(|source| WatchError::Location { repository: repository.clone(), source })?;
        let changes = event.refs.clone();
        let newest = self.commits_per_ref;
        let refs = self
            .browser
            .run(path, move |repo| pushed_refs(repo, &changes, newest))
            .await
            .map_err(|source| WatchError::Commits { repository: repository.clone(), source })?;
        let (repository, refs) = (&repository, &refs);
        futures_util::stream::iter(recipients.iter().map(Ok))
            .try_for_each_concurrent(PUBLISH_CONCURRENCY, |recipient| async move {
                let id = notification_id(event.id, recipient.user_id);
                let mail = PushMail {
                    to: recipient.email.clone(),
                    repository: repository.clone(),
                    pusher: event.pusher.clone(),
                    refs: refs.clone(),
                };
                match self.queue.publish_with_id(MAIL_STREAM, &id, &mail).await {
                    Ok(_) => Ok(()),
                    Err(source) => Err(WatchError::Publish { id, source }),
                }
            })
            .await?;
        tracing::info!(
            event = %event.id,
            repository = event.repository_id,
            queued = recipients.len(),
            "push notifications queued"
        );
        Ok(recipients.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_mail_is_tagged_as_a_push_notification() {
        let mail = PushMail {
            to: "bob@example.com".into(),
            repository: "ada/engine".into(),
            pusher: "ada".into(),
            refs: vec![],
        };
        let wire = serde_json::to_value(&mail).expect("serializes");
        assert_eq!(wire["kind"], "push_notification");
        assert_eq!(wire["to"], "bob@example.com");
    }

    #[test]
    fn notification_ids_are_one_per_event_and_recipient() {
        let event = uuid::Uuid::new_v4();
        assert_eq!(notification_id(event, 7), notification_id(event, 7));
        assert_ne!(notification_id(event, 7), notification_id(event, 8));
        assert_ne!(notification_id(event, 7), notification_id(uuid::Uuid::new_v4(), 7));
    }
}
