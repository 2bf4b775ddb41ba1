//! Mail: from a queued job to a message accepted by an SMTP relay, sent exactly once by exactly
//! one worker.
//!
//! - [`job`]: [`MailJob`], what producers publish to the `mail` queue stream (the accounts'
//!   verification and password-reset mails, push notifications).
//! - [`compose`]: subject, plain text and HTML from templates compiled into the crate, links
//!   under the site's public URL (`APP_DOMAIN_URL`), every value escaped in HTML.
//! - [`smtp`]: delivery through a relay with mail-send (`APP_SMTP_*`: implicit TLS, required
//!   STARTTLS or plain; AUTH; connect and send timeouts), failures sorted into "the relay is
//!   unreachable", "try again later" (4xx) and "never" (5xx).
//! - [`worker`]: the [`EmailWorker`], which consumes the queue only while it holds the
//!   [`leader`] lease and records each accepted message ([`deliveries`]) so that a job
//!   delivered again is not sent again.
//!
//! Tables are created by [`MAIL_MIGRATIONS`]. The crate depends only on `platform-core`.
//!
//! # Example
//!
//! Rendering a verification mail (sending needs a relay and the worker; see
//! [`EmailWorker`]):
//!
//! ```
//! use platform_mail::{Composer, MailJob};
//!
//! let site = url::Url::parse("https://git.example.com").unwrap();
//! let composer = Composer::new(&site, "noreply@git.example.com");
//! let job = MailJob::VerifyEmail {
//!     user_id: 1,
//!     username: "ada".into(),
//!     to: "ada@example.com".into(),
//!     token: "3f9c".into(),
//! };
//! let mail = composer.compose(&job, "job-1").unwrap();
//! assert!(mail.text.contains("https://git.example.com/verify-email?token=3f9c"));
//! assert!(mail.html.contains("Confirm email address"));
//! assert_eq!(mail.message_id, "job-1@git.example.com");
//! let bytes = mail.to_bytes().unwrap();
//! assert!(String::from_utf8_lossy(&bytes).contains("multipart/alternative"));
//! ```

pub mod compose;
pub mod deliveries;
pub mod job;
pub mod leader;
pub mod metrics;
pub mod smtp;
pub mod worker;

use diesel_migrations::{EmbeddedMigrations, embed_migrations};

pub use compose::{Composed, Composer};
pub use job::{MAIL_STREAM, MailJob};
pub use smtp::SmtpSender;
pub use worker::{EmailWorker, Role, WorkerOptions};

/// The migrations that create this crate's tables (`mail_deliveries`); run them with
/// `platform_core::db::Database::migrate_all` together with the core's.
pub const MAIL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");
