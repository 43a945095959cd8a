//! Reading trees: a fixed number of SQL statements however deep or wide the tree, and
//! the query limits (deep enough for a 50-snapshot chain, not for abuse).

mod common;

use common::TestApp;
use serde_json::{Value, json};

/// Fields asked of every snapshot, touching every loader (with pages small enough for
/// the cost limit: a snapshot has a few of each).
const FIELDS: &str = "id name state active parent { id } vm { name } \
    history(first: 5) { state actor } tasks(first: 2) { kind state events(first: 8) { state phase } }";

/// `children { FIELDS children { ... } }`, `depth` levels deep.
fn nested(depth: usize) -> String {
    let mut query = String::new();
    for _ in 0..depth {
        query.push_str(&format!("children {{ {FIELDS} "));
    }
    query.push_str(&"}".repeat(depth));
    query
}

fn tree_query(depth: usize) -> String {
    format!(
        "query($v: ID!) {{ vm(id: $v) {{ name busy snapshotCount snapshotLimit host {{ name vms {{ id }} }}
           activeSnapshot {{ id }} snapshotTree {{ {FIELDS} {} }} }} }}",
        nested(depth)
    )
}

/// Statements the server ran to answer one request.
///
/// The counter is the whole process's, so background work (the event pump's poll tick,
/// the robot's heartbeats) may add a statement to one run; such noise only ever adds, so
/// the least of three runs is the request's own count.
async fn statements(app: &TestApp, token: &str, query: &str, variables: Value) -> (u64, Value) {
    let mut least = u64::MAX;
    let mut data = Value::Null;
    // The fewest of several runs: the robot's and the event pump's own statements (a
    // poll, the last task's wake-ups) may fall inside one, on a loaded machine in a row.
    for _ in 0..6 {
        let before = app.statements();
        data = app.data(token, query, variables.clone()).await;
        least = least.min(app.statements() - before);
    }
    (least, data)
}

