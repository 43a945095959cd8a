//! Accepting connections: HTTP/1.1 with two deadlines of a connection's own, upgrades to
//! WebSocket, and a graceful stop that lets requests in flight finish.
//!
//! A connection's deadlines depend on what it is doing:
//!
//! - from its opening, or from the first byte of a request, its headers must arrive
//!   within the header timeout (a client that trickles them would hold it for ever);
//! - between requests it may stay idle for the keep-alive time, which is longer than
//!   common clients keep pooled connections (reqwest and Go 90 s, Firefox 115 s), so
//!   that the client, not the server, ends an idle connection. A server that closes first
//!   races the client's next request on that connection, and a request written as the
//!   server closes is lost (hyper's `IncompleteMessage`). Responses say the keep-alive
//!   time (`Keep-Alive: timeout=N`), for the clients that honour it (Node's, curl's);
//! - while a request runs, its body must arrive within the header timeout, counted from
//!   its headers ([`DeadlineBody`]); the handlers' own deadlines apply to the rest.
//!
//! Connections are counted, in all and per client address; one past either cap is
//! answered 503 with a reason and closed before anything of it is read, so that one
//! client cannot take every socket the process may open. The count holds until the
//! socket closes, WebSockets included (the count travels with the socket into the
//! upgrade).
//!
//! hyper has one timer for the first and second (its header timeout restarts when a
//! connection goes idle), and axum's own `serve` sets none; hence this loop, modelled on
//! it, which turns hyper's off and watches each connection itself.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::header::CONNECTION;
use axum::http::{HeaderName, HeaderValue, Request};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;

use super::body::{DeadlineBody, Unread};
use crate::config::Limits;

/// The header that tells clients how long an idle connection stays open.
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// How long a stop waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(5);

/// How long a refused connection is given to read its refusal before it is closed.
const LINGER: Duration = Duration::from_secs(1);
/// Most refused connections lingering at once; past it, refused ones close at once.
const LINGERING: usize = 256;

/// How long a connection may take over each thing it does, and how many may be open.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// To send a request's headers, from the connection's opening or the request's
    /// first byte; and then its body, from its headers.
    pub header: Duration,
    /// To stay idle between requests.
    pub keep_alive: Duration,
    /// Connections open at once, in all.
    pub max_connections: usize,
    /// Connections open at once from one address.
    pub per_peer: usize,
}

impl Deadlines {
    /// The deadlines and caps `limits` set.
    pub fn of(limits: &Limits) -> Self {
        Self {
            header: limits.header_timeout,
            keep_alive: limits.keep_alive,
            max_connections: limits.max_connections,
            per_peer: limits.connections_per_peer,
        }
    }
}

