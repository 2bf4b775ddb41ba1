//! What a push tells about its repository: the default branch on the first push, the push,
//! branch and tag counts, and the languages of the default branch.

use diesel::sql_types::{BigInt, Integer, Jsonb, Nullable, Text};
use diesel_async::{AsyncConnection as _, RunQueryDsl};
use platform_core::db::Database;
use platform_core::queue::JobError;

use super::{Reaction, ReactionFuture, mark_done_on};
use crate::browse::Browser;
use crate::events::PushEvent;
use crate::records;
use crate::store::RepoStore;

/// Keeps a repository's record in step with its pushes.
///
/// - A repository created empty names a default branch that does not exist yet; when a push
///   creates branches and the default branch still does not exist, the first branch the push
///   created becomes the default (`HEAD` and the record), as on GitHub and Gitea.
/// - `push_count` grows by one per push event, once, in the same transaction that records the
///   reaction as done; `branch_count` and `tag_count` are counted from the repository.
/// - The languages of the default branch are counted again when the push moved it.
#[derive(Clone, Debug)]
pub struct RepositoryMetadata {
    database: Database,
    store: RepoStore,
    browser: Browser,
}

impl RepositoryMetadata {
    /// Reads repositories from `store` through `browser`, records in `database`.
    pub fn new(database: Database, store: RepoStore, browser: Browser) -> Self {
        Self { database, store, browser }
    }

    async fn update(&self, event: &PushEvent) -> Result<(), JobError> {
        let mut conn = self.database.get().await.map_err(JobError::retry)?;
        let Some(repo) =
            records::find_by_id(&mut conn, event.repository_id).await.map_err(JobError::retry)?
        else {
            // Deleted since: nothing to keep.
            return Ok(());
        };
        drop(conn);
        let path = self.store.path(&repo.owner, &repo.name).map_err(JobError::permanent)?;
        let refs =
            self.browser.run(path.clone(), |repo| Ok((repo.branches()?, repo.tags()?.len()))).await;
        let (branches, tag_count) = match refs {
            Ok(refs) => refs,
            // Gone from disk between the lookup and now (deleted or renamed): nothing to keep.
            Err(crate::browse::BrowseError::Repository { .. }) => return Ok(()),
            Err(error) => return Err(JobError::retry(error)),
        };
        let exists = |name: &str| branches.iter().any(|branch| branch.name == name);
        let new_default = (!exists(&repo.default_branch))
            .then(|| {
                event
                    .refs
                    .iter()
                    .filter(|change| is_zero(&change.old))
                    .filter_map(|change| change.name.strip_prefix("refs/heads/"))
                    .find(|name| exists(name))
                    .map(str::to_owned)
            })
            .flatten();
        if let Some(branch) = &new_default {
            self.store
                .set_default_branch(&repo.owner, &repo.name, branch)
                .await
                .map_err(JobError::retry)?;
            tracing::info!(repository = %event.repository, branch, "first push: default branch set");
        }
        let default = new_default.as_deref().unwrap_or(&repo.default_branch);
        let default_ref = format!("refs/heads/{default}");
        let default_moved =
            new_default.is_some() || event.refs.iter().any(|change| change.name == default_ref);
        let languages = match branches.iter().find(|branch| branch.name == default) {
            Some(branch) if default_moved => {
                let commit = branch.commit;
                let tree = self
                    .browser
                    .run(path.clone(), move |repo| repo.commit_info(commit).map(|info| info.tree))
                    .await
                    .map_err(JobError::retry)?;
                let languages =
                    self.browser.languages(path, tree).await.map_err(JobError::retry)?;
                Some(serde_json::to_value(languages).map_err(JobError::permanent)?)
            }
            _ => None,
        };
        let branch_count = i32::try_from(branches.len()).unwrap_or(i32::MAX);
        let tag_count = i32::try_from(tag_count).unwrap_or(i32::MAX);
        let mut conn = self.database.get().await.map_err(JobError::retry)?;
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            if !mark_done_on(conn, event.id, "metadata").await? {
                return Ok(());
            }
            diesel::sql_query(
                "UPDATE repositories SET push_count = push_count + 1, branch_count = $2, \
                 tag_count = $3, default_branch = COALESCE($4, default_branch), \
                 languages = COALESCE($5, languages) WHERE id = $1",
            )
            .bind::<BigInt, _>(event.repository_id)
            .bind::<Integer, _>(branch_count)
            .bind::<Integer, _>(tag_count)
            .bind::<Nullable<Text>, _>(new_default.as_deref())
            .bind::<Nullable<Jsonb>, _>(languages.as_ref())
            .execute(conn)
            .await?;
            Ok(())
        })
        .await
        .map_err(JobError::retry)
    }
}

fn is_zero(id: &str) -> bool {
    id.bytes().all(|b| b == b'0')
}

impl Reaction for RepositoryMetadata {
    fn kind(&self) -> &'static str {
        "metadata"
    }

    fn react<'a>(&'a self, event: &'a PushEvent) -> ReactionFuture<'a> {
        Box::pin(self.update(event))
    }
}
