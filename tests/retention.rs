//! Retention (issue 29): what has aged out is retired, and nothing else; the rows go to
//! the archive first; a replay from a retired cursor is told so; and two processes
//! retiring at once neither fail nor retire a row twice. The server's clock (its clock
//! file) moves the ages on; nothing waits for days.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::path::Path;
use std::time::{Duration, Instant};

use common::process::{self, ServerProcess};
use common::ws::{Frame, Subscriber};
use common::{Api, METRICS_TOKEN, TestApp, TestDb, scrape, test_robot, value};
use serde_json::{Value, json};
use snaptree::config::{Retention, RobotConfig, Timeouts};

const DAY: Duration = Duration::from_secs(24 * 3600);
/// A hang guard, not a time limit: retention runs every 50 ms here.
const GUARD: Duration = Duration::from_secs(90);

/// Every archived row, by kind (`events`, `tasks`, ...), from every file in `dir`.
fn archived(dir: &Path) -> BTreeMap<String, Vec<Value>> {
    let mut rows: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return rows;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        // <kind>-<yyyy>-<mm>-<dd>-<pid>.jsonl.gz
        let kind = name.split("-20").next().unwrap().to_owned();
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(std::fs::File::open(&path).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        let lines = text.lines().map(|l| serde_json::from_str(l).unwrap());
        rows.entry(kind).or_default().extend(lines);
    }
    rows
}

/// The ids of `rows`.
fn ids(rows: Option<&Vec<Value>>) -> Vec<i64> {
    rows.map_or_else(Vec::new, |rows| {
        // Numbers in the archive, strings (`ID`) from the API.
        rows.iter()
            .map(|r| {
                r["id"]
                    .as_i64()
                    .or_else(|| r["id"].as_str()?.parse().ok())
                    .unwrap()
            })
            .collect()
    })
}

