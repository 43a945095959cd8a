//! Hyper-V hosts: PowerShell over SSH (`ssh://user@host[:port]`), standard checkpoints.
//!
//! One SSH connection per host runs one lasting `powershell -NoProfile -NonInteractive
//! -Command -` (PowerShell's start-up alone takes seconds on Windows), fed one script at
//! a time on standard input, and recycled after a bounded number of scripts. PowerShell
//! reads such input statement by statement and `$ErrorActionPreference = 'Stop'` would
//! only end the failing statement, so a script is a single `& { try { ... } catch { ... }
//! }` block ending in a blank line, followed by a statement writing the script's end
//! marker; it answers with marker lines (`SNAPTREE-RESULT`, `-PROGRESS`, `-DONE`,
//! `-ERROR`), not exit codes, as the session goes on after it. Every value is a single-quoted literal with its quotes
//! doubled; the statements come from the fixed set below, which the test stand-in for a
//! Windows host checks against what Hyper-V accepts.

use std::path::PathBuf;

use async_trait::async_trait;
use serde::Deserialize;

use super::session::{Lasting, Session};
use super::{Capabilities, Driver, DriverError, HostSnapshot, HostVm, Progress};
use crate::domain::state::vm_state;

/// What Hyper-V hosts can do (standard checkpoints, at most 50 per VM), and how their VM
/// states read as CloudCIX states.
pub const CAPABILITIES: Capabilities = Capabilities {
    name: "Hyper-V",
    snapshot_limit: Some(50),
    states: &[
        ("Off", vm_state::QUIESCED),
        ("Saved", vm_state::QUIESCED),
        ("FastSaved", vm_state::QUIESCED),
        ("Hibernated", vm_state::QUIESCED),
        ("Stopping", 12), // QUIESCING
        ("Saving", 12),
        ("FastSaving", 12),
    ],
    other_states: vm_state::RUNNING,
};

/// Where and how to reach the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The SSH user (ASCII letters, digits, `.`, `_`, `-`; not starting with `-`).
    pub user: String,
    /// The host's name or address, held to the same characters as `user`.
    pub host: String,
    /// The SSH port; `None`: ssh's default.
    pub port: Option<u16>,
}

impl Target {
    /// Parses `ssh://user@host[:port]`.
    pub fn parse(uri: &str) -> Result<Self, String> {
        let usage = || format!("a Hyper-V host's URI is ssh://user@host[:port], not {uri:?}");
        let rest = uri.strip_prefix("ssh://").ok_or_else(usage)?;
        let rest = rest.trim_end_matches('/');
        let (user, address) = rest.split_once('@').ok_or_else(usage)?;
        let (host, port) = match address.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.parse::<u16>().map_err(|_| usage())?)),
            None => (address, None),
        };
        let plain = |s: &str| {
            !s.is_empty()
                && !s.starts_with('-')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        };
        if !plain(user) || !plain(host) {
            return Err(usage());
        }
        Ok(Self {
            user: user.to_owned(),
            host: host.to_owned(),
            port,
        })
    }
}

