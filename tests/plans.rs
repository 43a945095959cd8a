//! Every read a tenant can make is scoped (by project, VM, task or snapshot) and uses an
//! index that starts with its scope, on the backend of this run: the database's own
//! query planner says so (`EXPLAIN QUERY PLAN` on SQLite, `EXPLAIN` on PostgreSQL with
//! sequential scans priced out, since a test's tables are small enough for the planner
//! to prefer scanning them). A read without such an index would cost a tenant every
//! project's rows.

mod common;

use common::TestDb;
use diesel::QueryableByName;
use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;
use snaptree::db::{Conn, Db};

/// A line of a plan (SQLite's `detail`, PostgreSQL's `QUERY PLAN`).
#[derive(QueryableByName)]
struct SqliteLine {
    #[diesel(sql_type = Text)]
    detail: String,
}

#[derive(QueryableByName)]
struct PgLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

/// The tenant-scoped reads, as the service writes them (with literal values), and the
/// index each must use.
const READS: &[(&str, &str, &str)] = &[
    (
        "a project's events, replayed after a cursor",
        "SELECT * FROM task_events WHERE id > 5 AND project_id = 1 ORDER BY id LIMIT 100",
        "task_events_project",
    ),
    (
        "a VM's events",
        "SELECT * FROM task_events WHERE id > 5 AND vm_id = 1 ORDER BY id LIMIT 100",
        "task_events_vm",
    ),
    (
        "a task's events",
        "SELECT * FROM task_events WHERE task_id = 1 ORDER BY id DESC LIMIT 1",
        "task_events_task",
    ),
    (
        "a project's history, counted (a REST page)",
        "SELECT COUNT(*) FROM snapshot_history WHERE 1 = 1 AND snapshot_history.project_id = 1",
        "snapshot_history_project",
    ),
    (
        "a project's history, a page",
        "SELECT snapshot_history.* FROM snapshot_history WHERE 1 = 1 \
         AND snapshot_history.project_id = 1 ORDER BY snapshot_history.id DESC LIMIT 50",
        "snapshot_history_project",
    ),
    (
        "snapshots' history",
        "SELECT * FROM snapshot_history WHERE snapshot_id IN (1, 2) ORDER BY id",
        "snapshot_history_snapshot",
    ),
    (
        "VMs' history",
        "SELECT * FROM snapshot_history WHERE vm_id IN (1, 2) ORDER BY id",
        "snapshot_history_vm",
    ),
    (
        "a project's VMs",
        "SELECT * FROM vms WHERE project_id = 1 ORDER BY id LIMIT 50",
        "vms_project",
    ),
    (
        "a VM's snapshots",
        "SELECT * FROM snapshots WHERE vm_id = 1",
        "snapshots_",
    ),
    (
        "a VM's tasks",
        "SELECT * FROM tasks WHERE vm_id = 1 ORDER BY id DESC LIMIT 20",
        "tasks_",
    ),
    (
        "a policy's snapshots",
        "SELECT id FROM snapshots WHERE policy_id = 1",
        "snapshots_policy",
    ),
    (
        "a policy's runs",
        "SELECT * FROM policy_runs WHERE policy_id = 1 ORDER BY due_at DESC, id DESC LIMIT 20",
        "policy_runs_policy_id",
    ),
];

#[tokio::test]
async fn every_tenant_scoped_read_uses_an_index_that_starts_with_its_scope() {
    let dir = tempfile::tempdir().unwrap();
    let test_db = TestDb::new(dir.path()).await;
    let db = Db::connect(&test_db.url).await.unwrap();
    let mut pooled = db.reader().await.unwrap();
    let mut failures = Vec::new();
    for (what, sql, index) in READS {
        let plan: Vec<String> = match pooled.conn() {
            Conn::Sqlite(c) => diesel::sql_query(format!("EXPLAIN QUERY PLAN {sql}"))
                .load::<SqliteLine>(c)
                .await
                .unwrap()
                .into_iter()
                .map(|l| l.detail)
                .collect(),
            Conn::Pg(c) => {
                diesel::sql_query("SET enable_seqscan = off")
                    .execute(&mut *c)
                    .await
                    .unwrap();
                diesel::sql_query(format!("EXPLAIN {sql}"))
                    .load::<PgLine>(c)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|l| l.line)
                    .collect()
            }
        };
        let plan = plan.join("\n");
        // SQLite names a unique constraint's index sqlite_autoindex_<table>_N.
        let named = plan.contains(index)
            || (index.ends_with("_policy_id") && plan.contains("sqlite_autoindex_policy_runs"));
        eprintln!("{what}:\n{plan}\n");
        if !named
            || plan.contains("Seq Scan")
            || plan.lines().any(|l| l.trim() == "SCAN task_events")
        {
            failures.push(format!("{what} does not use {index}:\n{plan}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