/// Depth of the deepest `children` chain in a returned tree.
fn depth(nodes: &Value) -> usize {
    nodes
        .as_array()
        .map(|n| {
            n.iter()
                .map(|c| 1 + depth(&c["children"]))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn trees_load_with_a_fixed_number_of_statements() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("small", "sim://").await;
    let op = f.operator.as_str();
    let big_vm = app.create_vm(&f.host, &f.project, "big").await;

    // Small: a chain of two. Big: a chain of 30, and 15 more children of its root.
    app.snapshot_built(op, &f.vm, "a").await;
    app.snapshot_built(op, &f.vm, "b").await;
    let root = app.snapshot_built(op, &big_vm, "root").await;
    for i in 1..30 {
        app.snapshot_built(op, &big_vm, &format!("chain{i}")).await;
    }
    for i in 0..15 {
        let (_, task) = app.apply(op, &root).await;
        app.finished(op, &task).await;
        app.snapshot_built(op, &big_vm, &format!("wide{i}")).await;
    }

    let query = tree_query(32);
    let (small, small_data) = statements(&app, op, &query, json!({ "v": f.vm })).await;
    let (big, big_data) = statements(&app, op, &query, json!({ "v": big_vm })).await;
    assert_eq!(depth(&small_data["vm"]["snapshotTree"]), 2);
    assert_eq!(depth(&big_data["vm"]["snapshotTree"]), 30);
    assert_eq!(
        big_data["vm"]["snapshotTree"][0]["children"]
            .as_array()
            .unwrap()
            .len(),
        16
    );
    assert_eq!(
        small, big,
        "statements for a 2-snapshot tree vs a 45-snapshot tree"
    );

    // Many VMs at once cost the same as one.
    let list = format!(
        "{{ vms(first: 5) {{ edges {{ node {{ snapshotTree {{ {FIELDS} {} }} }} }} }} }}",
        nested(32)
    );
    let (one_vm, _) = statements(&app, op, &tree_query(32), json!({ "v": f.vm })).await;
    let (all_vms, data) = statements(&app, op, &list, json!({})).await;
    assert_eq!(data["vms"]["edges"].as_array().unwrap().len(), 2);
    assert!(
        all_vms <= one_vm,
        "listing 2 VMs took {all_vms} statements, one VM {one_vm}"
    );
    eprintln!("statements per request: tree {small}, listing {all_vms}");
}

#[tokio::test]
async fn a_query_as_deep_as_a_50_snapshot_chain_works_and_a_200_deep_one_is_refused() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("deep", "sim://").await;
    let op = f.operator.as_str();
    for i in 0..50 {
        app.snapshot_built(op, &f.vm, &format!("s{i}")).await;
    }
    let mut chain = String::new();
    for _ in 0..49 {
        chain.push_str("children { id name ");
    }
    chain.push_str(&"}".repeat(49));
    let query = format!("query($v: ID!) {{ vm(id: $v) {{ snapshotTree {{ id name {chain} }} }} }}");
    let data = app.data(op, &query, json!({ "v": f.vm })).await;
    assert_eq!(depth(&data["vm"]["snapshotTree"]), 50);

    let mut too_deep = String::from("{ vms { edges { node { snapshotTree { ");
    for _ in 0..200 {
        too_deep.push_str("children { ");
    }
    too_deep.push_str("id ");
    too_deep.push_str(&"} ".repeat(200));
    too_deep.push_str("} } } } }");
    let body = app.request(Some(op), &too_deep, json!({})).await;
    assert_eq!(common::error_code(&body), "QUERY_TOO_COMPLEX", "{body}");
}

#[tokio::test]
async fn complexity_and_size_are_limited() {
    let app = TestApp::spawn().await;
    let op = app.admin.as_str();
    // Each alias may list 20 VMs with a page of their snapshots' history.
    let alias = |i: usize| {
        format!(
            "a{i}: vms(first: 20) {{ edges {{ node {{ snapshots(first: 10) {{ history(first: 10) {{ actor at }} }} }} }} }}"
        )
    };
    let heavy = format!("{{ {} }}", (0..10).map(alias).collect::<Vec<_>>().join(" "));
    let body = app.request(Some(op), &heavy, json!({})).await;
    assert_eq!(common::error_code(&body), "QUERY_TOO_COMPLEX");
    let ext = &body["errors"][0]["extensions"];
    assert!(
        ext["cost"].as_u64().unwrap() > ext["limit"].as_u64().unwrap(),
        "{body}"
    );
    // One of them alone is fine.
    app.data(op, &format!("{{ {} }}", alias(0)), json!({}))
        .await;
    // A huge query text is refused before it is parsed.
    let huge = format!("{{ hosts {{ id }} }} # {}", "x".repeat(40 * 1024));
    let body = app.request(Some(op), &huge, json!({})).await;
    assert_eq!(common::error_code(&body), "QUERY_TOO_COMPLEX");
    // Pages are bounded too.
    let code = app
        .error_code(
            Some(op),
            "{ vms(first: 500) { pageInfo { hasNextPage } } }",
            json!({}),
        )
        .await;
    assert_eq!(code, "VALIDATION");
}

#[tokio::test]
async fn connections_page_through_vms_and_tasks() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("pages", "sim://").await;
    let op = f.operator.as_str();
    for i in 0..4 {
        app.create_vm(&f.host, &f.project, &format!("more{i}"))
            .await;
    }
    let page = "query($a: String) { vms(first: 2, after: $a) { edges { cursor node { name } } pageInfo { hasNextPage endCursor } } }";
    let mut names = Vec::new();
    let mut after = Value::Null;
    loop {
        let data = app.data(op, page, json!({ "a": after })).await;
        for edge in data["vms"]["edges"].as_array().unwrap() {
            names.push(edge["node"]["name"].as_str().unwrap().to_owned());
        }
        if data["vms"]["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = data["vms"]["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(names, ["pages-vm", "more0", "more1", "more2", "more3"]);

    app.snapshot_built(op, &f.vm, "one").await;
    app.snapshot_built(op, &f.vm, "two").await;
    let data = app
        .data(op, "query($v: ID!) { tasks(vmId: $v, state: SUCCEEDED, first: 1) { edges { node { snapshot { name } } } pageInfo { hasNextPage } } }", json!({ "v": f.vm }))
        .await;
    assert_eq!(
        data["tasks"]["edges"][0]["node"]["snapshot"]["name"], "two",
        "newest first"
    );
    assert_eq!(data["tasks"]["pageInfo"]["hasNextPage"], true);
}

#[tokio::test]
async fn policies_load_with_a_fixed_number_of_statements() {
    // Each policy runs as a token of its own: why it stopped and whether it may be
    // resumed are read off the tokens of all of them at once, not one read per policy.
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("policies", "sim://").await;
    let create = "mutation($i: PolicyInput!) { createPolicy(input: $i) { id } }";
    let query = "{ policies { id stoppedBecause actions { resume { allowed reason } } } }";
    let mut counts = Vec::new();
    for n in 0..6 {
        let token = app.create_token(&f.project, "OPERATOR").await;
        app.data(
            &token,
            create,
            json!({ "i": { "name": format!("p{n}"), "vmId": f.vm, "everySeconds": 3600 } }),
        )
        .await;
        if n == 1 || n == 5 {
            let (count, data) = statements(&app, &f.operator, query, json!({})).await;
            assert_eq!(data["policies"].as_array().unwrap().len(), n + 1);
            counts.push(count);
        }
    }
    assert_eq!(
        counts[0], counts[1],
        "statements for 2 policies and for 6: {counts:?}"
    );
}

#[tokio::test]
async fn the_dashboards_vm_read_as_the_benchmarks_send_it_is_answered() {
    // `common::DASHBOARD_VM_QUERY` is the page's read written out for the benchmarks:
    // answered without an error, it is one the schema still takes.
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("dashboard", "sim://").await;
    app.snapshot_built(&f.operator, &f.vm, "a").await;
    let data = app
        .data(
            &f.operator,
            common::DASHBOARD_VM_QUERY,
            json!({ "v": f.vm }),
        )
        .await;
    let snapshot = &data["vm"]["snapshots"][0];
    assert_eq!(snapshot["protected"], false);
    assert_eq!(snapshot["actions"]["protect"]["allowed"], true);
}
