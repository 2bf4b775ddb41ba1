//! Webhooks: what a repository's hooks are told, and how it reaches them.
//!
//! (The design notes of the delivery engine are completed with it.)

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

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
