//! The stand-in Windows host (`tests/hyperv/standin.py`) that the Hyper-V driver runs in
//! place of `ssh` in tests.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The stand-in host's name in the tests' host URIs (`ssh://administrator@hv1`).
pub const HOST: &str = "hv1";

/// A project, its OPERATOR token, a Hyper-V host on the stand-in and VMs `identifiers`
/// on it: (token, host id, VM ids).
pub async fn setup(
    app: &super::TestApp,
    standin: &StandIn,
    identifiers: &[&str],
) -> (String, String, Vec<String>) {
    let project = app.create_project("hv").await;
    let op = app.create_token(&project, "OPERATOR").await;
    let host = app
        .create_host(
            "hyperv-1",
            "HYPERV",
            &format!("ssh://administrator@{HOST}"),
            None,
        )
        .await;
    let mut vms = Vec::new();
    for identifier in identifiers {
        standin.add_vm(HOST, identifier);
        vms.push(app.register_vm(&host, &project, identifier).await);
    }
    (op, host, vms)
}

/// One stand-in host directory, with the wrapper the driver runs as its ssh.
pub struct StandIn {
    pub dir: PathBuf,
    pub ssh: PathBuf,
}

fn script() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hyperv/standin.py").to_owned()
}

impl StandIn {
    pub fn new(dir: &Path) -> Self {
        let dir = dir.join("hyperv");
        std::fs::create_dir_all(&dir).unwrap();
        let ssh = dir.join("ssh");
        std::fs::write(
            &ssh,
            format!(
                "#!/bin/sh\nexec python3 '{}' --state-dir '{}' \"$@\"\n",
                script(),
                dir.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { dir, ssh }
    }

    fn admin(&self, host: &str, args: &[&str]) -> String {
        let out = Command::new("python3")
            .arg(script())
            .args(["--state-dir", self.dir.to_str().unwrap(), "--host", host])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn add_vm(&self, host: &str, vm: &str) {
        self.admin(host, &["--add-vm", vm]);
    }

    pub fn add_checkpoint(&self, host: &str, vm: &str, name: &str) {
        self.admin(host, &["--add-checkpoint", vm, name]);
    }

    /// The VM as the host has it: `{ state, current, checkpoints: [{ name, parent }] }`.
    pub fn dump(&self, host: &str, vm: &str) -> Value {
        serde_json::from_str(&self.admin(host, &["--dump", vm])).unwrap()
    }

    /// (name, parent) pairs, sorted, and the current checkpoint.
    pub fn tree(&self, host: &str, vm: &str) -> (Vec<(String, Option<String>)>, Option<String>) {
        let d = self.dump(host, vm);
        let mut pairs: Vec<_> = d["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_owned(),
                    c["parent"].as_str().map(str::to_owned),
                )
            })
            .collect();
        pairs.sort();
        (pairs, d["current"].as_str().map(str::to_owned))
    }

    /// Makes the host unreachable (ssh fails) or reachable again.
    pub fn set_down(&self, host: &str, down: bool) {
        let marker = self.dir.join(format!("{host}.down"));
        if down {
            std::fs::write(marker, "").unwrap();
        } else {
            let _ = std::fs::remove_file(marker);
        }
    }

    /// Sessions the host has opened so far.
    pub fn sessions(&self, host: &str) -> usize {
        std::fs::read_to_string(self.dir.join(format!("{host}.sessions")))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// Makes the open session die at its next script that contains `text`, once:
    /// `"before"` running it, or `"after"` (it ran, and never answered).
    pub fn crash_next(&self, host: &str, when: &str, text: &str) {
        std::fs::write(
            self.dir.join(format!("{host}.crash")),
            format!("{when} {text}"),
        )
        .unwrap();
    }

    /// Whether the next crash is still to come.
    pub fn crash_pending(&self, host: &str) -> bool {
        self.dir.join(format!("{host}.crash")).exists()
    }

    /// Makes the host stop answering at its next script, or answer again.
    pub fn set_hung(&self, host: &str, hung: bool) {
        let marker = self.dir.join(format!("{host}.hang"));
        if hung {
            std::fs::write(marker, "").unwrap();
        } else {
            let _ = std::fs::remove_file(marker);
        }
    }
}
