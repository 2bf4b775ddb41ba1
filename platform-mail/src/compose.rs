//! From a [`MailJob`] to a message: subject, plain text and HTML, headers.
//!
//! Templates live in the crate's `templates/` directory and are compiled into the crate by
//! askama, so a template that names a missing field does not build. HTML templates escape every
//! value; text templates are plain.

use std::ops::Deref;
use std::time::Duration;

use askama::Template;
use platform_core::accounts::tokens::Purpose;
use url::Url;

use crate::job::{MailJob, PushNotification, PushedRef};

/// The error returned by [`Composer::compose`].
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// The recipient address cannot be put on an SMTP envelope.
    #[error("invalid recipient address {address:?}: {reason}")]
    InvalidRecipient {
        /// The address.
        address: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A template failed to render.
    #[error("cannot render the {template} template")]
    Template {
        /// The template's file name.
        template: &'static str,
        /// Why.
        #[source]
        source: askama::Error,
    },
    /// The message could not be serialized.
    #[error("cannot serialize the message")]
    Serialize(#[source] std::io::Error),
}

/// Builds messages for one site: links from its public URL, one sender address.
#[derive(Clone, Debug)]
pub struct Composer {
    site_url: Url,
    site_name: String,
    from: String,
    id_domain: String,
}

/// A message ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Composed {
    /// The `Message-ID` header's value, without angle brackets.
    pub message_id: String,
    /// The envelope and header sender.
    pub from: String,
    /// The envelope and header recipient.
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// The plain text part.
    pub text: String,
    /// The HTML part.
    pub html: String,
}

impl Composer {
    /// Returns a composer for the site at `site_url` (`APP_DOMAIN_URL`), sending from `from`
    /// (`APP_SMTP_FROM`).
    ///
    /// Links are built under `site_url`: `verify-email?token=…`, `reset-password?token=…`,
    /// `<owner>/<name>` and `<owner>/<name>/commit/<id>`.
    pub fn new(site_url: &Url, from: impl Into<String>) -> Self {
        let mut site_url = site_url.clone();
        // A base without a trailing slash would lose its last segment when links are joined.
        if !site_url.path().ends_with('/') {
            let path = format!("{}/", site_url.path());
            site_url.set_path(&path);
        }
        site_url.set_query(None);
        site_url.set_fragment(None);
        let host = site_url.host_str().unwrap_or("localhost").to_owned();
        let site_name = match site_url.path() {
            "/" => host.clone(),
            path => format!("{host}{}", path.trim_end_matches('/')),
        };
        Self { site_url, site_name, from: from.into(), id_domain: host }
    }

    /// Renders `job` as a message whose `Message-ID` is built from `message_key` (the queue's
    /// job id, the same on every delivery of the job).
    ///
    /// # Errors
    ///
    /// Fails when the recipient address cannot go on an SMTP envelope, or a template fails.
    pub fn compose(&self, job: &MailJob, message_key: &str) -> Result<Composed, ComposeError> {
        let to = job.recipient();
        check_address(to)?;
        let site = Site { site_url: self.site_url.as_str(), site_name: &self.site_name };
        let (subject, text, html) = match job {
            MailJob::VerifyEmail { username, to, token, .. } => {
                let context = TokenMail {
                    site,
                    username,
                    email: to,
                    link: self.link_with_token("verify-email", token),
                    valid_for: humanize(Purpose::VerifyEmail.lifetime()),
                };
                (
                    format!("Confirm your email address for {}", self.site_name),
                    render("verify_email.txt", &VerifyEmailText(&context))?,
                    render("verify_email.html", &VerifyEmailHtml(&context))?,
                )
            }
            MailJob::ResetPassword { username, to, token, .. } => {
                let context = TokenMail {
                    site,
                    username,
                    email: to,
                    link: self.link_with_token("reset-password", token),
                    valid_for: humanize(Purpose::ResetPassword.lifetime()),
                };
                (
                    format!("Reset your {} password", self.site_name),
                    render("reset_password.txt", &ResetPasswordText(&context))?,
                    render("reset_password.html", &ResetPasswordHtml(&context))?,
                )
            }
            MailJob::AccountExists { username, to, .. } => {
                let context = TokenMail {
                    site,
                    username,
                    email: to,
                    link: self.link(&["reset-password"]),
                    valid_for: String::new(),
                };
                (
                    format!("You already have a {} account", self.site_name),
                    render("account_exists.txt", &AccountExistsText(&context))?,
                    render("account_exists.html", &AccountExistsHtml(&context))?,
                )
            }
            MailJob::PushNotification(push) => {
                let context = self.push_context(site, push);
                (
                    push_subject(push),
                    render("push_notification.txt", &PushText(&context))?,
                    render("push_notification.html", &PushHtml(&context))?,
                )
            }
        };
        Ok(Composed {
            message_id: format!("{message_key}@{}", self.id_domain),
            from: self.from.clone(),
            to: to.to_owned(),
            subject: single_line(&subject),
            text,
            html,
        })
    }

