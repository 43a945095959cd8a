//! One lasting libvirt connection per KVM host, for real: locally (`qemu:///system`) and
//! over `qemu+ssh` to this machine's SSH server. The five actions still agree with virsh,
//! 100 actions open one connection, and a connection killed in the middle of work, a
//! restarted libvirtd or a restarted SSH server lose and double nothing.
//!
//! A file of its own, whose tests take turns: they kill and restart libvirtd and sshd,
//! which would break other tests running at the same time.
//!
//! Over SSH needs `SNAPTREE_TEST_SSH_KEY`, a key that `root@127.0.0.1` accepts (the host
//! already in known_hosts); `SNAPTREE_TEST_REQUIRE_SSH=1` (CI sets both) makes its absence
//! a failure. `SNAPTREE_TEST_SSHD` is the command that starts the SSH server again after
//! the restart test stops it; without it that part is skipped.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::libvirt::{self, Restart, TestDomain};
use common::{TestApp, connections_opened, test_robot};
use serde_json::json;
use snaptree::config::RobotConfig;

/// One test at a time in this file.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How snaptree reaches libvirt.
#[derive(Clone)]
enum Way {
    Local,
    /// `qemu+ssh://root@127.0.0.1/system`, with this key.
    Ssh(PathBuf),
}

impl Way {
    fn uri(&self) -> &'static str {
        match self {
            Way::Local => libvirt::URI,
            Way::Ssh(_) => "qemu+ssh://root@127.0.0.1/system",
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Way::Local => "local",
            Way::Ssh(_) => "ssh",
        }
    }
}

/// The ways this machine offers: none without libvirt, and SSH only with its key.
fn ways() -> Vec<Way> {
    if !libvirt::available() {
        return Vec::new();
    }
    let mut ways = vec![Way::Local];
    match std::env::var_os("SNAPTREE_TEST_SSH_KEY") {
        Some(key) => {
            let key = PathBuf::from(key);
            let uri = format!("{}?keyfile={}", Way::Ssh(key.clone()).uri(), key.display());
            let out = Command::new("virsh")
                .args(["-c", &uri, "version"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "SNAPTREE_TEST_SSH_KEY is set but virsh -c {uri} fails: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            ways.push(Way::Ssh(key));
        }
        None => {
            assert!(
                std::env::var("SNAPTREE_TEST_REQUIRE_SSH").as_deref() != Ok("1"),
                "SNAPTREE_TEST_REQUIRE_SSH=1 but SNAPTREE_TEST_SSH_KEY is not set"
            );
            eprintln!("skipped over SSH: SNAPTREE_TEST_SSH_KEY is not set");
        }
    }
    ways
}

/// A server whose robot waits out outages, with one KVM host reached `way` and one VM on it.
struct Setup {
    app: TestApp,
    op: String,
    vm: String,
    host: String,
    domain: TestDomain,
}

impl Setup {
    async fn new(way: &Way) -> Self {
        let domain = TestDomain::new(true);
        let robot = RobotConfig {
            max_attempts: 1000,
            retry_cap: Duration::from_millis(300),
            give_up_after: Duration::from_secs(300),
            ..test_robot()
        };
        let key = match way {
            Way::Ssh(key) => Some(key.clone()),
            Way::Local => None,
        };
        let app = TestApp::builder()
            .robot(robot)
            .drivers(|d| d.ssh_identity = key)
            .spawn()
            .await;
        let project = app.create_project(way.name()).await;
        let op = app.create_token(&project, "OPERATOR").await;
        let host = format!("{}-kvm", way.name());
        let host_id = app.create_host(&host, "KVM", way.uri(), None).await;
        let vm = app.register_vm(&host_id, &project, &domain.name).await;
        Self {
            app,
            op,
            vm,
            host,
            domain,
        }
    }

    /// Runs an action to its end, which must be success.
    async fn succeeds(&self, (snapshot, task): (String, String)) -> String {
        let done = self.app.finished(&self.op, &task).await;
        assert_eq!(done["state"], "SUCCEEDED", "{done:#}");
        snapshot
    }

    async fn create(&self, name: &str) -> String {
        let asked = self.app.create_snapshot(&self.op, &self.vm, name).await;
        self.succeeds(asked).await
    }

    async fn apply(&self, snapshot: &str) {
        self.succeeds(self.app.apply(&self.op, snapshot).await)
            .await;
    }

    async fn delete(&self, snapshot: &str, subtree: bool) {
        self.succeeds(self.app.delete(&self.op, snapshot, subtree).await)
            .await;
    }

    /// snaptree's tree and active snapshot are virsh's.
    async fn agrees(&self) {
        let (tree, active) = self.app.host_view(&self.op, &self.vm).await;
        assert_eq!(
            tree,
            self.domain.tree(),
            "snaptree's tree vs virsh snapshot-list --tree"
        );
        assert_eq!(
            active,
            self.domain.current(),
            "active snapshot vs virsh snapshot-current"
        );
    }

    async fn connections(&self) -> f64 {
        connections_opened(&self.app, &self.host).await
    }

    /// Creates a snapshot, returns to `base`, deletes the new one: three actions, after
    /// which the tree is what it was.
    async fn round(&self, base: &str, name: &str) {
        let new = self.create(name).await;
        self.apply(base).await;
        self.delete(&new, false).await;
    }
}

/// This process's virsh shells (the in-process server's).
fn virsh_shells() -> Vec<u32> {
    children_of(std::process::id(), "virsh")
}

fn children_of(parent: u32, name: &str) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &parent.to_string(), "-x", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn kill(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
}

#[tokio::test]
async fn a_hundred_actions_open_one_connection_and_agree_with_virsh() {
    let _turn = TURN.lock().await;
    for way in ways() {
        let s = Setup::new(&way).await;
        // The five actions, each checked against the host.
        let a = s.create("a").await;
        s.agrees().await;
        let b = s.create("b").await;
        s.agrees().await;
        s.apply(&a).await;
        s.agrees().await;
        assert_eq!(
            libvirt::virsh(&["domstate", &s.domain.name])
                .unwrap()
                .trim(),
            "running"
        );
        s.create("c").await;
        s.agrees().await;
        s.succeeds(s.app.revert(&s.op, &s.vm).await).await;
        s.agrees().await;
        s.delete(&b, false).await;
        s.agrees().await;
        s.delete(&a, true).await;
        s.agrees().await;
        assert!(s.domain.tree().is_empty());

        // Then 94 more (102 in all, with queries between them): still the one connection.
        // A revert of the running domain takes seconds (QEMU reloads its memory), so
        // most rounds create and delete, and every eighth returns to `base` between.
        let base = s.create("base").await;
        for i in 0..44 {
            let new = s.create(&format!("x{i}")).await;
            if i % 8 == 0 {
                s.apply(&base).await;
            }
            s.delete(&new, false).await;
            s.agrees().await;
        }
        assert_eq!(
            s.connections().await,
            1.0,
            "{}: connections opened",
            way.uri()
        );
        assert_eq!(virsh_shells().len(), 1, "{}: virsh shells", way.uri());
    }
}

#[tokio::test]
async fn a_connection_killed_in_the_middle_of_work_loses_and_doubles_nothing() {
    let _turn = TURN.lock().await;
    for way in ways() {
        let s = Setup::new(&way).await;
        let base = s.create("base").await;
        let mut kills = 0;
        for i in 0..12 {
            // Each kind of action, with the connection killed while its task runs: virsh
            // itself, or (over SSH) the ssh under it.
            let (snapshot, task) = match i % 3 {
                0 => s.app.create_snapshot(&s.op, &s.vm, &format!("k{i}")).await,
                1 => s.app.apply(&s.op, &base).await,
                _ => {
                    let last = s.app.tree(&s.op, &s.vm).await.pop().unwrap().0;
                    s.app.delete(&s.op, &last, false).await
                }
            };
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..30))).await;
            for shell in virsh_shells() {
                let victims = match way {
                    Way::Ssh(_) if i % 2 == 1 => children_of(shell, "ssh"),
                    _ => vec![shell],
                };
                for pid in victims {
                    kill(pid);
                    kills += 1;
                }
            }
            s.succeeds((snapshot, task)).await;
            s.agrees().await;
        }
        assert!(kills > 0, "the connection was killed");
        assert!(
            s.connections().await > 1.0,
            "{}: the killed connections were replaced",
            way.uri()
        );
        // And it lasts again (after the first call finds the last one killed).
        s.round(&base, "settle").await;
        let before = s.connections().await;
        s.round(&base, "after").await;
        s.agrees().await;
        assert_eq!(s.connections().await, before);
    }
}

