//! `cargo bench --bench month`: a month of a busy cloud under retention (issue 29). A
//! database holds the lifetime bench's present (10,000 VMs, three open snapshots each);
//! then, a simulated day at a time, a day of the lifetime bench's year is added
//! (`snaptree::db::generate::day`: 1,370 snapshots made and deleted, 2,740 tasks, 19,180
//! events, 8,220 history rows, the year's 1,000,000 tasks a day at a time) and the
//! server's clock (`--clock-file`) moves to the day's end. Two readers read all along
//! (the tree query, a VM's task list, the dashboard's VM read, the REST list) over HTTP
//! from a release `snaptree serve` of its own process.
//!
//! The same month runs twice on each backend: once with retention off, once with
//! `--keep-events 1d --keep-tasks 2d --keep-history 3d`. The goals: the database ends
//! the month with retention no larger than a few days' worth (the size the run without
//! retention had after three days), and the reads' p99 while retention retires (between
//! two scrapes of `/metrics` whose `snaptree_retired_rows_total` grew) stays within 1.5x
//! of their p99 without retention. Reads made while a day is added are not counted in
//! either run: the generator's bulk insert is not a client's load.
//!
//! A simulated day lasts `WINDOW` (5 s), and with retention on until retention has caught
//! up (a real day gives it 86,400 s for what it retires here in seconds); retention looks
//! every second (`--retention-every-ms 1000`) rather than every 10 s. Runs on SQLite, and on PostgreSQL too when
//! `SNAPTREE_BENCH_POSTGRES_URL` names a server.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::TestDb;
use common::process::{self, ServerProcess};
use serde_json::{Value, json};
use snaptree::config::DatabaseUrl;
use snaptree::db::generate::{self, Spec};
use snaptree::db::{Conn, Db};
use tokio::sync::Mutex;

/// VMs of the database.
const VMS: i64 = 10_000;
/// VMs that make and delete a snapshot each day (the lifetime bench's year, a day).
const DAY_VMS: i64 = 1_370;
/// Simulated days.
const DAYS: i64 = 30;
/// How long a simulated day lasts.
const WINDOW: Duration = Duration::from_secs(5);
/// How long retention must have retired nothing for a day to end: longer than it waits
/// between passes that find nothing (`--retention-every-ms 1000`).
const QUIET: Duration = Duration::from_millis(1500);
/// Clients reading at once.
const READERS: usize = 2;
/// The keep ages of the run with retention.
const KEEP: [&str; 6] = [
    "--keep-events",
    "1d",
    "--keep-tasks",
    "2d",
    "--keep-history",
    "3d",
];
/// The days whose sizes the report shows.
const SHOWN: [i64; 8] = [1, 2, 3, 4, 7, 14, 21, 30];
/// The scraper's token.
const METRICS_TOKEN: &str = "month-bench-metrics";

/// One read a client makes, timed.
struct Sample {
    /// When it began.
    at: Instant,
    /// How long it took.
    took: Duration,
}

/// What one month showed.
struct Month {
    /// Reads made while no day was being added.
    samples: Vec<Sample>,
    /// When retention was seen retiring: between two scrapes whose count grew.
    busy: Vec<(Instant, Instant)>,
    /// The database's size at the end of each day, in bytes.
    sizes: Vec<u64>,
    /// How long each day lasted: at least `WINDOW`, and with retention until it caught up.
    days: Vec<Duration>,
    /// Rows retention retired, in all.
    retired: f64,
    /// Rows left at the end: tasks, events, snapshots, history.
    left: [i64; 4],
}

