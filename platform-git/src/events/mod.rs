//! Push events: what a push did, one event per successful push.
//!
//! Where an event goes is the host's choice ([`crate::backend::PushSink`]). The platform's
//! services (feature `postgres`) put it on the durable queue, never losing one: a push's event is first written to the `push_event_outbox` table, then published; once the
//! queue has it, the row is deleted. When the queue is unreachable the push is not held up
//! beyond the queue's publish timeout: the row stays, and `PushEvents::relay` publishes it when
//! the queue is back. Each event carries an `id`, so a consumer that sees one twice (the queue
//! delivers at least once) can tell.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The queue stream push events are published to.
pub const PUSH_STREAM: &str = "pushes";

/// One ref a push moved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefChange {
    /// The full ref name, such as `refs/heads/main`.
    pub name: String,
    /// The id before (all zeros for a new ref).
    pub old: String,
    /// The id after (all zeros for a deleted ref).
    pub new: String,
}

/// What a push did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushEvent {
    /// This event's id, the same on every delivery.
    pub id: uuid::Uuid,
    /// The repository's id.
    pub repository_id: i64,
    /// `owner/name` at the time of the push.
    pub repository: String,
    /// The pusher's user id.
    pub pusher_id: i64,
    /// The pusher's user name.
    pub pusher: String,
    /// Every ref the push moved.
    pub refs: Vec<RefChange>,
    /// When the push finished.
    pub pushed_at: DateTime<Utc>,
    /// The push's number among its repository's pushes, from 1, given when the event is
    /// recorded ([`PushEvents::record`]); webhooks deliver a repository's pushes in this order.
    /// `None` for an event recorded while the database was down, or made elsewhere.
    #[serde(default)]
    pub sequence: Option<i64>,
}

#[cfg(feature = "postgres")]
mod outbox;
#[cfg(feature = "postgres")]
pub use outbox::{EventError, PushEvents};