/// Serves `app` on `listener` until `stop` turns true. Requests carry their client's
/// address (`ConnectInfo<SocketAddr>`).
/// One function: each connection's service and its watch share its state (`activity`, `peer`),
/// and hyper's connection type, built on a closure, has no name to pass to a helper.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    deadlines: Deadlines,
    mut stop: watch::Receiver<bool>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // The connection's own watch keeps the header deadline (see the module's doc).
        .header_read_timeout(None)
        // Requests are small; headers past this are refused (431) rather than buffered.
        .max_buf_size(64 * 1024);
    let keep_alive = HeaderValue::try_from(format!("timeout={}", deadlines.keep_alive.as_secs()))
        .expect("a number is a header value");
    room_for(deadlines.max_connections);
    // Each connection holds a receiver; the sender learns when all of them are gone.
    let (open_tx, open_rx) = watch::channel(());
    let counts = Arc::new(Counts::new(deadlines));
    let lingering = Arc::new(Semaphore::new(LINGERING));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors, usually: wait for some to be freed.
                tracing::warn!(error = %err, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small writes (events) go out at once: with Nagle's algorithm, a second small
        // message waits for the client's delayed ACK, up to 40 ms.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::warn!(error = %err, "cannot set TCP_NODELAY");
        }
        let slot = match counts.take(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                refuse(tcp, refusal, &lingering);
                continue;
            }
        };
        let activity = Arc::new(Activity::new());
        let service = {
            let app = TowerToHyperService::new(app.clone());
            let (activity, keep_alive) = (activity.clone(), keep_alive.clone());
            let body_deadline = deadlines.header;
            hyper::service::service_fn(move |request: Request<Incoming>| {
                activity.set(Phase::Busy);
                let unread = Unread::default();
                let mut request = request
                    .map(|body| Body::new(DeadlineBody::new(body, body_deadline, unread.clone())));
                request.extensions_mut().insert(ConnectInfo(peer));
                let answer = hyper::service::Service::call(&app, request);
                let (activity, keep_alive) = (activity.clone(), keep_alive.clone());
                async move {
                    let Ok(mut response) = answer.await;
                    let headers = response.headers_mut();
                    if unread.get() {
                        // Answered before its body was read: hyper closes the
                        // connection after this response; the client must know.
                        headers.insert(CONNECTION, HeaderValue::from_static("close"));
                    } else {
                        headers.insert(KEEP_ALIVE, keep_alive);
                    }
                    // The connection is idle again once hyper has sent the whole body
                    // and dropped it.
                    let idle = IdleOnDrop(activity);
                    Ok::<_, Infallible>(response.map(move |body| {
                        Body::new(body.map_frame(move |frame| {
                            let _ = &idle;
                            frame
                        }))
                    }))
                }
            })
        };
        let io = Watched {
            stream: tcp,
            activity: Arc::clone(&activity),
            _slot: slot,
            _open: open_rx.clone(),
        };
        let conn = builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let mut stop = stop.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(error = %err, "connection ended");
                    }
                    return;
                }
                _ = stop.wait_for(|stop| *stop) => conn.as_mut().graceful_shutdown(),
                late = activity.overdue(deadlines) => match late {
                    // Closed at once, with a FIN the client's pool sees.
                    Overdue::Idle => conn.as_mut().graceful_shutdown(),
                    Overdue::Headers => {
                        tracing::debug!("a request's headers did not arrive in time");
                        return;
                    }
                },
            }
            // A request in flight finishes; one whose headers are still coming has until
            // its deadline.
            tokio::select! {
                _ = conn.as_mut() => {}
                Overdue::Headers = activity.overdue(deadlines) => {}
            }
            drop(open);
        });
    }
    drop(open_rx);
    let _ = tokio::time::timeout(DRAIN, open_tx.closed()).await;
}

/// Files the process keeps for its own use beside connections: the database's,
/// host shells', logs.
const SPARE_FILES: u64 = 512;

/// Raises the process's limit of open files to its hard limit (most systems start
/// processes at 1,024, fewer than `connections`), and warns when even that leaves no
/// room for them: the cap would then be met as failed accepts instead of clear refusals.
fn room_for(connections: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    let wanted = connections as u64 + SPARE_FILES;
    if limit.rlim_cur < wanted {
        tracing::warn!(
            open_files = limit.rlim_cur,
            wanted,
            "the open files limit is below --max-connections; lower it or raise the limit (LimitNOFILE)"
        );
    }
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    /// Its address has as many open as it may.
    Peer(usize),
    /// The server has as many open as it may.
    Total(usize),
}

/// The connections open, in all and by address, and the caps on them.
struct Counts {
    /// What is open now.
    open: Mutex<Open>,
    /// Most open in all.
    max_total: usize,
    /// Most open from one address.
    per_peer: usize,
}

/// The connections open now.
#[derive(Default)]
struct Open {
    /// In all.
    total: usize,
    /// By client address (an address with none is removed).
    by_peer: HashMap<IpAddr, usize>,
}

impl Counts {
    fn new(deadlines: Deadlines) -> Self {
        Self {
            open: Mutex::new(Open::default()),
            max_total: deadlines.max_connections.max(1),
            per_peer: deadlines.per_peer.max(1),
        }
    }

    /// Counts a new connection from `peer`, if both caps allow it.
    fn take(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Refusal> {
        let mut open = self.open.lock().unwrap();
        if open.total >= self.max_total {
            return Err(Refusal::Total(self.max_total));
        }
        if open.by_peer.get(&peer).is_some_and(|n| *n >= self.per_peer) {
            return Err(Refusal::Peer(self.per_peer));
        }
        *open.by_peer.entry(peer).or_insert(0) += 1;
        open.total += 1;
        Ok(Slot {
            counts: Arc::clone(self),
            peer,
        })
    }
}

/// One counted connection; dropped with its socket.
struct Slot {
    /// The counts it was taken from, and gives itself back to when dropped.
    counts: Arc<Counts>,
    /// The connection's client address (the TCP peer's), whose count it holds.
    peer: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap();
        open.total -= 1;
        if let Some(from_peer) = open.by_peer.get_mut(&self.peer) {
            *from_peer -= 1;
            if *from_peer == 0 {
                open.by_peer.remove(&self.peer);
            }
        }
    }
}

