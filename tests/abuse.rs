//! The attacks a hostile tenant would try, each against a real `snaptree serve` process
//! ([`common::target::Target`]): every one is refused or bounded, the server's memory
//! comes back, and it keeps answering others.
//!
//! Waits here are hang guards (a minute or more), never performance limits.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::error_code;
use common::process::ServerProcess;
use common::target::{FAST, GUARD, Target, attacker, closed, fake_virsh, tcp_from};
use common::ws::{Frame, Subscriber};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_revoked_token_loses_its_sockets_on_every_server_and_cannot_act() {
    let t = Target::start(&[]).await;
    // A second server on the same database, as when several share one PostgreSQL.
    let other = ServerProcess::start(
        &t.db.cli_url(),
        &t.dir.path().join("sim"),
        &[FAST, &["--no-robot"]].concat(),
    );
    let other_url = format!("{}graphql", other.url);
    let token_id = t
        .api
        .data(
            &t.api.admin,
            "mutation($p: ID!) { createToken(projectId: $p, name: \"doomed\", role: OPERATOR) { id token } }",
            json!({ "p": t.project }),
        )
        .await["createToken"]
        .clone();
    let doomed = token_id["token"].as_str().unwrap().to_owned();
    let subscription = "subscription { events { id } }";
    let mut here = Subscriber::connect(&t.url(), Some(&doomed)).await.unwrap();
    here.subscribe("e", subscription, json!({})).await;
    let mut there = Subscriber::connect(&other_url, Some(&doomed))
        .await
        .unwrap();
    there.subscribe("e", subscription, json!({})).await;
    let mut acting = Subscriber::connect(&t.url(), Some(&doomed)).await.unwrap();

    let revoked = t
        .api
        .data(
            &t.api.admin,
            "mutation($id: ID!) { revokeToken(id: $id) }",
            json!({ "id": token_id["id"] }),
        )
        .await;
    assert_eq!(revoked["revokeToken"], true);
    let at = Instant::now();
    // A mutation sent over a socket opened before the revocation does not run.
    acting
        .subscribe(
            "m",
            "mutation($v: ID!) { createSnapshot(vmId: $v, name: \"after revocation\") { task { id } } }",
            json!({ "v": t.vms[1] }),
        )
        .await;
    match acting.next().await {
        Frame::Closed(code, _) => assert_eq!(code, 4403),
        Frame::Error(_, payload) => assert_eq!(payload[0]["extensions"]["code"], "UNAUTHENTICATED"),
        other => panic!("the revoked token's mutation answered {other:?}"),
    }
    let (code, reason) = closed(&mut here).await;
    assert_eq!(code, 4403, "{reason}");
    assert!(reason.contains("revoked"), "{reason}");
    let (code, _) = closed(&mut there).await;
    assert_eq!(code, 4403);
    eprintln!(
        "both sockets closed {} ms after the revocation",
        at.elapsed().as_millis()
    );
    // Nothing of it was recorded, and neither HTTP nor a new socket takes the token.
    let data = t
        .api
        .data(
            &t.api.admin,
            "query($v: ID!) { vm(id: $v) { snapshots(includeClosed: true) { name } } }",
            json!({ "v": t.vms[1] }),
        )
        .await;
    assert_eq!(data["vm"]["snapshots"], json!([]));
    let body = t
        .api
        .request(Some(&doomed), "{ hosts { id } }", json!({}))
        .await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED");
    let refused = Subscriber::connect(&other_url, Some(&doomed)).await;
    assert_eq!(refused.err().unwrap().0, 4403);
    t.still_answers().await;
}

