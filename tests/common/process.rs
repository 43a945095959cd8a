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
    /// The line it printed when it started (its addresses).
    pub banner: String,
}

impl ServerProcess {
    /// `snaptree serve` on an ephemeral port with `extra` flags, ready once it has
    /// printed its address.
    pub fn start(database: &str, sim_dir: &Path, extra: &[&str]) -> Self {
        Self::start_logging(database, sim_dir, extra, None)
    }

    /// Like [`ServerProcess::start`], its log (warnings and worse) going to `log`.
    pub fn start_logging(
        database: &str,
        sim_dir: &Path,
        extra: &[&str],
        log: Option<&Path>,
    ) -> Self {
        Self::start_at_level(database, sim_dir, extra, log, "warn")
    }

    /// [`Self::start_logging`] with `SNAPTREE_LOG` at `level`.
    pub fn start_at_level(
        database: &str,
        sim_dir: &Path,
        extra: &[&str],
        log: Option<&Path>,
        level: &str,
    ) -> Self {
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::null(),
        };
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
            .env("SNAPTREE_LOG", level)
            .stdout(Stdio::piped())
            .stderr(stderr)
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
        Self {
            child,
            url,
            banner: line,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory, in KiB; 0 once it has exited.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
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

    /// Asks it to stop (SIGTERM) and waits until it has.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.pid().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        self.child.wait().unwrap()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kills a server whose resident memory passes a ceiling, so that an attack that gets
/// through fails its test instead of exhausting the machine; remembers the peak.
pub struct Watchdog {
    peak_kib: std::sync::Arc<std::sync::atomic::AtomicU64>,
    tripped: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Watchdog {
    /// Watches process `pid`, killing it past `ceiling_kib`.
    pub fn new(pid: u32, ceiling_kib: u64) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let peak_kib = Arc::new(AtomicU64::new(0));
        let tripped = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (peak, trip, done) = (peak_kib.clone(), tripped.clone(), stop.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let rss = rss_kib(pid);
                peak.fetch_max(rss, Ordering::Relaxed);
                if rss > ceiling_kib {
                    trip.store(true, Ordering::Relaxed);
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        });
        Self {
            peak_kib,
            tripped,
            stop,
        }
    }

    /// The highest resident memory seen, in KiB.
    pub fn peak_kib(&self) -> u64 {
        self.peak_kib.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether it had to kill the server.
    pub fn tripped(&self) -> bool {
        self.tripped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Resident memory of process `pid`, in KiB; 0 when it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// A running `snaptree robot`, its log (warnings and worse) in `log`.
pub struct RobotProcess {
    child: Child,
}

impl RobotProcess {
    pub fn start(database: &str, sim_dir: &Path, extra: &[&str], log: &Path) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_snaptree"))
            .args(["robot", "--database-url", database])
            .arg("--sim-dir")
            .arg(sim_dir)
            .args(extra)
            .env("SNAPTREE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
            .spawn()
            .expect("snaptree robot starts");
        Self { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it outright (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks it to stop (SIGTERM), as a service manager does, and waits until it has.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        self.child.wait().unwrap()
    }
}

impl Drop for RobotProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
