//! PostgreSQL restarted while tasks run: the servers and robots ride through by
//! themselves (pools, the `LISTEN` connection, the pump, the task ledger), and no task or
//! event is lost or doubled. It restarts the database server it tests on, so it has a
//! test binary of its own (cargo runs them one at a time); PostgreSQL only.
//!
//! The restart is `pg_ctlcluster <version> main restart`, or the shell command in
//! `SNAPTREE_TEST_POSTGRES_RESTART`.

mod common;

use common::Api;
use common::fleet::{Ends, Fleet, check_invariants, on_postgres};
use serde_json::json;
use snaptree::domain::TaskState;
use snaptree::hypervisor::Driver;
use snaptree::hypervisor::sim::SimDriver;

fn restart_postgres() {
    let command = std::env::var("SNAPTREE_TEST_POSTGRES_RESTART").unwrap_or_else(|_| {
        let version = std::fs::read_dir("/etc/postgresql")
            .expect("a Debian PostgreSQL cluster, or SNAPTREE_TEST_POSTGRES_RESTART")
            .next()
            .unwrap()
            .unwrap()
            .file_name();
        format!("pg_ctlcluster {} main restart", version.to_string_lossy())
    });
    let status = std::process::Command::new("sh")
        .args(["-c", &command])
        .status()
        .unwrap();
    assert!(status.success(), "{command} failed");
}

/// `createSnapshot`, sent again while the server answers with an error (its pooled
/// connections died with the database); the task's id.
async fn create_until_accepted(api: &Api, token: &str, vm: &str, name: &str) -> String {
    loop {
        let body = api
            .request(
                Some(token),
                "mutation($v: ID!, $n: String!) { createSnapshot(vmId: $v, name: $n) { task { id } } }",
                json!({ "v": vm, "n": name }),
            )
            .await;
        if let Some(task) = body["data"]["createSnapshot"]["task"]["id"].as_str() {
            return task.to_owned();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn everything_resumes_after_postgres_restarts_under_load() {
    if !on_postgres() {
        return;
    }
    const VMS: usize = 10;
    let fleet = Fleet::new().await;
    let (db, sim, admin) = (&fleet.db, &fleet.sim, fleet.admin.clone());
    let server = fleet.server("server");
    // Workers for every VM: the whole first wave runs at once.
    let flags = ["--lease-seconds", "3", "--workers", "16"];
    let _robot = fleet.robot("robot", &flags);
    let api = fleet.api(&server);
    let project = api.create_project("p").await;
    let host = api
        .create_host_with(
            "slow",
            "SIMULATED",
            "sim://?latency_ms=3000",
            None,
            Some(VMS as i32),
        )
        .await;
    let mut vms = Vec::new();
    for i in 0..VMS {
        vms.push(api.create_vm(&host, &project, &format!("vm{i}")).await);
    }
    let ends = Ends::default();
    let follower = ends.follow(&api.url, &admin).await;

    // The first wave is on the host when the database goes away.
    let mut tasks = Vec::new();
    for vm in &vms {
        tasks.push(api.create_snapshot(&admin, vm, "before").await.1);
    }
    fleet.all_running().await;
    tokio::task::spawn_blocking(restart_postgres).await.unwrap();
    for task in &tasks {
        ends.wait(task).await;
    }
    // The second wave goes through the same server and robot afterwards.
    for vm in &vms {
        let task = create_until_accepted(&api, &admin, vm, "after").await;
        ends.wait(&task).await;
        tasks.push(task);
    }

    let (all, events) = check_invariants(db).await;
    assert_eq!(all.len(), 2 * VMS);
    assert!(
        all.iter().all(|t| t.state() == TaskState::Succeeded),
        "{all:#?}"
    );
    let received: Vec<i64> = ends.received.lock().unwrap().iter().map(|e| e.0).collect();
    let stored: Vec<i64> = events.iter().map(|e| e.id).collect();
    assert_eq!(
        received, stored,
        "the subscriber missed, repeated or reordered events"
    );
    let on_host = SimDriver::new("sim://", &sim.join(format!("host-{host}"))).unwrap();
    for i in 0..VMS {
        let listed = on_host.list(&format!("vm{i}")).await.unwrap();
        assert_eq!(listed.len(), 2, "vm{i}: {listed:?}");
    }
    follower.abort();
}
