//! A client of snaptree's public GraphQL API, for the command line: operations over
//! HTTP, and a task followed over a `graphql-transport-ws` subscription. It knows
//! nothing of the server's insides; what it sends, any client could.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Longest the client waits to connect, and for any answer to an operation.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Why a command could not do what it was asked.
#[derive(Debug)]
pub enum Failure {
    /// The server could not be reached, or answered something that is not GraphQL.
    Unreachable(String),
    /// The server refused, with its error code (`extensions.code`) and message.
    Refused { code: String, message: String },
}

impl Failure {
    /// What went wrong, without the code.
    pub fn message(&self) -> String {
        match self {
            Self::Unreachable(why) => format!("cannot reach the server: {why}"),
            Self::Refused { message, .. } => message.clone(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(why) => write!(f, "cannot reach the server: {why}"),
            Self::Refused { code, message } => write!(f, "{code}: {message}"),
        }
    }
}

/// One server, one token.
pub struct Client {
    /// Connects, and waits for each answer, at most `TIMEOUT`.
    http: reqwest::Client,
    /// `http(s)://host:port/graphql`.
    endpoint: String,
    /// The API token (from `SNAPTREE_TOKEN`), sent as a bearer token over HTTP and in the
    /// WebSocket's `connection_init`.
    token: String,
}

impl Client {
    /// A client of the server at `base` (`http://host:port/`, the path ignored).
    pub fn new(base: &str, token: String) -> Result<Self, Failure> {
        let url = reqwest::Url::parse(base)
            .map_err(|e| Failure::Unreachable(format!("{base:?} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Failure::Unreachable(format!(
                "{base:?} is not an http:// or https:// URL"
            )));
        }
        let endpoint = url
            .join("/graphql")
            .map_err(|e| Failure::Unreachable(e.to_string()))?;
        let http = reqwest::Client::builder()
            .connect_timeout(TIMEOUT)
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| Failure::Unreachable(e.to_string()))?;
        Ok(Self {
            http,
            endpoint: endpoint.into(),
            token,
        })
    }

    /// Runs one query or mutation; its `data`, or the first error.
    pub async fn run(&self, query: &str, variables: Value) -> Result<Value, Failure> {
        let response = self
            .http
            .post(&self.endpoint)
            .bearer_auth(&self.token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .map_err(|e| Failure::Unreachable(without_url(e)))?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|_| {
            Failure::Unreachable(format!("the server answered {status} without GraphQL"))
        })?;
        if let Some(error) = body["errors"].get(0) {
            return Err(Failure::Refused {
                code: error["extensions"]["code"]
                    .as_str()
                    .unwrap_or("UNKNOWN")
                    .to_owned(),
                message: error["message"].as_str().unwrap_or_default().to_owned(),
            });
        }
        match body.get("data") {
            Some(data) if !data.is_null() => Ok(data.clone()),
            _ => Err(Failure::Unreachable(format!(
                "the server answered {status} without data"
            ))),
        }
    }

    /// Follows task `task` until its final event, calling `on_event` with each event;
    /// returns the last.
    /// One function: the `graphql-transport-ws` exchange in its order on one socket (connect,
    /// init, ack, subscribe, events); much of it is the protocol's JSON messages.
    pub async fn follow(
        &self,
        task: &str,
        mut on_event: impl FnMut(&Value),
    ) -> Result<Value, Failure> {
        let unreachable = |e: &dyn std::fmt::Display| Failure::Unreachable(e.to_string());
        let mut url = reqwest::Url::parse(&self.endpoint).map_err(|e| unreachable(&e))?;
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme)
            .map_err(|()| unreachable(&"cannot make a WebSocket URL"))?;
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| unreachable(&e))?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "graphql-transport-ws".parse().expect("a valid header"),
        );
        let (mut socket, _) =
            tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(request))
                .await
                .map_err(|_| unreachable(&"no WebSocket after 30 s"))?
                .map_err(|e| unreachable(&e))?;
        let send = |message: Value| Message::Text(message.to_string().into());
        socket
            .send(send(json!({
                "type": "connection_init",
                "payload": { "authorization": format!("Bearer {}", self.token) },
            })))
            .await
            .map_err(|e| unreachable(&e))?;
        // The server answers the init with an ack, or closes (a bad token).
        loop {
            match next_message(&mut socket).await? {
                Some(message) if message["type"] == "connection_ack" => break,
                Some(_) => {}
                None => return Err(unreachable(&"the connection closed")),
            }
        }
        socket
            .send(send(json!({
                "id": "task",
                "type": "subscribe",
                "payload": {
                    "query": "subscription($t: ID!) { taskEvents(taskId: $t) { id state finished progress phase message } }",
                    "variables": { "t": task },
                },
            })))
            .await
            .map_err(|e| unreachable(&e))?;
        let mut last = Value::Null;
        loop {
            let Some(message) = next_message(&mut socket).await? else {
                return Err(unreachable(&"the connection closed"));
            };
            match message["type"].as_str() {
                Some("next") => {
                    if let Some(error) = message["payload"]["errors"].get(0) {
                        return Err(refused(error));
                    }
                    let event = &message["payload"]["data"]["taskEvents"];
                    on_event(event);
                    last = event.clone();
                    if event["finished"] == true {
                        let _ = socket.close(None).await;
                        return Ok(last);
                    }
                }
                Some("error") => {
                    return Err(message["payload"]
                        .get(0)
                        .map(refused)
                        .unwrap_or_else(|| unreachable(&"the subscription failed")));
                }
                Some("complete") => return Ok(last),
                _ => {}
            }
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next protocol message (pings answered on the way); `None` when the connection
/// ended, an error when the server closed it with a reason.
async fn next_message(socket: &mut Socket) -> Result<Option<Value>, Failure> {
    loop {
        // No deadline on a whole task: it takes as long as its host does. The server
        // pings every half minute; a connection silent for long is gone.
        let frame = tokio::time::timeout(TIMEOUT * 4, socket.next())
            .await
            .map_err(|_| Failure::Unreachable("the server went silent".into()))?;
        match frame {
            Some(Ok(Message::Text(text))) => {
                let message: Value = serde_json::from_str(&text)
                    .map_err(|e| Failure::Unreachable(format!("not the protocol: {e}")))?;
                if message["type"] == "ping" {
                    let pong = json!({ "type": "pong" }).to_string();
                    let _ = socket.send(Message::Text(pong.into())).await;
                    continue;
                }
                return Ok(Some(message));
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(match frame {
                    Some(frame) => closed(frame.code.into(), &frame.reason),
                    None => Failure::Unreachable("the server closed the connection".into()),
                });
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(Failure::Unreachable(e.to_string())),
            None => return Ok(None),
        }
    }
}

fn refused(error: &Value) -> Failure {
    Failure::Refused {
        code: error["extensions"]["code"]
            .as_str()
            .unwrap_or("UNKNOWN")
            .to_owned(),
        message: error["message"].as_str().unwrap_or_default().to_owned(),
    }
}

/// A WebSocket the server closed with `code`: a refusal when the code says one.
fn closed(code: u16, reason: &str) -> Failure {
    let code = match code {
        4403 => "UNAUTHENTICATED",
        4429 => "RATE_LIMITED",
        _ => {
            return Failure::Unreachable(format!(
                "the server closed the connection ({code} {reason})"
            ));
        }
    };
    Failure::Refused {
        code: code.into(),
        message: reason.to_owned(),
    }
}

/// reqwest's error without the URL it carries (the message is enough; a URL may hold a
/// password in its userinfo).
fn without_url(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
