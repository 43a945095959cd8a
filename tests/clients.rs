//! The clients people already use, unchanged (issue 31): Apollo Client 4 (pinned in
//! `tests/apollo`'s lockfile) with `PersistedQueryLink` and `BatchHttpLink` against two
//! server processes on one database, the second answering a hash the first learned.
//! Needs node and `npm ci --prefix tests/apollo`; without them the test is skipped,
//! unless `SNAPTREE_TEST_REQUIRE_NODE=1` (CI sets it).

mod common;

use common::process::{self, ServerProcess};
use common::{Api, TestDb};

#[tokio::test]
async fn apollo_clients_persisted_queries_and_batches_work_unchanged() {
    let Some(dir) = common::node_package("apollo", "@apollo/client") else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let db = TestDb::new(data.path()).await;
    let admin = process::token(&db.cli_url(), "ops", "ADMIN");
    let first = ServerProcess::start(&db.cli_url(), &data.path().join("sim"), &["--no-robot"]);
    let second = ServerProcess::start(&db.cli_url(), &data.path().join("sim"), &["--no-robot"]);
    let api = Api::new(&first.url, admin);
    let project = api.create_project("apollo").await;
    let operator = api.create_token(&project, "OPERATOR").await;
    let run = tokio::process::Command::new("node")
        .arg(dir.join("apollo.mjs"))
        .env(
            "SNAPTREE_URLS",
            format!("{}graphql {}graphql", first.url, second.url),
        )
        .env("SNAPTREE_TOKEN", &operator)
        .output()
        .await
        .expect("node runs");
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(out.matches("ok: ").count(), 4, "{out}");
}
