//! GraphQL over WebSocket: `graphql-transport-ws` (what the `graphql-ws` library speaks)
//! and the legacy `graphql-ws` (subscriptions-transport-ws). Served here rather than by
//! async-graphql's own handler so that a socket obeys the rules an HTTP request does:
//! every operation passes the [`Gate`](crate::graphql::Gate) (size, cost, budget,
//! deadline), runs only while its token is live, and the connection itself is bounded.
//!
//! | close | when |
//! |---|---|
//! | 4400 | a message that is not JSON of the protocol, or an operation id over 128 bytes |
//! | 4401 | `subscribe` before the connection was acknowledged |
//! | 4403 | `connection_init` without a valid token, or the token was revoked |
//! | 4408 | no `connection_init` within the init timeout |
//! | 4409 | `subscribe` with an id already running |
//! | 4429 | a second `connection_init`, or the token already holds its most sockets |
//! | 1001 | the server stops, or the client answered no ping for three intervals |
//! | 1008 | the client left what it was sent unread for 10 s |
//! | 1011 | the token could not be checked (the database failed) |
//!
//! More operations at once than a socket may run get an `error` for that operation
//! (`RATE_LIMITED`), as do operations the gate refuses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use async_graphql::parser::types::OperationType;
use async_graphql::{Request, Response as GqlResponse, ServerError};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, AbortHandle, BoxStream, SelectAll, SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{AppState, bearer_token};
use crate::error::AppError;
use crate::graphql::{self, Loaders};
use crate::service::{Caller, Session};

/// Largest message a client may send (a subscribe carries one query).
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Longest operation id accepted.
const MAX_ID_BYTES: usize = 128;
/// How long a client may leave what it was sent unread before it is dropped. While a
/// send waits, the connection reads nothing more from the client.
const STALL: std::time::Duration = std::time::Duration::from_secs(10);

/// The two protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    /// `graphql-transport-ws`.
    TransportWs,
    /// The legacy `graphql-ws`.
    Legacy,
}

impl Protocol {
    fn from_header(headers: &HeaderMap) -> Option<Self> {
        let list = headers.get(header::SEC_WEBSOCKET_PROTOCOL)?.to_str().ok()?;
        list.split(',').find_map(|p| match p.trim() {
            "graphql-transport-ws" => Some(Self::TransportWs),
            "graphql-ws" => Some(Self::Legacy),
            _ => None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::TransportWs => "graphql-transport-ws",
            Self::Legacy => "graphql-ws",
        }
    }

    /// The message type of a result.
    fn next(self) -> &'static str {
        match self {
            Self::TransportWs => "next",
            Self::Legacy => "data",
        }
    }
}

/// Why the server closes a connection.
type Closing = (u16, String);

fn closing(code: u16, reason: impl Into<String>) -> Option<Closing> {
    Some((code, reason.into()))
}

/// A client's message.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    ConnectionInit {
        #[serde(default)]
        payload: Option<Value>,
    },
    #[serde(alias = "start")]
    Subscribe {
        id: String,
        payload: Box<Request>,
    },
    #[serde(alias = "stop")]
    Complete {
        id: String,
    },
    Ping {
        #[serde(default)]
        payload: Option<Value>,
    },
    Pong {
        #[serde(default)]
        #[allow(dead_code)]
        payload: Option<Value>,
    },
    ConnectionTerminate,
}

/// Accepts the upgrade if the client speaks one of the two protocols.
pub fn upgrade(
    app: AppState,
    upgrade: WebSocketUpgrade,
    headers: &HeaderMap,
    peer: IpAddr,
) -> Response {
    if !app.origins.allow_socket(headers) {
        return (
            StatusCode::FORBIDDEN,
            "Pages of this origin may not open a WebSocket here (see --cors-origins).",
        )
            .into_response();
    }
    let Some(protocol) = Protocol::from_header(headers) else {
        return (
            StatusCode::BAD_REQUEST,
            "Subscriptions need the graphql-transport-ws (or graphql-ws) WebSocket protocol.",
        )
            .into_response();
    };
    // Small buffers (messages here are small) keep idle subscriptions cheap: tungstenite's
    // defaults reserve 128 KiB each way per connection.
    upgrade
        .protocols([protocol.name()])
        .read_buffer_size(1024)
        // Answers are queued while more are ready and written together (see
        // `deliver_ready`); anything else is flushed at once.
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            let _open = app.service.metrics().socket_open();
            serve(app, socket, protocol, peer).await
        })
}

mod connection;

use connection::serve;
