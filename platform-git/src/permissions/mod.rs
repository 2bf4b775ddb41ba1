//! Who may do what to a repository: collaborators and the access they resolve to.
//!
//! | who | public repository | private repository |
//! |---|---|---|
//! | anonymous, or a signed-in stranger | [`Access::Read`] | nothing (it is not found) |
//! | a collaborator | their [`Role`] (at least read) | their [`Role`] |
//! | the owner, or a platform administrator | [`Access::Owner`] | [`Access::Owner`] |

use serde::{Deserialize, Serialize};

/// What a collaborator was granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "postgres", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Clone, fetch and read through the API.
    Read,
    /// Also push.
    Write,
    /// Also change settings, collaborators and branch protection.
    Admin,
}

impl Role {
    /// Returns the name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }

    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn parse(name: &str) -> Option<Self> {
        [Self::Read, Self::Write, Self::Admin].into_iter().find(|r| r.as_str() == name)
    }
}

/// What a caller may do to a repository, from least to most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "postgres", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Clone, fetch and read through the API.
    Read,
    /// Also push (subject to branch protection).
    Write,
    /// Also change settings, rename, manage collaborators and branch protection.
    Admin,
    /// Also delete: the owner, or a platform administrator.
    Owner,
}

impl From<Role> for Access {
    fn from(role: Role) -> Self {
        match role {
            Role::Read => Self::Read,
            Role::Write => Self::Write,
            Role::Admin => Self::Admin,
        }
    }
}

#[cfg(feature = "postgres")]
mod collaborators;
#[cfg(feature = "postgres")]
pub use collaborators::{
    Collaborator, access_for, collaborators, remove_collaborator, set_collaborator,
};
