//! Every read a tenant can make is scoped (by project, VM, task or snapshot) and uses an
//! index that starts with its scope, on the backend of this run: the database's own
//! query planner says so (`EXPLAIN QUERY PLAN` on SQLite, `EXPLAIN` on PostgreSQL with
//! scans and sorts priced out, since a test's tables are small enough for the planner
//! to prefer scanning and sorting them). A read without such an index would cost a tenant every
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
/// index each must use. A read with a `LIMIT` must also read its rows in the index's
/// order, never sort them: a sort reads every row of the scope to return a page.
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
        "pages of two tasks' events (Task.events)",
        "SELECT * FROM (SELECT * FROM task_events WHERE task_id = 1 AND id > 0 \
         ORDER BY id ASC LIMIT 20) AS page UNION ALL SELECT * FROM (SELECT * FROM task_events \
         WHERE task_id = 2 AND id > 7 ORDER BY id ASC LIMIT 20) AS page",
        "task_events_task",
    ),
    (
        "the newest history of two snapshots (REST's objects)",
        "SELECT * FROM (SELECT * FROM snapshot_history WHERE snapshot_id = 1 \
         ORDER BY id DESC LIMIT 50) AS page UNION ALL SELECT * FROM (SELECT * FROM \
         snapshot_history WHERE snapshot_id = 2 ORDER BY id DESC LIMIT 50) AS page",
        "snapshot_history_snapshot",
    ),
    (
        "a page of a VM's history (Vm.history)",
        "SELECT * FROM (SELECT * FROM snapshot_history WHERE vm_id = 1 AND id > 9 \
         ORDER BY id ASC LIMIT 20) AS page",
        "snapshot_history_vm",
    ),
    (
        "a page of the tasks that acted on a snapshot (Snapshot.tasks)",
        "SELECT * FROM (SELECT * FROM tasks WHERE snapshot_id = 1 AND id > 0 \
         ORDER BY id ASC LIMIT 20) AS page",
        "tasks_snapshot",
    ),
    (
        "a page of a VM's snapshots, closed ones too (includeClosed)",
        "SELECT * FROM (SELECT * FROM snapshots WHERE vm_id = 1 AND id > 0 \
         ORDER BY id ASC LIMIT 100) AS page",
        "snapshots_vm",
    ),
    (
        "a VM's open snapshots (the tree every action starts from)",
        "SELECT id, parent_id, name, state, active FROM snapshots WHERE vm_id = 1 \
         AND state <> 99 ORDER BY id",
        "snapshots_open",
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
        "a project's tasks (`tasks` without `vmId`)",
        "SELECT * FROM tasks WHERE project_id = 1 ORDER BY id DESC LIMIT 20",
        "tasks_project",
    ),
    (
        "a project's tasks after a cursor, in a state",
        "SELECT * FROM tasks WHERE project_id = 1 AND state = 'FAILED' AND id < 100 \
         ORDER BY id DESC LIMIT 20",
        "tasks_project",
    ),
    (
        "a deleted snapshot's children (its reference check, and retention's)",
        "SELECT id FROM snapshots WHERE parent_id = 5",
        "snapshots_parent",
    ),
    (
        "tasks that return to a snapshot (a reference check)",
        "SELECT id FROM tasks WHERE prev_active_id = 5",
        "tasks_prev_active",
    ),
    (
        "tasks that save to a snapshot (a reference check)",
        "SELECT id FROM tasks WHERE save_snapshot_id = 5",
        "tasks_save_snapshot",
    ),
    (
        "the expiry sweep's due snapshots (not a tenant's read, but every process's)",
        "SELECT id, vm_id, expires_at FROM snapshots WHERE expires_at <= '2026-12-07 10:00:00' \
         AND state != 99 AND NOT (protected) AND NOT (active) \
         AND (expires_at > '1970-01-01 00:00:00' OR (expires_at = '1970-01-01 00:00:00' AND id > 0)) \
         ORDER BY expires_at, id LIMIT 200",
        "snapshots_expiry",
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
                // A test's tables are tiny: priced as they are, any plan will do. With
                // scans and sorts priced out, a sort left in a plan is one no index
                // could spare.
                for off in ["enable_seqscan", "enable_bitmapscan", "enable_sort"] {
                    diesel::sql_query(format!("SET {off} = off"))
                        .execute(&mut *c)
                        .await
                        .unwrap();
                }
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
        let sorts = plan.contains("TEMP B-TREE FOR ORDER BY")
            || plan
                .lines()
                .any(|l| l.trim_start_matches([' ', '-', '>']).starts_with("Sort"));
        if !named
            || plan.contains("Seq Scan")
            || plan.lines().any(|l| l.trim() == "SCAN task_events")
            || (sql.contains("LIMIT") && sorts)
        {
            failures.push(format!("{what} does not use {index}:\n{plan}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
