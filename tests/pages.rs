//! Pages read in SQL (issue 29): every list under a task, a snapshot or a VM returns the
//! page its `first` and `after` ask for, read per scope in one statement for all the
//! objects of a request, so that an old VM's past is never loaded to answer a page.
//! (`tests/plans.rs` shows each page's read uses its scope's index in order.)

mod common;

use common::TestApp;
use serde_json::{Value, json};

/// The ids in a list of objects.
fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn every_list_under_an_object_pages_in_the_database() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("pages", "sim://").await;
    let op = f.operator.as_str();
    // A past: `base`, applied again and again, and `gone`, made and deleted.
    let base = app.snapshot_built(op, &f.vm, "base").await;
    let gone = app.snapshot_built(op, &f.vm, "gone").await;
    for _ in 0..3 {
        let (_, task) = app.apply(op, &base).await;
        app.finished(op, &task).await;
    }
    let (_, task) = app.delete(op, &gone, false).await;
    app.finished(op, &task).await;

    // A task's events: the whole list, then two pages of it, and aliases of one task
    // with different pages in one request.
    let all = app
        .data(
            op,
            "query($t: ID!) { task(id: $t) { all: events(first: 100) { id }
               first2: events(first: 2) { id } none: events(first: 0) { id } } }",
            json!({ "t": task }),
        )
        .await;
    let every = ids(&all["task"]["all"]);
    assert!(every.len() >= 3, "a task has its events: {every:?}");
    assert_eq!(ids(&all["task"]["first2"]), every[..2]);
    assert!(ids(&all["task"]["none"]).is_empty());
    let next = app
        .data(
            op,
            "query($t: ID!, $a: ID!) { task(id: $t) { events(first: 2, after: $a) { id } } }",
            json!({ "t": task, "a": every[1] }),
        )
        .await;
    assert_eq!(
        ids(&next["task"]["events"]),
        every[2..every.len().min(4)],
        "the page after the second event"
    );

    // Several tasks in one request: each gets its own events, its first three.
    let tasks = app
        .data(
            op,
            "query($v: ID!) { tasks(vmId: $v, first: 10) { edges { node { id
               events(first: 3) { id task { id } } everything: events(first: 100) { id } } } } }",
            json!({ "v": f.vm }),
        )
        .await;
    let edges = tasks["tasks"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 6, "two creates, three applies and a delete");
    for edge in edges {
        let node = &edge["node"];
        let page = node["events"].as_array().unwrap();
        assert!(!page.is_empty());
        for event in page {
            assert_eq!(event["task"]["id"], node["id"], "an event of another task");
        }
        let everything = ids(&node["everything"]);
        assert_eq!(ids(&node["events"]), everything[..everything.len().min(3)]);
    }

    // A snapshot's history and tasks, and a VM's history, each paged after a cursor.
    let snapshot = app
        .data(
            op,
            "query($s: ID!) { snapshot(id: $s) { history(first: 100) { state }
               tasks(first: 100) { id kind } } }",
            json!({ "s": base }),
        )
        .await;
    let history = snapshot["snapshot"]["history"].as_array().unwrap();
    // Made (3 rows: asked for, being made, made), then three applies of 3 rows each.
    assert_eq!(history.len(), 12, "{history:?}");
    let base_tasks = ids(&snapshot["snapshot"]["tasks"]);
    assert_eq!(base_tasks.len(), 4, "its create and three applies");
    let paged = app
        .data(
            op,
            "query($s: ID!, $a: ID!) { snapshot(id: $s) { tasks(first: 2, after: $a) { id } } }",
            json!({ "s": base, "a": base_tasks[0] }),
        )
        .await;
    assert_eq!(ids(&paged["snapshot"]["tasks"]), base_tasks[1..3]);
    let vm_history = app
        .data(
            op,
            "query($v: ID!) { vm(id: $v) { all: history(first: 100) { state }
               two: history(first: 2) { state } } }",
            json!({ "v": f.vm }),
        )
        .await;
    let whole = vm_history["vm"]["all"].as_array().unwrap();
    assert!(
        whole.len() > history.len(),
        "the VM's history holds both snapshots'"
    );
    assert_eq!(vm_history["vm"]["two"].as_array().unwrap()[..], whole[..2]);

    // Closed snapshots are listed only when asked for, in pages too.
    let listed = app
        .data(
            op,
            "query($v: ID!, $b: ID!) { vm(id: $v) { open: snapshots { id }
               closed: snapshots(includeClosed: true) { id state }
               second: snapshots(includeClosed: true, first: 1, after: $b) { id } } }",
            json!({ "v": f.vm, "b": base }),
        )
        .await;
    assert_eq!(ids(&listed["vm"]["open"]), [base.as_str()]);
    assert_eq!(ids(&listed["vm"]["closed"]), [base.as_str(), gone.as_str()]);
    assert_eq!(listed["vm"]["closed"][1]["state"], "CLOSED");
    assert_eq!(ids(&listed["vm"]["second"]), [gone.as_str()]);
}

#[tokio::test]
async fn rest_objects_hold_a_snapshots_newest_history_and_the_list_holds_all() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("rest-pages", "sim://").await;
    let op = f.operator.as_str();
    let base = app.snapshot_built(op, &f.vm, "base").await;
    // Made (3 rows), then 17 applies of 3 rows each: 54 rows, more than an object holds.
    for _ in 0..17 {
        let (_, task) = app.apply(op, &base).await;
        app.finished(op, &task).await;
    }
    let rest = app.url.trim_end_matches("graphql").to_owned();
    let client = reqwest::Client::new();
    let get = |path: String| {
        let request = client
            .get(format!("{rest}{path}"))
            .header("X-Auth-Token", op);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let listed = get(format!(
        "snapshot_history/?search[snapshot_id]={base}&limit=100"
    ))
    .await;
    let all = listed["content"].as_array().unwrap();
    assert_eq!(all.len(), 54, "{listed}");
    let object = get(format!("snapshot/{base}/")).await;
    let held = object["content"]["history"].as_array().unwrap();
    assert_eq!(
        held.len(),
        50,
        "an object holds its snapshot's newest 50 rows"
    );
    assert_eq!(held[..], all[4..], "the newest, oldest first");
    let tree = get(format!("snapshot_tree/{}/", f.vm)).await;
    let node = &tree["content"]["branches"][0];
    assert_eq!(node["id"].to_string(), base);
    assert_eq!(node["history"].as_array().unwrap()[..], all[4..]);
}

/// A request may ask for more pages than SQLite takes terms in one compound statement
/// (500): 600 aliased pages of one task's events, each after another cursor, are all
/// answered.
#[tokio::test]
async fn a_request_of_six_hundred_pages_is_answered() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("many-pages", "sim://").await;
    let op = f.operator.as_str();
    let (_, task) = app.create_snapshot(op, &f.vm, "one").await;
    app.finished(op, &task).await;
    let aliases: String = (0..600)
        .map(|k| format!("e{k}: events(first: 1, after: \"{}\") {{ id }} ", k + 1))
        .collect();
    let query = format!("query($t: ID!) {{ task(id: $t) {{ {aliases} }} }}");
    let data = app.data(op, &query, json!({ "t": task })).await;
    let first = ids(&data["task"]["e0"]);
    assert_eq!(first.len(), 1, "{data}");
    assert!(data["task"]["e599"].is_array(), "{data}");
}
