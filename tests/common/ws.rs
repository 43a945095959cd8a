//! A graphql-transport-ws client, as the dashboard and the `graphql-ws` library speak it.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// What the server sent.
#[derive(Debug)]
pub enum Frame {
    /// A result of subscription `id`.
    Next(String, Value),
    Complete(String),
    Error(String, Value),
    /// The server closed the connection.
    Closed(u16, String),
}

pub struct Subscriber {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Subscriber {
    /// Opens a `graphql-transport-ws` socket to `url` (the server's `http://.../graphql`)
    /// and sends nothing yet.
    pub async fn open(url: &str) -> Self {
        Self::try_open(url).await.expect("the upgrade succeeds")
    }

    /// Like [`Subscriber::open`], from loopback address `local` (127.0.0.x), as a
    /// client of its own would: the server caps connections per address.
    pub async fn open_from(url: &str, local: std::net::IpAddr) -> Self {
        let request = upgrade_request(url, None);
        let host = request.uri().host().unwrap().to_owned();
        let port = request.uri().port_u16().unwrap();
        let tcp = super::target::tcp_from(&format!("{host}:{port}"), local).await;
        let (ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp))
            .await
            .expect("the upgrade succeeds");
        Self { ws }
    }

    /// Like [`Subscriber::open`]; `None` when the server cannot be reached.
    async fn try_open(url: &str) -> Option<Self> {
        let (ws, _) = tokio_tungstenite::connect_async(upgrade_request(url, None))
            .await
            .ok()?;
        Some(Self { ws })
    }

    /// The status a WebSocket upgrade to `url` gets when sent from a page of `origin`
    /// (`None`: no `Origin`, as a client that is not a browser): 101 when accepted.
    pub async fn upgrade_status(url: &str, origin: Option<&str>) -> u16 {
        match tokio_tungstenite::connect_async(upgrade_request(url, origin)).await {
            Ok(_) => 101,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                response.status().as_u16()
            }
            Err(other) => panic!("the upgrade neither succeeded nor was refused: {other}"),
        }
    }

    /// Like [`Subscriber::connect`], for a server that may be gone: `None` when it
    /// cannot be reached, refuses, or drops the connection before accepting.
    pub async fn try_connect(url: &str, token: &str) -> Option<Self> {
        let mut sub = Self::try_open(url).await?;
        let payload = json!({ "authorization": format!("Bearer {token}") });
        sub.send(json!({ "type": "connection_init", "payload": payload }))
            .await;
        loop {
            match sub.ws.next().await {
                Some(Ok(Message::Text(text))) if text.contains("connection_ack") => {
                    return Some(sub);
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    /// The socket itself, to write and read at once.
    pub fn into_socket(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.ws
    }

    /// Connects to `url` (the server's `http://.../graphql`) and sends `connection_init`
    /// with `token`; `Err((code, reason))` when the server closes instead of accepting.
    pub async fn connect(url: &str, token: Option<&str>) -> Result<Self, (u16, String)> {
        Self::init(Self::open(url).await, token).await
    }

    /// Like [`Subscriber::connect`], from loopback address `local`.
    pub async fn connect_from(
        url: &str,
        token: Option<&str>,
        local: std::net::IpAddr,
    ) -> Result<Self, (u16, String)> {
        Self::init(Self::open_from(url, local).await, token).await
    }

    /// Sends `connection_init` with `token` on `sub`, and waits for its answer.
    async fn init(mut sub: Self, token: Option<&str>) -> Result<Self, (u16, String)> {
        let payload = match token {
            Some(t) => json!({ "authorization": format!("Bearer {t}") }),
            None => json!({}),
        };
        sub.send(json!({ "type": "connection_init", "payload": payload }))
            .await;
        loop {
            match sub.ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let msg: Value = serde_json::from_str(&text).unwrap();
                    if msg["type"] == "connection_ack" {
                        return Ok(sub);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let frame = frame.expect("a close frame");
                    return Err((frame.code.into(), frame.reason.to_string()));
                }
                Some(Ok(_)) => {}
                other => panic!("the connection ended without a close frame: {other:?}"),
            }
        }
    }

    /// Sends one JSON message.
    pub async fn send(&mut self, message: Value) {
        self.send_text(message.to_string()).await;
    }

    /// Sends one text frame as it is (the server may already have closed: ignored).
    pub async fn send_text(&mut self, text: String) {
        let _ = self.ws.send(Message::Text(text.into())).await;
    }

    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } }))
            .await;
    }

    /// The next frame (answering pings on the way).
    pub async fn next(&mut self) -> Frame {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let msg: Value = serde_json::from_str(&text).unwrap();
                    let id = msg["id"].as_str().unwrap_or_default().to_owned();
                    match msg["type"].as_str() {
                        Some("next") => return Frame::Next(id, msg["payload"].clone()),
                        Some("complete") => return Frame::Complete(id),
                        Some("error") => return Frame::Error(id, msg["payload"].clone()),
                        Some("ping") => self.send(json!({ "type": "pong" })).await,
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |f| {
                        (f.code.into(), f.reason.to_string())
                    });
                    return Frame::Closed(code, reason);
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return Frame::Closed(1006, "connection lost".into()),
            }
        }
    }

    /// The next event of subscription `id` (its `payload.data.<field>`); fails on
    /// anything else.
    pub async fn event(&mut self, field: &str) -> Value {
        match self.next().await {
            Frame::Next(_, payload) => {
                assert!(payload.get("errors").is_none(), "{payload:#}");
                payload["data"][field].clone()
            }
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

/// A `graphql-transport-ws` upgrade request to `url` (the server's `http://.../graphql`).
fn upgrade_request(
    url: &str,
    origin: Option<&str>,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut request = url
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    if let Some(origin) = origin {
        headers.insert("Origin", origin.parse().unwrap());
    }
    request
}
