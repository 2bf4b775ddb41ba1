//! Git over SSH: a russh server that runs git commands and nothing else.
//!
//! Clients authenticate with a public key only; the key's SHA256 fingerprint names its owner in
//! the [`Authenticator`](crate::backend::Authenticator) (the SSH user name, usually `git`, is ignored). Password and
//! keyboard-interactive authentication are refused. Only modern algorithms are offered:
//! curve25519 key exchange, Ed25519 and RSA-SHA2 keys, ChaCha20-Poly1305 and AES-GCM.
//!
//! A session may `exec` `git-upload-pack`, `git-receive-pack` or `git-upload-archive` with a
//! repository path as git sends it (`'/owner/name.git'`, with or without the leading `/` and the
//! `.git`), and set `GIT_PROTOCOL` (protocol v2). Everything else is refused: a shell prints a
//! greeting and exits 1; ptys, other commands, other variables, subsystems (sftp), port and agent
//! forwarding fail. Authorization, push policy and push events are those of
//! [`crate::transport`], exactly as over HTTP.
//!
//! ```no_run
//! # async fn run(service: platform_git::transport::GitService, host_key_pem: &str)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use platform_git::ssh::{GitSsh, SshOptions};
//!
//! let ssh = GitSsh::new(service, host_key_pem, SshOptions::default())?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:2222").await?;
//! ssh.serve(listener, std::future::pending()).await;
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use russh::keys::{Algorithm, HashAlg, PrivateKey};
use russh::server::{
    self, Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, ChannelMsg, MethodKind, MethodSet, Preferred};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::backend::{GitUser, Identity};
use crate::permissions::Access;
use crate::pktline;
use crate::redact;
use crate::transport::{self, Denial, GitService};

mod command;
use command::{GitCommand, Program};

/// Limits of the SSH server.
#[derive(Clone, Debug)]
pub struct SshOptions {
    /// How long a connection may take to authenticate.
    pub auth_timeout: Duration,
    /// How long a connection may stay silent.
    pub idle_timeout: Duration,
    /// How many channels one connection may open.
    pub max_channels: usize,
    /// How many connections are served at once; more are closed at once.
    pub max_connections: usize,
    /// Once shutdown begins, how long open sessions may take to finish (a clone or a push
    /// running) before they are disconnected.
    pub shutdown_grace: Duration,
}

impl Default for SshOptions {
    /// 30 s to authenticate, 10 minutes of silence, 4 channels, 512 connections, 25 s to finish
    /// after shutdown begins.
    fn default() -> Self {
        Self {
            auth_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            max_channels: 4,
            max_connections: 512,
            shutdown_grace: Duration::from_secs(25),
        }
    }
}

/// The error returned by [`GitSsh::new`].
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The host key is not an OpenSSH private key.
    #[error("the SSH host key cannot be read")]
    HostKey(#[source] russh::keys::ssh_key::Error),
    /// The host key is not Ed25519.
    #[error("the SSH host key must be Ed25519, not {0}")]
    HostKeyAlgorithm(String),
}

const KEX: &[russh::kex::Name] = &[
    russh::kex::CURVE25519,
    russh::kex::CURVE25519_PRE_RFC_8731,
    // Without these two, no server-sig-algs and no strict key exchange (the Terrapin fix).
    russh::kex::EXTENSION_SUPPORT_AS_SERVER,
    russh::kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
];
const KEYS: &[Algorithm] = &[
    Algorithm::Ed25519,
    Algorithm::Rsa { hash: Some(HashAlg::Sha512) },
    Algorithm::Rsa { hash: Some(HashAlg::Sha256) },
];
const CIPHERS: &[russh::cipher::Name] =
    &[russh::cipher::CHACHA20_POLY1305, russh::cipher::AES_256_GCM, russh::cipher::AES_128_GCM];
const MACS: &[russh::mac::Name] = &[russh::mac::HMAC_SHA512_ETM, russh::mac::HMAC_SHA256_ETM];
const COMPRESSION: &[russh::compression::Name] = &[russh::compression::NONE];

/// How much of git's output is read at a time.
const OUTPUT_CHUNK_BYTES: usize = 256 * 1024;

/// How many bytes from a client may wait for git's stdin, per channel.
const STDIN_QUEUE_BYTES: usize = 8 << 20;

