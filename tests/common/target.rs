//! A server under attack, for the tests of hostile tenants (`tests/abuse.rs`,
//! `tests/neighbours.rs`): a real `snaptree serve` process with its default limits (only
//! the timeouts shortened, so that a test does not wait minutes), a project of 8 VMs on
//! one simulated host, and a watchdog that kills the server past a memory ceiling, so
//! that an attack that gets through fails its test instead of exhausting the machine.
//!
//! Waits here are hang guards (a minute or more), never performance limits.

use std::net::IpAddr;
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
        let api = Api::new(&server.url, admin);
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
