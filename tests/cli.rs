//! `snaptree snapshot ...` as a script runs it (issue 11): a separate process against a
//! server process, through the public API only. Each command with and without `--wait`,
//! text and `--json`, every exit code, and a token that never shows in the process list.
//! On SQLite, or PostgreSQL with `SNAPTREE_TEST_DATABASE=postgres`.

mod common;

use std::process::{Command, Output, Stdio};

use common::process::{self, ServerProcess};
use common::{Api, TestDb};
use serde_json::{Value, json};

/// A server process, an ADMIN's client of it, and a project with a VM.
struct Setup {
    server: ServerProcess,
    api: Api,
    operator: String,
    vm: String,
    /// Kept for the test's length: a PostgreSQL database is dropped with it.
    _db: TestDb,
    _dir: tempfile::TempDir,
}

async fn setup(uri: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path()).await;
    let admin = process::token(&db.cli_url(), "ops", "ADMIN");
    let server = ServerProcess::start(&db.cli_url(), &dir.path().join("sim"), &[]);
    let api = Api::new(&server.url, admin);
    let f = api.project_with_vm("cli", uri).await;
    Setup {
        server,
        api,
        operator: f.operator,
        vm: f.vm,
        _db: db,
        _dir: dir,
    }
}

impl Setup {
    /// `snaptree snapshot ARGS` with the operator's token in the environment.
    fn cli(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_snaptree"));
        command
            .arg("snapshot")
            .args(args)
            .env("SNAPTREE_URL", &self.server.url)
            .env("SNAPTREE_TOKEN", &self.operator)
            .env_remove("SNAPTREE_LOG");
        command
    }

    /// Runs the command to its end, off the test's runtime.
    async fn run(&self, args: &[&str]) -> Output {
        let mut command = self.cli(args);
        tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap()
    }

    /// Runs `args` with `--json`: the exit code and the document printed.
    async fn json(&self, args: &[&str]) -> (i32, Value) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all).await;
        let stdout = String::from_utf8(out.stdout).unwrap();
        let value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{e}: not one JSON document: {stdout:?}"));
        (out.status.code().unwrap(), value)
    }
}

