//! A TCP proxy that holds every connection still once enough bytes have passed one way, until
//! told to go on: a transfer caught in the middle, for as long as a test needs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Which way bytes are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the server (a push's pack).
    Upstream,
    /// From the server to the client (a clone's pack).
    Downstream,
}

struct Shared {
    direction: Direction,
    threshold: u64,
    passed: AtomicU64,
    /// `true` while held.
    held: watch::Sender<bool>,
}

/// Forwards connections from a loopback port to an upstream address; once `threshold` bytes
/// have gone `direction` (over all connections), holds every byte in both directions, keeping
/// the connections open, until [`PausingProxy::resume`].
pub struct PausingProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl PausingProxy {
    /// Starts a proxy to `upstream` that holds after `threshold` bytes went `direction`.
    ///
    /// # Errors
    ///
    /// Fails when no loopback port can be bound.
    pub async fn start(
        upstream: SocketAddr,
        direction: Direction,
        threshold: u64,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("cannot bind the proxy")?;
        let addr = listener.local_addr()?;
        let (held, _) = watch::channel(false);
        let shared = Arc::new(Shared { direction, threshold, passed: AtomicU64::new(0), held });
        let task = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(upstream).await else { return };
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        tokio::join!(
                            pump(client_read, server_write, Direction::Upstream, &shared),
                            pump(server_read, client_write, Direction::Downstream, &shared),
                        );
                    });
                }
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the threshold is reached and the connections are held.
    pub async fn held(&self) {
        let mut held = self.shared.held.subscribe();
        let _ = held.wait_for(|held| *held).await;
    }

    /// Lets everything through again, for good.
    pub fn resume(&self) {
        // Past the threshold for good, so it is never crossed again.
        self.shared.passed.store(u64::MAX / 2, Ordering::SeqCst);
        self.shared.held.send_replace(false);
    }
}

impl Drop for PausingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    direction: Direction,
    shared: &Shared,
) {
    let mut buffer = vec![0_u8; 16 * 1024];
    let mut held = shared.held.subscribe();
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let _ = held.wait_for(|held| !*held).await;
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
        if direction == shared.direction {
            let before = shared.passed.fetch_add(read as u64, Ordering::SeqCst);
            if before < shared.threshold && before + read as u64 >= shared.threshold {
                shared.held.send_replace(true);
            }
        }
    }
    let _ = to.shutdown().await;
}
