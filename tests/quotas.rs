//! Project quotas and stale snapshots (issue 11): a project's quota caps the non-closed
//! snapshots of all its VMs together, refused with LIMIT_REACHED before any task is
//! queued, on GraphQL and on CloudCIX's REST API alike, and told in the offers; a
//! snapshot kept past the stale age is flagged, judged by the server's clock (moved
//! here, not waited for; forward only, as rows keep the system's time). Run on SQLite, or PostgreSQL with
//! `SNAPTREE_TEST_DATABASE=postgres`.

mod common;

use chrono::{Duration, Utc};
use common::TestApp;
use serde_json::{Value, json};

const SET_QUOTA: &str = "mutation($p: ID!, $m: Int) { updateProject(id: $p, maxSnapshots: $m) { id maxSnapshots snapshotCount } }";

async fn tasks_of(app: &TestApp, vm: &str) -> usize {
    let data = app
        .data(
            &app.admin,
            "query($v: ID!) { tasks(vmId: $v, first: 100) { edges { node { id } } } }",
            json!({ "v": vm }),
        )
        .await;
    data["tasks"]["edges"].as_array().unwrap().len()
}

async fn create_refusal(app: &TestApp, token: &str, vm: &str) -> Value {
    let data = app
        .data(
            token,
            "query($v: ID!) { vm(id: $v) { actions { create { allowed refusal reason } } } }",
            json!({ "v": vm }),
        )
        .await;
    data["vm"]["actions"]["create"].clone()
}

#[tokio::test]
async fn a_projects_quota_counts_all_its_vms_and_refuses_before_queueing() {
    let app = TestApp::spawn().await;
    let project = app.create_project("quota").await;
    let op = app.create_token(&project, "OPERATOR").await;
    let host = app.create_host("h", "SIMULATED", "sim://", None).await;
    let (a, b) = (
        app.create_vm(&host, &project, "a").await,
        app.create_vm(&host, &project, "b").await,
    );
    // Another project's snapshots never count against this one.
    let other = app.project_with_vm("other", "sim://").await;
    app.snapshot_built(&other.operator, &other.vm, "theirs")
        .await;

    // Only an ADMIN sets a quota, and never a negative one.
    let vars = json!({ "p": project, "m": 3 });
    assert_eq!(
        app.error_code(Some(&op), SET_QUOTA, vars.clone()).await,
        "FORBIDDEN"
    );
    let bad = json!({ "p": project, "m": -1 });
    assert_eq!(
        app.error_code(Some(&app.admin), SET_QUOTA, bad).await,
        "VALIDATION"
    );
    let data = app.data(&app.admin, SET_QUOTA, vars).await;
    assert_eq!(data["updateProject"]["maxSnapshots"], 3);
    assert_eq!(data["updateProject"]["snapshotCount"], 0);

    app.snapshot_built(&op, &a, "a1").await;
    app.snapshot_built(&op, &a, "a2").await;
    app.snapshot_built(&op, &b, "b1").await;
    assert_eq!(create_refusal(&app, &op, &b).await["refusal"], "LIMIT");
    assert!(
        create_refusal(&app, &op, &b).await["reason"]
            .as_str()
            .unwrap()
            .contains("quota"),
    );

    // Refused on both VMs, on GraphQL and REST, and nothing is queued.
    let before = (tasks_of(&app, &a).await, tasks_of(&app, &b).await);
    let create = "mutation($v: ID!) { createSnapshot(vmId: $v, name: \"over\") { task { id } } }";
    for vm in [&a, &b] {
        let body = app.request(Some(&op), create, json!({ "v": vm })).await;
        assert_eq!(common::error_code(&body), "LIMIT_REACHED", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["limit"], 3, "{body}");
    }
    let rest = app
        .client
        .post(format!("{}snapshot/", app.url.trim_end_matches("graphql")))
        .header("X-Auth-Token", &op)
        .json(&json!({ "vm_id": b.parse::<i64>().unwrap(), "name": "over" }))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 400, "REST refuses past the quota");
    let rest: Value = rest.json().await.unwrap();
    assert_eq!(rest["error_code"], "LIMIT_REACHED", "{rest}");
    assert!(rest.to_string().contains("quota"), "{rest}");
    // An apply that would save the current state makes a snapshot too.
    let first = app.tree(&op, &a).await[0].0.clone();
    let save =
        "mutation($s: ID!) { applySnapshot(id: $s, saveCurrentAs: \"saved\") { task { id } } }";
    let body = app.request(Some(&op), save, json!({ "s": first })).await;
    assert_eq!(common::error_code(&body), "LIMIT_REACHED", "{body}");
    assert_eq!((tasks_of(&app, &a).await, tasks_of(&app, &b).await), before);

    // Deleting one makes room again; the actions that make no snapshot never count.
    let (_, task) = app.apply(&op, &first).await;
    assert_eq!(app.finished(&op, &task).await["state"], "SUCCEEDED");
    let b1 = app.tree(&op, &b).await[0].0.clone();
    let (_, task) = app.delete(&op, &b1, false).await;
    assert_eq!(app.finished(&op, &task).await["state"], "SUCCEEDED");
    assert_eq!(create_refusal(&app, &op, &b).await["allowed"], true);
    app.snapshot_built(&op, &b, "b2").await;

    // A quota below the count refuses new snapshots and deletes none; null lifts it.
    let data = app
        .data(&app.admin, SET_QUOTA, json!({ "p": project, "m": 1 }))
        .await;
    assert_eq!(data["updateProject"]["snapshotCount"], 3);
    assert_eq!(app.tree(&op, &a).await.len(), 2);
    let body = app.request(Some(&op), create, json!({ "v": a })).await;
    assert_eq!(common::error_code(&body), "LIMIT_REACHED", "{body}");
    app.data(&app.admin, SET_QUOTA, json!({ "p": project, "m": null }))
        .await;
    app.snapshot_built(&op, &a, "a3").await;
    let me = app
        .data(
            &op,
            "{ me { project { maxSnapshots snapshotCount } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        me["me"]["project"],
        json!({ "maxSnapshots": null, "snapshotCount": 4 })
    );
}

