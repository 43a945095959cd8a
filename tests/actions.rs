//! The five snapshot actions, through the robot on a simulated host, to their final
//! states; the active snapshot and the tree after each.

mod common;

use common::TestApp;
use serde_json::{Value, json};

#[tokio::test]
async fn the_five_actions_reach_their_final_states() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("five", "sim://").await;
    let op = f.operator.as_str();

    // Create: the new snapshot hangs from the active one and becomes active.
    let (a, task) = app.create_snapshot(op, &f.vm, "a").await;
    let done = app.finished(op, &task).await;
    assert_eq!(done["state"], "SUCCEEDED");
    assert_eq!(done["kind"], "BUILD");
    assert_eq!(done["progress"], 100);
    assert_eq!(done["snapshot"]["state"], "RUNNING");
    assert_eq!(app.active(op, &f.vm).await.as_deref(), Some(a.as_str()));
    let b = app.snapshot_built(op, &f.vm, "b").await;
    assert_eq!(
        app.tree(op, &f.vm).await,
        vec![
            (a.clone(), None, "RUNNING".into(), false),
            (b.clone(), Some(a.clone()), "RUNNING".into(), true),
        ]
    );

    // Apply: the applied snapshot becomes active; a new one then branches from it.
    let (applied, task) = app.apply(op, &a).await;
    assert_eq!(applied, a);
    let done = app.finished(op, &task).await;
    assert_eq!(
        (done["state"].as_str(), done["kind"].as_str()),
        (Some("SUCCEEDED"), Some("UPDATE"))
    );
    assert_eq!(app.active(op, &f.vm).await.as_deref(), Some(a.as_str()));
    let c = app.snapshot_built(op, &f.vm, "c").await;
    assert_eq!(
        app.tree(op, &f.vm).await[2],
        (c.clone(), Some(a.clone()), "RUNNING".into(), true)
    );

    // Revert: applies the active snapshot; it stays active.
    let (reverted, task) = app.revert(op, &f.vm).await;
    assert_eq!(reverted, c);
    assert_eq!(app.finished(op, &task).await["state"], "SUCCEEDED");
    assert_eq!(app.active(op, &f.vm).await.as_deref(), Some(c.as_str()));

    // Delete one: closed; the active one (its child here) is untouched.
    let (_, task) = app.delete(op, &b, false).await;
    let done = app.finished(op, &task).await;
    assert_eq!(
        (done["state"].as_str(), done["kind"].as_str()),
        (Some("SUCCEEDED"), Some("SCRUB"))
    );
    assert_eq!(done["snapshot"]["state"], "CLOSED");
    assert_eq!(app.active(op, &f.vm).await.as_deref(), Some(c.as_str()));

    // Delete a subtree holding the active snapshot: the subtree's parent (none) is active.
    let (_, task) = app.delete(op, &a, true).await;
    assert_eq!(app.finished(op, &task).await["state"], "SUCCEEDED");
    assert_eq!(app.tree(op, &f.vm).await, vec![]);
    assert_eq!(app.active(op, &f.vm).await, None);

    // The host agrees: nothing is left on it.
    let data = app
        .data(op, "query($v: ID!) { vm(id: $v) { snapshots(includeClosed: true) { state } busy snapshotCount } }", json!({ "v": f.vm }))
        .await;
    assert_eq!(data["vm"]["snapshots"].as_array().unwrap().len(), 3);
    assert_eq!(data["vm"]["busy"], false);
    assert_eq!(data["vm"]["snapshotCount"], 0);
}

