//! What the API tells a client before it acts (issue 10): the caller (`me`), the actions
//! a VM and each snapshot allow with the reason when not, what a delete would do to
//! "Now", and apply with the current state saved first, when it works and when the save
//! fails. Run against a server process on SQLite, or PostgreSQL with
//! `SNAPTREE_TEST_DATABASE=postgres`.

mod common;

use common::TestApp;
use serde_json::{Value, json};
use snaptree::hypervisor::sim::SimDriver;
use snaptree::hypervisor::{Driver, Progress};

const VM_ACTIONS: &str = "query($v: ID!) { vm(id: $v) {
    actions { create { allowed reason refusal } revert { allowed reason refusal } }
    snapshots { id name actions {
      apply { allowed refusal } delete { allowed refusal }
      deleteSubtree { allowed refusal } rename { allowed refusal } } } } }";

/// The refusal of each action (`null` when allowed): VM's create and revert, then per
/// snapshot apply, delete, deleteSubtree and rename.
async fn refusals(app: &TestApp, token: &str, vm: &str) -> (Value, Value, Vec<Vec<Value>>) {
    let data = app.data(token, VM_ACTIONS, json!({ "v": vm })).await;
    let vm = &data["vm"];
    let per_snapshot = vm["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            ["apply", "delete", "deleteSubtree", "rename"]
                .iter()
                .map(|a| {
                    let offer = &s["actions"][a];
                    assert_eq!(offer["allowed"], offer["refusal"].is_null(), "{offer}");
                    offer["refusal"].clone()
                })
                .collect()
        })
        .collect();
    (
        vm["actions"]["create"]["refusal"].clone(),
        vm["actions"]["revert"]["refusal"].clone(),
        per_snapshot,
    )
}

#[tokio::test]
async fn me_names_the_caller_its_role_and_project() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("acme", "sim://").await;
    let viewer = app.create_token(&f.project, "VIEWER").await;
    let me = "{ me { name role project { id name } } }";
    let data = app.data(&viewer, me, json!({})).await;
    assert_eq!(data["me"]["role"], "VIEWER");
    assert_eq!(data["me"]["project"]["name"], "acme");
    assert_eq!(data["me"]["project"]["id"], f.project.as_str());
    assert!(data["me"]["name"].as_str().is_some_and(|n| !n.is_empty()));
    let data = app.data(&f.operator, me, json!({})).await;
    assert_eq!(data["me"]["role"], "OPERATOR");
    assert_eq!(app.error_code(None, me, json!({})).await, "UNAUTHENTICATED");
}

#[tokio::test]
async fn actions_say_what_the_caller_may_do_and_why_not() {
    let app = TestApp::spawn().await;
    let project = app.create_project("p").await;
    let op = app.create_token(&project, "OPERATOR").await;
    let viewer = app.create_token(&project, "VIEWER").await;
    let host = app
        .create_host("small", "SIMULATED", "sim://", Some(2))
        .await;
    let vm = app.create_vm(&host, &project, "web").await;

    // Empty: create is offered, revert has nothing to go back to.
    let (create, revert, shots) = refusals(&app, &op, &vm).await;
    assert_eq!((create, revert), (Value::Null, json!("SNAPSHOT_STATE")));
    assert!(shots.is_empty());

    app.snapshot_built(&op, &vm, "a").await;
    app.snapshot_built(&op, &vm, "b").await;
    let (create, revert, shots) = refusals(&app, &op, &vm).await;
    assert_eq!(create, "LIMIT", "2 of 2");
    assert_eq!(revert, Value::Null);
    assert!(shots.iter().flatten().all(Value::is_null), "{shots:?}");
    let data = app.data(&op, VM_ACTIONS, json!({ "v": vm })).await;
    let reason = data["vm"]["actions"]["create"]["reason"].as_str().unwrap();
    assert!(reason.contains("2 snapshots"), "{reason}");

    // A VIEWER is offered nothing, with its role as the reason; a rename neither.
    let (create, revert, shots) = refusals(&app, &viewer, &vm).await;
    assert_eq!((create, revert), (json!("ROLE"), json!("ROLE")));
    assert!(shots.iter().flatten().all(|r| r == "ROLE"), "{shots:?}");

    // A task under way makes the VM busy for every task-making action; a rename is no
    // task, so it stays offered.
    let slow = app
        .create_host("slow", "SIMULATED", "sim://?latency_ms=1500", None)
        .await;
    let busy_vm = app.create_vm(&slow, &project, "db").await;
    let (_, task) = app.create_snapshot(&op, &busy_vm, "slow").await;
    let (create, revert, shots) = refusals(&app, &op, &busy_vm).await;
    assert_eq!((create, revert), (json!("BUSY"), json!("BUSY")));
    assert_eq!(
        shots,
        vec![vec![
            json!("BUSY"),
            json!("BUSY"),
            json!("BUSY"),
            Value::Null
        ]]
    );
    app.finished(&op, &task).await;

    // A stopped VM allows no snapshot work.
    app.set_vm_state(&vm, 3).await;
    let (create, _, shots) = refusals(&app, &op, &vm).await;
    assert_eq!(create, "VM_STATE");
    assert_eq!(shots[0][0], "VM_STATE");
}