/// Documents a VIEWER can send in a few bytes that would cost the server dearly.
fn costly_documents() -> Vec<(&'static str, String)> {
    let mut docs = Vec::new();
    // Lists nested through back references: 8 VMs, 7 levels.
    let mut nested = String::from("{ vm(id: 1) { ");
    for _ in 0..7 {
        nested.push_str("host { vms { id ");
    }
    nested.push_str(&"} } ".repeat(7));
    nested.push_str("} }");
    docs.push(("nested host.vms", nested));
    // The same through nested named fragments.
    let mut fragments = String::from("fragment F0 on Vm { id name }\n");
    for i in 1..=10 {
        fragments.push_str(&format!(
            "fragment F{i} on Vm {{ ...F{p} host {{ vms {{ ...F{p} }} }} }}\n",
            p = i - 1
        ));
    }
    fragments.push_str("{ vm(id: 1) { ...F10 } }");
    docs.push(("nested fragments", fragments));
    // Fragments that each spread the previous one twice: 2^n work to expand.
    for levels in [22, 39] {
        let mut doubling = String::from("fragment F0 on Query { hosts { id } }\n");
        for i in 1..=levels {
            doubling.push_str(&format!(
                "fragment F{i} on Query {{ ...F{p} ...F{p} }}\n",
                p = i - 1
            ));
        }
        doubling.push_str(&format!("{{ ...F{levels} }}"));
        docs.push((
            if levels == 22 {
                "doubling fragments 22"
            } else {
                "doubling fragments 39"
            },
            doubling,
        ));
    }
    // One fragment spread as often as the size limit allows.
    let spreads = "...F ".repeat(6000);
    docs.push((
        "one fragment spread 6,000 times",
        format!("fragment F on Query {{ hosts {{ vms {{ id }} }} }}\n{{ {spreads} }}"),
    ));
    // Up and down a tree: every level multiplies.
    docs.push((
        "zigzag through a tree",
        "{ vm(id: 1) { snapshots { children { parent { children { parent { children { id } } } } } } } }".into(),
    ));
    // Other list paths: tasks, their events, back to the VM's history.
    docs.push((
        "tasks, events, history",
        "{ tasks(first: 200) { edges { node { events(first: 200) { task { vm { history(first: 200) { at } } } } } } } }".into(),
    ));
    // Introspection, nested through types.
    docs.push((
        "nested introspection",
        "{ __schema { types { fields { type { fields { type { fields { type { name } } } } } } } } }".into(),
    ));
    // As many aliases as the size limit allows.
    let aliases: Vec<String> = (0..600)
        .map(|i| format!("a{i}: vm(id: 1) {{ host {{ vms {{ id }} }} }}"))
        .collect();
    docs.push(("600 aliases", format!("{{ {} }}", aliases.join(" "))));
    // Brackets nested far deeper than any field may be.
    docs.push((
        "5,000 nested braces",
        format!("{}{}", "{ a ".repeat(5_000), "}".repeat(5_000)),
    ));
    docs
}

#[tokio::test]
async fn costly_queries_are_refused_before_they_run_on_every_transport() {
    let t = Target::start(&[]).await;
    let before = t.baseline().await;
    let mut socket = Subscriber::connect(&t.url(), Some(&t.viewer))
        .await
        .unwrap();
    for (i, (attack, doc)) in costly_documents().into_iter().enumerate() {
        assert!(doc.len() <= 32 * 1024, "{attack} is {} bytes", doc.len());
        let body = t.api.request(Some(&t.viewer), &doc, json!({})).await;
        assert_eq!(error_code(&body), "QUERY_TOO_COMPLEX", "{attack}: {body}");
        let ext = &body["errors"][0]["extensions"];
        if let Some(cost) = ext["cost"].as_u64() {
            assert!(cost > ext["limit"].as_u64().unwrap(), "{attack}: {body}");
        }
        // The same over the WebSocket.
        socket.subscribe(&format!("q{i}"), &doc, json!({})).await;
        match socket.next().await {
            Frame::Error(_, payload) => {
                assert_eq!(
                    payload[0]["extensions"]["code"], "QUERY_TOO_COMPLEX",
                    "{attack}"
                )
            }
            other => panic!("{attack} over the socket answered {other:?}"),
        }
        t.still_answers().await;
        // The budget refills at 20 requests a second; two per attack stay within it.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // The WebSocket holds the same size limit as HTTP.
    let big = format!("{{ hosts {{ id }} }} # {}", "x".repeat(53 * 1024));
    socket.subscribe("big", &big, json!({})).await;
    match socket.next().await {
        Frame::Error(_, payload) => {
            assert_eq!(payload[0]["extensions"]["code"], "QUERY_TOO_COMPLEX")
        }
        other => panic!("a 53 KB document over the socket answered {other:?}"),
    }
    drop(socket);
    t.settles(before, "costly queries").await;
}

/// Host processes whose command line holds `needle` (the fake virsh and what it
/// started, or ssh), not counting snaptree itself (whose `--virsh` names it).
fn processes(needle: &str) -> usize {
    let out = std::process::Command::new("pgrep")
        .args(["-af", needle])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| !line.contains("snaptree"))
        .count()
}

