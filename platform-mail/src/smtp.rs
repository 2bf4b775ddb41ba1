//! Delivery to an SMTP relay with mail-send: TLS modes, AUTH, timeouts, reused connections, and
//! failures sorted into "try again" and "give up".

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mail_send::smtp::message::Parameters;
use mail_send::{Credentials, SmtpClient, SmtpClientBuilder};
use platform_core::config::{SmtpConfig, SmtpTls};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How long a connection may sit unused and still be reused; relays close idle sessions after
/// a minute or more.
const IDLE_FOR: Duration = Duration::from_secs(20);

/// How many idle connections are kept.
const MAX_IDLE: usize = 4;

/// The SMTP command a delivery failed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// `MAIL FROM`.
    MailFrom,
    /// `RCPT TO`.
    RcptTo,
    /// `DATA`, the message, and the reply to it.
    Data,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MailFrom => "MAIL FROM",
            Self::RcptTo => "RCPT TO",
            Self::Data => "DATA",
        })
    }
}

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No session with the relay: connecting, the TLS handshake, the greeting, EHLO or AUTH
    /// failed or timed out. Nothing about the message; try again once the relay is back.
    #[error("cannot open an SMTP session with {relay}: {reason}")]
    Unavailable {
        /// `host:port`.
        relay: String,
        /// What failed.
        reason: String,
    },
    /// The relay answered 4xx: try again later.
    #[error("the SMTP relay deferred the message at {stage}: {reply}")]
    Deferred {
        /// The command.
        stage: Stage,
        /// The relay's reply, code first.
        reply: String,
    },
    /// The relay answered 5xx: this message will never be accepted.
    #[error("the SMTP relay rejected the message at {stage}: {reply}")]
    Rejected {
        /// The command.
        stage: Stage,
        /// The relay's reply, code first.
        reply: String,
    },
    /// The session broke or timed out during a delivery; the message was not accepted, or its
    /// acceptance was lost with the connection.
    #[error("the SMTP session broke during {stage}: {reason}")]
    Interrupted {
        /// The command.
        stage: Stage,
        /// What happened.
        reason: String,
    },
}

impl SendError {
    /// Returns whether trying again can never help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Rejected { .. })
    }

    /// Returns whether the relay could not be reached at all (as opposed to refusing this
    /// message), so that waiting for it costs the job no attempt.
    pub fn is_relay_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// What the relay said when it took a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The reply to the end of `DATA`, code first (often carries the relay's queue id).
    pub reply: String,
}

enum Session {
    Plain(SmtpClient<TcpStream>),
    Tls(Box<SmtpClient<TlsStream<TcpStream>>>),
}

struct Idle {
    session: Session,
    since: Instant,
}

/// Sends messages through one SMTP relay (`APP_SMTP_*`).
///
/// With `starttls` the relay must offer STARTTLS (a relay that does not is reported as
/// unavailable, never used in clear); with `implicit` TLS starts with the connection. The relay's
/// certificate is checked against the system's roots (`SSL_CERT_FILE` and `SSL_CERT_DIR` are
/// honoured) unless [`SmtpSender::with_tls_config`] says otherwise. AUTH is used whenever the
/// relay offers it. Sessions are reused for up to 20 seconds of idleness, checked with `RSET`.
pub struct SmtpSender {
    relay: String,
    builder: SmtpClientBuilder<String>,
    tls: SmtpTls,
    username: String,
    password: SecretString,
    connect_timeout: Duration,
    send_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
}

impl fmt::Debug for SmtpSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSender")
            .field("relay", &self.relay)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The error returned by [`SmtpSender::new`].
#[derive(Debug, thiserror::Error)]
#[error("cannot set up TLS for the SMTP relay: {0}")]
pub struct TlsSetupError(String);