#[tokio::test]
async fn a_failed_snapshot_may_be_deleted_not_applied() {
    let app = TestApp::spawn().await;
    let f = app
        .project_with_vm("p", "sim://?fail_rate=1&fail_on=create")
        .await;
    let (_, task) = app.create_snapshot(&f.operator, &f.vm, "broken").await;
    let done = app.finished(&f.operator, &task).await;
    assert_eq!(done["snapshot"]["state"], "UNRESOURCED");
    let (_, _, shots) = refusals(&app, &f.operator, &f.vm).await;
    assert_eq!(
        shots,
        vec![vec![
            json!("SNAPSHOT_STATE"),
            Value::Null,
            Value::Null,
            Value::Null
        ]]
    );
}

#[tokio::test]
async fn a_delete_forecast_says_where_now_will_hang() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("p", "sim://").await;
    let op = f.operator.as_str();
    let a = app.snapshot_built(op, &f.vm, "a").await;
    let b = app.snapshot_built(op, &f.vm, "b").await;
    let c = app.snapshot_built(op, &f.vm, "c").await;
    let forecast = |id: String, subtree: bool| {
        let app = &app;
        async move {
            app.data(
                op,
                "query($s: ID!, $t: Boolean!) { snapshot(id: $s) {
                   deleteForecast(removeSubtree: $t) {
                     removed movesUp movesActive activeAfter { id } } } }",
                json!({ "s": id, "t": subtree }),
            )
            .await["snapshot"]["deleteForecast"]
                .clone()
        }
    };
    // b and c (active) go: "Now" moves up to a.
    assert_eq!(
        forecast(b.clone(), true).await,
        json!({ "removed": 2, "movesUp": 0, "movesActive": true, "activeAfter": { "id": a } })
    );
    // b alone: c moves up under a and stays active.
    assert_eq!(
        forecast(b.clone(), false).await,
        json!({ "removed": 1, "movesUp": 1, "movesActive": false, "activeAfter": { "id": c } })
    );
    // The whole tree: nothing is left to be active.
    assert_eq!(
        forecast(a.clone(), true).await,
        json!({ "removed": 3, "movesUp": 0, "movesActive": true, "activeAfter": null })
    );
    // The forecast is what the delete does.
    let (_, task) = app.delete(op, &b, true).await;
    app.finished(op, &task).await;
    assert_eq!(app.active(op, &f.vm).await, Some(a));
}

const TASK_CANCEL: &str = "query($t: ID!) { task(id: $t) {
    state actions { cancel { allowed reason refusal } } } }";