#[tokio::test]
async fn deleting_one_snapshot_reattaches_its_children_to_its_parent() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("reparent", "sim://").await;
    let op = f.operator.as_str();
    //   root - mid - left
    //            \-- right (active)
    let root = app.snapshot_built(op, &f.vm, "root").await;
    let mid = app.snapshot_built(op, &f.vm, "mid").await;
    let left = app.snapshot_built(op, &f.vm, "left").await;
    let (_, task) = app.apply(op, &mid).await;
    app.finished(op, &task).await;
    let right = app.snapshot_built(op, &f.vm, "right").await;

    let (_, task) = app.delete(op, &mid, false).await;
    assert_eq!(app.finished(op, &task).await["state"], "SUCCEEDED");
    assert_eq!(
        app.tree(op, &f.vm).await,
        vec![
            (root.clone(), None, "RUNNING".into(), false),
            (left, Some(root.clone()), "RUNNING".into(), false),
            (right.clone(), Some(root.clone()), "RUNNING".into(), true),
        ]
    );

    // Deleting the active snapshot makes its parent active; its history tells the story.
    let (_, task) = app.delete(op, &right, false).await;
    app.finished(op, &task).await;
    assert_eq!(app.active(op, &f.vm).await, Some(root));
    let data = app
        .data(op, "query($s: ID!) { snapshot(id: $s) { state active history { state stateCode actor } } }", json!({ "s": right }))
        .await;
    let history: Vec<(String, String)> = data["snapshot"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["state"].as_str().unwrap().into(),
                h["actor"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected = [
        ("REQUESTED", "OPERATOR"),
        ("BUILDING", "robot"),
        ("RUNNING", "robot"),
        ("SCRUB", "OPERATOR"),
        ("SCRUBBING", "robot"),
        ("CLOSED", "robot"),
    ];
    assert_eq!(
        history,
        expected.map(|(s, a)| (s.to_owned(), a.to_owned())).to_vec()
    );
    assert_eq!(data["snapshot"]["active"], false);
}

#[tokio::test]
async fn a_subtree_delete_with_the_active_snapshot_inside_activates_the_subtree_parent() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("subtree", "sim://").await;
    let op = f.operator.as_str();
    // root - a - b - c (active); root - d
    let root = app.snapshot_built(op, &f.vm, "root").await;
    let a = app.snapshot_built(op, &f.vm, "a").await;
    app.snapshot_built(op, &f.vm, "b").await;
    let (_, task) = app.apply(op, &root).await;
    app.finished(op, &task).await;
    let d = app.snapshot_built(op, &f.vm, "d").await;
    let (_, task) = app.apply(op, &a).await;
    app.finished(op, &task).await;
    let c_parent = app.snapshot_built(op, &f.vm, "b2").await;
    let c = app.snapshot_built(op, &f.vm, "c").await;
    assert_eq!(app.active(op, &f.vm).await.as_deref(), Some(c.as_str()));

    let (_, task) = app.delete(op, &a, true).await;
    let done = app.finished(op, &task).await;
    assert_eq!(done["state"], "SUCCEEDED");
    assert_eq!(app.active(op, &f.vm).await.as_deref(), Some(root.as_str()));
    assert_eq!(
        app.tree(op, &f.vm).await,
        vec![
            (root.clone(), None, "RUNNING".into(), true),
            (d, Some(root), "RUNNING".into(), false),
        ]
    );
    let data = app
        .data(
            op,
            "query($s: ID!) { snapshot(id: $s) { state removeSubtree } }",
            json!({ "s": c_parent }),
        )
        .await;
    assert_eq!(data["snapshot"]["state"], "CLOSED");
}

