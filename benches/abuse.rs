//! `cargo bench --bench abuse`: what each attack of `tests/abuse.rs` and
//! `tests/neighbours.rs` does to everyone else. A release `snaptree serve` (SQLite,
//! default limits) runs as its own process; a bystander, an OPERATOR of another project,
//! sends a simple query, one at a time, and meanwhile makes and deletes snapshots of its
//! own VM one task after another, at rest just before each attack and then while it
//! runs, for a few seconds each. Printed, for BENCHMARKS.md: the bystander's p50/p99 and
//! task rate under each attack beside its rest just before, at rest at the start and at
//! the end, and the server's resident memory before, at its peak during, and after the
//! attack.
//!
//! The attacker sends from this process with the ADMIN token, which has no budget
//! (unless said otherwise), so that only the limits of each request and connection stand
//! between it and the server: a tenant's VIEWER token would be throttled to 20 requests a
//! second besides. Attacker, bystander and server share the machine's two cores.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Api;
use common::process::{self, ServerProcess, Watchdog};
use common::ws::Subscriber;
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// How long each attack runs while the bystander measures.
const ATTACK: Duration = Duration::from_secs(5);
/// Concurrent attacking clients for request floods.
const ATTACKERS: usize = 8;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The bystander's query latencies while `running` holds.
async fn bystand(api: Api, token: String, vm: String, running: Arc<AtomicBool>) -> Vec<Duration> {
    let query = "query($v: ID!) { vm(id: $v) { id name snapshotCount } }";
    let mut samples = Vec::new();
    while running.load(Ordering::Relaxed) {
        let start = Instant::now();
        let data = api.data(&token, query, json!({ "v": vm })).await;
        samples.push(start.elapsed());
        assert_eq!(data["vm"]["id"], vm.as_str());
    }
    samples.sort();
    samples
}

/// The bystander's tasks done while `running` holds: it makes a snapshot of `vm` and
/// deletes it, again and again, each task waited for.
async fn churn(api: Api, token: String, vm: String, running: Arc<AtomicBool>) -> usize {
    let mut done = 0;
    let mut i = 0;
    while running.load(Ordering::Relaxed) {
        let id = api.snapshot_built(&token, &vm, &format!("churn-{i}")).await;
        let (_, task) = api.delete(&token, &id, false).await;
        api.finished(&token, &task).await;
        done += 2;
        i += 1;
    }
    done
}

/// The documents of the attacks that are refused before they run.
fn documents() -> Vec<(&'static str, String)> {
    let mut nested = String::from("{ vm(id: 1) { ");
    for _ in 0..7 {
        nested.push_str("host { vms { id ");
    }
    nested.push_str(&"} } ".repeat(7));
    nested.push_str("} }");
    let mut fragments = String::from("fragment F0 on Vm { id name }\n");
    for i in 1..=10 {
        let p = i - 1;
        fragments.push_str(&format!(
            "fragment F{i} on Vm {{ ...F{p} host {{ vms {{ ...F{p} }} }} }}\n"
        ));
    }
    fragments.push_str("{ vm(id: 1) { ...F10 } }");
    let mut doubling = String::from("fragment F0 on Query { hosts { id } }\n");
    for i in 1..=39 {
        let p = i - 1;
        doubling.push_str(&format!("fragment F{i} on Query {{ ...F{p} ...F{p} }}\n"));
    }
    doubling.push_str("{ ...F39 }");
    let drift: Vec<String> = (0..1200)
        .map(|i| format!("d{i}: vm(id: 1) {{ drift {{ kind }} }}"))
        .collect();
    vec![
        ("nested lists, 7 levels (135 bytes)", nested),
        ("nested named fragments, 10 levels", fragments),
        ("doubling fragments, 39 levels", doubling),
        (
            "1,200 aliased `drift`",
            format!("{{ {} }}", drift.join(" ")),
        ),
    ]
}

