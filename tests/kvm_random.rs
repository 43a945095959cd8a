//! Random actions against real libvirt: after each one, snaptree's tree (through the
//! API), a small model of the rules of `snapshots.md` kept here, and libvirt's own view
//! (`virsh snapshot-list --tree`, `snapshot-current`) must agree. The seed is printed;
//! `SNAPTREE_KVM_SEED` replays a run.
//!
//! libvirtd is restarted whenever it dies, as systemd would (libvirt 9.0's daemon here
//! has been seen to segfault under such runs), and once on purpose while a task runs:
//! snaptree must ride through. (A file of its own: a restart would disturb other tests.)

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::libvirt::{self, TestDomain, virsh_patiently};
use common::{TestApp, test_robot};
use serde_json::json;
use snaptree::config::RobotConfig;

/// The rules of `snapshots.md`, for the snapshots that exist (not closed), by id.
#[derive(Debug, Default, PartialEq)]
struct Model {
    /// Id to (name, parent id).
    nodes: BTreeMap<String, (String, Option<String>)>,
    active: Option<String>,
}

impl Model {
    /// The new snapshot hangs from the active one and becomes active.
    fn create(&mut self, id: &str, name: &str) {
        let parent = self.active.clone();
        self.nodes.insert(id.to_owned(), (name.to_owned(), parent));
        self.active = Some(id.to_owned());
    }

    fn apply(&mut self, id: &str) {
        self.active = Some(id.to_owned());
    }

    /// Children move up to the parent; if the active snapshot goes, its parent (for a
    /// subtree: the deleted snapshot's parent) becomes active.
    fn delete(&mut self, id: &str, subtree: bool) {
        let parent = self.nodes[id].1.clone();
        let mut gone = vec![id.to_owned()];
        if subtree {
            let mut i = 0;
            while i < gone.len() {
                let up = gone[i].clone();
                gone.extend(
                    self.nodes
                        .iter()
                        .filter(|(_, (_, p))| p.as_deref() == Some(&up))
                        .map(|(n, _)| n.clone()),
                );
                i += 1;
            }
        } else {
            for (_, p) in self.nodes.values_mut() {
                if p.as_deref() == Some(id) {
                    p.clone_from(&parent);
                }
            }
        }
        for g in &gone {
            self.nodes.remove(g);
        }
        if self.active.as_ref().is_some_and(|a| gone.contains(a)) {
            self.active = parent;
        }
    }
}

/// A name users might type: spaces, quotes, shell and PowerShell syntax, non-ASCII.
fn random_name(rng: &mut fastrand::Rng, step: usize) -> String {
    const PARTS: &[&str] = &[
        "before upgrade",
        "it's",
        "\"quoted\"",
        "$(reboot)",
        "`id`",
        "; rm -rf /",
        "--children",
        "ünïcödé",
        "快照",
        "a/b\\c",
        "%s%n",
        "<tag>",
        "  padded  ",
    ];
    let mut name = String::new();
    for _ in 0..rng.usize(1..=3) {
        name.push_str(PARTS[rng.usize(..PARTS.len())]);
        name.push(' ');
    }
    // Unique among the VM's snapshots, and trimmed as snaptree stores it.
    format!("{}#{step}", name.trim_start())
}

/// Restarts libvirtd whenever it is gone, until dropped; counts the restarts.
struct Keeper {
    stop: Arc<AtomicBool>,
    restarts: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Keeper {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let restarts = Arc::new(AtomicUsize::new(0));
        let (s, r) = (Arc::clone(&stop), Arc::clone(&restarts));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let alive = Command::new("pgrep")
                    .args(["-x", "libvirtd"])
                    .stdout(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|st| st.success());
                if !alive {
                    eprintln!("libvirtd is gone; starting it again");
                    let _ = Command::new("libvirtd").arg("-d").status();
                    r.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Self {
            stop,
            restarts,
            thread: Some(thread),
        }
    }
}

impl Drop for Keeper {
    /// Stops watching, leaving libvirtd running however the test ended (the tests after
    /// this one need it).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if libvirt::virsh(&["version"]).is_err() {
            let _ = Command::new("libvirtd").arg("-d").status();
            let _ = virsh_patiently(&["version"]);
        }
    }
}

