//! Protection (issue 30): a protected snapshot is kept from every delete, alone or in a
//! subtree, through GraphQL and CloudCIX's REST routes alike, and offered as such, until
//! an OPERATOR unprotects it; a VIEWER cannot change it.

mod common;

use common::{TestApp, error_code};
use serde_json::{Value, json};

const PROTECT: &str =
    "mutation($s: ID!, $p: Boolean) { updateSnapshot(id: $s, protected: $p) { id protected } }";

/// The first error of `body`, its code and `extensions.snapshotId`.
fn refusal(body: &Value) -> (String, Value) {
    (
        error_code(body),
        body["errors"][0]["extensions"]["snapshotId"].clone(),
    )
}

#[tokio::test]
async fn a_protected_snapshot_is_kept_from_every_delete_until_unprotected() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("guarded", "sim://").await;
    let op = f.operator.as_str();
    let viewer = app.create_token(&f.project, "VIEWER").await;

    // A protected snapshot, made so, and a child under it.
    let (kept, task) = app
        .act(
            op,
            "mutation($v: ID!) { createSnapshot(vmId: $v, name: \"golden\", protected: true) { snapshot { id } task { id } } }",
            json!({ "v": f.vm }),
        )
        .await;
    app.finished(op, &task).await;
    let child = app.snapshot_built(op, &f.vm, "child").await;
    let (_, task) = app.create_snapshot(op, &f.vm, "plain").await;
    app.finished(op, &task).await;
    let shown = app
        .data(
            op,
            "query($s: ID!) { snapshot(id: $s) { protected
               actions { delete { allowed refusal reason } deleteSubtree { allowed refusal } } } }",
            json!({ "s": kept }),
        )
        .await;
    assert_eq!(shown["snapshot"]["protected"], true);
    assert_eq!(shown["snapshot"]["actions"]["delete"]["allowed"], false);
    assert_eq!(
        shown["snapshot"]["actions"]["delete"]["refusal"],
        "PROTECTED"
    );
    assert!(
        shown["snapshot"]["actions"]["delete"]["reason"]
            .as_str()
            .unwrap()
            .contains("\"golden\" is protected"),
        "{shown}"
    );

    // Deleting it is refused, and so is deleting the subtree of its parent... it is a
    // root here: the subtree delete of itself, then a child's delete, which is fine.
    let delete = "mutation($s: ID!, $t: Boolean!) { deleteSnapshot(id: $s, removeSubtree: $t) { task { id } } }";
    let body = app
        .request(Some(op), delete, json!({ "s": kept, "t": false }))
        .await;
    assert_eq!(refusal(&body), ("PROTECTED".into(), json!(kept)));
    let body = app
        .request(Some(op), delete, json!({ "s": kept, "t": true }))
        .await;
    assert_eq!(refusal(&body), ("PROTECTED".into(), json!(kept)));

    // Protecting the child makes a subtree delete above it refused, naming the child.
    app.data(op, PROTECT, json!({ "s": child, "p": true }))
        .await;
    app.data(op, PROTECT, json!({ "s": kept, "p": false }))
        .await;
    let body = app
        .request(Some(op), delete, json!({ "s": kept, "t": true }))
        .await;
    assert_eq!(refusal(&body), ("PROTECTED".into(), json!(child)));
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("below this one"), "{message}");

    // CloudCIX's REST delete (state 8) is refused the same way, in its envelope.
    let base = app.url.trim_end_matches("graphql");
    let response = reqwest::Client::new()
        .put(format!("{base}snapshot/{child}/"))
        .header("X-Auth-Token", op)
        .json(&json!({ "state": 8 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let rest: Value = response.json().await.unwrap();
    assert_eq!(rest["error_code"], "PROTECTED", "{rest}");

    // A VIEWER can neither protect nor unprotect.
    let body = app
        .request(Some(&viewer), PROTECT, json!({ "s": child, "p": false }))
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN");

    // Unprotected, the subtree goes; nothing was deleted before.
    app.data(op, PROTECT, json!({ "s": child, "p": false }))
        .await;
    let tree = app.tree(op, &f.vm).await;
    assert_eq!(tree.len(), 3, "nothing deleted while protected: {tree:?}");
    let (_, task) = app.delete(op, &kept, true).await;
    assert_eq!(app.finished(op, &task).await["state"], "SUCCEEDED");
    assert!(app.tree(op, &f.vm).await.is_empty());
}