/// The SSH server.
#[derive(Clone)]
pub struct GitSsh {
    service: GitService,
    config: Arc<server::Config>,
    options: SshOptions,
    fingerprint: String,
}

impl std::fmt::Debug for GitSsh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSsh")
            .field("fingerprint", &self.fingerprint)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl GitSsh {
    /// Prepares the server with the Ed25519 host key `host_key_pem` (OpenSSH form).
    ///
    /// # Errors
    ///
    /// Fails when the key cannot be read or is not Ed25519.
    pub fn new(
        service: GitService,
        host_key_pem: &str,
        options: SshOptions,
    ) -> Result<Self, SshError> {
        let key = PrivateKey::from_openssh(host_key_pem).map_err(SshError::HostKey)?;
        if key.algorithm() != Algorithm::Ed25519 {
            return Err(SshError::HostKeyAlgorithm(key.algorithm().to_string()));
        }
        let fingerprint = key.public_key().fingerprint(HashAlg::Sha256).to_string();
        let config = server::Config {
            methods: MethodSet::from(&[MethodKind::PublicKey][..]),
            auth_rejection_time: Duration::from_millis(300),
            auth_rejection_time_initial: Some(Duration::ZERO),
            max_auth_attempts: 6,
            inactivity_timeout: Some(options.idle_timeout),
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 3,
            nodelay: true,
            keys: vec![key],
            preferred: Preferred {
                kex: Cow::Borrowed(KEX),
                key: Cow::Borrowed(KEYS),
                host_key_certificates: Cow::Borrowed(&[]),
                cipher: Cow::Borrowed(CIPHERS),
                mac: Cow::Borrowed(MACS),
                compression: Cow::Borrowed(COMPRESSION),
            },
            ..server::Config::default()
        };
        Ok(Self { service, config: Arc::new(config), options, fingerprint })
    }

    /// Returns the host key's SHA256 fingerprint, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Serves connections from `listener` until `shutdown` completes; then closes the listener
    /// (new connections are refused), lets open sessions finish for
    /// [`SshOptions::shutdown_grace`], disconnects those still open, and returns.
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let connections = Arc::new(Semaphore::new(self.options.max_connections));
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::pin!(shutdown);
        loop {
            let (socket, peer) = tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "cannot accept an SSH connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                tracing::warn!(%peer, limit = self.options.max_connections, "too many SSH connections; closing");
                continue;
            };
            let _ = socket.set_nodelay(true);
            tokio::spawn(self.clone().connection(socket, peer, permit, stop.clone()));
        }
        drop(listener);
        let limit = self.options.max_connections;
        let open = limit - connections.available_permits();
        let all = u32::try_from(limit).unwrap_or(u32::MAX);
        if open > 0 {
            tracing::info!(open, "SSH: no new connections; letting open sessions finish");
            let grace = self.options.shutdown_grace;
            if tokio::time::timeout(grace, connections.acquire_many(all)).await.is_err() {
                let open = limit - connections.available_permits();
                tracing::warn!(
                    open,
                    grace_s = grace.as_secs(),
                    "SSH: grace period over: disconnecting"
                );
            }
        }
        stop.cancel();
        // The disconnect messages go out as each connection's task ends.
        let _ = tokio::time::timeout(Duration::from_secs(1), connections.acquire_many(all)).await;
    }

    async fn connection(
        self,
        socket: tokio::net::TcpStream,
        peer: SocketAddr,
        _permit: OwnedSemaphorePermit,
        stop: tokio_util::sync::CancellationToken,
    ) {
        // A second handle on the socket, to cut off a client that does not authenticate in
        // time: russh runs the session in a task of its own, which only the socket can stop.
        let Some((socket, killer)) = socket
            .into_std()
            .and_then(|socket| Ok((socket.try_clone()?, socket)))
            .and_then(|(killer, socket)| Ok((tokio::net::TcpStream::from_std(socket)?, killer)))
            .ok()
        else {
            return;
        };
        let authenticated = Arc::new(AtomicBool::new(false));
        // Keys are tried against the same per-address limit as passwords elsewhere: an address
        // over it is refused every key, on every connection, until its window ends.
        let limited = match self.service.authenticator().address_limited(peer.ip()).await {
            Ok(limited) => limited,
            Err(error) => {
                tracing::error!(%peer, error = %error, "cannot read the sign-in attempt limits");
                None
            }
        };
        if let Some(wait) = limited {
            tracing::warn!(%peer, retry_after_s = wait.as_secs(), "SSH sign-in attempts limited");
        }
        let handler = Connection {
            service: self.service.clone(),
            peer,
            user: None,
            limited: limited.is_some(),
            counted_failure: false,
            authenticated: Arc::clone(&authenticated),
            channels: HashMap::new(),
            opened: 0,
            max_channels: self.options.max_channels,
        };
        // The version exchange happens here: a client that never sends one is dropped too.
        let started = server::run_stream(Arc::clone(&self.config), socket, handler);
        let session = match tokio::time::timeout(self.options.auth_timeout, started).await {
            Ok(Ok(session)) => session,
            Ok(Err(error)) => {
                tracing::debug!(%peer, error = %error, "SSH handshake failed");
                return;
            }
            Err(_) => {
                tracing::info!(%peer, "SSH client sent no version in time");
                return;
            }
        };
        let handle = session.handle();
        let auth_timeout = self.options.auth_timeout;
        let signed_in = Arc::clone(&authenticated);
        let watchdog = tokio::spawn(async move {
            tokio::time::sleep(auth_timeout).await;
            if !signed_in.load(Ordering::Acquire) {
                tracing::info!(%peer, "SSH authentication timed out");
                let _ = killer.shutdown(std::net::Shutdown::Both);
            }
        });
        tokio::select! {
            result = session => {
                if let Err(error) = result {
                    tracing::debug!(%peer, error = %error, "SSH session ended with an error");
                }
            }
            () = stop.cancelled() => {
                let _ = handle
                    .disconnect(russh::Disconnect::ByApplication, "server shutting down".to_owned(), String::new())
                    .await;
            }
        }
        watchdog.abort();
    }
}

