//! A TCP proxy on loopback between one process and its database, that a test can pause
//! (no byte moves either way and the connections stay open, as in a network partition)
//! or cut (every connection closed and new ones closed at once, as when the database
//! goes away), and then let through again. It runs on a thread of its own, so that a test
//! that blocks (waiting for a process to exit, say) does not pause it as well.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Through,
    Paused,
    Cut,
}

/// A running proxy; it stops when dropped.
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
}

impl Proxy {
    /// A proxy to `upstream`, letting bytes through.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, watching) = watch::channel(Mode::Through);
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let listener = TcpListener::from_std(listener).unwrap();
                    serve(listener, upstream, watching).await
                })
        });
        Self { addr, mode }
    }

    /// A PostgreSQL URL like `url`, reaching its server through this proxy; and the
    /// server's address, for [`Proxy::start`].
    pub fn postgres_url(url: &str, port: u16) -> String {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (user, rest) = rest.split_once('@').unwrap();
        let (_, database) = rest.split_once('/').unwrap();
        format!("{scheme}://{user}@127.0.0.1:{port}/{database}")
    }

    /// The address of the server a PostgreSQL `url` names (port 5432 unless it says).
    pub fn postgres_addr(url: &str) -> SocketAddr {
        let (_, rest) = url.split_once("://").unwrap();
        let (_, rest) = rest.split_once('@').unwrap();
        let (host, _) = rest.split_once('/').unwrap();
        let host = if host.contains(':') {
            host.to_owned()
        } else {
            format!("{host}:5432")
        };
        host.parse().expect("a PostgreSQL server on an IP address")
    }

    /// No byte moves until [`Proxy::resume`].
    pub fn pause(&self) {
        self.mode.send_replace(Mode::Paused);
    }

    /// Every connection closes, and new ones close at once, until [`Proxy::resume`].
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Bytes move again.
    pub fn resume(&self) {
        self.mode.send_replace(Mode::Through);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.mode.send_replace(Mode::Cut);
    }
}

/// Accepts connections and pumps each to `upstream` as the mode says, until the proxy is
/// dropped.
async fn serve(listener: TcpListener, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    loop {
        let client = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(_) => continue,
            },
            changed = mode.changed() => match changed {
                Ok(()) => continue,
                Err(_) => return,
            },
        };
        if *mode.borrow() == Mode::Cut {
            continue;
        }
        let Ok(server) = TcpStream::connect(upstream).await else {
            continue;
        };
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        tokio::spawn(pump(client_read, server_write, mode.clone()));
        tokio::spawn(pump(server_read, client_write, mode.clone()));
    }
}

/// Copies `from` to `to` while the mode lets it; a cut or either end closing ends it.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut mode: watch::Receiver<Mode>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if !flowing(&mut mode).await {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // Looked at again above: a pause holds what is not read yet.
            _ = mode.changed() => continue,
        };
        // Bytes read just before a pause are held until it ends.
        if !flowing(&mut mode).await || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Waits out a pause; false on a cut.
async fn flowing(mode: &mut watch::Receiver<Mode>) -> bool {
    match mode.wait_for(|m| *m != Mode::Paused).await {
        Ok(m) => *m == Mode::Through,
        Err(_) => false,
    }
}
