//! Batches of operations, as Apollo's `BatchHttpLink` posts them (issue 31): a JSON array
//! answered by an array in the same order; each operation admitted (and charged) as a
//! lone one would be; a batch of too many operations, or costing more together than a
//! request may, refused whole and clearly.

mod common;

use common::{TestApp, error_code};
use serde_json::{Value, json};

#[tokio::test]
async fn a_batch_is_answered_in_order_each_operation_on_its_own() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("batched", "sim://").await;
    let op = f.operator.as_str();
    let batch = json!([
        { "query": "{ me { role } }" },
        { "query": "mutation($v: ID!) { createSnapshot(vmId: $v, name: \"one\") { snapshot { name } } }",
          "variables": { "v": f.vm } },
        { "query": "{ nope }" },
        { "query": "subscription { events { id } }" },
        { "query": "query($v: ID!) { vm(id: $v) { name } }", "variables": { "v": f.vm } },
    ]);
    let (status, answers) = app.post_json(op, batch).await;
    assert_eq!(status, 200, "{answers}");
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), 5);
    assert_eq!(answers[0]["data"]["me"]["role"], "OPERATOR");
    assert_eq!(
        answers[1]["data"]["createSnapshot"]["snapshot"]["name"],
        "one"
    );
    assert_eq!(error_code(&answers[2]), "VALIDATION", "{}", answers[2]);
    assert_eq!(error_code(&answers[3]), "VALIDATION", "{}", answers[3]);
    assert_eq!(answers[4]["data"]["vm"]["name"], "batched-vm");
}

#[tokio::test]
async fn a_batch_too_large_or_too_costly_is_refused_whole() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("greedy", "sim://").await;
    let op = f.operator.as_str();

    // A thousand operations: refused by their number, none run.
    let many: Vec<Value> = (0..1000)
        .map(|_| json!({ "query": "{ me { role } }" }))
        .collect();
    let (status, body) = app.post_json(op, json!(many)).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(error_code(&body), "QUERY_TOO_COMPLEX", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("from 1 to 20"),
        "{body}"
    );

    // Each within the limit, together over it: refused, with the cost and the limit,
    // and none run (the creates are not made).
    let heavy = "{ vms(first: 50) { edges { node { snapshots(first: 20) { history(first: 10) { at } } } } } }";
    let mut ops: Vec<Value> = (0..19).map(|_| json!({ "query": heavy })).collect();
    ops.push(json!({
        "query": "mutation($v: ID!) { createSnapshot(vmId: $v, name: \"never\") { snapshot { id } } }",
        "variables": { "v": f.vm }
    }));
    let alone = app.request(Some(op), heavy, json!({})).await;
    assert!(alone["errors"].is_null(), "one alone is admitted: {alone}");
    let (status, body) = app.post_json(op, json!(ops)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(error_code(&body), "QUERY_TOO_COMPLEX", "{body}");
    let ext = &body["errors"][0]["extensions"];
    assert!(
        ext["cost"].as_u64().unwrap() > ext["limit"].as_u64().unwrap(),
        "{body}"
    );
    assert!(
        app.tree(op, &f.vm).await.is_empty(),
        "nothing in the batch ran"
    );

    // An empty batch is no operation.
    let (_, body) = app.post_json(op, json!([])).await;
    assert_eq!(error_code(&body), "VALIDATION", "{body}");
}
