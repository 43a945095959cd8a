//! `cargo bench --bench kvm`: a snapshot create through snaptree (from sending the
//! mutation to the task's final event) against the same `virsh snapshot-create-as` (the
//! driver's arguments, `--atomic` included) run by hand, on the same running QEMU domain, interleaved so that both see the same tree.
//! Needs libvirt (`.ci/run` shows how to install and start it). SQLite, or PostgreSQL
//! with `SNAPTREE_BENCH_POSTGRES_URL`. Prints a Markdown table.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::libvirt::{self, TestDomain};
use common::{TestApp, TestDb, test_robot};
use snaptree::config::RobotConfig;

const RUNS: usize = 30;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    if !libvirt::available() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let domain = TestDomain::new(true);
        let dir = tempfile::tempdir().unwrap();
        let db = match std::env::var("SNAPTREE_BENCH_POSTGRES_URL") {
            Ok(server) => TestDb::postgres(&server).await,
            Err(_) => TestDb::sqlite(dir.path()),
        };
        let robot = RobotConfig {
            poll: Duration::from_secs(3600),
            ..test_robot()
        };
        let app = TestApp::spawn_on(db, dir, Some(robot)).await;
        let project = app.create_project("bench").await;
        let op = app.create_token(&project, "OPERATOR").await;
        let host = app.create_host("kvm", "KVM", libvirt::URI, None).await;
        let vm = app.register_vm(&host, &project, &domain.name).await;
        let bus = app.server.as_ref().unwrap().service.bus().clone();
        let (mut by_hand, mut through) = (Vec::new(), Vec::new());
        for i in 0..RUNS {
            let began = Instant::now();
            let out = Command::new("virsh")
                .args(["-q", "-c", libvirt::URI, "snapshot-create-as", "--domain", &domain.name, "--name", &format!("hand{i}"), "--atomic"])
                .output()
                .unwrap();
            by_hand.push(began.elapsed());
            assert!(out.status.success());

            let mut events = bus.tap().0;
            let began = Instant::now();
            let (_, task) = app.create_snapshot(&op, &vm, &format!("snaptree{i}")).await;
            let task: i64 = task.parse().unwrap();
            loop {
                let e = &events.recv().await.unwrap().event;
                if e.task_id == task && e.state != "QUEUED" && e.state != "RUNNING" {
                    assert_eq!(e.state, "SUCCEEDED");
                    break;
                }
            }
            through.push(began.elapsed());
        }
        let (hand, snap) = (median(by_hand), median(through));
        println!("| virsh snapshot-create-as by hand (median of {RUNS}) | through snaptree, mutation to final event (median of {RUNS}) | ratio |");
        println!("|---|---|---|");
        println!("| {} | {} | {:.2} |", ms(hand), ms(snap), snap.as_secs_f64() / hand.as_secs_f64());
    });
}
