//! `cargo bench --bench kvm`: each action through snaptree, as a client sees it (from
//! sending the mutation over HTTP to the task's final event on a WebSocket subscription,
//! to a `snaptree serve` process of its own), against the same virsh command run by hand
//! (a new `virsh -c URI` per command, the driver's arguments), on the same running QEMU
//! domain, interleaved: a create, an apply (`snapshot-revert`) and a delete by hand, then
//! the same three through snaptree, round after round.
//!
//! On `qemu:///system`, and over `qemu+ssh://root@127.0.0.1/system` when
//! `SNAPTREE_TEST_SSH_KEY` names a key root@127.0.0.1 accepts (`.ci/run` makes one).
//! Needs libvirt (`.ci/run` shows how to install and start it). SQLite, or PostgreSQL with
//! `SNAPTREE_BENCH_POSTGRES_URL`. Prints a Markdown table.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::libvirt::{self, TestDomain};
use common::process::{self, ServerProcess};
use common::ws::{Frame, Subscriber};
use common::{Api, TestDb};
use serde_json::json;

/// Rounds of the three actions each way.
const ROUNDS: usize = 15;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// One virsh command, by hand: a new virsh, a new connection.
fn by_hand(uri: &str, args: &[&str]) -> Duration {
    let began = Instant::now();
    let out = Command::new("virsh")
        .args(["-q", "-c", uri])
        .args(args)
        .output()
        .unwrap();
    let took = began.elapsed();
    assert!(
        out.status.success(),
        "virsh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// A client of the server: HTTP for mutations, and one `events` subscription.
struct Client {
    api: Api,
    socket: Subscriber,
}

impl Client {
    /// Runs `mutation` and waits for its task's final event: the time a client sees, and
    /// the snapshot's id.
    async fn act(&mut self, mutation: &str, variables: serde_json::Value) -> (Duration, String) {
        let began = Instant::now();
        let data = self.api.data(&self.api.admin, mutation, variables).await;
        let payload = data.as_object().unwrap().values().next().unwrap();
        let task = payload["task"]["id"].as_str().unwrap().to_owned();
        loop {
            let Frame::Next(_, event) = self.socket.next().await else {
                panic!("the subscription ended")
            };
            let event = &event["data"]["events"];
            if event["task"]["id"] == task.as_str()
                && !matches!(event["state"].as_str(), Some("QUEUED" | "RUNNING"))
            {
                assert_eq!(event["state"], "SUCCEEDED", "{event:#}");
                break;
            }
        }
        let snapshot = payload["snapshot"]["id"].as_str().unwrap().to_owned();
        (began.elapsed(), snapshot)
    }
}

/// The medians of (by hand, through snaptree) for create, apply and delete on `uri`.
async fn measure(uri: &str, key: Option<&PathBuf>) -> [(Duration, Duration); 3] {
    let domain = TestDomain::new(true);
    let dir = tempfile::tempdir().unwrap();
    let db = match std::env::var("SNAPTREE_BENCH_POSTGRES_URL") {
        Ok(server) => TestDb::postgres(&server).await,
        Err(_) => TestDb::sqlite(dir.path()),
    };
    let admin = process::token(&db.cli_url(), "bench", "ADMIN");
    let key_flag = key.map(|k| k.to_string_lossy().into_owned());
    let mut flags = Vec::new();
    if let Some(key) = &key_flag {
        flags.extend(["--ssh-identity", key.as_str()]);
    }
    let server = ServerProcess::start(&db.cli_url(), &dir.path().join("sim"), &flags);
    let api = Api::new(&server.url, admin.clone());
    let project = api.create_project("tenant").await;
    let host = api.create_host("kvm", "KVM", uri, None).await;
    let vm = api.register_vm(&host, &project, &domain.name).await;
    let mut socket = Subscriber::connect(&api.url, Some(&admin)).await.unwrap();
    socket
        .subscribe(
            "e",
            "subscription { events { state task { id } } }",
            json!({}),
        )
        .await;
    let mut client = Client { api, socket };
    // virsh by hand reaches the host as snaptree does, with the same key.
    let hand_uri = match key {
        Some(key) => format!("{uri}?keyfile={}", key.display()),
        None => uri.to_owned(),
    };
    let d = domain.name.as_str();
    let mut samples: [(Vec<Duration>, Vec<Duration>); 3] = Default::default();
    for i in 0..ROUNDS {
        let hand = format!("hand{i}");
        samples[0].0.push(by_hand(
            &hand_uri,
            &[
                "snapshot-create-as",
                "--domain",
                d,
                "--name",
                &hand,
                "--atomic",
            ],
        ));
        samples[1].0.push(by_hand(
            &hand_uri,
            &["snapshot-revert", "--domain", d, "--snapshotname", &hand],
        ));
        samples[2].0.push(by_hand(
            &hand_uri,
            &["snapshot-delete", "--domain", d, "--snapshotname", &hand],
        ));

        let (took, snapshot) = client
            .act(
                "mutation($v: ID!, $n: String!) { createSnapshot(vmId: $v, name: $n) { snapshot { id } task { id } } }",
                json!({ "v": vm, "n": format!("snaptree{i}") }),
            )
            .await;
        samples[0].1.push(took);
        let (took, _) = client
            .act(
                "mutation($s: ID!) { applySnapshot(id: $s) { snapshot { id } task { id } } }",
                json!({ "s": snapshot }),
            )
            .await;
        samples[1].1.push(took);
        let (took, _) = client
            .act(
                "mutation($s: ID!) { deleteSnapshot(id: $s) { snapshot { id } task { id } } }",
                json!({ "s": snapshot }),
            )
            .await;
        samples[2].1.push(took);
    }
    drop(server);
    samples.map(|(hand, through)| (median(hand), median(through)))
}

fn main() {
    if !libvirt::available() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let key = std::env::var_os("SNAPTREE_TEST_SSH_KEY").map(PathBuf::from);
    let mut ways = vec![(libvirt::URI, None)];
    if let Some(key) = &key {
        ways.push(("qemu+ssh://root@127.0.0.1/system", Some(key)));
    }
    println!(
        "| host | action | by hand (median of {ROUNDS}) | through snaptree, mutation to final event (median of {ROUNDS}) | ratio |"
    );
    println!("|---|---|---|---|---|");
    for (uri, key) in ways {
        let medians = runtime.block_on(measure(uri, key));
        for (action, (hand, through)) in ["create", "apply", "delete"].iter().zip(medians) {
            println!(
                "| `{uri}` | {action} | {} | {} | {:.2} |",
                ms(hand),
                ms(through),
                through.as_secs_f64() / hand.as_secs_f64()
            );
        }
    }
}
