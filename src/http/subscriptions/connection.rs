//! One WebSocket connection: its messages, the operations it runs through the gate, their
//! answers, and the closes of the protocol.

use super::*;

/// An operation's next answer, or its end (`None`), tagged with its id and generation.
type Answer = (String, u64, Option<GqlResponse>);

/// An operation running on a connection.
struct Running {
    /// Tells apart two operations that used the same id one after the other.
    generation: u64,
    /// Stops it.
    abort: AbortHandle,
    /// Whether it has answered yet (a first answer of errors alone is an `error`).
    answered: bool,
}

/// One connection: its socket's writing half and what runs on it. One task serves it
/// all, polling the operations' answers as they come (`SelectAll` polls only those
/// that woke), so an idle subscription costs little more than its stream.
struct Connection {
    /// The server's state: the service, the schema and its gate, the stop signal.
    app: AppState,
    /// The protocol agreed in the upgrade; it shapes every message.
    protocol: Protocol,
    /// The client's address, for the budget of failed authentications.
    peer: IpAddr,
    /// Where messages to the client are written (each write bounded by `STALL`).
    sink: SplitSink<WebSocket, Message>,
    /// Set once `connection_init` has been accepted.
    caller: Option<Caller>,
    /// The connection's place in the token's sessions (revocation, the per-token cap).
    session: Option<Session>,
    /// Whether `connection_init` was seen (a second one is refused).
    init_seen: bool,
    /// The operations running, by id.
    running: HashMap<String, Running>,
    /// The next operation's generation.
    generation: u64,
    /// Their answers, as they come.
    answers: SelectAll<BoxStream<'static, Answer>>,
}

