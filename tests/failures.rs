//! A failing host: permanent failures end a task at once and put the snapshots back as
//! snapshots.md says; transient ones are retried with backoff, within bounds.

mod common;

use common::{TestApp, test_robot};
use serde_json::{Value, json};
use snaptree::config::{RobotConfig, Timeouts};
use snaptree::hypervisor::sim::SimDriver;
use snaptree::hypervisor::{Driver, Progress};

/// A failing simulated host with a VM that already has snapshots `base` <- `current`
/// (taken on the host before snaptree knew it), imported into a new project.
async fn imported_vm_on_a_failing_host(app: &TestApp) -> (String, String, Vec<(String, String)>) {
    let project = app.create_project("failing").await;
    let op = app.create_token(&project, "OPERATOR").await;
    let host = app
        .create_host("broken", "SIMULATED", "sim://?fail_rate=1", None)
        .await;
    let on_host = SimDriver::new("sim://", &app.sim_dir().join(format!("host-{host}"))).unwrap();
    on_host
        .create("legacy", "base", &Progress::ignore())
        .await
        .unwrap();
    on_host
        .create("legacy", "current", &Progress::ignore())
        .await
        .unwrap();
    let data = app
        .data(
            &app.admin,
            "mutation($h: ID!, $p: ID!) { importVms(hostId: $h, projectId: $p) {
               id identifier snapshots(first: 10) { id name hostName state active parent { name } }
             } }",
            json!({ "h": host, "p": project }),
        )
        .await;
    let vm = &data["importVms"][0];
    assert_eq!(vm["identifier"], "legacy");
    assert_eq!(
        vm["snapshots"],
        json!([
            { "id": vm["snapshots"][0]["id"], "name": "base", "hostName": "base", "state": "RUNNING", "active": false, "parent": null },
            { "id": vm["snapshots"][1]["id"], "name": "current", "hostName": "current", "state": "RUNNING", "active": true, "parent": { "name": "base" } },
        ])
    );
    let snapshots = vm["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (op, vm["id"].as_str().unwrap().to_owned(), snapshots)
}

#[tokio::test]
async fn a_failing_host_leaves_every_snapshot_true_and_the_error_on_the_task() {
    let app = TestApp::spawn().await;
    let (op, vm, snapshots) = imported_vm_on_a_failing_host(&app).await;
    let (base, current) = (&snapshots[0].1, &snapshots[1].1);

    // Create fails for good: UNRESOURCED, the active flag back on the parent, one attempt.
    let (new, task) = app.create_snapshot(&op, &vm, "doomed").await;
    let done = app.finished(&op, &task).await;
    assert_eq!(done["state"], "FAILED");
    assert_eq!(done["attempts"], 1, "a permanent failure is not retried");
    // The project's tokens get snaptree's words; an ADMIN's, the host's too.
    assert_eq!(done["error"], "the host refused the operation", "{done:#}");
    assert_eq!(done["errorCode"], "HOST_REFUSED");
    assert_eq!(done["errorDetail"], Value::Null);
    let detail = app.finished(&app.admin, &task).await["errorDetail"].clone();
    assert!(
        detail.as_str().unwrap().contains("simulated failure"),
        "{detail}"
    );
    assert_eq!(done["snapshot"]["state"], "UNRESOURCED");
    assert_eq!(done["snapshot"]["active"], false);
    assert_eq!(
        app.active(&op, &vm).await.as_deref(),
        Some(current.as_str())
    );
    let message = done["events"].as_array().unwrap().last().unwrap()["message"]
        .as_str()
        .unwrap();
    assert_eq!(message, "failed: the host refused the operation");

    // An UNRESOURCED snapshot cannot be applied.
    let code = app
        .error_code(
            Some(&op),
            "mutation($s: ID!) { applySnapshot(id: $s) { task { id } } }",
            json!({ "s": new }),
        )
        .await;
    assert_eq!(code, "INVALID_STATE");

    // Apply fails: the snapshot is RUNNING again and the active one is the host's current.
    let (_, task) = app.apply(&op, base).await;
    let done = app.finished(&op, &task).await;
    assert_eq!(done["state"], "FAILED");
    assert_eq!(done["snapshot"]["state"], "RUNNING");
    assert_eq!(
        app.active(&op, &vm).await.as_deref(),
        Some(current.as_str())
    );

    // Delete fails: back to the previous state, nothing closed.
    let (_, task) = app.delete(&op, base, true).await;
    assert_eq!(app.finished(&op, &task).await["state"], "FAILED");
    let tree = app.tree(&op, &vm).await;
    let states: Vec<_> = tree.iter().map(|(_, _, s, _)| s.as_str()).collect();
    assert_eq!(states, ["RUNNING", "RUNNING", "UNRESOURCED"]);
    let data = app
        .data(
            &op,
            "query($s: ID!) { snapshot(id: $s) { removeSubtree } }",
            json!({ "s": base }),
        )
        .await;
    assert_eq!(data["snapshot"]["removeSubtree"], false);
    let data = app
        .data(
            &op,
            "query($v: ID!) { vm(id: $v) { busy } }",
            json!({ "v": vm }),
        )
        .await;
    assert_eq!(data["vm"]["busy"], false);
}

