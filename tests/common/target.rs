//! A server under attack, for the tests of hostile tenants (`tests/abuse.rs`,
//! `tests/neighbours.rs`): a real `snaptree serve` process with its default limits (only
//! the timeouts shortened, so that a test does not wait minutes), a project of 8 VMs on
//! one simulated host, and a watchdog that kills the server past a memory ceiling, so
//! that an attack that gets through fails its test instead of exhausting the machine.
//!
//! Waits here are hang guards (a minute or more), never performance limits.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};

use super::process::{self, ServerProcess, Watchdog};
use super::ws::{Frame, Subscriber};
use super::{Api, TestDb};

/// The server is killed past this much resident memory (it idles at about 20 MiB).
pub const CEILING_KIB: u64 = 300 * 1024;
/// Timeouts shortened for the test: headers and bodies, idle connections,
/// connection_init, requests.
pub const FAST: &[&str] = &[
    "--header-timeout",
    "2",
    "--keep-alive",
    "3",
    "--ws-init-timeout",
    "2",
    "--request-timeout",
    "5",
    "--host-check-timeout",
    "2",
];
/// How long a test's client keeps an idle pooled connection: under the `--keep-alive`
/// of [`FAST`] (3 s), as a client that honours the server's `Keep-Alive: timeout=3`
/// does. Kept as long as reqwest's default (90 s), a request sent just as the server
/// closes the idle connection is lost (`IncompleteMessage`): the race a real server's
/// keep-alive (120 s by default) is longer than common clients' pools to avoid.
pub const CLIENT_IDLE: Duration = Duration::from_secs(1);

/// A client for a [`Target`], see [`CLIENT_IDLE`].
pub fn client() -> reqwest::ClientBuilder {
    reqwest::Client::builder().pool_idle_timeout(CLIENT_IDLE)
}

/// How long a hang guard waits.
pub const GUARD: Duration = Duration::from_secs(90);

/// A server under attack, with a project of 8 VMs on one simulated host.
pub struct Target {
    /// The server process under attack.
    pub server: ServerProcess,
    /// Kills it past [`CEILING_KIB`].
    pub watchdog: Watchdog,
    /// An ADMIN's client (no budget), for the checks that it still answers.
    pub api: Api,
    /// A VIEWER token of the project.
    pub viewer: String,
    /// An OPERATOR token of the project.
    pub operator: String,
    /// The project's id.
    pub project: String,
    /// Its 8 VMs' ids.
    pub vms: Vec<String>,
    /// The simulated host's state and the SQLite file.
    pub dir: tempfile::TempDir,
    /// The database (SQLite or PostgreSQL, as the run asks).
    pub db: TestDb,
}

impl Target {
    pub async fn start(extra: &[&str]) -> Self {
        Self::start_with(&[FAST, extra].concat()).await
    }

    /// A server with `flags` alone (no [`FAST`] timeouts but those it names).
    pub async fn start_with(flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::new(dir.path()).await;
        let admin = process::token(&db.cli_url(), "ops", "ADMIN");
        let server = ServerProcess::start(&db.cli_url(), &dir.path().join("sim"), flags);
        let watchdog = Watchdog::new(server.pid(), CEILING_KIB);
        let api = Api {
            client: client().build().unwrap(),
            ..Api::new(&server.url, admin)
        };
        let project = api.create_project("tenant").await;
        let viewer = api.create_token(&project, "VIEWER").await;
        let operator = api.create_token(&project, "OPERATOR").await;
        let host = api.create_host("sim", "SIMULATED", "sim://", None).await;
        let mut vms = Vec::new();
        for i in 0..8 {
            vms.push(api.create_vm(&host, &project, &format!("vm{i}")).await);
        }
        let target = Self {
            server,
            watchdog,
            api,
            viewer,
            operator,
            project,
            vms,
            dir,
            db,
        };
        target.snapshot(&target.vms[0], "before").await;
        target
    }

    /// Creates a snapshot with the ADMIN token (no budget) and waits for it.
    pub async fn snapshot(&self, vm: &str, name: &str) -> String {
        self.api.snapshot_built(&self.api.admin, vm, name).await
    }

    pub fn url(&self) -> String {
        self.api.url.clone()
    }

