//! Settings shared by the commands: where the database is, where the simulated hosts
//! keep their state, how the robot behaves.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::domain::TaskKind;

/// Where the database lives.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite file (`sqlite://snaptree.db`, `sqlite:///var/lib/snaptree.db` or a path).
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://user@host/db`).
    Postgres(String),
}

impl FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(Self::Postgres(s.to_owned()));
        }
        let path = s
            .strip_prefix("sqlite://")
            .or_else(|| s.strip_prefix("sqlite:"))
            .unwrap_or(s);
        if path.is_empty() || path.contains("://") {
            return Err(format!(
                "unsupported database URL {:?}: use sqlite://FILE or postgres://USER@HOST/DB",
                Self::redact(s)
            ));
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }
}

impl DatabaseUrl {
    /// `url` without its password, for logs and messages.
    fn redact(url: &str) -> String {
        match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let userinfo = &url[scheme + 3..at];
                let user = userinfo.split(':').next().unwrap_or("");
                let hidden = if userinfo.contains(':') { ":***" } else { "" };
                format!("{}{user}{hidden}{}", &url[..scheme + 3], &url[at..])
            }
            _ => url.to_owned(),
        }
    }
}

/// Shows the URL without its password: safe to log.
impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Postgres(url) => f.write_str(&Self::redact(url)),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// How the robot runs tasks.
#[derive(Clone, Debug)]
pub struct RobotConfig {
    /// Tasks run at once (each for a different VM), over all the robot's hosts; each
    /// host's own `max_concurrent_tasks` still holds. Workers wait on the host, not on
    /// a core, so they are many: a robot with few would leave queued tasks to claims of
    /// their own where a free worker takes them as they are queued.
    pub workers: usize,
    /// How long a claim holds without a heartbeat; a dead robot's tasks are taken up
    /// again after this.
    pub lease: Duration,
    /// The slow poll that backs up the immediate wake-up.
    pub poll: Duration,
    /// First retry delay; doubles per attempt, with jitter.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_cap: Duration,
    /// Attempts before a transient failure counts as final.
    pub max_attempts: i32,
    /// A task that keeps failing transiently gives up after this long.
    pub give_up_after: Duration,
    /// Longest single driver call, per kind of task; a hung call fails the attempt.
    pub timeouts: Timeouts,
    /// Only run tasks of these hosts (by name); all when empty.
    pub hosts: Vec<String>,
    /// When stopping, how long running tasks may take to finish; what is still running
    /// then goes back to the queue at once.
    pub shutdown_grace: Duration,
    /// How often the snapshot policies' runner looks at the clock.
    pub policy_tick: Duration,
}

impl Default for RobotConfig {
    fn default() -> Self {
        Self {
            workers: 64,
            lease: Duration::from_secs(10),
            poll: Duration::from_secs(2),
            retry_base: Duration::from_millis(500),
            retry_cap: Duration::from_secs(15),
            max_attempts: 8,
            give_up_after: Duration::from_secs(60),
            timeouts: Timeouts::default(),
            hosts: Vec::new(),
            shutdown_grace: Duration::from_secs(30),
            policy_tick: Duration::from_millis(500),
        }
    }
}

/// How long finished work is kept before retention retires it, and where retired rows go
/// first. Every process that shares the database runs it (`service::retention`).
#[derive(Clone, Debug)]
pub struct Retention {
    /// Ended tasks, with their events and policy runs, counted from their end (`None`:
    /// for ever).
    pub tasks: Option<Duration>,
    /// Events of ended tasks, counted from the event: a task's progress steps, which
    /// matter least once it has ended.
    pub events: Option<Duration>,
    /// Closed snapshots and their history (who did what to which snapshot, when), counted
    /// from the close: what auditors ask for, kept longest. An open snapshot's history is
    /// kept for as long as it is open.
    pub history: Option<Duration>,
    /// A directory the retired rows are written to first, as gzipped JSON lines (one file
    /// per kind, day and process); none: they are dropped.
    pub archive: Option<PathBuf>,
    /// How long a pass waits after one that found nothing more to retire.
    pub every: Duration,
    /// Rows per statement: small, so that a pass never holds SQLite's one writer for
    /// long, and the API and the robot go on between batches.
    pub batch: i64,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        Self {
            tasks: Some(Duration::from_secs(90 * DAY)),
            events: Some(Duration::from_secs(14 * DAY)),
            history: Some(Duration::from_secs(400 * DAY)),
            archive: None,
            every: Duration::from_secs(10),
            batch: 500,
        }
    }
}

