//! Protected branches: rules the push policy applies to the branches they match.
//!
//! A rule's pattern is a branch name (`main`) or a glob in git's wildmatch syntax
//! (`release/*`, where `*` does not cross `/`). When several rules match a branch, the one
//! naming it exactly wins, then the longest pattern.

use chrono::{DateTime, Utc};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{BigInt, Bool, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use gix_glob::wildmatch;
use serde::{Deserialize, Serialize};

use crate::records::RecordError;

/// Who may push to a protected branch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PushAccess {
    /// Anyone with write access (fast-forwards only, unless force pushes are allowed).
    #[default]
    Write,
    /// Only repository administrators and the owner.
    Admin,
}

impl PushAccess {
    fn as_str(self) -> &'static str {
        match self {
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }
}

/// A branch protection rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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

#[derive(diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    pattern: String,
    #[diesel(sql_type = Text)]
    push_access: String,
    #[diesel(sql_type = Bool)]
    allow_force_push: bool,
    #[diesel(sql_type = Bool)]
    allow_deletion: bool,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
}

impl From<Row> for ProtectedBranch {
    fn from(row: Row) -> Self {
        Self {
            id: row.id,
            pattern: row.pattern,
            push_access: if row.push_access == "admin" {
                PushAccess::Admin
            } else {
                PushAccess::Write
            },
            allow_force_push: row.allow_force_push,
            allow_deletion: row.allow_deletion,
            created_at: row.created_at,
        }
    }
}

/// The error returned by [`create`].
#[derive(Debug, thiserror::Error)]
pub enum ProtectionError {
    /// The repository already has a rule with that pattern.
    #[error("a rule for {pattern:?} already exists")]
    Exists {
        /// The pattern.
        pattern: String,
    },
    /// The query failed.
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// What a new rule says.
#[derive(Clone, Copy, Debug)]
pub struct NewRule<'a> {
    /// The branch name or glob.
    pub pattern: &'a str,
    /// Who may push.
    pub push_access: PushAccess,
    /// Whether pushes may rewrite history.
    pub allow_force_push: bool,
    /// Whether the branch may be deleted by a push.
    pub allow_deletion: bool,
}

/// Adds a rule to a repository.
///
/// # Errors
///
/// [`ProtectionError::Exists`] when the repository has a rule with that pattern.
pub async fn create(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
    rule: NewRule<'_>,
) -> Result<ProtectedBranch, ProtectionError> {
    let row: Row = diesel::sql_query(
        "INSERT INTO protected_branches \
           (repository_id, pattern, push_access, allow_force_push, allow_deletion) \
         VALUES ($1, $2, $3, $4, $5) \
         RETURNING id, pattern, push_access, allow_force_push, allow_deletion, created_at",
    )
    .bind::<BigInt, _>(repository_id)
    .bind::<Text, _>(rule.pattern)
    .bind::<Text, _>(rule.push_access.as_str())
    .bind::<Bool, _>(rule.allow_force_push)
    .bind::<Bool, _>(rule.allow_deletion)
    .get_result(conn)
    .await
    .map_err(|error| match &error {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
            ProtectionError::Exists { pattern: rule.pattern.to_owned() }
        }
        _ => ProtectionError::Record(RecordError::Query(error)),
    })?;
    Ok(row.into())
}

/// Lists a repository's rules by pattern.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn list(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
) -> Result<Vec<ProtectedBranch>, RecordError> {
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT id, pattern, push_access, allow_force_push, allow_deletion, created_at \
         FROM protected_branches WHERE repository_id = $1 ORDER BY pattern",
    )
    .bind::<BigInt, _>(repository_id)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(ProtectedBranch::from).collect())
}

/// Deletes a rule of a repository; returns whether it existed.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn delete(
    conn: &mut AsyncPgConnection,
    repository_id: i64,
    id: i64,
) -> Result<bool, RecordError> {
    let deleted =
        diesel::sql_query("DELETE FROM protected_branches WHERE repository_id = $1 AND id = $2")
            .bind::<BigInt, _>(repository_id)
            .bind::<BigInt, _>(id)
            .execute(conn)
            .await?;
    Ok(deleted > 0)
}

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