    fn link_with_token(&self, page: &str, token: &str) -> String {
        let mut link = self.site_url.clone();
        if let Ok(mut path) = link.path_segments_mut() {
            path.pop_if_empty().push(page);
        }
        link.query_pairs_mut().append_pair("token", token);
        link.into()
    }

    fn link(&self, segments: &[&str]) -> String {
        let mut link = self.site_url.clone();
        if let Ok(mut path) = link.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        link.into()
    }

    fn push_context<'a>(&self, site: Site<'a>, push: &'a PushNotification) -> PushMail<'a> {
        let repository_segments: Vec<&str> = push.repository.split('/').collect();
        let changes = push
            .refs
            .iter()
            .map(|pushed| {
                let commits = pushed
                    .commits
                    .iter()
                    .map(|commit| {
                        let mut segments = repository_segments.clone();
                        segments.extend(["commit", commit.id.as_str()]);
                        CommitLine {
                            short_id: commit.id.get(..10).unwrap_or(&commit.id),
                            summary: &commit.summary,
                            author: &commit.author,
                            link: self.link(&segments),
                        }
                    })
                    .collect::<Vec<_>>();
                let listed = u32::try_from(commits.len()).unwrap_or(u32::MAX);
                RefChange {
                    description: describe(pushed),
                    more_commits: pushed.total_commits.saturating_sub(listed),
                    commits,
                }
            })
            .collect();
        PushMail {
            site,
            pusher: &push.pusher,
            repository: &push.repository,
            repository_link: self.link(&repository_segments),
            changes,
        }
    }
}

impl Composed {
    /// Serializes the message (RFC 5322, `multipart/alternative` with the text part first),
    /// dated now.
    ///
    /// # Errors
    ///
    /// Fails only when writing to memory fails.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ComposeError> {
        mail_send::mail_builder::MessageBuilder::new()
            .message_id(self.message_id.as_str())
            .from(self.from.as_str())
            .to(self.to.as_str())
            .subject(self.subject.as_str())
            // Tells auto-responders and mail loops that no person wrote this (RFC 3834).
            .header(
                "Auto-Submitted",
                mail_send::mail_builder::headers::raw::Raw::new("auto-generated"),
            )
            .text_body(self.text.as_str())
            .html_body(self.html.as_str())
            .write_to_vec()
            .map_err(ComposeError::Serialize)
    }
}

/// Refuses addresses that would break, or inject into, an SMTP command.
fn check_address(address: &str) -> Result<(), ComposeError> {
    let invalid = |reason| ComposeError::InvalidRecipient { address: address.to_owned(), reason };
    if address.is_empty() || address.len() > 254 {
        return Err(invalid("must be 1 to 254 characters"));
    }
    if !address.bytes().all(|b| b.is_ascii_graphic() && !b"<>()[],;:\\\"".contains(&b)) {
        return Err(invalid("only printable ASCII without spaces or <>()[],;:\\\" is accepted"));
    }
    match address.rsplit_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
        {
            Ok(())
        }
        _ => Err(invalid("must be local-part@domain")),
    }
}

/// Replaces line breaks and other control characters, which have no place in a header.
fn single_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

fn humanize(duration: Duration) -> String {
    let hours = duration.as_secs() / 3600;
    match hours {
        0 => format!("{} minutes", duration.as_secs() / 60),
        1 => "1 hour".to_owned(),
        hours => format!("{hours} hours"),
    }
}