    /// The server's resident memory now, after warming up with a few requests.
    pub async fn baseline(&self) -> u64 {
        for _ in 0..20 {
            self.still_answers().await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.server.rss_kib()
    }

    /// Another client's simple query is answered.
    pub async fn still_answers(&self) {
        assert!(
            !self.watchdog.tripped(),
            "the server passed the memory ceiling"
        );
        let data = self
            .api
            .data(&self.api.admin, "{ vm(id: 1) { id name } }", json!({}))
            .await;
        assert_eq!(data["vm"]["id"], "1");
    }

    /// Waits until the server's memory is back within 20% of `before` (or fails).
    pub async fn settles(&self, before: u64, attack: &str) {
        let start = Instant::now();
        loop {
            assert!(
                !self.watchdog.tripped(),
                "{attack}: passed the memory ceiling"
            );
            let now = self.server.rss_kib();
            if now * 5 <= before * 6 {
                eprintln!(
                    "{attack}: {} KiB before, peak {} KiB, {now} KiB after",
                    before,
                    self.watchdog.peak_kib()
                );
                return;
            }
            assert!(
                start.elapsed() < GUARD,
                "{attack}: memory stayed at {now} KiB, {before} KiB before"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Waits (with a hang guard) for the server to close `socket`; its close code.
pub async fn closed(socket: &mut Subscriber) -> (u16, String) {
    let wait = async {
        loop {
            if let Frame::Closed(code, reason) = socket.next().await {
                return (code, reason);
            }
        }
    };
    tokio::time::timeout(GUARD, wait)
        .await
        .expect("the server closes the socket")
}

/// A connection to `addr` (`host:port`) from loopback address `local` (127.0.0.x): a
/// client of its own, for the server's caps per address.
pub async fn tcp_from(addr: &str, local: IpAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind((local, 0).into()).unwrap();
    let addr = tokio::net::lookup_host(addr).await.unwrap().next().unwrap();
    socket.connect(addr).await.unwrap()
}

/// The `n`th of the attackers' addresses: 127.0.0.(10 + n), never the checks' 127.0.0.1.
pub fn attacker(n: usize) -> IpAddr {
    IpAddr::from([127, 0, 0, 10 + (n % 200) as u8])
}

/// A stand-in for virsh's shell (`virsh -q -c URI`, fed one command line at a time) that
/// answers as libvirt does for a host of running VMs, except that `snapshot-list` of a VM
/// named `hung` never returns and of `slow*` takes a fifth of a second. Each command is
/// logged to `calls.log` beside it, each shell started to `shells.log`, and how many
/// commands of all its shells run at once to `concurrency.log`: a shell marks a command
/// busy from the moment it reads it until before any of its answer can be read, and only
/// live shells' marks count.
pub fn fake_virsh(dir: &Path) -> PathBuf {
    let path = dir.join("fake-virsh");
    std::fs::write(
        &path,
        format!(
            r#"#!/usr/bin/env python3
import os, shlex, sys, time
dir = {dir:?}
with open(os.path.join(dir, "shells.log"), "a") as log:
    log.write("%d\n" % os.getpid())
def alive(pid):
    try:
        return open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
for line in sys.stdin:
    words = shlex.split(line)
    if not words:
        continue
    with open(os.path.join(dir, "calls.log"), "a") as log:
        log.write(line)
    busy = os.path.join(dir, "busy.%d" % os.getpid())
    open(busy, "w").close()
    # Marks of shells that are gone (killed in the middle of a command) are not counted.
    with open(os.path.join(dir, "concurrency.log"), "a") as log:
        log.write("%d\n" % sum(n.startswith("busy.") and alive(n[5:]) for n in os.listdir(dir)))
    command, domain = words[0], (words[2] if len(words) > 2 else "")
    out = []
    if command == "version":
        out.append("Compiled against library: libvirt 9.0.0")
    elif command == "domstate":
        out.append("running")
    elif command == "dumpxml":
        # A BIOS guest: snaptree reads the firmware when a VM is registered.
        out.append("<domain type='kvm'><name>x</name><os><type>hvm</type></os></domain>")
    elif command == "snapshot-list" and domain == "hung":
        while True:
            time.sleep(60)
    elif command == "snapshot-list" and domain.startswith("slow"):
        time.sleep(0.2)
    elif command == "snapshot-current":
        out.append("error: domain '%s' has no current snapshot" % domain)
    elif command == "echo":
        out.append(" ".join(words[1:]))
    elif command not in ("list", "snapshot-list"):
        out.append("error: unknown command: '%s'" % command)
    # The command is over before snaptree can read a byte of its answer, however
    # Python buffers its output (PYTHONUNBUFFERED): a shell killed once it has answered
    # leaves no mark.
    os.remove(busy)
    sys.stdout.write("".join(line + "\n" for line in out))
    sys.stdout.flush()
"#,
            dir = dir.display().to_string()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}
