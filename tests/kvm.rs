//! KVM hosts for real: libvirt and a tiny QEMU domain. After every action, snaptree's
//! tree and active snapshot equal `virsh snapshot-list --tree` and `snapshot-current`.

mod common;

use common::TestApp;
use common::libvirt::{self, TestDomain, virsh};
use serde_json::{Value, json};

async fn assert_agrees(app: &TestApp, token: &str, vm: &str, domain: &TestDomain) {
    let (tree, active) = app.host_view(token, vm).await;
    assert_eq!(
        tree,
        domain.tree(),
        "snaptree's tree vs virsh snapshot-list --tree"
    );
    assert_eq!(
        active,
        domain.current(),
        "active snapshot vs virsh snapshot-current"
    );
}

async fn kvm_project(app: &TestApp, name: &str) -> (String, String, String) {
    let project = app.create_project(name).await;
    let op = app.create_token(&project, "OPERATOR").await;
    let host = app
        .create_host(&format!("{name}-kvm"), "KVM", libvirt::URI, None)
        .await;
    (project, op, host)
}

async fn succeeds(app: &TestApp, token: &str, task: &str) -> Value {
    let done = app.finished(token, task).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done:#}");
    done
}

#[tokio::test]
async fn the_five_actions_on_a_real_kvm_domain() {
    if !libvirt::available() {
        return;
    }
    let domain = TestDomain::new(true);
    let app = TestApp::spawn().await;
    let (project, op, host) = kvm_project(&app, "five").await;
    let vm = app.register_vm(&host, &project, &domain.name).await;
    let op = op.as_str();

    let a = app.snapshot_built(op, &vm, "a").await;
    assert_agrees(&app, op, &vm, &domain).await;
    let b = app.snapshot_built(op, &vm, "b").await;
    assert_agrees(&app, op, &vm, &domain).await;

    let (_, task) = app.apply(op, &a).await;
    succeeds(&app, op, &task).await;
    assert_agrees(&app, op, &vm, &domain).await;
    assert_eq!(
        virsh(&["domstate", &domain.name]).unwrap().trim(),
        "running"
    );

    app.snapshot_built(op, &vm, "c").await;
    assert_agrees(&app, op, &vm, &domain).await;

    let (_, task) = app.revert(op, &vm).await;
    succeeds(&app, op, &task).await;
    assert_agrees(&app, op, &vm, &domain).await;

    let (_, task) = app.delete(op, &b, false).await;
    succeeds(&app, op, &task).await;
    assert_agrees(&app, op, &vm, &domain).await;

    let (_, task) = app.delete(op, &a, true).await;
    succeeds(&app, op, &task).await;
    assert_agrees(&app, op, &vm, &domain).await;
    assert!(domain.tree().is_empty());
}

#[tokio::test]
async fn importing_a_domain_reproduces_its_tree_and_drift_shows_changes_behind_our_back() {
    if !libvirt::available() {
        return;
    }
    let domain = TestDomain::new(true);
    // A tree made by hand on the host: base -> {left, right}, right current.
    for (name, revert_to) in [("base", None), ("left", None), ("right", Some("base"))] {
        if let Some(to) = revert_to {
            virsh(&[
                "snapshot-revert",
                "--domain",
                &domain.name,
                "--snapshotname",
                to,
            ])
            .unwrap();
        }
        virsh(&[
            "snapshot-create-as",
            "--domain",
            &domain.name,
            "--name",
            name,
        ])
        .unwrap();
    }
    let app = TestApp::spawn().await;
    let (project, op, host) = kvm_project(&app, "import").await;
    let data = app
        .data(
            &app.admin,
            "mutation($h: ID!, $p: ID!) { importVms(hostId: $h, projectId: $p) { id identifier } }",
            json!({ "h": host, "p": project }),
        )
        .await;
    let vm = data["importVms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["identifier"] == domain.name.as_str())
        .expect("the domain is imported")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_agrees(&app, &op, &vm, &domain).await;
    let drift = "query($v: ID!) { vm(id: $v) { drift { kind hostName expected actual } } }";
    assert_eq!(
        app.data(&op, drift, json!({ "v": vm })).await["vm"]["drift"],
        json!([])
    );

    // Imported snapshots work like any other: apply one snaptree did not name.
    let left = app
        .data(
            &op,
            "query($v: ID!) { vm(id: $v) { snapshots { id name } } }",
            json!({ "v": vm }),
        )
        .await["vm"]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "left")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, task) = app.apply(&op, &left).await;
    succeeds(&app, &op, &task).await;
    assert_agrees(&app, &op, &vm, &domain).await;

    // Behind snaptree's back.
    virsh(&[
        "snapshot-delete",
        "--domain",
        &domain.name,
        "--snapshotname",
        "right",
    ])
    .unwrap();
    let found = app.data(&op, drift, json!({ "v": vm })).await;
    assert_eq!(
        found["vm"]["drift"],
        json!([{ "kind": "MISSING_ON_HOST", "hostName": "right", "expected": "right", "actual": null }])
    );
}

