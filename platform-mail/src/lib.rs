//! Mail: from a queued job to a message accepted by an SMTP relay.
//!
//! `platform-mail` will own:
//!
//! - message templates (verification, password reset, push notification), each with text and
//!   HTML parts, links built from `APP_DOMAIN_URL`;
//! - SMTP delivery with mail-send (`APP_SMTP_*`: implicit TLS, required STARTTLS, or plain);
//! - the mail job type and the email worker loop, which runs as a single active sender behind a
//!   leader lease and never sends a message twice.
//!
//! It depends only on `platform-core`.
