//! Hyper-V hosts against the stand-in Windows host: the five actions, the 50-checkpoint
//! limit, names that would be dangerous in a script, unreachable hosts and missing VMs.

mod common;

use common::TestApp;
use common::hyperv::{self, HOST, StandIn};
use serde_json::json;

async fn assert_agrees(app: &TestApp, token: &str, vm: &str, standin: &StandIn, identifier: &str) {
    assert_eq!(
        app.host_view(token, vm).await,
        standin.tree(HOST, identifier)
    );
}

/// A project, its OPERATOR token, a Hyper-V host and a VM `identifier` on it.
async fn setup(app: &TestApp, standin: &StandIn, identifier: &str) -> (String, String, String) {
    let (op, host, mut vms) = hyperv::setup(app, standin, &[identifier]).await;
    (op, host, vms.remove(0))
}

#[tokio::test]
async fn the_five_actions_on_hyperv() {
    let (app, standin) = TestApp::builder().spawn_with_standin().await;
    let (op, _, vm) = setup(&app, &standin, "web").await;
    let op = op.as_str();

    let a = app.snapshot_built(op, &vm, "a").await;
    let b = app.snapshot_built(op, &vm, "b").await;
    assert_agrees(&app, op, &vm, &standin, "web").await;

    let (_, task) = app.apply(op, &a).await;
    let done = app.finished(op, &task).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done:#}");
    assert_agrees(&app, op, &vm, &standin, "web").await;
    // The checkpoint was taken while the VM ran: it runs again after the apply.
    assert_eq!(standin.dump(HOST, "web")["state"], "Running");
    let progress: Vec<_> = done["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["progress"].as_i64())
        .collect();
    assert!(
        progress.contains(&50),
        "job progress reaches the task: {progress:?}"
    );

    app.snapshot_built(op, &vm, "c").await;
    let (_, task) = app.revert(op, &vm).await;
    assert_eq!(app.finished(op, &task).await["state"], "SUCCEEDED");
    assert_agrees(&app, op, &vm, &standin, "web").await;

    let (_, task) = app.delete(op, &b, false).await;
    assert_eq!(app.finished(op, &task).await["state"], "SUCCEEDED");
    assert_agrees(&app, op, &vm, &standin, "web").await;

    let (_, task) = app.delete(op, &a, true).await;
    assert_eq!(app.finished(op, &task).await["state"], "SUCCEEDED");
    assert_agrees(&app, op, &vm, &standin, "web").await;
    assert_eq!(standin.tree(HOST, "web"), (vec![], None));
}

#[tokio::test]
async fn the_api_refuses_the_51st_checkpoint_before_hyperv_would() {
    let (app, standin) = TestApp::builder().spawn_with_standin().await;
    let (op, _, vm) = setup(&app, &standin, "full").await;
    let data = app
        .data(
            &op,
            "query($v: ID!) { vm(id: $v) { snapshotLimit } }",
            json!({ "v": vm }),
        )
        .await;
    assert_eq!(data["vm"]["snapshotLimit"], 50);
    for i in 0..50 {
        app.snapshot_built(&op, &vm, &format!("s{i}")).await;
    }
    let body = app
        .request(
            Some(&op),
            "mutation($v: ID!) { createSnapshot(vmId: $v, name: \"s50\") { task { id } } }",
            json!({ "v": vm }),
        )
        .await;
    assert_eq!(common::error_code(&body), "LIMIT_REACHED");
    assert_eq!(standin.tree(HOST, "full").0.len(), 50);
}

#[tokio::test]
async fn names_full_of_script_syntax_change_nothing_that_runs() {
    let (app, standin) = TestApp::builder().spawn_with_standin().await;
    let (op, host, vm) = setup(&app, &standin, "db").await;
    let nasty = [
        "it's $(Remove-VM -Name db -Force)",
        "`whoami`; Stop-Computer -Force",
        "line one'; Remove-VMCheckpoint -VMName 'db' -Name '*",
        "\u{2019}); Stop-VM db #",
    ];
    // A name is one line: a line break (which ends a PowerShell statement) is refused.
    let code = app
        .error_code(
            Some(&op),
            "mutation($v: ID!, $n: String!) { createSnapshot(vmId: $v, name: $n) { task { id } } }",
            json!({ "v": vm, "n": "line one\nline two" }),
        )
        .await;
    assert_eq!(code, "VALIDATION");
    for name in nasty {
        let id = app.snapshot_built(&op, &vm, name).await;
        let data = app
            .data(
                &op,
                "query($s: ID!) { snapshot(id: $s) { name hostName } }",
                json!({ "s": id }),
            )
            .await;
        assert_eq!(data["snapshot"]["name"], name);
    }
    assert_agrees(&app, &op, &vm, &standin, "db").await;
    assert_eq!(standin.dump(HOST, "db")["state"], "Running");

    // Checkpoints made by hand on the host keep their names: those do reach scripts.
    standin.add_vm(HOST, "legacy");
    for name in nasty {
        standin.add_checkpoint(HOST, "legacy", name);
    }
    let project = app.create_project("legacy").await;
    let legacy_op = app.create_token(&project, "OPERATOR").await;
    let imported = app
        .data(&app.admin, "mutation($h: ID!, $p: ID!) { importVms(hostId: $h, projectId: $p) { id identifier snapshots(first: 10) { id name } } }", json!({ "h": host, "p": project }))
        .await;
    let legacy = imported["importVms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["identifier"] == "legacy")
        .unwrap();
    let legacy_vm = legacy["id"].as_str().unwrap();
    assert_agrees(&app, &legacy_op, legacy_vm, &standin, "legacy").await;
    let first = legacy["snapshots"][0]["id"].as_str().unwrap();
    let second = legacy["snapshots"][1]["id"].as_str().unwrap();
    assert_eq!(legacy["snapshots"][1]["name"], nasty[1]);
    let (_, task) = app.apply(&legacy_op, second).await;
    assert_eq!(app.finished(&legacy_op, &task).await["state"], "SUCCEEDED");
    let (_, task) = app.delete(&legacy_op, first, false).await;
    assert_eq!(app.finished(&legacy_op, &task).await["state"], "SUCCEEDED");
    assert_agrees(&app, &legacy_op, legacy_vm, &standin, "legacy").await;
    assert_eq!(standin.tree(HOST, "legacy").0.len(), 3);
    // Nothing else on the host was touched.
    assert_eq!(standin.tree(HOST, "db").0.len(), 4);
}

#[tokio::test]
async fn unreachable_hosts_and_missing_vms() {
    let (app, standin) = TestApp::builder().spawn_with_standin().await;
    let (op, _, vm) = setup(&app, &standin, "app").await;

    // A host that cannot be reached is refused when registered.
    standin.set_down("hv2", true);
    let body = app
        .request(Some(&app.admin), "mutation { createHost(name: \"hv2\", hypervisor: HYPERV, uri: \"ssh://administrator@hv2\") { id } }", json!({}))
        .await;
    assert_eq!(common::error_code(&body), "VALIDATION");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{body}"
    );

    // An outage is transient: the task waits it out.
    standin.set_down(HOST, true);
    let (_, task) = app.create_snapshot(&op, &vm, "later").await;
    loop {
        let data = app
            .data(
                &op,
                "query($t: ID!) { task(id: $t) { attempts } }",
                json!({ "t": task }),
            )
            .await;
        if data["task"]["attempts"].as_i64().unwrap() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    standin.set_down(HOST, false);
    assert_eq!(app.finished(&op, &task).await["state"], "SUCCEEDED");

    // A VM the host does not have fails at once, named.
    let project = app.create_project("ghost").await;
    let ghost_op = app.create_token(&project, "OPERATOR").await;
    standin.add_vm(HOST, "ghost");
    let host = app
        .data(&app.admin, "{ hosts { id name } }", json!({}))
        .await["hosts"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ghost = app.create_vm(&host, &project, "ghost").await;
    let state = standin.dir.join(format!("{HOST}.json"));
    let mut saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    saved["vms"].as_object_mut().unwrap().remove("ghost");
    std::fs::write(&state, saved.to_string()).unwrap();
    let (_, task) = app.create_snapshot(&ghost_op, &ghost, "nothing").await;
    let done = app.finished(&ghost_op, &task).await;
    assert_eq!(done["state"], "FAILED");
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["error"], "the host has no such VM");
    assert_eq!(done["errorCode"], "NO_SUCH_VM");
    // What Hyper-V said is for an ADMIN.
    let done = app.finished(&app.admin, &task).await;
    let detail = done["errorDetail"].as_str().unwrap();
    assert!(
        detail.contains("Hyper-V was unable to find a virtual machine with name \"ghost\""),
        "{detail}"
    );
}

/// Checkpoints made on the host by hand, named with every character from U+0001 to
/// U+00FF: the ones that could break a script's lines (every control character) are
/// reported and not imported; every other one is imported, and applying and deleting
/// them changes exactly what it should on the host.
#[tokio::test]
async fn host_names_with_every_character_are_imported_only_when_safe() {
    let (app, standin) = TestApp::builder().spawn_with_standin().await;
    let (_, host, _) = setup(&app, &standin, "first").await;
    let chars: Vec<char> = (1u32..=255).filter_map(char::from_u32).collect();
    let (unsafe_chars, safe): (Vec<char>, Vec<char>) = chars.iter().partition(|c| c.is_control());
    assert_eq!(unsafe_chars.len(), 64);
    // Each unsafe name on a VM of its own; the safe ones 40 to a VM, in a chain.
    for (i, c) in unsafe_chars.iter().enumerate() {
        let vm = format!("bad{i}");
        standin.add_vm(HOST, &vm);
        standin.add_checkpoint(HOST, &vm, &format!("before{c}after"));
    }
    let mut good = Vec::new();
    for (i, group) in safe.chunks(40).enumerate() {
        let vm = format!("good{i}");
        standin.add_vm(HOST, &vm);
        for c in group {
            standin.add_checkpoint(HOST, &vm, &format!("x{c}y"));
        }
        good.push(vm);
    }
    let project = app.create_project("imported").await;
    let op = app.create_token(&project, "OPERATOR").await;
    let body = app
        .request(
            Some(&app.admin),
            "mutation($h: ID!, $p: ID!) { importVms(hostId: $h, projectId: $p) { id identifier snapshots(first: 50) { id name } } }",
            json!({ "h": host, "p": project }),
        )
        .await;
    let imported = body["data"]["importVms"].as_array().unwrap();
    let mut identifiers: Vec<&str> = imported
        .iter()
        .map(|v| v["identifier"].as_str().unwrap())
        .collect();
    identifiers.sort_unstable();
    assert_eq!(
        identifiers,
        good.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), unsafe_chars.len(), "{body}");
    for error in errors {
        assert_eq!(error["extensions"]["code"], "VALIDATION");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains("was not imported"), "{message}");
    }
    // Every imported name is the host's, character for character; applying one and
    // deleting another changes only those on the host.
    for vm in imported {
        let identifier = vm["identifier"].as_str().unwrap();
        let id = vm["id"].as_str().unwrap();
        let snapshots = vm["snapshots"].as_array().unwrap();
        let names: std::collections::HashSet<&str> = snapshots
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        let on_host = standin.tree(HOST, identifier).0;
        assert_eq!(names.len(), on_host.len());
        for (name, _) in &on_host {
            assert!(
                names.contains(name.as_str()),
                "{name:?} was not imported as it is"
            );
        }
        let (apply, delete) = (&snapshots[1], &snapshots[snapshots.len() - 1]);
        let (_, task) = app.apply(&op, apply["id"].as_str().unwrap()).await;
        assert_eq!(app.finished(&op, &task).await["state"], "SUCCEEDED");
        let (_, task) = app.delete(&op, delete["id"].as_str().unwrap(), false).await;
        assert_eq!(app.finished(&op, &task).await["state"], "SUCCEEDED");
        assert_agrees(&app, &op, id, &standin, identifier).await;
        assert_eq!(standin.tree(HOST, identifier).0.len(), on_host.len() - 1);
    }
    // The refused VMs' checkpoints are untouched.
    for i in 0..unsafe_chars.len() {
        assert_eq!(standin.tree(HOST, &format!("bad{i}")).0.len(), 1);
    }
}