/// The VM as the API shows it, as a model: (id -> (name, parent)), active.
async fn api_model(app: &TestApp, token: &str, vm: &str) -> Model {
    let data = app
        .data(
            token,
            "query($v: ID!) { vm(id: $v) { activeSnapshot { id }
               snapshots { id name state parent { id } } } }",
            json!({ "v": vm }),
        )
        .await;
    let mut model = Model::default();
    for s in data["vm"]["snapshots"].as_array().unwrap() {
        assert_eq!(s["state"], "RUNNING", "{s}");
        model.nodes.insert(
            s["id"].as_str().unwrap().to_owned(),
            (
                s["name"].as_str().unwrap().to_owned(),
                s["parent"]["id"].as_str().map(str::to_owned),
            ),
        );
    }
    model.active = data["vm"]["activeSnapshot"]["id"]
        .as_str()
        .map(str::to_owned);
    model
}

/// Runs `actions` random actions on `domain`, checking all three views after each.
async fn run(app: &TestApp, op: &str, vm: &str, domain: &TestDomain, seed: u64, actions: usize) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut model = Model::default();
    for step in 0..actions {
        let ids: Vec<String> = model.nodes.keys().cloned().collect();
        let pick = |rng: &mut fastrand::Rng| ids[rng.usize(..ids.len())].clone();
        let roll = rng.u32(..100);
        let (what, task) = if ids.is_empty() || roll < 35 {
            let name = random_name(&mut rng, step);
            let (id, task) = app.create_snapshot(op, vm, &name).await;
            model.create(&id, name.trim());
            ("create", task)
        } else if roll < 55 {
            let id = pick(&mut rng);
            model.apply(&id);
            ("apply", app.apply(op, &id).await.1)
        } else if roll < 65 && model.active.is_some() {
            ("revert", app.revert(op, vm).await.1)
        } else if roll < 88 {
            let id = pick(&mut rng);
            model.delete(&id, false);
            ("delete", app.delete(op, &id, false).await.1)
        } else {
            let id = pick(&mut rng);
            model.delete(&id, true);
            ("delete subtree", app.delete(op, &id, true).await.1)
        };
        let done = app.finished(op, &task).await;
        assert_eq!(
            done["state"], "SUCCEEDED",
            "{} step {step} ({what}): {done:#}",
            domain.name
        );
        assert_eq!(
            api_model(app, op, vm).await,
            model,
            "{} step {step} ({what}): the API vs the model",
            domain.name
        );
        let (tree, active) = app.host_view(op, vm).await;
        assert_eq!(
            tree,
            domain.tree(),
            "{} step {step} ({what}): the API vs virsh snapshot-list --tree",
            domain.name
        );
        assert_eq!(
            active,
            domain.current(),
            "{} step {step} ({what}): the API vs virsh snapshot-current",
            domain.name
        );
    }
}

#[tokio::test]
async fn random_actions_agree_with_the_model_and_with_libvirt() {
    if !libvirt::available() {
        return;
    }
    const ACTIONS: usize = 100;
    let seed = std::env::var("SNAPTREE_KVM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("SNAPTREE_KVM_SEED={seed}");
    let keeper = Keeper::start();
    // One domain running (snapshots with memory), one shut off (disk only).
    let running = TestDomain::new(true);
    let off = TestDomain::new(false);
    // Retries as patient as the defaults: a restart of libvirtd takes a second or so.
    let app = TestApp::builder()
        .robot(RobotConfig {
            retry_base: Duration::from_millis(200),
            retry_cap: Duration::from_secs(2),
            max_attempts: 30,
            give_up_after: Duration::from_secs(60),
            ..test_robot()
        })
        .spawn()
        .await;
    let project = app.create_project("random").await;
    let op = app.create_token(&project, "OPERATOR").await;
    let host = app.create_host("kvm", "KVM", libvirt::URI, None).await;
    let vm_running = app.register_vm(&host, &project, &running.name).await;
    let vm_off = app.register_vm(&host, &project, &off.name).await;

    // libvirtd dies once while tasks run, as it does now and then by itself.
    let crash = async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        eprintln!("killing libvirtd");
        let _ = Command::new("pkill")
            .args(["-KILL", "-x", "libvirtd"])
            .status();
    };
    tokio::join!(
        run(&app, &op, &vm_running, &running, seed, ACTIONS),
        run(&app, &op, &vm_off, &off, seed ^ 1, ACTIONS),
        crash,
    );
    let restarts = keeper.restarts.load(Ordering::Relaxed);
    eprintln!(
        "{} actions, libvirtd restarted {restarts} times",
        2 * ACTIONS
    );
    assert!(restarts >= 1, "libvirtd was never restarted");
    drop(keeper);
    virsh_patiently(&["version"]).expect("libvirtd answers again");
}