#[tokio::test]
async fn a_snapshot_brings_the_disk_back() {
    if !libvirt::available() {
        return;
    }
    // Shut off, so that qemu-io may open the disk.
    let domain = TestDomain::new(false);
    let app = TestApp::spawn().await;
    let (project, op, host) = kvm_project(&app, "data").await;
    let vm = app.register_vm(&host, &project, &domain.name).await;
    let qemu_io = |command: &str| {
        let out = std::process::Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", command])
            .arg(&domain.disk)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (
            out.status.success() && !text.contains("verification failed"),
            text,
        )
    };
    assert!(qemu_io("write -P 0xab 0 64k").0);
    let snapshot = app.snapshot_built(&op, &vm, "pattern ab").await;
    assert!(qemu_io("write -P 0xcd 0 64k").0);
    assert!(qemu_io("read -P 0xcd 0 64k").0);
    let (_, task) = app.apply(&op, &snapshot).await;
    succeeds(&app, &op, &task).await;
    let (ok, text) = qemu_io("read -P 0xab 0 64k");
    assert!(ok, "the first pattern is back: {text}");
}

#[tokio::test]
async fn a_task_on_a_domain_that_is_gone_fails_at_once_naming_it() {
    if !libvirt::available() {
        return;
    }
    let domain = TestDomain::new(false);
    let app = TestApp::spawn().await;
    let (project, op, host) = kvm_project(&app, "gone").await;
    let vm = app.register_vm(&host, &project, &domain.name).await;
    virsh(&["undefine", &domain.name]).unwrap();
    let (_, task) = app.create_snapshot(&op, &vm, "too late").await;
    let done = app.finished(&op, &task).await;
    assert_eq!(done["state"], "FAILED");
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["error"], "the host has no such VM");
    let done = app.finished(&app.admin, &task).await;
    let detail = done["errorDetail"].as_str().unwrap();
    assert!(detail.contains(&domain.name), "{detail}");
    assert!(detail.contains("has no VM"), "{detail}");

    // And a host that cannot be reached is refused when registered, saying why.
    let body = app
        .request(Some(&app.admin), "mutation { createHost(name: \"far\", hypervisor: KVM, uri: \"qemu+ssh://nobody@127.0.0.1:1/system\") { id } }", json!({}))
        .await;
    assert_eq!(common::error_code(&body), "VALIDATION");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("cannot reach the host"), "{message}");
}

#[tokio::test]
async fn a_protected_snapshot_stays_on_the_host_through_the_deletes_around_it() {
    if !libvirt::available() {
        return;
    }
    let domain = TestDomain::new(true);
    let app = TestApp::spawn().await;
    let (project, op, host) = kvm_project(&app, "guarded").await;
    let vm = app.register_vm(&host, &project, &domain.name).await;
    let op = op.as_str();
    let protect = "mutation($s: ID!, $p: Boolean) { updateSnapshot(id: $s, protected: $p) { id } }";

    // a -> b (protected) -> c.
    let a = app.snapshot_built(op, &vm, "a").await;
    let b = app.snapshot_built(op, &vm, "b").await;
    app.snapshot_built(op, &vm, "c").await;
    app.data(op, protect, json!({ "s": b, "p": true })).await;

    // A delete above it goes through, and it moves up, on the host too.
    let (_, task) = app.delete(op, &a, false).await;
    succeeds(&app, op, &task).await;
    assert_agrees(&app, op, &vm, &domain).await;
    // A subtree delete that would take it is refused before the host hears of it.
    let body = app
        .request(
            Some(op),
            "mutation($s: ID!) { deleteSnapshot(id: $s, removeSubtree: true) { task { id } } }",
            json!({ "s": b }),
        )
        .await;
    assert_eq!(common::error_code(&body), "PROTECTED", "{body}");
    assert_eq!(domain.tree().len(), 2, "b and c are still on the host");
    assert_agrees(&app, op, &vm, &domain).await;

    // Unprotected, the subtree goes from the host.
    app.data(op, protect, json!({ "s": b, "p": false })).await;
    let (_, task) = app.delete(op, &b, true).await;
    succeeds(&app, op, &task).await;
    assert_agrees(&app, op, &vm, &domain).await;
    assert!(domain.tree().is_empty());
}