/// Task `task`'s cancel offer for `token`: its refusal (`null` when allowed) and reason.
async fn cancel_offer(app: &TestApp, token: &str, task: &str) -> (Value, Value) {
    let data = app.data(token, TASK_CANCEL, json!({ "t": task })).await;
    let offer = &data["task"]["actions"]["cancel"];
    assert_eq!(offer["allowed"], offer["refusal"].is_null(), "{offer}");
    (offer["refusal"].clone(), offer["reason"].clone())
}

#[tokio::test]
async fn a_cancel_is_offered_while_it_can_still_stop_the_task() {
    // No robot: a queued task stays queued.
    let app = TestApp::builder().without_robot().spawn().await;
    let f = app.project_with_vm("p", "sim://").await;
    let viewer = app.create_token(&f.project, "VIEWER").await;
    let (_, task) = app.create_snapshot(&f.operator, &f.vm, "a").await;
    assert_eq!(cancel_offer(&app, &f.operator, &task).await.0, Value::Null);
    let (refusal, reason) = cancel_offer(&app, &viewer, &task).await;
    assert_eq!(refusal, "ROLE");
    // The offer's sentence is the action's own.
    let cancel = "mutation($t: ID!) { cancelTask(id: $t) { state } }";
    let refused = app
        .request(Some(&viewer), cancel, json!({ "t": task }))
        .await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN");
    assert_eq!(refused["errors"][0]["message"], reason);

    let done = app.data(&f.operator, cancel, json!({ "t": task })).await;
    assert_eq!(done["cancelTask"]["state"], "CANCELLED");
    let (refusal, reason) = cancel_offer(&app, &f.operator, &task).await;
    assert_eq!(refusal, "TASK_STATE");
    assert!(
        reason.as_str().unwrap().contains("already ended"),
        "{reason}"
    );
}

const APPLY_SAVING: &str = "mutation($s: ID!, $n: String) {
    applySnapshot(id: $s, saveCurrentAs: $n) { snapshot { id } task { id savedAs { id name } } } }";

const TASK: &str = "query($t: ID!) { task(id: $t) { state finished error snapshot { state active }
    savedAs { id name state active parent { id } } events { phase finished } } }";

