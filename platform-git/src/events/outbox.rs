//! The outbox: push events kept in PostgreSQL until the durable queue has them.

use std::time::Duration;

use diesel::OptionalExtension as _;
use diesel::sql_types::{BigInt, Jsonb, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncConnection as _, RunQueryDsl};
use platform_core::db::Database;
use platform_core::queue::Queue;

use chrono::Utc;

use super::{PUSH_STREAM, PushEvent};

/// How long a fresh outbox row is left to the push that wrote it before the relay takes it.
const RELAY_AFTER: Duration = Duration::from_secs(60);

/// How often the relay looks for rows to publish.
const RELAY_EVERY: Duration = Duration::from_secs(2);

/// The error returned by [`PushEvents`] operations.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The database failed.
    #[error("push event outbox query failed")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The event could not be encoded.
    #[error("cannot encode the push event")]
    Encode(#[from] serde_json::Error),
}

fn database(error: impl std::error::Error + Send + Sync + 'static) -> EventError {
    EventError::Database(Box::new(error))
}

/// Records push events and publishes them.
#[derive(Clone, Debug)]
pub struct PushEvents {
    database: Database,
    queue: Queue,
}

impl PushEvents {
    /// Publishes through `queue`, keeping unpublished events in `database`.
    pub fn new(database: Database, queue: Queue) -> Self {
        Self { database, queue }
    }

    /// Records `event` and tries to publish it at once. Returns once it is safe: published, or
    /// kept in the outbox for the relay.
    ///
    /// # Errors
    ///
    /// Fails only when the event could be neither published nor kept.
    pub async fn record(&self, event: &PushEvent) -> Result<(), EventError> {
        let mut event = event.clone();
        if event.sequence.is_none() {
            match self.number(event.repository_id).await {
                Ok(sequence) => event.sequence = sequence,
                Err(error) => {
                    tracing::warn!(event = %event.id, error = %error, "push event not numbered");
                }
            }
        }
        let event = &event;
        let payload = serde_json::to_value(event)?;
        let kept = self.keep(event.id, &payload).await;
        match (self.queue.publish(PUSH_STREAM, event).await, kept) {
            (Ok(_), Ok(())) => {
                if let Err(error) = self.forget(event.id).await {
                    // The relay will publish it again; consumers tell by the id.
                    tracing::warn!(event = %event.id, error = %error, "cannot clear a published push event");
                }
                Ok(())
            }
            (Ok(_), Err(error)) => {
                tracing::warn!(event = %event.id, error = %error, "push event published without an outbox row");
                Ok(())
            }
            (Err(error), Ok(())) => {
                tracing::warn!(event = %event.id, error = %error, "queue unavailable; push event kept for later");
                Ok(())
            }
            (Err(publish), Err(keep)) => {
                tracing::error!(event = %event.id, publish = %publish, "push event lost: neither queue nor database");
                Err(keep)
            }
        }
    }

    /// The next number of `repository_id`'s pushes (`None` when the repository is gone).
    async fn number(&self, repository_id: i64) -> Result<Option<i64>, EventError> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = BigInt)]
            push_seq: i64,
        }
        let mut conn = self.database.get().await.map_err(database)?;
        let row: Option<Row> = diesel::sql_query(
            "UPDATE repositories SET push_seq = push_seq + 1 WHERE id = $1 RETURNING push_seq",
        )
        .bind::<BigInt, _>(repository_id)
        .get_result(&mut conn)
        .await
        .optional()
        .map_err(database)?;
        Ok(row.map(|row| row.push_seq))
    }

    async fn keep(&self, id: uuid::Uuid, payload: &serde_json::Value) -> Result<(), EventError> {
        let mut conn = self.database.get().await.map_err(database)?;
        diesel::sql_query("INSERT INTO push_event_outbox (id, payload) VALUES ($1, $2)")
            .bind::<SqlUuid, _>(id)
            .bind::<Jsonb, _>(payload)
            .execute(&mut conn)
            .await
            .map_err(database)?;
        Ok(())
    }

    async fn forget(&self, id: uuid::Uuid) -> Result<(), EventError> {
        let mut conn = self.database.get().await.map_err(database)?;
        diesel::sql_query("DELETE FROM push_event_outbox WHERE id = $1")
            .bind::<SqlUuid, _>(id)
            .execute(&mut conn)
            .await
            .map_err(database)?;
        Ok(())
    }

    /// Publishes the outbox rows older than a minute (younger ones belong to a push still
    /// publishing its own); returns how many were published. Replicas may run this together:
    /// each row is taken by one.
    ///
    /// # Errors
    ///
    /// Fails when the database does; a queue failure just leaves the rows for the next pass.
    pub async fn relay_once(&self) -> Result<usize, EventError> {
        self.relay_older_than(RELAY_AFTER).await
    }

    /// Like [`PushEvents::relay_once`] for rows older than `age`.
    ///
    /// # Errors
    ///
    /// Fails when the database does.
    pub async fn relay_older_than(&self, age: Duration) -> Result<usize, EventError> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = SqlUuid)]
            id: uuid::Uuid,
            #[diesel(sql_type = Jsonb)]
            payload: serde_json::Value,
        }
        let mut conn = self.database.get().await.map_err(database)?;
        let cutoff = Utc::now() - chrono::Duration::from_std(age).unwrap_or_default();
        let queue = &self.queue;
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            let rows: Vec<Row> = diesel::sql_query(
                "SELECT id, payload FROM push_event_outbox WHERE created_at <= $1 \
                 ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            )
            .bind::<Timestamptz, _>(cutoff)
            .bind::<BigInt, _>(100)
            .load(conn)
            .await?;
            let mut published = 0;
            for row in rows {
                if let Err(error) = queue.publish(PUSH_STREAM, &row.payload).await {
                    tracing::warn!(error = %error, "queue still unavailable for push events");
                    diesel::sql_query(
                        "UPDATE push_event_outbox SET attempts = attempts + 1 WHERE id = $1",
                    )
                    .bind::<SqlUuid, _>(row.id)
                    .execute(conn)
                    .await?;
                    break;
                }
                diesel::sql_query("DELETE FROM push_event_outbox WHERE id = $1")
                    .bind::<SqlUuid, _>(row.id)
                    .execute(conn)
                    .await?;
                published += 1;
            }
            Ok(published)
        })
        .await
        .map_err(database)
    }

    /// Runs [`PushEvents::relay_once`] every two seconds until `shutdown` completes.
    pub async fn relay(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => return,
                () = tokio::time::sleep(RELAY_EVERY) => {}
            }
            match self.relay_once().await {
                Ok(0) => {}
                Ok(published) => tracing::info!(published, "published kept push events"),
                Err(error) => tracing::warn!(error = %error, "push event relay failed"),
            }
        }
    }
}
