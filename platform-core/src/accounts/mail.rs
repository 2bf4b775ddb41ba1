//! The mail the accounts ask to be sent.

use serde::{Deserialize, Serialize};

/// The queue stream account mail is published to.
pub const MAIL_STREAM: &str = "mail";

/// A mail the accounts ask to be sent, published to [`MAIL_STREAM`]; the email worker renders
/// and sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AccountMail {
    /// "Confirm your address": carries the token `POST /api/auth/verify-email` takes.
    VerifyEmail {
        /// The user.
        user_id: i64,
        /// Their name, for the greeting.
        username: String,
        /// The address to verify.
        to: String,
        /// The single-use token.
        token: String,
    },
    /// "Choose a new password": carries the token `POST /api/auth/password-reset/confirm` takes.
    ResetPassword {
        /// The user.
        user_id: i64,
        /// Their name, for the greeting.
        username: String,
        /// Their address.
        to: String,
        /// The single-use token.
        token: String,
    },
    /// "You already have an account": someone registered with an address that belongs to an
    /// account (the registration is answered as if it had worked, so it reveals nothing).
    AccountExists {
        /// The user the address belongs to.
        user_id: i64,
        /// Their name, to sign in with.
        username: String,
        /// Their address.
        to: String,
    },
}
