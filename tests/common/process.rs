//! snaptree as its own process, as an operator runs it: for tests that kill it, and
//! benchmarks that read its memory.

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

/// `snaptree serve` on an ephemeral port with `extra` flags; the process and its base URL
/// (`http://127.0.0.1:PORT/`), read from the line it prints when it is ready.
pub fn serve(database: &str, sim_dir: &Path, extra: &[&str]) -> (Child, String) {
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
    (child, url)
}
