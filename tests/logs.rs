//! Logs (issue 11): with `--log-format json`, one JSON object per line; one line per
//! request, with the id the response sent back as `x-request-id`, and one per task
//! step (started, ended) with the task's id; no token, and no query string, in any line.
//! Against a server process on SQLite.

mod common;

use std::path::Path;

use common::process::{self, ServerProcess};
use serde_json::{Value, json};

fn lines(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
        .collect()
}

#[tokio::test]
async fn json_logs_carry_request_and_task_ids_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("l.db").display());
    let admin = process::token(&db, "ops", "ADMIN");
    let log = dir.path().join("server.log");
    let mut server = ServerProcess::start_at_level(
        &db,
        &dir.path().join("sim"),
        &["--log-format", "json"],
        Some(&log),
        "info",
    );
    let api = common::Api::new(&server.url, admin.clone());
    let f = api.project_with_vm("p", "sim://").await;
    let (_, task) = api.create_snapshot(&f.operator, &f.vm, "s").await;
    assert_eq!(api.finished(&f.operator, &task).await["state"], "SUCCEEDED");

    let secret_query = "query-secret-123";
    let response = reqwest::Client::new()
        .get(format!(
            "{}graphql?query=%7Bme%7Bname%7D%7D&x={secret_query}",
            server.url
        ))
        .bearer_auth(&f.operator)
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(response.status(), 200);
    server.terminate();

    let lines = lines(&log);
    let answered: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "snaptree::access")
        .collect();
    let mine = answered
        .iter()
        .find(|l| l["span"]["id"] == id.as_str())
        .unwrap_or_else(|| panic!("no line for request {id}: {answered:#?}"));
    assert_eq!(mine["span"]["method"], "GET");
    assert_eq!(mine["span"]["path"], "/graphql");
    assert_eq!(mine["fields"]["status"], 200);
    assert!(mine["fields"]["ms"].as_f64().is_some());
    let ids: std::collections::HashSet<&str> = answered
        .iter()
        .map(|l| l["span"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        answered.len(),
        "one line per request, each its own id"
    );

    let steps: Vec<(&str, &Value)> = lines
        .iter()
        .filter(|l| l["span"]["name"] == "task")
        .map(|l| (l["fields"]["message"].as_str().unwrap(), &l["span"]))
        .collect();
    let task_id: i64 = task.parse().unwrap();
    let of_task: Vec<&str> = steps
        .iter()
        .filter(|(_, span)| span["id"] == json!(task_id))
        .map(|(m, _)| *m)
        .collect();
    assert_eq!(of_task, ["task started", "task ended"], "{steps:#?}");
    let ended = lines
        .iter()
        .find(|l| l["fields"]["message"] == "task ended")
        .unwrap();
    assert_eq!(ended["fields"]["state"], "SUCCEEDED");
    assert_eq!(ended["span"]["kind"], "BUILD");

    let text = std::fs::read_to_string(&log).unwrap();
    for secret in [admin.as_str(), f.operator.as_str(), secret_query] {
        assert!(!text.contains(secret), "{secret} is in the log");
    }
}
