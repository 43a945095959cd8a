//! Subscriptions over a real WebSocket: events in order, replay across a disconnect with
//! every event exactly once, project isolation, refused tokens, a slow subscriber.

mod common;

use std::time::Duration;

use common::TestApp;
use common::ws::{Frame, Subscriber};
use serde_json::{Value, json};

const EVENT: &str = "id state progress phase message task { id kind vm { id } }";

fn id(event: &Value) -> i64 {
    event["id"].as_str().unwrap().parse().unwrap()
}

/// The project's events in the table after event `after`, ids only, in order.
async fn stored_after(app: &TestApp, token: &str, vms: &[String], after: i64) -> Vec<i64> {
    let mut ids = Vec::new();
    for vm in vms {
        let data = app
            .data(token, "query($v: ID!) { tasks(vmId: $v, first: 200) { edges { node { events { id } } } } }", json!({ "v": vm }))
            .await;
        for task in data["tasks"]["edges"].as_array().unwrap() {
            for e in task["node"]["events"].as_array().unwrap() {
                ids.push(id(e));
            }
        }
    }
    ids.retain(|i| *i > after);
    ids.sort();
    ids
}

#[tokio::test]
async fn a_create_streams_its_events_in_order_to_completion() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("stream", "sim://?latency_ms=300").await;
    let mut sub = Subscriber::connect(&app.url, Some(&f.operator))
        .await
        .unwrap();
    let (_, task) = app.create_snapshot(&f.operator, &f.vm, "watched").await;
    sub.subscribe(
        "1",
        &format!("subscription($t: ID!) {{ taskEvents(taskId: $t) {{ {EVENT} }} }}"),
        json!({ "t": task }),
    )
    .await;
    let mut streamed = Vec::new();
    loop {
        match sub.next().await {
            Frame::Next(_, payload) => streamed.push(payload["data"]["taskEvents"].clone()),
            Frame::Complete(id) => {
                assert_eq!(id, "1");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    // From the task's current state on, every later event, in order, ending with the last.
    let ids: Vec<i64> = streamed.iter().map(id).collect();
    let stored = app.finished(&f.operator, &task).await["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(id)
        .collect::<Vec<_>>();
    assert_eq!(
        ids,
        stored[stored.len() - ids.len()..],
        "streamed {ids:?}, stored {stored:?}"
    );
    assert_eq!(streamed.last().unwrap()["state"], "SUCCEEDED");
    assert_eq!(streamed.last().unwrap()["progress"], 100);
    let percents: Vec<i64> = streamed
        .iter()
        .filter_map(|e| e["progress"].as_i64())
        .collect();
    assert!(
        percents.windows(2).all(|w| w[0] <= w[1]),
        "progress only grows: {percents:?}"
    );
    assert!(
        streamed
            .iter()
            .any(|e| e["phase"] == "creating the snapshot"),
        "{streamed:#?}"
    );

    // A finished task yields its final event and completes.
    sub.subscribe(
        "2",
        &format!("subscription($t: ID!) {{ taskEvents(taskId: $t) {{ {EVENT} }} }}"),
        json!({ "t": task }),
    )
    .await;
    assert_eq!(sub.event("taskEvents").await["state"], "SUCCEEDED");
    assert!(matches!(sub.next().await, Frame::Complete(id) if id == "2"));
}

#[tokio::test]
async fn a_reconnecting_client_gets_every_event_exactly_once() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("replay", "sim://?latency_ms=40").await;
    let mut vms = vec![f.vm.clone()];
    for i in 0..2 {
        vms.push(
            app.create_vm(&f.host, &f.project, &format!("replay-{i}"))
                .await,
        );
    }
    let start = {
        let mut sub = Subscriber::connect(&app.url, Some(&f.operator))
            .await
            .unwrap();
        // A first snapshot gives a starting event id.
        let (_, task) = app.create_snapshot(&f.operator, &f.vm, "start").await;
        sub.subscribe(
            "s",
            "subscription($t: ID!) { taskEvents(taskId: $t) { id state } }",
            json!({ "t": task }),
        )
        .await;
        let mut last = 0;
        while let Frame::Next(_, p) = sub.next().await {
            last = id(&p["data"]["taskEvents"]);
        }
        last
    };

    // Tasks keep running on three VMs while the client comes and goes.
    let workers: Vec<_> = vms
        .iter()
        .map(|vm| {
            let (api, op, vm) = (app.api.clone(), f.operator.clone(), vm.clone());
            tokio::spawn(async move {
                for n in 0..8 {
                    let (_, task) = api.create_snapshot(&op, &vm, &format!("s{n}")).await;
                    api.finished(&op, &task).await;
                }
            })
        })
        .collect();

    let query = format!("subscription($a: ID) {{ events(after: $a) {{ {EVENT} }} }}");
    let mut received = Vec::new();
    let mut after = start;
    for round in 0..3 {
        let mut sub = Subscriber::connect(&app.url, Some(&f.operator))
            .await
            .unwrap();
        sub.subscribe("e", &query, json!({ "a": after.to_string() }))
            .await;
        for _ in 0..10 {
            let event = sub.event("events").await;
            after = id(&event);
            received.push(after);
        }
        // A forced disconnect: the socket is dropped mid-stream.
        drop(sub);
        tokio::time::sleep(Duration::from_millis(50 * (round + 1))).await;
    }
    for w in workers {
        w.await.unwrap();
    }
    // The rest, then nothing more.
    let mut sub = Subscriber::connect(&app.url, Some(&f.operator))
        .await
        .unwrap();
    sub.subscribe("e", &query, json!({ "a": after.to_string() }))
        .await;
    let expected = stored_after(&app, &f.operator, &vms, start).await;
    while received.len() < expected.len() {
        received.push(id(&sub.event("events").await));
    }
    assert_eq!(received, expected, "every event exactly once, in order");
}

#[tokio::test]
async fn a_subscriber_sees_nothing_of_another_project() {
    let app = TestApp::spawn().await;
    let a = app.project_with_vm("alpha", "sim://").await;
    let b = app.project_with_vm("beta", "sim://").await;
    let mut sub = Subscriber::connect(&app.url, Some(&b.operator))
        .await
        .unwrap();
    sub.subscribe(
        "all",
        &format!("subscription {{ events {{ {EVENT} }} }}"),
        json!({}),
    )
    .await;
    for n in 0..3 {
        app.snapshot_built(&a.operator, &a.vm, &format!("a{n}"))
            .await;
    }
    let (_, task) = app.create_snapshot(&b.operator, &b.vm, "b").await;
    // The first event B sees is of B's own task: none of A's came before it.
    let first = sub.event("events").await;
    assert_eq!(first["task"]["id"], task.as_str());
    assert_eq!(first["task"]["vm"]["id"], b.vm.as_str());

    // A's VM does not exist for B.
    sub.subscribe(
        "vm",
        "subscription($v: ID!) { vmEvents(vmId: $v) { id } }",
        json!({ "v": a.vm }),
    )
    .await;
    loop {
        match sub.next().await {
            // Refused before any event: an `error` message, or a result carrying errors.
            Frame::Error(id, payload) if id == "vm" => {
                assert_eq!(payload[0]["extensions"]["code"], "NOT_FOUND", "{payload}");
                break;
            }
            Frame::Next(id, payload) if id == "vm" => {
                assert_eq!(payload["data"], Value::Null);
                assert_eq!(
                    payload["errors"][0]["extensions"]["code"], "NOT_FOUND",
                    "{payload}"
                );
                break;
            }
            Frame::Next(id, payload) if id == "all" => {
                assert_eq!(payload["data"]["events"]["task"]["vm"]["id"], b.vm.as_str());
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_bad_token_is_refused_with_4403() {
    let app = TestApp::spawn().await;
    let Err((code, reason)) = Subscriber::connect(&app.url, Some("snaptree_not-a-token")).await
    else {
        panic!("a bad token was accepted");
    };
    assert_eq!(code, 4403);
    assert!(reason.contains("token"), "{reason}");
    let Err((code, _)) = Subscriber::connect(&app.url, None).await else {
        panic!("no token was accepted");
    };
    assert_eq!(code, 4403);
}

#[tokio::test]
async fn a_slow_subscriber_gets_a_thousand_events_complete() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("slow", "sim://").await;
    let mut vms = vec![f.vm.clone()];
    for i in 0..4 {
        vms.push(
            app.create_vm(&f.host, &f.project, &format!("slow-{i}"))
                .await,
        );
    }
    let mut sub = Subscriber::connect(&app.url, Some(&f.operator))
        .await
        .unwrap();
    let (_, first) = app.create_snapshot(&f.operator, &f.vm, "first").await;
    sub.subscribe(
        "t",
        "subscription($t: ID!) { taskEvents(taskId: $t) { id } }",
        json!({ "t": first }),
    )
    .await;
    let mut start = 0;
    while let Frame::Next(_, p) = sub.next().await {
        start = id(&p["data"]["taskEvents"]);
    }
    sub.subscribe(
        "e",
        "subscription($a: ID) { events(after: $a) { id } }",
        json!({ "a": start.to_string() }),
    )
    .await;

    // Over a thousand events, produced far faster than the subscriber reads them.
    let workers: Vec<_> = vms
        .iter()
        .map(|vm| {
            let (api, op, vm) = (app.api.clone(), f.operator.clone(), vm.clone());
            tokio::spawn(async move {
                for n in 0..50 {
                    let (_, task) = api.create_snapshot(&op, &vm, &format!("n{n}")).await;
                    api.finished(&op, &task).await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let expected = stored_after(&app, &f.operator, &vms, start).await;
    assert!(expected.len() >= 1000, "{} events", expected.len());
    let mut received = Vec::with_capacity(expected.len());
    while received.len() < expected.len() {
        received.push(id(&sub.event("events").await));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(received, expected);
}

/// The legacy `graphql-ws` protocol (subscriptions-transport-ws) works too.
#[tokio::test]
async fn the_legacy_protocol_delivers_events_and_refuses_bad_tokens() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let app = TestApp::spawn().await;
    let f = app.project_with_vm("legacy", "sim://").await;
    let connect = |token: &str| {
        let mut request = app
            .url
            .replacen("http://", "ws://", 1)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "graphql-ws".parse().unwrap());
        let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } });
        async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
            ws.send(Message::Text(init.to_string().into()))
                .await
                .unwrap();
            ws
        }
    };
    let text = |m: Message| -> Value { serde_json::from_str(m.to_text().unwrap()).unwrap() };

    let mut ws = connect(&f.operator).await;
    assert_eq!(
        text(ws.next().await.unwrap().unwrap())["type"],
        "connection_ack"
    );
    let (_, task) = app.create_snapshot(&f.operator, &f.vm, "old school").await;
    let start = json!({ "id": "1", "type": "start", "payload": { "query": "subscription($t: ID!) { taskEvents(taskId: $t) { state } }", "variables": { "t": task } } });
    ws.send(Message::Text(start.to_string().into()))
        .await
        .unwrap();
    loop {
        let msg = text(ws.next().await.unwrap().unwrap());
        if msg["type"] == "ka" {
            continue;
        }
        assert_eq!(msg["type"], "data", "{msg}");
        if msg["payload"]["data"]["taskEvents"]["state"] == "SUCCEEDED" {
            break;
        }
    }

    let mut ws = connect("snaptree_bad").await;
    let mut refused = None;
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Close(frame) = msg {
            refused = frame.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(refused, Some(4403));
}

/// A server told to stop (SIGTERM) says so on every WebSocket before it exits: each
/// subscriber gets the close code 1001 ("go elsewhere", so a client resubscribes on
/// another server), never a connection that just breaks (1006). Many sockets, events
/// flowing and clients writing (pings) as it stops: a server that exits before its
/// sockets have said goodbye, or closes one with the client's bytes unread (a reset,
/// which can take the close frame with it), would show.
#[tokio::test]
async fn a_stopping_server_closes_every_socket_with_1001() {
    use common::process::{self, ServerProcess};
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    const TOKENS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let db = common::TestDb::new(dir.path()).await;
    let admin = process::token(&db.cli_url(), "ops", "ADMIN");
    // Its robot lets go of its tasks at once, so that nothing else holds the stop.
    let mut server = ServerProcess::start(
        &db.cli_url(),
        &dir.path().join("sim"),
        &["--shutdown-grace-seconds", "0"],
    );
    let api = common::Api::new(&server.url, admin);
    let project = api.create_project("goodbye").await;
    let operator = api.create_token(&project, "OPERATOR").await;
    let host = api
        .create_host("goodbye", "SIMULATED", "sim://", None)
        .await;
    let mut vms = Vec::new();
    for i in 0..10 {
        vms.push(api.create_vm(&host, &project, &format!("vm{i}")).await);
    }
    let mut readers = Vec::new();
    let mut pingers = Vec::new();
    for _ in 0..TOKENS {
        let token = api.create_token(&project, "VIEWER").await;
        // As many sockets as a token may hold.
        for _ in 0..20 {
            let mut sub = Subscriber::connect(&api.url, Some(&token)).await.unwrap();
            sub.subscribe("e", "subscription { events { id } }", json!({}))
                .await;
            let (mut tx, rx) = sub.into_socket().split();
            pingers.push(tokio::spawn(async move {
                let ping = r#"{"type":"ping"}"#;
                while tx.send(Message::Text(ping.into())).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }));
            readers.push(rx);
        }
    }
    // Events flow to every socket while the server stops.
    let busy: Vec<_> = vms
        .iter()
        .map(|vm| {
            let (api, op, vm) = (api.clone(), operator.clone(), vm.clone());
            tokio::spawn(async move {
                let query = "mutation($v: ID!, $n: String!) { createSnapshot(vmId: $v, name: $n) { task { id } } }";
                for n in 0.. {
                    let body = json!({ "query": query, "variables": { "v": vm, "n": format!("n{n}") } });
                    // Busy VMs refuse; a stopped server ends the loop.
                    let sent = api.client.post(&api.url).bearer_auth(&op).json(&body).send().await;
                    if sent.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        server.terminate().success(),
        "the server did not stop cleanly"
    );
    for task in busy.into_iter().chain(pingers) {
        task.abort();
    }
    let mut codes = std::collections::BTreeMap::new();
    for mut rx in readers {
        let code = loop {
            match rx.next().await {
                Some(Ok(Message::Close(frame))) => break frame.map_or(1005, |f| f.code.into()),
                Some(Ok(_)) => {}
                None | Some(Err(_)) => break 1006,
            }
        };
        *codes.entry(code).or_insert(0) += 1;
    }
    assert_eq!(
        codes,
        std::collections::BTreeMap::from([(1001, TOKENS * 20)]),
        "close codes of the sockets of a stopping server"
    );
}