/// How long one driver call of each kind of task may take.
#[derive(Clone, Debug)]
pub struct Timeouts {
    /// A create (BUILD) call.
    pub build: Duration,
    /// An apply or revert (UPDATE) call, an apply's save first included. Applying restarts
    /// the VM on Hyper-V and restarts QEMU on KVM: the slowest.
    pub update: Duration,
    /// A delete (SCRUB) call; also bounds the host listing after a failure or cancel, and the
    /// undo of a cancelled create.
    pub scrub: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            build: Duration::from_secs(300),
            update: Duration::from_secs(600),
            scrub: Duration::from_secs(300),
        }
    }
}

impl Timeouts {
    pub fn of(&self, kind: TaskKind) -> Duration {
        match kind {
            TaskKind::Build => self.build,
            TaskKind::Update => self.update,
            TaskKind::Scrub => self.scrub,
        }
    }

    /// The same limit for every kind.
    pub fn all(limit: Duration) -> Self {
        Self {
            build: limit,
            update: limit,
            scrub: limit,
        }
    }
}

/// How this process reaches hosts. Connection secrets (key files) are configuration,
/// never API data.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// Where simulated hosts keep their state, a directory per host.
    pub sim_dir: PathBuf,
    /// libvirt's command line client, for KVM hosts.
    pub virsh: PathBuf,
    /// The SSH client for Hyper-V hosts (OpenSSH options; tests put a stand-in here).
    pub ssh: PathBuf,
    /// The private key for SSH to hosts (Hyper-V, and KVM's `qemu+ssh`); the SSH
    /// client's defaults when absent.
    pub ssh_identity: Option<PathBuf>,
    /// Scripts one Hyper-V PowerShell session runs before a new one replaces it.
    pub scripts_per_session: u32,
}

impl DriverConfig {
    /// The defaults, with simulated hosts' state under `sim_dir`.
    pub fn new(sim_dir: PathBuf) -> Self {
        Self {
            sim_dir,
            virsh: "virsh".into(),
            ssh: "ssh".into(),
            ssh_identity: None,
            scripts_per_session: 1000,
        }
    }
}