fn text(out: &Output) -> (i32, String, String) {
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn every_command_with_and_without_wait() {
    let s = setup("sim://").await;
    let vm = s.vm.as_str();

    // create, without --wait: queued; the task ends on its own.
    let (code, doc) = s.json(&["create", "--vm", vm, "base"]).await;
    assert_eq!(code, 0, "{doc}");
    let base = doc["snapshot"]["id"].as_str().unwrap().to_owned();
    let task = doc["task"]["id"].as_str().unwrap();
    assert_eq!(doc["task"]["kind"], "BUILD");
    assert_eq!(
        s.api.finished(&s.operator, task).await["state"],
        "SUCCEEDED"
    );

    // create --wait, in text: it returns when the task has ended.
    let out = s
        .run(&[
            "create",
            "--vm",
            vm,
            "before-upgrade",
            "--description",
            "d",
            "--wait",
        ])
        .await;
    let (code, stdout, stderr) = text(&out);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("created snapshot "), "{stdout}");
    // Not a terminal: progress is one plain line per event, ending with the last.
    assert!(
        stderr.lines().last().unwrap().starts_with("SUCCEEDED 100%"),
        "{stderr}"
    );
    let upgrade = s.api.active(&s.operator, vm).await.unwrap();

    // apply --wait --json, with the current state saved first.
    let (code, doc) = s
        .json(&["apply", &base, "--save-current-as", "saved", "--wait"])
        .await;
    assert_eq!(
        (code, doc["task"]["state"].as_str()),
        (0, Some("SUCCEEDED")),
        "{doc}"
    );
    assert_eq!(
        s.api.active(&s.operator, vm).await.as_deref(),
        Some(base.as_str())
    );

    // apply without --wait, revert with and without.
    let (code, doc) = s.json(&["apply", &upgrade]).await;
    assert_eq!(code, 0, "{doc}");
    s.api
        .finished(&s.operator, doc["task"]["id"].as_str().unwrap())
        .await;
    let (code, doc) = s.json(&["revert", "--vm", vm, "--wait"]).await;
    assert_eq!(
        (code, doc["task"]["state"].as_str()),
        (0, Some("SUCCEEDED")),
        "{doc}"
    );
    let (code, doc) = s.json(&["revert", "--vm", vm]).await;
    assert_eq!(code, 0, "{doc}");
    s.api
        .finished(&s.operator, doc["task"]["id"].as_str().unwrap())
        .await;

    // tree and list, as text and as JSON, agree with the API.
    let tree = s.api.tree(&s.operator, vm).await;
    assert_eq!(tree.len(), 3);
    let (code, doc) = s.json(&["tree", "--vm", vm]).await;
    assert_eq!(code, 0);
    let root = &doc["tree"][0];
    assert_eq!(root["id"], base.as_str());
    let children: Vec<&str> = root["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(children, ["before-upgrade"]);
    // The save is a child of the snapshot that was active then.
    assert_eq!(root["children"][0]["children"][0]["name"], "saved");
    let out = s.run(&["tree", "--vm", vm]).await;
    let (code, stdout, _) = text(&out);
    assert_eq!(code, 0);
    assert_eq!(
        stdout,
        format!(
            "base [{base}]\n`- before-upgrade [{upgrade}] *current\n   `- saved [{}]\n",
            tree[2].0
        )
    );
    let (code, doc) = s.json(&["list", "--vm", vm]).await;
    assert_eq!(code, 0);
    assert_eq!(doc.as_array().unwrap().len(), 3);
    assert_eq!(doc[1]["active"], true);
    let out = s.run(&["list", "--vm", vm]).await;
    let (_, stdout, _) = text(&out);
    assert_eq!(
        stdout.lines().count(),
        4,
        "a header and a line per snapshot: {stdout}"
    );
    assert!(
        stdout.lines().nth(2).unwrap().contains("current"),
        "{stdout}"
    );

    // protect: the tree says so, and a delete of the subtree is refused (exit 3, with
    // the reason) until unprotect.
    let (code, doc) = s.json(&["protect", &base]).await;
    assert_eq!((code, &doc["protected"]), (0, &json!(true)), "{doc}");
    let out = s.run(&["tree", "--vm", vm]).await;
    assert!(text(&out).1.contains("(protected)"), "{}", text(&out).1);
    let out = s.run(&["delete", &base, "--subtree", "--wait"]).await;
    let (code, stdout, stderr) = text(&out);
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(stderr.contains("is protected"), "{stderr}");
    let out = s.run(&["unprotect", &base]).await;
    let (code, stdout, _) = text(&out);
    assert_eq!(code, 0);
    assert!(stdout.contains("unprotected"), "{stdout}");

    // expire: an expiry set (and shown in the tree and the list), then removed.
    let (code, doc) = s.json(&["expire", &base, "--expires-in", "36h"]).await;
    assert_eq!(code, 0, "{doc}");
    let at = doc["expiresAt"].as_str().unwrap().to_owned();
    let out = s.run(&["tree", "--vm", vm]).await;
    assert!(
        text(&out).1.contains(&format!("(expires {at})")),
        "{}",
        text(&out).1
    );
    let out = s.run(&["list", "--vm", vm]).await;
    assert!(
        text(&out).1.contains(&format!("expires {at}")),
        "{}",
        text(&out).1
    );
    let out = s
        .run(&["expire", &base, "--expires-at", "2000-01-01T00:00:00Z"])
        .await;
    let (code, _, stderr) = text(&out);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("not in the future"), "{stderr}");
    let out = s.run(&["expire", &base]).await;
    assert_eq!(
        text(&out).0,
        2,
        "one of --expires-in, --expires-at or --never"
    );
    let out = s.run(&["expire", &base, "--never"]).await;
    let (code, stdout, _) = text(&out);
    assert_eq!(code, 0);
    assert!(stdout.contains("never expires"), "{stdout}");

    // delete without --wait; delete --subtree --wait.
    let saved = tree[2].0.clone();
    let (code, doc) = s.json(&["delete", &saved]).await;
    assert_eq!(code, 0, "{doc}");
    s.api
        .finished(&s.operator, doc["task"]["id"].as_str().unwrap())
        .await;
    let out = s.run(&["delete", &base, "--subtree", "--wait"]).await;
    let (code, stdout, stderr) = text(&out);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("deleted snapshot "), "{stdout}");
    assert!(s.api.tree(&s.operator, vm).await.is_empty());
    let out = s.run(&["tree", "--vm", vm]).await;
    assert_eq!(text(&out).1, "(no snapshots)\n");
}

