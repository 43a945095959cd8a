//! Real libvirt for tests: a tiny QEMU domain (software emulation, no guest OS), and
//! virsh's own view of its snapshots to compare snaptree's with.
//!
//! Without libvirt the tests that need it are skipped, unless
//! `SNAPTREE_TEST_REQUIRE_LIBVIRT=1` (CI sets it), which makes its absence a failure.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub const URI: &str = "qemu:///system";

/// Runs `virsh -c qemu:///system args`; its stdout, or its stderr as the error.
pub fn virsh(args: &[&str]) -> Result<String, String> {
    let out = Command::new("virsh")
        .args(["-q", "-c", URI])
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Like [`virsh`], waiting out a libvirtd that is restarting (up to 30 s of connection
/// errors): tests that restart it still read its answers.
pub fn virsh_patiently(args: &[&str]) -> Result<String, String> {
    const LOST: &[&str] = &[
        "failed to connect",
        "Disconnected from",
        "client socket is closed",
        "Cannot recv data",
        "Connection refused",
    ];
    for _ in 0..300 {
        match virsh(args) {
            Err(e) if LOST.iter().any(|m| e.contains(m)) => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            answer => return answer,
        }
    }
    virsh(args)
}

/// Whether the tests may use libvirt; skipping is only allowed when not required.
pub fn available() -> bool {
    if virsh(&["version"]).is_ok() {
        return true;
    }
    assert!(
        std::env::var("SNAPTREE_TEST_REQUIRE_LIBVIRT").as_deref() != Ok("1"),
        "SNAPTREE_TEST_REQUIRE_LIBVIRT=1 but libvirtd does not answer at {URI}"
    );
    eprintln!("skipped: libvirtd does not answer at {URI}");
    false
}

/// Starts libvirtd again however the test that stopped it ends.
pub struct Restart;

impl Drop for Restart {
    fn drop(&mut self) {
        start_libvirtd();
    }
}

/// Starts libvirtd, unless it answers already, and waits until it does.
pub fn start_libvirtd() {
    if virsh(&["version"]).is_ok() {
        return;
    }
    let _ = Command::new("libvirtd").arg("-d").status();
    for _ in 0..100 {
        if virsh(&["version"]).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("libvirtd did not come back");
}

/// [`stop_libvirtd`] on a thread of its own: the test's runtime, and a server in it,
/// go on meanwhile (a runtime blocked for seconds stalls its server and its clients'
/// connections, which no real client or server meets).
pub async fn stop() {
    tokio::task::spawn_blocking(stop_libvirtd).await.unwrap();
}

/// [`start_libvirtd`] on a thread of its own, as [`stop`].
pub async fn start() {
    tokio::task::spawn_blocking(start_libvirtd).await.unwrap();
}

/// Stops libvirtd (its domains keep running) and waits until it no longer answers.
pub fn stop_libvirtd() {
    let _ = Command::new("pkill").args(["-x", "libvirtd"]).status();
    for _ in 0..100 {
        // Gone, not only silent: a libvirtd still ending holds its pidfile, and a new
        // one would not start.
        let running = Command::new("pgrep")
            .args(["-x", "libvirtd"])
            .output()
            .is_ok_and(|out| out.status.success());
        if !running && virsh(&["version"]).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("libvirtd did not stop");
}

/// A tiny domain, defined for one test and undefined (with its snapshots) after it.
pub struct TestDomain {
    pub name: String,
    pub disk: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestDomain {
    /// Defines (and with `running`, starts) a new domain.
    pub fn new(running: bool) -> Self {
        Self::with_os(
            running,
            "<os><type arch='x86_64' machine='pc'>hvm</type></os>",
        )
    }

    /// Defines (not started) a domain that boots with UEFI firmware (OVMF, in pflash,
    /// its variables in a raw file), as virt-install's `--boot uefi` makes.
    pub fn uefi() -> Self {
        Self::with_os(
            false,
            "<os><type arch='x86_64' machine='pc'>hvm</type>\
             <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>\
             <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>NVRAM</nvram></os>\
             <features><acpi/></features>",
        )
    }

    /// Defines (and with `running`, starts) a new domain with `os` (its `<os>` element
    /// and any features; `NVRAM` stands for a file of its own).
    fn with_os(running: bool, os: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // QEMU runs as another user: it must reach the disk.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let name = format!(
            "snaptree-test-{}-{:06x}",
            std::process::id(),
            fastrand::u32(..0xFF_FFFF)
        );
        let disk = dir.path().join("disk.qcow2");
        let made = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&disk)
            .arg("16M")
            .status()
            .unwrap();
        assert!(made.success());
        let os = os.replace("NVRAM", &dir.path().join("vars.fd").display().to_string());
        let xml = format!(
            "<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
             {os}<devices>\
             <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
             <source file='{}'/><target dev='vda' bus='virtio'/></disk></devices></domain>",
            disk.display()
        );
        let xml_path = dir.path().join("domain.xml");
        std::fs::write(&xml_path, xml).unwrap();
        virsh(&["define", xml_path.to_str().unwrap()]).expect("the domain is defined");
        if running {
            virsh(&["start", &name]).expect("the domain starts");
        }
        Self {
            name,
            disk,
            _dir: dir,
        }
    }

    /// The domain's snapshot tree as `virsh snapshot-list --tree` draws it:
    /// (name, parent) pairs, sorted.
    pub fn tree(&self) -> Vec<(String, Option<String>)> {
        let drawn = virsh_patiently(&["snapshot-list", "--domain", &self.name, "--tree"]).unwrap();
        let mut stack: Vec<String> = Vec::new();
        let mut pairs = Vec::new();
        for line in drawn.lines() {
            let (depth, name) = match line.find("+- ") {
                Some(at) => (at / 4 + 1, line[at + 3..].trim()),
                None if line.trim().is_empty() || line.trim() == "|" => continue,
                None if line.trim_start().starts_with('|') => continue,
                None => (0, line.trim()),
            };
            stack.truncate(depth);
            pairs.push((name.to_owned(), stack.last().cloned()));
            stack.push(name.to_owned());
        }
        pairs.sort();
        pairs
    }

    /// `virsh snapshot-current --name`, or `None` without one.
    pub fn current(&self) -> Option<String> {
        virsh_patiently(&["snapshot-current", "--domain", &self.name, "--name"])
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }
}

impl Drop for TestDomain {
    fn drop(&mut self) {
        let _ = virsh_patiently(&["destroy", &self.name]);
        let _ = virsh_patiently(&["undefine", "--snapshots-metadata", "--nvram", &self.name]);
    }
}
