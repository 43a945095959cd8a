//! Snapshot policies (issue 11), on a clock the test moves (the server's `--clock-file`),
//! never by waiting for a schedule: each slot runs once, and slots missed while no robot
//! ran make one run; retention keeps the newest N and none past the maximum age, and
//! never prunes the active snapshot, another policy's or a person's; a busy VM or one at
//! its limit is tried again and the miss recorded; the preview says what then happens;
//! two robot processes sharing the database run each slot once. On SQLite, or
//! PostgreSQL with `SNAPTREE_TEST_DATABASE=postgres`.

mod common;

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use common::process::{self, RobotProcess, ServerProcess};
use common::{Api, TestApp, TestDb};

/// A server whose robot runs the policies every 100 ms.
async fn app() -> TestApp {
    TestApp::builder()
        .robot(snaptree::config::RobotConfig {
            policy_tick: StdDuration::from_millis(100),
            ..common::test_robot()
        })
        .spawn()
        .await
}
use serde_json::{Value, json};

const CREATE: &str = "mutation($i: PolicyInput!) { createPolicy(input: $i) { id name nextDueAt } }";
const RUNS: &str = "query($p: ID!) { policy(id: $p) { nextDueAt runs(first: 200) {
    dueAt state attempts lastError vm { id } snapshot { id name } taskId } } }";
const PREVIEW: &str = "query($p: ID!) { policy(id: $p) { preview { dueAt vms { vm { id } creates prunes { id } } } } }";

/// A whole hour, so that slots fall on round times.
fn start() -> DateTime<Utc> {
    let now = (Utc::now() + Duration::hours(1)).timestamp();
    DateTime::from_timestamp(now - now % 3600, 0).unwrap()
}

async fn runs(api: &Api, token: &str, policy: &str) -> Vec<Value> {
    let data = api.data(token, RUNS, json!({ "p": policy })).await;
    data["policy"]["runs"].as_array().unwrap().clone()
}

