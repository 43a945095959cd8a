//! `cargo bench --bench subscriptions`: live events over WebSocket, against the release
//! `snaptree serve` running as its own process (so its memory can be read).
//!
//! - latency: from an event's creation in the robot (its `at`) to its arrival at a
//!   WebSocket client, over 200 tasks on a simulated host;
//! - idle subscriptions: 10,000 WebSocket connections each holding an `events`
//!   subscription; the server's resident memory before and after, and whether every
//!   one of them still receives the next event.
//!
//! Needs a file-descriptor limit above 10,000 for each process (`ulimit -n`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::ws::{Frame, Subscriber};
use common::{Api, process};
use serde_json::json;

const TASKS: usize = 200;
const IDLE: usize = 10_000;

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}/bench.db", dir.path().display());
        let admin = process::token(&db, "bench", "ADMIN");
        let mut server = process::ServerProcess::start(&db, &dir.path().join("sim"), &[]);
        let api = Api::new(&server.url, admin.clone());
        let project = api.data(&admin, "{ projects { id } }", json!({})).await["projects"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let host = api.create_host("sim", "SIMULATED", "sim://?latency_ms=20", None).await;
        let mut vms = Vec::new();
        for i in 0..4 {
            vms.push(api.create_vm(&host, &project, &format!("vm{i}")).await);
        }

        // Warm up (the first connections of each pool open during the first tasks).
        for vm in &vms {
            let (_, task) = api.create_snapshot(&admin, vm, "warm-up").await;
            api.finished(&admin, &task).await;
        }
        // Latency: one subscriber, every event of TASKS tasks. It reads on a thread of its
        // own, so that the producers below cannot delay its reading.
        let url = api.url.clone();
        let token = admin.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let reader = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let mut sub = Subscriber::connect(&url, Some(&token)).await.unwrap();
                sub.subscribe("e", "subscription { events { id state at } }", json!({})).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                ready_tx.send(()).unwrap();
                let mut latencies = Vec::new();
                let mut finished = 0;
                while finished < TASKS {
                    let Frame::Next(_, payload) = sub.next().await else { panic!("the stream ended") };
                    let arrived = chrono::Utc::now();
                    let event = &payload["data"]["events"];
                    let at: chrono::DateTime<chrono::Utc> = event["at"].as_str().unwrap().parse().unwrap();
                    latencies.push((arrived - at).num_microseconds().unwrap() as f64 / 1000.0);
                    if event["state"] == "SUCCEEDED" {
                        finished += 1;
                    }
                }
                latencies
            })
        });
        ready_rx.await.unwrap();
        let producers: Vec<_> = vms
            .iter()
            .map(|vm| {
                let (api, admin, vm) = (api.clone(), admin.clone(), vm.clone());
                tokio::spawn(async move {
                    for n in 0..TASKS / 4 {
                        let (_, task) = api.create_snapshot(&admin, &vm, &format!("s{n}")).await;
                        api.finished(&admin, &task).await;
                    }
                })
            })
            .collect();
        for p in producers {
            p.await.unwrap();
        }
        let mut latencies = reader.join().unwrap();
        latencies.sort_by(f64::total_cmp);

        // Idle subscriptions.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = rss_mib(server.pid());
        let mut idle = Vec::with_capacity(IDLE);
        for _ in 0..IDLE {
            let mut s = Subscriber::connect(&api.url, Some(&admin)).await.unwrap();
            s.subscribe("e", "subscription { events { id } }", json!({})).await;
            idle.push(s);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let held = rss_mib(server.pid());
        // Every one of them still hears the next event.
        let (_, task) = api.create_snapshot(&admin, &vms[0], "wake").await;
        api.finished(&admin, &task).await;
        let mut heard = 0;
        for s in &mut idle {
            if let Ok(Frame::Next(..)) = tokio::time::timeout(Duration::from_secs(10), s.next()).await {
                heard += 1;
            }
        }
        server.kill();

        println!("| events (of {TASKS} tasks) | creation → WebSocket client p50 | p99 |");
        println!("|---|---|---|");
        println!("| {} | {:.2} ms | {:.2} ms |", latencies.len(), percentile(&latencies, 0.5), percentile(&latencies, 0.99));
        println!();
        println!("| idle subscriptions | server RSS before | with them held | per subscription | hearing the next event |");
        println!("|---|---|---|---|---|");
        println!(
            "| {IDLE} | {before:.1} MiB | {held:.1} MiB | {:.1} KiB | {heard} |",
            (held - before) * 1024.0 / IDLE as f64
        );
    });
}
