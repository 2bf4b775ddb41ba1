//! Protected branches: rules the push policy applies to the branches they match.
//!
//! A rule's pattern is a branch name (`main`) or a glob in git's wildmatch syntax
//! (`release/*`, where `*` does not cross `/`). When several rules match a branch, the one
//! naming it exactly wins, then the longest pattern.

use chrono::{DateTime, Utc};
use gix_glob::wildmatch;
use serde::{Deserialize, Serialize};

/// Who may push to a protected branch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "postgres", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum PushAccess {
    /// Anyone with write access (fast-forwards only, unless force pushes are allowed).
    #[default]
    Write,
    /// Only repository administrators and the owner.
    Admin,
}

impl PushAccess {
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }
}

/// A branch protection rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "postgres", derive(utoipa::ToSchema))]
pub struct ProtectedBranch {
    /// The rule's id.
    pub id: i64,
    /// The branch name or glob it applies to.
    pub pattern: String,
    /// Who may push.
    pub push_access: PushAccess,
    /// Whether pushes may rewrite history.
    pub allow_force_push: bool,
    /// Whether the branch may be deleted by a push.
    pub allow_deletion: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl ProtectedBranch {
    /// Returns whether the rule applies to `branch` (a name without `refs/heads/`).
    pub fn matches(&self, branch: &str) -> bool {
        wildmatch(
            self.pattern.as_str().into(),
            branch.into(),
            wildmatch::Mode::NO_MATCH_SLASH_LITERAL,
        )
    }
}

/// Returns the rule that governs `branch`: an exact one first, else the longest matching glob.
pub fn rule_for<'a>(rules: &'a [ProtectedBranch], branch: &str) -> Option<&'a ProtectedBranch> {
    rules.iter().find(|rule| rule.pattern == branch).or_else(|| {
        rules.iter().filter(|rule| rule.matches(branch)).max_by_key(|rule| rule.pattern.len())
    })
}

#[cfg(feature = "postgres")]
mod rules;
#[cfg(feature = "postgres")]
pub use rules::{NewRule, ProtectionError, create, delete, list};

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: i64, pattern: &str) -> ProtectedBranch {
        ProtectedBranch {
            id,
            pattern: pattern.to_owned(),
            push_access: PushAccess::Write,
            allow_force_push: false,
            allow_deletion: false,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn globs_match_within_one_path_segment() {
        let release = rule(1, "release/*");
        assert!(release.matches("release/1.0"));
        assert!(!release.matches("release/1.0/hotfix"));
        assert!(!release.matches("main"));
        assert!(rule(2, "main").matches("main"));
        assert!(!rule(2, "main").matches("main2"));
    }

    #[test]
    fn an_exact_rule_wins_over_globs_and_longer_globs_over_shorter() {
        let rules = [rule(1, "*"), rule(2, "release/*"), rule(3, "release/1.*"), rule(4, "main")];
        assert_eq!(rule_for(&rules, "main").map(|r| r.id), Some(4));
        assert_eq!(rule_for(&rules, "release/1.2").map(|r| r.id), Some(3));
        assert_eq!(rule_for(&rules, "release/2.0").map(|r| r.id), Some(2));
        assert_eq!(rule_for(&rules, "topic").map(|r| r.id), Some(1));
        assert_eq!(rule_for(&rules, "feature/x").map(|r| r.id), None);
    }
}
