//! GraphQL subscriptions over WebSocket (`graphql-transport-ws`, and the legacy
//! `graphql-ws`), authenticated by the `connection_init` payload
//! `{"authorization": "Bearer <token>"}`. A refused token closes the connection with
//! 4403 and the reason, as graphql-transport-ws prescribes.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_graphql::Data;
use async_graphql::http::{WebSocket as GqlWebSocket, WebSocketProtocols, WsMessage};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt, future};

use super::{AppState, bearer_token};
use crate::error::AppError;
use crate::graphql::Loaders;

/// Largest message a client may send (a subscribe carries one query).
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// graphql-transport-ws's close code for a refused `connection_init`.
const FORBIDDEN: u16 = 4403;

/// Accepts the upgrade if the client speaks one of the two protocols.
pub fn upgrade(app: AppState, upgrade: WebSocketUpgrade, headers: &HeaderMap) -> Response {
    let protocol = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|list| {
            list.split(',')
                .find_map(|p| WebSocketProtocols::from_str(p.trim()).ok())
        });
    let Some(protocol) = protocol else {
        return (
            StatusCode::BAD_REQUEST,
            "Subscriptions need the graphql-transport-ws (or graphql-ws) WebSocket protocol.",
        )
            .into_response();
    };
    // Small buffers (messages here are small) keep idle subscriptions cheap: tungstenite's
    // defaults reserve 128 KiB each way per connection.
    upgrade
        .protocols(["graphql-transport-ws", "graphql-ws"])
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve(app, socket, protocol))
}

async fn serve(app: AppState, socket: WebSocket, protocol: WebSocketProtocols) {
    let (mut sink, stream) = socket.split();
    let input = stream
        .take_while(|m| future::ready(m.is_ok()))
        .filter_map(|m| {
            future::ready(match m {
                Ok(m @ (Message::Text(_) | Message::Binary(_))) => Some(m.into_data()),
                _ => None,
            })
        });
    let refused = Arc::new(AtomicBool::new(false));
    let service = app.service.clone();
    let flag = Arc::clone(&refused);
    let on_init = move |payload: serde_json::Value| {
        let (service, flag) = (service.clone(), Arc::clone(&flag));
        async move {
            let token = payload
                .get("authorization")
                .and_then(|v| v.as_str())
                .and_then(bearer_token);
            let caller = match token {
                Some(token) => service.authenticate(token).await,
                None => Err(AppError::unauthenticated()),
            };
            match caller {
                Ok(caller) => {
                    let mut data = Data::default();
                    data.insert(Loaders::fresh(service.clone(), caller.clone()));
                    data.insert(caller);
                    Ok(data)
                }
                Err(err) => {
                    flag.store(true, Ordering::Release);
                    Err(async_graphql::Error::new(err.public_message()))
                }
            }
        }
    };
    let messages =
        GqlWebSocket::new(app.schema.clone(), input, protocol).on_connection_init(on_init);
    futures_util::pin_mut!(messages);
    let mut closed = false;
    while let Some(message) = messages.next().await {
        let out = match message {
            WsMessage::Text(text) => Message::Text(text.into()),
            WsMessage::Close(code, reason) => {
                closed = true;
                let refusal = code == 1002 && refused.load(Ordering::Acquire);
                Message::Close(Some(CloseFrame {
                    code: if refusal { FORBIDDEN } else { code },
                    reason: reason.into(),
                }))
            }
        };
        if sink.send(out).await.is_err() {
            return;
        }
    }
    // The legacy protocol reports a refusal as a message only: close it the same way.
    if !closed && refused.load(Ordering::Acquire) {
        let frame = CloseFrame {
            code: FORBIDDEN,
            reason: "Forbidden: a valid API token is required".into(),
        };
        let _ = sink.send(Message::Close(Some(frame))).await;
    }
}