fn is_zero(id: &str) -> bool {
    id.bytes().all(|b| b == b'0')
}

fn describe(pushed: &PushedRef) -> String {
    let (kind, short) = if let Some(branch) = pushed.name.strip_prefix("refs/heads/") {
        ("branch", branch)
    } else if let Some(tag) = pushed.name.strip_prefix("refs/tags/") {
        ("tag", tag)
    } else {
        ("ref", pushed.name.as_str())
    };
    let commits = match pushed.total_commits {
        0 => String::new(),
        1 => ": 1 commit".to_owned(),
        n => format!(": {n} commits"),
    };
    if is_zero(&pushed.old) {
        format!("Created {kind} {short}{commits}")
    } else if is_zero(&pushed.new) {
        format!("Deleted {kind} {short}")
    } else {
        format!("Updated {kind} {short}{commits}")
    }
}

fn push_subject(push: &PushNotification) -> String {
    match push.refs.as_slice() {
        [only] => {
            let short = only
                .name
                .strip_prefix("refs/heads/")
                .or_else(|| only.name.strip_prefix("refs/tags/"))
                .unwrap_or(&only.name);
            format!("[{}] {} pushed to {short}", push.repository, push.pusher)
        }
        refs => format!("[{}] {} pushed to {} refs", push.repository, push.pusher, refs.len()),
    }
}

fn render(template: &'static str, view: &impl Template) -> Result<String, ComposeError> {
    view.render().map_err(|source| ComposeError::Template { template, source })
}

/// What every template's layout shows.
#[derive(Clone, Copy)]
struct Site<'a> {
    site_url: &'a str,
    site_name: &'a str,
}

/// The verification and password-reset mails: a greeting and a link with a token.
struct TokenMail<'a> {
    site: Site<'a>,
    username: &'a str,
    email: &'a str,
    link: String,
    valid_for: String,
}

struct PushMail<'a> {
    site: Site<'a>,
    pusher: &'a str,
    repository: &'a str,
    repository_link: String,
    changes: Vec<RefChange<'a>>,
}

struct RefChange<'a> {
    description: String,
    commits: Vec<CommitLine<'a>>,
    more_commits: u32,
}

struct CommitLine<'a> {
    short_id: &'a str,
    summary: &'a str,
    author: &'a str,
    link: String,
}

impl<'a> Deref for TokenMail<'a> {
    type Target = Site<'a>;
    fn deref(&self) -> &Site<'a> {
        &self.site
    }
}

impl<'a> Deref for PushMail<'a> {
    type Target = Site<'a>;
    fn deref(&self) -> &Site<'a> {
        &self.site
    }
}

/// Declares one template view per format over a shared context: the views dereference to it,
/// so the templates name its fields directly.
macro_rules! views {
    ($($view:ident($context:ident) = $path:literal;)*) => {$(
        #[derive(Template)]
        #[template(path = $path)]
        struct $view<'a>(&'a $context<'a>);

        impl<'a> Deref for $view<'a> {
            type Target = $context<'a>;
            fn deref(&self) -> &$context<'a> {
                self.0
            }
        }
    )*};
}