/// The URI, rebuilt from its checked parts.
impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ssh://{}@{}", self.user, self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// `value` as a PowerShell single-quoted literal. PowerShell also ends such a literal at
/// the typographic single quotes, so those are doubled too; nothing else is special
/// inside one (no `$`, backtick or newline expansion).
pub fn literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}') {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// The statements the driver sends. `{vm}` and `{name}` stand for literals.
mod statements {
    pub const SET_STANDARD: &str = "Set-VM -Name {vm} -CheckpointType Standard";
    pub const CHECKPOINT: &str = "$job = Checkpoint-VM -Name {vm} -SnapshotName {name} -AsJob";
    pub const RESTORE: &str =
        "$job = Restore-VMCheckpoint -VMName {vm} -Name {name} -Confirm:$false -AsJob";
    pub const REMOVE: &str =
        "$job = Remove-VMCheckpoint -VMName {vm} -Name {name} -Confirm:$false -AsJob";
    pub const REMOVE_SUBTREE: &str = "$job = Remove-VMCheckpoint -VMName {vm} -Name {name} -IncludeAllChildCheckpoints -Confirm:$false -AsJob";
    /// Waits for `$job`, reporting its progress, and rethrows its errors.
    pub const WAIT: &[&str] = &[
        "while ($job.State -eq 'NotStarted' -or $job.State -eq 'Running') { $p = @($job.ChildJobs[0].Progress); if ($p.Count -gt 0) { Write-Output ('SNAPTREE-PROGRESS ' + $p[-1].PercentComplete) }; Start-Sleep -Milliseconds 500 }",
        "Receive-Job -Job $job -Wait -ErrorAction Stop | Out-Null",
        "Write-Output 'SNAPTREE-DONE'",
    ];
    pub const START: &str = "Start-VM -Name {vm}";
    pub const DONE: &str = "Write-Output 'SNAPTREE-DONE'";
    pub const LIST: &str = "Write-Output ('SNAPTREE-RESULT ' + (ConvertTo-Json -Compress -Depth 3 -InputObject @{ current = (Get-VM -Name {vm}).ParentSnapshotName; checkpoints = @(Get-VMCheckpoint -VMName {vm} | ForEach-Object { @{ name = $_.Name; parent = $_.ParentSnapshotName } }) }))";
    pub const STATE: &str = "Write-Output ('SNAPTREE-RESULT ' + (ConvertTo-Json -Compress -InputObject @{ state = [string](Get-VM -Name {vm}).State }))";
    pub const VMS: &str = "Write-Output ('SNAPTREE-RESULT ' + (ConvertTo-Json -Compress -InputObject @(Get-VM | ForEach-Object { @{ name = $_.Name; state = [string]$_.State } })))";
    pub const HOST: &str = "Write-Output ('SNAPTREE-RESULT ' + (ConvertTo-Json -Compress -InputObject @{ host = (Get-VMHost).Name }))";
}

/// Fills a statement's slots with literals. A literal keeps everything in it but a line
/// break: the session reads a script by lines and ends it at a blank one, so a value
/// that is not one plain line is refused (empty values fill unused slots).
fn fill(statement: &str, vm: &str, name: &str) -> Result<String, DriverError> {
    for value in [vm, name].into_iter().filter(|v| !v.is_empty()) {
        super::plain_line(value).map_err(|why| {
            DriverError::Permanent(format!("{value:?} cannot be passed to PowerShell: {why}"))
        })?;
    }
    Ok(statement
        .replace("{vm}", &literal(vm))
        .replace("{name}", &literal(name)))
}

/// The whole script around `body`, then the statement that writes end marker `n`: the
/// concatenation keeps the marker itself out of the script's text.
fn script(body: &[String], n: u32) -> String {
    let mut s = String::from(
        "& {\n$ErrorActionPreference = 'Stop'\n$ProgressPreference = 'SilentlyContinue'\ntry {\n",
    );
    for line in body {
        s.push_str(line);
        s.push('\n');
    }
    s.push_str(
        "} catch {\nWrite-Output ('SNAPTREE-ERROR ' + ($_.Exception.Message -replace '\\s+', ' '))\n}\n}\n\n",
    );
    s.push_str(&format!("Write-Output ('SNAPTREE-END ' + '{n}.')\n"));
    s
}

/// The marker that ends the answer to script `n`.
fn end_marker(n: u32) -> String {
    format!("SNAPTREE-END {n}.")
}

#[derive(Deserialize)]
struct Listing {
    /// The VM's `ParentSnapshotName`: the checkpoint it runs from; `None` without one.
    current: Option<String>,
    /// Every checkpoint of the VM (`Get-VMCheckpoint`).
    checkpoints: Vec<Checkpoint>,
}

#[derive(Deserialize)]
struct Checkpoint {
    /// The checkpoint's name.
    name: String,
    /// Its parent checkpoint's name (`ParentSnapshotName`); `None` for a root.
    parent: Option<String>,
}

#[derive(Deserialize)]
struct VmState {
    /// Hyper-V's name of the VM's state (`Running`, `Off`, `Saved`...), read by `state`.
    state: String,
}

#[derive(Deserialize)]
struct VmEntry {
    /// The VM's name, its identifier in snaptree.
    name: String,
    /// Hyper-V's name of the VM's state, as in `VmState`.
    state: String,
}

/// A Hyper-V host reached over SSH.
pub struct HypervDriver {
    /// Where and as whom to connect.
    target: Target,
    /// The ssh program.
    ssh: PathBuf,
    /// The robot's SSH key, when it has one.
    identity: Option<PathBuf>,
    /// The host's PowerShell session.
    session: Lasting,
}

/// The CloudCIX state of a Hyper-V VM state name.
fn state(name: &str) -> i32 {
    CAPABILITIES.state(name)
}

