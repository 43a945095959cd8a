//! `cargo bench --bench reads`: how fast snaptree serves a snapshot tree against how fast
//! plain async-graphql on axum serves the same shape from memory (`ag-ceiling`, in
//! `../shared/anchors`, or where `SNAPTREE_AG_CEILING` says), side by side in one run,
//! with one load generator: `CLIENTS` keep-alive connections asking as fast as they are
//! answered, for `WINDOW` each, alternating between the two servers.
//!
//! The tree is a VM's 57 snapshots (a root, 7 children, 49 grandchildren), asked for
//! with the same four fields on every level. snaptree is the release `snaptree serve`
//! on SQLite, queried with an ADMIN token (no budget), as its own process.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::Api;
use common::process::{self, ServerProcess};
use serde_json::{Value, json};

/// Concurrent connections of the load generator.
const CLIENTS: usize = 16;
/// How long each measurement runs.
const WINDOW: Duration = Duration::from_secs(5);
/// Rounds of (baseline, snaptree).
const ROUNDS: usize = 3;

const FIELDS: &str = "id name state active";

/// Builds the baseline server and starts it on `port`.
fn baseline(port: u16) -> Child {
    let dir = std::env::var("SNAPTREE_AG_CEILING")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/anchors/ag-ceiling")
        });
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ag-ceiling");
    let built = Command::new("cargo")
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("cargo runs");
    assert!(built.success(), "the baseline server builds");
    Command::new(target.join("release/ag-ceiling"))
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .spawn()
        .expect("the baseline server starts")
}

/// Requests per second that `CLIENTS` connections get from `url` for `query`.
async fn load(url: &str, token: Option<&str>, query: &str) -> f64 {
    let body = json!({ "query": query });
    let done = Arc::new(AtomicU64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let clients = (0..CLIENTS).map(|_| {
        let (url, body, done, running) =
            (url.to_owned(), body.clone(), done.clone(), running.clone());
        let token = token.map(str::to_owned);
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            while running.load(Ordering::Relaxed) {
                let mut request = client.post(&url).json(&body);
                if let Some(token) = &token {
                    request = request.bearer_auth(token);
                }
                let answer: Value = request.send().await.unwrap().json().await.unwrap();
                assert!(answer.get("errors").is_none(), "{answer}");
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
    });
    let clients: Vec<_> = clients.collect();
    let start = Instant::now();
    tokio::time::sleep(WINDOW).await;
    running.store(false, Ordering::Relaxed);
    let counted = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    for client in clients {
        client.await.unwrap();
    }
    counted as f64 / elapsed.as_secs_f64()
}

fn main() {
    let runtime = snaptree::server::runtime().unwrap();
    runtime.block_on(async {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut ceiling = baseline(port);
        let ceiling_url = format!("http://127.0.0.1:{port}/graphql");

        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}/bench.db", dir.path().display());
        let admin = process::token(&db, "ops", "ADMIN");
        let server = ServerProcess::start(&db, &dir.path().join("sim"), &[]);
        let api = Api::new(&server.url, admin.clone());
        let project = api.create_project("p").await;
        let host = api.create_host("sim", "SIMULATED", "sim://", None).await;
        let vm = api.create_vm(&host, &project, "tree").await;
        // A root, 7 children under it, 7 grandchildren under each child.
        let root = api.snapshot_built(&admin, &vm, "root").await;
        for c in 0..7 {
            let (_, task) = api.apply(&admin, &root).await;
            api.finished(&admin, &task).await;
            let child = api.snapshot_built(&admin, &vm, &format!("c{c}")).await;
            for g in 0..7 {
                let (_, task) = api.apply(&admin, &child).await;
                api.finished(&admin, &task).await;
                api.snapshot_built(&admin, &vm, &format!("g{c}{g}")).await;
            }
        }
        let ours = format!(
            "{{ vm(id: {vm}) {{ snapshotTree {{ {FIELDS} children {{ {FIELDS} children {{ {FIELDS} }} }} }} }} }}"
        );
        let theirs = format!(
            "{{ tree(depth: 3, width: 7) {{ {FIELDS} children {{ {FIELDS} children {{ {FIELDS} }} }} }} }}"
        );
        let check = api.data(&admin, &ours, json!({})).await;
        let roots = check["vm"]["snapshotTree"].as_array().unwrap();
        let count = roots.len()
            + roots
                .iter()
                .map(|r| {
                    let children = r["children"].as_array().unwrap();
                    children.len()
                        + children
                            .iter()
                            .map(|c| c["children"].as_array().unwrap().len())
                            .sum::<usize>()
                })
                .sum::<usize>();
        assert_eq!(count, 57, "the tree has 57 snapshots");
        // Warm both up.
        load(&ceiling_url, None, &theirs).await;
        load(&api.url, Some(&admin), &ours).await;
        let (mut base, mut snap) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            base.push(load(&ceiling_url, None, &theirs).await);
            snap.push(load(&api.url, Some(&admin), &ours).await);
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (base, snap) = (mean(&base), mean(&snap));
        println!(
            "| 57-snapshot tree, {CLIENTS} connections | {base:.0} requests/s | {snap:.0} requests/s | {:.2} |",
            snap / base
        );
        let _ = ceiling.kill();
        let _ = ceiling.wait();
        drop(server);
    });
}