/// Answers a connection past a cap with 503 and its reason, then closes it. Nothing of
/// what it sent is parsed; what it sends meanwhile is read and dropped for a moment, so
/// that the close does not reset the answer away.
fn refuse(mut tcp: TcpStream, refusal: Refusal, lingering: &Arc<Semaphore>) {
    let message = match refusal {
        Refusal::Peer(cap) => format!(
            "Too many connections from your address (at most {cap} at once): close idle ones, or try again later."
        ),
        Refusal::Total(cap) => format!(
            "The server has as many connections as it takes ({cap}); try again in a moment."
        ),
    };
    tracing::debug!(%message, "connection refused");
    let body = serde_json::json!({
        "errors": [{
            "message": message,
            "extensions": { "code": "RATE_LIMITED", "retryAfterSeconds": 1 },
        }],
    })
    .to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let Ok(permit) = Arc::clone(lingering).try_acquire_owned() else {
        // Too many already lingering: the answer goes out if the socket takes it now.
        let _ = tcp.try_write(answer.as_bytes());
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(LINGER, async {
            tcp.write_all(answer.as_bytes()).await?;
            tcp.shutdown().await?;
            let mut sink = [0u8; 4096];
            while tcp.read(&mut sink).await? > 0 {}
            Ok::<_, io::Error>(())
        })
        .await;
    });
}

/// What a connection is doing, for its deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Open, no byte of a request yet.
    Opened,
    /// Receiving a request's headers.
    Headers,
    /// A request is being answered.
    Busy,
    /// Between requests.
    Idle,
}

/// Which deadline a connection missed.
enum Overdue {
    /// A request's headers or body came too slowly: closed at once.
    Headers,
    /// Idle past the keep-alive: closed gracefully.
    Idle,
}

/// A connection's phase and since when, shared by its socket, its service and its watch.
struct Activity {
    /// The phase, and when it began. Bytes that arrive while a request is answered are
    /// its body or, pipelined, the next request's: the socket cannot tell, so a next
    /// request begun then has the keep-alive time for its headers, as if idle (no more
    /// than any idle connection holds).
    now: Mutex<(Phase, Instant)>,
    /// Told of every change of phase.
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            now: Mutex::new((Phase::Opened, Instant::now())),
            changed: Notify::new(),
        }
    }

    fn set(&self, phase: Phase) {
        *self.now.lock().unwrap() = (phase, Instant::now());
        self.changed.notify_waiters();
    }

    /// Bytes arrived: a waiting connection starts receiving a request.
    fn arrived(&self) {
        let mut now = self.now.lock().unwrap();
        if matches!(now.0, Phase::Opened | Phase::Idle) {
            *now = (Phase::Headers, Instant::now());
            drop(now);
            self.changed.notify_waiters();
        }
    }

    /// Resolves when the connection misses a deadline of `deadlines`.
    async fn overdue(&self, deadlines: Deadlines) -> Overdue {
        loop {
            // Made before the phase is read: a change from then on wakes it.
            let changed = self.changed.notified();
            let (phase, since) = *self.now.lock().unwrap();
            let (limit, late) = match phase {
                Phase::Opened | Phase::Headers => (deadlines.header, Overdue::Headers),
                Phase::Idle => (deadlines.keep_alive, Overdue::Idle),
                Phase::Busy => {
                    changed.await;
                    continue;
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(since + limit) => {
                    if *self.now.lock().unwrap() == (phase, since) {
                        return late;
                    }
                }
                _ = changed => {}
            }
        }
    }
}

/// Marks its connection idle when dropped: held by a response's body.
struct IdleOnDrop(Arc<Activity>);

impl Drop for IdleOnDrop {
    fn drop(&mut self) {
        self.0.set(Phase::Idle);
    }
}

/// A client's socket, telling its connection's [`Activity`] when bytes arrive.
struct Watched {
    /// The socket.
    stream: TcpStream,
    /// Told when bytes arrive.
    activity: Arc<Activity>,
    /// Its place in the connection count, given back when the socket closes (after an
    /// upgrade too: the socket lives on in the WebSocket).
    _slot: Slot,
    /// Held while the socket is open, so that a stopping server waits (up to [`DRAIN`])
    /// for it: after an upgrade the HTTP connection has ended but the WebSocket still
    /// has its close frame (1001) to send, and a process that exited first would leave
    /// its clients a connection that just broke (1006).
    _open: watch::Receiver<()>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.arrived();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
