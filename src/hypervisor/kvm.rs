//! KVM hosts through libvirt's `virsh`, with the host's connection URI (`qemu:///system`,
//! or `qemu+ssh://user@host/system`, where libvirt carries the SSH itself). Snapshots are
//! libvirt's internal snapshots.
//!
//! Success is read from virsh's exit status; its `error:` lines decide what a failure
//! means: an unreachable libvirtd is transient, a missing domain or snapshot permanent.

use std::path::PathBuf;

use async_trait::async_trait;

use super::command::{self, Output};
use super::uri::KvmUri;
use super::{Driver, DriverError, HostSnapshot, HostVm, Progress};
use crate::domain::state::vm_state;

/// A libvirt host.
pub struct KvmDriver {
    /// libvirt's connection URI.
    uri: String,
    /// The virsh program.
    virsh: PathBuf,
}

/// A failed virsh call: its `error:` lines, without the prefix.
struct Failure(String);

impl Failure {
    fn from(out: &Output) -> Self {
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .map(|l| l.trim().trim_start_matches("error: "))
            .filter(|l| !l.is_empty())
            .collect();
        Self(if lines.is_empty() {
            "virsh failed without a message".into()
        } else {
            lines.join("; ")
        })
    }

    fn says(&self, words: &str) -> bool {
        self.0.contains(words)
    }

    /// No such snapshot.
    fn no_snapshot(&self) -> bool {
        self.says("Domain snapshot not found")
    }

    /// Sorts the failure: retry what may pass, give up on what will not.
    fn into_error(self, vm: &str) -> DriverError {
        const TRANSIENT: &[&str] = &[
            "failed to connect to the hypervisor",
            "Cannot recv data",
            "Cannot write data",
            "Connection refused",
            "Connection reset",
            "End of file while reading data",
            "Timed out during operation",
            "cannot acquire state change lock",
        ];
        if TRANSIENT.iter().any(|t| self.says(t)) {
            DriverError::Transient(format!("libvirt is unreachable: {}", self.0))
        } else if self.says("failed to get domain") {
            DriverError::NoSuchVm(format!("the host has no VM named {vm:?} ({})", self.0))
        } else {
            DriverError::Permanent(self.0)
        }
    }
}

impl KvmDriver {
    /// A driver for the host at `uri`, which only ever reaches virsh rebuilt from its
    /// checked parts.
    pub fn new(uri: &KvmUri, virsh: PathBuf) -> Self {
        Self {
            uri: uri.to_string(),
            virsh,
        }
    }

    /// Runs `virsh -c URI args...`: stdout on success.
    async fn virsh(&self, args: &[&str]) -> Result<Result<String, Failure>, DriverError> {
        let out = command::run(
            &self.virsh,
            ["-q", "-c", &self.uri].iter().chain(args),
            None,
        )
        .await?;
        Ok(if out.success {
            Ok(out.stdout)
        } else {
            Err(Failure::from(&out))
        })
    }

    /// Like `virsh`, with every failure sorted for `vm`.
    async fn call(&self, vm: &str, args: &[&str]) -> Result<String, DriverError> {
        self.virsh(args).await?.map_err(|f| f.into_error(vm))
    }

    fn names(stdout: &str) -> Vec<String> {
        stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The CloudCIX state of `virsh domstate`'s answer.
    fn state(domstate: &str) -> i32 {
        match domstate.trim() {
            "shut off" => vm_state::QUIESCED,
            "in shutdown" => 12,    // QUIESCING
            "crashed" => 3,         // UNRESOURCED
            _ => vm_state::RUNNING, // running, idle, paused, blocked, pmsuspended
        }
    }
}

#[async_trait]
impl Driver for KvmDriver {
    async fn check(&self) -> Result<(), DriverError> {
        self.call("", &["version"]).await.map(drop)
    }

    async fn vm_state(&self, vm: &str) -> Result<i32, DriverError> {
        Ok(Self::state(
            &self.call(vm, &["domstate", "--domain", vm]).await?,
        ))
    }