/// One SSH connection.
struct Connection {
    service: GitService,
    peer: SocketAddr,
    user: Option<GitUser>,
    /// The address is over its limit of failed sign-ins: every key is refused.
    limited: bool,
    /// Whether this connection counted as a failed attempt of its address: once, at its first
    /// unknown key, however many it offers (an agent offers all it holds before the right one),
    /// and given back if it then gets in.
    counted_failure: bool,
    authenticated: Arc<AtomicBool>,
    channels: HashMap<ChannelId, Slot>,
    opened: usize,
    max_channels: usize,
}

/// A session channel waiting for its command.
struct Slot {
    channel: Channel<Msg>,
    protocol: Option<String>,
}

impl Connection {
    async fn user_of(
        &mut self,
        key: &russh::keys::PublicKey,
    ) -> Result<Option<GitUser>, russh::Error> {
        if self.limited {
            return Ok(None);
        }
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let authenticator = self.service.authenticator();
        match authenticator.public_key(&fingerprint, self.peer.ip()).await {
            Ok(user) => {
                if user.is_none() && !self.counted_failure {
                    self.counted_failure = true;
                    if let Err(error) = authenticator.record_address_failure(self.peer.ip()).await {
                        tracing::error!(peer = %self.peer, %error, "cannot count a failed SSH sign-in");
                    }
                }
                Ok(user)
            }
            Err(error) => {
                tracing::error!(peer = %self.peer, %error, "cannot look up an SSH key");
                Ok(None)
            }
        }
    }
}

fn refuse() -> Auth {
    Auth::Reject {
        proceed_with_methods: Some(MethodSet::from(&[MethodKind::PublicKey][..])),
        partial_success: false,
    }
}

