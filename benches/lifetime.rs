//! `cargo bench --bench lifetime`: what a year of a busy cloud costs the reads of today
//! (issue 29). Two databases with the same present, 10,000 VMs with three open snapshots
//! each and the last day's tasks (ten snapshots made and deleted per VM, and the open
//! ones' creates: `snaptree::db::generate`), one of them with a year of
//! past behind it: 50 snapshots per VM made and deleted, 1,000,000 tasks, 7,000,000
//! events, 3,000,000 history rows. A release `snaptree serve` runs on each, as its own
//! process; the same reads go to both, alternately, one at a time, and each costs at most
//! 1.2x on the old database what it costs on the fresh one (the goal):
//!
//! - the tree query of a VM, its task list, a task's events, the dashboard's VM read and
//!   the REST list of its open snapshots, over HTTP;
//! - a replay of the last hour of a project's events, over a WebSocket (from the
//!   subscription's start to the hour's last event);
//!
//! and the servers' resident memory after the same reads. Runs on SQLite, and on
//! PostgreSQL too when `SNAPTREE_BENCH_POSTGRES_URL` names a server.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::TestDb;
use common::process::{self, ServerProcess};
use common::ws::{Frame, Subscriber};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::{Value, json};
use snaptree::db::generate::{self, Spec};
use snaptree::db::{Conn, Db};

