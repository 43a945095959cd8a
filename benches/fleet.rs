//! `cargo bench --bench fleet`: separate release processes on one PostgreSQL database, as
//! clients see them (mutations over HTTP, events over a WebSocket; times from the stored
//! events, which every process stamps with the same clock):
//!
//! 1. tasks/s against the number of `snaptree robot` processes (1, 2, 4) behind one
//!    `serve --no-robot`, on a simulated host of no latency;
//! 2. dispatch across processes: on an idle fleet, how long a task queued by the server
//!    waits for a robot of another process to start it (its QUEUED event to its RUNNING
//!    one), one task at a time;
//! 3. rescue: a robot killed (SIGKILL) while it holds tasks; how long until another robot
//!    takes each one up (goal: under twice the lease);
//! 4. a burst of 1,000 tasks over 10 hosts of 20 ms operations, with each host's limit on
//!    tasks at once at 4 and at 1,000 (no limit in effect).
//!
//! Needs `SNAPTREE_BENCH_POSTGRES_URL` (or `SNAPTREE_TEST_POSTGRES_URL`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::fleet::{Ends, at_once, check_invariants};
use common::process::{self, RobotProcess, ServerProcess};
use common::{Api, TestDb};
use snaptree::db::models::TaskEvent;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A fresh database, a server without a robot, and its API.
struct Bench {
    db: TestDb,
    url: String,
    dir: tempfile::TempDir,
    admin: String,
    /// Kept for its lifetime: dropping it stops the server.
    _server: ServerProcess,
    api: Api,
}

impl Bench {
    async fn new(pg: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::postgres(pg).await;
        let url = db.cli_url();
        let admin = process::token(&url, "bench", "ADMIN");
        let server = ServerProcess::start(&url, &dir.path().join("sim"), &["--no-robot"]);
        let api = Api::new(&server.url, admin.clone());
        Self {
            db,
            url,
            dir,
            admin,
            _server: server,
            api,
        }
    }

    fn robot(&self, name: &str, extra: &[&str]) -> RobotProcess {
        let sim = self.dir.path().join("sim");
        RobotProcess::start(&self.url, &sim, extra, &self.dir.path().join(name))
    }

    /// `count` VMs on a new host named `name` of `uri` taking `limit` tasks at once.
    async fn vms(&self, name: &str, uri: &str, limit: i32, count: usize) -> Vec<String> {
        let project = self.api.create_project(name).await;
        let host = self
            .api
            .create_host_with(name, "SIMULATED", uri, None, Some(limit))
            .await;
        let mut vms = Vec::new();
        for i in 0..count {
            vms.push(
                self.api
                    .create_vm(&host, &project, &format!("{name}{i}"))
                    .await,
            );
        }
        vms
    }

    /// Runs `chain` creates on each of `vms` at once, each VM's next when its last has
    /// ended; the elapsed time.
    async fn chains(&self, vms: &[String], chain: usize) -> Duration {
        let ends = Ends::default();
        let follower = ends.follow(&self.api.url, &self.admin).await;
        let started = Instant::now();
        futures_util::future::join_all(vms.iter().enumerate().map(|(v, vm)| {
            let (api, admin, ends) = (self.api.clone(), self.admin.clone(), ends.clone());
            async move {
                for i in 0..chain {
                    let (_, task) = api.create_snapshot(&admin, vm, &format!("s{v}-{i}")).await;
                    ends.wait(&task).await;
                }
            }
        }))
        .await;
        follower.abort();
        started.elapsed()
    }

    /// Every stored event, in id order.
    async fn events(&self) -> Vec<TaskEvent> {
        let db = snaptree::db::Db::connect(&self.db.url).await.unwrap();
        let mut pooled = db.reader().await.unwrap();
        snaptree::db::events::after(&mut pooled.conn(), Default::default(), 0, None, 1_000_000)
            .await
            .unwrap()
    }
}

/// Milliseconds between two stored times.
fn ms(from: chrono::NaiveDateTime, to: chrono::NaiveDateTime) -> f64 {
    (to - from).num_microseconds().unwrap_or(0) as f64 / 1000.0
}

/// Tasks/s with `robots` robot processes of `workers` workers each.
async fn robots(pg: &str, robots: usize, workers: usize) -> f64 {
    const VMS: usize = 32;
    const CHAIN: usize = 10;
    let bench = Bench::new(pg).await;
    let workers = workers.to_string();
    let _robots: Vec<RobotProcess> = (0..robots)
        .map(|i| bench.robot(&format!("robot{i}"), &["--workers", &workers]))
        .collect();
    let vms = bench.vms("sim", "sim://", 1000, VMS).await;
    let elapsed = bench.chains(&vms, CHAIN).await;
    (VMS * CHAIN) as f64 / elapsed.as_secs_f64()
}

/// Tasks/s with the robot inside the server (eager dispatch), on the same load.
async fn own_robot(pg: &str) -> f64 {
    const VMS: usize = 32;
    const CHAIN: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::postgres(pg).await;
    let url = db.cli_url();
    let admin = process::token(&url, "bench", "ADMIN");
    let server = ServerProcess::start(&url, &dir.path().join("sim"), &[]);
    let bench = Bench {
        api: Api::new(&server.url, admin.clone()),
        db,
        url,
        dir,
        admin,
        _server: server,
    };
    let vms = bench.vms("sim", "sim://", 1000, VMS).await;
    let elapsed = bench.chains(&vms, CHAIN).await;
    (VMS * CHAIN) as f64 / elapsed.as_secs_f64()
}

