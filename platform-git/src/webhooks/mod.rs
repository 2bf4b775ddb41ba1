//! Webhooks: what a repository's hooks are told after a push, and how it reaches them.
//!
//! - [`hooks`] keeps each repository's hooks (payload URL, `json` or `form`, a write-only
//!   secret, events, active, TLS verification);
//! - [`payload`] builds GitHub's payloads (`push`, `create`, `delete`, `ping`) from the
//!   repository itself, through [`crate::browse`];
//! - [`deliveries`] keeps every delivery and each of its attempts, as sent and as answered;
//! - [`engine`] sends them, with [`client`] (timeouts, no redirects, capped reads) behind the
//!   SSRF [`guard`], and signs each body with [`sign`].
//!
//! # How a delivery travels
//!
//! A push's reaction ([`crate::reactions`]) makes one delivery row per listening hook and
//! event, keyed by what caused it (`<push event id>:<event>:<ref>`): a push event handled
//! twice never makes a second delivery. It then publishes a [`engine::Wake`] for each hook to
//! [`engine::DELIVERY_STREAM`], shared by every worker.
//!
//! A worker woken for a hook takes the hook's *lease* (a row lock would hold a database
//! connection for as long as a receiver takes; the lease is a timestamp and a token on the hook
//! row, taken and renewed by single statements): only the holder sends to that hook, so a hook
//! gets one request at a time and a repository's pushes in the order they were made. The holder
//! sends the oldest due delivery, records the attempt and its outcome in one transaction, and
//! goes on until nothing is due; then it gives the lease back and looks once more, so a
//! delivery made while the lease was held is not left behind. A wake that finds the lease held
//! does nothing: the holder's next look finds its delivery. Different hooks are sent to by
//! different tasks and workers at once, so a slow or failing receiver delays only itself.
//!
//! Push events are fanned out by any worker, several at once, so a later push's deliveries can
//! be made first. Each push is numbered when it is recorded
//! ([`crate::events::PushEvent::sequence`]), its deliveries carry the number, and a hook is sent
//! a push only once every earlier push of the repository is fanned out
//! ([`deliveries::fanned_out`]); an earlier push whose event never arrives holds the later ones
//! back for at most [`deliveries::ORDER_WAIT`].
//!
//! Every attempt is recorded before the wake that caused it is acknowledged: a delivery the
//! receiver accepted (2xx) is never sent again, except on request ([`deliveries::redeliver`],
//! which keeps its id). A worker killed mid-request leaves its lease to expire; the next holder
//! sends the half-sent delivery again, so a receiver sees a repeat only when no success had been
//! recorded. A failed attempt is retried with exponential backoff and jitter, at least as late
//! as `Retry-After` asks, while later deliveries go ahead; a hook that keeps failing is paused,
//! then switched off ([`engine::DeliveryOptions`]). Each worker also sweeps, every second, for
//! retries that are due and leases that expired.
//!
//! # What a receiver gets
//!
//! A `POST` of the payload with GitHub's headers (`X-GitHub-Event`, `X-GitHub-Delivery`,
//! `X-GitHub-Hook-ID`, `X-Hub-Signature-256`, `User-Agent: platform-Hookshot/<version>`), Gitea's
//! names for the same values (`X-Gitea-Event`, `X-Gitea-Delivery`, `X-Gitea-Signature`), and
//! the Standard Webhooks headers (`webhook-id`, `webhook-timestamp`, `webhook-signature`), each
//! signature computed over exactly the bytes sent. Receivers written for GitHub accept it as is.

pub mod client;
pub mod guard;
pub use crate::signature as sign;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

mod claims;
pub mod deliveries;
pub mod engine;
pub mod hooks;
mod metrics;
pub mod payload;

/// The error returned by webhook operations.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// A query failed.
    #[error("webhook query failed")]
    Query(#[from] diesel::result::Error),
    /// No database connection could be had.
    #[error("no database connection for webhooks")]
    Database(#[from] platform_core::db::DbError),
    /// The delivery engine could not be woken.
    #[error("cannot queue the webhook delivery")]
    Queue(#[from] platform_core::queue::QueueError),
    /// The repository could not be read for a payload.
    #[error("cannot read the repository for a webhook payload")]
    Repository(#[from] crate::browse::BrowseError),
    /// A payload could not be encoded.
    #[error("cannot encode a webhook payload")]
    Encode(#[from] serde_json::Error),
}

/// An event a hook can subscribe to, named as GitHub names it (`X-GitHub-Event`).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum HookEvent {
    /// Commits pushed to a branch or tag, or a ref created or deleted by a push.
    Push,
    /// A branch or tag was created.
    Create,
    /// A branch or tag was deleted.
    Delete,
    /// The repository was renamed, made public or private, or deleted.
    Repository,
    /// Sent once when a hook is created, and on request: is the receiver there?
    Ping,
}

impl HookEvent {
    /// Every event, in the order they are listed.
    pub const ALL: [Self; 5] =
        [Self::Push, Self::Create, Self::Delete, Self::Repository, Self::Ping];

    /// The name on the wire: `push`, `create`, `delete`, `repository` or `ping`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::Create => "create",
            Self::Delete => "delete",
            Self::Repository => "repository",
            Self::Ping => "ping",
        }
    }
}

impl fmt::Display for HookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name given is not an event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown webhook event {0:?}: use push, create, delete, repository, ping or *")]
pub struct UnknownEvent(pub String);

impl FromStr for HookEvent {
    type Err = UnknownEvent;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|event| event.as_str() == name)
            .ok_or_else(|| UnknownEvent(name.to_owned()))
    }
}
