//! The record of sent messages, which makes a redelivered job harmless.
//!
//! The queue delivers at least once, and SMTP has no way to ask "did you already take this?".
//! So once the relay accepts a message, its job's id is written to `mail_deliveries` before the
//! job is acknowledged; a later delivery of the same job finds the row and is acknowledged
//! without sending. The only window left is between the relay's reply and that insert, one
//! round trip to PostgreSQL.

use std::time::Duration;

use diesel::sql_types::{Interval, Text};
use diesel_async::RunQueryDsl;
use platform_core::db::{Database, DbError};

/// The error returned by [`Deliveries`].
#[derive(Debug, thiserror::Error)]
pub enum DeliveryLogError {
    /// No connection could be had.
    #[error(transparent)]
    Connection(#[from] DbError),
    /// A query failed.
    #[error("query on mail_deliveries failed")]
    Query(#[source] diesel::result::Error),
}

/// The `mail_deliveries` table.
#[derive(Clone, Debug)]
pub struct Deliveries {
    database: Database,
}

#[derive(diesel::QueryableByName)]
struct Found {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    found: bool,
}

impl Deliveries {
    /// Returns the log in `database` (tables created by [`crate::MAIL_MIGRATIONS`]).
    pub fn new(database: Database) -> Self {
        Self { database }
    }

    /// Returns whether the message of job `message_key` was already accepted by the relay.
    ///
    /// # Errors
    ///
    /// Fails when PostgreSQL does.
    pub async fn was_sent(&self, message_key: &str) -> Result<bool, DeliveryLogError> {
        let mut conn = self.database.get().await?;
        let row: Found = diesel::sql_query(
            "SELECT EXISTS (SELECT 1 FROM mail_deliveries WHERE message_key = $1) AS found",
        )
        .bind::<Text, _>(message_key)
        .get_result(&mut conn)
        .await
        .map_err(DeliveryLogError::Query)?;
        Ok(row.found)
    }

    /// Records that the relay accepted the message of job `message_key`, replying `reply`.
    ///
    /// # Errors
    ///
    /// Fails when PostgreSQL does.
    pub async fn record_sent(
        &self,
        message_key: &str,
        kind: &str,
        reply: &str,
    ) -> Result<(), DeliveryLogError> {
        let mut conn = self.database.get().await?;
        diesel::sql_query(
            "INSERT INTO mail_deliveries (message_key, kind, relay_reply) VALUES ($1, $2, $3) \
             ON CONFLICT (message_key) DO NOTHING",
        )
        .bind::<Text, _>(message_key)
        .bind::<Text, _>(kind)
        .bind::<Text, _>(reply)
        .execute(&mut conn)
        .await
        .map_err(DeliveryLogError::Query)?;
        Ok(())
    }

    /// Deletes records older than `age`, returning how many went. Jobs live on the queue for
    /// hours at most, so records older than that protect nothing.
    ///
    /// # Errors
    ///
    /// Fails when PostgreSQL does.
    pub async fn prune(&self, age: Duration) -> Result<usize, DeliveryLogError> {
        let mut conn = self.database.get().await?;
        let age = diesel::data_types::PgInterval::from_microseconds(
            i64::try_from(age.as_micros()).unwrap_or(i64::MAX),
        );
        diesel::sql_query("DELETE FROM mail_deliveries WHERE sent_at < now() - $1")
            .bind::<Interval, _>(age)
            .execute(&mut conn)
            .await
            .map_err(DeliveryLogError::Query)
    }
}
