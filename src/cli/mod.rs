//! `snaptree snapshot ...`: the five actions, a VM's tree and its list, against a
//! server, for scripts (the way `virsh snapshot-*`, `qm snapshot` and `govc snapshot.*`
//! are used). It speaks the public GraphQL API only ([`client`]). The token comes from
//! `SNAPTREE_TOKEN` and never from an argument, which every user of the machine could
//! read in the process list.
//!
//! Exit codes, for a script to branch on:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done (with `--wait`: the task succeeded) |
//! | 1 | the task failed or was cancelled (`--wait`) |
//! | 2 | bad usage (an unknown flag, no token) |
//! | 3 | the server refused; its code (`LIMIT_REACHED`, `VM_BUSY`, ...) is printed |
//! | 4 | the server cannot be reached |

mod client;
mod show;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

pub use client::{Client, Failure};

/// Exit codes (see the module's table).
pub const TASK_FAILED: u8 = 1;
pub const USAGE: u8 = 2;
pub const REFUSED: u8 = 3;
pub const UNREACHABLE: u8 = 4;

/// The server and how to print.
#[derive(Args)]
pub struct SnapshotArgs {
    /// The server (its API token comes from SNAPTREE_TOKEN, never from an argument).
    #[arg(
        long,
        env = "SNAPTREE_URL",
        default_value = "http://127.0.0.1:8080/",
        global = true
    )]
    url: String,
    /// Print JSON (one document) instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// The action or view asked for.
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Snapshot a VM (a child of its active snapshot).
    Create {
        /// The VM's id.
        #[arg(long)]
        vm: String,
        /// The snapshot's name, unique among the VM's snapshots.
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// Keep it from every delete until it is unprotected.
        #[arg(long)]
        protected: bool,
        #[command(flatten)]
        expiry: Expiry,
        #[command(flatten)]
        wait: Wait,
    },
    /// Change when a snapshot expires (is deleted by the robot), or make it never.
    Expire {
        /// The snapshot's id.
        snapshot: String,
        #[command(flatten)]
        expiry: Expiry,
        /// Never: remove its expiry (refused where the project has a maximum lifetime).
        #[arg(long, conflicts_with_all = ["expires_in", "expires_at"], required_unless_present_any = ["expires_in", "expires_at"])]
        never: bool,
    },
    /// Keep a snapshot from every delete (alone, in a subtree, by a policy).
    Protect {
        /// The snapshot's id.
        snapshot: String,
    },
    /// Let a protected snapshot be deleted again.
    Unprotect {
        /// The snapshot's id.
        snapshot: String,
    },
    /// Return a VM to a snapshot, which becomes its active one.
    Apply {
        /// The snapshot's id.
        snapshot: String,
        /// Save the current state first, as a new snapshot of this name.
        #[arg(long)]
        save_current_as: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Return a VM to its active snapshot.
    Revert {
        #[arg(long)]
        vm: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Delete a snapshot (its children move up), or with --subtree it and all below.
    Delete {
        snapshot: String,
        #[arg(long)]
        subtree: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// A VM's snapshot tree.
    Tree {
        #[arg(long)]
        vm: String,
    },
    /// A VM's snapshots, oldest first.
    List {
        #[arg(long)]
        vm: String,
    },
}

/// When a snapshot expires: the robot then deletes it (within a minute; never while it
/// is protected or the VM's active one).
#[derive(Args)]
struct Expiry {
    /// Expire after this long from now (12h, 7d, ...).
    #[arg(long, value_parser = lifetime, conflicts_with = "expires_at")]
    expires_in: Option<chrono::Duration>,
    /// Expire at this time (RFC 3339, such as 2026-12-31T18:00:00Z).
    #[arg(long)]
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A lifetime such as `12h` or `30d`, of at most a hundred years.
fn lifetime(text: &str) -> Result<chrono::Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    chrono::Duration::from_std(d)
        .ok()
        .filter(|d| *d <= chrono::Duration::days(36_525))
        .ok_or_else(|| "at most 100 years".to_owned())
}

impl Expiry {
    /// The time asked for, as the API takes it; `None`: none asked.
    fn at(&self) -> Option<String> {
        let at = match self.expires_in {
            Some(d) => Some(chrono::Utc::now() + d),
            None => self.expires_at,
        };
        at.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    }
}

#[derive(Args)]
struct Wait {
    /// Follow the task to its end (a progress bar on a terminal, lines otherwise); the
    /// exit code then says how it ended.
    #[arg(long)]
    wait: bool,
}

const SNAPSHOT: &str =
    "id name state active protected expiresAt stale createdAt description parent { id }";
const PAYLOAD: &str = "snapshot { id name state } task { id kind state }";

/// Runs a snapshot command; the process's exit code.
pub async fn run(args: SnapshotArgs) -> ExitCode {
    let Ok(token) = std::env::var("SNAPTREE_TOKEN") else {
        eprintln!(
            "snaptree: set SNAPTREE_TOKEN to an API token (it is never read from an argument)"
        );
        return ExitCode::from(USAGE);
    };
    let out = Output { json: args.json };
    let client = match Client::new(&args.url, token) {
        Ok(client) => client,
        Err(failure) => return out.failure(&failure),
    };
    match act(&client, args.command, &out).await {
        Ok(code) => code,
        Err(failure) => out.failure(&failure),
    }
}

/// Runs `command`: a VM's tree or list, or a mutation whose task, with `--wait`, is followed
/// to its end (the exit code then says how it ended).
/// Long because it is a table: the views and protection first, then the four mutations
/// (query, variables, verb); the one asked for is sent, and followed by [`follow`].
async fn act(client: &Client, command: SnapshotCommand, out: &Output) -> Result<ExitCode, Failure> {
    let (mutation, variables, field, wait) = match command {
        SnapshotCommand::Tree { vm } => return tree(client, &vm, out, true).await,
        SnapshotCommand::List { vm } => return tree(client, &vm, out, false).await,
        SnapshotCommand::Protect { snapshot } => {
            return protect(client, &snapshot, true, out).await;
        }
        SnapshotCommand::Unprotect { snapshot } => {
            return protect(client, &snapshot, false, out).await;
        }
        SnapshotCommand::Expire {
            snapshot,
            expiry,
            never: _,
        } => {
            return expire(client, &snapshot, expiry.at(), out).await;
        }
        SnapshotCommand::Create {
            vm,
            name,
            description,
            protected,
            expiry,
            wait,
        } => (
            "mutation($v: ID!, $n: String!, $d: String, $p: Boolean!, $e: DateTime) { r: createSnapshot(vmId: $v, name: $n, description: $d, protected: $p, expiresAt: $e) { PAYLOAD } }",
            json!({ "v": vm, "n": name, "d": description, "p": protected, "e": expiry.at() }),
            "created",
            wait.wait,
        ),
        SnapshotCommand::Apply {
            snapshot,
            save_current_as,
            wait,
        } => (
            "mutation($s: ID!, $a: String) { r: applySnapshot(id: $s, saveCurrentAs: $a) { PAYLOAD } }",
            json!({ "s": snapshot, "a": save_current_as }),
            "applied",
            wait.wait,
        ),
        SnapshotCommand::Revert { vm, wait } => (
            "mutation($v: ID!) { r: revertSnapshot(vmId: $v) { PAYLOAD } }",
            json!({ "v": vm }),
            "reverted to",
            wait.wait,
        ),
        SnapshotCommand::Delete {
            snapshot,
            subtree,
            wait,
        } => (
            "mutation($s: ID!, $t: Boolean!) { r: deleteSnapshot(id: $s, removeSubtree: $t) { PAYLOAD } }",
            json!({ "s": snapshot, "t": subtree }),
            "deleted",
            wait.wait,
        ),
    };
    let data = client
        .run(&mutation.replace("PAYLOAD", PAYLOAD), variables)
        .await?;
    let accepted = &data["r"];
    let (snapshot, task) = (&accepted["snapshot"], &accepted["task"]);
    if !wait {
        out.print(accepted, || {
            format!(
                "task {} queued: {} snapshot {} ({})",
                show::field(&task["id"]),
                show::field(&task["kind"]).to_lowercase(),
                show::field(&snapshot["id"]),
                show::field(&snapshot["name"]),
            )
        });
        return Ok(ExitCode::SUCCESS);
    }
    follow(
        client,
        snapshot,
        task["id"].as_str().unwrap_or_default(),
        field,
        out,
    )
    .await
}

/// Follows task `task_id`, accepted for `snapshot`, to its end and prints how it ended
/// (`done` says what succeeding did to the snapshot).
async fn follow(
    client: &Client,
    snapshot: &Value,
    task_id: &str,
    done: &str,
    out: &Output,
) -> Result<ExitCode, Failure> {
    let mut progress = show::Progress::new(!out.json && std::io::stderr().is_terminal());
    let last = client.follow(task_id, |event| progress.event(event)).await;
    progress.finish();
    let last = last?;
    let state = last["state"].as_str().unwrap_or_default();
    let ended = json!({ "snapshot": snapshot, "task": { "id": task_id, "state": state, "message": last["message"] } });
    out.print(&ended, || match state {
        "SUCCEEDED" => format!(
            "{done} snapshot {} ({})",
            show::field(&snapshot["id"]),
            show::field(&snapshot["name"])
        ),
        _ => format!(
            "task {} {}: {}",
            show::printable(task_id),
            show::printable(state).to_lowercase(),
            show::printable(last["message"].as_str().unwrap_or("no reason given"))
        ),
    });
    Ok(if state == "SUCCEEDED" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(TASK_FAILED)
    })
}

/// Protects snapshot `id` (or lifts it), and prints the snapshot.
async fn protect(client: &Client, id: &str, on: bool, out: &Output) -> Result<ExitCode, Failure> {
    let data = client
        .run(
            "mutation($s: ID!, $p: Boolean) { r: updateSnapshot(id: $s, protected: $p) { id name protected } }",
            json!({ "s": id, "p": on }),
        )
        .await?;
    let snapshot = &data["r"];
    out.print(snapshot, || {
        format!(
            "snapshot {} ({}) {}",
            show::field(&snapshot["id"]),
            show::field(&snapshot["name"]),
            if on {
                "protected: kept from every delete"
            } else {
                "unprotected"
            }
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// Sets snapshot `id`'s expiry to `at` (`None`: never), and prints the snapshot.
async fn expire(
    client: &Client,
    id: &str,
    at: Option<String>,
    out: &Output,
) -> Result<ExitCode, Failure> {
    let data = client
        .run(
            "mutation($s: ID!, $e: DateTime) { r: updateSnapshot(id: $s, expiresAt: $e) { id name expiresAt } }",
            json!({ "s": id, "e": at }),
        )
        .await?;
    let snapshot = &data["r"];
    out.print(snapshot, || {
        let when = match snapshot["expiresAt"].as_str() {
            Some(at) => format!("expires {at}"),
            None => "never expires".into(),
        };
        format!(
            "snapshot {} ({}) {when}",
            show::field(&snapshot["id"]),
            show::field(&snapshot["name"]),
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// Prints VM `vm`'s snapshots, as a tree or a list.
async fn tree(client: &Client, vm: &str, out: &Output, as_tree: bool) -> Result<ExitCode, Failure> {
    let query = format!("query($v: ID!) {{ vm(id: $v) {{ id name snapshots {{ {SNAPSHOT} }} }} }}");
    let data = client.run(&query, json!({ "v": vm })).await?;
    let vm_row = &data["vm"];
    if vm_row.is_null() {
        return Err(Failure::Refused {
            code: "NOT_FOUND".into(),
            message: format!("There is no VM {vm} that your token may see."),
        });
    }
    let snapshots = vm_row["snapshots"].as_array().cloned().unwrap_or_default();
    if as_tree {
        let nested = show::nest(&snapshots);
        out.print(
            &json!({ "vm": { "id": vm_row["id"], "name": vm_row["name"] }, "tree": nested }),
            || show::tree_text(&snapshots),
        );
    } else {
        out.print(&Value::Array(snapshots.clone()), || {
            show::list_text(&snapshots)
        });
    }
    Ok(ExitCode::SUCCESS)
}

/// Text for people, or JSON for scripts.
struct Output {
    /// One JSON document on stdout (`--json`) instead of text.
    json: bool,
}

impl Output {
    /// Prints `value` as JSON, or `text()`; a closed stdout (`| head`) is ignored.
    fn print(&self, value: &Value, text: impl FnOnce() -> String) {
        let line = if self.json {
            value.to_string()
        } else {
            text().trim_end().to_owned()
        };
        if !line.is_empty() {
            let _ = writeln!(std::io::stdout(), "{line}");
        }
    }

    /// Reports `failure` (on stderr; in JSON on stdout too) and gives its exit code.
    fn failure(&self, failure: &Failure) -> ExitCode {
        let (code, exit) = match failure {
            Failure::Refused { code, .. } => (code.as_str(), REFUSED),
            Failure::Unreachable(_) => ("UNREACHABLE", UNREACHABLE),
        };
        if self.json {
            let error = json!({ "error": { "code": code, "message": failure.message() } });
            let _ = writeln!(std::io::stdout(), "{error}");
        }
        let message = failure.to_string();
        let _ = writeln!(std::io::stderr(), "snaptree: {}", show::printable(&message));
        ExitCode::from(exit)
    }
}