impl server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_password(&mut self, _user: &str, _password: &str) -> Result<Auth, Self::Error> {
        Ok(refuse())
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        _user: &str,
        _submethods: &str,
        _response: Option<server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        Ok(refuse())
    }

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(if self.user_of(offer.public_key).await?.is_some() { Auth::Accept } else { refuse() })
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        match self.user_of(key.public_key).await? {
            Some(user) => {
                tracing::info!(peer = %self.peer, user = user.id, "SSH key accepted");
                if self.counted_failure
                    && let Err(error) =
                        self.service.authenticator().forgive_address_failure(self.peer.ip()).await
                {
                    tracing::error!(peer = %self.peer, %error, "cannot uncount an SSH sign-in");
                }
                self.user = Some(user);
                self.authenticated.store(true, Ordering::Release);
                Ok(Auth::Accept)
            }
            None => Ok(refuse()),
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.opened >= self.max_channels {
            reply.reject(russh::ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        self.opened += 1;
        self.channels.insert(channel.id(), Slot { channel, protocol: None });
        reply.accept().await;
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        _host: &str,
        _port: u32,
        _originator: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.reject(russh::ChannelOpenFailure::AdministrativelyProhibited).await;
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        _address: &str,
        _port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(false)
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(false)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _protocol: &str,
        _cookie: &str,
        _screen: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _columns: u32,
        _rows: u32,
        _width: u32,
        _height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        tracing::info!(peer = %self.peer, subsystem = name, "SSH subsystem refused");
        session.channel_failure(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.channels.get_mut(&channel) {
            Some(slot) if name == "GIT_PROTOCOL" => {
                slot.protocol = Some(value.to_owned());
                session.channel_success(channel)
            }
            _ => session.channel_failure(channel),
        }
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let name = self.user.as_ref().map_or("there", |u| u.username.as_str());
        let greeting = format!(
            "Hi {name}! You've successfully authenticated, but shell access is not provided.\r\n"
        );
        self.channels.remove(&channel);
        session.channel_success(channel)?;
        session.extended_data(channel, 1, Bytes::from(greeting))?;
        session.exit_status_request(channel, 1)?;
        session.eof(channel)?;
        session.close(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(slot), Some(user)) = (self.channels.remove(&channel), self.user.clone()) else {
            return session.channel_failure(channel);
        };
        let command = match GitCommand::parse(data) {
            Ok(command) => command,
            Err(message) => {
                tracing::info!(peer = %self.peer, user = user.id, "SSH command refused");
                session.channel_success(channel)?;
                session.extended_data(channel, 1, Bytes::from(format!("fatal: {message}\n")))?;
                session.exit_status_request(channel, 128)?;
                session.eof(channel)?;
                return session.close(channel);
            }
        };
        session.channel_success(channel)?;
        tokio::spawn(run(self.service.clone(), user, slot, command));
        Ok(())
    }
}

/// Runs `command` for `user` on the channel, streaming both ways, then reports its exit.
async fn run(service: GitService, user: GitUser, slot: Slot, command: GitCommand) {
    let Slot { channel, protocol } = slot;
    let (mut reader, writer) = channel.split();
    let mut errors = writer.make_writer_ext(Some(1));
    let needed = if command.program == Program::ReceivePack { Access::Write } else { Access::Read };
    let identity = Identity::User { user, ceiling: None };
    let authorized = match service.authorize(&command.owner, &command.repo, &identity, needed).await
    {
        Ok(authorized) => authorized,
        Err(denial) => {
            let message = match denial {
                // A key always names a user; no credentials could do better.
                Denial::NeedsCredentials | Denial::NotFound => {
                    "repository not found, or you have no access to it".to_owned()
                }
                Denial::Forbidden(why) | Denial::Invalid(why) => why.to_owned(),
                Denial::Internal(cause) => {
                    tracing::error!(error = %cause, "SSH git request failed");
                    "internal error".to_owned()
                }
            };
            let _ = errors.write_all(format!("fatal: {message}\n").as_bytes()).await;
            let _ = errors.flush().await;
            let _ = writer.exit_status(128).await;
            let _ = writer.eof().await;
            let _ = writer.close().await;
            return;
        }
    };
    let protocol = protocol.as_deref();
    let redactor = service.redactor(&authorized);
    let (mut git, push) = match command.program {
        Program::UploadPack => {
            let mut git = service.upload_pack(&authorized.path, protocol);
            git.arg(".");
            (git, None)
        }
        Program::UploadArchive => {
            let mut git = service.git(&authorized.path, None);
            git.args(["upload-archive", "."]);
            (git, None)
        }
        Program::ReceivePack => {
            let (mut git, push) = service.receive_pack(authorized, protocol);
            git.arg(".");
            (git, Some(push))
        }
    };
    let mut child = match git.spawn() {
        Ok(child) => child,
        Err(error) => {
            tracing::error!(%error, "cannot start git");
            let _ = errors.write_all(b"fatal: internal error\n").await;
            let _ = writer.exit_status(128).await;
            let _ = writer.close().await;
            if let Some(push) = push {
                push.discard().await;
            }
            return;
        }
    };
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return;
    };

    // The channel is drained into a queue bounded in bytes rather than piped straight into
    // git: the session loop that delivers client data also sends git's output, so it must never
    // wait on git.
    let budget = Arc::new(Semaphore::new(STDIN_QUEUE_BYTES));
    let (queue, mut queued) =
        tokio::sync::mpsc::unbounded_channel::<(Bytes, OwnedSemaphorePermit)>();
    let pump = tokio::spawn(async move {
        while let Some(message) = reader.wait().await {
            match message {
                ChannelMsg::Data { data } => {
                    let want = u32::try_from(data.len().min(STDIN_QUEUE_BYTES)).unwrap_or(u32::MAX);
                    let Ok(permit) = Arc::clone(&budget).acquire_many_owned(want).await else {
                        break;
                    };
                    if queue.send((data, permit)).is_err() {
                        break;
                    }
                }
                ChannelMsg::Eof | ChannelMsg::Close => break,
                _ => {}
            }
        }
    });
    let feed = tokio::spawn(async move {
        let mut decided = push.is_none();
        let mut refusal = None;
        let mut head = Vec::new();
        let mut push = push;
        while let Some((data, _permit)) = queued.recv().await {
            if !decided {
                // A push's commands come first: the policy is decided before git reads them.
                head.extend_from_slice(&data);
                match pktline::parse_commands(&head) {
                    Ok(Some((updates, _))) => {
                        if let Some(push) = &push
                            && let Err(denial) = push.decide(&updates).await
                        {
                            tracing::error!(?denial, "cannot decide the push policy");
                            break;
                        }
                        decided = true;
                        if stdin.write_all(&head).await.is_err() {
                            break;
                        }
                        head = Vec::new();
                    }
                    Ok(None) if head.len() > pktline::MAX_COMMANDS_BYTES => {
                        refusal = Some("too many ref updates in one push".to_owned());
                        break;
                    }
                    Ok(None) => {}
                    Err(error) => {
                        // Nothing of it reaches git: what the policy did not read, git must
                        // not apply.
                        refusal = Some(error.to_string());
                        break;
                    }
                }
                continue;
            }
            if stdin.write_all(&data).await.is_err() {
                break;
            }
        }
        drop(stdin);
        (push.take(), decided, refusal)
    });
    // Read git's output in large pieces: each write becomes channel messages and packets, so
    // 8 KiB copies (tokio's default) cost a clone noticeably more than the bytes do.
    let mut output = writer.make_writer();
    let mut stdout = tokio::io::BufReader::with_capacity(OUTPUT_CHUNK_BYTES, &mut stdout);
    // Fetches' output is mostly pack data and goes through as it is; what pushes and archives
    // say is small, and may name server paths.
    let copy_output = async {
        if command.program == Program::UploadPack {
            tokio::io::copy_buf(&mut stdout, &mut output).await.map(drop)
        } else {
            redact::copy_sideband(&mut stdout, &mut output, &redactor).await
        }
    };
    let _ = tokio::join!(copy_output, redact::copy_text(&mut stderr, &mut errors, &redactor));
    let _ = output.flush().await;
    let _ = errors.flush().await;
    let stderr_text = tokio::spawn(async { String::new() });
    let code = transport::supervise(child, stderr_text, service.options().timeout, "git over SSH")
        .await
        .unwrap_or(128);
    pump.abort();
    match feed.await {
        Ok((push, decided, refusal)) => {
            if let Some(refusal) = refusal {
                let _ = errors.write_all(format!("fatal: {refusal}\n").as_bytes()).await;
                let _ = errors.flush().await;
            }
            match push {
                Some(push) if decided => push.finish().await,
                Some(push) => push.discard().await,
                None => {}
            }
        }
        Err(error) => tracing::error!(%error, "the SSH input task failed"),
    }
    let _ = writer.eof().await;
    let _ = writer.exit_status(u32::try_from(code).unwrap_or(128)).await;
    let _ = writer.close().await;
}
