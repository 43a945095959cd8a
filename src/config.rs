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
    /// Tasks run at once (each for a different VM).
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
}

impl Default for RobotConfig {
    fn default() -> Self {
        Self {
            workers: 8,
            lease: Duration::from_secs(10),
            poll: Duration::from_secs(2),
            retry_base: Duration::from_millis(500),
            retry_cap: Duration::from_secs(15),
            max_attempts: 8,
            give_up_after: Duration::from_secs(60),
            timeouts: Timeouts::default(),
            hosts: Vec::new(),
        }
    }
}

/// How long one driver call of each kind of task may take.
#[derive(Clone, Debug)]
pub struct Timeouts {
    pub build: Duration,
    /// Applying restarts the VM on Hyper-V and restarts QEMU on KVM: the slowest.
    pub update: Duration,
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
    /// The private key for Hyper-V hosts; the SSH client's defaults when absent.
    pub ssh_identity: Option<PathBuf>,
}

impl DriverConfig {
    /// The defaults, with simulated hosts' state under `sim_dir`.
    pub fn new(sim_dir: PathBuf) -> Self {
        Self {
            sim_dir,
            virsh: "virsh".into(),
            ssh: "ssh".into(),
            ssh_identity: None,
        }
    }
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
}
