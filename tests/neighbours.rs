//! Hostile neighbours, round 2: the attacks on the surfaces added after the first round
//! (REST, policies, connections), each against a real `snaptree serve` process
//! ([`common::target::Target`]). Every attack is refused or bounded, and the server keeps
//! answering the others.
//!
//! Waits here are hang guards (a minute or more), never performance limits.

mod common;

use std::time::{Duration, Instant};

use common::target::{GUARD, Target, attacker, tcp_from};
use common::ws::Subscriber;
use common::{error_code, process};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The server's `host:port`.
fn address(t: &Target) -> String {
    t.url()
        .trim_start_matches("http://")
        .trim_end_matches("/graphql")
        .to_owned()
}

/// Sends `head` (a request's line and headers, without the blank line) and then its body
/// a byte every 300 ms, for ever; the server's answer once it closes or answers, or
/// `None` if the hang guard passed first.
async fn trickle(mut tcp: TcpStream, head: &str) -> Option<String> {
    tcp.write_all(format!("{head}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let talk = async {
        let mut answer = Vec::new();
        loop {
            let mut buf = [0u8; 4096];
            tokio::select! {
                read = tcp.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return String::from_utf8_lossy(&answer).into_owned(),
                    Ok(n) => {
                        answer.extend_from_slice(&buf[..n]);
                        // A whole answer (headers and a small body) is enough.
                        let text = String::from_utf8_lossy(&answer);
                        if text.contains("\r\n\r\n") && text.trim_end().ends_with('}') {
                            return text.into_owned();
                        }
                    }
                },
                _ = tokio::time::sleep(Duration::from_millis(300)) => {
                    let byte: &[u8] = if chunked { b"1\r\n \r\n" } else { b" " };
                    let _ = tcp.write_all(byte).await;
                }
            }
        }
    };
    tokio::time::timeout(GUARD, talk).await.ok()
}

/// A request's head from `peer` with `token` in CloudCIX's header, announcing a body.
fn rest_head(method: &str, path: &str, token: Option<&str>, body: &str) -> String {
    let auth = token.map_or(String::new(), |t| format!("\r\nX-Auth-Token: {t}"));
    format!("{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json{auth}\r\n{body}")
}

