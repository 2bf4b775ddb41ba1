//! The index worker: consumes index jobs and sweeps for indexes that drifted.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use diesel::sql_types::{BigInt, Bool};
use diesel_async::RunQueryDsl;
use gix::ObjectId;
use platform_core::db::Database;
use platform_core::queue::{ConsumerOptions, JobError, Queue, QueueError};
use platform_git::browse::{BrowseError, Browser, Limits};
use platform_git::records;
use platform_git::store::RepoStore;
use tokio_util::sync::CancellationToken;

use super::{INDEX_GROUP, INDEX_STREAM, IndexJob, IndexReason, status};
use crate::index::{IndexError, IndexTarget, Indexer};
use crate::store::{ChunkFilter, StoreError};

/// How an [`IndexWorker`] runs.
#[derive(Clone, Debug)]
pub struct IndexWorkerOptions {
    /// How the job consumer runs; indexing is CPU- and model-bound, so few at a time
    /// (default 2, each job retried with backoff from 2 s to 2 minutes).
    pub consumer: ConsumerOptions,
    /// How often the sweep looks for indexes behind their repositories (default 30 s).
    pub sweep_every: Duration,
}

impl Default for IndexWorkerOptions {
    fn default() -> Self {
        let mut consumer = ConsumerOptions { concurrency: 2, ..ConsumerOptions::default() };
        consumer.backoff.initial = Duration::from_secs(2);
        consumer.backoff.max = Duration::from_secs(120);
        Self { consumer, sweep_every: Duration::from_secs(30) }
    }
}

/// What one job did to a repository's index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexOutcome {
    /// The index now holds this commit of the default branch.
    Indexed {
        /// The commit.
        commit: String,
        /// Files and chunks embedded by this run (the rest were reused or untouched).
        chunks_embedded: u64,
    },
    /// The default branch has no commit: the index is empty.
    Empty,
    /// Indexing is switched off for the repository: its chunks were removed.
    Disabled,
    /// The repository is gone: its chunks and status were removed.
    Removed,
}

/// Why a job failed; retried unless the repository cannot be indexed at all.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The database failed.
    #[error("the database failed: {0}")]
    Database(String),
    /// The vector store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Indexing failed (the embedder, the store or reading the repository).
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The repository could not be read.
    #[error("cannot read the repository: {0}")]
    Repository(#[from] BrowseError),
    /// Another worker is indexing the repository now.
    #[error("repository {0} is being indexed by another worker")]
    Busy(i64),
}

fn db(error: impl std::fmt::Display) -> WorkerError {
    WorkerError::Database(error.to_string())
}

/// Keeps the vector store in step with the repositories' default branches.
///
/// Jobs come from [`super::IndexOnPush`] (a push), the reindex route, and this worker's own
/// sweep, which every [`IndexWorkerOptions::sweep_every`] asks for a job for each repository
/// whose index is behind: forks not indexed yet, a default branch changed, a model changed,
/// requests whose job was lost or dead-lettered, repositories deleted or switched off (their
/// chunks are removed). Renames and visibility changes need no job: chunks are stored by
/// repository id, and search resolves names and read access when it runs.
///
/// Every job brings the index to the branch's commit of the moment, so jobs queued behind one
/// another cost one run and some no-ops; two workers never index one repository at once (a
/// PostgreSQL advisory lock; the second retries).
#[derive(Clone)]
pub struct IndexWorker {
    inner: Arc<Inner>,
}

struct Inner {
    database: Database,
    queue: Queue,
    repos: RepoStore,
    browser: Browser,
    indexer: Indexer,
    options: IndexWorkerOptions,
}

impl std::fmt::Debug for IndexWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexWorker").field("model", self.inner.indexer.store().model()).finish()
    }
}

/// The advisory lock class of index runs (the other key is the repository id).
const LOCK_CLASS: i32 = 0x636f_6465; // "code"

impl IndexWorker {
    /// A worker indexing the repositories of `repos` with `indexer`.
    pub fn new(
        database: Database,
        queue: Queue,
        repos: RepoStore,
        indexer: Indexer,
        options: IndexWorkerOptions,
    ) -> Self {
        let browser = Browser::new(Limits::default());
        Self { inner: Arc::new(Inner { database, queue, repos, browser, indexer, options }) }
    }

