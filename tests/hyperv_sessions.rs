//! Lasting PowerShell sessions on Hyper-V hosts (issue 12), against the stand-in Windows
//! host, which counts the sessions it serves: one for a hundred operations and for every
//! robot worker, a new one after the session dies (nothing lost, no checkpoint doubled),
//! a hung one cut off and replaced, and an unreachable host that shows in its health
//! and leaves the robot's workers to other hosts.

mod common;

use std::time::Duration;

use common::hyperv::{self, HOST, StandIn};
use common::{TestApp, connections_opened, test_robot};
use serde_json::json;
use snaptree::config::{RobotConfig, Timeouts};

/// A project's OPERATOR token, a Hyper-V host and VMs `identifiers` on it.
async fn setup(app: &TestApp, standin: &StandIn, identifiers: &[&str]) -> (String, Vec<String>) {
    let (op, _, vms) = hyperv::setup(app, standin, identifiers).await;
    (op, vms)
}

async fn succeeded(app: &TestApp, op: &str, task: &str) -> serde_json::Value {
    let done = app.finished(op, task).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done:#}");
    done
}

#[tokio::test]
async fn one_session_serves_a_hundred_operations() {
    let (app, standin) = TestApp::builder().spawn_with_standin().await;
    let (op, vms) = setup(&app, &standin, &["web"]).await;
    let op = op.as_str();
    // The check when the host was registered had a session of its own; the VM's
    // registration opened the lasting one.
    let before = standin.sessions(HOST);
    assert_eq!(connections_opened(&app, "hyperv-1").await, 1.0);

    let mut snapshots = Vec::new();
    for i in 0..40 {
        snapshots.push(app.snapshot_built(op, &vms[0], &format!("s{i}")).await);
    }
    for snapshot in &snapshots[..30] {
        let (_, task) = app.apply(op, snapshot).await;
        succeeded(&app, op, &task).await;
    }
    for snapshot in &snapshots[10..40] {
        let (_, task) = app.delete(op, snapshot, false).await;
        succeeded(&app, op, &task).await;
    }
    assert_eq!(app.host_view(op, &vms[0]).await, standin.tree(HOST, "web"));
    assert_eq!(standin.tree(HOST, "web").0.len(), 10);
    assert_eq!(standin.sessions(HOST), before, "100 actions, one session");
    assert_eq!(connections_opened(&app, "hyperv-1").await, 1.0);
}

#[tokio::test]
async fn robot_workers_share_the_session() {
    let (app, standin) = TestApp::builder().spawn_with_standin().await;
    let names = ["a", "b", "c", "d", "e", "f"];
    let (op, vms) = setup(&app, &standin, &names).await;
    let before = standin.sessions(HOST);
    // Every VM's task queued at once: the robot's workers run them together.
    let mut tasks = Vec::new();
    for round in 0..3 {
        for vm in &vms {
            tasks.push(app.create_snapshot(&op, vm, &format!("r{round}")).await.1);
        }
        for task in tasks.drain(..) {
            succeeded(&app, &op, &task).await;
        }
    }
    for (vm, name) in vms.iter().zip(names) {
        assert_eq!(app.host_view(&op, vm).await, standin.tree(HOST, name));
        assert_eq!(standin.tree(HOST, name).0.len(), 3);
    }
    assert_eq!(standin.sessions(HOST), before);
}

#[tokio::test]
async fn a_session_that_dies_is_replaced_and_nothing_is_doubled() {
    let (app, standin) = TestApp::builder().spawn_with_standin().await;
    let (op, vms) = setup(&app, &standin, &["db"]).await;
    let op = op.as_str();
    app.snapshot_built(op, &vms[0], "first").await;
    let sessions = standin.sessions(HOST);

    // Dies before its next script (a look at the checkpoints, which changes nothing):
    // sent again on a new session, within the one attempt.
    standin.crash_next(HOST, "before", "Get-VMCheckpoint");
    let (_, task) = app.create_snapshot(op, &vms[0], "second").await;
    let done = succeeded(&app, op, &task).await;
    assert_eq!(done["attempts"], 1, "{done:#}");
    assert!(!standin.crash_pending(HOST));
    assert_eq!(standin.sessions(HOST), sessions + 1);

    // Dies once the checkpoint is taken, before it answers: the create fails, and its
    // retry finds the checkpoint there rather than take a second one of the same name.
    standin.crash_next(HOST, "after", "Checkpoint-VM");
    let (_, task) = app.create_snapshot(op, &vms[0], "third").await;
    let done = succeeded(&app, op, &task).await;
    assert!(!standin.crash_pending(HOST));
    assert_eq!(done["attempts"], 2, "{done:#}");
    let (pairs, _) = standin.tree(HOST, "db");
    let names: Vec<&str> = pairs.iter().map(|(n, _)| n.as_str()).collect();
    let mut unique = names.clone();
    unique.dedup();
    assert_eq!(names, unique, "no checkpoint twice: {names:?}");
    assert_eq!(pairs.len(), 3);
    assert_eq!(app.host_view(op, &vms[0]).await, standin.tree(HOST, "db"));
    assert_eq!(standin.sessions(HOST), sessions + 2);
}

