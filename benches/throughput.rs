//! `cargo bench --bench throughput`: tasks per second as clients see them. A release
//! `snaptree serve` runs as its own process with a simulated host of no latency; each
//! action is a `createSnapshot` mutation over HTTP, and its end is the task's final event
//! on an `events` subscription over a WebSocket. 32 VMs each run a chain of 20
//! creates, the next sent when the previous one's end has been seen. Also printed: the
//! events received per second, and their delivery delay (stored, per the event's `at`,
//! to received by the subscriber).
//!
//! Last, a new subscriber replays every event of the run (`after: "0"`): the rate the
//! delivery path carries when events are there already, not bounded by their making.
//!
//! Each backend runs twice: with that one subscriber, and with 99 more following every
//! event too (`delivery delay` is then over all 100 subscribers' events).
//!
//! SQLite always; PostgreSQL too when `SNAPTREE_BENCH_POSTGRES_URL` (or
//! `SNAPTREE_TEST_POSTGRES_URL`) names a server.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::time::Instant;

use common::process::{self, ServerProcess};
use common::ws::{Frame, Subscriber};
use common::{Api, TestDb};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

/// VMs, each running its chain: the clients at once. `SNAPTREE_BENCH_VMS` changes it.
fn vm_count() -> usize {
    std::env::var("SNAPTREE_BENCH_VMS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(32)
}
/// Creates per VM; `SNAPTREE_BENCH_CHAIN` (up to 100, the per-VM limit) makes the run
/// longer, for a profiler.
fn chain() -> usize {
    std::env::var("SNAPTREE_BENCH_CHAIN")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(20)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Results {
    tasks_per_second: f64,
    events_per_second: f64,
    delay_p50_ms: f64,
    delay_p99_ms: f64,
    /// Events per second to a subscriber replaying them all at the end.
    replay_events_per_second: f64,
}

/// A subscriber of every event that records each one's delivery delay (ms) until it has
/// seen `finals` tasks end. Subscribers replay from the first event (`after: "0"`): a
/// subscribe takes effect when the server has read it, and the tasks may have begun by
/// then (without it, at 1,000 tasks/s the followers missed their first events and waited
/// for them for ever).
async fn follower(url: String, token: String, finals: usize) -> Vec<f64> {
    let mut socket = Subscriber::connect(&url, Some(&token)).await.unwrap();
    socket
        .subscribe(
            "e",
            "subscription { events(after: \"0\") { id state at task { id } } }",
            json!({}),
        )
        .await;
    let mut delays = Vec::new();
    let mut ended = 0;
    while ended < finals {
        // A follower that stops hearing events says how far it got, rather than hang.
        let silence = std::time::Duration::from_secs(30);
        let Ok(frame) = tokio::time::timeout(silence, socket.next()).await else {
            panic!(
                "a follower heard nothing for {silence:?} after {} events and {ended} of {finals} task ends",
                delays.len()
            )
        };
        let Frame::Next(_, payload) = frame else {
            panic!("a follower's subscription ended: {frame:?}")
        };
        let event = &payload["data"]["events"];
        let at = chrono::DateTime::parse_from_rfc3339(event["at"].as_str().unwrap()).unwrap();
        let delay = chrono::Utc::now().signed_duration_since(at);
        delays.push(delay.num_microseconds().unwrap_or(0) as f64 / 1000.0);
        if matches!(
            event["state"].as_str(),
            Some("SUCCEEDED" | "FAILED" | "CANCELLED")
        ) {
            ended += 1;
        }
    }
    delays
}

async fn run(db: TestDb, dir: &std::path::Path, extra_subscribers: usize) -> Results {
    let admin = process::token(&db.cli_url(), "bench", "ADMIN");
    let server = ServerProcess::start(&db.cli_url(), &dir.join("sim"), &[]);
    let api = Api::new(&server.url, admin.clone());
    let project = api.create_project("p").await;
    // A host of no latency: the limit on tasks at once is not what is measured here.
    let host = api
        .create_host_with("sim", "SIMULATED", "sim://", None, Some(1000))
        .await;
    let mut vms = Vec::new();
    for i in 0..vm_count() {
        vms.push(api.create_vm(&host, &project, &format!("vm{i}")).await);
    }

    // The subscriber: hands each task's final event to whoever waits for that task.
    let followers: Vec<_> = (0..extra_subscribers)
        .map(|_| {
            tokio::spawn(follower(
                api.url.clone(),
                admin.clone(),
                vm_count() * chain(),
            ))
        })
        .collect();
    let mut socket = Subscriber::connect(&api.url, Some(&admin)).await.unwrap();
    socket
        .subscribe(
            "e",
            "subscription { events(after: \"0\") { id state at task { id } } }",
            json!({}),
        )
        .await;
    let (wait_tx, mut wait_rx) = mpsc::unbounded_channel::<(String, oneshot::Sender<()>)>();
    let reader = tokio::spawn(async move {
        let mut waiting: HashMap<String, oneshot::Sender<()>> = HashMap::new();
        let mut ended: std::collections::HashSet<String> = Default::default();
        let mut delays = Vec::new();
        let mut received = 0usize;
        let mut first: Option<Instant> = None;
        let mut last = Instant::now();
        loop {
            tokio::select! {
                asked = wait_rx.recv() => match asked {
                    Some((task, done)) => {
                        if ended.remove(&task) {
                            let _ = done.send(());
                        } else {
                            waiting.insert(task, done);
                        }
                    }
                    None => break,
                },
                frame = socket.next() => {
                    let Frame::Next(_, payload) = frame else { panic!("{frame:?}") };
                    let event = &payload["data"]["events"];
                    let now = Instant::now();
                    first.get_or_insert(now);
                    last = now;
                    received += 1;
                    let at = chrono::DateTime::parse_from_rfc3339(event["at"].as_str().unwrap()).unwrap();
                    let delay = chrono::Utc::now().signed_duration_since(at);
                    delays.push(delay.num_microseconds().unwrap_or(0) as f64 / 1000.0);
                    if matches!(event["state"].as_str(), Some("SUCCEEDED" | "FAILED" | "CANCELLED")) {
                        let task = event["task"]["id"].as_str().unwrap().to_owned();
                        match waiting.remove(&task) {
                            Some(done) => { let _ = done.send(()); }
                            None => { ended.insert(task); }
                        }
                    }
                }
            }
        }
        delays.sort_by(f64::total_cmp);
        let span = last.duration_since(first.unwrap_or(last)).as_secs_f64();
        (received, span, delays)
    });

    let started = Instant::now();
    let chains = vms.iter().enumerate().map(|(v, vm)| {
        let (api, admin, vm, wait_tx) = (api.clone(), admin.clone(), vm.clone(), wait_tx.clone());
        async move {
            for i in 0..chain() {
                let (_, task) = api.create_snapshot(&admin, &vm, &format!("s{v}-{i}")).await;
                let (done_tx, done_rx) = oneshot::channel();
                wait_tx.send((task, done_tx)).unwrap();
                done_rx.await.unwrap();
            }
        }
    });
    futures_util::future::join_all(chains).await;
    let elapsed = started.elapsed();
    drop(wait_tx);
    let (received, span, mut delays) = reader.await.unwrap();
    for follower in followers {
        delays.extend(follower.await.unwrap());
    }
    delays.sort_by(f64::total_cmp);
    let replay_events_per_second = replay(&api.url, &admin, received).await;
    drop(server);
    Results {
        tasks_per_second: (vm_count() * chain()) as f64 / elapsed.as_secs_f64(),
        events_per_second: received as f64 / span.max(1e-9),
        delay_p50_ms: percentile(&delays, 0.5),
        delay_p99_ms: percentile(&delays, 0.99),
        replay_events_per_second,
    }
}

/// How fast the delivery path carries events when they are all there already: a new
/// subscriber replays the run's `events` from the first, and this is the rate at which
/// they reach it (subscribe sent to the last one received).
async fn replay(url: &str, token: &str, events: usize) -> f64 {
    let mut socket = Subscriber::connect(url, Some(token)).await.unwrap();
    let started = Instant::now();
    socket
        .subscribe(
            "r",
            "subscription { events(after: \"0\") { id state at task { id } } }",
            json!({}),
        )
        .await;
    for _ in 0..events {
        let frame = socket.next().await;
        assert!(
            matches!(frame, Frame::Next(..)),
            "the replay ended early: {frame:?}"
        );
    }
    events as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let runtime = snaptree::server::runtime().unwrap();
    runtime.block_on(async {
        let mut rows = Vec::new();
        let pg = std::env::var("SNAPTREE_BENCH_POSTGRES_URL")
            .or_else(|_| std::env::var("SNAPTREE_TEST_POSTGRES_URL"));
        if pg.is_err() {
            eprintln!("(set SNAPTREE_BENCH_POSTGRES_URL to measure PostgreSQL too)");
        }
        // `SNAPTREE_BENCH_ONLY=sqlite|postgres` runs one backend only (for a profiler).
        let only = std::env::var("SNAPTREE_BENCH_ONLY").ok();
        // `SNAPTREE_BENCH_SUBSCRIBERS=100` runs one count only (for a profiler).
        let counts: Vec<usize> = match std::env::var("SNAPTREE_BENCH_SUBSCRIBERS") {
            Ok(n) => vec![n.parse().expect("a number of subscribers")],
            Err(_) => vec![1, 100],
        };
        for subscribers in counts {
            if only.as_deref() != Some("postgres") {
                let dir = tempfile::tempdir().unwrap();
                let db = TestDb::sqlite(dir.path());
                rows.push(("SQLite", subscribers, run(db, dir.path(), subscribers - 1).await));
            }
            if let Ok(url) = &pg
                && only.as_deref() != Some("sqlite")
            {
                let dir = tempfile::tempdir().unwrap();
                let db = TestDb::postgres(url).await;
                rows.push(("PostgreSQL", subscribers, run(db, dir.path(), subscribers - 1).await));
            }
        }
        println!("| backend | subscribers | tasks/s (mutation over HTTP to final event over WebSocket) | events/s to the first subscriber | delivery delay p50 / p99 | events/s replayed to one subscriber |");
        println!("|---|---|---|---|---|---|");
        for (backend, subscribers, r) in rows {
            println!(
                "| {backend} | {subscribers} | {:.0} | {:.0} | {:.2} ms / {:.2} ms | {:.0} |",
                r.tasks_per_second, r.events_per_second, r.delay_p50_ms, r.delay_p99_ms, r.replay_events_per_second
            );
        }
    });
}