#[tokio::test]
async fn restarting_libvirtd_or_the_ssh_server_in_the_middle_of_work_loses_and_doubles_nothing() {
    let _turn = TURN.lock().await;
    for way in ways() {
        let s = Setup::new(&way).await;
        let base = s.create("base").await;
        let _restart = Restart;
        // libvirtd goes away while a create runs and comes back; then once more,
        // right away, during an apply.
        let created = s.app.create_snapshot(&s.op, &s.vm, "during").await;
        libvirt::stop().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        libvirt::start().await;
        let during = s.succeeds(created).await;
        s.agrees().await;
        let applied = s.app.apply(&s.op, &base).await;
        libvirt::stop().await;
        libvirt::start().await;
        s.succeeds(applied).await;
        s.agrees().await;
        s.delete(&during, false).await;
        s.agrees().await;

        if let Way::Ssh(_) = way {
            let Some(sshd) = std::env::var("SNAPTREE_TEST_SSHD").ok() else {
                eprintln!("skipped the SSH server's restart: SNAPTREE_TEST_SSHD is not set");
                continue;
            };
            let _sshd = Sshd(sshd);
            let created = s.app.create_snapshot(&s.op, &s.vm, "sshd").await;
            tokio::task::spawn_blocking(stop_sshd).await.unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
            let command = _sshd.0.clone();
            tokio::task::spawn_blocking(move || start_sshd(&command))
                .await
                .unwrap();
            let new = s.succeeds(created).await;
            s.agrees().await;
            s.delete(&new, false).await;
            s.agrees().await;
        }
        // The host is reachable again, by its health.
        let data = s
            .app
            .data(
                &s.app.admin,
                "{ hosts { health { reachable } } }",
                json!({}),
            )
            .await;
        assert_eq!(data["hosts"][0]["health"]["reachable"], true, "{data:#}");
    }
}

/// Starts the SSH server again however the test ends.
struct Sshd(String);

impl Drop for Sshd {
    fn drop(&mut self) {
        start_sshd(&self.0);
    }
}

/// Stops every sshd: the listener and the sessions it serves (virsh's among them).
fn stop_sshd() {
    let _ = Command::new("pkill").args(["-KILL", "-x", "sshd"]).status();
    for _ in 0..100 {
        if std::net::TcpStream::connect("127.0.0.1:22").is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("sshd did not stop");
}

fn start_sshd(command: &str) {
    if std::net::TcpStream::connect("127.0.0.1:22").is_ok() {
        return;
    }
    let started = Command::new("sh").args(["-c", command]).status().unwrap();
    assert!(started.success(), "{command} failed");
    for _ in 0..100 {
        if std::net::TcpStream::connect("127.0.0.1:22").is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("sshd did not come back");
}
