//! Lifetimes (issue 30): a snapshot may expire, and the robot's expiry sweep then deletes
//! it as a user's delete of it alone would (its children move up), recorded as `expiry`
//! with the reason `expired`, but never a protected one nor the VM's active one. A
//! project's maximum lifetime is every new snapshot's expiry by default and at the latest.
//! Time moves through the server's clock file, as it does for stale snapshots.

mod common;

use chrono::{DateTime, Duration, SubsecRound as _, Utc};
use common::{TestApp, error_code};
use serde_json::{Value, json};

const CREATE: &str = "mutation($v: ID!, $n: String!, $e: DateTime, $p: Boolean) {
    createSnapshot(vmId: $v, name: $n, expiresAt: $e, protected: $p) {
      snapshot { id expiresAt } task { id } } }";

const EXPIRE: &str =
    "mutation($s: ID!, $e: DateTime) { updateSnapshot(id: $s, expiresAt: $e) { id expiresAt } }";

const LIMITS: &str = "mutation($p: ID!, $h: Int) {
    updateProject(id: $p, maxLifetimeHours: $h) { maxSnapshots maxLifetimeHours } }";

fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// Creates snapshot `name` expiring at `expires` (protected if asked) and waits for it.
async fn made(
    app: &TestApp,
    token: &str,
    vm: &str,
    name: &str,
    expires: Option<DateTime<Utc>>,
    protected: bool,
) -> (String, Value) {
    let data = app
        .data(
            token,
            CREATE,
            json!({ "v": vm, "n": name, "e": expires.map(iso), "p": protected }),
        )
        .await;
    let payload = &data["createSnapshot"];
    let done = app
        .finished(token, payload["task"]["id"].as_str().unwrap())
        .await;
    assert_eq!(done["state"], "SUCCEEDED", "{done:#}");
    let id = payload["snapshot"]["id"].as_str().unwrap().to_owned();
    (id, payload["snapshot"]["expiresAt"].clone())
}