/// Waits (with a hang guard) until `done` holds of what `read` reads.
async fn until<F, Fut>(what: &str, read: F, done: impl Fn(&Value) -> bool) -> Value
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Value>,
{
    let start = Instant::now();
    loop {
        let now = read().await;
        if done(&now) {
            return now;
        }
        assert!(start.elapsed() < GUARD, "{what} never happened: {now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn retention_retires_what_is_past_its_age_and_nothing_else() {
    let archive = tempfile::tempdir().unwrap();
    // A create on the slow host runs for ten minutes: a task still running when its
    // events and its age would be retired.
    let robot = RobotConfig {
        timeouts: Timeouts::all(Duration::from_secs(3600)),
        ..test_robot()
    };
    let app = TestApp::builder()
        .robot(robot)
        .retention(Retention {
            events: Some(7 * DAY),
            tasks: Some(30 * DAY),
            history: Some(60 * DAY),
            archive: Some(archive.path().to_owned()),
            every: Duration::from_millis(50),
            batch: 4,
        })
        .spawn()
        .await;
    let t0 = chrono::Utc::now();
    app.set_clock(t0);
    let f = app.project_with_vm("kept", "sim://").await;
    let op = f.operator.as_str();
    let kept = app.snapshot_built(op, &f.vm, "kept").await;
    let gone = app.snapshot_built(op, &f.vm, "gone").await;
    let (_, delete) = app.delete(op, &gone, false).await;
    app.finished(op, &delete).await;
    let slow = app
        .create_host("slow", "SIMULATED", "sim://?latency_ms=600000", None)
        .await;
    let busy_vm = app.create_vm(&slow, &f.project, "busy").await;
    let (_, running) = app.create_snapshot(op, &busy_vm, "long").await;
    let task_query = "query($t: ID!) { task(id: $t) { id state events(first: 100) { id } } }";
    let task = |id: String| {
        let app = &app;
        async move { app.data(op, task_query, json!({ "t": id })).await["task"].clone() }
    };
    until(
        "the long task starting",
        || task(running.clone()),
        |t| t["state"] == "RUNNING",
    )
    .await;
    let ended: Vec<String> = {
        let data = app
            .data(
                op,
                "query($v: ID!) { tasks(vmId: $v, first: 10) { edges { node { id } } } }",
                json!({ "v": f.vm }),
            )
            .await;
        data["tasks"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ended.len(), 3, "two creates and a delete");
    let mut ended_events = Vec::new();
    for id in &ended {
        ended_events.extend(ids(task(id.clone()).await["events"]
            .as_array()
            .cloned()
            .as_ref()));
    }
    let running_events = ids(task(running.clone()).await["events"]
        .as_array()
        .cloned()
        .as_ref());

    // Eight days on: the ended tasks' events are retired, the running task's are not,
    // and every task is still there.
    app.set_clock(t0 + chrono::Duration::days(8));
    for id in &ended {
        let t = until(
            "events retired",
            || task(id.clone()),
            |t| t["events"] == json!([]),
        )
        .await;
        assert_eq!(t["id"], id.as_str(), "the task itself stays");
    }
    assert_eq!(
        ids(task(running.clone()).await["events"]
            .as_array()
            .cloned()
            .as_ref()),
        running_events,
        "a running task keeps its events"
    );
    // A replay from a retired event is told where the kept events start.
    let mut socket = Subscriber::connect(&app.url, Some(op)).await.unwrap();
    socket
        .subscribe(
            "old",
            "subscription($a: ID) { events(after: $a) { id } }",
            json!({ "a": ended_events[0].to_string() }),
        )
        .await;
    match socket.next().await {
        Frame::Error(id, errors) => {
            assert_eq!(id, "old");
            assert_eq!(
                errors[0]["extensions"]["code"], "CURSOR_EXPIRED",
                "{errors}"
            );
            assert_eq!(
                errors[0]["extensions"]["oldestEventId"],
                running_events[0].to_string()
            );
        }
        other => panic!("a retired cursor was answered {other:?}"),
    }
    // Without a cursor, or from 0 (what is kept), it follows.
    socket
        .subscribe("now", "subscription { events { id } }", json!({}))
        .await;

    // A month on: the ended tasks are gone, the running one stays; the closed snapshot
    // and its history stay (history is kept longest).
    app.set_clock(t0 + chrono::Duration::days(31));
    for id in &ended {
        until("the task retired", || task(id.clone()), |t| t.is_null()).await;
    }
    assert_eq!(task(running.clone()).await["state"], "RUNNING");
    let snapshots = "query($v: ID!) { vm(id: $v) { snapshots(includeClosed: true) { id state history(first: 50) { state } } } }";
    let listed = app.data(op, snapshots, json!({ "v": f.vm })).await;
    let closed = listed["vm"]["snapshots"].as_array().unwrap();
    assert_eq!(closed.len(), 2, "{listed}");
    assert!(!closed[1]["history"].as_array().unwrap().is_empty());

    // Two months on: the closed snapshot goes with its history; the open one and all of
    // its history stay.
    app.set_clock(t0 + chrono::Duration::days(61));
    let left = until(
        "the closed snapshot retired",
        || async { app.data(op, snapshots, json!({ "v": f.vm })).await },
        |d| {
            d["vm"]["snapshots"]
                .as_array()
                .is_some_and(|s| s.len() == 1)
        },
    )
    .await;
    assert_eq!(left["vm"]["snapshots"][0]["id"], kept.as_str());
    assert_eq!(
        left["vm"]["snapshots"][0]["history"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert!(
        app.data(
            op,
            "query($s: ID!) { snapshot(id: $s) { id } }",
            json!({ "s": gone })
        )
        .await["snapshot"]
            .is_null()
    );

    // The archive holds exactly what was retired, once.
    let rows = archived(archive.path());
    let mut events = ids(rows.get("events"));
    events.sort_unstable();
    let mut expected = ended_events.clone();
    expected.sort_unstable();
    assert_eq!(events, expected, "every retired event, once");
    let mut tasks = ids(rows.get("tasks"));
    tasks.sort_unstable();
    let mut ended_ids: Vec<i64> = ended.iter().map(|t| t.parse().unwrap()).collect();
    ended_ids.sort_unstable();
    assert_eq!(tasks, ended_ids);
    assert_eq!(ids(rows.get("snapshots")), [gone.parse::<i64>().unwrap()]);
    let history = rows.get("snapshot_history").unwrap();
    assert!(
        history
            .iter()
            .all(|h| h["snapshot_id"] == gone.parse::<i64>().unwrap())
    );
    // The work done shows in the metrics, with what is kept.
    let (_, text) = scrape(&app, Some(METRICS_TOKEN)).await;
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let metrics = prometheus_parse::Scrape::parse(lines).unwrap();
    let retired = |kind| value(&metrics, "snaptree_retired_rows_total", &[("kind", kind)]);
    assert_eq!(retired("tasks"), 3.0);
    assert_eq!(retired("snapshots"), 1.0);
    assert_eq!(retired("events"), ended_events.len() as f64);
    assert!(value(&metrics, "snaptree_table_rows", &[("table", "snapshots")]) >= 2.0);
    assert!(
        value(
            &metrics,
            "snaptree_table_oldest_row_age_seconds",
            &[("table", "tasks")]
        ) > 0.0
    );
    drop(socket);
}

#[tokio::test]
async fn two_processes_retire_at_once_without_errors_or_doubles() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path()).await;
    let database = db.cli_url();
    let sim = dir.path().join("sim");
    let admin = process::token(&database, "ops", "ADMIN");
    let clock = dir.path().join("clock");
    let t0 = chrono::Utc::now();
    std::fs::write(&clock, t0.to_rfc3339()).unwrap();
    let start = |name: &str| {
        let archive = dir.path().join(format!("archive-{name}"));
        let log = dir.path().join(format!("{name}.log"));
        let flags = [
            "--clock-file",
            clock.to_str().unwrap(),
            "--keep-events",
            "1d",
            "--keep-tasks",
            "2d",
            "--keep-history",
            "3d",
            "--archive-dir",
            archive.to_str().unwrap(),
            "--retention-every-ms",
            "20",
            "--retention-batch",
            "3",
        ];
        let server = ServerProcess::start_logging(&database, &sim, &flags, Some(&log));
        (server, archive, log)
    };
    let (first, first_archive, first_log) = start("first");
    let (second, second_archive, second_log) = start("second");
    // The ADMIN's token has no budget of requests; the work is the test's, not a tenant's.
    let api = Api::new(&first.url, admin);
    let f = api.project_with_vm("busy", "sim://").await;
    let mut made = Vec::new();
    for i in 0..12 {
        let id = api
            .snapshot_built(&api.admin, &f.vm, &format!("s{i}"))
            .await;
        let (_, task) = api.delete(&api.admin, &id, false).await;
        api.finished(&api.admin, &task).await;
        made.push(id.parse::<i64>().unwrap());
    }
    // Ten days on, both retire everything the 24 tasks left.
    std::fs::write(&clock, (t0 + chrono::Duration::days(10)).to_rfc3339()).unwrap();
    let all = "query($v: ID!) { tasks(vmId: $v, first: 100) { edges { node { id } } }
                 vm(id: $v) { snapshots(includeClosed: true) { id } } }";
    until(
        "everything retired",
        || api.data(&api.admin, all, json!({ "v": f.vm })),
        |d| d["tasks"]["edges"] == json!([]) && d["vm"]["snapshots"] == json!([]),
    )
    .await;
    // Whichever process retired a row, none was retired twice.
    let (a, b) = (archived(&first_archive), archived(&second_archive));
    for kind in ["events", "tasks", "snapshots", "snapshot_history"] {
        let (mine, theirs) = (ids(a.get(kind)), ids(b.get(kind)));
        let all: BTreeSet<i64> = mine.iter().chain(&theirs).copied().collect();
        assert_eq!(all.len(), mine.len() + theirs.len(), "{kind} retired twice");
        if kind == "tasks" {
            assert_eq!(all.len(), 24, "every task, once");
        }
        if kind == "snapshots" {
            assert_eq!(all, made.iter().copied().collect(), "every snapshot, once");
        }
    }
    for log in [&first_log, &second_log] {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(!text.contains("retention could not retire"), "{text}");
    }
    drop((first, second));
}
