//! The simulated hypervisor (`sim://` hosts), for demos, tests and benchmarks.
//!
//! It keeps a real snapshot tree per VM with libvirt's semantics: a current snapshot
//! that new snapshots hang from, children moving up when their parent is deleted, subtree
//! deletes that make the parent current when the current snapshot was inside. Its state
//! lives in one JSON file per VM under the state directory, so it outlives the snaptree
//! process as a real host would.
//!
//! The URI tunes it: `sim://?latency_ms=50&fail_rate=0.1&flaky_rate=0.2&hang_rate=0.05&domains=web,db`.
//! `latency_ms` is how long each snapshot operation (create, apply, delete) takes,
//! `fail_rate` the share of them that fail for good, `flaky_rate` the share that fail
//! transiently, `hang_rate` the share that never answer (the host stops responding
//! midway, before making the change: only the robot's timeout ends them), and `domains`
//! the VMs the host starts with. `fail_on=create,apply,delete` limits the three rates to
//! the operations named (a host whose disk is full fails creates, and applies work).
//! `journal=1` makes the host log each snapshot operation to `journal.log` in its state
//! directory, as a line when it begins and one when it ends (`began`, then `done`,
//! `failed`, or `cut` when its caller dropped it midway), each with the operation, VM,
//! snapshot and the process: what a test reads to tell whether two operations on one VM
//! ever overlapped, across the processes that share the host.
//! While a file named `DOWN` is in its state directory (`<sim-dir>/host-<id>/DOWN`), the
//! host plays an outage: every call, reads too, fails as an unreachable host's does, and
//! the host shows as unreachable until the file goes. Any other VM comes into being
//! when it is first asked for. Reads (VM state, listings) are instant and never fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Driver, DriverError, HostSnapshot, HostVm, Progress};

mod params;
use crate::domain::state::vm_state;
pub use params::{Op, SimParams};

/// Simulated hosts keep as many snapshots as asked, and report CloudCIX states as they are.
pub const CAPABILITIES: super::Capabilities = super::Capabilities {
    name: "The simulated hypervisor",
    snapshot_limit: None,
    states: &[],
    other_states: crate::domain::state::vm_state::RUNNING,
};

/// An operation's lines in the host's journal: `began` when made, and its end when
/// dropped (`cut` unless told otherwise).
struct Journaled {
    /// The journal's path, `None` when the host keeps none.
    path: Option<PathBuf>,
    /// Operation, VM, snapshot and process, as each line names them.
    what: String,
    /// How it ended, once it has.
    end: &'static str,
}

impl Journaled {
    fn begin(path: Option<PathBuf>, op: Op, vm: &str, snapshot: &str) -> Self {
        let what = format!("{} {vm} {snapshot} {}", op.name(), std::process::id());
        let entry = Self {
            path,
            what,
            end: "cut",
        };
        entry.write("began");
        entry
    }

    /// One line, appended in one write: the processes that share the host interleave
    /// whole lines.
    fn write(&self, event: &str) {
        use std::io::Write;
        let Some(path) = &self.path else {
            return;
        };
        let line = format!("{event} {}\n", self.what);
        let written = blocking(|| {
            // The host's directory comes with its first VM's state, after this line.
            std::fs::create_dir_all(path.parent().expect("in the host's directory"))?;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(line.as_bytes()))
        });
        if let Err(err) = written {
            tracing::warn!(error = %err, "cannot write the simulated host's journal");
        }
    }
}

impl Drop for Journaled {
    fn drop(&mut self) {
        self.write(self.end);
    }
}

/// One VM on the simulated host.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Domain {
    /// The VM's CloudCIX state: RUNNING from the start, and nothing here changes it.
    state: i32,
    /// Snapshot name to parent name.
    snapshots: BTreeMap<String, Option<String>>,
    /// The snapshot the VM runs from, which new snapshots hang from; `None` without one.
    current: Option<String>,
}

impl Domain {
    fn new() -> Self {
        Self {
            state: vm_state::RUNNING,
            ..Self::default()
        }
    }

    fn create(&mut self, name: &str) {
        if !self.snapshots.contains_key(name) {
            self.snapshots.insert(name.to_owned(), self.current.clone());
            self.current = Some(name.to_owned());
        }
    }