#[tokio::test]
async fn a_queued_task_can_be_cancelled_and_changes_nothing() {
    let app = TestApp::builder().without_robot().spawn().await; // no robot: the task stays queued
    let f = app.project_with_vm("cancel", "sim://").await;
    let op = f.operator.as_str();
    let (snapshot, task) = app.create_snapshot(op, &f.vm, "never").await;
    let data = app
        .data(
            op,
            "mutation($t: ID!) { cancelTask(id: $t) { state error } }",
            json!({ "t": task }),
        )
        .await;
    assert_eq!(data["cancelTask"]["state"], "CANCELLED");
    assert_eq!(app.tree(op, &f.vm).await, vec![]);
    assert_eq!(app.active(op, &f.vm).await, None);
    let data = app
        .data(
            op,
            "query($s: ID!) { snapshot(id: $s) { state } }",
            json!({ "s": snapshot }),
        )
        .await;
    assert_eq!(data["snapshot"]["state"], "CLOSED");
    // Cancelling it again changes nothing and records nothing.
    let again = "mutation($t: ID!) { cancelTask(id: $t) { state events { id } } }";
    let before = app.data(op, again, json!({ "t": task })).await;
    let after = app.data(op, again, json!({ "t": task })).await;
    assert_eq!(after["cancelTask"]["state"], "CANCELLED");
    assert_eq!(before, after);
    // The VM is free again.
    app.create_snapshot(op, &f.vm, "next").await;
}

#[tokio::test]
async fn the_answer_to_an_action_agrees_with_itself() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("answer", "sim://?latency_ms=200").await;
    let data = app
        .data(&f.operator, "mutation($v: ID!) { createSnapshot(vmId: $v, name: \"x\") { snapshot { state active } task { state } } }", json!({ "v": f.vm }))
        .await;
    let payload = &data["createSnapshot"];
    // Taken at once by the robot (eager dispatch), or still queued: never a mix.
    let pair = (
        payload["snapshot"]["state"].as_str().unwrap(),
        payload["task"]["state"].as_str().unwrap(),
    );
    assert!(
        matches!(pair, ("BUILDING", "RUNNING") | ("REQUESTED", "QUEUED")),
        "{pair:?}"
    );
    assert_eq!(payload["snapshot"]["active"], true);
}

/// A host that takes two tasks at once, under the server's own robot (64 workers, taking
/// tasks as they are queued): a burst of six runs two at a time, in the order queued, and
/// each task that ends lets the next one in (the robot polls only once an hour here).
#[tokio::test]
async fn a_hosts_limit_holds_for_the_robot_in_process() {
    let app = TestApp::spawn().await;
    let project = app.create_project("burst").await;
    let host = app
        .create_host_with(
            "narrow",
            "SIMULATED",
            "sim://?latency_ms=600",
            None,
            Some(2),
        )
        .await;
    let limit = app
        .data(
            &app.admin,
            "query($h: ID!) { host(id: $h) { maxConcurrentTasks } }",
            json!({ "h": host }),
        )
        .await;
    assert_eq!(limit["host"]["maxConcurrentTasks"], 2);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let vm = app.create_vm(&host, &project, &format!("vm{i}")).await;
        tasks.push(app.create_snapshot(&app.admin, &vm, "burst").await.1);
    }
    for task in &tasks {
        assert_eq!(app.finished(&app.admin, task).await["state"], "SUCCEEDED");
    }
    let (_, events) = common::fleet::check_invariants(&app.db).await;
    let ids: Vec<i64> = tasks.iter().map(|t| t.parse().unwrap()).collect();
    let (most, starts) = common::fleet::at_once(&events, &ids);
    assert_eq!(most, 2, "most tasks at once on a host that takes 2");
    assert_eq!(starts, ids, "tasks started out of order");

    let code = app
        .error_code(
            Some(&app.admin),
            r#"mutation { createHost(name: "zero", hypervisor: SIMULATED, uri: "sim://", maxConcurrentTasks: 0) { id } }"#,
            json!({}),
        )
        .await;
    assert_eq!(code, "VALIDATION");
}