#[tokio::test]
async fn a_hung_session_is_cut_off_and_replaced() {
    let robot = RobotConfig {
        timeouts: Timeouts::all(Duration::from_secs(1)),
        ..test_robot()
    };
    let (app, standin) = TestApp::builder().robot(robot).spawn_with_standin().await;
    let (op, vms) = setup(&app, &standin, &["app"]).await;
    let sessions = standin.sessions(HOST);
    standin.set_hung(HOST, true);
    let (_, task) = app.create_snapshot(&op, &vms[0], "late").await;
    // The first attempt hangs and is cut off after its timeout; then the host answers.
    loop {
        let data = app
            .data(
                &op,
                "query($t: ID!) { task(id: $t) { attempts } }",
                json!({ "t": task }),
            )
            .await;
        if data["task"]["attempts"].as_i64().unwrap() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    standin.set_hung(HOST, false);
    let done = succeeded(&app, &op, &task).await;
    // The project's tokens read snaptree's words; an ADMIN's, the host's too.
    let error_events = done["events"].to_string();
    assert!(
        error_events.contains("attempt 1 failed: the host was busy or did not answer in time"),
        "{error_events}"
    );
    let details = app.finished(&app.admin, &task).await["events"].to_string();
    assert!(details.contains("did not finish within 1.0s"), "{details}");
    assert!(
        standin.sessions(HOST) > sessions,
        "the hung session was replaced"
    );
    assert_eq!(app.host_view(&op, &vms[0]).await, standin.tree(HOST, "app"));
    assert_eq!(standin.tree(HOST, "app").0.len(), 1);
}

/// The host's health as `token` sees it.
async fn health(app: &TestApp, token: &str) -> serde_json::Value {
    let data = app
        .data(
            token,
            "{ hosts { name health { reachable since lastError } } }",
            json!({}),
        )
        .await;
    data["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "hyperv-1")
        .map(|h| h["health"].clone())
        .unwrap()
}

#[tokio::test]
async fn an_unreachable_host_shows_in_its_health_and_leaves_workers_to_other_hosts() {
    // One worker: a task waiting on the unreachable host must not keep it.
    let robot = RobotConfig {
        workers: 1,
        retry_base: Duration::from_millis(300),
        retry_cap: Duration::from_millis(300),
        max_attempts: 1000,
        give_up_after: Duration::from_secs(600),
        ..test_robot()
    };
    let (app, standin) = TestApp::builder().robot(robot).spawn_with_standin().await;
    let (op, vms) = setup(&app, &standin, &["web"]).await;
    let sim = app.project_with_vm("elsewhere", "sim://").await;
    app.snapshot_built(&op, &vms[0], "before").await;
    let up = health(&app, &app.admin).await;
    assert_eq!(up["reachable"], true, "{up}");

    standin.set_down(HOST, true);
    let (_, waiting) = app.create_snapshot(&op, &vms[0], "during").await;
    let down = loop {
        let h = health(&app, &app.admin).await;
        if h["reachable"] == false {
            break h;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        down["lastError"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{down}"
    );
    // The infrastructure behind a host is for ADMIN tokens.
    let seen = health(&app, &op).await;
    assert_eq!(seen["reachable"], false);
    assert_eq!(seen["lastError"], serde_json::Value::Null);

    // Another host's tasks run meanwhile, on the robot's one worker.
    for i in 0..3 {
        app.snapshot_built(&sim.operator, &sim.vm, &format!("meanwhile {i}"))
            .await;
    }
    let data = app
        .data(
            &op,
            "query($t: ID!) { task(id: $t) { state } }",
            json!({ "t": waiting }),
        )
        .await;
    assert_ne!(data["task"]["state"], "SUCCEEDED");

    standin.set_down(HOST, false);
    succeeded(&app, &op, &waiting).await;
    let back = loop {
        let h = health(&app, &app.admin).await;
        if h["reachable"] == true {
            break h;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_ne!(back["since"], down["since"]);
    assert!(
        back["lastError"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "the last error stays after the recovery: {back}"
    );
    assert_eq!(app.host_view(&op, &vms[0]).await, standin.tree(HOST, "web"));
}
