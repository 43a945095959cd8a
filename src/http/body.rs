//! Request bodies: the deadline every body has (set on each request by
//! [`super::listener`]), and reading one whole, bounded, with a refusal that says why.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use hyper::body::Incoming;

/// Largest request body accepted (the query plus its variables, or a REST body).
pub(crate) const MAX_BODY_BYTES: usize = 256 * 1024;

/// Why a body was not read.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// It is larger than [`MAX_BODY_BYTES`].
    TooLarge,
    /// It did not arrive within its deadline.
    Late(Duration),
    /// The connection failed while it was sent.
    Broken(String),
}

/// Reads `body` whole, up to [`MAX_BODY_BYTES`].
pub(crate) async fn read(body: Body) -> Result<Bytes, Refusal> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|err| {
            let err = err.into_inner();
            if let Some(late) = caused_by::<BodyTimedOut>(err.as_ref()) {
                Refusal::Late(late.0)
            } else if caused_by::<http_body_util::LengthLimitError>(err.as_ref()).is_some() {
                Refusal::TooLarge
            } else {
                Refusal::Broken(err.to_string())
            }
        })
}

/// A request body that must arrive by a deadline, counted from the request's headers:
/// a body trickled a byte at a time would otherwise hold its connection, and what the
/// handler buffered of it, for as long as the client likes. Past the deadline it ends
/// with [`BodyTimedOut`].
pub(crate) struct DeadlineBody {
    /// The body as it arrives.
    body: Incoming,
    /// When it must have arrived.
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// The time it had, for the refusal.
    limit: Duration,
    /// Set while some of the body has not been read, for the connection to see once
    /// the response is ready ([`Unread`]).
    unread: Unread,
}

impl DeadlineBody {
    pub(crate) fn new(body: Incoming, limit: Duration, unread: Unread) -> Self {
        unread.set(!hyper::body::Body::is_end_stream(&body));
        Self {
            body,
            deadline: Box::pin(tokio::time::sleep(limit)),
            limit,
            unread,
        }
    }
}

/// Whether a request's body is still partly unread. A request refused before its body
/// was read (unauthenticated, too large) leaves the rest of it on the connection; hyper
/// then closes the connection after the response, and a client that was not told would
/// send its next request on it and lose it. The listener answers such a request with
/// `Connection: close`, which every client honours.
#[derive(Clone, Default)]
pub(crate) struct Unread(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Unread {
    fn set(&self, unread: bool) {
        self.0.store(unread, std::sync::atomic::Ordering::Relaxed);
    }

    /// True while the body has not been read to its end.
    pub(crate) fn get(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A request body did not arrive within its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} s", .0.as_secs())]
pub(crate) struct BodyTimedOut(pub Duration);

/// The `T` behind `err`, if there is one in its chain of causes.
fn caused_by<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        cause = err.source();
    }
    None
}

impl hyper::body::Body for DeadlineBody {
    type Data = hyper::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if self.body.is_end_stream() {
            self.unread.set(false);
            return Poll::Ready(None);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut(self.limit)))));
        }
        let frame = Pin::new(&mut self.body)
            .poll_frame(cx)
            .map_err(axum::BoxError::from);
        if matches!(frame, Poll::Ready(None)) || self.body.is_end_stream() {
            self.unread.set(false);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