#[tokio::test]
async fn transient_failures_are_retried_and_give_up_with_the_last_error() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("flaky", "sim://?flaky_rate=1").await;
    let (_, task) = app.create_snapshot(&f.operator, &f.vm, "never").await;
    let done = app.finished(&f.operator, &task).await;
    let max = RobotConfig::default().max_attempts;
    assert_eq!(done["state"], "FAILED");
    assert_eq!(done["attempts"], max);
    assert_eq!(
        done["error"],
        format!("gave up after {max} attempts: the host was busy or did not answer in time")
    );
    assert_eq!(done["errorCode"], "HOST_BUSY");
    let detail = app.finished(&app.admin, &task).await["errorDetail"].clone();
    assert!(
        detail
            .as_str()
            .unwrap()
            .contains("simulated transient failure"),
        "{detail}"
    );
    let retries = done["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("retrying in"))
        })
        .count();
    assert_eq!(retries, usize::try_from(max).unwrap() - 1);
    assert_eq!(done["snapshot"]["state"], "UNRESOURCED");
}

#[tokio::test]
async fn a_flaky_host_gets_there_in_the_end() {
    let app = TestApp::builder()
        .robot(RobotConfig {
            max_attempts: 40,
            ..test_robot()
        })
        .spawn()
        .await;
    let f = app.project_with_vm("wobbly", "sim://?flaky_rate=0.5").await;
    let mut retried = 0;
    for i in 0..20 {
        let (_, task) = app
            .create_snapshot(&f.operator, &f.vm, &format!("s{i}"))
            .await;
        let done = app.finished(&f.operator, &task).await;
        assert_eq!(done["state"], "SUCCEEDED", "{done:#}");
        assert_eq!(done["snapshot"]["state"], "RUNNING");
        retried += usize::from(done["attempts"].as_i64().unwrap() > 1);
    }
    // Half of all attempts fail: twenty tasks without a retry would be a one in a million.
    assert!(retried > 0);
    // Every snapshot is on the host, in a chain, exactly once (creates are idempotent).
    let on_host =
        SimDriver::new("sim://", &app.sim_dir().join(format!("host-{}", f.host))).unwrap();
    let listed = on_host.list(&format!("{}-vm", "wobbly")).await.unwrap();
    assert_eq!(listed.len(), 20);
}

#[tokio::test]
async fn a_hung_host_call_fails_the_attempt_and_the_task_gives_up() {
    let app = TestApp::builder()
        .robot(RobotConfig {
            timeouts: Timeouts::all(std::time::Duration::from_millis(100)),
            max_attempts: 3,
            ..test_robot()
        })
        .spawn()
        .await;
    // Every operation takes a minute: far past the 100 ms the robot allows.
    let f = app.project_with_vm("hung", "sim://?latency_ms=60000").await;
    let (_, task) = app.create_snapshot(&f.operator, &f.vm, "stuck").await;
    let done = app.finished(&f.operator, &task).await;
    assert_eq!(done["state"], "FAILED");
    assert_eq!(done["attempts"], 3);
    assert_eq!(
        done["error"],
        "gave up after 3 attempts: the host was busy or did not answer in time"
    );
    let detail = app.finished(&app.admin, &task).await["errorDetail"].clone();
    assert!(
        detail
            .as_str()
            .unwrap()
            .contains("the host did not finish within 0.1s"),
        "{detail}"
    );
    assert_eq!(done["snapshot"]["state"], "UNRESOURCED");
}

/// A task whose attempts fail at once keeps its lease while it retries: every attempt
/// and every wait between them is shorter than a heartbeat's period, and yet the lease
/// must be renewed, so that no claim (here, this very robot's own poll) takes the task
/// up again while its robot still works on it.
#[tokio::test]
async fn a_task_that_fails_fast_keeps_its_lease_while_it_retries() {
    use std::time::Duration;
    let robot = RobotConfig {
        // A renewal every 500 ms; an expired lease is taken up within 100 ms.
        lease: Duration::from_millis(3000),
        poll: Duration::from_millis(100),
        // Every wait at most 375 ms (with jitter); 20 attempts (about 5 s) outlast a lease.
        retry_base: Duration::from_millis(100),
        retry_cap: Duration::from_millis(300),
        max_attempts: 20,
        give_up_after: Duration::from_secs(60),
        ..test_robot()
    };
    let app = TestApp::builder().robot(robot).spawn().await;
    let project = app.create_project("flaky").await;
    let op = app.create_token(&project, "OPERATOR").await;
    let host = app
        .create_host("flaky", "SIMULATED", "sim://?flaky_rate=1", None)
        .await;
    let vm = app.create_vm(&host, &project, "vm").await;
    let (_, task) = app.create_snapshot(&op, &vm, "s").await;
    app.finished(&op, &task).await;
    let data = app
        .data(
            &op,
            "query($t: ID!) { task(id: $t) { state attempts error events(first: 200) { message } } }",
            json!({ "t": task }),
        )
        .await;
    let done = &data["task"];
    assert_eq!(done["state"], "FAILED", "{done:#}");
    assert_eq!(done["attempts"], 20, "{done:#}");
    let messages: Vec<&str> = done["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    let taken = messages
        .iter()
        .filter(|m| m.starts_with("started by") || m.starts_with("taken up again"))
        .count();
    assert_eq!(
        taken, 1,
        "the task was claimed again while it ran: {messages:#?}"
    );
}

/// A task that fails keeps the progress its robot last reported (the simulated host
/// reports 25% before it refuses), not the progress it had when it was claimed.
#[tokio::test]
async fn a_failed_task_keeps_the_progress_it_reached() {
    let app = TestApp::spawn().await;
    let f = app
        .project_with_vm("p", "sim://?fail_rate=1&fail_on=create")
        .await;
    let (_, task) = app.create_snapshot(&f.operator, &f.vm, "broken").await;
    let done = app.finished(&f.operator, &task).await;
    assert_eq!(done["state"], "FAILED", "{done}");
    assert_eq!(done["progress"], 25, "{done}");
}
