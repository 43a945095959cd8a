//! What an operator loads into their monitoring (issue 30): the alerting rules pass
//! `promtool check rules` and their unit tests (`promtool test rules`), and every metric
//! the rules and the Grafana dashboard name is one a real server serves, with the
//! values the alerts read (a project's oldest snapshot and longest chain, a host that
//! answers or not).

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::{METRICS_TOKEN, TestApp, scrape, value};
use snaptree::monitoring::{DASHBOARD, RULES, RULES_TESTS};

/// Whether promtool can run; without it the test fails when the environment requires
/// it (CI), and is skipped otherwise.
fn promtool() -> bool {
    let found = Command::new("promtool").arg("--version").output().is_ok();
    if !found && std::env::var("SNAPTREE_TEST_REQUIRE_PROMTOOL").as_deref() == Ok("1") {
        panic!(
            "promtool is required (SNAPTREE_TEST_REQUIRE_PROMTOOL=1): apt-get install prometheus"
        );
    }
    if !found {
        eprintln!("skipped: no promtool (Debian's prometheus package)");
    }
    found
}

#[test]
fn the_rules_pass_promtool_and_their_unit_tests() {
    if !promtool() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yml"), RULES).unwrap();
    std::fs::write(dir.path().join("rules.test.yml"), RULES_TESTS).unwrap();
    for args in [
        ["check", "rules", "rules.yml"],
        ["test", "rules", "rules.test.yml"],
    ] {
        let run = Command::new("promtool")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
    }
}

/// The metric names in `text` (`snaptree_...`), as a scrape shows them.
fn names(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("snaptree_") {
        let name: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        found.insert(name);
    }
    found
}

#[tokio::test]
async fn every_metric_the_rules_and_the_dashboard_read_is_served() {
    let app = TestApp::spawn().await;
    let f = app.project_with_vm("watched", "sim://").await;
    let op = f.operator.as_str();
    // A chain of three, and a failed create (a host call error) on another host.
    for name in ["a", "b", "c"] {
        app.snapshot_built(op, &f.vm, name).await;
    }
    let failing = app
        .create_host(
            "failing",
            "SIMULATED",
            "sim://?fail_rate=1&fail_on=create",
            None,
        )
        .await;
    let vm = app.create_vm(&failing, &f.project, "doomed").await;
    let (_, task) = app.create_snapshot(op, &vm, "never").await;
    assert_eq!(app.finished(op, &task).await["state"], "FAILED");
    // And a task running on a slow host while the server is scraped.
    let slow = app
        .create_host("slow", "SIMULATED", "sim://?latency_ms=600000", None)
        .await;
    let vm = app.create_vm(&slow, &f.project, "slow").await;
    let (_, task) = app.create_snapshot(op, &vm, "slowly").await;
    let query = "query($t: ID!) { task(id: $t) { state } }";
    while app.data(op, query, serde_json::json!({ "t": task })).await["task"]["state"] != "RUNNING"
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let (status, text) = scrape(&app, Some(METRICS_TOKEN)).await;
    assert_eq!(status, 200);
    let served = names(&text);
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    let wanted: BTreeSet<String> = names(RULES)
        .into_iter()
        .chain(exprs.iter().flat_map(|e| names(e)))
        .collect();
    let missing: Vec<&String> = wanted.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "named but not served: {missing:?}\n{text}"
    );

    // The values the alerts read.
    let scraped = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let project = [("project", "watched")];
    assert_eq!(
        value(&scraped, "snaptree_snapshot_chain_depth_max", &project),
        3.0
    );
    assert_eq!(value(&scraped, "snaptree_snapshots_open", &project), 5.0);
    let age = value(&scraped, "snaptree_snapshot_oldest_age_seconds", &project);
    assert!((0.0..600.0).contains(&age), "{age}");
    assert_eq!(
        value(&scraped, "snaptree_host_reachable", &[("host", "failing")]),
        1.0,
        "a host that answers, even with a failure, is reachable"
    );
}
