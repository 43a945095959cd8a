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
//!
//! More operations at once than a socket may run get an `error` for that operation
//! (`RATE_LIMITED`), as do operations the gate refuses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_graphql::parser::types::OperationType;
use async_graphql::{Request, Response as GqlResponse, ServerError};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

use super::{AppState, bearer_token};
use crate::error::AppError;
use crate::graphql::{self, Loaders};
use crate::service::{Caller, Session};

/// Largest message a client may send (a subscribe carries one query).
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Longest operation id accepted.
const MAX_ID_BYTES: usize = 128;
/// Control messages (acks, pongs, refusals) waiting to be written.
const CONTROL_QUEUE: usize = 64;
/// How long a client may leave what it was sent unread before it is dropped.
const STALL: std::time::Duration = std::time::Duration::from_secs(10);
/// Results waiting to be written; past this, operations wait for the client to read.
const DATA_QUEUE: usize = 64;

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
pub fn upgrade(app: AppState, upgrade: WebSocketUpgrade, headers: &HeaderMap) -> Response {
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
        .write_buffer_size(0)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve(app, socket, protocol))
}

/// Where messages to the client go: the writer takes control messages first.
#[derive(Clone)]
struct Outbox {
    control: mpsc::Sender<Message>,
    data: mpsc::Sender<Message>,
    protocol: Protocol,
}

impl Outbox {
    /// Queues a control message; false when the client has not read what it was sent
    /// for [`STALL`] (reading its next message waits meanwhile), or is gone.
    async fn control(&self, message: Value) -> bool {
        let send = self.control.send(Message::Text(message.to_string().into()));
        matches!(tokio::time::timeout(STALL, send).await, Ok(Ok(())))
    }

    /// Queues a result, waiting while the client catches up; false when it is gone.
    async fn data(&self, message: Value) -> bool {
        let text = Message::Text(message.to_string().into());
        self.data.send(text).await.is_ok()
    }
}

/// The operations running on one connection, by id.
type Running = Arc<Mutex<HashMap<String, AbortHandle>>>;

/// One connection's state.
struct Connection {
    app: AppState,
    out: Outbox,
    /// Set once `connection_init` has been accepted.
    caller: Option<Caller>,
    /// The connection's place in the token's sessions (revocation, the per-token cap).
    session: Option<Session>,
    /// Whether `connection_init` was seen (a second one is refused).
    init_seen: bool,
    running: Running,
    /// The operations' tasks; dropping it stops them all.
    tasks: JoinSet<()>,
}

async fn serve(app: AppState, socket: WebSocket, protocol: Protocol) {
    let (sink, mut stream) = socket.split();
    let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
    let (data_tx, data_rx) = mpsc::channel(DATA_QUEUE);
    let writer = tokio::spawn(write(sink, control_rx, data_rx));
    let out = Outbox {
        control: control_tx,
        data: data_tx,
        protocol,
    };
    let mut conn = Connection {
        app,
        out: out.clone(),
        caller: None,
        session: None,
        init_seen: false,
        running: Running::default(),
        tasks: JoinSet::new(),
    };
    let closing = conn.run(&mut stream).await;
    // Stop every operation before saying goodbye.
    drop(conn);
    if let Some((code, reason)) = closing {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(close_reason(reason)),
        };
        let _ = out.control.try_send(Message::Close(Some(frame)));
    }
    drop(out);
    let grace = std::time::Duration::from_secs(1);
    let _ = tokio::time::timeout(grace, writer).await;
}

