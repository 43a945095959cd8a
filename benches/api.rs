//! `cargo bench --bench api`: what a client of snaptree waits for, measured over HTTP
//! against a real server (release build) with a simulated host of no latency.
//!
//! - start: from a mutation's reply to the host's first progress report on its task;
//! - throughput: tasks completed per second, many VMs at once;
//! - tree query: latency of a query of a VM with a 50-snapshot tree.
//!
//! Runs on SQLite, and on PostgreSQL too when `SNAPTREE_BENCH_POSTGRES_URL` (or
//! `SNAPTREE_TEST_POSTGRES_URL`) names a server. Prints a Markdown table for
//! BENCHMARKS.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{TestApp, TestDb, test_robot};
use serde_json::json;
use snaptree::config::RobotConfig;
use snaptree::service::Published;
use tokio::sync::broadcast;

const STARTS: usize = 200;
const VMS: usize = 32;
const TASKS_PER_VM: usize = 20;
const QUERIES: usize = 200;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Waits for the event of `task` whose state is one of `states`.
async fn event(
    events: &mut broadcast::Receiver<std::sync::Arc<Published>>,
    task: i64,
    states: &[&str],
) -> Instant {
    loop {
        let e = &events
            .recv()
            .await
            .expect("the event stream keeps up")
            .event;
        if e.task_id == task && states.contains(&e.state.as_str()) {
            return Instant::now();
        }
    }
}

/// Waits for the host's first progress report on `task`: its work on the host has begun.
async fn host_work(
    events: &mut broadcast::Receiver<std::sync::Arc<Published>>,
    task: i64,
) -> Instant {
    loop {
        let e = &events
            .recv()
            .await
            .expect("the event stream keeps up")
            .event;
        if e.task_id == task && e.state == "RUNNING" && e.phase.as_deref() != Some("starting") {
            return Instant::now();
        }
    }
}

struct Results {
    backend: &'static str,
    start_p50: Duration,
    start_p95: Duration,
    start_max: Duration,
    tasks_per_second: f64,
    query_p50: Duration,
    query_p95: Duration,
}

async fn run(db: TestDb, dir: tempfile::TempDir, backend: &'static str) -> Results {
    let robot = RobotConfig {
        poll: Duration::from_secs(3600), // only the wake-up starts tasks
        ..test_robot()
    };
    let app = TestApp::builder().robot(robot).on(db, dir).spawn().await;
    let f = app.project_with_vm("bench", "sim://").await;
    let op = f.operator.clone();
    let bus = app.server.as_ref().unwrap().service.bus().clone();

    // 1. Reply to start: one VM, one task at a time.
    let mut starts = Vec::with_capacity(STARTS);
    let mut events = bus.tap().0;
    for i in 0..STARTS {
        let (_, task) = app.create_snapshot(&op, &f.vm, &format!("start{i}")).await;
        let replied = Instant::now();
        let task: i64 = task.parse().unwrap();
        // The task is claimed in the mutation's own transaction; what is measured is the
        // host's first report. One that precedes the reply counts as 0.
        let started = host_work(&mut events, task).await;
        starts.push(started.saturating_duration_since(replied));
        event(&mut events, task, &["SUCCEEDED", "FAILED"]).await;
        if i % 40 == 39 {
            // Keep the VM well under any limit: drop the chain built so far.
            let tree = app.tree(&op, &f.vm).await;
            let (_, t) = app.delete(&op, &tree[0].0, true).await;
            app.finished(&op, &t).await;
        }
    }
    starts.sort();

    // 2. Throughput: VMS VMs, each a chain of TASKS_PER_VM creates, all at once.
    let mut vms = Vec::new();
    for i in 0..VMS {
        vms.push(
            app.create_vm(&f.host, &f.project, &format!("load{i}"))
                .await,
        );
    }
    let began = Instant::now();
    let mut load = tokio::task::JoinSet::new();
    for vm in vms {
        let api = app.api.clone();
        let op = op.clone();
        let mut events = bus.tap().0;
        load.spawn(async move {
            for n in 0..TASKS_PER_VM {
                let (_, task) = api.create_snapshot(&op, &vm, &format!("t{n}")).await;
                event(&mut events, task.parse().unwrap(), &["SUCCEEDED"]).await;
            }
        });
    }
    load.join_all().await;
    let tasks_per_second = (VMS * TASKS_PER_VM) as f64 / began.elapsed().as_secs_f64();

    // 3. A VM with a 50-snapshot chain, queried whole.
    let tree_vm = app.create_vm(&f.host, &f.project, "tree").await;
    for i in 0..50 {
        app.snapshot_built(&op, &tree_vm, &format!("s{i}")).await;
    }
    let fields = "id name state stateCode active createdAt";
    let query = format!(
        "query($v: ID!) {{ vm(id: $v) {{ name busy activeSnapshot {{ id }} snapshotTree {{ {fields} {}{} }} }} }}",
        format!("children {{ {fields} ").repeat(49),
        "}".repeat(49)
    );
    let mut queries = Vec::with_capacity(QUERIES);
    for _ in 0..QUERIES {
        let began = Instant::now();
        app.data(&op, &query, json!({ "v": tree_vm })).await;
        queries.push(began.elapsed());
    }
    queries.sort();

    Results {
        backend,
        start_p50: percentile(&starts, 0.5),
        start_p95: percentile(&starts, 0.95),
        start_max: *starts.last().unwrap(),
        tasks_per_second,
        query_p50: percentile(&queries, 0.5),
        query_p95: percentile(&queries, 0.95),
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let pg = std::env::var("SNAPTREE_BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("SNAPTREE_TEST_POSTGRES_URL"))
        .ok();
    let mut results = Vec::new();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::sqlite(dir.path());
        results.push(run(db, dir, "SQLite").await);
        if let Some(server) = pg {
            let dir = tempfile::tempdir().unwrap();
            let db = TestDb::postgres(&server).await;
            results.push(run(db, dir, "PostgreSQL").await);
        } else {
            eprintln!("(set SNAPTREE_BENCH_POSTGRES_URL to measure PostgreSQL too)");
        }
    });
    println!(
        "| backend | reply → host work begins p50 / p95 / max | tasks completed per second | 50-snapshot tree query p50 / p95 |"
    );
    println!("|---|---|---|---|");
    for r in results {
        println!(
            "| {} | {} / {} / {} | {:.0} | {} / {} |",
            r.backend,
            ms(r.start_p50),
            ms(r.start_p95),
            ms(r.start_max),
            r.tasks_per_second,
            ms(r.query_p50),
            ms(r.query_p95)
        );
    }
}