#[tokio::test]
async fn expired_snapshots_leave_the_host_but_the_protected_and_the_active_stay() {
    if !libvirt::available() {
        return;
    }
    let domain = TestDomain::new(true);
    let app = TestApp::spawn().await;
    let (project, op, host) = kvm_project(&app, "ageing").await;
    let vm = app.register_vm(&host, &project, &domain.name).await;
    let op = op.as_str();
    let now = chrono::Utc::now();
    app.set_clock(now);
    let expire = "mutation($s: ID!, $e: DateTime, $p: Boolean) {
        updateSnapshot(id: $s, expiresAt: $e, protected: $p) { id } }";
    let soon = (now + chrono::Duration::hours(1)).to_rfc3339();

    // a -> b (protected) -> c -> d (active), all expiring in an hour.
    let a = app.snapshot_built(op, &vm, "a").await;
    let b = app.snapshot_built(op, &vm, "b").await;
    let c = app.snapshot_built(op, &vm, "c").await;
    let d = app.snapshot_built(op, &vm, "d").await;
    for (s, protected) in [(&a, false), (&b, true), (&c, false), (&d, false)] {
        app.data(op, expire, json!({ "s": s, "e": soon, "p": protected }))
            .await;
    }

    // Two hours on, a and c leave the host, each alone: b and d remain, d under b.
    app.set_clock(now + chrono::Duration::hours(2));
    for _ in 0..15_000 {
        if domain.tree().len() == 2 && app.tree(op, &vm).await.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_agrees(&app, op, &vm, &domain).await;
    let tree = app.tree(op, &vm).await;
    assert_eq!(
        tree.iter()
            .map(|(id, parent, ..)| (id.clone(), parent.clone()))
            .collect::<Vec<_>>(),
        vec![(b.clone(), None), (d.clone(), Some(b.clone()))]
    );
    assert_eq!(app.active(op, &vm).await, Some(d));
}

/// libvirt before 10.10 takes no internal snapshot of a UEFI guest: snaptree says so on
/// the VM's offers and refuses every action before any task, as libvirt itself would
/// refuse the snapshot (checked here with virsh, on the same domain).
#[tokio::test]
async fn a_uefi_guest_on_an_older_libvirt_is_refused_before_any_task() {
    if !libvirt::available() {
        return;
    }
    let domain = TestDomain::uefi();
    let refused = virsh(&[
        "snapshot-create-as",
        "--domain",
        &domain.name,
        "--name",
        "probe",
    ]);
    let version = virsh(&["version", "--daemon"]).unwrap();
    let app = TestApp::spawn().await;
    let (project, op, host) = kvm_project(&app, "firmware").await;
    let vm = app.register_vm(&host, &project, &domain.name).await;
    let op = op.as_str();
    let offers = app
        .data(
            op,
            "query($v: ID!) { vm(id: $v) { actions { create { allowed refusal reason } revert { refusal } } } }",
            json!({ "v": vm }),
        )
        .await;
    let create = &offers["vm"]["actions"]["create"];
    match refused {
        // This libvirt takes no internal snapshot of the domain: neither does snaptree.
        Err(err) => {
            assert!(err.contains("pflash"), "{err}");
            assert_eq!(create["allowed"], false, "{offers}");
            assert_eq!(create["refusal"], "UNSUPPORTED", "{offers}");
            assert!(
                create["reason"].as_str().unwrap().contains("UEFI"),
                "{offers}"
            );
            assert_eq!(offers["vm"]["actions"]["revert"]["refusal"], "UNSUPPORTED");
            let body = app
                .request(
                    Some(op),
                    "mutation($v: ID!) { createSnapshot(vmId: $v, name: \"a\") { task { id } } }",
                    json!({ "v": vm }),
                )
                .await;
            assert_eq!(common::error_code(&body), "INVALID_STATE", "{body}");
            assert_eq!(
                body["errors"][0]["message"], create["reason"],
                "the action and its offer say the same"
            );
            let tasks = app
                .data(
                    op,
                    "query($v: ID!) { tasks(vmId: $v, first: 5) { edges { node { id } } } }",
                    json!({ "v": vm }),
                )
                .await;
            assert_eq!(tasks["tasks"]["edges"], json!([]), "no task was queued");
        }
        // A libvirt that does (10.10 on, qcow2 NVRAM): offered like any other.
        Ok(_) => assert_eq!(create["allowed"], true, "{version}\n{offers}"),
    }
}