views! {
    VerifyEmailText(TokenMail) = "verify_email.txt";
    VerifyEmailHtml(TokenMail) = "verify_email.html";
    ResetPasswordText(TokenMail) = "reset_password.txt";
    ResetPasswordHtml(TokenMail) = "reset_password.html";
    AccountExistsText(TokenMail) = "account_exists.txt";
    AccountExistsHtml(TokenMail) = "account_exists.html";
    PushText(PushMail) = "push_notification.txt";
    PushHtml(PushMail) = "push_notification.html";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::PushedCommit;

    fn composer() -> Composer {
        let site = Url::parse("https://git.example.com/forge").expect("valid URL");
        Composer::new(&site, "noreply@git.example.com")
    }

    fn verify(username: &str, to: &str) -> MailJob {
        MailJob::VerifyEmail {
            user_id: 1,
            username: username.into(),
            to: to.into(),
            token: "tok+en/=".into(),
        }
    }

    #[test]
    fn verification_mail_links_under_the_site_url() {
        let mail = composer().compose(&verify("ada", "ada@example.com"), "job-1").expect("renders");
        let link = "https://git.example.com/forge/verify-email?token=tok%2Ben%2F%3D";
        assert!(mail.text.contains(link), "{}", mail.text);
        assert!(mail.html.contains(&format!("href=\"{}\"", link.replace('&', "&amp;"))));
        assert!(mail.text.contains("expires in 24 hours"));
        assert_eq!(mail.message_id, "job-1@git.example.com");
        assert_eq!(mail.subject, "Confirm your email address for git.example.com/forge");
    }

    #[test]
    fn reset_mail_links_to_the_reset_page() {
        let job = MailJob::ResetPassword {
            user_id: 1,
            username: "ada".into(),
            to: "ada@example.com".into(),
            token: "abc".into(),
        };
        let mail = composer().compose(&job, "job-2").expect("renders");
        assert!(mail.text.contains("https://git.example.com/forge/reset-password?token=abc"));
        assert!(mail.text.contains("expires in 1 hour"));
    }

    #[test]
    fn user_supplied_text_is_escaped_in_html_only() {
        let push = MailJob::PushNotification(PushNotification {
            to: "bob@example.com".into(),
            repository: "ada/engine".into(),
            pusher: "ada".into(),
            refs: vec![PushedRef {
                name: "refs/heads/main".into(),
                old: "1".repeat(40),
                new: "2".repeat(40),
                commits: vec![PushedCommit {
                    id: "2".repeat(40),
                    summary: "<script>alert(1)</script> & \"quotes\"".into(),
                    author: "Eve <eve@example.com>".into(),
                }],
                total_commits: 3,
            }],
        });
        let mail = composer().compose(&push, "job-3").expect("renders");
        assert!(!mail.html.contains("<script>"), "{}", mail.html);
        assert!(mail.html.contains("&#60;script&#62;") || mail.html.contains("&lt;script&gt;"));
        assert!(!mail.html.contains("Eve <eve@"));
        assert!(mail.text.contains("<script>alert(1)</script> & \"quotes\""), "{}", mail.text);
        assert!(mail.text.contains("Updated branch main: 3 commits"));
        assert!(mail.text.contains("and 2 more"));
        assert!(mail.text.contains("https://git.example.com/forge/ada/engine"));
        assert!(mail.html.contains(&format!(
            "https://git.example.com/forge/ada/engine/commit/{}",
            "2".repeat(40)
        )));
        assert_eq!(mail.subject, "[ada/engine] ada pushed to main");
    }

    #[test]
    fn a_username_cannot_inject_markup_or_headers() {
        let mail = composer()
            .compose(&verify("<b>x</b>\r\nBcc: victim@example.com", "ada@example.com"), "j")
            .expect("renders");
        assert!(!mail.html.contains("<b>x</b>"));
        let bytes = String::from_utf8(mail.to_bytes().expect("serializes")).expect("UTF-8");
        let headers = bytes.split("\r\n\r\n").next().unwrap_or_default();
        assert!(!headers.contains("Bcc:"), "{headers}");
    }

    #[test]
    fn recipients_that_would_break_the_envelope_are_refused() {
        for bad in
            ["", "no-at-sign", "a@", "@b", "a b@example.com", "a@b>\r\nRCPT TO:<c@d", "ä@x.de"]
        {
            let error = composer().compose(&verify("ada", bad), "j").expect_err(bad);
            assert!(error.to_string().contains("invalid recipient address"), "{error}");
        }
    }

    #[test]
    fn the_message_has_text_and_html_alternatives_and_our_headers() {
        let mail = composer().compose(&verify("ada", "ada@example.com"), "job-9").expect("renders");
        let bytes = String::from_utf8(mail.to_bytes().expect("serializes")).expect("UTF-8");
        for expected in [
            "Message-ID: <job-9@git.example.com>",
            "From: <noreply@git.example.com>",
            "To: <ada@example.com>",
            "Auto-Submitted: auto-generated",
            "multipart/alternative",
            "text/plain",
            "text/html",
        ] {
            assert!(bytes.contains(expected), "{expected} missing from\n{bytes}");
        }
    }
}