    /// Consumes index jobs and sweeps until `shutdown` completes.
    ///
    /// # Errors
    ///
    /// Fails only for an invalid stream or group name.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) -> Result<(), QueueError> {
        let stop = CancellationToken::new();
        let worker = self.clone();
        let consuming = self.inner.queue.consume(
            INDEX_STREAM,
            INDEX_GROUP,
            self.inner.options.consumer.clone(),
            move |job: platform_core::queue::Job<IndexJob>| {
                let worker = worker.clone();
                async move {
                    let id = job.payload.repository_id;
                    match worker.index_repository(id).await {
                        Ok(outcome) => {
                            tracing::info!(repository = id, ?outcome, "code index caught up");
                            Ok(())
                        }
                        Err(error) => {
                            tracing::warn!(repository = id, attempt = job.attempt, error = %error, "code index job failed");
                            Err(JobError::retry(error))
                        }
                    }
                }
            },
            stop.clone().cancelled_owned(),
        );
        let sweeping = async {
            let mut tick = tokio::time::interval(self.inner.options.sweep_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(error) = self.sweep().await {
                            tracing::warn!(error = %error, "code index sweep failed");
                        }
                    }
                }
            }
        };
        let stopping = async {
            shutdown.await;
            stop.cancel();
        };
        let (consumed, (), ()) = tokio::join!(consuming, sweeping, stopping);
        consumed
    }

    /// Asks for a job for every repository whose index is behind; returns how many.
    ///
    /// # Errors
    ///
    /// Fails when the database or the queue does.
    pub async fn sweep(&self) -> Result<usize, WorkerError> {
        let model = self.inner.indexer.store().model().clone();
        let dimensions = i32::try_from(model.dimensions).unwrap_or(i32::MAX);
        let mut conn = self.inner.database.get().await.map_err(db)?;
        let drifted =
            status::drifted(&mut conn, &model.name, dimensions, 1000).await.map_err(db)?;
        drop(conn);
        // One job id per repository and sweep period: a sweep run twice in a period (two
        // workers) asks once, and the next period asks again if the index is still behind.
        let period = self.inner.options.sweep_every.as_secs().max(1);
        let tick = u64::try_from(Utc::now().timestamp()).unwrap_or_default() / period;
        for repository_id in &drifted {
            let job = IndexJob { repository_id: *repository_id, reason: IndexReason::Sweep };
            self.inner
                .queue
                .publish_with_id(INDEX_STREAM, &format!("sweep.{repository_id}.{tick}"), &job)
                .await
                .map_err(|error| WorkerError::Database(error.to_string()))?;
        }
        Ok(drifted.len())
    }

    /// Brings the index of `repository_id` to its default branch now, recording the outcome
    /// (or the failure) in its status.
    ///
    /// # Errors
    ///
    /// What failed; the status names it as `last_error`.
    pub async fn index_repository(&self, repository_id: i64) -> Result<IndexOutcome, WorkerError> {
        let started = Utc::now();
        // A session-level lock on a connection held for the run: released when it ends, or
        // when the connection dies with this process.
        let mut lock = self.inner.database.get().await.map_err(db)?;
        #[derive(diesel::QueryableByName)]
        struct Locked {
            #[diesel(sql_type = Bool)]
            locked: bool,
        }
        let locked: Locked =
            diesel::sql_query("SELECT pg_try_advisory_lock($1, $2::INTEGER) AS locked")
                .bind::<diesel::sql_types::Integer, _>(LOCK_CLASS)
                .bind::<BigInt, _>(repository_id)
                .get_result(&mut *lock)
                .await
                .map_err(db)?;
        if !locked.locked {
            return Err(WorkerError::Busy(repository_id));
        }
        let outcome = self.index_locked(repository_id, started).await;
        if let Err(error) = &outcome
            && !matches!(error, WorkerError::Busy(_))
            && let Ok(mut conn) = self.inner.database.get().await
            && let Err(failed) =
                status::record_failure(&mut conn, repository_id, &error.to_string()).await
        {
            tracing::warn!(repository = repository_id, error = %failed, "cannot record an index failure");
        }
        let unlocked = diesel::sql_query("SELECT pg_advisory_unlock($1, $2::INTEGER)")
            .bind::<diesel::sql_types::Integer, _>(LOCK_CLASS)
            .bind::<BigInt, _>(repository_id)
            .execute(&mut *lock)
            .await;
        if unlocked.is_err() {
            // A connection that cannot unlock must not go back to the pool holding the lock.
            drop(lock);
        }
        outcome
    }

    async fn index_locked(
        &self,
        repository_id: i64,
        started: chrono::DateTime<Utc>,
    ) -> Result<IndexOutcome, WorkerError> {
        let inner = &self.inner;
        let store = inner.indexer.store();
        let model = store.model().clone();
        let mut conn = inner.database.get().await.map_err(db)?;
        let Some(repo) = records::find_by_id(&mut conn, repository_id).await.map_err(db)? else {
            store.delete(&ChunkFilter::repo(repository_id)).await?;
            status::remove(&mut conn, repository_id).await.map_err(db)?;
            return Ok(IndexOutcome::Removed);
        };
        let progress = status::progress(&mut conn, repository_id).await.map_err(db)?;
        drop(conn);
        let dimensions = i32::try_from(model.dimensions).unwrap_or(i32::MAX);
        let empty = || status::Indexed {
            commit: None,
            branch: &repo.default_branch,
            model: &model.name,
            dimensions,
            files: 0,
            chunks: 0,
            skipped: serde_json::json!({}),
        };
        if progress.as_ref().is_some_and(|progress| !progress.enabled) {
            store.delete(&ChunkFilter::repo(repository_id)).await?;
            let mut conn = inner.database.get().await.map_err(db)?;
            status::record_success(&mut conn, repository_id, started, empty()).await.map_err(db)?;
            return Ok(IndexOutcome::Disabled);
        }
        let path = inner
            .repos
            .path(&repo.owner, &repo.name)
            .map_err(|error| WorkerError::Database(error.to_string()))?;
        let branch = repo.default_branch.clone();
        let previous = progress
            .as_ref()
            .filter(|progress| {
                !progress.rebuild
                    && progress.model.as_deref() == Some(model.name.as_str())
                    && progress.dimensions == Some(dimensions)
                    && progress.indexed_branch.as_deref() == Some(branch.as_str())
            })
            .and_then(|progress| progress.indexed_commit.as_deref())
            .and_then(|commit| ObjectId::from_hex(commit.as_bytes()).ok());
        let resolved = inner
            .browser
            .run(path.clone(), move |repo| {
                let tip = match repo.branch(&branch) {
                    Ok(branch) => branch.commit,
                    Err(BrowseError::NotFound { .. }) => return Ok(None),
                    Err(error) => return Err(error),
                };
                // A force push (the old commit is no ancestor of the new one, or is gone)
                // reconciles the whole tree rather than trusting a diff.
                let from = match previous {
                    Some(old) if old == tip => Some(old),
                    Some(old) => match repo.merge_base(old, tip) {
                        Ok(Some(base)) if base == old => Some(old),
                        _ => None,
                    },
                    None => None,
                };
                Ok(Some((from, tip)))
            })
            .await?;
        let Some((from, tip)) = resolved else {
            store.delete(&ChunkFilter::repo(repository_id)).await?;
            let mut conn = inner.database.get().await.map_err(db)?;
            status::record_success(&mut conn, repository_id, started, empty()).await.map_err(db)?;
            return Ok(IndexOutcome::Empty);
        };
        let report = if from == Some(tip) {
            crate::index::IndexReport::default()
        } else {
            inner
                .indexer
                .index(IndexTarget { path: &path, repo_id: repository_id, from, to: tip })
                .await?
        };
        let files = store.indexed_files(repository_id).await?;
        let chunks = store.count(&ChunkFilter::repo(repository_id)).await?;
        let skipped: serde_json::Map<String, serde_json::Value> = report
            .files_skipped
            .iter()
            .filter_map(|(skip, count)| {
                let serde_json::Value::String(reason) = serde_json::to_value(skip).ok()? else {
                    return None;
                };
                Some((reason, serde_json::json!(count)))
            })
            .collect();
        let commit = tip.to_string();
        let mut conn = inner.database.get().await.map_err(db)?;
        status::record_success(
            &mut conn,
            repository_id,
            started,
            status::Indexed {
                commit: Some(&commit),
                branch: &repo.default_branch,
                model: &model.name,
                dimensions,
                files: i64::try_from(files.len()).unwrap_or(i64::MAX),
                chunks: i64::try_from(chunks).unwrap_or(i64::MAX),
                skipped: serde_json::Value::Object(skipped),
            },
        )
        .await
        .map_err(db)?;
        Ok(IndexOutcome::Indexed { commit, chunks_embedded: report.chunks_embedded })
    }
}