#[tokio::test]
async fn every_body_arrives_within_its_deadline_and_strangers_cost_only_their_headers() {
    let t = Target::start(&[]).await;
    let before = t.baseline().await;
    let addr = address(&t);
    let snapshot = t.snapshot(&t.vms[1], "kept").await;
    let patch = format!("/snapshot/{snapshot}/");

    // A body trickled on every REST route, even where the route reads none (CloudCIX's
    // client sends one with GET), is cut off at its deadline (--header-timeout 2).
    for (method, path, framing) in [
        ("GET", "/snapshot/", "Transfer-Encoding: chunked"),
        ("HEAD", "/snapshot_history/", "Content-Length: 100"),
        ("POST", "/snapshot/", "Content-Length: 100"),
        ("PATCH", patch.as_str(), "Transfer-Encoding: chunked"),
        ("PUT", patch.as_str(), "Content-Length: 100"),
    ] {
        let tcp = tcp_from(&addr, attacker(0)).await;
        let head = rest_head(method, path, Some(&t.operator), framing);
        let answer = trickle(tcp, &head).await;
        let answer = answer
            .unwrap_or_else(|| panic!("{method} {path}: a trickled body held its connection"));
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "{method} {path}: {answer}"
        );
        if method != "HEAD" {
            assert!(answer.contains("not received within 2 s"), "{answer}");
        }
    }
    // GraphQL's body too.
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked",
        t.viewer
    );
    let answer = trickle(tcp_from(&addr, attacker(0)).await, &head)
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"TIMEOUT\""), "{answer}");

    // A request without a valid token is answered from its headers: its body is never
    // waited for, on any route.
    for (method, path) in [
        ("GET", "/snapshot/"),
        ("POST", "/snapshot/"),
        ("PATCH", patch.as_str()),
        ("POST", "/graphql"),
    ] {
        for token in [None, Some("snaptree_0123")] {
            let mut head = rest_head(method, path, token, "Content-Length: 200000");
            if path == "/graphql" {
                head = head.replace("X-Auth-Token:", "Authorization: Bearer");
            }
            let mut tcp = tcp_from(&addr, attacker(1)).await;
            tcp.write_all(format!("{head}\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut buf = [0u8; 1024];
            let n = tokio::time::timeout(GUARD, tcp.read(&mut buf))
                .await
                .expect("an unauthenticated request is answered without its body")
                .unwrap();
            let answer = String::from_utf8_lossy(&buf[..n]);
            assert!(
                answer.starts_with("HTTP/1.1 401"),
                "{method} {path}: {answer}"
            );
        }
    }

    // 200 trickled bodies at once (an ADMIN's: no budget stops them first): each is cut
    // off, and the memory comes back.
    let mut trickles = Vec::new();
    for n in 0..200 {
        let tcp = tcp_from(&addr, attacker(2 + n % 4)).await;
        let head = rest_head(
            "POST",
            "/snapshot/",
            Some(&t.api.admin),
            "Content-Length: 250000",
        );
        trickles.push(tokio::spawn(async move { trickle(tcp, &head).await }));
    }
    t.still_answers().await;
    for trickle in trickles {
        let answer = trickle.await.unwrap().expect("a trickled body was cut off");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    t.settles(before, "200 trickled bodies").await;
}

/// Opens a connection from `from`, and sends one request on it: the connection, and
/// what it was answered.
async fn connect(addr: &str, from: std::net::IpAddr) -> (TcpStream, String) {
    let mut tcp = tcp_from(addr, from).await;
    // Written at once: a refused connection answers without reading, and may be closed
    // before a later write.
    let _ = tcp
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let read = async {
        loop {
            let mut buf = [0u8; 1024];
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            let text = String::from_utf8_lossy(&answer);
            if text.starts_with("HTTP/1.1 200") && text.ends_with("ok") {
                break;
            }
        }
    };
    tokio::time::timeout(GUARD, read).await.expect("an answer");
    (tcp, String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test]
async fn connections_are_capped_per_address_and_in_all_with_a_clear_refusal() {
    // Idle connections stay for the test's length (no --keep-alive 3).
    let t = Target::start_with(&[
        "--max-connections-per-peer",
        "20",
        "--max-connections",
        "60",
    ])
    .await;
    let addr = address(&t);
    // One address: 20 connections, WebSockets among them; the 21st is refused.
    let mut held = Vec::new();
    let mut sockets = Vec::new();
    for _ in 0..5 {
        sockets.push(Subscriber::open_from(&t.url(), attacker(0)).await);
    }
    for _ in 0..15 {
        let (tcp, answer) = connect(&addr, attacker(0)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        held.push(tcp);
    }
    let (_, answer) = connect(&addr, attacker(0)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("Retry-After: 1"), "{answer}");
    assert!(
        answer.contains("Too many connections from your address (at most 20 at once)"),
        "{answer}"
    );
    // Others are not held back by it.
    t.still_answers().await;
    let (_, answer) = connect(&addr, attacker(1)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Many addresses: the server's own cap, 60 in all.
    let mut refused = None;
    'fill: for n in 1..10 {
        for _ in 0..20 {
            let (tcp, answer) = connect(&addr, attacker(n)).await;
            if answer.starts_with("HTTP/1.1 503") {
                refused = Some(answer);
                break 'fill;
            }
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            held.push(tcp);
        }
    }
    let refused = refused.expect("the 61st connection is refused");
    assert!(
        refused.contains("as many connections as it takes (60)"),
        "{refused}"
    );
    assert!(held.len() + sockets.len() <= 60);

    // Closed connections give their places back (a WebSocket's too).
    held.clear();
    sockets.clear();
    let start = Instant::now();
    loop {
        let (_, answer) = connect(&addr, attacker(0)).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            start.elapsed() < GUARD,
            "places were not given back: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.still_answers().await;
}

/// A server whose clock is a file the test moves: the server, the file, the time it
/// starts at, and the file's directory (kept while the test runs).
async fn on_a_clock() -> (
    Target,
    std::path::PathBuf,
    chrono::DateTime<chrono::Utc>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let clock = dir.path().join("now");
    let t0: chrono::DateTime<chrono::Utc> = "2026-12-07T12:00:00Z".parse().unwrap();
    std::fs::write(&clock, t0.to_rfc3339()).unwrap();
    let t = Target::start(&["--clock-file", clock.to_str().unwrap()]).await;
    (t, clock, t0, dir)
}

/// A client of its own on loopback address `from`.
fn client_from(from: std::net::IpAddr) -> reqwest::Client {
    common::target::client()
        .local_address(from)
        .build()
        .unwrap()
}

#[tokio::test]
async fn invented_tokens_are_refused_by_address_before_any_lookup() {
    let t = Target::start(&[]).await;
    let before = t.baseline().await;
    let rest = t.url().trim_end_matches("graphql").to_owned();
    let flood = client_from(attacker(0));
    let query = json!({ "query": "{ vms { id } }" });
    // 300 invented tokens, of a well-formed shape; the address may fail 10 a second,
    // in bursts of 30.
    let start = Instant::now();
    let (mut unknown, mut barred) = (0u64, 0u64);
    for n in 0..300u32 {
        let token = format!("snaptree_{:064x}", u64::from(n) * 7919 + 1);
        let response = flood
            .post(t.url())
            .bearer_auth(&token)
            .json(&query)
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            401 => unknown += 1,
            429 => {
                assert!(response.headers().contains_key("retry-after"));
                let body: Value = response.json().await.unwrap();
                assert_eq!(error_code(&body), "RATE_LIMITED");
                let message = body["errors"][0]["message"].as_str().unwrap();
                assert!(
                    message.contains("failed authentications from your address"),
                    "{message}"
                );
                barred += 1;
            }
            other => panic!("an invented token was answered {other}"),
        }
    }
    let seconds = start.elapsed().as_secs() + 1;
    assert!(barred > 0, "300 invented tokens were all looked up");
    assert!(
        unknown <= 30 + 10 * seconds,
        "{unknown} invented tokens were looked up in {seconds} s"
    );
    // While barred, the address is refused on every transport, even with a good token
    // (it is not looked up).
    let response = flood
        .get(format!("{rest}snapshot/"))
        .header("X-Auth-Token", &t.operator)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let socket = Subscriber::connect_from(&t.url(), Some(&t.operator), attacker(0)).await;
    let Err((code, reason)) = socket else {
        panic!("a barred address opened a WebSocket");
    };
    assert_eq!(code, 4429, "{reason}");
    // Another address is not held back.
    let other = client_from(attacker(1));
    let response = other
        .get(format!("{rest}snapshot/"))
        .header("X-Auth-Token", &t.operator)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    t.still_answers().await;
    // The barred address is let in again once its budget has room.
    let wait = Instant::now();
    loop {
        let response = flood
            .post(t.url())
            .bearer_auth(&t.viewer)
            .json(&query)
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            break;
        }
        assert_eq!(response.status(), 429);
        let after: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(wait.elapsed() < GUARD);
        tokio::time::sleep(Duration::from_secs(after)).await;
    }
    t.settles(before, "300 invented tokens").await;
}

#[tokio::test]
async fn numbers_out_of_range_are_refused_not_panicked_on() {
    let t = Target::start(&[]).await;
    let create = "mutation($input: PolicyInput!) { createPolicy(input: $input) { id } }";
    for (field, value) in [
        ("everySeconds", json!(-9_300_000_000_000_000i64)),
        ("everySeconds", json!(i64::MIN)),
        ("everySeconds", json!(i64::MAX)),
        ("everySeconds", json!(-1)),
        ("everySeconds", json!(0)),
        ("maxAgeSeconds", json!(i64::MIN)),
        ("maxAgeSeconds", json!(i64::MAX)),
        ("keepLast", json!(i32::MIN)),
    ] {
        let mut input = json!({ "name": "x", "vmId": t.vms[0], "everySeconds": 3600 });
        input[field] = value.clone();
        let body = t
            .api
            .request(Some(&t.operator), create, json!({ "input": input }))
            .await;
        assert_eq!(error_code(&body), "VALIDATION", "{field} = {value}: {body}");
    }
    t.still_answers().await;
    assert!(process::rss_kib(t.server.pid()) > 0, "the server is alive");
}

/// What a task and its events say, as `token` reads them.
async fn task_as(t: &Target, token: &str, task: &str) -> Value {
    let query = "query($t: ID!) { task(id: $t) { state error errorCode errorDetail \
                 events { message detail } } }";
    t.api.data(token, query, json!({ "t": task })).await["task"].clone()
}

#[tokio::test]
async fn host_text_reaches_admins_and_the_log_never_tenants() {
    let t = Target::start(&[]).await;
    // A host that refuses every create, in its own words (a stand-in for ssh's, virsh's
    // or PowerShell's, which name the host's infrastructure).
    let host = t
        .api
        .create_host(
            "refusing",
            "SIMULATED",
            "sim://?fail_rate=1&fail_on=create",
            None,
        )
        .await;
    let vm = t.api.create_vm(&host, &t.project, "doomed").await;
    let (_, task) = t.api.create_snapshot(&t.operator, &vm, "never").await;
    let ended = t.api.finished(&t.api.admin, &task).await;
    assert_eq!(ended["state"], "FAILED");
    for token in [&t.viewer, &t.operator] {
        let seen = task_as(&t, token, &task).await;
        let text = seen.to_string();
        assert!(
            !text.contains("simulated"),
            "a tenant saw the host's words: {text}"
        );
        assert_eq!(seen["error"], "the host refused the operation");
        assert_eq!(seen["errorCode"], "HOST_REFUSED");
        assert_eq!(seen["errorDetail"], Value::Null);
        let last = seen["events"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["message"], "failed: the host refused the operation");
        assert_eq!(last["detail"], Value::Null);
    }
    let seen = task_as(&t, &t.api.admin, &task).await;
    let detail = seen["errorDetail"].as_str().unwrap();
    assert!(detail.contains("simulated failure"), "{detail}");
    let last = seen["events"].as_array().unwrap().last().unwrap().clone();
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .contains("simulated failure")
    );

    // A host that cannot be reached: each retry says so in snaptree's words.
    let down = t.api.create_host("down", "SIMULATED", "sim://", None).await;
    let vm = t.api.create_vm(&down, &t.project, "cut-off").await;
    let outage = t.dir.path().join(format!("sim/host-{down}"));
    std::fs::create_dir_all(&outage).unwrap();
    std::fs::write(outage.join("DOWN"), "").unwrap();
    let (_, task) = t.api.create_snapshot(&t.operator, &vm, "never").await;
    t.api.finished(&t.api.admin, &task).await;
    let seen = task_as(&t, &t.viewer, &task).await;
    let text = seen.to_string();
    assert!(
        !text.contains("simulated"),
        "a tenant saw the host's words: {text}"
    );
    assert_eq!(seen["errorCode"], "HOST_UNREACHABLE");
    assert!(
        seen["error"]
            .as_str()
            .unwrap()
            .ends_with("attempts: the host could not be reached"),
        "{seen}"
    );
    let retried = seen["events"].as_array().unwrap().iter().any(|e| {
        e["message"].as_str().is_some_and(|m| {
            m.starts_with("attempt 1 failed: the host could not be reached; retrying")
        })
    });
    assert!(retried, "{seen}");
    // drift asks the host for a tenant: snaptree's words again.
    let drift = t
        .api
        .request(
            Some(&t.viewer),
            "query($v: ID!) { vm(id: $v) { drift { kind } } }",
            json!({ "v": vm }),
        )
        .await;
    let text = drift.to_string();
    assert!(text.contains("the host could not be reached"), "{text}");
    assert!(!text.contains("simulated"), "{text}");
}

#[tokio::test]
async fn tokens_end_at_their_expiry_on_every_transport() {
    // The server's clock is a file the test moves.
    let (t, clock, t0, _clock_dir) = on_a_clock().await;
    let rest = t.url().trim_end_matches("graphql").to_owned();
    let create = "mutation($p: ID!, $r: Role!, $e: DateTime) { createToken(projectId: $p, name: \"ends\", role: $r, expiresAt: $e) { token } }";
    let token_ending = |at: Option<String>, role: &'static str| {
        let api = &t.api;
        let project = t.project.clone();
        async move {
            let data = api
                .data(
                    &api.admin,
                    create,
                    json!({ "p": project, "r": role, "e": at }),
                )
                .await;
            data["createToken"]["token"].as_str().unwrap().to_owned()
        }
    };
    // An end in the past is refused; without one, OPERATOR and VIEWER tokens get the
    // default lifetime (90 days), ADMIN tokens none.
    let past = (t0 - chrono::Duration::hours(1)).to_rfc3339();
    let body = t
        .api
        .request(
            Some(&t.api.admin),
            create,
            json!({ "p": t.project, "r": "VIEWER", "e": past }),
        )
        .await;
    assert_eq!(error_code(&body), "VALIDATION", "{body}");
    let me = "{ me { expiresAt } }";
    let viewer = token_ending(None, "VIEWER").await;
    let expires = t.api.data(&viewer, me, json!({})).await["me"]["expiresAt"].clone();
    let expires: chrono::DateTime<chrono::Utc> = expires.as_str().unwrap().parse().unwrap();
    assert_eq!(expires, t0 + chrono::Duration::days(90));
    let admin = token_ending(None, "ADMIN").await;
    assert_eq!(
        t.api.data(&admin, me, json!({})).await["me"]["expiresAt"],
        Value::Null
    );

    // A token that ends in an hour, with an open WebSocket and a policy.
    let end = (t0 + chrono::Duration::hours(1)).to_rfc3339();
    let operator = token_ending(Some(end.clone()), "OPERATOR").await;
    let policy = t
        .api
        .data(
            &operator,
            "mutation($v: ID!) { createPolicy(input: { name: \"hourly\", vmId: $v, everySeconds: 3600 }) { id stoppedBecause } }",
            json!({ "v": t.vms[2] }),
        )
        .await["createPolicy"]
        .clone();
    assert_eq!(policy["stoppedBecause"], Value::Null);
    let mut socket = Subscriber::connect(&t.url(), Some(&operator))
        .await
        .unwrap();
    socket
        .subscribe("1", "subscription { events { id } }", json!({}))
        .await;

    // Past its end: refused on HTTP and REST, its socket closed as on revocation, and
    // its policy stopped, saying why.
    std::fs::write(&clock, (t0 + chrono::Duration::hours(2)).to_rfc3339()).unwrap();
    let (code, reason) = common::target::closed(&mut socket).await;
    assert_eq!(code, 4403, "{reason}");
    let body = t.api.request(Some(&operator), me, json!({})).await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED");
    let response = common::target::client()
        .build()
        .unwrap()
        .get(format!("{rest}snapshot/"))
        .header("X-Auth-Token", &operator)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let stopped = t
        .api
        .data(
            &t.api.admin,
            "query($p: ID!) { policy(id: $p) { stoppedBecause
               actions { resume { allowed reason refusal } } } }",
            json!({ "p": policy["id"] }),
        )
        .await;
    assert_eq!(stopped["policy"]["stoppedBecause"], "its token has expired");
    // Nothing resumes it, and the offer says so before anyone asks.
    let resume = &stopped["policy"]["actions"]["resume"];
    assert_eq!(resume["allowed"], false);
    assert_eq!(resume["refusal"], "POLICY_STATE");
    let why = resume["reason"].as_str().unwrap();
    assert!(
        why.contains("cannot run again: its token has expired"),
        "{why}"
    );
    let refused = t
        .api
        .request(
            Some(&t.api.admin),
            "mutation($p: ID!) { resumePolicy(id: $p) { id } }",
            json!({ "p": policy["id"] }),
        )
        .await;
    assert_eq!(error_code(&refused), "INVALID_STATE", "{refused}");
    // Other tokens go on.
    assert!(t.api.data(&viewer, me, json!({})).await["me"].is_object());
}