/// VMs of each database (`SNAPTREE_LIFETIME_VMS` for a quicker look).
fn vms() -> i64 {
    std::env::var("SNAPTREE_LIFETIME_VMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}
/// Snapshots each VM made and deleted in the old database's year.
const PAST_PER_VM: i64 = 50;
/// Snapshots each VM made and deleted in the last day, in both databases: the present
/// fills a page of tasks.
const RECENT_PER_VM: i64 = 10;
/// Samples of each read on each database (after as many to warm up).
const SAMPLES: usize = 200;

/// One database and the server on it.
struct Side {
    /// Which one.
    name: &'static str,
    /// The server.
    server: ServerProcess,
    /// Its GraphQL endpoint.
    graphql: String,
    /// An OPERATOR of project `gen-0`.
    token: String,
    /// A recent task of VM 1, whose events are read.
    task: String,
    /// The event the last hour's replay starts after, and the hour's last of `gen-0`.
    hour: (i64, i64),
    /// Kept until the end.
    _db: TestDb,
}

/// Fills `db` (past or not), starts a server on it.
async fn side(name: &'static str, db: TestDb, past: i64, dir: &std::path::Path) -> Side {
    let now = chrono::Utc::now();
    let started = Instant::now();
    let made = {
        let handle = Db::connect(&db.url).await.unwrap();
        let mut tx = handle.begin().await.unwrap();
        let spec = Spec {
            vms: vms(),
            past_snapshots_per_vm: past,
            past: chrono::Duration::days(365),
            recent_snapshots_per_vm: RECENT_PER_VM,
            now,
        };
        let made = generate::fill(&mut tx.conn(), spec).await;
        tx.finish(made).await.unwrap()
    };
    eprintln!(
        "{name}: made {made:?} in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let hour = last_hour(&db, now).await;
    let token = process::token(&db.cli_url(), "gen-0", "OPERATOR");
    let sim = dir.join(format!("sim-{name}"));
    // Retention off: the year stays for the whole measurement.
    let flags = [
        "--rate-limit",
        "OPERATOR=none",
        "--keep-events",
        "0",
        "--keep-tasks",
        "0",
        "--keep-history",
        "0",
    ];
    let server = ServerProcess::start(&db.cli_url(), &sim, &flags);
    let api = common::Api::new(&server.url, token.clone());
    let newest = api
        .data(
            &token,
            "{ tasks(vmId: 1, first: 1) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    let task = newest["tasks"]["edges"][0]["node"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let graphql = api.url.clone();
    Side {
        name,
        server,
        graphql,
        token,
        task,
        hour,
        _db: db,
    }
}

/// The event before project 1's last hour, and its last event.
async fn last_hour(db: &TestDb, now: chrono::DateTime<chrono::Utc>) -> (i64, i64) {
    use snaptree::db::schema::task_events::dsl::*;
    let handle = Db::connect(&db.url).await.unwrap();
    let mut pooled = handle.reader().await.unwrap();
    let hour_ago = (now - chrono::Duration::hours(1)).naive_utc();
    macro_rules! both {
        (|$c:ident| $body:expr) => {
            match pooled.conn() {
                Conn::Sqlite($c) => $body,
                Conn::Pg($c) => $body,
            }
        };
    }
    let before: Option<i64> = both!(|c| task_events
        .filter(project_id.eq(1))
        .filter(at.lt(hour_ago))
        .select(diesel::dsl::max(id))
        .first(c)
        .await
        .unwrap());
    let last: Option<i64> = both!(|c| task_events
        .filter(project_id.eq(1))
        .select(diesel::dsl::max(id))
        .first(c)
        .await
        .unwrap());
    (before.unwrap_or(0), last.unwrap())
}

/// One read, as a client makes it.
#[derive(Clone, Copy)]
enum Read {
    Tree,
    TaskList,
    TaskEvents,
    Dashboard,
    RestList,
    Replay,
}

impl Read {
    fn name(self) -> &'static str {
        match self {
            Self::Tree => "tree query",
            Self::TaskList => "a VM's task list (20)",
            Self::TaskEvents => "Task.events",
            Self::Dashboard => "the dashboard's VM read",
            Self::RestList => "REST list of a VM's running snapshots",
            Self::Replay => "replay of the last hour (WebSocket)",
        }
    }

    /// Makes the read once against `side`; checks the answer.
    async fn once(self, client: &reqwest::Client, side: &Side) {
        let (query, variables) = match self {
            Self::Tree => (
                "{ vm(id: 1) { snapshotTree { id name state active children { id name state active
                   children { id name state active } } } } }",
                json!({}),
            ),
            Self::TaskList => (
                "{ tasks(vmId: 1, first: 20) { edges { node { id kind state finishedAt } } } }",
                json!({}),
            ),
            Self::TaskEvents => (
                "query($t: ID!) { task(id: $t) { events(first: 50) { id state progress at } } }",
                json!({ "t": side.task }),
            ),
            Self::Dashboard => (common::DASHBOARD_VM_QUERY, json!({ "v": "1" })),
            Self::RestList => {
                let rest = side.server.url.trim_end_matches("graphql");
                let body: Value = client
                    .get(format!("{rest}snapshot/?search[vm_id]=1&search[state]=4"))
                    .header("X-Auth-Token", &side.token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert!(body["content"].is_array(), "{body}");
                return;
            }
            Self::Replay => {
                replay(side).await;
                return;
            }
        };
        let body: Value = client
            .post(&side.graphql)
            .bearer_auth(&side.token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(body.get("errors").is_none(), "{body}");
    }
}

/// Replays the last hour of project `gen-0`'s events, to its last one.
async fn replay(side: &Side) {
    let mut socket = Subscriber::connect(&side.graphql, Some(&side.token))
        .await
        .unwrap();
    let (after, last) = side.hour;
    socket
        .subscribe(
            "hour",
            "subscription($a: ID) { events(after: $a) { id } }",
            json!({ "a": after.to_string() }),
        )
        .await;
    loop {
        match socket.next().await {
            Frame::Next(_, payload) => {
                let id: i64 = payload["data"]["events"]["id"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                if id >= last {
                    return;
                }
            }
            other => panic!("the replay ended early: {other:?}"),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// `SAMPLES` timings of `read` on each side, taken alternately.
async fn measure(read: Read, sides: &[Side]) -> Vec<Vec<Duration>> {
    let client = reqwest::Client::new();
    let mut samples = vec![Vec::with_capacity(SAMPLES); sides.len()];
    let warm = if matches!(read, Read::Replay) { 3 } else { 20 };
    let count = if matches!(read, Read::Replay) {
        20
    } else {
        SAMPLES
    };
    for i in 0..warm + count {
        for (side, times) in sides.iter().zip(&mut samples) {
            let start = Instant::now();
            read.once(&client, side).await;
            if i >= warm {
                times.push(start.elapsed());
            }
        }
    }
    for times in &mut samples {
        times.sort();
    }
    samples
}

async fn run(backend: &str, old: TestDb, fresh: TestDb, dir: &std::path::Path) {
    let sides = [
        side("old", old, PAST_PER_VM, dir).await,
        side("fresh", fresh, 0, dir).await,
    ];
    println!(
        "\n{backend}: {} VMs; old: a year of {PAST_PER_VM} snapshots per VM behind the same present\n",
        vms()
    );
    println!("| read | old p50 | old p95 | fresh p50 | fresh p95 | old / fresh (p50) |");
    println!("|---|---|---|---|---|---|");
    for read in [
        Read::Tree,
        Read::TaskList,
        Read::TaskEvents,
        Read::Dashboard,
        Read::RestList,
        Read::Replay,
    ] {
        let samples = measure(read, &sides).await;
        let (old, fresh) = (&samples[0], &samples[1]);
        println!(
            "| {} | {} | {} | {} | {} | {:.2}x |",
            read.name(),
            ms(percentile(old, 0.5)),
            ms(percentile(old, 0.95)),
            ms(percentile(fresh, 0.5)),
            ms(percentile(fresh, 0.95)),
            percentile(old, 0.5).as_secs_f64() / percentile(fresh, 0.5).as_secs_f64()
        );
    }
    let rss: Vec<String> = sides
        .iter()
        .map(|s| format!("{} {:.1} MiB", s.name, s.server.rss_kib() as f64 / 1024.0))
        .collect();
    println!("\nServer memory after the reads: {}", rss.join(", "));
}

fn main() {
    let runtime = snaptree::server::runtime().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let old = TestDb::sqlite(&dir.path().join("old"));
        let fresh = TestDb::sqlite(&dir.path().join("fresh"));
        std::fs::create_dir_all(dir.path().join("old")).unwrap();
        std::fs::create_dir_all(dir.path().join("fresh")).unwrap();
        run("SQLite", old, fresh, dir.path()).await;
        match std::env::var("SNAPTREE_BENCH_POSTGRES_URL") {
            Ok(server) => {
                let old = TestDb::postgres(&server).await;
                let fresh = TestDb::postgres(&server).await;
                run("PostgreSQL", old, fresh, dir.path()).await;
            }
            Err(_) => eprintln!("(set SNAPTREE_BENCH_POSTGRES_URL to measure PostgreSQL too)"),
        }
    });
}