/// A month on `db`, with retention or without.
async fn month(db: &TestDb, retention: bool, dir: &Path) -> Month {
    let start = Utc::now() - chrono::Duration::days(DAYS + 5);
    {
        let handle = Db::connect(&db.url).await.unwrap();
        let mut tx = handle.begin().await.unwrap();
        let spec = Spec {
            vms: VMS,
            past_snapshots_per_vm: 0,
            past: chrono::Duration::zero(),
            recent_snapshots_per_vm: 0,
            now: start,
        };
        let made = generate::fill(&mut tx.conn(), spec).await;
        tx.finish(made).await.unwrap();
    }
    let clock = dir.join("clock");
    set_clock(&clock, start);
    let token = process::token(&db.cli_url(), "gen-0", "OPERATOR");
    let mut flags = vec![
        "--rate-limit".to_owned(),
        "OPERATOR=none".to_owned(),
        "--metrics-token".to_owned(),
        METRICS_TOKEN.to_owned(),
        "--clock-file".to_owned(),
        clock.display().to_string(),
        "--retention-every-ms".to_owned(),
        "1000".to_owned(),
    ];
    let keep = if retention {
        KEEP.map(str::to_owned).to_vec()
    } else {
        [
            "--keep-events",
            "0",
            "--keep-tasks",
            "0",
            "--keep-history",
            "0",
        ]
        .map(str::to_owned)
        .to_vec()
    };
    flags.extend(keep);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = ServerProcess::start(&db.cli_url(), &dir.join("sim"), &flags);

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let readers: Vec<_> = (0..READERS)
        .map(|n| {
            let (url, token) = (server.url.clone(), token.clone());
            let (measuring, stop, samples) = (measuring.clone(), stop.clone(), samples.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut i = n;
                while !stop.load(Ordering::Relaxed) {
                    // A VM of project `gen-0` (VM `v` is in project `(v - 1) % 10 + 1`)
                    // among those that churn each day.
                    let vm =
                        (i as i64 * 7919) % (DAY_VMS / generate::PROJECTS) * generate::PROJECTS + 1;
                    let at = Instant::now();
                    read(&client, &url, &token, i % 4, vm).await;
                    if measuring.load(Ordering::Relaxed) {
                        samples.lock().await.push(Sample {
                            at,
                            took: at.elapsed(),
                        });
                    }
                    i += READERS;
                }
            })
        })
        .collect();
    // When retention last retired anything.
    let grew = Arc::new(std::sync::Mutex::new(Instant::now()));
    let scrapes = {
        let (url, stop, grew) = (server.url.clone(), stop.clone(), grew.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut seen: Vec<(Instant, f64)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let now = (Instant::now(), retired(&client, &url).await);
                if seen.last().is_some_and(|last| now.1 > last.1) {
                    *grew.lock().unwrap() = now.0;
                }
                seen.push(now);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            seen
        })
    };

    let handle = Db::connect(&db.url).await.unwrap();
    let mut sizes = Vec::new();
    let mut days = Vec::new();
    for day in 1..=DAYS {
        measuring.store(false, Ordering::Relaxed);
        let from = start + chrono::Duration::days(day - 1);
        let mut tx = handle.begin().await.unwrap();
        let made = generate::day(&mut tx.conn(), DAY_VMS, from).await;
        tx.finish(made).await.unwrap();
        set_clock(&clock, start + chrono::Duration::days(day));
        measuring.store(true, Ordering::Relaxed);
        let began = Instant::now();
        tokio::time::sleep(WINDOW).await;
        // The day lasts until retention has caught up (nothing retired for longer than
        // it waits between passes), as a real day gives it time to: a hang guard, not a
        // limit, ends a day that never settles.
        while retention
            && grew.lock().unwrap().elapsed() < QUIET
            && began.elapsed() < Duration::from_secs(300)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        days.push(began.elapsed());
        sizes.push(size(&db.url, &handle).await);
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    let seen = scrapes.await.unwrap();
    let busy = seen
        .windows(2)
        .filter(|w| w[1].1 > w[0].1)
        .map(|w| (w[0].0, w[1].0))
        .collect();
    let retired = seen.last().map_or(0.0, |s| s.1);
    let left = left(&handle).await;
    drop(server);
    let samples = std::mem::take(&mut *samples.lock().await);
    Month {
        samples,
        busy,
        sizes,
        days,
        retired,
        left,
    }
}