    fn delete(&mut self, name: &str, subtree: bool) {
        let Some(parent) = self.snapshots.get(name).cloned() else {
            return;
        };
        let mut gone = vec![name.to_owned()];
        if subtree {
            let mut i = 0;
            while i < gone.len() {
                let up = gone[i].clone();
                gone.extend(
                    self.snapshots
                        .iter()
                        .filter(|(_, p)| p.as_deref() == Some(&up))
                        .map(|(n, _)| n.clone()),
                );
                i += 1;
            }
        } else {
            for p in self.snapshots.values_mut() {
                if p.as_deref() == Some(name) {
                    p.clone_from(&parent);
                }
            }
        }
        for n in &gone {
            self.snapshots.remove(n);
        }
        if self.current.as_ref().is_some_and(|c| gone.contains(c)) {
            self.current = parent;
        }
    }

    fn list(&self) -> Vec<HostSnapshot> {
        self.snapshots
            .iter()
            .map(|(name, parent)| HostSnapshot {
                name: name.clone(),
                parent: parent.clone(),
                current: self.current.as_deref() == Some(name),
            })
            .collect()
    }
}

/// Runs file work that blocks (a write and rename took 0.2 ms here, and the host's lock
/// may be waited for): on a multi-threaded runtime the thread's other tasks move to
/// another thread meanwhile. A worker thread blocked here held up every reply from the
/// database that it would have polled, and so every task's transactions.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// The file whose presence in a host's state directory plays an outage.
pub const OUTAGE_FILE: &str = "DOWN";

/// A simulated host: its tuning and the directory holding its VMs.
pub struct SimDriver {
    /// The tuning its URI gave.
    params: SimParams,
    /// Its state directory (`<sim-dir>/host-<id>`): a JSON file per VM, the journal, `DOWN`.
    dir: PathBuf,
    /// One operation at a time touches the files, as a host serialises its own work.
    files: Mutex<()>,
}

impl SimDriver {
    /// A host tuned by `uri`, keeping its state in `dir`.
    pub fn new(uri: &str, dir: &Path) -> Result<Self, String> {
        Ok(Self {
            params: SimParams::parse(uri)?,
            dir: dir.to_owned(),
            files: Mutex::new(()),
        })
    }

    fn path(&self, vm: &str) -> PathBuf {
        // Hex keeps any identifier a plain file name.
        self.dir.join(format!("{}.json", hex::encode(vm)))
    }

    fn load(&self, vm: &str) -> Result<Option<Domain>, DriverError> {
        match std::fs::read(self.path(vm)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                DriverError::Permanent(format!("simulated host state is corrupt: {e}"))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DriverError::Transient(format!(
                "cannot read simulated host state: {e}"
            ))),
        }
    }

    fn save(&self, vm: &str, domain: &Domain) -> Result<(), DriverError> {
        let io = |e: std::io::Error| {
            DriverError::Transient(format!("cannot write simulated host state: {e}"))
        };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let path = self.path(vm);
        let tmp = path.with_extension("tmp");
        let json = serde_json::to_vec(domain).expect("a domain serialises");
        std::fs::write(&tmp, json).map_err(io)?;
        // Atomic replace: a killed process leaves the old state or the new one.
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// Runs `change` on VM `vm`'s state (created on first sight) and saves it.
    fn with_domain<T>(
        &self,
        vm: &str,
        change: impl FnOnce(&mut Domain) -> Result<T, DriverError>,
    ) -> Result<T, DriverError> {
        blocking(|| {
            let _guard = self.files.lock().unwrap_or_else(|p| p.into_inner());
            let mut domain = self.load(vm)?.unwrap_or_else(Domain::new);
            let out = change(&mut domain)?;
            self.save(vm, &domain)?;
            Ok(out)
        })
    }

    /// Reads VM `vm`'s state (as a new VM's when the host has none yet).
    fn read_domain<T>(&self, vm: &str, read: impl FnOnce(&Domain) -> T) -> Result<T, DriverError> {
        blocking(|| {
            let _guard = self.files.lock().unwrap_or_else(|p| p.into_inner());
            Ok(read(&self.load(vm)?.unwrap_or_else(Domain::new)))
        })
    }

    /// Runs one operation as a host would: connects, works for the URI's latency while
    /// reporting progress, fails as the URI asks, makes the change (`apply`), verifies.
    async fn work<T>(
        &self,
        (op, vm, snapshot): (Op, &str, &str),
        phase: &str,
        progress: &Progress,
        apply: impl FnOnce() -> Result<T, DriverError>,
    ) -> Result<T, DriverError> {
        self.reach()?;
        let journal = self.params.journal.then(|| self.dir.join("journal.log"));
        let mut journaled = Journaled::begin(journal, op, vm, snapshot);
        let done = self.work_on(op, phase, progress, apply).await;
        journaled.end = match done {
            Ok(_) => "done",
            Err(_) => "failed",
        };
        done
    }

    /// [`Self::work`], past the outage and the journal.
    async fn work_on<T>(
        &self,
        op: Op,
        phase: &str,
        progress: &Progress,
        apply: impl FnOnce() -> Result<T, DriverError>,
    ) -> Result<T, DriverError> {
        let roll = if self.params.fail_on.is_empty() || self.params.fail_on.contains(&op) {
            fastrand::f64()
        } else {
            // Past every rate: this operation never fails.
            1.0
        };
        let fails = roll < self.params.fail_rate;
        let flaky = !fails && roll < self.params.fail_rate + self.params.flaky_rate;
        let hangs = !fails
            && !flaky
            && roll < self.params.fail_rate + self.params.flaky_rate + self.params.hang_rate;
        let step = self.params.latency / 4;
        // A host of no latency does not wait: even a zero sleep waits for the timer's
        // next millisecond, which would make such a host the slowest part of a task.
        let pause = || async move {
            if !step.is_zero() {
                tokio::time::sleep(step).await;
            }
        };
        progress.report(Some(0), "connecting to the host");
        pause().await;
        progress.report(Some(25), phase);
        pause().await;
        if fails {
            return Err(DriverError::Permanent(format!(
                "simulated failure: the host refused to finish {phase}"
            )));
        }
        if flaky {
            return Err(DriverError::Transient(format!(
                "simulated transient failure: lost the connection to the host during {phase}"
            )));
        }
        if hangs {
            std::future::pending::<()>().await;
        }
        progress.report(Some(50), phase);
        pause().await;
        let done = apply()?;
        progress.report(Some(90), "verifying");
        pause().await;
        Ok(done)
    }
}