#[tokio::test]
async fn exit_codes_tell_a_script_what_happened() {
    // A host whose creates fail for good: the task fails.
    let s = setup("sim://?fail_rate=1&fail_on=create").await;
    let vm = s.vm.as_str();
    let (code, doc) = s.json(&["create", "--vm", vm, "doomed", "--wait"]).await;
    assert_eq!(code, 1, "the task failed: {doc}");
    assert_eq!(doc["task"]["state"], "FAILED");
    assert!(
        doc["task"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{doc}"
    );
    let out = s.run(&["create", "--vm", vm, "doomed-too", "--wait"]).await;
    let (code, stdout, _) = text(&out);
    assert_eq!(code, 1);
    assert!(stdout.contains("failed"), "{stdout}");

    // Refused by the server: 3, with its code.
    let (code, doc) = s.json(&["apply", "999999"]).await;
    assert_eq!(
        (code, doc["error"]["code"].as_str()),
        (3, Some("NOT_FOUND")),
        "{doc}"
    );
    let (code, doc) = s.json(&["create", "--vm", vm, " "]).await;
    assert_eq!(
        (code, doc["error"]["code"].as_str()),
        (3, Some("VALIDATION")),
        "{doc}"
    );
    let mut viewer = s.cli(&["--json", "create", "--vm", vm, "v", "--wait"]);
    let project = s
        .api
        .data(
            &s.api.admin,
            "{ projects { id name } }",
            serde_json::json!({}),
        )
        .await["projects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "cli")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    viewer.env(
        "SNAPTREE_TOKEN",
        s.api.create_token(&project, "VIEWER").await,
    );
    let out = tokio::task::spawn_blocking(move || viewer.output().unwrap())
        .await
        .unwrap();
    let (code, stdout, _) = text(&out);
    assert_eq!(code, 3, "{stdout}");
    assert!(stdout.contains("\"FORBIDDEN\""), "{stdout}");
    let mut bad = s.cli(&["--json", "list", "--vm", vm]);
    bad.env("SNAPTREE_TOKEN", "snaptree_not-a-token");
    let out = tokio::task::spawn_blocking(move || bad.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("UNAUTHENTICATED"));

    // Bad usage: 2 (no token; a token as an argument is no option at all).
    let mut no_token = s.cli(&["list", "--vm", vm]);
    no_token.env_remove("SNAPTREE_TOKEN");
    assert_eq!(no_token.output().unwrap().status.code(), Some(2));
    let out = s.run(&["list", "--vm", vm, "--token", "x"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(s.run(&["frobnicate"]).await.status.code(), Some(2));

    // Nothing listening: 4.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", closed.local_addr().unwrap());
    drop(closed);
    let mut unreachable = s.cli(&["--json", "list", "--vm", vm]);
    unreachable.env("SNAPTREE_URL", &url);
    let out = unreachable.output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"UNREACHABLE\""));
    let mut not_a_url = s.cli(&["list", "--vm", vm]);
    not_a_url.env("SNAPTREE_URL", "ftp://127.0.0.1/");
    assert_eq!(not_a_url.output().unwrap().status.code(), Some(4));
}

/// While `create --wait` runs, no process's command line holds the token.
#[tokio::test]
async fn the_token_never_shows_in_the_process_list() {
    let s = setup("sim://?latency_ms=1500").await;
    let mut command = s.cli(&["create", "--vm", &s.vm, "slow", "--wait"]);
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once it prints progress, it is following the task.
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let first = tokio::task::spawn_blocking(move || (lines.next(), lines))
        .await
        .unwrap();
    assert!(first.0.is_some(), "progress is printed");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains("create"), "{cmdline}");
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(ps.contains("snapshot create"), "ps lists the command");
    for shown in [cmdline.as_str(), &*ps] {
        assert!(!shown.contains(&s.operator), "the token is in {shown}");
    }
    // The script stops reading: the command still ends as the task does.
    drop(first.1);
    assert_eq!(
        tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap()
            .code(),
        Some(0)
    );
}