/// What one request, connection and token may cost: the limits that keep one tenant from
/// slowing the service down for the others. Every transport enforces the same ones, each
/// in one place (`graphql::guard` for operations, `http` for connections,
/// `service::throttle` for budgets, `service::sessions` for sockets).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest operation text, in bytes.
    pub max_query_bytes: usize,
    /// Deepest nesting of fields (fragments expanded; a fragment adds no level).
    pub max_depth: usize,
    /// Highest cost of one operation, computed before it runs (`graphql::cost`): every
    /// field counts once per object it is resolved on, lists by their page size.
    pub max_cost: u64,
    /// Most objects one operation may return, computed the same way.
    pub max_nodes: u64,
    /// Most non-closed snapshots a VM may have, whatever its host allows: what bounds a
    /// snapshot tree, and therefore the cost of walking one.
    pub snapshots_per_vm: u32,
    /// Age past which a snapshot is flagged stale (not a limit: nothing is refused or
    /// deleted; the API and the dashboard say so).
    pub stale_after: Duration,
    /// Longest a query or mutation may run; past it, it is cancelled and answered
    /// `TIMEOUT`.
    pub request_timeout: Duration,
    /// Longest a client may take to send a request's headers (from the connection's
    /// opening or the request's first byte), and then its body.
    pub header_timeout: Duration,
    /// How long a connection may stay idle between requests: longer than clients keep
    /// pooled connections, so that the client ends it (`http::listener`).
    pub keep_alive: Duration,
    /// Most connections open at once (WebSockets included); past it a new one is
    /// refused with 503 (`http::listener`).
    pub max_connections: usize,
    /// Most connections open at once from one address. Behind a reverse proxy every
    /// client has the proxy's address: raise it there, and limit at the proxy.
    pub connections_per_peer: usize,
    /// Failed authentications one address may make per second (bursts of three times
    /// that); past them its requests are refused `RATE_LIMITED` before any token is
    /// looked up.
    pub failed_logins_per_peer: u32,
    /// Operations refused as too complex one token may send per second (bursts of three
    /// times that); past them its operations are refused `RATE_LIMITED` before they are
    /// parsed, for three seconds.
    pub refused_per_token: u32,
    /// Longest a WebSocket may stay open before its `connection_init` (closed with 4408).
    pub ws_init_timeout: Duration,
    /// How often a WebSocket is pinged; a client that answers nothing for three
    /// intervals is gone, and its connection is closed.
    pub ws_keepalive: Duration,
    /// Most operations running at once on one WebSocket.
    pub subscriptions_per_socket: usize,
    /// Most WebSockets one token may hold open (ADMIN tokens: no limit).
    pub sockets_per_token: usize,
    /// Most host operations running at once against one host, for queries and the robot
    /// together.
    pub host_calls_per_host: usize,
    /// Longest `createHost` waits for a new host to answer.
    pub host_check_timeout: Duration,
    /// Request and cost budgets per role.
    pub rates: RateLimits,
    /// How long a new OPERATOR or VIEWER token is accepted when `createToken` names no
    /// end; `None`: until revoked.
    pub token_lifetime: Option<Duration>,
    /// The only documents operations may run, by their SHA-256 in hex
    /// (`--trusted-documents`); `None`: any document within the limits.
    pub trusted_documents: Option<std::sync::Arc<std::collections::HashMap<String, String>>>,
}

/// The documents of an Apollo persisted query manifest (`{"format":
/// "apollo-persisted-query-manifest", "version": 1, "operations": [{"id", "body", ...}]}`),
/// by id; each id must be its body's SHA-256.
pub fn trusted_documents(
    manifest: &str,
) -> Result<std::collections::HashMap<String, String>, String> {
    use sha2::Digest;
    let manifest: serde_json::Value =
        serde_json::from_str(manifest).map_err(|e| format!("not JSON: {e}"))?;
    if manifest["format"] != "apollo-persisted-query-manifest" || manifest["version"] != 1 {
        return Err("not an Apollo persisted query manifest, version 1".into());
    }
    let operations = manifest["operations"]
        .as_array()
        .ok_or("it lists no operations")?;
    let mut documents = std::collections::HashMap::new();
    for op in operations {
        let (Some(id), Some(body)) = (op["id"].as_str(), op["body"].as_str()) else {
            return Err("an operation lacks its id or its body".into());
        };
        if hex::encode(sha2::Sha256::digest(body.as_bytes())) != id {
            return Err(format!("operation {id}'s body does not have that SHA-256"));
        }
        documents.insert(id.to_owned(), body.to_owned());
    }
    Ok(documents)
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_query_bytes: 32 * 1024,
            max_depth: 100,
            max_cost: 50_000,
            max_nodes: 20_000,
            snapshots_per_vm: 100,
            stale_after: Duration::from_secs(72 * 3600),
            request_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(120),
            max_connections: 10_000,
            connections_per_peer: 256,
            failed_logins_per_peer: 10,
            refused_per_token: 10,
            ws_init_timeout: Duration::from_secs(10),
            ws_keepalive: Duration::from_secs(30),
            subscriptions_per_socket: 100,
            sockets_per_token: 20,
            host_calls_per_host: 4,
            host_check_timeout: Duration::from_secs(10),
            rates: RateLimits::default(),
            token_lifetime: Some(Duration::from_secs(90 * 24 * 3600)),
            trusted_documents: None,
        }
    }
}

/// What a token of each role may spend; `None` is no limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// ADMIN tokens' budget; none by default (the cloud's own automation).
    pub admin: Option<Rate>,
    /// OPERATOR tokens' budget; [`Rate::DEFAULT`] by default.
    pub operator: Option<Rate>,
    /// VIEWER tokens' budget; [`Rate::DEFAULT`] by default.
    pub viewer: Option<Rate>,
}

