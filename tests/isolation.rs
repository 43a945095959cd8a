//! Roles and projects: a VIEWER reads but cannot act, a non-ADMIN cannot administer, and
//! a token of one project cannot see or touch another project's VMs anywhere.

mod common;

use common::TestApp;
use serde_json::json;

#[tokio::test]
async fn a_viewer_reads_but_cannot_act() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("seen", "sim://").await;
    let viewer = app.create_token(&f.project, "VIEWER").await;
    let snapshot = app.snapshot_built(&f.operator, &f.vm, "s").await;
    let v = Some(viewer.as_str());

    let data = app
        .data(
            &viewer,
            "query($v: ID!) { vm(id: $v) { name snapshots { id } } }",
            json!({ "v": f.vm }),
        )
        .await;
    assert_eq!(data["vm"]["snapshots"][0]["id"], snapshot.as_str());
    for (query, vars) in [
        (
            "mutation($v: ID!) { createSnapshot(vmId: $v, name: \"x\") { task { id } } }",
            json!({ "v": f.vm }),
        ),
        (
            "mutation($s: ID!) { applySnapshot(id: $s) { task { id } } }",
            json!({ "s": snapshot }),
        ),
        (
            "mutation($v: ID!) { revertSnapshot(vmId: $v) { task { id } } }",
            json!({ "v": f.vm }),
        ),
        (
            "mutation($s: ID!) { deleteSnapshot(id: $s, removeSubtree: true) { task { id } } }",
            json!({ "s": snapshot }),
        ),
    ] {
        assert_eq!(app.error_code(v, query, vars).await, "FORBIDDEN", "{query}");
    }
    // Nothing changed.
    assert_eq!(app.tree(&viewer, &f.vm).await[0].2, "RUNNING");
}

#[tokio::test]
async fn only_an_admin_administers() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("plain", "sim://").await;
    let op = Some(f.operator.as_str());
    for query in [
        "{ projects { id } }",
        "mutation { createProject(name: \"x\") { id } }",
        "mutation { createToken(projectId: 1, name: \"x\", role: ADMIN) { token } }",
        "mutation { revokeToken(id: 1) }",
        "mutation { createHost(name: \"x\", hypervisor: SIMULATED, uri: \"sim://\") { id } }",
        "mutation { createVm(hostId: 1, projectId: 1, name: \"x\", identifier: \"x\") { id } }",
        "mutation { importVms(hostId: 1, projectId: 1) { id } }",
    ] {
        assert_eq!(
            app.error_code(op, query, json!({})).await,
            "FORBIDDEN",
            "{query}"
        );
    }
}

#[tokio::test]
async fn another_projects_vms_do_not_exist_for_a_token() {
    let app = TestApp::spawn().await;
    let mine = app.project_with_vm("mine", "sim://").await;
    let theirs = app.project_with_vm("theirs", "sim://?latency_ms=300").await;
    let their_snapshot = app
        .snapshot_built(&theirs.operator, &theirs.vm, "secret")
        .await;
    let (_, their_task) = app.apply(&theirs.operator, &their_snapshot).await;
    let me = mine.operator.as_str();

    // Queries: null, empty, or only my own.
    let data = app
        .data(
            me,
            "query($v: ID!, $s: ID!, $t: ID!, $h: ID!) {
               vm(id: $v) { id } snapshot(id: $s) { id } task(id: $t) { id } host(id: $h) { id }
               vms { edges { node { id } } }
               hosts { id vms { id } }
               tasks { edges { node { id vm { id } } } }
             }",
            json!({ "v": theirs.vm, "s": their_snapshot, "t": their_task, "h": theirs.host }),
        )
        .await;
    assert_eq!(data["vm"], json!(null));
    assert_eq!(data["snapshot"], json!(null));
    assert_eq!(data["task"], json!(null));
    assert_eq!(data["host"], json!(null));
    assert_eq!(data["vms"]["edges"], json!([{ "node": { "id": mine.vm } }]));
    assert_eq!(
        data["hosts"],
        json!([{ "id": mine.host, "vms": [{ "id": mine.vm }] }])
    );
    assert_eq!(data["tasks"]["edges"], json!([]));
    let code = app
        .error_code(
            Some(me),
            "query($v: ID!) { tasks(vmId: $v) { edges { node { id } } } }",
            json!({ "v": theirs.vm }),
        )
        .await;
    assert_eq!(code, "NOT_FOUND");
    let data = app
        .data(
            me,
            "query($h: ID!) { vms(hostId: $h) { edges { node { id } } } }",
            json!({ "h": theirs.host }),
        )
        .await;
    assert_eq!(data["vms"]["edges"], json!([]));

    // Mutations: NOT_FOUND, never FORBIDDEN (which would tell it exists).
    for (query, vars) in [
        (
            "mutation($v: ID!) { createSnapshot(vmId: $v, name: \"x\") { task { id } } }",
            json!({ "v": theirs.vm }),
        ),
        (
            "mutation($s: ID!) { applySnapshot(id: $s) { task { id } } }",
            json!({ "s": their_snapshot }),
        ),
        (
            "mutation($v: ID!) { revertSnapshot(vmId: $v) { task { id } } }",
            json!({ "v": theirs.vm }),
        ),
        (
            "mutation($s: ID!) { deleteSnapshot(id: $s) { task { id } } }",
            json!({ "s": their_snapshot }),
        ),
        (
            "mutation($t: ID!) { cancelTask(id: $t) { id } }",
            json!({ "t": their_task }),
        ),
    ] {
        assert_eq!(
            app.error_code(Some(me), query, vars).await,
            "NOT_FOUND",
            "{query}"
        );
    }
    // A viewer of mine is as blind.
    let viewer = app.create_token(&mine.project, "VIEWER").await;
    let code = app
        .error_code(
            Some(&viewer),
            "mutation($s: ID!) { deleteSnapshot(id: $s) { task { id } } }",
            json!({ "s": their_snapshot }),
        )
        .await;
    assert_eq!(code, "NOT_FOUND");

    // Their task ran untouched; the admin sees both projects.
    assert_eq!(
        app.finished(&theirs.operator, &their_task).await["state"],
        "SUCCEEDED"
    );
    let data = app
        .data(
            &app.admin,
            "{ vms { edges { node { id } } } projects { name } }",
            json!({}),
        )
        .await;
    assert_eq!(data["vms"]["edges"].as_array().unwrap().len(), 2);
}