#[tokio::test]
async fn host_calls_are_shared_within_a_request_limited_per_host_and_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let virsh = fake_virsh(dir.path());
    let virsh_flag = virsh.to_str().unwrap().to_owned();
    let t = Target::start(&["--virsh", &virsh_flag]).await;
    let host = t
        .api
        .create_host("kvm", "KVM", "qemu:///system", None)
        .await;
    // The check when the host was created had a connection of its own.
    let shells = || {
        std::fs::read_to_string(dir.path().join("shells.log"))
            .unwrap()
            .lines()
            .count()
    };
    let checked = shells();
    let vm = |name: &str| {
        let api = t.api.clone();
        let (host, project, name) = (host.clone(), t.project.clone(), name.to_owned());
        async move { api.register_vm(&host, &project, &name).await }
    };
    let shared = vm("shared").await;
    let hung = vm("hung").await;
    let mut slow = Vec::new();
    for i in 0..12 {
        slow.push(vm(&format!("slow{i}")).await);
    }
    let log = dir.path().join("calls.log");
    let lists = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("snapshot-list"))
            .count()
    };

    // 40 aliases of one VM's drift: one question to the host.
    let aliases: Vec<String> = (0..40)
        .map(|i| format!("d{i}: vm(id: {shared}) {{ drift {{ kind }} }}"))
        .collect();
    let before = lists();
    let data = t
        .api
        .data(
            &t.viewer,
            &format!("{{ {} }}", aliases.join(" ")),
            json!({}),
        )
        .await;
    assert_eq!(data["d39"]["drift"], json!([]));
    assert_eq!(lists() - before, 1);
    // 1,200 of them are refused before the host hears of it.
    let aliases: Vec<String> = (0..1200)
        .map(|i| format!("d{i}: vm(id: {shared}) {{ drift {{ kind }} }}"))
        .collect();
    let body = t
        .api
        .request(
            Some(&t.admin()),
            &format!("{{ {} }}", aliases.join(" ")),
            json!({}),
        )
        .await;
    assert_eq!(error_code(&body), "QUERY_TOO_COMPLEX");
    assert_eq!(lists() - before, 1);

    // Twelve slow drifts at once: the host hears them one at a time, on its one
    // connection, shared by queries and the robot.
    let asks = slow.iter().map(|vm| {
        let api = t.api.clone();
        let query = format!("{{ vm(id: {vm}) {{ drift {{ kind }} }} }}");
        async move { api.data(&api.admin, &query, json!({})).await }
    });
    futures_util::future::join_all(asks).await;
    let seen = std::fs::read_to_string(dir.path().join("concurrency.log")).unwrap();
    let most = seen
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .max();
    assert_eq!(most, Some(1), "host calls at once");
    assert_eq!(shells() - checked, 1, "one connection for every call since");

    // A host call that hangs is cut off at the deadline, with everything it started.
    let body = t
        .api
        .request(
            Some(&t.admin()),
            &format!("{{ vm(id: {hung}) {{ drift {{ kind }} }} }}"),
            json!({}),
        )
        .await;
    assert_eq!(error_code(&body), "TIMEOUT", "{body}");
    wait_until("the hung host call's processes end", || {
        processes(&virsh_flag) == 0
    })
    .await;

    // A client that goes away leaves the host call to go on (cut off in the middle, a
    // command would end the host's lasting connection): a hung one ends at its own
    // deadline, with everything it started.
    let patient = ServerProcess::start(
        &t.db.cli_url(),
        &t.dir.path().join("sim"),
        &[
            "--no-robot",
            "--request-timeout",
            "6",
            "--virsh",
            &virsh_flag,
        ],
    );
    let client = common::target::client().build().unwrap();
    let request = client
        .post(format!("{}graphql", patient.url))
        .bearer_auth(t.admin())
        .json(&json!({ "query": format!("{{ vm(id: {hung}) {{ drift {{ kind }} }} }}") }))
        .send();
    let _ = tokio::time::timeout(Duration::from_secs(2), request).await;
    assert!(processes(&virsh_flag) >= 1, "the host call was running");
    wait_until("the abandoned request's processes end", || {
        processes(&virsh_flag) == 0
    })
    .await;
    t.still_answers().await;
}

impl Target {
    fn admin(&self) -> String {
        self.api.admin.clone()
    }
}