impl Default for RateLimits {
    /// CloudCIX's API allows 20 requests per second per user; ADMIN tokens (the cloud's
    /// own automation) are not limited unless configured to be.
    fn default() -> Self {
        Self {
            admin: None,
            operator: Some(Rate::DEFAULT),
            viewer: Some(Rate::DEFAULT),
        }
    }
}

impl RateLimits {
    pub fn of(&self, role: crate::domain::Role) -> Option<Rate> {
        use crate::domain::Role;
        match role {
            Role::Admin => self.admin,
            Role::Operator => self.operator,
            Role::Viewer => self.viewer,
        }
    }

    /// Sets one role's rate from `ROLE=REQUESTS:COST` (per second) or `ROLE=none`.
    pub fn set(&mut self, spec: &str) -> Result<(), String> {
        use crate::domain::Role;
        let usage = || {
            format!("a rate limit is ROLE=REQUESTS:COST (per second) or ROLE=none, not {spec:?}")
        };
        let (role, rate) = spec.split_once('=').ok_or_else(usage)?;
        let role: Role = role
            .trim()
            .to_ascii_uppercase()
            .parse()
            .map_err(|_| usage())?;
        let rate = match rate.trim() {
            "none" => None,
            r => {
                let (requests, cost) = r.split_once(':').ok_or_else(usage)?;
                let n = |s: &str| s.trim().parse::<u32>().ok().filter(|n| *n > 0);
                Some(Rate {
                    requests: n(requests).ok_or_else(usage)?,
                    cost: n(cost).ok_or_else(usage)?,
                })
            }
        };
        match role {
            Role::Admin => self.admin = rate,
            Role::Operator => self.operator = rate,
            Role::Viewer => self.viewer = rate,
        }
        Ok(())
    }
}

/// A sustained rate per second. A token may burst to twice the requests and four times
/// the cost (so that the costliest operation allowed always fits) after a quiet moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Requests a second, per token.
    pub requests: u32,
    /// Operation cost a second, per token, as `graphql::cost` computes it.
    pub cost: u32,
}

impl Rate {
    pub const DEFAULT: Rate = Rate {
        requests: 20,
        cost: 25_000,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_backends() {
        assert_eq!(
            "sqlite://snaptree.db".parse::<DatabaseUrl>().unwrap(),
            DatabaseUrl::Sqlite("snaptree.db".into())
        );
        assert_eq!(
            "sqlite:///var/lib/s.db".parse::<DatabaseUrl>().unwrap(),
            DatabaseUrl::Sqlite("/var/lib/s.db".into())
        );
        assert_eq!(
            "data/s.db".parse::<DatabaseUrl>().unwrap(),
            DatabaseUrl::Sqlite("data/s.db".into())
        );
        assert!(matches!(
            "postgres://u@h/db".parse::<DatabaseUrl>().unwrap(),
            DatabaseUrl::Postgres(_)
        ));
        assert!("mysql://x".parse::<DatabaseUrl>().is_err());
    }

    #[test]
    fn display_hides_the_password() {
        let url: DatabaseUrl = "postgres://app:s3cret@db.example/snap".parse().unwrap();
        assert_eq!(url.to_string(), "postgres://app:***@db.example/snap");
        let err = "mysql://app:s3cret@x/y".parse::<DatabaseUrl>().unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn rate_limits_are_set_per_role() {
        let mut rates = RateLimits::default();
        assert_eq!(rates.admin, None);
        rates.set("admin=100:200000").unwrap();
        rates.set("VIEWER=none").unwrap();
        assert_eq!(
            rates.admin,
            Some(Rate {
                requests: 100,
                cost: 200_000
            })
        );
        assert_eq!(rates.viewer, None);
        assert!(rates.set("OPERATOR=0:5").is_err());
        assert!(rates.set("ROBOT=1:1").is_err());
        assert!(rates.set("VIEWER").is_err());
    }
}
