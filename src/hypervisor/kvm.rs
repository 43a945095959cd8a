//! KVM hosts through libvirt's `virsh`, with the host's connection URI (`qemu:///system`,
//! or `qemu+ssh://user@host/system`, where libvirt carries the SSH itself). Snapshots are
//! libvirt's internal snapshots.
//!
//! One virsh shell per host holds one libvirt connection for every call (measured: a
//! new virsh per call spends 15 ms locally, and 320 ms over SSH, connecting; see
//! BENCHMARKS.md). Each command is followed by an `echo` and an unknown command, whose
//! error is the last thing virsh writes for it: the answer is everything before, and its
//! `error:` lines decide what a failure means (an unreachable libvirtd is transient, a
//! missing domain or snapshot permanent).

use std::path::PathBuf;

use async_trait::async_trait;

use super::session::{Lasting, Session};
use super::uri::KvmUri;
use super::{Capabilities, Driver, DriverError, HostSnapshot, HostVm, Progress};
use crate::domain::state::vm_state;

/// What libvirt hosts can do, and how their domain states read as CloudCIX states.
pub const CAPABILITIES: Capabilities = Capabilities {
    name: "KVM",
    snapshot_limit: None,
    states: &[
        ("shut off", vm_state::QUIESCED),
        ("in shutdown", 12), // QUIESCING
        ("crashed", 3),      // UNRESOURCED
    ],
    // running, idle, paused, blocked, pmsuspended
    other_states: vm_state::RUNNING,
};

/// Answers one virsh shell gives before a new one replaces it (virsh keeps a little
/// history per command).
const ANSWERS_PER_SHELL: u32 = 10_000;

/// What virsh's shell says (as an error) when it reconnected before a command.
const RECONNECTED: &str = "error: Reconnected to the hypervisor";

/// A libvirt host.
pub struct KvmDriver {
    /// libvirt's connection URI, with the robot's SSH key when it has one.
    uri: String,
    /// The virsh program.
    virsh: PathBuf,
    /// The host's virsh shell.
    shell: Lasting,
}

/// A failed virsh call: its `error:` lines, without the prefix.
struct Failure(String);

impl Failure {
    fn from_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Self {
        let lines: Vec<&str> = lines
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

    /// A failure of the connection rather than of the command: worth a retry, and the
    /// shell is replaced.
    fn is_unreachable(&self) -> bool {
        // Lower case: virsh's shell says "Failed to reconnect to the hypervisor" where
        // a one-shot virsh says "failed to connect to the hypervisor".
        const UNREACHABLE: &[&str] = &[
            "to connect to the hypervisor",
            "to reconnect to the hypervisor",
            "failed to connect socket",
            "no connection driver available",
            "disconnected from",
            "client socket is closed",
            "cannot recv data",
            "cannot write data",
            "connection refused",
            "connection reset",
            "end of file while reading data",
        ];
        let said = self.0.to_lowercase();
        UNREACHABLE.iter().any(|t| said.contains(t))
    }

    /// The host is busy: worth a retry on the same connection.
    fn is_busy(&self) -> bool {
        self.says("Timed out during operation") || self.says("cannot acquire state change lock")
    }

    /// Sorts the failure: retry what may pass, give up on what will not.
    fn into_error(self, vm: &str) -> DriverError {
        if self.is_unreachable() {
            DriverError::Unreachable(format!("libvirt is unreachable: {}", self.0))
        } else if self.is_busy() {
            DriverError::Transient(format!("libvirt is busy: {}", self.0))
        } else if self.says("failed to get domain") {
            DriverError::NoSuchVm(format!("the host has no VM named {vm:?} ({})", self.0))
        } else {
            DriverError::Permanent(self.0)
        }
    }
}

/// Whether `arg` can be one argument of virsh's shell: printable ASCII, without the
/// backslash and the single quote. Inside single quotes virsh takes everything else
/// literally; a byte past ASCII is refused too, since readline (which the shell reads
/// its lines with) may take one as a key with a meta modifier, whatever the locale.
fn passable(arg: &str) -> Result<(), String> {
    match arg
        .chars()
        .find(|c| !(' '..='~').contains(c) || matches!(c, '\\' | '\''))
    {
        Some(c) => Err(format!(
            "virsh's shell cannot be given the character U+{:04X}",
            c as u32
        )),
        None => Ok(()),
    }
}

/// `args` as one line of virsh's shell: each in single quotes, inside which virsh takes
/// everything literally. Nothing that could end the quote or the line gets through.
fn shell_line(args: &[&str]) -> Result<String, DriverError> {
    let mut line = String::new();
    for arg in args {
        if let Err(why) = passable(arg) {
            return Err(DriverError::Permanent(format!(
                "{arg:?} cannot be passed to virsh: {why}"
            )));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push('\'');
        line.push_str(arg);
        line.push('\'');
    }
    Ok(line)
}

/// What virsh wrote for one command, without its shell's prompts and the commands they
/// echo. A prompt may follow output on the same line (virsh ends some answers, as
/// `snapshot-parent`'s, without a newline): it ends that line.
fn answer_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    for line in text.lines() {
        let output = match ["virsh # ", "virsh > "]
            .iter()
            .filter_map(|p| line.find(p))
            .min()
        {
            Some(at) => &line[..at],
            None => line,
        };
        if !output.trim().is_empty() {
            lines.push(output);
        }
    }
    lines
}

impl KvmDriver {
    /// A driver for the host at `uri`, which only ever reaches virsh rebuilt from its
    /// checked parts; `key` is the robot's SSH key for `qemu+ssh` hosts.
    pub fn new(uri: &KvmUri, virsh: PathBuf, key: Option<&std::path::Path>) -> Self {
        let mut uri_text = uri.to_string();
        if let (Some(_), Some(key)) = (&uri.remote, key) {
            uri_text.push(if uri_text.contains('?') { '&' } else { '?' });
            uri_text.push_str("keyfile=");
            uri_text.push_str(&key.to_string_lossy());
        }
        Self {
            uri: uri_text,
            virsh,
            shell: Lasting::new(ANSWERS_PER_SHELL),
        }
    }

