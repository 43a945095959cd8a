//! Every error code of api.md that the actions can raise, with its extensions.

mod common;

use common::{TestApp, error_code};
use serde_json::json;

const CREATE: &str = "mutation($v: ID!, $n: String!, $d: String) {
    createSnapshot(vmId: $v, name: $n, description: $d) { snapshot { id } task { id } }
}";
const APPLY: &str = "mutation($s: ID!) { applySnapshot(id: $s) { task { id } } }";
const REVERT: &str = "mutation($v: ID!) { revertSnapshot(vmId: $v) { task { id } } }";
const DELETE: &str = "mutation($s: ID!) { deleteSnapshot(id: $s) { task { id } } }";

#[tokio::test]
async fn unauthenticated_without_a_valid_token() {
    let app = TestApp::spawn().await;
    let query = "{ hosts { id } }";
    assert_eq!(
        app.error_code(None, query, json!({})).await,
        "UNAUTHENTICATED"
    );
    assert_eq!(
        app.error_code(Some("snaptree_0000"), query, json!({}))
            .await,
        "UNAUTHENTICATED"
    );
    let response = app
        .client
        .post(&app.url)
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // A revoked token stops working at once.
    let project = app.create_project("p").await;
    let data = app
        .data(&app.admin, "mutation($p: ID!) { createToken(projectId: $p, name: \"t\", role: VIEWER) { id token } }", json!({ "p": project }))
        .await;
    let (id, token) = (
        &data["createToken"]["id"],
        data["createToken"]["token"].as_str().unwrap(),
    );
    assert!(
        app.request(Some(token), query, json!({}))
            .await
            .get("errors")
            .is_none()
    );
    let revoked = app
        .data(
            &app.admin,
            "mutation($t: ID!) { revokeToken(id: $t) }",
            json!({ "t": id }),
        )
        .await;
    assert_eq!(revoked["revokeToken"], true);
    assert_eq!(
        app.error_code(Some(token), query, json!({})).await,
        "UNAUTHENTICATED"
    );
}

#[tokio::test]
async fn validation_of_names_and_ids() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("valid", "sim://").await;
    let op = Some(f.operator.as_str());
    for name in ["", "   ", &"x".repeat(129)] {
        let code = app
            .error_code(op, CREATE, json!({ "v": f.vm, "n": name }))
            .await;
        assert_eq!(code, "VALIDATION", "name {name:?}");
    }
    let long = "d".repeat(1025);
    let code = app
        .error_code(op, CREATE, json!({ "v": f.vm, "n": "ok", "d": long }))
        .await;
    assert_eq!(code, "VALIDATION");
    // Names are unique among the VM's non-closed snapshots, after trimming.
    app.snapshot_built(&f.operator, &f.vm, "same").await;
    let code = app
        .error_code(op, CREATE, json!({ "v": f.vm, "n": "  same " }))
        .await;
    assert_eq!(code, "VALIDATION");
    // Malformed ids.
    assert_eq!(
        app.error_code(op, APPLY, json!({ "s": "abc" })).await,
        "VALIDATION"
    );
    assert_eq!(
        app.error_code(op, REVERT, json!({ "v": "-1" })).await,
        "VALIDATION"
    );
    // A malformed query is a VALIDATION error too.
    assert_eq!(
        app.error_code(op, "{ nope }", json!({})).await,
        "VALIDATION"
    );
    // A 128-character name is fine.
    let body = app
        .request(op, CREATE, json!({ "v": f.vm, "n": "é".repeat(128) }))
        .await;
    assert!(body.get("errors").is_none(), "{body}");
}

#[tokio::test]
async fn not_found_for_missing_objects() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("nf", "sim://").await;
    let op = Some(f.operator.as_str());
    assert_eq!(
        app.error_code(op, CREATE, json!({ "v": "999", "n": "x" }))
            .await,
        "NOT_FOUND"
    );
    assert_eq!(
        app.error_code(op, APPLY, json!({ "s": "999" })).await,
        "NOT_FOUND"
    );
    assert_eq!(
        app.error_code(op, REVERT, json!({ "v": "999" })).await,
        "NOT_FOUND"
    );
    assert_eq!(
        app.error_code(op, DELETE, json!({ "s": "999" })).await,
        "NOT_FOUND"
    );
    let cancel = "mutation { cancelTask(id: 999) { id } }";
    assert_eq!(app.error_code(op, cancel, json!({})).await, "NOT_FOUND");
    // Queries answer null for what does not exist.
    let data = app
        .data(
            &f.operator,
            "{ vm(id: 999) { id } snapshot(id: 999) { id } task(id: 999) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(data, json!({ "vm": null, "snapshot": null, "task": null }));
}