#[tokio::test]
async fn one_projects_refused_policy_runs_cannot_starve_anothers() {
    let (t, clock, t0, _clock_dir) = on_a_clock().await;
    let admin = &t.api.admin;
    // The crowded project (the ADMIN's own): at its quota, with 100 policies on 20 VMs,
    // whose 2,000 runs are refused each time they are tried.
    let own = t
        .api
        .data(admin, "{ me { project { id } } }", json!({}))
        .await;
    let crowded = own["me"]["project"]["id"].as_str().unwrap().to_owned();
    t.api
        .data(
            admin,
            "mutation($p: ID!) { updateProject(id: $p, maxSnapshots: 1) { id } }",
            json!({ "p": crowded }),
        )
        .await;
    let host = t
        .api
        .create_host("crowd", "SIMULATED", "sim://", None)
        .await;
    let mut vms = Vec::new();
    for i in 0..20 {
        vms.push(t.api.create_vm(&host, &crowded, &format!("vm-{i}")).await);
    }
    t.snapshot(&vms[0], "the one allowed").await;
    let create = "mutation($i: PolicyInput!) { createPolicy(input: $i) { id } }";
    for i in 0..100 {
        let input = json!({ "name": format!("p{i}"), "vmFilter": "vm-*", "everySeconds": 3600 });
        t.api.data(admin, create, json!({ "i": input })).await;
    }
    // The quiet project's one policy, made last.
    let quiet = t
        .api
        .data(
            &t.operator,
            create,
            json!({ "i": { "name": "quiet", "vmId": t.vms[3], "everySeconds": 3600 } }),
        )
        .await["createPolicy"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The slot comes for all of them at once.
    std::fs::write(&clock, (t0 + chrono::Duration::hours(1)).to_rfc3339()).unwrap();
    let runs = "query($p: ID!) { policy(id: $p) { runs { state attempts lastError } } }";
    let start = Instant::now();
    loop {
        let data = t.api.data(admin, runs, json!({ "p": quiet })).await;
        let run = &data["policy"]["runs"][0];
        if run["state"] == "CREATED" {
            break;
        }
        assert_ne!(run["state"], "MISSED", "{run}");
        assert!(
            start.elapsed() < GUARD,
            "the quiet project's run never ran: {run}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The crowded project's runs are refused for its quota, and stay pending to be
    // tried again (later each time). Its runs are tried in id order, 20 a tick, and the
    // list shows the newest first: wait for one that has been tried.
    let start = Instant::now();
    loop {
        let data = t
            .api
            .data(
                admin,
                "query { policies(first: 1) { runs(first: 20) { state attempts lastError } } }",
                json!({}),
            )
            .await;
        let runs = data["policies"][0]["runs"].as_array().unwrap().clone();
        let tried: Vec<&Value> = runs.iter().filter(|r| !r["lastError"].is_null()).collect();
        if let Some(run) = tried.first() {
            assert_eq!(run["state"], "PENDING", "{run}");
            assert!(
                run["lastError"].as_str().unwrap().contains("quota"),
                "{run}"
            );
            break;
        }
        assert!(
            start.elapsed() < GUARD,
            "no run of the crowded project was tried: {runs:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    t.still_answers().await;
}

#[tokio::test]
async fn a_viewer_cannot_monopolise_a_shared_kvm_host() {
    let dir = tempfile::tempdir().unwrap();
    let virsh = common::target::fake_virsh(dir.path());
    let virsh_flag = virsh.to_str().unwrap().to_owned();
    let t = Target::start(&["--virsh", &virsh_flag]).await;
    let host = t
        .api
        .create_host("kvm", "KVM", "qemu:///system", None)
        .await;
    let shells = || {
        std::fs::read_to_string(dir.path().join("shells.log"))
            .unwrap()
            .lines()
            .count()
    };
    let lists = || {
        std::fs::read_to_string(dir.path().join("calls.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("snapshot-list"))
            .count()
    };
    // The hostile project has 48 VMs whose listing takes a fifth of a second; another
    // project has one.
    let mut slow = Vec::new();
    for i in 0..48 {
        slow.push(
            t.api
                .register_vm(&host, &t.project, &format!("slow{i}"))
                .await,
        );
    }
    let other_project = t.api.create_project("neighbour").await;
    let neighbour = t.api.create_token(&other_project, "VIEWER").await;
    let theirs = t.api.register_vm(&host, &other_project, "theirs").await;
    // Warm up: the host's lasting connection is open.
    let drift = |vm: &str| format!("{{ vm(id: {vm}) {{ drift {{ kind }} }} }}");
    t.api.data(&neighbour, &drift(&theirs), json!({})).await;
    let (shells_before, lists_before) = (shells(), lists());

    // 240 drift requests of the project's VMs, 24 at a time (an ADMIN's token, which
    // no budget holds back: the project's share of the host must), each abandoned by
    // its client after 150 ms: before any listing (a fifth of a second) can answer it,
    // and after a refusal can. (At 50 ms, 24 requests arriving at once on PostgreSQL
    // sometimes all gave up before their database reads brought them to the share's
    // check, and nothing was measured.)
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let (mut abandoned, mut crowded) = (0, 0);
    for round in 0..10 {
        let asks = (0..24).map(|i| {
            let (client, url, viewer) = (impatient.clone(), t.url(), t.api.admin.clone());
            let query = drift(&slow[(round * 24 + i) % slow.len()]);
            async move {
                client
                    .post(url)
                    .bearer_auth(viewer)
                    .json(&json!({ "query": query }))
                    .send()
                    .await
            }
        });
        for answer in futures_util::future::join_all(asks).await {
            match answer {
                Err(_) => abandoned += 1,
                Ok(response) => match response.json::<Value>().await {
                    Ok(body) if body["errors"][0]["extensions"]["code"] == "RATE_LIMITED" => {
                        let message = body["errors"][0]["message"].as_str().unwrap();
                        assert!(
                            message.contains("reads of this host under way"),
                            "{message}"
                        );
                        crowded += 1;
                    }
                    Ok(_) => {}
                    Err(_) => abandoned += 1,
                },
            }
        }
        // Meanwhile the neighbour's read is answered.
        let mine = t.api.data(&neighbour, &drift(&theirs), json!({})).await;
        assert_eq!(mine["vm"]["drift"], json!([]), "{mine}");
    }
    eprintln!("{abandoned} abandoned, {crowded} refused for the project's share");
    assert!(
        abandoned > 0,
        "no request was abandoned: the test tested nothing"
    );
    assert!(
        crowded > 0,
        "one project had more than its share of the host's reads"
    );
    // No abandoned read cost the host's connection, and the host heard a bounded number
    // of questions: at most one per VM per 2 s, and 32 of the project's waiting.
    let (shells_after, lists_after) = (shells(), lists());
    assert_eq!(
        shells_after, shells_before,
        "abandoned reads cut the host's connection"
    );
    assert!(
        lists_after - lists_before < 240 / 2,
        "{} listings for 240 requests",
        lists_after - lists_before
    );
    t.still_answers().await;
}

#[tokio::test]
async fn a_policy_whose_runs_keep_being_missed_pauses_saying_why_until_resumed() {
    let (t, clock, t0, _clock_dir) = on_a_clock().await;
    let admin = &t.api.admin;
    // The project is at its quota (its one snapshot): every run is refused.
    t.api
        .data(
            admin,
            "mutation($p: ID!) { updateProject(id: $p, maxSnapshots: 1) { id } }",
            json!({ "p": t.project }),
        )
        .await;
    let policy = t
        .api
        .data(
            admin,
            "mutation($v: ID!) { createPolicy(input: { name: \"doomed\", vmId: $v, everySeconds: 3600 }) { id } }",
            json!({ "v": t.vms[4] }),
        )
        .await["createPolicy"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let state =
        "query($p: ID!) { policy(id: $p) { nextDueAt stoppedBecause runs(first: 50) { state }
                   actions { resume { allowed reason refusal } } } }";
    let read =
        || async { t.api.data(admin, state, json!({ "p": policy })).await["policy"].clone() };
    // Running, it has nothing to resume: not offered, and refused if asked.
    let running = read().await;
    assert_eq!(running["actions"]["resume"]["allowed"], false);
    assert_eq!(running["actions"]["resume"]["refusal"], "POLICY_STATE");
    let resume = "mutation($p: ID!) { resumePolicy(id: $p) { stoppedBecause } }";
    let refused = t
        .api
        .request(Some(&t.operator), resume, json!({ "p": policy }))
        .await;
    assert_eq!(error_code(&refused), "INVALID_STATE", "{refused}");
    // Slot after slot: each run is missed when the next slot comes.
    let mut paused = None;
    for hour in 1..=12 {
        let now = t0 + chrono::Duration::hours(hour);
        std::fs::write(&clock, now.to_rfc3339()).unwrap();
        let start = Instant::now();
        loop {
            let p = read().await;
            let next: chrono::DateTime<chrono::Utc> =
                p["nextDueAt"].as_str().unwrap().parse().unwrap();
            if next > now {
                if !p["stoppedBecause"].is_null() {
                    paused = Some((hour, p));
                }
                break;
            }
            assert!(start.elapsed() < GUARD, "slot {hour} was never taken: {p}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if paused.is_some() {
            break;
        }
    }
    let (hour, p) = paused.expect("the policy never paused");
    assert_eq!(hour, 11, "paused after the 10th miss: {p}");
    let why = p["stoppedBecause"].as_str().unwrap();
    assert!(
        why.contains("paused after 10 runs in a row were missed"),
        "{why}"
    );
    assert_eq!(p["actions"]["resume"]["allowed"], true, "{p}");
    let runs = p["runs"].as_array().unwrap().len();
    // Paused, it makes no more runs.
    std::fs::write(&clock, (t0 + chrono::Duration::hours(14)).to_rfc3339()).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(read().await["runs"].as_array().unwrap().len(), runs);
    // Resumed (its quota raised), its next slot runs and makes its snapshot.
    t.api
        .data(
            admin,
            "mutation($p: ID!) { updateProject(id: $p, maxSnapshots: 100) { id } }",
            json!({ "p": t.project }),
        )
        .await;
    let resumed = t
        .api
        .data(&t.operator, resume, json!({ "p": policy }))
        .await;
    assert_eq!(resumed["resumePolicy"]["stoppedBecause"], Value::Null);
    let start = Instant::now();
    loop {
        let p = read().await;
        if p["runs"][0]["state"] == "CREATED" {
            break;
        }
        assert!(
            start.elapsed() < GUARD,
            "the resumed policy made nothing: {p}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
