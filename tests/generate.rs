//! The generator the lifetime and month benchmarks fill databases with
//! (`snaptree::db::generate`): what it says it made is what is stored, every row names
//! rows that exist, and the days added after it keep to the same rules, dated in their
//! day, with ids after the ones stored.

mod common;

use chrono::{Duration, Utc};
use common::TestDb;
use diesel_async::RunQueryDsl;
use snaptree::db::generate::{self, Made, Spec};
use snaptree::db::{Conn, Db};

#[derive(diesel::QueryableByName)]
struct Number {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// The number `sql` (one row, column `n`) answers.
async fn number(db: &Db, sql: &str) -> i64 {
    let mut pooled = db.reader().await.unwrap();
    let row: Number = match pooled.conn() {
        Conn::Sqlite(c) => diesel::sql_query(sql).get_result(c).await.unwrap(),
        Conn::Pg(c) => diesel::sql_query(sql).get_result(c).await.unwrap(),
    };
    row.n
}

/// Rows of the generated tables, as `Made` counts them.
async fn stored(db: &Db) -> Made {
    let count = |table: &'static str| async move {
        number(db, &format!("SELECT count(*) AS n FROM {table}")).await
    };
    Made {
        vms: count("vms").await,
        snapshots: count("snapshots").await,
        tasks: count("tasks").await,
        events: count("task_events").await,
        history: count("snapshot_history").await,
    }
}

/// Rows that name a row that is not there, or that disagree with it.
const ORPHANS: [&str; 6] = [
    "SELECT count(*) AS n FROM task_events e LEFT JOIN tasks t ON t.id = e.task_id WHERE t.id IS NULL",
    "SELECT count(*) AS n FROM task_events e JOIN tasks t ON t.id = e.task_id JOIN vms v ON v.id = t.vm_id \
     WHERE e.vm_id <> t.vm_id OR e.project_id <> v.project_id",
    "SELECT count(*) AS n FROM tasks t LEFT JOIN snapshots s ON s.id = t.snapshot_id \
     JOIN vms v ON v.id = t.vm_id WHERE s.id IS NULL OR s.vm_id <> t.vm_id OR t.project_id <> v.project_id",
    "SELECT count(*) AS n FROM snapshot_history h LEFT JOIN snapshots s ON s.id = h.snapshot_id \
     LEFT JOIN vms v ON v.id = h.vm_id WHERE s.id IS NULL OR s.vm_id <> h.vm_id OR v.project_id <> h.project_id",
    "SELECT count(*) AS n FROM snapshots c LEFT JOIN snapshots p ON p.id = c.parent_id \
     WHERE c.parent_id IS NOT NULL AND (p.id IS NULL OR p.vm_id <> c.vm_id)",
    // Seven events per task, the last its end.
    "SELECT count(*) AS n FROM tasks t WHERE (SELECT count(*) FROM task_events e WHERE e.task_id = t.id) <> 7 \
     OR (SELECT e.state FROM task_events e WHERE e.task_id = t.id ORDER BY e.id DESC LIMIT 1) <> 'SUCCEEDED'",
];

async fn whole(db: &Db) {
    for sql in ORPHANS {
        assert_eq!(
            number(db, sql).await,
            0,
            "rows broken by the generator: {sql}"
        );
    }
    // One active snapshot per VM, open.
    let active = number(
        db,
        "SELECT count(*) AS n FROM snapshots WHERE active AND state = 4",
    )
    .await;
    assert_eq!(active, number(db, "SELECT count(*) AS n FROM vms").await);
}

#[tokio::test]
async fn a_generated_past_and_the_days_after_it_are_whole() {
    let dir = tempfile::tempdir().unwrap();
    let test_db = TestDb::new(dir.path()).await;
    let db = Db::connect(&test_db.url).await.unwrap();
    let now = Utc::now() - Duration::days(10);
    let spec = Spec {
        vms: 12,
        past_snapshots_per_vm: 2,
        past: Duration::days(30),
        recent_snapshots_per_vm: 1,
        now,
    };
    let made = {
        let mut tx = db.begin().await.unwrap();
        let made = generate::fill(&mut tx.conn(), spec).await;
        tx.finish(made).await.unwrap()
    };
    // 12 VMs; (2 + 1) made and deleted and 3 open per VM; two tasks per closed one and
    // one per open one; seven events a task; six history rows per closed, three per open.
    assert_eq!(
        made,
        Made {
            vms: 12,
            snapshots: 72,
            tasks: 108,
            events: 756,
            history: 324,
        }
    );
    assert_eq!(stored(&db).await, made);
    whole(&db).await;

    // Two days after the present, each on the first five VMs.
    let mut total = made;
    for day in 0..2 {
        let from = now + Duration::days(day);
        let added = {
            let mut tx = db.begin().await.unwrap();
            let added = generate::day(&mut tx.conn(), 5, from).await;
            tx.finish(added).await.unwrap()
        };
        assert_eq!(
            added,
            Made {
                vms: 0,
                snapshots: 5,
                tasks: 10,
                events: 70,
                history: 30,
            }
        );
        total.snapshots += added.snapshots;
        total.tasks += added.tasks;
        total.events += added.events;
        total.history += added.history;
        assert_eq!(stored(&db).await, total);
        whole(&db).await;
        // The day's rows are dated in it.
        let at = |t: chrono::DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
        let (start, end) = (at(from), at(from + Duration::days(1)));
        let dated = number(
            &db,
            &format!(
                "SELECT count(*) AS n FROM snapshots WHERE name LIKE 'gone-%' \
                 AND created_at >= '{start}' AND created_at < '{end}'"
            ),
        )
        .await;
        assert_eq!(dated, 5, "day {day}'s snapshots are made within it");
    }

    // On PostgreSQL, the rows the server writes next get ids after the generated ones.
    if matches!(test_db.url, snaptree::config::DatabaseUrl::Postgres(_)) {
        for table in ["snapshots", "tasks", "task_events", "snapshot_history"] {
            let next = number(
                &db,
                &format!("SELECT nextval(pg_get_serial_sequence('{table}', 'id')) AS n"),
            )
            .await;
            let last = number(&db, &format!("SELECT max(id) AS n FROM {table}")).await;
            assert!(next > last, "{table}: next id {next} after {last}");
        }
    }
}