/// `updateHost` changes a host's limits for what comes next: tasks waiting for room start
/// as soon as the limit is raised (the robot polls only once an hour here), a lowered
/// snapshot limit refuses the next create, and only an ADMIN may change them.
#[tokio::test]
async fn a_hosts_limits_can_be_changed() {
    let app = TestApp::spawn().await;
    let project = app.create_project("tuned").await;
    let host = app
        .create_host_with(
            "tuned",
            "SIMULATED",
            "sim://?latency_ms=1500",
            None,
            Some(1),
        )
        .await;
    let mut tasks = Vec::new();
    let mut vms = Vec::new();
    for i in 0..3 {
        let vm = app.create_vm(&host, &project, &format!("vm{i}")).await;
        tasks.push(app.create_snapshot(&app.admin, &vm, "first").await.1);
        vms.push(vm);
    }
    let update = "mutation($h: ID!, $c: Int, $m: Int) {
        updateHost(id: $h, maxConcurrentTasks: $c, maxSnapshotsPerVm: $m) { maxConcurrentTasks maxSnapshotsPerVm } }";
    let raised = app
        .data(&app.admin, update, json!({ "h": host, "c": 3 }))
        .await;
    assert_eq!(raised["updateHost"]["maxConcurrentTasks"], 3);
    assert_eq!(raised["updateHost"]["maxSnapshotsPerVm"], Value::Null);
    for task in &tasks {
        assert_eq!(app.finished(&app.admin, task).await["state"], "SUCCEEDED");
    }
    let (_, events) = common::fleet::check_invariants(&app.db).await;
    let ids: Vec<i64> = tasks.iter().map(|t| t.parse().unwrap()).collect();
    let (most, _) = common::fleet::at_once(&events, &ids);
    assert_eq!(
        most, 3,
        "the waiting tasks did not start when the limit was raised"
    );

    // One snapshot per VM now: the next create is refused before any task is queued.
    let lowered = app
        .data(&app.admin, update, json!({ "h": host, "m": 1 }))
        .await;
    assert_eq!(lowered["updateHost"]["maxSnapshotsPerVm"], 1);
    assert_eq!(
        lowered["updateHost"]["maxConcurrentTasks"], 3,
        "kept when not given"
    );
    let create = "mutation($v: ID!) { createSnapshot(vmId: $v, name: \"second\") { task { id } } }";
    let code = app
        .error_code(Some(&app.admin), create, json!({ "v": vms[0] }))
        .await;
    assert_eq!(code, "LIMIT_REACHED");
    // null: no limit again (a simulated host has none of its own).
    let cleared = app
        .data(&app.admin, update, json!({ "h": host, "m": null }))
        .await;
    assert_eq!(cleared["updateHost"]["maxSnapshotsPerVm"], Value::Null);

    for (variables, expected) in [
        (json!({ "h": host, "c": 0 }), "VALIDATION"),
        (json!({ "h": host, "c": 1001 }), "VALIDATION"),
        (json!({ "h": host, "m": -1 }), "VALIDATION"),
        (json!({ "h": "999999", "c": 2 }), "NOT_FOUND"),
    ] {
        let code = app.error_code(Some(&app.admin), update, variables).await;
        assert_eq!(code, expected);
    }
    let operator = app.create_token(&project, "OPERATOR").await;
    let code = app
        .error_code(Some(&operator), update, json!({ "h": host, "c": 8 }))
        .await;
    assert_eq!(code, "FORBIDDEN");
}

/// Actions on many VMs of one host at once, each taken by the server's own robot in the
/// transaction that queues it: none may fail. (On PostgreSQL, each such transaction holds
/// a share lock on its host's row from inserting the task; the limit's check once took
/// a lock that waits for those, and two of them deadlocked.)
#[tokio::test]
async fn simultaneous_actions_on_one_host_all_succeed() {
    let app = TestApp::spawn().await;
    let project = app.create_project("crowd").await;
    let host = app
        .create_host_with("crowded", "SIMULATED", "sim://", None, Some(1000))
        .await;
    let mut vms = Vec::new();
    for i in 0..24 {
        vms.push(app.create_vm(&host, &project, &format!("vm{i}")).await);
    }
    for round in 0..3 {
        let name = format!("r{round}");
        let tasks = futures_util::future::join_all(
            vms.iter()
                .map(|vm| app.create_snapshot(&app.admin, vm, &name)),
        )
        .await;
        for (_, task) in &tasks {
            assert_eq!(app.finished(&app.admin, task).await["state"], "SUCCEEDED");
        }
    }
}