/// Writes `at` to the clock file, as one write (a reader never sees half of it).
fn set_clock(path: &Path, at: DateTime<Utc>) {
    let next = path.with_extension("next");
    std::fs::write(&next, at.to_rfc3339()).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// Read `which` (the tree, the task list, the dashboard's, the REST list) of VM `vm`.
async fn read(client: &reqwest::Client, base: &str, token: &str, which: usize, vm: i64) {
    let query = match which {
        0 => {
            "query($v: ID!) { vm(id: $v) { snapshotTree { id name state active
               children { id name state active children { id name state active } } } } }"
        }
        1 => {
            "query($v: ID!) { tasks(vmId: $v, first: 20) { edges { node { id kind state finishedAt } } } }"
        }
        2 => common::DASHBOARD_VM_QUERY,
        _ => {
            let body: Value = client
                .get(format!(
                    "{base}snapshot/?search[vm_id]={vm}&search[state]=4"
                ))
                .header("X-Auth-Token", token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert!(body["content"].is_array(), "{body}");
            return;
        }
    };
    let body: Value = client
        .post(format!("{base}graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": { "v": vm.to_string() } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(body.get("errors").is_none(), "{body}");
}

/// `snaptree_retired_rows_total`, all kinds.
async fn retired(client: &reqwest::Client, base: &str) -> f64 {
    let text = client
        .get(format!("{base}metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("snaptree_retired_rows_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[derive(diesel::QueryableByName)]
struct Number {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// The database's size on disk: SQLite's file and its write-ahead log, PostgreSQL's
/// database.
async fn size(url: &DatabaseUrl, handle: &Db) -> u64 {
    use diesel_async::RunQueryDsl;
    match url {
        DatabaseUrl::Sqlite(path) => {
            let wal = path.with_extension("db-wal");
            let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
            len(path) + len(&wal)
        }
        DatabaseUrl::Postgres(_) => {
            let mut pooled = handle.reader().await.unwrap();
            let Conn::Pg(c) = pooled.conn() else {
                unreachable!()
            };
            let size: Number =
                diesel::sql_query("SELECT pg_database_size(current_database())::bigint AS n")
                    .get_result(c)
                    .await
                    .unwrap();
            size.n as u64
        }
    }
}

/// Rows left in tasks, task_events, snapshots and snapshot_history.
async fn left(handle: &Db) -> [i64; 4] {
    use diesel_async::RunQueryDsl;
    let mut pooled = handle.reader().await.unwrap();
    let mut left = [0; 4];
    for (n, table) in ["tasks", "task_events", "snapshots", "snapshot_history"]
        .iter()
        .enumerate()
    {
        let sql = format!("SELECT count(*) AS n FROM {table}");
        let count: Number = match pooled.conn() {
            Conn::Sqlite(c) => diesel::sql_query(sql).get_result(c).await.unwrap(),
            Conn::Pg(c) => diesel::sql_query(sql).get_result(c).await.unwrap(),
        };
        left[n] = count.n;
    }
    left
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The sorted durations of `samples` that `keep` selects.
fn sorted(samples: &[Sample], keep: impl Fn(&Sample) -> bool) -> Vec<Duration> {
    let mut times: Vec<Duration> = samples.iter().filter(|s| keep(s)).map(|s| s.took).collect();
    times.sort();
    times
}

async fn run(backend: &str, off_db: TestDb, on_db: TestDb, dir: &Path) {
    let off_dir = dir.join(format!("{backend}-off"));
    let on_dir = dir.join(format!("{backend}-on"));
    std::fs::create_dir_all(off_dir.join("sim")).unwrap();
    std::fs::create_dir_all(on_dir.join("sim")).unwrap();
    let began = Instant::now();
    let off = month(&off_db, false, &off_dir).await;
    let on = month(&on_db, true, &on_dir).await;
    eprintln!(
        "{backend}: two months in {:.0} s",
        began.elapsed().as_secs_f64()
    );

    let without = sorted(&off.samples, |_| true);
    let during = sorted(&on.samples, |s| {
        on.busy.iter().any(|(a, b)| *a <= s.at && s.at <= *b)
    });
    let all_on = sorted(&on.samples, |_| true);
    println!(
        "\n{backend}: {VMS} VMs, {DAYS} days of {DAY_VMS} snapshots, {} tasks and {} events a day; {READERS} readers\n",
        2 * DAY_VMS,
        14 * DAY_VMS
    );
    println!("| reads | count | p50 | p99 |");
    println!("|---|---|---|---|");
    for (name, times) in [
        ("without retention", &without),
        ("with retention, while it retired", &during),
        ("with retention, all", &all_on),
    ] {
        println!(
            "| {name} | {} | {} | {} |",
            times.len(),
            ms(percentile(times, 0.5)),
            ms(percentile(times, 0.99))
        );
    }
    println!(
        "\np99 while retention retired / p99 without: {:.2}x (goal: at most 1.5x)",
        percentile(&during, 0.99).as_secs_f64() / percentile(&without, 0.99).as_secs_f64()
    );
    println!("\n| day | size without retention | size with retention |");
    println!("|---|---|---|");
    for day in SHOWN {
        let i = (day - 1) as usize;
        println!("| {day} | {} | {} |", mib(off.sizes[i]), mib(on.sizes[i]));
    }
    let longest = on.days.iter().max().copied().unwrap_or_default();
    let total: Duration = on.days.iter().sum();
    println!(
        "\nWith retention a day lasted {:.1} s on average, {:.1} s at most (until retention had caught up; {} s without).",
        total.as_secs_f64() / on.days.len().max(1) as f64,
        longest.as_secs_f64(),
        WINDOW.as_secs()
    );
    let few_days = off.sizes[2];
    let end = *on.sizes.last().unwrap();
    println!(
        "\nWith retention the month ends at {} ({:.2}x the size without retention after 3 days, {:.2}x its size after {DAYS}); \
         retention retired {:.0} rows; left: {} tasks, {} events, {} snapshots, {} history rows (without: {}, {}, {}, {}).",
        mib(end),
        end as f64 / few_days as f64,
        end as f64 / *off.sizes.last().unwrap() as f64,
        on.retired,
        on.left[0],
        on.left[1],
        on.left[2],
        on.left[3],
        off.left[0],
        off.left[1],
        off.left[2],
        off.left[3]
    );
}

fn main() {
    let runtime = snaptree::server::runtime().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("off")).unwrap();
        std::fs::create_dir_all(dir.path().join("on")).unwrap();
        let off = TestDb::sqlite(&dir.path().join("off"));
        let on = TestDb::sqlite(&dir.path().join("on"));
        run("SQLite", off, on, dir.path()).await;
        match std::env::var("SNAPTREE_BENCH_POSTGRES_URL") {
            Ok(server) => {
                let off = TestDb::postgres(&server).await;
                let on = TestDb::postgres(&server).await;
                run("PostgreSQL", off, on, dir.path()).await;
            }
            Err(_) => eprintln!("(set SNAPTREE_BENCH_POSTGRES_URL to measure PostgreSQL too)"),
        }
    });
}