/// Waits (with the hang guard) until `done`.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < GUARD, "{what}: never happened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn host_uris_cannot_run_programs_or_reach_other_sockets() {
    let t = Target::start(&[]).await;
    let marker = t.dir.path().join("marker");
    let program = t.dir.path().join("evil.sh");
    std::fs::write(
        &program,
        format!("#!/bin/sh\ntouch '{}'\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let program = program.display().to_string();
    let parameters = [
        format!("command={program}"),
        format!("netcat={program}"),
        format!("socket={}", t.dir.path().join("sock").display()),
        format!("keyfile={}", t.dir.path().join("key").display()),
        "no_verify=1".into(),
        "proxy=netcat".into(),
        "mode=legacy".into(),
        "name=qemu:///system".into(),
        "pkipath=/tmp".into(),
        "known_hosts=/tmp/hosts".into(),
        "sshauth=privkey".into(),
        "no_tty=1&command=/bin/true".into(),
    ];
    let create = "mutation($n: String!, $h: Hypervisor!, $u: String!) {
        createHost(name: $n, hypervisor: $h, uri: $u) { id } }";
    for (i, parameter) in parameters.iter().enumerate() {
        for base in ["qemu+ssh://localhost/system", "qemu:///system"] {
            let uri = format!("{base}?{parameter}");
            let body = t
                .api
                .request(
                    Some(&t.admin()),
                    create,
                    json!({ "n": format!("h{i}"), "h": "KVM", "u": uri }),
                )
                .await;
            assert_eq!(error_code(&body), "VALIDATION", "{uri}: {body}");
            let name = parameter
                .rsplit('&')
                .next()
                .unwrap()
                .split('=')
                .next()
                .unwrap();
            let message = body["errors"][0]["message"].as_str().unwrap();
            assert!(message.contains(&format!("\"{name}\"")), "{uri}: {message}");
        }
    }
    for uri in [
        format!("qemu+ssh://-oProxyCommand={program}/system"),
        format!("qemu+ssh://u@-oProxyCommand={program}/system"),
        format!("qemu+ext:///system?command={program}"),
        format!("qemu+ssh://localhost/system?comm%61nd={program}"),
        "qemu+ssh://localhost/system#x".into(),
    ] {
        let body = t
            .api
            .request(
                Some(&t.admin()),
                create,
                json!({ "n": "x", "h": "KVM", "u": uri }),
            )
            .await;
        assert_eq!(error_code(&body), "VALIDATION", "{uri}: {body}");
    }
    for uri in [
        format!("ssh://admin@hv1?ProxyCommand={program}"),
        format!("ssh://-oProxyCommand={program}@hv1"),
        format!("ssh://admin@-oProxyCommand={program}"),
    ] {
        let body = t
            .api
            .request(
                Some(&t.admin()),
                create,
                json!({ "n": "x", "h": "HYPERV", "u": uri }),
            )
            .await;
        assert_eq!(error_code(&body), "VALIDATION", "{uri}: {body}");
    }
    // Give anything that was started time to do its harm.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!marker.exists(), "a program named in a URI ran");
}

#[tokio::test]
async fn create_host_gives_up_on_a_host_that_never_answers() {
    if !common::libvirt::available() {
        return;
    }
    let t = Target::start(&[]).await;
    // A local listener that accepts and stays silent: ssh waits for its banner forever.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().take(4) {
            held.push(stream);
        }
        std::thread::sleep(GUARD);
    });
    let uri = format!("qemu+ssh://snaptree@127.0.0.1:{port}/system?no_tty=1");
    let body = t
        .api
        .request(
            Some(&t.admin()),
            "mutation($u: String!) { createHost(name: \"silent\", hypervisor: KVM, uri: $u) { id } }",
            json!({ "u": uri }),
        )
        .await;
    assert_eq!(error_code(&body), "VALIDATION", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("did not answer within 2 s"), "{message}");
    // The ssh that virsh started went with it.
    let needle = format!("{port}");
    wait_until("the host check's processes end", || {
        processes(&format!("ssh.*{needle}")) == 0
    })
    .await;
    drop(held);
}

