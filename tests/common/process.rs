//! snaptree as its own process, as an operator runs it: for tests that kill it or attack
//! it, and benchmarks that read its memory. The process is killed when its handle is
//! dropped, so a failing test leaves no server behind.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// `snaptree token create --project NAME --role ROLE` on `database`; the token.
pub fn token(database: &str, project: &str, role: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_snaptree"))
        .args(["token", "create", "--project", project, "--role", role])
        .args(["--database-url", database])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A running `snaptree serve`.
pub struct ServerProcess {
    child: Child,
    /// Its base URL, `http://127.0.0.1:PORT/`.
    pub url: String,
}

impl ServerProcess {
    /// `snaptree serve` on an ephemeral port with `extra` flags, ready once it has
    /// printed its address.
    pub fn start(database: &str, sim_dir: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_snaptree"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                database,
            ])
            .arg("--sim-dir")
            .arg(sim_dir)
            .args(extra)
            .env("SNAPTREE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("snaptree serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "snaptree is serving on http://127.0.0.1:PORT/ (...)"
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        Self { child, url }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory, in KiB; 0 once it has exited.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()));
        status
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
                line.split_whitespace().nth(1)?.parse().ok()
            })
            .unwrap_or(0)
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills it outright (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