/// Two actions on one VM in one batch: the second waits for the next batch, which must
/// run without any further traffic. (On PostgreSQL, with several writers of batches, the
/// one holding the leftovers once waited for its turn at the queue behind a writer that
/// waited there for new actions: the leftovers timed out, unanswered.)
#[tokio::test]
async fn actions_left_for_the_next_batch_are_answered_without_more_traffic() {
    let app = TestApp::spawn().await;
    let project = app.create_project("pairs").await;
    let host = app.create_host("h", "SIMULATED", "sim://", None).await;
    let mut vms = Vec::new();
    for i in 0..8 {
        vms.push(app.create_vm(&host, &project, &format!("vm{i}")).await);
    }
    let create =
        "mutation($v: ID!, $n: String!) { createSnapshot(vmId: $v, name: $n) { task { id } } }";
    let asks = vms.iter().flat_map(|vm| {
        ["x", "y"].map(|n| {
            let app = &app;
            async move {
                app.request(Some(&app.admin), create, json!({ "v": vm, "n": n }))
                    .await
            }
        })
    });
    let answers = futures_util::future::join_all(asks).await;
    for answer in &answers {
        // Accepted, or refused because the VM's first task is still under way.
        if !answer["errors"].is_null() {
            assert_eq!(common::error_code(answer), "VM_BUSY", "{answer}");
        }
    }
}

/// `updateSnapshot`: a rename or a new description, at once and without a task; names
/// stay unique among the VM's snapshots; roles and projects hold.
#[tokio::test]
async fn snapshots_are_renamed_and_described_without_a_task() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("p", "sim://").await;
    let op = f.operator.as_str();
    let a = app.snapshot_built(op, &f.vm, "a").await;
    app.snapshot_built(op, &f.vm, "b").await;
    const UPDATE: &str = "mutation($id: ID!, $name: String, $d: String) { \
        updateSnapshot(id: $id, name: $name, description: $d) { id name description tasks { id } } }";
    let data = app
        .data(
            op,
            UPDATE,
            json!({ "id": a, "name": " before upgrade ", "d": "kernel 6.1" }),
        )
        .await;
    let updated = &data["updateSnapshot"];
    assert_eq!(updated["name"], "before upgrade");
    assert_eq!(updated["description"], "kernel 6.1");
    assert_eq!(
        updated["tasks"].as_array().unwrap().len(),
        1,
        "only its BUILD"
    );
    // The description alone, then cleared with null; the name is kept.
    let data = app
        .data(
            op,
            "mutation($id: ID!) { updateSnapshot(id: $id, description: null) { name description } }",
            json!({ "id": a }),
        )
        .await;
    assert_eq!(
        data["updateSnapshot"],
        json!({ "name": "before upgrade", "description": null })
    );
    let code = |token: &str, id: &str, name: &str| {
        let (token, id, name) = (token.to_owned(), id.to_owned(), name.to_owned());
        let app = &app;
        async move {
            app.error_code(Some(&token), UPDATE, json!({ "id": id, "name": name }))
                .await
        }
    };
    assert_eq!(code(op, &a, "b").await, "VALIDATION", "b is taken");
    assert_eq!(
        code(op, &a, "").await,
        "VALIDATION",
        "a name is 1 to 128 characters"
    );
    let viewer = app.create_token(&f.project, "VIEWER").await;
    assert_eq!(code(&viewer, &a, "c").await, "FORBIDDEN");
    let other = app.project_with_vm("other", "sim://").await;
    assert_eq!(code(&other.operator, &a, "c").await, "NOT_FOUND");
    // A deleted snapshot keeps the name it was deleted with.
    let (_, task) = app.delete(op, &a, false).await;
    app.finished(op, &task).await;
    assert_eq!(code(op, &a, "c").await, "INVALID_STATE");
}
