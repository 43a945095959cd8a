//! libvirtd stops while a task waits: the attempts fail as transient and are retried,
//! and once libvirtd is back the task finishes. (A file of its own: stopping libvirtd
//! would break other tests running at the same time.)

mod common;

use std::time::Duration;

use common::libvirt::{self, Restart, TestDomain};
use common::{TestApp, test_robot};
use serde_json::json;
use snaptree::config::RobotConfig;

#[tokio::test]
async fn a_task_waits_out_a_libvirtd_outage() {
    if !libvirt::available() {
        return;
    }
    let domain = TestDomain::new(true);
    let app = TestApp::builder()
        .robot(RobotConfig {
            max_attempts: 1000,
            retry_cap: Duration::from_millis(300),
            give_up_after: Duration::from_secs(300),
            ..test_robot()
        })
        .spawn()
        .await;
    let project = app.create_project("outage").await;
    let op = app.create_token(&project, "OPERATOR").await;
    let host = app.create_host("kvm", "KVM", libvirt::URI, None).await;
    let vm = app.register_vm(&host, &project, &domain.name).await;

    let _restart = Restart;
    libvirt::stop().await;
    let (snapshot, task) = app.create_snapshot(&op, &vm, "through the outage").await;
    // Wait for a failed attempt that is being retried.
    loop {
        let data = app
            .data(
                &op,
                "query($t: ID!) { task(id: $t) { state events { message } } }",
                json!({ "t": task }),
            )
            .await;
        let state = data["task"]["state"].as_str().unwrap();
        assert!(matches!(state, "QUEUED" | "RUNNING"), "{data:#}");
        let retrying = data["task"]["events"].as_array().unwrap().iter().any(|e| {
            e["message"].as_str().is_some_and(|m| {
                m.contains("the host could not be reached") && m.contains("retrying in")
            })
        });
        if retrying {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    libvirt::start().await;

    let done = app.finished(&op, &task).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done:#}");
    assert!(done["attempts"].as_i64().unwrap() >= 2);
    let host_name = app
        .data(
            &op,
            "query($s: ID!) { snapshot(id: $s) { hostName state } }",
            json!({ "s": snapshot }),
        )
        .await["snapshot"]["hostName"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(domain.tree(), vec![(host_name.clone(), None)]);
    assert_eq!(domain.current(), Some(host_name));
}