    async fn list_vms(&self) -> Result<Vec<HostVm>, DriverError> {
        let mut vms = Vec::new();
        for identifier in Self::names(&self.call("", &["list", "--all", "--name"]).await?) {
            match self.vm_state(&identifier).await {
                Ok(state) => vms.push(HostVm { identifier, state }),
                // Undefined since the listing: it is not there any more.
                Err(DriverError::NoSuchVm(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(vms)
    }

    async fn create(
        &self,
        vm: &str,
        snapshot: &str,
        progress: &Progress,
    ) -> Result<(), DriverError> {
        progress.report(None, "creating the snapshot");
        let args = [
            "snapshot-create-as",
            "--domain",
            vm,
            "--name",
            snapshot,
            "--atomic",
        ];
        match self.virsh(&args).await? {
            Ok(_) => Ok(()),
            // A retry after a create that reached the host: it is there, which is the goal.
            Err(f) if f.says("already exists") => Ok(()),
            Err(f) => Err(f.into_error(vm)),
        }
    }

    /// Always reverts, even when the snapshot is already current: that is what a revert
    /// asks for, and reverting twice (a retry) is harmless.
    async fn apply(
        &self,
        vm: &str,
        snapshot: &str,
        progress: &Progress,
    ) -> Result<(), DriverError> {
        progress.report(None, "reverting the VM to the snapshot");
        let args = [
            "snapshot-revert",
            "--domain",
            vm,
            "--snapshotname",
            snapshot,
        ];
        match self.virsh(&args).await? {
            Ok(_) => Ok(()),
            Err(f) if f.no_snapshot() => Err(DriverError::Permanent(format!(
                "the host has no snapshot {snapshot:?} of VM {vm:?}"
            ))),
            Err(f) => Err(f.into_error(vm)),
        }
    }

    async fn delete(
        &self,
        vm: &str,
        snapshot: &str,
        subtree: bool,
        progress: &Progress,
    ) -> Result<(), DriverError> {
        progress.report(None, "deleting the snapshot");
        let mut args = vec![
            "snapshot-delete",
            "--domain",
            vm,
            "--snapshotname",
            snapshot,
        ];
        if subtree {
            args.push("--children");
        }
        match self.virsh(&args).await? {
            // Gone already (a retry): the goal.
            Err(f) if f.no_snapshot() => Ok(()),
            Err(f) => Err(f.into_error(vm)),
            Ok(_) => Ok(()),
        }
    }

    async fn list(&self, vm: &str) -> Result<Vec<HostSnapshot>, DriverError> {
        let names = Self::names(
            &self
                .call(vm, &["snapshot-list", "--domain", vm, "--name"])
                .await?,
        );
        let current = match self
            .virsh(&["snapshot-current", "--domain", vm, "--name"])
            .await?
        {
            Ok(out) => Self::names(&out).pop(),
            Err(f) if f.says("has no current snapshot") => None,
            Err(f) => return Err(f.into_error(vm)),
        };
        let mut listed = Vec::with_capacity(names.len());
        for name in names {
            let args = ["snapshot-parent", "--domain", vm, "--snapshotname", &name];
            let parent = match self.virsh(&args).await? {
                Ok(out) => Self::names(&out).pop(),
                Err(f) if f.says("has no parent") => None,
                Err(f) => return Err(f.into_error(vm)),
            };
            listed.push(HostSnapshot {
                current: current.as_deref() == Some(&name),
                name,
                parent,
            });
        }
        Ok(listed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(stderr: &str) -> Failure {
        Failure::from(&Output {
            success: false,
            stdout: String::new(),
            stderr: stderr.into(),
        })
    }

    #[test]
    fn sorts_virsh_failures() {
        let down = failure(
            "error: failed to connect to the hypervisor\nerror: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory\n",
        );
        assert!(matches!(down.into_error("vm"), DriverError::Transient(_)));
        let remote = failure(
            "error: failed to connect to the hypervisor\nerror: Cannot recv data: ssh: connect to host h port 22: Connection refused\n",
        );
        assert!(matches!(remote.into_error("vm"), DriverError::Transient(_)));
        let missing = failure("error: failed to get domain 'web'\n");
        assert_eq!(
            missing.into_error("web"),
            DriverError::NoSuchVm(
                "the host has no VM named \"web\" (failed to get domain 'web')".into()
            )
        );
        assert!(
            failure("error: Domain snapshot not found: no domain snapshot with matching name 'S'")
                .no_snapshot()
        );
    }

    #[test]
    fn maps_domain_states() {
        assert_eq!(KvmDriver::state("running\n"), vm_state::RUNNING);
        assert_eq!(KvmDriver::state("shut off"), vm_state::QUIESCED);
        assert_eq!(KvmDriver::state("paused"), vm_state::RUNNING);
    }
}