/// `reason` cut to the 123 bytes a close frame can carry (a longer one would make the
/// frame invalid, and the connection would end without a code).
fn close_reason(mut reason: String) -> String {
    const MAX: usize = 123;
    if reason.len() > MAX {
        let mut end = MAX;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

/// Writes queued messages, control ones first, until a close frame or the queues end.
async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    mut control: mpsc::Receiver<Message>,
    mut data: mpsc::Receiver<Message>,
) {
    loop {
        let message = tokio::select! {
            biased;
            Some(message) = control.recv() => message,
            Some(message) = data.recv() => message,
            else => return,
        };
        let last = matches!(message, Message::Close(_));
        if sink.send(message).await.is_err() || last {
            return;
        }
    }
}

impl Connection {
    /// Reads the client's messages until the connection ends; why the server closes it,
    /// if it does.
    async fn run(
        &mut self,
        stream: &mut futures_util::stream::SplitStream<WebSocket>,
    ) -> Option<Closing> {
        let limits = self.app.service.limits().clone();
        let init_deadline = tokio::time::sleep(limits.ws_init_timeout);
        let mut init_deadline = std::pin::pin!(init_deadline);
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + limits.ws_keepalive,
            limits.ws_keepalive,
        );
        let mut heard = Instant::now();
        let mut stop = self.app.stop.clone();
        loop {
            tokio::select! {
                _ = &mut init_deadline, if self.caller.is_none() => {
                    return closing(4408, "Connection initialisation timeout");
                }
                message = stream.next() => {
                    let text = match message {
                        Some(Ok(Message::Text(text))) => text.to_string(),
                        Some(Ok(Message::Binary(bytes))) => match String::from_utf8(bytes.to_vec()) {
                            Ok(text) => text,
                            Err(_) => return closing(4400, "Messages must be UTF-8 JSON"),
                        },
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                        Some(Ok(_)) => {
                            heard = Instant::now(); // a ping or pong frame
                            continue;
                        }
                    };
                    heard = Instant::now();
                    if let Some(close) = self.handle(&text).await {
                        return Some(close);
                    }
                }
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
                _ = revoked(&mut self.session) => {
                    return closing(4403, "Forbidden: the token has been revoked");
                }
                _ = ping.tick() => {
                    if heard.elapsed() > 3 * limits.ws_keepalive {
                        return closing(1001, "No answer to pings");
                    }
                    let _ = self.out.control.try_send(Message::Ping(Default::default()));
                    if self.out.protocol == Protocol::Legacy && self.caller.is_some() {
                        let _ = self.out.control.try_send(Message::Text(r#"{"type":"ka"}"#.into()));
                    }
                }
                _ = stop.changed() => return closing(1001, "The server is stopping"),
            }
        }
    }

    /// Acts on one client message.
    async fn handle(&mut self, text: &str) -> Option<Closing> {
        let message: ClientMessage = match serde_json::from_str(text) {
            Ok(message) => message,
            Err(err) => return closing(4400, format!("Invalid message: {err}")),
        };
        let sent = match message {
            ClientMessage::ConnectionInit { payload } => return self.init(payload).await,
            ClientMessage::Subscribe { id, payload } => return self.subscribe(id, *payload).await,
            ClientMessage::Complete { id } => {
                if self.caller.is_none() {
                    return closing(4401, "Unauthorized");
                }
                let stopped = self
                    .running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                if let Some(handle) = stopped {
                    handle.abort();
                }
                // The legacy protocol confirms a stop.
                self.out.protocol == Protocol::TransportWs
                    || self
                        .out
                        .control(json!({ "type": "complete", "id": id }))
                        .await
            }
            ClientMessage::Ping { payload } => match self.out.protocol {
                Protocol::TransportWs => {
                    let mut pong = json!({ "type": "pong" });
                    if let Some(payload) = payload {
                        pong["payload"] = payload;
                    }
                    self.out.control(pong).await
                }
                Protocol::Legacy => true,
            },
            ClientMessage::Pong { .. } => true,
            ClientMessage::ConnectionTerminate => return closing(1000, ""),
        };
        // A client that sends without reading what it is sent is dropped.
        if sent {
            None
        } else {
            closing(1008, "Messages are not being read")
        }
    }

    /// `connection_init`: authenticates the token of `{"authorization": "Bearer ..."}`.
    async fn init(&mut self, payload: Option<Value>) -> Option<Closing> {
        if self.init_seen {
            return closing(4429, "Too many initialisation requests");
        }
        self.init_seen = true;
        let token = payload
            .as_ref()
            .and_then(|p| p.get("authorization"))
            .and_then(Value::as_str)
            .and_then(bearer_token);
        let service = &self.app.service;
        let caller = match token {
            Some(token) => service.authenticate(token).await,
            None => Err(AppError::unauthenticated()),
        };
        let caller = match caller {
            Ok(caller) => caller,
            Err(AppError::Internal(cause)) => {
                tracing::error!(%cause, "cannot authenticate a WebSocket");
                return closing(1011, "The server could not check the token");
            }
            Err(_) => return closing(4403, "Forbidden: a valid API token is required"),
        };
        let cap = (!caller.is_admin()).then_some(service.limits().sockets_per_token);
        match service.sessions().open(&caller, cap) {
            Ok(session) => self.session = Some(session),
            Err(err) => return closing(4429, err.public_message()),
        }
        self.caller = Some(caller);
        if self.out.control(json!({ "type": "connection_ack" })).await {
            None
        } else {
            closing(1008, "Messages are not being read")
        }
    }

    /// `subscribe`: runs one operation, if the connection, the token and the gate allow.
    async fn subscribe(&mut self, id: String, mut request: Request) -> Option<Closing> {
        let Some(caller) = self.caller.clone() else {
            return closing(4401, "Unauthorized");
        };
        if id.len() > MAX_ID_BYTES {
            return closing(
                4400,
                format!("Operation ids are at most {MAX_ID_BYTES} bytes"),
            );
        }
        let service = self.app.service.clone();
        let limit = service.limits().subscriptions_per_socket;
        let running = {
            let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if running.contains_key(&id) {
                return closing(4409, format!("Subscriber for {id} already exists"));
            }
            running.len()
        };
        if running >= limit {
            let err = AppError::RateLimited {
                message: format!(
                    "A connection runs at most {limit} operations at once; complete one first."
                ),
                retry_after_seconds: 1,
            };
            return self.refuse(&id, err).await;
        }
        // A socket authenticates once; each operation checks that its token still holds.
        match service.check_live(&caller).await {
            Ok(()) => {}
            Err(AppError::Unauthenticated(_)) => {
                return closing(4403, "Forbidden: the token has been revoked");
            }
            Err(err) => return self.refuse(&id, err).await,
        }
        let admitted = match self.app.gate.admit(&service, &caller, &mut request) {
            Ok(admitted) => admitted,
            Err(err) => return self.refuse(&id, err).await,
        };
        let loaders = if admitted.kind == Some(OperationType::Subscription) {
            // A subscription's events are read afresh each time.
            Loaders::fresh(service.clone(), caller.clone())
        } else {
            Loaders::new(service.clone(), caller.clone())
        };
        let request = request.data(caller).data(loaders);
        let answers = self.app.gate.run(&self.app.schema, request, admitted);
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        // Spawned while holding the lock: the task cannot take its id out before it is in.
        let handle = self.tasks.spawn(forward(
            answers,
            id.clone(),
            self.out.clone(),
            Arc::clone(&self.running),
        ));
        running.insert(id, handle);
        None
    }

    /// Refuses operation `id` with `err`.
    async fn refuse(&self, id: &str, err: AppError) -> Option<Closing> {
        let errors = vec![err.into_server_error()];
        let refusal = error_message(self.out.protocol, id, &errors);
        if self.out.control(refusal).await {
            None
        } else {
            closing(1008, "Messages are not being read")
        }
    }
}

/// Waits until the session's token is revoked (never, before there is a session).
async fn revoked(session: &mut Option<Session>) {
    match session {
        Some(session) => session.revoked().await,
        None => std::future::pending().await,
    }
}

/// Sends operation `id`'s results; ends it with `complete`, or with `error` when it
/// failed before producing any data.
async fn forward(
    mut answers: futures_util::stream::BoxStream<'static, GqlResponse>,
    id: String,
    out: Outbox,
    running: Running,
) {
    let mut first = true;
    while let Some(mut response) = answers.next().await {
        graphql::add_codes(&mut response.errors);
        let failed = first && response.data == async_graphql::Value::Null && response.is_err();
        first = false;
        if failed {
            running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            let _ = out
                .data(error_message(out.protocol, &id, &response.errors))
                .await;
            return;
        }
        let message = json!({ "type": out.protocol.next(), "id": id, "payload": response });
        if !out.data(message).await {
            return;
        }
    }
    // Out of the running set first: the client may reuse the id once it reads this.
    running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
    let _ = out.data(json!({ "type": "complete", "id": id })).await;
}

fn error_message(protocol: Protocol, id: &str, errors: &[ServerError]) -> Value {
    let payload = match protocol {
        Protocol::TransportWs => json!(errors),
        // subscriptions-transport-ws sends one error object.
        Protocol::Legacy => json!(errors.first()),
    };
    json!({ "type": "error", "id": id, "payload": payload })
}
