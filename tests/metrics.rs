//! `/metrics` (issue 11): the counts after a known set of actions, failures included,
//! the whole text parsed as Prometheus reads it, and who may scrape it. Against a server
//! on SQLite, or PostgreSQL with `SNAPTREE_TEST_DATABASE=postgres`.

mod common;

use common::{METRICS_TOKEN, TestApp, scrape, value};
use prometheus_parse::{Scrape, Value};
use serde_json::json;

#[tokio::test]
async fn metrics_count_what_happened_and_only_an_admin_or_the_scraper_reads_them() {
    let app = TestApp::spawn().await;
    let ok = app.project_with_vm("acme", "sim://").await;
    let full_disk = app
        .create_host(
            "full",
            "SIMULATED",
            "sim://?fail_rate=1&fail_on=create",
            None,
        )
        .await;
    let broken = app.create_vm(&full_disk, &ok.project, "broken").await;
    app.snapshot_built(&ok.operator, &ok.vm, "a").await;
    app.snapshot_built(&ok.operator, &ok.vm, "b").await;
    let (_, task) = app.create_snapshot(&ok.operator, &broken, "c").await;
    assert_eq!(app.finished(&ok.operator, &task).await["state"], "FAILED");
    // One operation refused before it ran, one that ran into an error.
    let query = "{ vm(id: \"1\") { id } }";
    assert_eq!(
        app.error_code(None, query, json!({})).await,
        "UNAUTHENTICATED"
    );
    let mutation = "mutation($v: ID!) { createSnapshot(vmId: $v, name: \"a\") { task { id } } }";
    assert_eq!(
        app.error_code(Some(&ok.operator), mutation, json!({ "v": ok.vm }))
            .await,
        "VALIDATION"
    );

    // Who may scrape.
    assert_eq!(scrape(&app, None).await.0, 401);
    assert_eq!(scrape(&app, Some("not-a-token")).await.0, 401);
    assert_eq!(scrape(&app, Some(&ok.operator)).await.0, 403);
    assert_eq!(scrape(&app, Some(&app.admin)).await.0, 200);
    let (status, text) = scrape(&app, Some(METRICS_TOKEN)).await;
    assert_eq!(status, 200);

    // The whole text is Prometheus's: every sample line parses, and nothing is left over.
    let lines: Vec<std::io::Result<String>> = text.lines().map(|l| Ok(l.to_owned())).collect();
    let parsed = Scrape::parse(lines.into_iter()).expect("the text parses");
    let sample_lines = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    let histogram_lines: usize = parsed
        .samples
        .iter()
        .map(|s| match &s.value {
            Value::Histogram(buckets) => buckets.len(),
            _ => 1,
        })
        .sum();
    assert_eq!(histogram_lines, sample_lines, "{text}");

    let ended = |state: &str| {
        value(
            &parsed,
            "snaptree_tasks_ended_total",
            &[("kind", "BUILD"), ("state", state)],
        )
    };
    assert_eq!((ended("SUCCEEDED"), ended("FAILED")), (2.0, 1.0), "{text}");
    let durations = value(
        &parsed,
        "snaptree_task_duration_seconds_count",
        &[("kind", "BUILD")],
    );
    assert_eq!(durations, 3.0, "{text}");
    let errors = value(
        &parsed,
        "snaptree_host_call_errors_total",
        &[("host", "full"), ("class", "permanent")],
    );
    assert_eq!(errors, 1.0, "{text}");
    let calls = value(
        &parsed,
        "snaptree_host_call_duration_seconds_count",
        &[("host", "acme-host")],
    );
    assert_eq!(calls, 2.0, "{text}");
    let operations = |outcome: &str, code: &str| {
        value(
            &parsed,
            "snaptree_graphql_operations_total",
            &[("outcome", outcome), ("code", code)],
        )
    };
    assert!(operations("refused", "UNAUTHENTICATED") >= 1.0, "{text}");
    assert!(operations("error", "VALIDATION") >= 1.0, "{text}");
    assert!(operations("ok", "") >= 1.0, "{text}");
    assert_eq!(value(&parsed, "snaptree_tasks_queued", &[]), 0.0);
    assert_eq!(
        value(&parsed, "snaptree_oldest_queued_task_age_seconds", &[]),
        0.0
    );
    // No tenant's secret or names in a label.
    for secret in [
        ok.operator.as_str(),
        "acme-vm",
        "broken",
        app.admin.as_str(),
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}

#[tokio::test]
async fn the_queue_and_open_sockets_are_read_at_the_scrape() {
    let app = TestApp::spawn().await;
    // One task at a time: the second VM's task waits while the first runs.
    let host = app
        .create_host_with("slow", "SIMULATED", "sim://?latency_ms=1500", None, Some(1))
        .await;
    let project = app.create_project("p").await;
    let op = app.create_token(&project, "OPERATOR").await;
    let one = app.create_vm(&host, &project, "one").await;
    let two = app.create_vm(&host, &project, "two").await;
    let (_, first) = app.create_snapshot(&op, &one, "a").await;
    let (_, second) = app.create_snapshot(&op, &two, "b").await;
    let socket = common::ws::Subscriber::connect(&app.url, Some(&op))
        .await
        .expect("accepted");
    let (_, text) = scrape(&app, Some(METRICS_TOKEN)).await;
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    assert_eq!(value(&parsed, "snaptree_tasks_queued", &[]), 1.0, "{text}");
    assert_eq!(
        value(&parsed, "snaptree_tasks_running", &[("host", "slow")]),
        1.0,
        "{text}"
    );
    assert!(value(&parsed, "snaptree_oldest_queued_task_age_seconds", &[]) >= 0.0);
    assert_eq!(
        value(&parsed, "snaptree_websockets_open", &[]),
        1.0,
        "{text}"
    );
    // A subscription is counted while it runs, and no longer once it completes.
    assert_eq!(value(&parsed, "snaptree_subscriptions_open", &[]), 0.0);
    let mut socket = socket;
    socket
        .subscribe(
            "1",
            "subscription($t: ID!) { taskEvents(taskId: $t) { state } }",
            json!({ "t": second }),
        )
        .await;
    socket.event("taskEvents").await; // the task's current state: the stream runs
    let (_, text) = scrape(&app, Some(METRICS_TOKEN)).await;
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    assert_eq!(
        value(&parsed, "snaptree_subscriptions_open", &[]),
        1.0,
        "{text}"
    );
    app.finished(&op, &first).await;
    app.finished(&op, &second).await;
    loop {
        match socket.next().await {
            common::ws::Frame::Complete(id) if id == "1" => break,
            common::ws::Frame::Next(..) => {}
            other => panic!("expected events then complete, got {other:?}"),
        }
    }
    // The stream is dropped just after its `complete` is sent (a hang guard, no limit).
    let mut text = String::new();
    for _ in 0..500 {
        text = scrape(&app, Some(METRICS_TOKEN)).await.1;
        if text.contains("snaptree_subscriptions_open 0") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    assert_eq!(
        value(&parsed, "snaptree_subscriptions_open", &[]),
        0.0,
        "{text}"
    );
    // Every event the pump delivered was timed.
    assert!(
        value(&parsed, "snaptree_event_pump_lag_seconds", &[]) >= 4.0,
        "{text}"
    );
    drop(socket);
}

/// `--metrics-listen`: `/metrics` on an address of its own, open there, and gone from
/// the API's address; with `--metrics-token` too, the token is asked for there as well.
#[tokio::test]
async fn metrics_on_an_address_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("m.db").display());
    let server = common::process::ServerProcess::start(
        &db,
        &dir.path().join("sim"),
        &["--metrics-listen", "127.0.0.1:0"],
    );
    let metrics = server
        .banner
        .split_whitespace()
        .find(|w| w.ends_with("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address in {:?}", server.banner))
        .to_owned();
    let (status, text) = get(&metrics).await;
    assert_eq!(status, 200);
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    assert!(text.contains("snaptree_tasks_queued"), "{text}");
    let (status, _) = get(&format!("{}metrics", server.url)).await;
    assert_eq!(status, 404, "not on the API's address");
    drop(server);

    let server = common::process::ServerProcess::start(
        &db,
        &dir.path().join("sim"),
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--metrics-token",
            "t0ken-for-the-scraper",
        ],
    );
    let metrics = server
        .banner
        .split_whitespace()
        .find(|w| w.ends_with("/metrics"))
        .unwrap()
        .to_owned();
    assert_eq!(get(&metrics).await.0, 401);
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}