    fn open(&self) -> Result<Session, DriverError> {
        let args = ["-q".to_owned(), "-c".to_owned(), self.uri.clone()];
        // No terminal to drive, no history of the commands kept on disk, and none of the
        // server's own readline bindings or locale: the shell reads its lines the same
        // way on every server.
        Session::open(
            &self.virsh,
            &args,
            &[
                ("TERM", "dumb"),
                ("VIRSH_HISTSIZE", "0"),
                ("INPUTRC", "/dev/null"),
                ("LC_ALL", "C.UTF-8"),
            ],
        )
    }

    /// Runs `args` in the host's shell: stdout on success. A shell that was kept and
    /// turns out dead (libvirtd restarted, the SSH connection dropped while idle) is
    /// replaced and the command sent once more; every operation is idempotent.
    /// One function: a resend loop in which every step uses the shell on loan, and the answer's
    /// reading decides whether to send once more and whether to keep the shell.
    async fn virsh(&self, args: &[&str]) -> Result<Result<String, Failure>, DriverError> {
        let command = shell_line(args)?;
        let mut again = true;
        loop {
            let mut loan = self.shell.lend(|| self.open()).await?;
            let fresh = loan.fresh;
            let session = loan.session();
            let n = session.answered + 1;
            // The echo's output is the joined literal, which its own echoed command
            // line does not contain.
            let request = format!("{command}\necho 'SNAPTREE-END-''{n}'\nsnaptree-mark-{n}\n");
            let asked = async {
                session.send(&request).await?;
                session
                    .read_to(&format!("'snaptree-mark-{n}'"), |_| {})
                    .await
            };
            let text = match asked.await {
                Ok(text) => text,
                Err(e) if e.is_transient() && !fresh && again => {
                    again = false;
                    continue;
                }
                Err(DriverError::Unreachable(e)) => {
                    return Err(DriverError::Unreachable(format!(
                        "libvirt is unreachable: {e}"
                    )));
                }
                Err(e) => return Err(e),
            };
            let Some(end) = text.find(&format!("SNAPTREE-END-{n}")) else {
                return Err(DriverError::Permanent(format!(
                    "virsh answered out of turn: {}",
                    text.trim()
                )));
            };
            let (mut out, mut errors) = (String::new(), Vec::new());
            for line in answer_lines(&text[..end]) {
                // The shell found its connection lost and made a new one before it ran
                // the command: news, not a failure.
                if line.trim() == RECONNECTED {
                    continue;
                }
                if line.starts_with("error:") {
                    errors.push(line);
                } else {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            if errors.is_empty() {
                loan.keep(&self.shell);
                return Ok(Ok(out));
            }
            let failure = Failure::from_lines(errors.into_iter());
            if failure.is_unreachable() {
                if !fresh && again {
                    again = false;
                    continue;
                }
                return Ok(Err(failure));
            }
            loan.keep(&self.shell);
            return Ok(Err(failure));
        }
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
}

#[async_trait]
impl Driver for KvmDriver {
    fn passable(&self, name: &str) -> Result<(), String> {
        super::plain_line(name)?;
        passable(name)
    }

    async fn check(&self) -> Result<(), DriverError> {
        self.call("", &["version"]).await.map(drop)
    }

    fn connections(&self) -> Option<u64> {
        Some(self.shell.opened())
    }

    async fn vm_state(&self, vm: &str) -> Result<i32, DriverError> {
        let domstate = self.call(vm, &["domstate", "--domain", vm]).await?;
        Ok(CAPABILITIES.state(domstate.trim()))
    }

    async fn unsupported(&self, vm: &str) -> Result<Option<String>, DriverError> {
        let xml = self
            .call(vm, &["dumpxml", "--inactive", "--domain", vm])
            .await?;
        if !firmware::pflash(&xml) {
            // Supported whatever the version: no need to ask the daemon's.
            return Ok(None);
        }
        let version = self.call("", &["version", "--daemon"]).await?;
        Ok(firmware::unsupported(
            &xml,
            firmware::daemon_version(&version),
        ))
    }

    async fn list_vms(&self) -> Result<Vec<HostVm>, DriverError> {
        let mut vms = Vec::new();
        for identifier in Self::names(&self.call("", &["list", "--all", "--name"]).await?) {
            match self.vm_state(&identifier).await {
                Ok(state) => vms.push(HostVm { identifier, state }),
                // Undefined since the listing: it is not there any more. A name virsh's
                // shell cannot take is not one snaptree registers either.
                Err(DriverError::NoSuchVm(_)) => {}
                Err(DriverError::Permanent(_)) if shell_line(&[&identifier]).is_err() => {}
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
mod tests;

mod firmware;
