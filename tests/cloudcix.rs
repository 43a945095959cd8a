//! CloudCIX's own Python client (`cloudcix` from PyPI, pinned in
//! `tests/cloudcix/requirements.txt`, unmodified) against a `snaptree serve` process:
//! `tests/cloudcix/drive.py` takes every action, lists, reads, the tree and history, and
//! one error of each kind, checking each answer against CloudCIX's contract. Needs the
//! client in `tests/cloudcix/.venv`; without it the test is skipped, unless
//! `SNAPTREE_TEST_REQUIRE_CLOUDCIX=1` (CI sets it and installs the client).

mod common;

use std::path::Path;

use common::Api;
use common::process::{self, ServerProcess};

#[tokio::test]
async fn cloudcix_python_client_works_unchanged() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cloudcix");
    let python = dir.join(".venv/bin/python");
    let ready = std::process::Command::new(&python)
        .args([
            "-c",
            "import importlib.util, sys; sys.exit(importlib.util.find_spec('cloudcix') is None)",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ready {
        assert!(
            std::env::var("SNAPTREE_TEST_REQUIRE_CLOUDCIX").as_deref() != Ok("1"),
            "SNAPTREE_TEST_REQUIRE_CLOUDCIX=1 but tests/cloudcix/.venv has no cloudcix client"
        );
        eprintln!("skipped: tests/cloudcix/.venv has no cloudcix client");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let db = common::TestDb::new(data.path()).await;
    let admin = process::token(&db.cli_url(), "ops", "ADMIN");
    // The client polls for tasks far faster than a tenant's budget allows.
    let server = ServerProcess::start(
        &db.cli_url(),
        &data.path().join("sim"),
        &[
            "--rate-limit",
            "OPERATOR=none",
            "--rate-limit",
            "VIEWER=none",
        ],
    );
    let api = Api::new(&server.url, admin);
    let project = api.create_project("tenant").await;
    let operator = api.create_token(&project, "OPERATOR").await;
    let viewer = api.create_token(&project, "VIEWER").await;
    let host = api.create_host("sim", "SIMULATED", "sim://", None).await;
    let vm = api.create_vm(&host, &project, "web").await;
    let other_project = api.create_project("other").await;
    let other_vm = api.create_vm(&host, &other_project, "theirs").await;
    let other = api.snapshot_built(&api.admin, &other_vm, "secret").await;
    let port = server
        .url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();

    let run = tokio::process::Command::new(&python)
        .arg(dir.join("drive.py"))
        .env("SNAPTREE_PORT", port)
        .env("SNAPTREE_TOKEN", &operator)
        .env("SNAPTREE_VIEWER", &viewer)
        .env("SNAPTREE_VM", &vm)
        .env("SNAPTREE_OTHER_SNAPSHOT", &other)
        .output()
        .await
        .expect("python runs");
    let out = String::from_utf8_lossy(&run.stdout);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{out}{err}");
    assert!(out.contains("all checks hold"), "{out}{err}");
    let checks = out.lines().filter(|l| l.starts_with("ok: ")).count();
    assert!(checks > 60, "only {checks} checks ran:\n{out}");
    drop(server);
}
