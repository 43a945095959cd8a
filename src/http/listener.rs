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
//! - while a request runs, none here: the request's own deadlines apply.
//!
//! hyper has one timer for the first and second (its header timeout restarts when a
//! connection goes idle), and axum's own `serve` sets none; hence this loop, modelled on
//! it, which turns hyper's off and watches each connection itself.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Request};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::config::Limits;

/// The header that tells clients how long an idle connection stays open.
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// How long a stop waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(5);

/// How long a connection may take over each thing it does.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// To send a request's headers, from the connection's opening or the request's
    /// first byte.
    pub header: Duration,
    /// To stay idle between requests.
    pub keep_alive: Duration,
}

impl Deadlines {
    /// The deadlines `limits` set.
    pub fn of(limits: &Limits) -> Self {
        Self {
            header: limits.header_timeout,
            keep_alive: limits.keep_alive,
        }
    }
}

/// Serves `app` on `listener` until `stop` turns true.
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
    // Each connection holds a receiver; the sender learns when all of them are gone.
    let (open_tx, open_rx) = watch::channel(());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
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
        let activity = Arc::new(Activity::new());
        let service = {
            let app = TowerToHyperService::new(app.clone());
            let (activity, keep_alive) = (activity.clone(), keep_alive.clone());
            hyper::service::service_fn(move |request: Request<Incoming>| {
                activity.set(Phase::Busy);
                let answer = hyper::service::Service::call(&app, request);
                let (activity, keep_alive) = (activity.clone(), keep_alive.clone());
                async move {
                    let Ok(mut response) = answer.await;
                    response.headers_mut().insert(KEEP_ALIVE, keep_alive);
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
    Headers,
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
    stream: TcpStream,
    activity: Arc<Activity>,
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
