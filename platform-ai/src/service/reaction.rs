//! The push reaction that asks for a repository's index to catch up.

use platform_core::db::Database;
use platform_core::queue::{JobError, Queue};
use platform_git::events::PushEvent;
use platform_git::reactions::{Reaction, ReactionFuture};
use platform_git::records;

use super::{INDEX_STREAM, IndexJob, IndexReason, status};

/// Asks for an index job when a push moved its repository's default branch: the request is
/// recorded in `code_index` (so the status shows it pending, and the worker's sweep finds it if
/// the job is lost) and an [`IndexJob`] is published under an id made of the event's, so a
/// push delivered twice asks once.
///
/// Pushes to other branches ask nothing: only the default branch is indexed.
#[derive(Clone, Debug)]
pub struct IndexOnPush {
    database: Database,
    queue: Queue,
}

impl IndexOnPush {
    /// Records requests in `database`, publishes jobs to `queue`.
    pub fn new(database: Database, queue: Queue) -> Self {
        Self { database, queue }
    }

    async fn ask(&self, event: &PushEvent) -> Result<(), JobError> {
        let mut conn = self.database.get().await.map_err(JobError::retry)?;
        let Some(repo) =
            records::find_by_id(&mut conn, event.repository_id).await.map_err(JobError::retry)?
        else {
            // Deleted since: the worker's sweep removes what was indexed.
            return Ok(());
        };
        let default_ref = format!("refs/heads/{}", repo.default_branch);
        // The first push to an empty repository may make another branch the default (the
        // `metadata` reaction), so any push asks while nothing was indexed yet; the job reads
        // the default branch when it runs.
        let never_indexed = status::progress(&mut conn, repo.id)
            .await
            .map_err(JobError::retry)?
            .is_none_or(|progress| progress.indexed_branch.is_none());
        if !never_indexed && !event.refs.iter().any(|change| change.name == default_ref) {
            return Ok(());
        }
        status::request(&mut conn, repo.id, false).await.map_err(JobError::retry)?;
        drop(conn);
        let job = IndexJob { repository_id: repo.id, reason: IndexReason::Push };
        self.queue
            .publish_with_id(INDEX_STREAM, &format!("{}.index", event.id), &job)
            .await
            .map_err(JobError::retry)?;
        Ok(())
    }
}

impl Reaction for IndexOnPush {
    fn kind(&self) -> &'static str {
        "index"
    }

    fn react<'a>(&'a self, event: &'a PushEvent) -> ReactionFuture<'a> {
        Box::pin(self.ask(event))
    }
}