/// Serves one upgraded socket until it closes.
pub(super) async fn serve(app: AppState, socket: WebSocket, protocol: Protocol, peer: IpAddr) {
    let (sink, mut stream) = socket.split();
    let mut conn = Connection {
        peer,
        app,
        protocol,
        sink,
        caller: None,
        session: None,
        init_seen: false,
        running: HashMap::new(),
        generation: 0,
        answers: SelectAll::new(),
    };
    if let Some((code, reason)) = conn.run(&mut stream).await {
        // Stop every operation before saying goodbye.
        conn.answers = SelectAll::new();
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(close_reason(reason)),
        };
        let sent = tokio::time::timeout(STALL, conn.sink.send(Message::Close(Some(frame)))).await;
        if matches!(sent, Ok(Ok(()))) {
            // The closing handshake: read (and drop) what the client still sends until
            // its own close frame. A socket closed with bytes unread sends a reset, not a
            // FIN, and a reset can make the client's system throw away what it has not
            // read yet, the close frame among it: the client would see a connection
            // that broke (1006) instead of the code sent.
            let _ = tokio::time::timeout(CLOSE_WAIT, async {
                while let Some(Ok(message)) = stream.next().await {
                    if matches!(message, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
    }
}

/// How long a server that has sent its close frame waits for the client's.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

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

impl Connection {
    /// Reads the client's messages and sends the operations' answers until the
    /// connection ends; why the server closes it, if it does.
    async fn run(&mut self, stream: &mut SplitStream<WebSocket>) -> Option<Closing> {
        let limits = self.app.service.limits().clone();
        // Boxed and dropped once the connection is acknowledged: idle connections are
        // many, and this is their one timer besides the ping.
        let mut init_deadline = Some(Box::pin(tokio::time::sleep(limits.ws_init_timeout)));
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + limits.ws_keepalive,
            limits.ws_keepalive,
        );
        let mut heard = Instant::now();
        let mut stop = self.app.stop.clone();
        loop {
            let closing = tokio::select! {
                _ = expiry(&mut init_deadline) => {
                    closing(4408, "Connection initialisation timeout")
                }
                message = stream.next() => {
                    heard = Instant::now();
                    // Boxed: handling a message (authenticating, admitting an operation)
                    // awaits large futures, which would otherwise make every idle
                    // connection's own future as large as they are.
                    match message {
                        Some(Ok(Message::Text(text))) => Box::pin(self.handle(text.as_str())).await,
                        Some(Ok(Message::Binary(bytes))) => match std::str::from_utf8(&bytes) {
                            Ok(text) => Box::pin(self.handle(text)).await,
                            Err(_) => closing(4400, "Messages must be UTF-8 JSON"),
                        },
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                        Some(Ok(_)) => None, // a ping or pong frame
                    }
                }
                Some((id, generation, answer)) = self.answers.next(), if !self.answers.is_empty() => {
                    Box::pin(self.deliver_ready(id, generation, answer)).await
                }
                _ = revoked(&mut self.session) => {
                    closing(4403, "Forbidden: the token has been revoked")
                }
                _ = ping.tick() => {
                    if heard.elapsed() > 3 * limits.ws_keepalive {
                        closing(1001, "No answer to pings")
                    } else {
                        Box::pin(self.keepalive()).await
                    }
                }
                _ = stop.changed() => closing(1001, "The server is stopping"),
            };
            if closing.is_some() {
                return closing;
            }
            if self.caller.is_some() {
                init_deadline = None;
            }
        }
    }

    /// Sends `message`; false when the client has left what it was sent unread for
    /// [`STALL`] (nothing else happens on the connection meanwhile), or is gone.
    async fn send(&mut self, message: Message) -> bool {
        matches!(
            tokio::time::timeout(STALL, self.sink.send(message)).await,
            Ok(Ok(()))
        )
    }

    /// Queues `message` to be written with the next flush; false as for [`Self::send`].
    async fn queue(&mut self, text: String) -> bool {
        matches!(
            tokio::time::timeout(STALL, self.sink.feed(Message::Text(text.into()))).await,
            Ok(Ok(()))
        )
    }

    /// Sends a protocol message; why the connection must close, if it must.
    async fn reply(&mut self, message: Value) -> Option<Closing> {
        if self.send(Message::Text(message.to_string().into())).await {
            None
        } else {
            closing(1008, "Messages are not being read")
        }
    }

    /// A WebSocket ping, and the legacy protocol's keep-alive message.
    async fn keepalive(&mut self) -> Option<Closing> {
        if !self.send(Message::Ping(Default::default())).await {
            return closing(1008, "Messages are not being read");
        }
        if self.protocol == Protocol::Legacy && self.caller.is_some() {
            return self.reply(json!({ "type": "ka" })).await;
        }
        None
    }

    /// Acts on one client message.
    async fn handle(&mut self, text: &str) -> Option<Closing> {
        let message: ClientMessage = match serde_json::from_str(text) {
            Ok(message) => message,
            Err(err) => return closing(4400, format!("Invalid message: {err}")),
        };
        match message {
            ClientMessage::ConnectionInit { payload } => self.init(payload).await,
            ClientMessage::Subscribe { id, payload } => self.subscribe(id, *payload).await,
            ClientMessage::Complete { id } => {
                if self.caller.is_none() {
                    return closing(4401, "Unauthorized");
                }
                if let Some(running) = self.running.remove(&id) {
                    running.abort.abort();
                }
                // The legacy protocol confirms a stop.
                match self.protocol {
                    Protocol::TransportWs => None,
                    Protocol::Legacy => self.reply(json!({ "type": "complete", "id": id })).await,
                }
            }
            ClientMessage::Ping { payload } => match self.protocol {
                Protocol::TransportWs => {
                    let mut pong = json!({ "type": "pong" });
                    if let Some(payload) = payload {
                        pong["payload"] = payload;
                    }
                    self.reply(pong).await
                }
                Protocol::Legacy => None,
            },
            ClientMessage::Pong { .. } => None,
            ClientMessage::ConnectionTerminate => closing(1000, ""),
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
            Some(token) => service.authenticate(token, self.peer).await,
            None => Err(AppError::unauthenticated()),
        };
        let caller = match caller {
            Ok(caller) => caller,
            Err(AppError::Internal(cause)) => {
                tracing::error!(%cause, "cannot authenticate a WebSocket");
                return closing(1011, "The server could not check the token");
            }
            Err(AppError::RateLimited { .. }) => {
                return closing(4429, "Too many failed authentications from your address");
            }
            Err(_) => return closing(4403, "Forbidden: a valid API token is required"),
        };
        let cap = (!caller.is_admin()).then_some(service.limits().sockets_per_token);
        match service.sessions().open(&caller, cap) {
            Ok(session) => self.session = Some(session),
            Err(err) => return closing(4429, err.public_message()),
        }
        self.caller = Some(caller);
        self.reply(json!({ "type": "connection_ack" })).await
    }

    /// `subscribe`: runs one operation, if the connection, the token and the gate allow.
    /// Long because it is a list of checks in order (authenticated, id, duplicate, room, token,
    /// gate), each closing or refusing, then the start of the operation's stream.
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
        if self.running.contains_key(&id) {
            return closing(4409, format!("Subscriber for {id} already exists"));
        }
        let service = self.app.service.clone();
        let limit = service.limits().subscriptions_per_socket;
        if self.running.len() >= limit {
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
        let (answers, abort) = stream::abortable(answers);
        self.generation += 1;
        let (tag, generation) = (id.clone(), self.generation);
        let tagged = answers
            .map(Some)
            .chain(stream::once(async { None }))
            .map(move |answer| (tag.clone(), generation, answer));
        self.answers.push(tagged.boxed());
        self.running.insert(
            id,
            Running {
                generation,
                abort,
                answered: false,
            },
        );
        None
    }

    /// Sends an answer of operation `id` (of `generation`), or ends it with `complete`
    /// (`None`); a first answer of errors alone is sent as `error`. Answers of an
    /// operation that was completed or refused meanwhile are dropped.
    /// Delivers an answer and every other one already waiting (up to a bound), then
    /// writes them with one flush: events come in bursts, and one write for many saves a
    /// system call each.
    async fn deliver_ready(
        &mut self,
        id: String,
        generation: u64,
        answer: Option<GqlResponse>,
    ) -> Option<Closing> {
        const MOST: usize = 64;
        let mut next = Some((id, generation, answer));
        let mut queued = 0;
        while let Some((id, generation, answer)) = next.take() {
            if let Some(message) = self.deliver(id, generation, answer)
                && !self.queue(message).await
            {
                return closing(1008, "Messages are not being read");
            }
            queued += 1;
            if queued < MOST {
                next = self.answers.next().now_or_never().flatten();
            }
        }
        let flushed = tokio::time::timeout(STALL, self.sink.flush()).await;
        if matches!(flushed, Ok(Ok(()))) {
            None
        } else {
            closing(1008, "Messages are not being read")
        }
    }

    /// The message that carries an answer of operation `id`, if any is still due.
    fn deliver(
        &mut self,
        id: String,
        generation: u64,
        answer: Option<GqlResponse>,
    ) -> Option<String> {
        // Not running any more (completed or refused meanwhile): nothing to send.
        let running = self
            .running
            .get_mut(&id)
            .filter(|r| r.generation == generation)?;
        let Some(mut response) = answer else {
            self.running.remove(&id);
            return Some(json!({ "type": "complete", "id": id }).to_string());
        };
        graphql::add_codes(&mut response.errors);
        let failed =
            !running.answered && response.data == async_graphql::Value::Null && response.is_err();
        running.answered = true;
        if failed {
            if let Some(running) = self.running.remove(&id) {
                running.abort.abort();
            }
            return Some(error_message(self.protocol, &id, &response.errors).to_string());
        }
        // Serialised straight from the response, without a JSON tree in between.
        let message = Next {
            kind: self.protocol.next(),
            id: &id,
            payload: &response,
        };
        Some(serde_json::to_string(&message).expect("a response serialises"))
    }

    /// Refuses operation `id` with `err`.
    async fn refuse(&mut self, id: &str, err: AppError) -> Option<Closing> {
        let errors = vec![err.into_server_error()];
        let refusal = error_message(self.protocol, id, &errors);
        self.reply(refusal).await
    }
}

/// Waits for `deadline` (never, when there is none).
async fn expiry(deadline: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>) {
    match deadline {
        Some(deadline) => deadline.await,
        None => std::future::pending().await,
    }
}

/// Waits until the session's token is revoked (never, before there is a session).
async fn revoked(session: &mut Option<Session>) {
    match session {
        Some(session) => session.revoked().await,
        None => std::future::pending().await,
    }
}

/// A `next` (or legacy `data`) message.
#[derive(Serialize)]
struct Next<'a> {
    /// `next`, or `data` in the legacy protocol (`Protocol::next`).
    #[serde(rename = "type")]
    kind: &'static str,
    /// The operation's id, as the client gave it.
    id: &'a str,
    /// The answer, serialised as it is.
    payload: &'a GqlResponse,
}

fn error_message(protocol: Protocol, id: &str, errors: &[ServerError]) -> Value {
    let payload = match protocol {
        Protocol::TransportWs => json!(errors),
        // subscriptions-transport-ws sends one error object.
        Protocol::Legacy => json!(errors.first()),
    };
    json!({ "type": "error", "id": id, "payload": payload })
}