#[tokio::test]
async fn invalid_state_for_actions_the_state_does_not_allow() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("state", "sim://").await;
    let op = Some(f.operator.as_str());
    // No active snapshot to revert to.
    assert_eq!(
        app.error_code(op, REVERT, json!({ "v": f.vm })).await,
        "INVALID_STATE"
    );
    // A deleted snapshot can be neither applied nor deleted again.
    let gone = app.snapshot_built(&f.operator, &f.vm, "gone").await;
    let (_, task) = app.delete(&f.operator, &gone, false).await;
    app.finished(&f.operator, &task).await;
    assert_eq!(
        app.error_code(op, APPLY, json!({ "s": gone })).await,
        "INVALID_STATE"
    );
    assert_eq!(
        app.error_code(op, DELETE, json!({ "s": gone })).await,
        "INVALID_STATE"
    );
    // A task that succeeded cannot be cancelled.
    let cancel = "mutation($t: ID!) { cancelTask(id: $t) { state } }";
    assert_eq!(
        app.error_code(op, cancel, json!({ "t": task })).await,
        "INVALID_STATE"
    );
}

#[tokio::test]
async fn vm_busy_names_the_task_in_flight() {
    // A slow host keeps the first task running while the others are asked for.
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("busy", "sim://?latency_ms=400").await;
    let op = f.operator.as_str();
    let (first, task) = app.create_snapshot(op, &f.vm, "first").await;
    for (query, vars) in [
        (CREATE, json!({ "v": f.vm, "n": "second" })),
        (APPLY, json!({ "s": first })),
        (REVERT, json!({ "v": f.vm })),
        (DELETE, json!({ "s": first })),
    ] {
        let body = app.request(Some(op), query, vars).await;
        assert_eq!(error_code(&body), "VM_BUSY", "{query}");
        assert_eq!(body["errors"][0]["extensions"]["taskId"], task.as_str());
    }
    let data = app
        .data(
            op,
            "query($v: ID!) { vm(id: $v) { busy currentTask { id } } }",
            json!({ "v": f.vm }),
        )
        .await;
    assert_eq!(data["vm"]["busy"], true);
    assert_eq!(data["vm"]["currentTask"]["id"], task.as_str());
    assert_eq!(app.finished(op, &task).await["state"], "SUCCEEDED");
    // Free again.
    app.snapshot_built(op, &f.vm, "second").await;
}

#[tokio::test]
async fn limit_reached_for_the_51st_snapshot_on_a_host_limited_to_50() {
    let app = TestApp::spawn().await;
    let project = app.create_project("full").await;
    let op = app.create_token(&project, "OPERATOR").await;
    let host = app
        .create_host("limited", "SIMULATED", "sim://", Some(50))
        .await;
    let vm = app.create_vm(&host, &project, "full-vm").await;
    for i in 0..50 {
        app.snapshot_built(&op, &vm, &format!("s{i}")).await;
    }
    let body = app
        .request(Some(&op), CREATE, json!({ "v": vm, "n": "s50" }))
        .await;
    assert_eq!(error_code(&body), "LIMIT_REACHED");
    assert_eq!(body["errors"][0]["extensions"]["limit"], 50);
    let data = app
        .data(
            &op,
            "query($v: ID!) { vm(id: $v) { snapshotCount snapshotLimit busy } }",
            json!({ "v": vm }),
        )
        .await;
    assert_eq!(
        data["vm"],
        json!({ "snapshotCount": 50, "snapshotLimit": 50, "busy": false })
    );

    // Hyper-V allows no more than 50 (tests/hyperv.rs shows the default of 50 at work).
    let code = app
        .error_code(Some(&app.admin), "mutation { createHost(name: \"hv2\", hypervisor: HYPERV, uri: \"ssh://admin@hv2\", maxSnapshotsPerVm: 51) { id } }", json!({}))
        .await;
    assert_eq!(code, "VALIDATION");
}