/// Sends `query` as fast as `ATTACKERS` clients can until `running` ends.
async fn flood(api: &Api, token: &str, query: &str, running: &Arc<AtomicBool>) {
    let floods = (0..ATTACKERS).map(|_| {
        let (api, token, query, running) = (
            api.clone(),
            token.to_owned(),
            query.to_owned(),
            running.clone(),
        );
        async move {
            while running.load(Ordering::Relaxed) {
                api.request(Some(&token), &query, json!({})).await;
            }
        }
    });
    futures_util::future::join_all(floods).await;
}

struct Row {
    attack: String,
    p50: Duration,
    p99: Duration,
    /// The bystander's p99 at rest just before the attack.
    rest_p99: Duration,
    /// The bystander's tasks per second.
    tasks: f64,
    /// Its tasks per second at rest just before the attack.
    rest_tasks: f64,
    before: u64,
    peak: u64,
    after: u64,
}

fn main() {
    let runtime = snaptree::server::runtime().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}/bench.db", dir.path().display());
        let admin = process::token(&db, "ops", "ADMIN");
        // The policies' attack moves the server's clock; the drift attack's host is a
        // stand-in virsh whose listings take a fifth of a second.
        let clock = dir.path().join("clock");
        let t0 = chrono::Utc::now();
        std::fs::write(&clock, t0.to_rfc3339()).unwrap();
        let virsh = common::target::fake_virsh(dir.path());
        let server = ServerProcess::start(
            &db,
            &dir.path().join("sim"),
            // The bystander may ask as fast as it likes; attackers keep the defaults.
            &[
                "--rate-limit",
                "OPERATOR=100000:100000000",
                "--clock-file",
                clock.to_str().unwrap(),
                "--virsh",
                virsh.to_str().unwrap(),
            ],
        );
        let api = Api::new(&server.url, admin.clone());
        let bystanders = api.create_project("bystanders").await;
        let bystander = api.create_token(&bystanders, "OPERATOR").await;
        let tenant = api.create_project("tenant").await;
        let viewer = api.create_token(&tenant, "VIEWER").await;
        let host = api.create_host("sim", "SIMULATED", "sim://", None).await;
        for i in 0..8 {
            api.create_vm(&host, &tenant, &format!("t{i}")).await;
        }
        let mine = api.create_vm(&host, &bystanders, "mine").await;
        api.snapshot_built(&admin, &mine, "base").await;

        let churned = api.create_vm(&host, &bystanders, "churned").await;
        let measure_rest = |label: &'static str| {
            let (api, bystander, mine, churned) =
                (api.clone(), bystander.clone(), mine.clone(), churned.clone());
            async move {
                let running = Arc::new(AtomicBool::new(true));
                let stop = running.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(ATTACK).await;
                    stop.store(false, Ordering::Relaxed);
                });
                let tasks = tokio::spawn(churn(api.clone(), bystander.clone(), churned, running.clone()));
                let samples = bystand(api, bystander, mine, running).await;
                (label, samples, tasks.await.unwrap())
            }
        };
        // Warm up, then the bystander at rest.
        measure_rest("warm-up").await;
        let (_, rest, rest_tasks) = measure_rest("rest").await;
        let mut rows = Vec::new();

        // Each attack: the bystander measures at rest just before it (what the server
        // has gathered so far, the bystander's own past included, weighs on both alike),
        // then while it runs.
        macro_rules! attack {
            ($name:expr, |$running:ident| $body:expr) => {{
                let (_, quiet, quiet_tasks) = measure_rest("rest").await;
                let before = server.rss_kib();
                let watchdog = Watchdog::new(server.pid(), u64::MAX);
                let $running = Arc::new(AtomicBool::new(true));
                let measuring = tokio::spawn(bystand(api.clone(), bystander.clone(), mine.clone(), $running.clone()));
                let churning = tokio::spawn(churn(api.clone(), bystander.clone(), churned.clone(), $running.clone()));
                let started = Instant::now();
                let stop = $running.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(ATTACK).await;
                    stop.store(false, Ordering::Relaxed);
                });
                $body;
                $running.store(false, Ordering::Relaxed);
                let samples = measuring.await.unwrap();
                let tasks = churning.await.unwrap() as f64 / started.elapsed().as_secs_f64();
                let peak = watchdog.peak_kib();
                // Connections close and memory is handed back within seconds.
                tokio::time::sleep(Duration::from_secs(8)).await;
                let row = Row {
                    attack: $name.to_string(),
                    p50: percentile(&samples, 0.5),
                    p99: percentile(&samples, 0.99),
                    rest_p99: percentile(&quiet, 0.99),
                    tasks,
                    rest_tasks: quiet_tasks as f64 / ATTACK.as_secs_f64(),
                    before,
                    peak,
                    after: server.rss_kib(),
                };
                eprintln!("{}: p50 {} p99 {} ({} samples), {:.1} tasks/s", row.attack, ms(row.p50), ms(row.p99), samples.len(), row.tasks);
                rows.push(row);
            }};
        }

        for (name, doc) in documents() {
            attack!(name, |running| flood(&api, &admin, &doc, &running).await);
        }
        let costly = "{ vms(first: 8) { edges { node { snapshots { id name state history(first: 10) { at actor } } } } } }";
        attack!("a VIEWER's costliest accepted query, flooded (its budget applies)", |running| {
            flood(&api, &viewer, costly, &running).await
        });
        attack!("5,000 subscriptions on one socket", |running| {
            let mut socket = Subscriber::connect(&api.url, Some(&admin)).await.unwrap();
            for i in 0..5000 {
                socket.subscribe(&format!("s{i}"), "subscription { events { id } }", json!({})).await;
            }
            let reading = async {
                while running.load(Ordering::Relaxed) {
                    let _ = tokio::time::timeout(Duration::from_millis(100), socket.next()).await;
                }
            };
            reading.await;
        });
        let addr = api.url.trim_start_matches("http://").trim_end_matches("/graphql").to_owned();
        // The connection attacks come from eight addresses (127.0.0.10-17), as a spread
        // attack would: from one address, the cap per address (256) refuses most of them.
        attack!("1,000 connections that never finish their headers, from eight addresses", |running| {
            let mut held = Vec::new();
            for n in 0..1000 {
                let mut tcp = common::target::tcp_from(&addr, common::target::attacker(n % 8)).await;
                let _ = tcp.write_all(b"POST /graphql HTTP/1.1\r\nHost: x\r\n").await;
                held.push(tcp);
            }
            while running.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        attack!("100 bodies trickled a byte a second, from eight addresses", |running| {
            let mut held = Vec::new();
            for n in 0..100 {
                let mut tcp = common::target::tcp_from(&addr, common::target::attacker(n % 8)).await;
                let head = "POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
                let _ = tcp.write_all(head.as_bytes()).await;
                held.push(tcp);
            }
            while running.load(Ordering::Relaxed) {
                for tcp in &mut held {
                    let _ = tcp.write_all(b" ").await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        attack!("1,000 WebSockets that never send connection_init, from eight addresses", |running| {
            let mut held = Vec::new();
            for n in 0..1000 {
                held.push(Subscriber::open_from(&api.url, common::target::attacker(n % 8)).await);
            }
            while running.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });

        // Round 2 (issue 27): the surfaces added since.
        attack!("200 REST bodies trickled a byte a second, from four addresses", |running| {
            let mut held = Vec::new();
            for n in 0..200 {
                let mut tcp = common::target::tcp_from(&addr, common::target::attacker(n % 4)).await;
                let head = format!(
                    "POST /snapshot/ HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {admin}\r\n\
                     Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                );
                let _ = tcp.write_all(head.as_bytes()).await;
                held.push(tcp);
            }
            while running.load(Ordering::Relaxed) {
                for tcp in &mut held {
                    let _ = tcp.write_all(b" ").await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        attack!("invented tokens from one address, 8 clients", |running| {
            let client = reqwest::Client::builder()
                .local_address(common::target::attacker(5))
                .build()
                .unwrap();
            let floods = (0..ATTACKERS).map(|n| {
                let (client, url, running) = (client.clone(), api.url.clone(), running.clone());
                async move {
                    let mut i = 0u64;
                    while running.load(Ordering::Relaxed) {
                        let token = format!("snaptree_{:064x}", (n as u64) << 40 | i);
                        let _ = client.post(&url).bearer_auth(token).json(&json!({ "query": "{ me { name } }" })).send().await;
                        i += 1;
                    }
                }
            });
            futures_util::future::join_all(floods).await;
        });
        attack!("one address at its cap of connections (256), asking for more", |running| {
            let mut held = Vec::new();
            for _ in 0..256 {
                let mut tcp = common::target::tcp_from(&addr, common::target::attacker(6)).await;
                let _ = tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
                held.push(tcp);
            }
            while running.load(Ordering::Relaxed) {
                let tcp = common::target::tcp_from(&addr, common::target::attacker(6)).await;
                drop(tcp);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        // A project at its quota, with 100 policies on 20 VMs, all due at once.
        let own = api.data(&admin, "{ me { project { id } } }", json!({})).await;
        let crowded = own["me"]["project"]["id"].as_str().unwrap().to_owned();
        api.data(&admin, "mutation($p: ID!) { updateProject(id: $p, maxSnapshots: 1) { id } }", json!({ "p": crowded })).await;
        let mut crowd = Vec::new();
        for i in 0..20 {
            crowd.push(api.create_vm(&host, &crowded, &format!("vm-{i}")).await);
        }
        api.snapshot_built(&admin, &crowd[0], "the one allowed").await;
        for i in 0..100 {
            let input = json!({ "name": format!("p{i}"), "vmFilter": "vm-*", "everySeconds": 3600 });
            api.data(&admin, "mutation($i: PolicyInput!) { createPolicy(input: $i) { id } }", json!({ "i": input })).await;
        }
        attack!("2,000 policy runs of a project at its quota, due at once", |running| {
            std::fs::write(&clock, (t0 + chrono::Duration::hours(2)).to_rfc3339()).unwrap();
            while running.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let kvm = api.create_host("kvm", "KVM", "qemu:///system", None).await;
        let mut slow = Vec::new();
        for i in 0..48 {
            slow.push(api.register_vm(&kvm, &tenant, &format!("slow{i}")).await);
        }
        attack!("drift of 48 VMs on a KVM host, 24 at a time, abandoned after 50 ms", |running| {
            let impatient = reqwest::Client::builder().timeout(Duration::from_millis(50)).build().unwrap();
            let mut round = 0;
            while running.load(Ordering::Relaxed) {
                let asks = (0..24).map(|i| {
                    let query = format!("{{ vm(id: {}) {{ drift {{ kind }} }} }}", slow[(round * 24 + i) % slow.len()]);
                    impatient.post(&api.url).bearer_auth(&admin).json(&json!({ "query": query })).send()
                });
                futures_util::future::join_all(asks).await;
                round += 1;
            }
        });

        // At rest once more: what the whole run left behind.
        let (_, end, end_tasks) = measure_rest("rest").await;
        for (when, samples, tasks) in [("at the start", &rest, rest_tasks), ("at the end", &end, end_tasks)] {
            println!("\nBystander at rest {when}: p50 {} / p99 {} ({} queries in {} s), {:.1} tasks/s", ms(percentile(samples, 0.5)), ms(percentile(samples, 0.99)), samples.len(), ATTACK.as_secs(), tasks as f64 / ATTACK.as_secs_f64());
        }
        println!();
        println!("| attack ({} s) | bystander p50 | p99 | p99 at rest just before | p99 / rest | tasks/s | at rest just before | / rest | memory before | peak | after |", ATTACK.as_secs());
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        for row in rows {
            println!(
                "| {} | {} | {} | {} | {:.1}x | {:.1} | {:.1} | {:.2}x | {} | {} | {} |",
                row.attack,
                ms(row.p50),
                ms(row.p99),
                ms(row.rest_p99),
                row.p99.as_secs_f64() / row.rest_p99.as_secs_f64(),
                row.tasks,
                row.rest_tasks,
                row.tasks / row.rest_tasks,
                mib(row.before),
                mib(row.peak),
                mib(row.after)
            );
        }
        drop(server);
    });
}