#[tokio::test]
async fn one_socket_and_one_token_hold_a_bounded_number_of_subscriptions() {
    let t = Target::start(&[]).await;
    let before = t.baseline().await;
    // 5,000 subscriptions on one socket (ADMIN: no budget, so only the socket's cap
    // stops them).
    let mut socket = Subscriber::connect(&t.url(), Some(&t.admin()))
        .await
        .unwrap();
    let subscribe = |i: usize| (format!("s{i}"), "subscription { events { id } }");
    for i in 0..100 {
        let (id, query) = subscribe(i);
        socket.subscribe(&id, query, json!({})).await;
    }
    // Past the cap, each one is refused; the client reads its refusals as it goes.
    for batch in 1..50 {
        for i in batch * 100..(batch + 1) * 100 {
            let (id, query) = subscribe(i);
            socket.subscribe(&id, query, json!({})).await;
        }
        for _ in 0..100 {
            match socket.next().await {
                Frame::Error(_, payload) => {
                    assert_eq!(payload[0]["extensions"]["code"], "RATE_LIMITED")
                }
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
    }
    t.still_answers().await;
    // The 100 held ones are live: they hear of the next task.
    t.snapshot(&t.vms[2], "heard").await;
    match socket.next().await {
        Frame::Next(..) => {}
        other => panic!("expected an event, got {other:?}"),
    }
    drop(socket);
    t.settles(before, "5,000 subscriptions on one socket").await;

    // A VIEWER token holds at most 20 sockets.
    let mut sockets = Vec::new();
    for _ in 0..20 {
        sockets.push(
            Subscriber::connect(&t.url(), Some(&t.viewer))
                .await
                .unwrap(),
        );
    }
    let refused = Subscriber::connect(&t.url(), Some(&t.viewer)).await;
    assert_eq!(refused.err().unwrap().0, 4429);
    drop(sockets);
    // And its budget stops a flood of subscribes on one socket.
    let mut socket = Subscriber::connect(&t.url(), Some(&t.viewer))
        .await
        .unwrap();
    for i in 0..200 {
        socket
            .subscribe(
                &format!("v{i}"),
                "subscription { events { id } }",
                json!({}),
            )
            .await;
    }
    let mut limited = 0;
    while limited == 0 {
        if let Frame::Error(_, payload) = socket.next().await {
            assert_eq!(payload[0]["extensions"]["code"], "RATE_LIMITED");
            assert!(
                payload[0]["extensions"]["retryAfterSeconds"]
                    .as_u64()
                    .unwrap()
                    >= 1
            );
            limited += 1;
        }
    }
}

#[tokio::test]
async fn slow_and_silent_clients_are_cut_off() {
    let t = Target::start(&[]).await;
    let before = t.baseline().await;
    let addr = t
        .api
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/graphql")
        .to_owned();

    // 1,000 connections that never finish their headers, from four addresses (each
    // within the connections one address may hold).
    let mut idle = Vec::new();
    for n in 0..1000 {
        let mut tcp = tcp_from(&addr, attacker(n % 4)).await;
        tcp.write_all(b"POST /graphql HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        idle.push(tcp);
    }
    t.still_answers().await;
    for mut tcp in idle {
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(GUARD, tcp.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "a silent connection stayed open"
        );
    }
    t.settles(before, "1,000 unfinished headers").await;

    // Headers trickled a byte at a time are cut off at the header deadline, however
    // lively the trickle (it counts from the request's first byte).
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    let trickle = async {
        tcp.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        loop {
            let mut buf = [0u8; 256];
            tokio::select! {
                read = tcp.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => panic!("unfinished headers were answered"),
                },
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if tcp.write_all(b"X-Slow: y\r\n").await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::time::timeout(GUARD, trickle)
        .await
        .expect("a connection trickling its headers stayed open");

    // A body trickled a byte a second is cut off with TIMEOUT.
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(
        format!(
            "POST /graphql HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n",
            t.viewer
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let trickle = async {
        let mut answer = Vec::new();
        loop {
            let mut buf = [0u8; 4096];
            tokio::select! {
                read = tcp.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return answer,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                },
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    let _ = tcp.write_all(b" ").await;
                }
            }
        }
    };
    let answer = tokio::time::timeout(GUARD, trickle).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"TIMEOUT\""), "{answer}");

    // An idle keep-alive connection is closed too.
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let read = tokio::time::timeout(GUARD, tcp.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(read, Ok(0) | Err(_)));

    // 1,000 WebSockets that never send connection_init are closed with 4408.
    let mut silent = Vec::new();
    for n in 0..1000 {
        silent.push(Subscriber::open_from(&t.url(), attacker(n % 4)).await);
    }
    t.still_answers().await;
    for mut socket in silent {
        assert_eq!(closed(&mut socket).await.0, 4408);
    }
    t.settles(before, "1,000 silent WebSockets").await;
}

#[tokio::test]
async fn the_protocol_is_held_to() {
    let t = Target::start(&[]).await;
    let query = "subscription { events { id } }";
    // subscribe before connection_init: 4401.
    let mut socket = Subscriber::open(&t.url()).await;
    socket
        .send(json!({ "id": "1", "type": "subscribe", "payload": { "query": query } }))
        .await;
    assert_eq!(closed(&mut socket).await.0, 4401);
    // An id already running: 4409.
    let mut socket = Subscriber::connect(&t.url(), Some(&t.viewer))
        .await
        .unwrap();
    socket.subscribe("same", query, json!({})).await;
    socket.subscribe("same", query, json!({})).await;
    let (code, reason) = closed(&mut socket).await;
    assert_eq!(code, 4409, "{reason}");
    // A second connection_init: 4429.
    let mut socket = Subscriber::connect(&t.url(), Some(&t.viewer))
        .await
        .unwrap();
    let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {}", t.viewer) } });
    socket.send(init).await;
    assert_eq!(closed(&mut socket).await.0, 4429);
    // Not JSON of the protocol: 4400.
    let mut socket = Subscriber::connect(&t.url(), Some(&t.viewer))
        .await
        .unwrap();
    socket.send_text("{\"type\": \"launch\"}".into()).await;
    assert_eq!(closed(&mut socket).await.0, 4400);
    // An id can be used again once its operation completed.
    let mut socket = Subscriber::connect(&t.url(), Some(&t.viewer))
        .await
        .unwrap();
    for _ in 0..3 {
        socket
            .subscribe("again", "{ hosts { id } }", json!({}))
            .await;
        assert!(matches!(socket.next().await, Frame::Next(..)));
        assert!(matches!(socket.next().await, Frame::Complete(_)));
    }
}

#[tokio::test]
async fn concurrent_cancels_record_one_request() {
    let t = Target::start(&[]).await;
    let host = t
        .api
        .create_host("slow", "SIMULATED", "sim://?latency_ms=3000", None)
        .await;
    let vm = t.api.create_vm(&host, &t.project, "slow").await;
    let (_, task) = t.api.create_snapshot(&t.operator, &vm, "long").await;
    wait_for_running(&t, &task).await;
    let cancels = (0..25).map(|_| {
        let api = t.api.clone();
        let task = task.clone();
        async move {
            api.request(
                Some(&api.admin),
                "mutation($t: ID!) { cancelTask(id: $t) { state } }",
                json!({ "t": task }),
            )
            .await
        }
    });
    for body in futures_util::future::join_all(cancels).await {
        assert!(body.get("errors").is_none(), "{body}");
    }
    let done = t.api.finished(&t.api.admin, &task).await;
    let asked = done["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("cancel requested"))
        })
        .count();
    assert_eq!(asked, 1, "{done:#}");
}

async fn wait_for_running(t: &Target, task: &str) {
    let start = Instant::now();
    loop {
        let data = t
            .api
            .data(
                &t.api.admin,
                "query($t: ID!) { task(id: $t) { state } }",
                json!({ "t": task }),
            )
            .await;
        if data["task"]["state"] == "RUNNING" {
            return;
        }
        assert!(start.elapsed() < GUARD, "the task never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn budgets_limit_tokens_but_not_admin() {
    let t = Target::start(&[]).await;
    let client = common::target::client().build().unwrap();
    let mut limited = None;
    for _ in 0..200 {
        let response = client
            .post(&t.api.url)
            .bearer_auth(&t.viewer)
            .json(&json!({ "query": "{ hosts { id } }" }))
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("a VIEWER is held to its budget");
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "RATE_LIMITED");
    assert_eq!(body["errors"][0]["extensions"]["retryAfterSeconds"], retry);
    // ADMIN is not limited.
    for _ in 0..200 {
        t.still_answers().await;
    }
}

#[tokio::test]
async fn graphql_answers_are_never_cached_or_sniffed() {
    let t = Target::start(&[]).await;
    let response = common::target::client().build().unwrap()
        .post(&t.api.url)
        .bearer_auth(t.admin())
        .json(&json!({
            "query": "mutation($p: ID!) { createToken(projectId: $p, name: \"x\", role: VIEWER) { token } }",
            "variables": { "p": t.project },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    // Refusals too.
    let response = common::target::client()
        .build()
        .unwrap()
        .post(&t.api.url)
        .json(&json!({ "query": "{ hosts { id } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["cache-control"], "no-store");
}

/// CloudCIX's REST API and GraphQL draw on one budget per token: a VIEWER held back on
/// one is held back on the other, with CloudCIX's 429 on REST.
#[tokio::test]
async fn rest_and_graphql_share_each_tokens_budget() {
    // A budget that refills once a second: "at once" below then has a second's margin,
    // not the 50 ms of the default 20 a second, which a loaded machine can overrun.
    let t = Target::start(&["--rate-limit", "VIEWER=1:25000"]).await;
    let client = common::target::client().build().unwrap();
    let rest = t.url().trim_end_matches("graphql").to_owned();
    let mut limited = None;
    for _ in 0..200 {
        let response = client
            .get(format!("{rest}snapshot/"))
            .header("X-Auth-Token", &t.viewer)
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
    }
    let response = limited.expect("a VIEWER is held to its budget on REST");
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("Request was throttled."),
        "{body}"
    );
    // The same token on GraphQL, at once: the same budget.
    let response = client
        .post(&t.api.url)
        .bearer_auth(&t.viewer)
        .json(&json!({ "query": "{ hosts { id } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    // Another token of the project is not held back.
    let response = client
        .get(format!("{rest}snapshot/"))
        .header("X-Auth-Token", &t.operator)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    t.still_answers().await;
}

/// REST bodies are bounded like GraphQL's: deep nesting, a huge body and a list request
/// asking for unbounded work are refused, and the server stays small.
#[tokio::test]
async fn rest_bodies_and_list_requests_are_bounded() {
    let t = Target::start(&[]).await;
    // One pooled client throughout: the server closes a connection after refusing a body
    // it did not read (413), and says so (`Connection: close`), so that the client does
    // not send its next request on it (which CI once saw fail with a broken pipe).
    let client = common::target::client().build().unwrap();
    let rest = t.url().trim_end_matches("graphql").to_owned();
    let before = t.baseline().await;
    let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    for body in [
        deep.clone(),
        format!("{{\"vm_id\": {}, \"name\": {deep}}}", t.vms[0]),
    ] {
        let response = client
            .post(format!("{rest}snapshot/"))
            .header("X-Auth-Token", &t.operator)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await;
        // Refused with 400 or 413, or (past the body limit: 400,000 bytes) cut off while
        // it was still being sent, as the 4 MiB body below may be.
        if let Ok(response) = response {
            assert!(
                matches!(response.status().as_u16(), 400 | 413),
                "{}",
                response.status()
            );
        }
    }
    let huge = format!(
        "{{\"vm_id\": {}, \"name\": \"{}\"}}",
        t.vms[0],
        "x".repeat(4 << 20)
    );
    let response = client
        .post(format!("{rest}snapshot/"))
        .header("X-Auth-Token", &t.operator)
        .header("Content-Type", "application/json")
        .body(huge)
        .send()
        .await;
    // Refused with 413, or cut off while it was still being sent.
    if let Ok(response) = response {
        assert_eq!(response.status(), 413);
    }
    let many: Vec<String> = (0..5_000).map(|n| n.to_string()).collect();
    let response = client
        .get(format!("{rest}snapshot/?search[id__in]={}", many.join(",")))
        .header("X-Auth-Token", &t.operator)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error_code"], "iaas_snapshot_list_001");
    let unused: Vec<String> = (0..500).map(|n| format!("p{n}=1")).collect();
    let response = client
        .get(format!("{rest}snapshot/?{}", unused.join("&")))
        .header("X-Auth-Token", &t.operator)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["_metadata"]["warnings"].as_array().unwrap().len() <= 33);
    t.still_answers().await;
    assert!(
        t.server.rss_kib() < before + 64 * 1024,
        "the server grew from {before} KiB to {} KiB",
        t.server.rss_kib()
    );
}

#[tokio::test]
async fn a_token_that_keeps_sending_refused_documents_is_refused_before_parsing() {
    // Five refusals a second, in bursts of fifteen; the ADMIN token has no budget, so only
    // this bar stands between a flood of documents built to be refused and the parser.
    let t = Target::start(&["--refused-per-token", "5"]).await;
    let mut doubling = String::from("fragment F0 on Query { hosts { id } }\n");
    for i in 1..=39 {
        let p = i - 1;
        doubling.push_str(&format!("fragment F{i} on Query {{ ...F{p} ...F{p} }}\n"));
    }
    doubling.push_str("{ ...F39 }");
    let admin = t.admin();
    let mut barred = None;
    for i in 0..200 {
        let body = t.api.request(Some(&admin), &doubling, json!({})).await;
        match error_code(&body).as_str() {
            "QUERY_TOO_COMPLEX" => {}
            "RATE_LIMITED" => {
                barred = Some((i, body));
                break;
            }
            other => panic!("refusal {i} answered {other}: {body}"),
        }
    }
    let (i, body) = barred.expect("a flood of refused documents is barred");
    // The burst is fifteen: the sixteenth refusal bars the token, the next is refused.
    assert!(i >= 16, "barred after {i} refusals, before its burst");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("keep being refused (too complex"),
        "{message}"
    );
    let wait = body["errors"][0]["extensions"]["retryAfterSeconds"]
        .as_u64()
        .unwrap();
    assert!((1..=3).contains(&wait), "{body}");
    // The bar is the token's: even a simple query of it is refused, while another
    // token's is answered.
    let body = t
        .api
        .request(Some(&admin), "{ me { role } }", json!({}))
        .await;
    assert_eq!(error_code(&body), "RATE_LIMITED", "{body}");
    let mine = t.api.data(&t.viewer, "{ me { role } }", json!({})).await;
    assert_eq!(mine["me"]["role"], "VIEWER");
    // Once the bar lifts, the token is answered again.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let again = t.api.data(&admin, "{ me { role } }", json!({})).await;
    assert_eq!(again["me"]["role"], "ADMIN");
    t.still_answers().await;
}

/// Apollo's protocols as attacks (issue 31): many connections flooding invented
/// persisted-query hashes, and batches of a thousand operations. Every one is refused
/// clearly (an unknown hash, the token's refused-documents bar, a batch too large), the
/// server's memory stays bounded, and others are still answered.
#[tokio::test]
async fn floods_of_unknown_hashes_and_huge_batches_are_refused_with_memory_bounded() {
    use sha2::{Digest, Sha256};
    let t = Target::start(&[]).await;
    let before = t.baseline().await;
    let batch: Vec<serde_json::Value> = (0..1000)
        .map(|i| json!({ "query": format!("{{ a{i}: me {{ role }} }}") }))
        .collect();
    let batch = serde_json::to_vec(&batch).unwrap();
    let attackers: Vec<_> = (0..8)
        .map(|n| {
            let (url, token, batch) = (t.url(), t.viewer.clone(), batch.clone());
            tokio::spawn(async move {
                let client = common::target::client().build().unwrap();
                let mut codes = std::collections::BTreeMap::<String, usize>::new();
                for i in 0..100 {
                    let hash = hex::encode(Sha256::digest(format!("{n}-{i}").as_bytes()));
                    let unknown = json!({ "extensions": { "persistedQuery": { "version": 1, "sha256Hash": hash } } });
                    for body in [serde_json::to_vec(&unknown).unwrap(), batch.clone()] {
                        let answer: serde_json::Value = client
                            .post(&url)
                            .bearer_auth(&token)
                            .header("content-type", "application/json")
                            .body(body)
                            .send()
                            .await
                            .unwrap()
                            .json()
                            .await
                            .unwrap();
                        *codes.entry(error_code(&answer)).or_default() += 1;
                    }
                }
                codes
            })
        })
        .collect();
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for attacker in attackers {
        for (code, n) in attacker.await.unwrap() {
            *codes.entry(code).or_default() += n;
        }
        t.still_answers().await;
    }
    eprintln!("{codes:?}");
    let refused: usize = [
        "PERSISTED_QUERY_NOT_FOUND",
        "RATE_LIMITED",
        "QUERY_TOO_COMPLEX",
    ]
    .iter()
    .map(|c| codes.get(*c).copied().unwrap_or(0))
    .sum();
    assert_eq!(
        refused, 1600,
        "every request refused, and clearly: {codes:?}"
    );
    t.settles(before, "unknown hashes and huge batches").await;
}