impl SmtpSender {
    /// Returns a sender for the relay `config` describes. Connects only when sending.
    ///
    /// # Errors
    ///
    /// Fails when the system's certificate roots cannot be loaded.
    pub fn new(config: &SmtpConfig) -> Result<Self, TlsSetupError> {
        platform_core::tls::install_crypto_provider();
        let builder =
            SmtpClientBuilder::new(config.host.clone(), config.port).map_err(TlsSetupError)?;
        Ok(Self {
            relay: format!("{}:{}", config.host, config.port),
            builder: builder.timeout(config.connect_timeout).say_ehlo(false),
            tls: config.tls,
            username: config.username.clone(),
            password: config.password.clone(),
            connect_timeout: config.connect_timeout,
            send_timeout: config.send_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Verifies the relay's certificate with `config` instead of the system's roots (a private
    /// certificate authority, say).
    #[must_use]
    pub fn with_tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.builder.tls_connector = TlsConnector::from(config);
        self
    }

    /// Returns the relay's `host:port`.
    pub fn relay(&self) -> &str {
        &self.relay
    }

    /// Delivers `message` (RFC 5322 bytes) from `from` to `to`.
    ///
    /// # Errors
    ///
    /// See [`SendError`] for how failures are told apart.
    pub async fn send(&self, from: &str, to: &str, message: &[u8]) -> Result<Accepted, SendError> {
        let mut session = match self.reusable_session().await {
            Some(session) => session,
            None => self.open().await?,
        };
        let result = match &mut session {
            Session::Plain(client) => deliver(client, from, to, message).await,
            Session::Tls(client) => deliver(client, from, to, message).await,
        };
        match result {
            Ok(reply) => {
                self.keep(session).await;
                Ok(Accepted { reply })
            }
            Err(Failure::Reply { stage, code, reply }) => {
                // A definite answer leaves the session usable; RSET clears it before reuse.
                self.keep(session).await;
                match code {
                    // "Authentication required" is about our session, not this message.
                    530 => Err(SendError::Unavailable {
                        relay: self.relay.clone(),
                        reason: format!("the relay requires AUTH but offered none: {reply}"),
                    }),
                    500.. => Err(SendError::Rejected { stage, reply }),
                    _ => Err(SendError::Deferred { stage, reply }),
                }
            }
            Err(Failure::Broken { stage, reason }) => Err(SendError::Interrupted { stage, reason }),
        }
    }

    async fn reusable_session(&self) -> Option<Session> {
        loop {
            let idle = self.idle.lock().await.pop()?;
            if idle.since.elapsed() > IDLE_FOR {
                continue;
            }
            let mut session = idle.session;
            let alive = match &mut session {
                Session::Plain(client) => client.rset().await.is_ok(),
                Session::Tls(client) => client.rset().await.is_ok(),
            };
            if alive {
                return Some(session);
            }
        }
    }

    async fn keep(&self, session: Session) {
        let mut idle = self.idle.lock().await;
        if idle.len() < MAX_IDLE {
            idle.push(Idle { session, since: Instant::now() });
        }
    }

    async fn open(&self) -> Result<Session, SendError> {
        let unavailable =
            |reason: String| SendError::Unavailable { relay: self.relay.clone(), reason };
        let opened = tokio::time::timeout(self.connect_timeout, async {
            let mut session = match self.tls {
                SmtpTls::Implicit => {
                    Session::Tls(Box::new(self.builder.clone().implicit_tls(true).connect().await?))
                }
                SmtpTls::StartTls => Session::Tls(Box::new(
                    self.builder.clone().implicit_tls(false).connect().await?,
                )),
                SmtpTls::None => Session::Plain(self.builder.connect_plain().await?),
            };
            match &mut session {
                Session::Plain(client) => self.greet(client).await?,
                Session::Tls(client) => self.greet(client).await?,
            }
            Ok::<_, mail_send::Error>(session)
        })
        .await;
        let mut session = match opened {
            Ok(Ok(session)) => session,
            Ok(Err(error)) => return Err(unavailable(describe(&error))),
            Err(_) => {
                return Err(unavailable(format!(
                    "no session within {}s",
                    self.connect_timeout.as_secs()
                )));
            }
        };
        match &mut session {
            Session::Plain(client) => client.timeout = self.send_timeout,
            Session::Tls(client) => client.timeout = self.send_timeout,
        }
        Ok(session)
    }

    /// EHLO, then AUTH when the relay offers it.
    async fn greet<T>(&self, client: &mut SmtpClient<T>) -> Result<(), mail_send::Error>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let capabilities = client.capabilities(&self.builder.local_host, false).await?;
        if capabilities.auth_mechanisms != 0 {
            let credentials = Credentials::Plain {
                username: self.username.clone(),
                secret: self.password.expose_secret().to_owned(),
            };
            client.authenticate(&credentials, &capabilities).await?;
        }
        Ok(())
    }
}

enum Failure {
    Reply { stage: Stage, code: u16, reply: String },
    Broken { stage: Stage, reason: String },
}

async fn deliver<T>(
    client: &mut SmtpClient<T>,
    from: &str,
    to: &str,
    message: &[u8],
) -> Result<String, Failure>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let parameters = Parameters::default();
    let failed = |stage: Stage| {
        move |error: mail_send::Error| match error {
            mail_send::Error::UnexpectedReply(reply) => Failure::Reply {
                stage,
                code: reply.code,
                reply: reply_text(reply.code, reply.esc, &reply.message),
            },
            other => Failure::Broken { stage, reason: describe(&other) },
        }
    };
    client.mail_from(from, &parameters).await.map_err(failed(Stage::MailFrom))?;
    client.rcpt_to(to, &parameters).await.map_err(failed(Stage::RcptTo))?;
    let reply = client.data(message).await.map_err(failed(Stage::Data))?;
    Ok(reply_text(reply.code, reply.esc, &reply.message))
}

/// A reply as the relay wrote it: code, enhanced status code when there is one, text.
fn reply_text(code: u16, enhanced: [u8; 3], message: &str) -> String {
    let message = message.trim();
    match enhanced {
        [0, 0, 0] => format!("{code} {message}"),
        [class, subject, detail] => format!("{code} {class}.{subject}.{detail} {message}"),
    }
}

/// Describes a mail-send error in one line, with the relay's reply where there is one.
fn describe(error: &mail_send::Error) -> String {
    match error {
        mail_send::Error::UnexpectedReply(reply) => {
            format!("unexpected reply {}", reply_text(reply.code, reply.esc, &reply.message))
        }
        mail_send::Error::AuthenticationFailed(reply) => {
            format!("AUTH refused: {}", reply_text(reply.code, reply.esc, &reply.message))
        }
        mail_send::Error::MissingStartTls => {
            "the relay does not offer STARTTLS, which APP_SMTP_TLS=starttls requires".to_owned()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rejections_are_permanent() {
        let rejected = SendError::Rejected { stage: Stage::RcptTo, reply: "550 no".into() };
        let deferred = SendError::Deferred { stage: Stage::RcptTo, reply: "451 later".into() };
        let down = SendError::Unavailable { relay: "x:25".into(), reason: "refused".into() };
        let broken = SendError::Interrupted { stage: Stage::Data, reason: "reset".into() };
        assert!(rejected.is_permanent());
        assert!(!deferred.is_permanent() && !down.is_permanent() && !broken.is_permanent());
        assert!(down.is_relay_unavailable());
        assert!(!broken.is_relay_unavailable() && !deferred.is_relay_unavailable());
        assert_eq!(rejected.to_string(), "the SMTP relay rejected the message at RCPT TO: 550 no");
    }
}
