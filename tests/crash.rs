//! A server killed (SIGKILL) while a task runs loses nothing: started again, it takes the
//! task up and finishes it.

mod common;

use common::{Api, TestDb, process};
use snaptree::hypervisor::Driver;
use snaptree::hypervisor::sim::SimDriver;

/// `snaptree serve` on `db`, with a short lease so that a dead server's task is taken
/// up soon, and no budget on the OPERATOR token the test polls with.
fn serve(db: &TestDb, dir: &std::path::Path) -> process::ServerProcess {
    let flags = ["--lease-seconds", "2", "--rate-limit", "OPERATOR=none"];
    process::ServerProcess::start(&db.cli_url(), &dir.join("sim"), &flags)
}

#[tokio::test]
async fn a_task_survives_a_killed_server() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path()).await;
    let admin = process::token(&db.cli_url(), "ops", "ADMIN");
    let mut first = serve(&db, dir.path());
    let api = Api::new(&first.url, admin.clone());

    let project = api.create_project("p").await;
    let op = api.create_token(&project, "OPERATOR").await;
    let host = api
        .create_host("slow", "SIMULATED", "sim://?latency_ms=3000", None)
        .await;
    let vm = api.create_vm(&host, &project, "victim").await;
    let (snapshot, task) = api.create_snapshot(&op, &vm, "mid-flight").await;

    // Wait until the robot is working on it, then kill the server outright.
    loop {
        let data = api
            .data(
                &op,
                "query($t: ID!) { task(id: $t) { state progress } }",
                serde_json::json!({ "t": task }),
            )
            .await;
        if data["task"]["state"] == "RUNNING" && data["task"]["progress"].is_number() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    first.kill(); // SIGKILL

    let mut second = serve(&db, dir.path());
    let api = Api::new(&second.url, admin);
    let done = api.finished(&op, &task).await;
    second.kill();

    assert_eq!(done["state"], "SUCCEEDED", "{done:#}");
    assert_eq!(done["snapshot"]["id"], snapshot.as_str());
    assert_eq!(done["snapshot"]["state"], "RUNNING");
    assert_eq!(done["snapshot"]["active"], true);
    assert!(done["attempts"].as_i64().unwrap() >= 2, "{done:#}");
    let resumed = done["events"].as_array().unwrap().iter().any(|e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("taken up again"))
    });
    assert!(resumed, "{done:#}");
    // The host has the snapshot exactly once.
    let on_host = SimDriver::new(
        "sim://",
        &dir.path().join("sim").join(format!("host-{host}")),
    )
    .unwrap();
    let listed = on_host.list("victim").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].current);
}