#[tokio::test]
async fn apply_saving_the_current_state_first() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("p", "sim://").await;
    let op = f.operator.as_str();
    let a = app.snapshot_built(op, &f.vm, "a").await;
    let b = app.snapshot_built(op, &f.vm, "b").await;
    let data = app
        .data(
            op,
            APPLY_SAVING,
            json!({ "s": a, "n": " before going back " }),
        )
        .await;
    let payload = &data["applySnapshot"];
    assert_eq!(payload["snapshot"]["id"], a.as_str());
    assert_eq!(payload["task"]["savedAs"]["name"], "before going back");
    let task = payload["task"]["id"].as_str().unwrap().to_owned();
    app.finished(op, &task).await;
    let done = app.data(op, TASK, json!({ "t": task })).await["task"].clone();
    assert_eq!(done["state"], "SUCCEEDED", "{done:#}");
    assert_eq!(done["finished"], true);
    assert_eq!(
        done["snapshot"],
        json!({ "state": "RUNNING", "active": true })
    );
    let saved = &done["savedAs"];
    assert_eq!(
        (&saved["state"], &saved["active"], &saved["parent"]["id"]),
        (&json!("RUNNING"), &json!(false), &json!(b))
    );
    // Only the last event ends the task.
    let ends: Vec<bool> = done["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["finished"].as_bool().unwrap())
        .collect();
    assert_eq!(ends.iter().filter(|f| **f).count(), 1, "{ends:?}");
    assert_eq!(ends.last(), Some(&true));
    let phases: Vec<&str> = done["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["phase"].as_str())
        .collect();
    assert!(
        phases
            .iter()
            .any(|p| p.starts_with("saving the current state"))
            && phases.iter().any(|p| p.starts_with("applying")),
        "{phases:?}"
    );
    // The host has the save, under b, and runs from a.
    let data = app
        .data(
            op,
            "query($v: ID!) { vm(id: $v) { drift { kind } } }",
            json!({ "v": f.vm }),
        )
        .await;
    assert_eq!(data["vm"]["drift"], json!([]));

    // The save obeys a create's rules: a taken name, the host's limit, the role.
    let taken = app
        .error_code(Some(op), APPLY_SAVING, json!({ "s": b, "n": "a" }))
        .await;
    assert_eq!(taken, "VALIDATION");
    // The worst a tenant can send as the name: nothing, a NUL, too much. Each is refused
    // before anything is queued.
    for bad in ["   ", "a\u{0}b", &"x".repeat(10_000)] {
        let code = app
            .error_code(Some(op), APPLY_SAVING, json!({ "s": b, "n": bad }))
            .await;
        assert_eq!(code, "VALIDATION", "{bad:.20}");
    }
    let busy = app
        .data(
            op,
            "query($v: ID!) { vm(id: $v) { busy } }",
            json!({ "v": f.vm }),
        )
        .await;
    assert_eq!(busy["vm"]["busy"], false, "nothing was queued");
    let viewer = app.create_token(&f.project, "VIEWER").await;
    let refused = app
        .error_code(Some(&viewer), APPLY_SAVING, json!({ "s": b, "n": "x" }))
        .await;
    assert_eq!(refused, "FORBIDDEN");
}

#[tokio::test]
async fn apply_saving_applies_nothing_when_the_save_fails() {
    let app = TestApp::spawn().await;
    let project = app.create_project("p").await;
    let op = app.create_token(&project, "OPERATOR").await;
    // A host whose creates fail for good (a full disk) and whose applies work, with a
    // VM that already has base <- current on it.
    let host = app
        .create_host(
            "full",
            "SIMULATED",
            "sim://?fail_rate=1&fail_on=create",
            None,
        )
        .await;
    let on_host = SimDriver::new("sim://", &app.sim_dir().join(format!("host-{host}"))).unwrap();
    for name in ["base", "current"] {
        on_host
            .create("legacy", name, &Progress::ignore())
            .await
            .unwrap();
    }
    let data = app
        .data(
            &app.admin,
            "mutation($h: ID!, $p: ID!) { importVms(hostId: $h, projectId: $p) { id snapshots(first: 10) { id name } } }",
            json!({ "h": host, "p": project }),
        )
        .await;
    let vm = data["importVms"][0]["id"].as_str().unwrap().to_owned();
    let id_of = |name: &str| {
        data["importVms"][0]["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (base, current) = (id_of("base"), id_of("current"));

    let data = app
        .data(&op, APPLY_SAVING, json!({ "s": base, "n": "safety net" }))
        .await;
    let task = data["applySnapshot"]["task"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.finished(&op, &task).await;
    let done = app.data(&op, TASK, json!({ "t": task })).await["task"].clone();
    // Both outcomes on the task: the save failed, the apply was not made.
    assert_eq!(done["state"], "FAILED", "{done:#}");
    let error = done["error"].as_str().unwrap();
    assert!(
        error.contains("saving the current state failed; nothing was applied"),
        "{error}"
    );
    assert_eq!(done["savedAs"]["state"], "UNRESOURCED");
    assert_eq!(done["savedAs"]["active"], false);
    assert_eq!(
        done["snapshot"],
        json!({ "state": "RUNNING", "active": false })
    );
    assert_eq!(app.active(&op, &vm).await, Some(current));
    // And the host agrees: it still runs from "current".
    let listed = on_host.list("legacy").await.unwrap();
    let now = listed.iter().find(|s| s.current).map(|s| s.name.as_str());
    assert_eq!(now, Some("current"));
    assert_eq!(listed.len(), 2, "{listed:?}");

    // The failed save can be deleted, and a plain apply works on this host.
    let (_, task) = app.apply(&op, &base).await;
    assert_eq!(app.finished(&op, &task).await["state"], "SUCCEEDED");
}
