//! The mail job: what producers put on the queue for the email worker.

use platform_core::accounts::AccountMail;
use serde::{Deserialize, Serialize};

/// The queue stream mail jobs travel on (the accounts publish theirs there too).
pub const MAIL_STREAM: &str = platform_core::accounts::MAIL_STREAM;

/// One mail to send, as published to [`MAIL_STREAM`].
///
/// The wire form is a JSON object tagged by `kind`; the accounts' [`AccountMail`] has the same
/// form for its kinds, so either type can be published and this one reads both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MailJob {
    /// "Confirm your address", with the single-use token `POST /api/auth/verify-email` takes.
    VerifyEmail {
        /// The user.
        user_id: i64,
        /// Their name, for the greeting.
        username: String,
        /// The address to verify.
        to: String,
        /// The token.
        token: String,
    },
    /// "Choose a new password", with the token `POST /api/auth/password-reset/confirm` takes.
    ResetPassword {
        /// The user.
        user_id: i64,
        /// Their name, for the greeting.
        username: String,
        /// Their address.
        to: String,
        /// The token.
        token: String,
    },
    /// "You already have an account": someone registered with this address.
    AccountExists {
        /// The user the address belongs to.
        user_id: i64,
        /// Their name.
        username: String,
        /// Their address.
        to: String,
    },
    /// "Someone pushed to a repository you watch".
    PushNotification(PushNotification),
}

impl MailJob {
    /// Returns the recipient's address.
    pub fn recipient(&self) -> &str {
        match self {
            Self::VerifyEmail { to, .. }
            | Self::ResetPassword { to, .. }
            | Self::AccountExists { to, .. } => to,
            Self::PushNotification(push) => &push.to,
        }
    }

    /// Returns the kind as it appears on the wire and in metrics: `verify_email`,
    /// `reset_password`, `account_exists` or `push_notification`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::VerifyEmail { .. } => "verify_email",
            Self::ResetPassword { .. } => "reset_password",
            Self::AccountExists { .. } => "account_exists",
            Self::PushNotification(_) => "push_notification",
        }
    }
}

impl From<AccountMail> for MailJob {
    fn from(mail: AccountMail) -> Self {
        match mail {
            AccountMail::VerifyEmail { user_id, username, to, token } => {
                Self::VerifyEmail { user_id, username, to, token }
            }
            AccountMail::ResetPassword { user_id, username, to, token } => {
                Self::ResetPassword { user_id, username, to, token }
            }
            AccountMail::AccountExists { user_id, username, to } => {
                Self::AccountExists { user_id, username, to }
            }
        }
    }
}

/// A push, told to one watcher of the repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushNotification {
    /// The watcher's address.
    pub to: String,
    /// `owner/name`.
    pub repository: String,
    /// Who pushed.
    pub pusher: String,
    /// The refs the push moved.
    pub refs: Vec<PushedRef>,
}

/// One ref a push moved, with the newest of the commits it gained.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushedRef {
    /// The full name, such as `refs/heads/main`.
    pub name: String,
    /// The id before (all zeros when the push created the ref).
    pub old: String,
    /// The id after (all zeros when the push deleted the ref).
    pub new: String,
    /// The newest commits the ref gained, newest first; may be fewer than `total_commits`.
    #[serde(default)]
    pub commits: Vec<PushedCommit>,
    /// How many commits the ref gained in all.
    #[serde(default)]
    pub total_commits: u32,
}

/// A commit, as a notification lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushedCommit {
    /// The full id.
    pub id: String,
    /// The first line of the message.
    pub summary: String,
    /// The author's name.
    pub author: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_accounts_publish() {
        let published = AccountMail::ResetPassword {
            user_id: 7,
            username: "ada".into(),
            to: "ada@example.com".into(),
            token: "t0k3n".into(),
        };
        let wire = serde_json::to_string(&published).expect("serializes");
        let job: MailJob = serde_json::from_str(&wire).expect("decodes as a mail job");
        assert_eq!(job, MailJob::from(published));
        assert_eq!(job.kind(), "reset_password");
        assert_eq!(job.recipient(), "ada@example.com");
        assert_eq!(serde_json::to_string(&job).expect("serializes"), wire);
    }

    #[test]
    fn reads_what_the_watch_notifier_publishes() {
        use platform_git::watches as git;
        let published = git::PushMail {
            to: "bob@example.com".into(),
            repository: "ada/engine".into(),
            pusher: "ada".into(),
            refs: vec![
                git::PushedRef {
                    name: "refs/heads/main".into(),
                    old: "1".repeat(40),
                    new: "2".repeat(40),
                    commits: vec![
                        git::PushedCommit {
                            id: "3".repeat(40),
                            summary: "Second".into(),
                            author: "Ada Lovelace".into(),
                        },
                        git::PushedCommit {
                            id: "4".repeat(40),
                            summary: "First".into(),
                            author: "Grace Hopper".into(),
                        },
                    ],
                    total_commits: 12,
                },
                git::PushedRef {
                    name: "refs/heads/old".into(),
                    old: "5".repeat(40),
                    new: "0".repeat(40),
                    commits: vec![],
                    total_commits: 0,
                },
            ],
        };
        let wire = serde_json::to_string(&published).expect("serializes");
        let job: MailJob = serde_json::from_str(&wire).expect("decodes as a mail job");
        let expected = MailJob::PushNotification(PushNotification {
            to: published.to.clone(),
            repository: published.repository.clone(),
            pusher: published.pusher.clone(),
            refs: published
                .refs
                .iter()
                .map(|pushed| PushedRef {
                    name: pushed.name.clone(),
                    old: pushed.old.clone(),
                    new: pushed.new.clone(),
                    commits: pushed
                        .commits
                        .iter()
                        .map(|commit| PushedCommit {
                            id: commit.id.clone(),
                            summary: commit.summary.clone(),
                            author: commit.author.clone(),
                        })
                        .collect(),
                    total_commits: pushed.total_commits,
                })
                .collect(),
        });
        assert_eq!(job, expected);
        assert_eq!(job.kind(), "push_notification");
        // Nothing is lost or added either way: the two wire forms are the same JSON.
        let ours: serde_json::Value = serde_json::to_value(&job).expect("serializes");
        let theirs: serde_json::Value = serde_json::from_str(&wire).expect("is JSON");
        assert_eq!(ours, theirs);
    }

    #[test]
    fn a_push_notification_round_trips() {
        let job = MailJob::PushNotification(PushNotification {
            to: "bob@example.com".into(),
            repository: "ada/engine".into(),
            pusher: "ada".into(),
            refs: vec![PushedRef {
                name: "refs/heads/main".into(),
                old: "0".repeat(40),
                new: "a".repeat(40),
                commits: vec![],
                total_commits: 0,
            }],
        });
        let wire = serde_json::to_value(&job).expect("serializes");
        assert_eq!(wire["kind"], "push_notification");
        assert_eq!(serde_json::from_value::<MailJob>(wire).expect("decodes"), job);
    }
}
