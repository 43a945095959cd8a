//! The dashboard in real Chromium: `tests/browser/dashboard.mjs` drives it through
//! playwright-core against a server started here. Needs Debian's chromium and
//! `npm ci --prefix tests/browser`; without them the test is skipped, unless
//! `SNAPTREE_TEST_REQUIRE_BROWSER=1` (CI sets it).

mod common;

use std::path::Path;
use std::process::Command;

use common::TestApp;

fn available() -> bool {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let ready = Path::new("/usr/bin/chromium").exists()
        && dir.join("node_modules/playwright-core").exists()
        && Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !ready {
        assert!(
            std::env::var("SNAPTREE_TEST_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "SNAPTREE_TEST_REQUIRE_BROWSER=1 but chromium, node or tests/browser/node_modules is missing"
        );
        eprintln!("skipped: chromium, node or tests/browser/node_modules is missing");
    }
    ready
}

#[tokio::test]
async fn the_dashboard_in_chromium() {
    if !available() {
        return;
    }
    let app = TestApp::spawn().await;
    let project = app.create_project("demo").await;
    let op = app.create_token(&project, "OPERATOR").await;
    let slow = app
        .create_host("sim-slow", "SIMULATED", "sim://?latency_ms=800", None)
        .await;
    app.create_vm(&slow, &project, "web").await;
    // A VM at its host's limit of 50, as a Hyper-V host would have it.
    let limited = app
        .create_host("sim-hyperv-like", "SIMULATED", "sim://", Some(50))
        .await;
    let full = app.create_vm(&limited, &project, "full").await;
    for i in 0..50 {
        app.snapshot_built(&op, &full, &format!("s{i}")).await;
    }

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.mjs");
    let run = tokio::process::Command::new("node")
        .arg(script)
        .env("SNAPTREE_URL", app.url.trim_end_matches("graphql"))
        .env("SNAPTREE_TOKEN", &op)
        .env("SCREENSHOTS", &shots)
        .output()
        .await
        .expect("node runs");
    let out = String::from_utf8_lossy(&run.stdout);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the browser scenario failed:\n{out}\n{err}"
    );
    assert!(out.contains("ok: dashboard scenario passed"), "{out}");
}