/// Queued-to-started delays (ms, sorted) of tasks sent one at a time to an idle fleet.
async fn dispatch(pg: &str) -> Vec<f64> {
    const VMS: usize = 20;
    const CHAIN: usize = 10;
    let bench = Bench::new(pg).await;
    let _robot = bench.robot("robot", &[]);
    let vms = bench.vms("sim", "sim://", 1000, VMS).await;
    for round in 0..CHAIN {
        for vm in &vms {
            let (_, task) = bench
                .api
                .create_snapshot(&bench.admin, vm, &format!("r{round}"))
                .await;
            bench.api.finished(&bench.admin, &task).await;
        }
    }
    let events = check_invariants(&bench.db).await.1;
    let mut queued = HashMap::new();
    let mut delays = Vec::new();
    for e in &events {
        match e.message.as_deref() {
            Some(m) if m.contains("requested by") => {
                queued.insert(e.task_id, e.at);
            }
            Some(m) if m.starts_with("started by") => delays.push(ms(queued[&e.task_id], e.at)),
            _ => {}
        }
    }
    delays.sort_by(f64::total_cmp);
    delays
}

/// (lease in ms, the waits in ms from the kill to each task being taken up again).
async fn rescue(pg: &str) -> (f64, Vec<f64>) {
    const LEASE: u64 = 5;
    const TASKS: usize = 8;
    let bench = Bench::new(pg).await;
    let lease = LEASE.to_string();
    let mut first = bench.robot("first", &["--lease-seconds", &lease]);
    let vms = bench
        .vms("slow", "sim://?latency_ms=30000", 1000, TASKS)
        .await;
    for vm in &vms {
        bench.api.create_snapshot(&bench.admin, vm, "held").await;
    }
    wait_all_running(&bench, TASKS).await;
    let _second = bench.robot("second", &["--lease-seconds", &lease]);
    let killed = chrono::Utc::now().naive_utc();
    first.kill();
    let mut waits = loop {
        let taken: Vec<f64> = bench
            .events()
            .await
            .iter()
            .filter(|e| {
                e.message
                    .as_deref()
                    .is_some_and(|m| m.starts_with("taken up again"))
            })
            .map(|e| ms(killed, e.at))
            .collect();
        if taken.len() == TASKS {
            break taken;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    waits.sort_by(f64::total_cmp);
    (LEASE as f64 * 1000.0, waits)
}

async fn wait_all_running(bench: &Bench, count: usize) {
    loop {
        let events = bench.events().await;
        let started = events
            .iter()
            .filter(|e| {
                e.message
                    .as_deref()
                    .is_some_and(|m| m.starts_with("started by"))
            })
            .count();
        if started == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A burst of 1,000 creates over 10 hosts (10 VMs each, 10 creates per VM) with each
/// host's limit at `limit`: (tasks/s, the most tasks at once on any host).
async fn burst(pg: &str, limit: i32) -> (f64, i32) {
    let bench = Bench::new(pg).await;
    let _robots: Vec<RobotProcess> = (0..2)
        .map(|i| bench.robot(&format!("robot{i}"), &["--workers", "32"]))
        .collect();
    let mut vms = Vec::new();
    let mut hosts = Vec::new();
    for h in 0..10 {
        let mine = bench
            .vms(&format!("h{h}"), "sim://?latency_ms=20", limit, 10)
            .await;
        hosts.push(mine.clone());
        vms.extend(mine);
    }
    let elapsed = bench.chains(&vms, 10).await;
    let (tasks, events) = check_invariants(&bench.db).await;
    let mut most = 0;
    for host_vms in &hosts {
        let ids: Vec<i64> = tasks
            .iter()
            .filter(|t| host_vms.contains(&t.vm_id.to_string()))
            .map(|t| t.id)
            .collect();
        most = most.max(at_once(&events, &ids).0);
    }
    (tasks.len() as f64 / elapsed.as_secs_f64(), most)
}

fn main() {
    let Ok(pg) = std::env::var("SNAPTREE_BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("SNAPTREE_TEST_POSTGRES_URL"))
    else {
        eprintln!("set SNAPTREE_BENCH_POSTGRES_URL: the fleet runs on PostgreSQL");
        return;
    };
    let runtime = snaptree::server::runtime().unwrap();
    runtime.block_on(async {
        println!("| robot processes x workers | tasks/s |");
        println!("|---|---|");
        for (n, w) in [(1, 8), (2, 8), (4, 8), (2, 16)] {
            println!("| {n} x {w} | {:.0} |", robots(&pg, n, w).await);
        }
        // The in-process robot of one `serve`, for comparison.
        println!("| (the server's own robot) x 8 | {:.0} |", own_robot(&pg).await);
        let d = dispatch(&pg).await;
        println!(
            "\ndispatch across processes, queued to started, {} tasks one at a time: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            d.len(),
            percentile(&d, 0.5),
            percentile(&d, 0.99),
            d.last().unwrap()
        );
        let (lease, waits) = rescue(&pg).await;
        println!(
            "rescue, lease {:.0} ms, {} tasks: taken up {:.0} to {:.0} ms after the kill ({:.2} x the lease at most)",
            lease,
            waits.len(),
            waits[0],
            waits.last().unwrap(),
            waits.last().unwrap() / lease
        );
        println!("\n| burst of 1,000 tasks over 10 hosts, limit per host | tasks/s | most at once on a host |");
        println!("|---|---|---|");
        for limit in [4, 1000] {
            let (rate, most) = burst(&pg, limit).await;
            println!("| {limit} | {rate:.0} | {most} |");
        }
    });
}