#[async_trait]
impl Driver for SimDriver {
    async fn check(&self) -> Result<(), DriverError> {
        self.reach()
    }

    async fn vm_state(&self, vm: &str) -> Result<i32, DriverError> {
        self.reach()?;
        self.vm_state_now(vm)
    }

    async fn list_vms(&self) -> Result<Vec<HostVm>, DriverError> {
        self.reach()?;
        let mut names: Vec<String> = self.params.domains.clone();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let file = entry.file_name().to_string_lossy().into_owned();
                if let Some(name) = file
                    .strip_suffix(".json")
                    .and_then(|h| hex::decode(h).ok())
                    .and_then(|b| String::from_utf8(b).ok())
                {
                    names.push(name);
                }
            }
        }
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|identifier| {
                let state = self.vm_state_now(&identifier)?;
                Ok(HostVm { identifier, state })
            })
            .collect()
    }

    async fn create(
        &self,
        vm: &str,
        snapshot: &str,
        progress: &Progress,
    ) -> Result<(), DriverError> {
        let what = (Op::Create, vm, snapshot);
        self.work(what, "creating the snapshot", progress, || {
            self.with_domain(vm, |d| {
                d.create(snapshot);
                Ok(())
            })
        })
        .await
    }

    async fn apply(
        &self,
        vm: &str,
        snapshot: &str,
        progress: &Progress,
    ) -> Result<(), DriverError> {
        self.work(
            (Op::Apply, vm, snapshot),
            "reverting the VM to the snapshot",
            progress,
            || {
                self.with_domain(vm, |d| {
                    if !d.snapshots.contains_key(snapshot) {
                        return Err(DriverError::Permanent(format!(
                            "the host has no snapshot {snapshot} of VM {vm}"
                        )));
                    }
                    d.current = Some(snapshot.to_owned());
                    Ok(())
                })
            },
        )
        .await
    }

    async fn delete(
        &self,
        vm: &str,
        snapshot: &str,
        subtree: bool,
        progress: &Progress,
    ) -> Result<(), DriverError> {
        let what = (Op::Delete, vm, snapshot);
        self.work(what, "deleting the snapshot", progress, || {
            self.with_domain(vm, |d| {
                d.delete(snapshot, subtree);
                Ok(())
            })
        })
        .await
    }

    /// Reading never fails here (on a host that is up), so a test can tell what a failed
    /// host still holds.
    async fn list(&self, vm: &str) -> Result<Vec<HostSnapshot>, DriverError> {
        self.reach()?;
        self.read_domain(vm, Domain::list)
    }
}

impl SimDriver {
    /// A host playing an outage (its `DOWN` file) answers nothing.
    fn reach(&self) -> Result<(), DriverError> {
        match self.dir.join(OUTAGE_FILE).exists() {
            true => Err(DriverError::Unreachable(
                "simulated outage: connection refused by the host".into(),
            )),
            false => Ok(()),
        }
    }

    fn vm_state_now(&self, vm: &str) -> Result<i32, DriverError> {
        self.read_domain(vm, |d| d.state)
    }
}

#[cfg(test)]
mod tests;
