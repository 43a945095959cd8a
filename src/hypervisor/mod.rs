//! Hypervisor drivers: the operations the robot needs from a host, whatever its kind.
//!
//! Every operation is idempotent, so a retried task is safe: create succeeds if the
//! snapshot exists, delete succeeds if it is gone, apply just makes it current. Snapshot
//! names are generated (`{vm_id}_{snapshot_id}`); no user text reaches a host.

pub mod health;
pub mod hyperv;
pub mod kvm;
mod registry;
mod session;
pub mod sim;
pub mod uri;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::domain::Hypervisor;

pub use health::Health;
pub use registry::{Drivers, ReadFailed};
pub use uri::HostUri;

/// A host as drivers know it: what reaching it takes, and nothing of how it is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRef {
    /// The host's id (`hosts.id`): the key of its driver and of its health.
    pub id: i64,
    /// For errors and logs.
    pub name: String,
    /// The host's kind: which driver serves it, and how its URI is read.
    pub kind: Hypervisor,
    /// As stored; checked again before any driver uses it.
    pub uri: String,
}

/// What a kind of hypervisor can do, and how it names VM states: one place per driver.
#[derive(Debug)]
pub struct Capabilities {
    /// The hypervisor's name, for people.
    pub name: &'static str,
    /// The most snapshots the hypervisor keeps per VM (`None`: no limit of its own).
    pub snapshot_limit: Option<i32>,
    /// The VM state names the hypervisor reports, as CloudCIX state-table integers.
    pub states: &'static [(&'static str, i32)],
    /// The CloudCIX state of every other name (the running ones).
    pub other_states: i32,
}

impl Capabilities {
    /// The CloudCIX state of the hypervisor's state name `name`.
    pub fn state(&self, name: &str) -> i32 {
        self.states
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(self.other_states, |(_, state)| *state)
    }

    /// The capabilities of hosts of kind `kind`.
    pub fn of(kind: Hypervisor) -> &'static Self {
        match kind {
            Hypervisor::Kvm => &kvm::CAPABILITIES,
            Hypervisor::Hyperv => &hyperv::CAPABILITIES,
            Hypervisor::Simulated => &sim::CAPABILITIES,
        }
    }
}

/// Why an operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// Worth retrying: the host was busy or too slow.
    #[error("{0}")]
    Transient(String),
    /// Worth retrying: the host, or the connection to it, could not be reached. The
    /// host counts as unreachable until it answers again.
    #[error("{0}")]
    Unreachable(String),
    /// Retrying will not help: no such snapshot, refused, unsupported.
    #[error("{0}")]
    Permanent(String),
    /// The host has no such VM (a permanent failure too).
    #[error("{0}")]
    NoSuchVm(String),
}

impl DriverError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_) | Self::Unreachable(_))
    }

    /// The failure as a task records it: a code and snaptree's sentence for tenants, and
    /// this error's text (the host's output) as the detail.
    pub fn failure(&self) -> crate::domain::Failure {
        use crate::domain::{Failure, FailureCode};
        let code = match self {
            Self::Transient(_) => FailureCode::HostBusy,
            Self::Unreachable(_) => FailureCode::HostUnreachable,
            Self::Permanent(_) => FailureCode::HostRefused,
            Self::NoSuchVm(_) => FailureCode::NoSuchVm,
        };
        Failure::new(code, Some(self.to_string()))
    }
}

/// A snapshot as the host knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSnapshot {
    /// The snapshot's name on the host (`{vm_id}_{snapshot_id}` for snaptree's own).
    pub name: String,
    /// Its parent's name on the host; `None` for a root.
    pub parent: Option<String>,
    /// The host's current snapshot (the VM runs from it).
    pub current: bool,
}

/// A VM as the host knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostVm {
    /// The VM's name on the host (libvirt domain name, Hyper-V VM name).
    pub identifier: String,
    /// A CloudCIX state-table integer (RUNNING 4, QUIESCED 6).
    pub state: i32,
}

/// One progress report: what the driver is doing, and how far it is, when it knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgressUpdate {
    /// Percent done (of the whole task when in a stage); `None` when the driver cannot tell.
    pub percent: Option<i32>,
    /// What the driver is doing, for people (with the stage's name before it, if any).
    pub phase: String,
}