#[tokio::test]
async fn creates_at_once_on_many_vms_never_pass_the_quota() {
    let app = TestApp::spawn().await;
    let project = app.create_project("race").await;
    let op = app.create_token(&project, "OPERATOR").await;
    let host = app.create_host("h", "SIMULATED", "sim://", None).await;
    let mut vms = Vec::new();
    for i in 0..8 {
        vms.push(app.create_vm(&host, &project, &format!("vm{i}")).await);
    }
    let data = app
        .data(
            &app.admin,
            "mutation($n: String!, $m: Int) { createProject(name: $n, maxSnapshots: $m) { maxSnapshots } }",
            json!({ "n": "with-quota", "m": 2 }),
        )
        .await;
    assert_eq!(data["createProject"]["maxSnapshots"], 2);
    app.data(&app.admin, SET_QUOTA, json!({ "p": project, "m": 5 }))
        .await;

    // Two creates per VM, all at once: the combiner batches them, and the batch counts.
    let create =
        "mutation($v: ID!, $n: String!) { createSnapshot(vmId: $v, name: $n) { task { id } } }";
    let asks = vms.iter().flat_map(|vm| {
        ["x", "y"].map(|n| {
            let (app, op) = (&app, &op);
            async move {
                app.request(Some(op), create, json!({ "v": vm, "n": n }))
                    .await
            }
        })
    });
    let answers = futures_util::future::join_all(asks).await;
    for answer in answers.iter().filter(|b| !b["errors"].is_null()) {
        let code = common::error_code(answer);
        assert!(code == "LIMIT_REACHED" || code == "VM_BUSY", "{answer}");
    }
    let accepted = answers.iter().filter(|b| b["errors"].is_null()).count();
    let limited = answers
        .iter()
        .filter(|b| !b["errors"].is_null() && common::error_code(b) == "LIMIT_REACHED")
        .count();
    assert_eq!(accepted, 5, "exactly the quota is accepted: {answers:?}");
    // The rest are refused by the quota, or busy (a second create on a VM still working).
    assert!(limited >= 1, "{answers:?}");
    let count = app
        .data(&op, "{ me { project { snapshotCount } } }", json!({}))
        .await;
    assert_eq!(count["me"]["project"]["snapshotCount"], 5);
}

#[tokio::test]
async fn snapshots_kept_past_the_stale_age_are_flagged() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("stale", "sim://").await;
    let old = app.snapshot_built(&f.operator, &f.vm, "old").await;
    let query = "query($v: ID!) { vm(id: $v) { snapshots(includeClosed: true) { id name state stale staleSince createdAt } } }";
    let flags = |data: Value| -> Vec<(String, bool)> {
        data["vm"]["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_owned(),
                    s["stale"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    let data = app.data(&f.operator, query, json!({ "v": f.vm })).await;
    assert_eq!(flags(data.clone()), [("old".to_owned(), false)]);
    let s = &data["vm"]["snapshots"][0];
    let created: chrono::DateTime<Utc> = s["createdAt"].as_str().unwrap().parse().unwrap();
    let since: chrono::DateTime<Utc> = s["staleSince"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        since - created,
        Duration::hours(72),
        "the default age is VMware's 72 hours"
    );

    // A snapshot is stale once kept past the age; a deleted one never is.
    let gone = app.snapshot_built(&f.operator, &f.vm, "gone").await;
    let (_, task) = app.delete(&f.operator, &gone, false).await;
    assert_eq!(app.finished(&f.operator, &task).await["state"], "SUCCEEDED");
    app.set_clock(Utc::now() + Duration::hours(71));
    let data = app.data(&f.operator, query, json!({ "v": f.vm })).await;
    assert_eq!(
        flags(data),
        [("old".to_owned(), false), ("gone".to_owned(), false)]
    );
    app.set_clock(Utc::now() + Duration::hours(73));
    let data = app.data(&f.operator, query, json!({ "v": f.vm })).await;
    assert_eq!(
        flags(data.clone()),
        [("old".to_owned(), true), ("gone".to_owned(), false)]
    );
    let gone_row = &data["vm"]["snapshots"][1];
    assert_eq!(gone_row["state"], "CLOSED");
    assert!(gone_row["staleSince"].is_null());
    let snapshot = app
        .data(
            &f.operator,
            "query($s: ID!) { snapshot(id: $s) { stale } }",
            json!({ "s": old }),
        )
        .await;
    assert_eq!(snapshot["snapshot"]["stale"], true);
}