/// Waits until `gone` are all deleted (CLOSED) and the robot is idle on `vm`.
async fn until_closed(app: &TestApp, token: &str, vm: &str, gone: &[&str]) {
    for _ in 0..15_000 {
        let tree = app.tree(token, vm).await;
        let open = tree.iter().any(|(id, ..)| gone.contains(&id.as_str()));
        let busy = tree.iter().any(|(.., state, _)| state != "RUNNING");
        if !open && !busy {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{gone:?} were never deleted");
}

/// A snapshot's history as (state, actor, reason).
async fn history(app: &TestApp, token: &str, snapshot: &str) -> Vec<(String, String, Value)> {
    let data = app
        .data(
            token,
            "query($s: ID!) { snapshot(id: $s) { history(first: 50) { state actor reason } } }",
            json!({ "s": snapshot }),
        )
        .await;
    data["snapshot"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["state"].as_str().unwrap().to_owned(),
                h["actor"].as_str().unwrap().to_owned(),
                h["reason"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn expired_snapshots_are_deleted_alone_but_never_a_protected_or_the_active_one() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("ageing", "sim://").await;
    let op = f.operator.as_str();
    let now = Utc::now().trunc_subsecs(0);
    app.set_clock(now);
    let soon = now + Duration::hours(1);

    // old -> kept (protected) -> mid -> current (active), all expiring in an hour, and
    // a snapshot elsewhere that never expires.
    let (old, shown) = made(&app, op, &f.vm, "old", Some(soon), false).await;
    assert_eq!(shown, iso(soon));
    let (kept, _) = made(&app, op, &f.vm, "kept", Some(soon), true).await;
    let (mid, _) = made(&app, op, &f.vm, "mid", Some(soon), false).await;
    let (current, _) = made(&app, op, &f.vm, "current", Some(soon), false).await;
    assert_eq!(
        history(&app, op, &old).await[0],
        ("REQUESTED".into(), "OPERATOR".into(), json!("user"))
    );

    // Nothing has expired yet: a sweep deletes nothing.
    tokio::time::sleep(std::time::Duration::from_secs(11)).await;
    assert_eq!(app.tree(op, &f.vm).await.len(), 4);

    // Two hours on, old and mid go, each alone: kept moves up to be a root, current
    // under kept. kept (protected) and current (active) stay, expired.
    app.set_clock(now + Duration::hours(2));
    until_closed(&app, op, &f.vm, &[&old, &mid]).await;
    let tree = app.tree(op, &f.vm).await;
    assert_eq!(
        tree,
        vec![
            (kept.clone(), None, "RUNNING".into(), false),
            (current.clone(), Some(kept.clone()), "RUNNING".into(), true),
        ]
    );
    let past = history(&app, op, &old).await;
    let asked = past.iter().find(|(state, ..)| state == "SCRUB").unwrap();
    assert_eq!(asked, &("SCRUB".into(), "expiry".into(), json!("expired")));
    let last = past.last().unwrap();
    assert_eq!(last, &("CLOSED".into(), "robot".into(), json!("robot")));

    // The delete was a task like a user's, asked by `expiry`.
    let tasks = app
        .data(
            op,
            "query($s: ID!) { snapshot(id: $s) { tasks(first: 5) { kind state requestedBy } } }",
            json!({ "s": old }),
        )
        .await;
    let delete = &tasks["snapshot"]["tasks"][1];
    assert_eq!(
        (&delete["kind"], &delete["state"], &delete["requestedBy"]),
        (&json!("SCRUB"), &json!("SUCCEEDED"), &json!("expiry"))
    );

    // Once kept is applied, current is no longer active and goes; kept, now active and
    // protected, stays even when unprotected (it is the active one).
    let (_, task) = app.apply(op, &kept).await;
    app.finished(op, &task).await;
    until_closed(&app, op, &f.vm, &[&current]).await;
    app.data(
        op,
        "mutation($s: ID!) { updateSnapshot(id: $s, protected: false) { id } }",
        json!({ "s": kept }),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(11)).await;
    assert_eq!(
        app.tree(op, &f.vm).await,
        vec![(kept.clone(), None, "RUNNING".into(), true)]
    );
}

#[tokio::test]
async fn an_expiry_moved_later_or_removed_keeps_the_snapshot() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("second-thoughts", "sim://").await;
    let op = f.operator.as_str();
    let viewer = app.create_token(&f.project, "VIEWER").await;
    let now = Utc::now().trunc_subsecs(0);
    app.set_clock(now);

    let (first, _) = made(
        &app,
        op,
        &f.vm,
        "first",
        Some(now + Duration::hours(1)),
        false,
    )
    .await;
    let (second, _) = made(
        &app,
        op,
        &f.vm,
        "second",
        Some(now + Duration::hours(1)),
        false,
    )
    .await;
    made(&app, op, &f.vm, "top", None, false).await;

    // A VIEWER cannot change an expiry; an expiry in the past is refused.
    let later = iso(now + Duration::hours(5));
    assert_eq!(
        app.error_code(Some(&viewer), EXPIRE, json!({ "s": first, "e": later }))
            .await,
        "FORBIDDEN"
    );
    let body = app
        .request(
            Some(op),
            EXPIRE,
            json!({ "s": first, "e": iso(now - Duration::minutes(1)) }),
        )
        .await;
    assert_eq!(error_code(&body), "VALIDATION", "{body}");

    // first's expiry moves later, second's is removed: two hours on, both stay.
    let moved = app
        .data(op, EXPIRE, json!({ "s": first, "e": later }))
        .await;
    assert_eq!(moved["updateSnapshot"]["expiresAt"], later);
    let removed = app
        .data(op, EXPIRE, json!({ "s": second, "e": null }))
        .await;
    assert_eq!(removed["updateSnapshot"]["expiresAt"], Value::Null);
    app.set_clock(now + Duration::hours(2));
    tokio::time::sleep(std::time::Duration::from_secs(11)).await;
    assert_eq!(app.tree(op, &f.vm).await.len(), 3);

    // Past the moved expiry, first goes.
    app.set_clock(now + Duration::hours(6));
    until_closed(&app, op, &f.vm, &[&first]).await;
    assert_eq!(app.tree(op, &f.vm).await.len(), 2);
}

#[tokio::test]
async fn a_projects_maximum_lifetime_is_every_new_snapshots_expiry_by_default_and_at_the_latest() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("short-lived", "sim://").await;
    let op = f.operator.as_str();
    let now = Utc::now().trunc_subsecs(0);
    app.set_clock(now);

    // Only an ADMIN sets it, from an hour to ten years.
    let set = |h: Value| json!({ "p": f.project, "h": h });
    assert_eq!(
        app.error_code(Some(op), LIMITS, set(json!(2))).await,
        "FORBIDDEN"
    );
    for bad in [0, -5, 24 * 366 * 10 + 1] {
        assert_eq!(
            app.error_code(Some(&app.admin), LIMITS, set(json!(bad)))
                .await,
            "VALIDATION"
        );
    }
    app.data(
        &app.admin,
        "mutation($p: ID!) { updateProject(id: $p, maxSnapshots: 10) { id } }",
        json!({ "p": f.project }),
    )
    .await;
    let data = app.data(&app.admin, LIMITS, set(json!(2))).await;
    // What is not given is kept: the quota set before.
    assert_eq!(
        data["updateProject"],
        json!({ "maxSnapshots": 10, "maxLifetimeHours": 2 })
    );

    // A new snapshot without an expiry gets the maximum; one within it keeps its own;
    // one past it is refused, saying the latest allowed.
    let (a, expires) = made(&app, op, &f.vm, "a", None, false).await;
    assert_eq!(expires, iso(now + Duration::hours(2)));
    let (_, expires) = made(&app, op, &f.vm, "b", Some(now + Duration::hours(1)), false).await;
    assert_eq!(expires, iso(now + Duration::hours(1)));
    let body = app
        .request(
            Some(op),
            CREATE,
            json!({ "v": f.vm, "n": "c", "e": iso(now + Duration::hours(3)), "p": false }),
        )
        .await;
    assert_eq!(error_code(&body), "VALIDATION", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("at most 2 hours"),
        "{body}"
    );

    // Its expiry cannot be removed, nor moved past the maximum from its making.
    let body = app
        .request(Some(op), EXPIRE, json!({ "s": a, "e": null }))
        .await;
    assert_eq!(error_code(&body), "VALIDATION", "{body}");
    let body = app
        .request(
            Some(op),
            EXPIRE,
            json!({ "s": a, "e": iso(now + Duration::hours(3)) }),
        )
        .await;
    assert_eq!(error_code(&body), "VALIDATION", "{body}");

    // An apply's save is a new snapshot too.
    let data = app
        .data(
            op,
            "mutation($s: ID!) { applySnapshot(id: $s, saveCurrentAs: \"saved\") { task { id savedAs { id } } } }",
            json!({ "s": a }),
        )
        .await;
    let task = &data["applySnapshot"]["task"];
    app.finished(op, task["id"].as_str().unwrap()).await;
    let saved = app
        .data(
            op,
            "query($s: ID!) { snapshot(id: $s) { name expiresAt } }",
            json!({ "s": task["savedAs"]["id"] }),
        )
        .await;
    assert_eq!(
        saved["snapshot"],
        json!({ "name": "saved", "expiresAt": iso(now + Duration::hours(2)) })
    );

    // Lifted, it no longer applies to new snapshots; old ones keep their expiry.
    app.data(&app.admin, LIMITS, set(Value::Null)).await;
    let (_, expires) = made(&app, op, &f.vm, "free", None, false).await;
    assert_eq!(expires, Value::Null);
    let kept = app
        .data(
            op,
            "query($s: ID!) { snapshot(id: $s) { expiresAt } }",
            json!({ "s": a }),
        )
        .await;
    assert_eq!(kept["snapshot"]["expiresAt"], iso(now + Duration::hours(2)));
}
