//! The webhook reaction: one delivery per listening hook and event of a push.

use std::collections::{BTreeSet, HashMap};

use diesel::sql_types::{Array, BigInt, Text};
use diesel_async::RunQueryDsl;
use platform_core::db::Database;
use platform_core::queue::{JobError, Queue};
use url::Url;

use super::{Reaction, ReactionFuture};
use crate::browse::{BrowseError, Browser};
use crate::events::PushEvent;
use crate::records;
use crate::store::RepoStore;
use crate::webhooks::engine::{DELIVERY_STREAM, Wake};
use crate::webhooks::payload::{self, PayloadContext, Person};
use crate::webhooks::{HookEvent, deliveries, hooks};

/// Makes the deliveries of a push: for every active hook of the repository, one per event it
/// listens to (`push` for every ref, `create` and `delete` for refs made or removed), each
/// keyed by `<event id>:<event>:<ref>` so a repeat makes none, then wakes the delivery engine
/// for each hook. Payloads are only built when some hook listens.
///
/// Push events are fanned out by any worker, several at once, so the deliveries of a later push
/// can be made before an earlier push's: each carries its push's number
/// ([`PushEvent::sequence`]), and the engine sends it only once every earlier push of the
/// repository is recorded as fanned out ([`deliveries::fanned_out`]), or after
/// [`deliveries::ORDER_WAIT`] if an earlier one never is.
#[derive(Clone, Debug)]
pub struct WebhookFanOut {
    database: Database,
    queue: Queue,
    store: RepoStore,
    browser: Browser,
    public_url: Url,
    ssh_url: Option<String>,
}

impl WebhookFanOut {
    /// Reads repositories from `store` through `browser`; payload URLs start with `public_url`
    /// (`APP_DOMAIN_URL`).
    pub fn new(
        database: Database,
        queue: Queue,
        store: RepoStore,
        browser: Browser,
        public_url: Url,
    ) -> Self {
        Self { database, queue, store, browser, public_url, ssh_url: None }
    }

    /// Payloads name `ssh_base` (such as `ssh://git@example.com:2222`) as the SSH clone
    /// address, followed by `/{owner}/{name}.git`.
    pub fn with_ssh_base(mut self, ssh_base: impl Into<String>) -> Self {
        self.ssh_url = Some(ssh_base.into());
        self
    }

    async fn fan_out(&self, event: &PushEvent) -> Result<(), JobError> {
        let retry = |error: &dyn std::error::Error| {
            JobError::retry(platform_core::service::error_chain(error))
        };
        let mut conn = self.database.get().await.map_err(|error| retry(&error))?;
        let Some(repo) =
            records::find_by_id(&mut conn, event.repository_id).await.map_err(|e| retry(&e))?
        else {
            return Ok(());
        };
        let events = [HookEvent::Push, HookEvent::Create, HookEvent::Delete];
        let listening =
            hooks::listening(&mut conn, repo.id, &events).await.map_err(|e| retry(&e))?;
        if listening.is_empty() {
            return self.done(event).await;
        }
        drop(conn);
        let path = self.store.path(&repo.owner, &repo.name).map_err(JobError::permanent)?;
        let sender = Person {
            login: event.pusher.clone(),
            id: event.pusher_id,
            email: None,
            avatar_url: None,
        };
        let ssh_url = self
            .ssh_url
            .as_ref()
            .map(|base| format!("{}/{}/{}.git", base.trim_end_matches('/'), repo.owner, repo.name));
        let mut context = PayloadContext::new(repo.clone(), self.public_url.clone(), sender);
        context.ssh_url = ssh_url;
        let payloads = match payload::push_payloads(&self.browser, path, event, &context).await {
            Ok(payloads) => payloads,
            // Deleted or renamed on disk since: no one to tell about it.
            Err(BrowseError::Repository { .. }) => return Ok(()),
            // Neither gets better with time: the job is dead-lettered with the reason, and the
            // pushes after it do not wait for it.
            Err(error @ (BrowseError::Malformed { .. } | BrowseError::TooSlow { .. })) => {
                self.done(event).await?;
                return Err(JobError::permanent(error));
            }
            Err(error) => return Err(retry(&error)),
        };
        let mut payloads = payloads;
        let emails: BTreeSet<String> =
            payloads.iter().flat_map(payload::EventPayload::unresolved_emails).collect();
        let mut conn = self.database.get().await.map_err(|error| retry(&error))?;
        let usernames = usernames_of(&mut conn, &emails).await.map_err(|e| retry(&e))?;
        let mut woken = BTreeSet::new();
        for payload in &mut payloads {
            payload.set_usernames(|email| usernames.get(&email.to_lowercase()).cloned());
            let text = serde_json::to_string(&payload.body).map_err(JobError::permanent)?;
            let name = payload.event.as_str();
            let source =
                format!("{}:{name}:{}", event.id, payload.ref_name.as_deref().unwrap_or(""));
            for hook in listening.iter().filter(|hook| hook.events.includes(payload.event)) {
                deliveries::enqueue_push(
                    &mut conn,
                    hook.id,
                    name,
                    None,
                    Some(&source),
                    &text,
                    event.sequence,
                )
                .await
                .map_err(|e| retry(&e))?;
                woken.insert(hook.id);
            }
        }
        drop(conn);
        // Made: the next push's deliveries may go once this one's are sent.
        self.done(event).await?;
        for hook_id in woken {
            self.queue
                .publish(DELIVERY_STREAM, &Wake { hook_id })
                .await
                .map_err(|error| retry(&error))?;
        }
        Ok(())
    }
}

impl WebhookFanOut {
    /// Records that `event`'s deliveries are made, for the order of the repository's pushes.
    async fn done(&self, event: &PushEvent) -> Result<(), JobError> {
        let Some(sequence) = event.sequence else { return Ok(()) };
        let mut conn = self
            .database
            .get()
            .await
            .map_err(|error| JobError::retry(platform_core::service::error_chain(&error)))?;
        deliveries::fanned_out(&mut conn, event.repository_id, sequence)
            .await
            .map_err(|error| JobError::retry(platform_core::service::error_chain(&error)))?;
        Ok(())
    }
}

/// The user names of the users whose verified addresses are among `emails`, by lower-cased
/// address.
async fn usernames_of(
    conn: &mut diesel_async::AsyncPgConnection,
    emails: &BTreeSet<String>,
) -> Result<HashMap<String, String>, diesel::result::Error> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        email: String,
        #[diesel(sql_type = Text)]
        username: String,
    }
    if emails.is_empty() {
        return Ok(HashMap::new());
    }
    let lowered: Vec<String> = emails.iter().map(|email| email.to_lowercase()).collect();
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT lower(email) AS email, username FROM users \
         WHERE lower(email) = ANY($1) AND email_verified_at IS NOT NULL LIMIT $2",
    )
    .bind::<Array<Text>, _>(lowered)
    .bind::<BigInt, _>(i64::try_from(emails.len()).unwrap_or(i64::MAX))
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|row| (row.email, row.username)).collect())
}

impl Reaction for WebhookFanOut {
    fn kind(&self) -> &'static str {
        "webhooks"
    }

    fn react<'a>(&'a self, event: &'a PushEvent) -> ReactionFuture<'a> {
        Box::pin(self.fan_out(event))
    }
}