/// Where a driver sends its progress reports.
#[derive(Clone)]
pub struct Progress {
    /// Where reports go; `None` (from `ignore`) drops them.
    tx: Option<mpsc::UnboundedSender<ProgressUpdate>>,
    /// One stage of a task of several operations: its share of the percentage and its
    /// name, put before each phase.
    stage: Option<(i32, i32, &'static str)>,
}

impl Progress {
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<ProgressUpdate>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let progress = Self {
            tx: Some(tx),
            stage: None,
        };
        (progress, rx)
    }

    /// Reports nowhere.
    pub fn ignore() -> Self {
        Self {
            tx: None,
            stage: None,
        }
    }

    /// The same reports, as stage `name` spanning `from`..`to` percent of the whole.
    pub fn stage(&self, from: i32, to: i32, name: &'static str) -> Self {
        Self {
            tx: self.tx.clone(),
            stage: Some((from, to, name)),
        }
    }

    pub fn report(&self, percent: Option<i32>, phase: impl Into<String>) {
        let Some(tx) = &self.tx else { return };
        let (percent, phase) = match self.stage {
            Some((from, to, name)) => (
                percent.map(|p| from + p.clamp(0, 100) * (to - from) / 100),
                format!("{name}: {}", phase.into()),
            ),
            None => (percent, phase.into()),
        };
        let _ = tx.send(ProgressUpdate { percent, phase });
    }
}

/// The rule every driver holds host names to at least: one line of text, without
/// control characters (C0, DEL, C1) or Unicode's line and paragraph separators, which
/// a shell or a script reading lines may take as the end of a statement.
pub fn plain_line(name: &str) -> Result<(), String> {
    let breaks = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    match name.chars().find(|c| breaks(*c)) {
        Some(c) => Err(format!("it holds the character U+{:04X}", c as u32)),
        None if name.is_empty() => Err("it is empty".into()),
        None => Ok(()),
    }
}

/// What a host does with snapshots.
#[async_trait]
pub trait Driver: Send + Sync {
    /// Reaches the host, or says why it cannot.
    async fn check(&self) -> Result<(), DriverError> {
        Ok(())
    }

    /// Connections opened to the host so far, for drivers that keep one open.
    fn connections(&self) -> Option<u64> {
        None
    }

    /// Whether a snapshot name found on the host can be sent back to it in every command,
    /// whatever it holds: `Err` says why not. Snaptree's own names (`{vm}_{snapshot}`)
    /// always can; a name made on the host by hand may not, and is then not imported.
    fn passable(&self, name: &str) -> Result<(), String> {
        plain_line(name)
    }

    /// The VM's state on the host.
    async fn vm_state(&self, vm: &str) -> Result<i32, DriverError>;

    /// Why the host cannot snapshot the VM at all, in words for its owner, if it cannot
    /// (KVM: a UEFI guest on a libvirt that takes no internal snapshots of it); `None`:
    /// it can.
    async fn unsupported(&self, vm: &str) -> Result<Option<String>, DriverError> {
        let _ = vm;
        Ok(None)
    }

    /// The VMs on the host.
    async fn list_vms(&self) -> Result<Vec<HostVm>, DriverError>;

    /// Snapshots the VM as `snapshot`, a child of its current snapshot, which it becomes.
    async fn create(
        &self,
        vm: &str,
        snapshot: &str,
        progress: &Progress,
    ) -> Result<(), DriverError>;

    /// Returns the VM to `snapshot`, which becomes current.
    async fn apply(&self, vm: &str, snapshot: &str, progress: &Progress)
    -> Result<(), DriverError>;

    /// Deletes `snapshot` (its children move up to its parent) or, with `subtree`, it and
    /// all its descendants. The VM's live state is untouched.
    async fn delete(
        &self,
        vm: &str,
        snapshot: &str,
        subtree: bool,
        progress: &Progress,
    ) -> Result<(), DriverError>;

    /// The VM's snapshots.
    async fn list(&self, vm: &str) -> Result<Vec<HostSnapshot>, DriverError>;
}