/// Whether a script may be sent again after its session died under it: only one that
/// changes nothing. A script that changes the host fails instead, and the robot's retry
/// looks at the host before it acts again (Hyper-V takes two checkpoints of one name).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// A read: sent again on a new session.
    Safe,
    /// A change: never sent twice.
    Never,
}

impl HypervDriver {
    /// A driver for `target`, its PowerShell session replaced after `scripts_per_session`
    /// scripts.
    pub fn new(
        target: Target,
        ssh: PathBuf,
        identity: Option<PathBuf>,
        scripts_per_session: u32,
    ) -> Self {
        Self {
            target,
            ssh,
            identity,
            session: Lasting::new(scripts_per_session),
        }
    }

    fn ssh_args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=15",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=3",
        ]
        .map(str::to_owned)
        .to_vec();
        if let Some(port) = self.target.port {
            args.extend(["-p".into(), port.to_string()]);
        }
        if let Some(key) = &self.identity {
            args.extend(["-i".into(), key.to_string_lossy().into_owned()]);
        }
        args.extend([
            "-l".into(),
            self.target.user.clone(),
            "--".into(),
            self.target.host.clone(),
            "powershell -NoProfile -NonInteractive -Command -".into(),
        ]);
        args
    }

    /// Runs a script in the host's session; returns its `SNAPTREE-RESULT` payload (or
    /// `DONE`'s empty one).
    async fn run(
        &self,
        vm: &str,
        body: &[String],
        progress: Option<(&Progress, &str)>,
        resend: Resend,
    ) -> Result<String, DriverError> {
        let mut again = resend == Resend::Safe;
        let text = loop {
            let mut loan = self
                .session
                .lend(|| Session::open(&self.ssh, &self.ssh_args(), &[]))
                .await?;
            let fresh = loan.fresh;
            let session = loan.session();
            let n = session.answered + 1;
            let asked = async {
                session.send(&script(body, n)).await?;
                session
                    .read_to(&end_marker(n), |line| {
                        if let (Some((progress, phase)), Some(pct)) =
                            (progress, line.strip_prefix("SNAPTREE-PROGRESS "))
                        {
                            progress.report(pct.trim().parse().ok(), phase);
                        }
                    })
                    .await
            };
            match asked.await {
                Ok(text) => {
                    loan.keep(&self.session);
                    break text;
                }
                // Kept, and dead since (the connection dropped while idle): once more on
                // a new one.
                Err(e) if e.is_transient() && !fresh && again => again = false,
                Err(DriverError::Unreachable(e)) => {
                    return Err(DriverError::Unreachable(format!(
                        "cannot reach {}: {e}",
                        self.target.host
                    )));
                }
                Err(e) => return Err(e),
            }
        };
        self.read(vm, &text)
    }

    /// The payload of a script's answer `text`, or the error it reports.
    fn read(&self, vm: &str, text: &str) -> Result<String, DriverError> {
        let mut result = None;
        for line in text.lines().map(str::trim_end) {
            if let Some(message) = line.strip_prefix("SNAPTREE-ERROR ") {
                return Err(self.sort(vm, message.trim()));
            }
            if let Some(payload) = line.strip_prefix("SNAPTREE-RESULT ") {
                result = Some(payload.to_owned());
            } else if line == "SNAPTREE-DONE" {
                result.get_or_insert_with(String::new);
            }
        }
        result.ok_or_else(|| {
            let said = text.split_whitespace().collect::<Vec<_>>().join(" ");
            DriverError::Permanent(format!(
                "{} gave no answer snaptree understands: {}",
                self.target.host,
                said.chars().take(600).collect::<String>()
            ))
        })
    }

    /// Sorts a PowerShell error.
    fn sort(&self, vm: &str, message: &str) -> DriverError {
        if message.contains("unable to find a virtual machine") {
            DriverError::NoSuchVm(format!(
                "the host has no VM named {vm:?} (Hyper-V: {message})"
            ))
        } else if ["current state", "another operation", "timed out", "busy"]
            .iter()
            .any(|t| message.to_lowercase().contains(t))
        {
            DriverError::Transient(format!("Hyper-V is busy: {message}"))
        } else {
            DriverError::Permanent(format!("Hyper-V: {message}"))
        }
    }

    async fn listing(&self, vm: &str) -> Result<Listing, DriverError> {
        let payload = self
            .run(vm, &[fill(statements::LIST, vm, "")?], None, Resend::Safe)
            .await?;
        serde_json::from_str(&payload).map_err(|e| {
            DriverError::Permanent(format!("unreadable checkpoint list from the host: {e}"))
        })
    }

    async fn job(
        &self,
        vm: &str,
        mut body: Vec<String>,
        progress: &Progress,
        phase: &str,
    ) -> Result<(), DriverError> {
        body.extend(statements::WAIT.iter().map(|s| s.to_string()));
        progress.report(Some(0), phase);
        self.run(vm, &body, Some((progress, phase)), Resend::Never)
            .await
            .map(drop)
    }
}