/// Waits (a hang guard, not a time limit) until `done` holds of the policy's runs and
/// every task they asked for has ended; the runs, oldest first.
/// Waits (with a hang guard) until no task of `token`'s project is queued or running.
async fn idle(api: &Api, token: &str) {
    let query = "query($s: TaskState) { tasks(state: $s, first: 1) { nodes { id } } }";
    for _ in 0..3000 {
        let mut open = 0;
        for state in ["QUEUED", "RUNNING"] {
            let data = api.data(token, query, json!({ "s": state })).await;
            open += data["tasks"]["nodes"].as_array().unwrap().len();
        }
        if open == 0 {
            return;
        }
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    panic!("tasks never ended");
}

async fn settle(
    api: &Api,
    token: &str,
    policy: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    for _ in 0..3000 {
        let mut all = runs(api, token, policy).await;
        all.reverse();
        if done(&all) {
            for run in &all {
                if let Some(task) = run["taskId"].as_str() {
                    api.finished(token, task).await;
                }
            }
            return all;
        }
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    panic!(
        "the policy's runs never settled: {:#?}",
        runs(api, token, policy).await
    );
}

/// Waits until VM `vm`'s open snapshots are exactly `names` (in creation order) with no
/// task under way.
async fn tree_is(api: &Api, token: &str, vm: &str, names: &[&str]) {
    let query = "query($v: ID!) { vm(id: $v) { busy snapshots { name } } }";
    let mut last = Value::Null;
    for _ in 0..3000 {
        let data = api.data(token, query, json!({ "v": vm })).await;
        let got: Vec<String> = data["vm"]["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect();
        if data["vm"]["busy"] == false && got == names {
            return;
        }
        last = data;
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    panic!("VM {vm} never held {names:?}: {last:#}");
}

fn names_of(runs: &[Value]) -> Vec<String> {
    runs.iter()
        .map(|r| r["snapshot"]["name"].as_str().unwrap_or("-").to_owned())
        .collect()
}

#[tokio::test]
async fn each_slot_runs_once_missed_slots_once_and_the_preview_comes_true() {
    let app = app().await;
    let t0 = start();
    app.set_clock(t0);
    let f = app.project_with_vm("p", "sim://").await;
    let op = &f.operator;
    let policy = app
        .data(
            op,
            CREATE,
            json!({ "i": { "name": "hourly", "vmId": f.vm, "everySeconds": 3600,
                           "nameTemplate": "{policy}-{due}", "keepLast": 2 } }),
        )
        .await["createPolicy"]
        .clone();
    let id = policy["id"].as_str().unwrap().to_owned();
    let due: DateTime<Utc> = policy["nextDueAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(due, t0 + Duration::hours(1));
    // Not due yet: nothing happens, however often the runner looks.
    assert!(runs(&app, op, &id).await.is_empty());

    let name = |h: i64| {
        format!(
            "hourly-{}",
            (t0 + Duration::hours(h)).format("%Y-%m-%dT%H%M")
        )
    };
    let person = app.snapshot_built(op, &f.vm, "a person's").await;
    for h in 1..=3 {
        // What the preview says the slot makes and prunes...
        let preview = app.data(op, PREVIEW, json!({ "p": id })).await;
        let preview = &preview["policy"]["preview"];
        assert_eq!(
            preview["dueAt"]
                .as_str()
                .unwrap()
                .parse::<DateTime<Utc>>()
                .unwrap(),
            t0 + Duration::hours(h)
        );
        assert_eq!(preview["vms"][0]["creates"], name(h).as_str());
        let prunes: Vec<String> = preview["vms"][0]["prunes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        let before = app.tree(op, &f.vm).await;
        app.set_clock(t0 + Duration::hours(h));
        let all = settle(&app, op, &id, |r| {
            r.len() == h as usize && r.iter().all(|x| x["state"] == "CREATED")
        })
        .await;
        assert_eq!(names_of(&all).last().unwrap(), &name(h));
        // ... is what it did: keep the newest two of the policy's, and the person's.
        let mut expected: Vec<String> = vec!["a person's".into()];
        expected.extend(((h - 1).max(1)..=h).map(name));
        let refs: Vec<&str> = expected.iter().map(String::as_str).collect();
        tree_is(&app, op, &f.vm, &refs).await;
        let after: Vec<String> = app.tree(op, &f.vm).await.into_iter().map(|s| s.0).collect();
        let pruned: Vec<String> = before
            .into_iter()
            .map(|s| s.0)
            .filter(|s| !after.contains(s))
            .collect();
        assert_eq!(
            pruned, prunes,
            "slot {h}: the preview said what retention pruned"
        );
    }
    assert!(app.tree(op, &f.vm).await.iter().any(|s| s.0 == person));

    // Down for seven slots: one run when the clock comes back, for the latest slot.
    app.set_clock(t0 + Duration::hours(10) + Duration::minutes(5));
    let all = settle(&app, op, &id, |r| {
        r.len() == 4 && r[3]["state"] == "CREATED"
    })
    .await;
    assert_eq!(names_of(&all)[3], name(10));
    let data = app.data(op, RUNS, json!({ "p": id })).await;
    let next: DateTime<Utc> = data["policy"]["nextDueAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(next, t0 + Duration::hours(11));
    // The runner keeps looking: still four runs.
    tokio::time::sleep(StdDuration::from_millis(1200)).await;
    assert_eq!(runs(&app, op, &id).await.len(), 4);
    // Each run's task is an ordinary task, requested by the policy.
    let task = all[3]["taskId"].as_str().unwrap();
    let done = app.finished(op, task).await;
    assert_eq!(done["state"], "SUCCEEDED");
}

#[tokio::test]
async fn retention_spares_the_active_another_policys_and_a_persons_and_busy_vms_are_retried() {
    let app = app().await;
    let t0 = start();
    app.set_clock(t0);
    let f = app.project_with_vm("r", "sim://?latency_ms=200").await;
    let op = &f.operator;
    let make = |name: &str, extra: Value| {
        let mut input = json!({ "name": name, "vmId": f.vm, "everySeconds": 86400 });
        input
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        input
    };
    let aged = app
        .data(
            op,
            CREATE,
            json!({ "i": make("aged", json!({ "maxAgeSeconds": 60 })) }),
        )
        .await["createPolicy"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = app
        .data(op, CREATE, json!({ "i": make("other", json!({})) }))
        .await["createPolicy"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Both are due at once on one VM: one waits (VM_BUSY), is tried again, and is made.
    app.set_clock(t0 + Duration::days(1));
    let a = settle(&app, op, &aged, |r| {
        r.len() == 1 && r[0]["state"] == "CREATED"
    })
    .await;
    let b = settle(&app, op, &other, |r| {
        r.len() == 1 && r[0]["state"] == "CREATED"
    })
    .await;
    let retried: Vec<&Value> = [&a[0], &b[0]]
        .into_iter()
        .filter(|r| r["attempts"].as_i64() > Some(1))
        .collect();
    assert_eq!(retried.len(), 1, "one of the two waited: {a:?} {b:?}");
    assert!(
        retried[0]["lastError"].as_str().unwrap().contains("busy"),
        "{retried:?}"
    );
    let aged_name = a[0]["snapshot"]["name"].as_str().unwrap().to_owned();
    let other_name = b[0]["snapshot"]["name"].as_str().unwrap().to_owned();
    // Make the policy's own snapshot the active one.
    let aged_id = a[0]["snapshot"]["id"].as_str().unwrap().to_owned();
    let (_, task) = app.apply(op, &aged_id).await;
    app.finished(op, &task).await;

    // Far past its maximum age, but active: kept. The other policy's is never its to prune.
    app.set_clock(t0 + Duration::days(1) + Duration::minutes(30));
    tokio::time::sleep(StdDuration::from_millis(1200)).await;
    let names: Vec<String> = {
        let q = "query($v: ID!) { vm(id: $v) { snapshots { name } } }";
        let d = app.data(op, q, json!({ "v": f.vm })).await;
        d["vm"]["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(
        names.contains(&aged_name) && names.contains(&other_name),
        "{names:?}"
    );
    // A person's snapshot becomes the active one: the old one goes; the person's stays.
    app.snapshot_built(op, &f.vm, "mine").await;
    tree_is(&app, op, &f.vm, &[other_name.as_str(), "mine"]).await;
}

#[tokio::test]
async fn a_vm_at_its_limit_is_retried_until_there_is_room() {
    let app = app().await;
    let t0 = start();
    app.set_clock(t0);
    let project = app.create_project("full").await;
    let op = app.create_token(&project, "OPERATOR").await;
    let host = app
        .create_host("one-each", "SIMULATED", "sim://", Some(1))
        .await;
    let vm = app.create_vm(&host, &project, "full-vm").await;
    let mine = app.snapshot_built(&op, &vm, "mine").await;
    let id = app
        .data(
            &op,
            CREATE,
            json!({ "i": { "name": "p", "vmId": vm, "everySeconds": 3600 } }),
        )
        .await["createPolicy"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.set_clock(t0 + Duration::hours(1));
    let refused = settle(&app, &op, &id, |r| {
        r.len() == 1 && r[0]["attempts"].as_i64() >= Some(2)
    })
    .await;
    assert_eq!(refused[0]["state"], "PENDING");
    assert!(
        refused[0]["lastError"].as_str().unwrap().contains("limit"),
        "{refused:?}"
    );
    // Room again: the pending run is made.
    let (_, task) = app.delete(&op, &mine, false).await;
    app.finished(&op, &task).await;
    let done = settle(&app, &op, &id, |r| r[0]["state"] == "CREATED").await;
    assert!(
        done[0]["snapshot"]["name"]
            .as_str()
            .unwrap()
            .starts_with("p-")
    );
    // Bad definitions are refused before anything is stored.
    for (input, why) in [
        (
            json!({ "name": "x", "vmId": vm, "everySeconds": 10 }),
            "once a minute",
        ),
        (json!({ "name": "x", "vmId": vm }), "one schedule"),
        (
            json!({ "name": "x", "vmId": vm, "cron": "0 3 * *" }),
            "cron",
        ),
        (
            json!({ "name": "x", "vmId": vm, "cron": "0 3 * * *", "timeZone": "Mars/Base" }),
            "time zone",
        ),
        (
            json!({ "name": "x", "vmId": vm, "everySeconds": 3600, "nameTemplate": "{date}" }),
            "same name",
        ),
        (
            json!({ "name": "p", "vmId": vm, "everySeconds": 3600 }),
            "already has a policy",
        ),
        // A hostile tenant's largest numbers would overflow the time arithmetic.
        (
            json!({ "name": "x", "vmId": vm, "everySeconds": i64::MAX }),
            "at most",
        ),
        (
            json!({ "name": "x", "vmId": vm, "everySeconds": 3600, "maxAgeSeconds": i64::MAX }),
            "maxAgeSeconds",
        ),
        (
            json!({ "name": "x", "vmFilter": "*".repeat(101), "everySeconds": 3600 }),
            "at most 100",
        ),
        (
            json!({ "name": "x", "cron": "0 ".repeat(60), "everySeconds": 3600 }),
            "at most 100",
        ),
    ] {
        let body = app.request(Some(&op), CREATE, json!({ "i": input })).await;
        assert_eq!(common::error_code(&body), "VALIDATION", "{body}");
        assert!(body.to_string().contains(why), "{why}: {body}");
    }
    // At most 100 policies per project (each costs the runner every tick).
    for i in 1..100 {
        let input = json!({ "name": format!("n{i}"), "vmFilter": "none-*", "everySeconds": 86400 });
        app.data(&op, CREATE, json!({ "i": input })).await;
    }
    let input = json!({ "name": "one too many", "vmId": vm, "everySeconds": 3600 });
    let body = app.request(Some(&op), CREATE, json!({ "i": input })).await;
    assert_eq!(common::error_code(&body), "LIMIT_REACHED", "{body}");
    let viewer = app.create_token(&project, "VIEWER").await;
    let body = app
        .request(
            Some(&viewer),
            CREATE,
            json!({ "i": { "name": "v", "vmId": vm, "everySeconds": 3600 } }),
        )
        .await;
    assert_eq!(common::error_code(&body), "FORBIDDEN");
}

/// Two robot processes (and a server without one) share the database and the clock file:
/// each VM's part of each slot runs once; restarted after seven missed slots, once more.
#[tokio::test]
async fn two_robots_run_each_slot_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path()).await;
    let url = db.cli_url();
    let admin = process::token(&url, "ops", "ADMIN");
    let clock = dir.path().join("clock");
    let t0 = start();
    std::fs::write(&clock, t0.to_rfc3339()).unwrap();
    let clock_flag = ["--clock-file", clock.to_str().unwrap()];
    let sim = dir.path().join("sim");
    // The test polls far faster than an OPERATOR's budget allows.
    let flags = [
        &["--no-robot", "--rate-limit", "OPERATOR=none"][..],
        &clock_flag,
    ]
    .concat();
    let server = ServerProcess::start(&url, &sim, &flags);
    // Robots on the shared database and clock, each with its log.
    let start_robots = |names: &[&str]| -> Vec<RobotProcess> {
        names
            .iter()
            .map(|n| {
                RobotProcess::start(
                    &url,
                    &sim,
                    &clock_flag,
                    &dir.path().join(format!("robot-{n}.log")),
                )
            })
            .collect()
    };
    let robots = start_robots(&["a", "b"]);
    let api = Api::new(&server.url, admin);
    let project = api.create_project("fleet").await;
    let op = api.create_token(&project, "OPERATOR").await;
    let host = api.create_host("h", "SIMULATED", "sim://", None).await;
    for i in 0..5 {
        api.create_vm(&host, &project, &format!("vm-{i}")).await;
    }
    api.create_vm(&host, &project, "db-0").await;
    let id = api
        .data(&op, CREATE, json!({ "i": { "name": "fleet", "vmFilter": "vm-*", "everySeconds": 3600, "keepLast": 2 } }))
        .await["createPolicy"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for h in 1..=3 {
        std::fs::write(&clock, (t0 + Duration::hours(h)).to_rfc3339()).unwrap();
        let n = 5 * h as usize;
        settle(&api, &op, &id, |r| {
            r.len() == n && r.iter().all(|x| x["state"] == "CREATED")
        })
        .await;
    }
    // Every robot stops (once the retention the runs asked for is done: a delete cut
    // off with its robot would hold its VM until its lease ran out, and the next run
    // would rightly be refused meanwhile); seven slots pass; started again, they run the
    // latest once.
    idle(&api, &op).await;
    drop(robots);
    std::fs::write(&clock, (t0 + Duration::hours(10)).to_rfc3339()).unwrap();
    let robots = start_robots(&["c", "d"]);
    let all = settle(&api, &op, &id, |r| {
        r.len() == 20 && r.iter().all(|x| x["state"] == "CREATED")
    })
    .await;
    let latest: Vec<&Value> = all
        .iter()
        .filter(|r| r["dueAt"] == all[19]["dueAt"])
        .collect();
    assert_eq!(latest.len(), 5);
    assert_eq!(
        latest[0]["dueAt"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        t0 + Duration::hours(10)
    );
    // Both robots had time to take every slot again: none is run twice.
    tokio::time::sleep(StdDuration::from_millis(1500)).await;
    let all = runs(&api, &op, &id).await;
    assert_eq!(all.len(), 20, "{all:#?}");
    let mut seen = std::collections::HashSet::new();
    for run in &all {
        assert!(
            seen.insert((run["vm"]["id"].clone(), run["dueAt"].clone())),
            "twice: {run}"
        );
        assert_eq!(run["attempts"], 1, "nothing was refused: {run}");
    }
    drop(robots);
}

/// A robot process keeps the servers' ceiling of snapshots per VM for what its policies
/// create: with `--max-snapshots-per-vm 2` on both, a VM's third hourly snapshot is
/// refused for the limit (before, the robot used its own default of 100 and made it).
#[tokio::test]
async fn a_robot_process_keeps_the_snapshot_ceiling_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path()).await;
    let url = db.cli_url();
    let admin = process::token(&url, "ops", "ADMIN");
    let clock = dir.path().join("clock");
    let t0 = start();
    std::fs::write(&clock, t0.to_rfc3339()).unwrap();
    let clock_flag = ["--clock-file", clock.to_str().unwrap()];
    let ceiling = ["--max-snapshots-per-vm", "2"];
    let sim = dir.path().join("sim");
    let flags = [
        &["--no-robot", "--rate-limit", "OPERATOR=none"][..],
        &clock_flag,
        &ceiling,
    ]
    .concat();
    let server = ServerProcess::start(&url, &sim, &flags);
    let robot = RobotProcess::start(
        &url,
        &sim,
        &[&clock_flag[..], &ceiling].concat(),
        &dir.path().join("robot.log"),
    );
    let api = Api::new(&server.url, admin);
    let project = api.create_project("ceiling").await;
    let op = api.create_token(&project, "OPERATOR").await;
    let host = api.create_host("h", "SIMULATED", "sim://", None).await;
    api.create_vm(&host, &project, "vm-0").await;
    let id = api
        .data(
            &op,
            CREATE,
            json!({ "i": { "name": "hourly", "vmFilter": "vm-*", "everySeconds": 3600 } }),
        )
        .await["createPolicy"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for h in 1..=2 {
        std::fs::write(&clock, (t0 + Duration::hours(h)).to_rfc3339()).unwrap();
        settle(&api, &op, &id, |r| {
            r.len() == h as usize && r.iter().all(|x| x["state"] == "CREATED")
        })
        .await;
    }
    std::fs::write(&clock, (t0 + Duration::hours(3)).to_rfc3339()).unwrap();
    let all = settle(&api, &op, &id, |r| {
        r.len() == 3 && r[2]["lastError"].is_string()
    })
    .await;
    let third = &all[2];
    assert_ne!(third["state"], "CREATED", "{third}");
    assert!(
        third["lastError"].as_str().unwrap().contains("2 snapshots"),
        "{third}"
    );
    drop(robot);
}
