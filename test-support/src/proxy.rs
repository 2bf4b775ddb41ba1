//! A TCP proxy that can cut the connections through it, as a network partition would.

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Forwarding,
    Severed,
}

/// Forwards connections from a loopback port to `upstream`.
///
/// [`TcpProxy::sever`] stops every connection in both directions without closing it: whatever
/// a client writes afterwards never arrives, even if it dies meanwhile. [`TcpProxy::heal`] closes
/// the severed connections (forwarding nothing they held) and forwards new ones again.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Starts a proxy to `upstream`.
    ///
    /// # Errors
    ///
    /// Fails when no loopback port can be bound.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("cannot bind the proxy")?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(Mode::Forwarding);
        let task = tokio::spawn({
            let mode = mode.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(forward(client, upstream, mode.subscribe()));
                }
            }
        });
        Ok(Self { addr, mode, task })
    }

    /// Returns the address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops all traffic through the proxy, keeping connections open.
    pub fn sever(&self) {
        self.mode.send_replace(Mode::Severed);
    }

    /// Closes the severed connections and forwards new ones.
    pub fn heal(&self) {
        self.mode.send_replace(Mode::Forwarding);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(mut client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    if *mode.borrow_and_update() == Mode::Forwarding {
        let Ok(mut server) = TcpStream::connect(upstream).await else { return };
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
            _ = mode.wait_for(|m| *m == Mode::Severed) => {}
        }
        // Held open, unread, until healed; then both ends are dropped.
        let _ = mode.wait_for(|m| *m == Mode::Forwarding).await;
    } else {
        let _ = mode.wait_for(|m| *m == Mode::Forwarding).await;
    }
}