#[async_trait]
impl Driver for HypervDriver {
    fn connections(&self) -> Option<u64> {
        Some(self.session.opened())
    }

    async fn check(&self) -> Result<(), DriverError> {
        self.run("", &[statements::HOST.to_owned()], None, Resend::Safe)
            .await
            .map(drop)
    }

    async fn vm_state(&self, vm: &str) -> Result<i32, DriverError> {
        let payload = self
            .run(vm, &[fill(statements::STATE, vm, "")?], None, Resend::Safe)
            .await?;
        let parsed: VmState = serde_json::from_str(&payload).map_err(|e| {
            DriverError::Permanent(format!("unreadable VM state from the host: {e}"))
        })?;
        Ok(state(&parsed.state))
    }

    async fn list_vms(&self) -> Result<Vec<HostVm>, DriverError> {
        let payload = self
            .run("", &[statements::VMS.to_owned()], None, Resend::Safe)
            .await?;
        let vms: Vec<VmEntry> = serde_json::from_str(&payload).map_err(|e| {
            DriverError::Permanent(format!("unreadable VM list from the host: {e}"))
        })?;
        Ok(vms
            .into_iter()
            .map(|v| HostVm {
                state: state(&v.state),
                identifier: v.name,
            })
            .collect())
    }

    /// Hyper-V allows two checkpoints of one name, so a retried create must look first.
    async fn create(
        &self,
        vm: &str,
        snapshot: &str,
        progress: &Progress,
    ) -> Result<(), DriverError> {
        progress.report(None, "checking the host's checkpoints");
        if self
            .listing(vm)
            .await?
            .checkpoints
            .iter()
            .any(|c| c.name == snapshot)
        {
            return Ok(());
        }
        let body = vec![
            fill(statements::SET_STANDARD, vm, "")?,
            fill(statements::CHECKPOINT, vm, snapshot)?,
        ];
        self.job(vm, body, progress, "creating the checkpoint")
            .await
    }

    /// Restores, then starts the VM when the checkpoint left it saved (it ran when the
    /// checkpoint was taken).
    async fn apply(
        &self,
        vm: &str,
        snapshot: &str,
        progress: &Progress,
    ) -> Result<(), DriverError> {
        let body = vec![fill(statements::RESTORE, vm, snapshot)?];
        self.job(vm, body, progress, "restoring the checkpoint")
            .await?;
        let payload = self
            .run(vm, &[fill(statements::STATE, vm, "")?], None, Resend::Safe)
            .await?;
        let now: VmState = serde_json::from_str(&payload).map_err(|e| {
            DriverError::Permanent(format!("unreadable VM state from the host: {e}"))
        })?;
        if now.state == "Saved" {
            progress.report(Some(100), "starting the VM again");
            let body = [
                fill(statements::START, vm, "")?,
                statements::DONE.to_owned(),
            ];
            self.run(vm, &body, None, Resend::Never).await?;
        }
        Ok(())
    }

    async fn delete(
        &self,
        vm: &str,
        snapshot: &str,
        subtree: bool,
        progress: &Progress,
    ) -> Result<(), DriverError> {
        progress.report(None, "checking the host's checkpoints");
        if !self
            .listing(vm)
            .await?
            .checkpoints
            .iter()
            .any(|c| c.name == snapshot)
        {
            return Ok(()); // gone already: the goal
        }
        let statement = if subtree {
            statements::REMOVE_SUBTREE
        } else {
            statements::REMOVE
        };
        let body = vec![fill(statement, vm, snapshot)?];
        self.job(vm, body, progress, "removing the checkpoint")
            .await
    }

    async fn list(&self, vm: &str) -> Result<Vec<HostSnapshot>, DriverError> {
        let listing = self.listing(vm).await?;
        Ok(listing
            .checkpoints
            .into_iter()
            .map(|c| HostSnapshot {
                current: listing.current.as_deref() == Some(c.name.as_str()),
                name: c.name,
                parent: c.parent,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests;
