//! Helpers for tests of several processes on one PostgreSQL database: a subscriber
//! that follows every event and says when each task has ended, and the invariants that
//! must hold over the whole database afterwards.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use snaptree::db::{self, Db};
use snaptree::domain::{SnapshotState, TaskState};
use tokio::sync::oneshot;

use super::Api;
use super::TestDb;
use super::process::{self, RobotProcess, ServerProcess};
use super::ws::{Frame, Subscriber};

pub fn on_postgres() -> bool {
    let pg = std::env::var("SNAPTREE_TEST_DATABASE").as_deref() == Ok("postgres");
    if !pg {
        eprintln!("skipped: the fleet tests run with SNAPTREE_TEST_DATABASE=postgres");
    }
    pg
}

/// The final event of each task, as a subscriber on one server receives them.
#[derive(Clone, Default)]
pub struct Ends {
    /// Every event received: (id, task id, state), in the order received.
    pub received: Arc<Mutex<Vec<(i64, String, String)>>>,
    /// The close codes of the sockets the servers closed.
    pub closes: Arc<Mutex<Vec<u16>>>,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>,
    ended: Arc<Mutex<HashSet<String>>>,
}

impl Ends {
    /// Follows `events` on the server at `url` from now on; when the subscription ends
    /// or the socket closes (the database went away, say), it subscribes again with
    /// `after` the last event it received, as a client should.
    pub async fn follow(&self, url: &str, token: &str) -> tokio::task::JoinHandle<()> {
        self.follow_any(&[url], token).await
    }

    /// Like [`Ends::follow`] on the first of `urls`; when a server closes the socket or
    /// cannot be reached, it subscribes on the next one (round the list), as a client
    /// of several servers behind one name would.
    pub async fn follow_any(&self, urls: &[&str], token: &str) -> tokio::task::JoinHandle<()> {
        let urls: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
        let token = token.to_owned();
        let mut at = 0;
        let mut socket = Subscriber::connect(&urls[at], Some(&token)).await.unwrap();
        socket
            .subscribe(
                "all",
                "subscription { events { id state task { id } } }",
                json!({}),
            )
            .await;
        let ends = self.clone();
        tokio::spawn(async move {
            loop {
                let payload = match socket.next().await {
                    Frame::Next(_, payload) if payload.get("errors").is_none() => payload,
                    other => {
                        if let Frame::Closed(code, _) = other {
                            ends.closes.lock().unwrap().push(code);
                        }
                        (socket, at) = ends.resubscribe(&urls, at, &token).await;
                        continue;
                    }
                };
                let event = &payload["data"]["events"];
                let id: i64 = event["id"].as_str().unwrap().parse().unwrap();
                let task = event["task"]["id"].as_str().unwrap().to_owned();
                let state = event["state"].as_str().unwrap().to_owned();
                let last = matches!(state.as_str(), "SUCCEEDED" | "FAILED" | "CANCELLED");
                ends.received
                    .lock()
                    .unwrap()
                    .push((id, task.clone(), state));
                if last {
                    match ends.waiting.lock().unwrap().remove(&task) {
                        Some(done) => {
                            let _ = done.send(());
                        }
                        None => {
                            ends.ended.lock().unwrap().insert(task);
                        }
                    }
                }
            }
        })
    }

    /// Subscribes again after the last event received, on the server at `urls[at]` if
    /// it answers, else on the next one, retrying until one takes it.
    async fn resubscribe(
        &self,
        urls: &[String],
        mut at: usize,
        token: &str,
    ) -> (Subscriber, usize) {
        let after = self
            .received
            .lock()
            .unwrap()
            .last()
            .map(|e| e.0.to_string());
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let Some(mut socket) = Subscriber::try_connect(&urls[at], token).await else {
                at = (at + 1) % urls.len();
                continue;
            };
            socket
                .subscribe(
                    "all",
                    "subscription($a: ID) { events(after: $a) { id state task { id } } }",
                    json!({ "a": after }),
                )
                .await;
            return (socket, at);
        }
    }

    /// Waits for task `task`'s final event.
    pub async fn wait(&self, task: &str) {
        let (done, ended) = oneshot::channel();
        if self.ended.lock().unwrap().remove(task) {
            return;
        }
        self.waiting.lock().unwrap().insert(task.to_owned(), done);
        // A hang guard, not a performance limit: a final event that never comes fails
        // the test instead of stalling the suite.
        tokio::time::timeout(Duration::from_secs(300), ended)
            .await
            .unwrap_or_else(|_| panic!("task {task}'s final event never came"))
            .unwrap();
    }
}

/// Checks the invariants over the whole database: every task final and ended by exactly
/// one final event, its last; no snapshot left in a transitional state; at most one
/// active snapshot per VM; every tree acyclic.
pub async fn check_invariants(db: &TestDb) -> (Vec<db::models::Task>, Vec<db::models::TaskEvent>) {
    let db = Db::connect(&db.url).await.unwrap();
    let mut pooled = db.reader().await.unwrap();
    let mut conn = pooled.conn();
    let tasks = db::tasks::page(&mut conn, Default::default(), None, 1_000_000)
        .await
        .unwrap();
    let events = db::events::after(&mut conn, Default::default(), 0, None, 1_000_000)
        .await
        .unwrap();
    let mut by_task: BTreeMap<i64, Vec<&db::models::TaskEvent>> = BTreeMap::new();
    for event in &events {
        by_task.entry(event.task_id).or_default().push(event);
    }
    for task in &tasks {
        assert!(
            !task.state().is_open(),
            "task {} is still {}",
            task.id,
            task.state
        );
        let mine = &by_task[&task.id];
        let finals: Vec<_> = mine.iter().filter(|e| !e.state().is_open()).collect();
        assert_eq!(finals.len(), 1, "task {}: {mine:#?}", task.id);
        assert_eq!(
            mine.last().unwrap().id,
            finals[0].id,
            "task {}: final event not last",
            task.id
        );
        assert_eq!(finals[0].state(), task.state());
    }
    let vms: Vec<i64> = tasks
        .iter()
        .map(|t| t.vm_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let snapshots = db::snapshots::of_vms(&mut conn, &vms, false).await.unwrap();
    let mut active: HashMap<i64, usize> = HashMap::new();
    let parents: HashMap<i64, Option<i64>> =
        snapshots.iter().map(|s| (s.id, s.parent_id)).collect();
    for s in &snapshots {
        let state = SnapshotState::from_code(s.state).unwrap();
        assert!(
            state.is_stable(),
            "snapshot {} left in {state} with no task",
            s.id
        );
        if s.active {
            *active.entry(s.vm_id).or_default() += 1;
        }
        // Walking up ends at a root within as many steps as there are snapshots.
        let mut at = s.parent_id;
        for _ in 0..=snapshots.len() {
            match at {
                Some(parent) => at = parents.get(&parent).copied().flatten(),
                None => break,
            }
        }
        assert!(at.is_none(), "snapshot {} is in a cycle", s.id);
    }
    assert!(active.values().all(|n| *n <= 1), "{active:?}");
    (tasks, events)
}

/// What processes of one fleet share: a database, the simulated hosts' state, an ADMIN
/// token, and a directory for their logs.
pub struct Fleet {
    pub db: TestDb,
    /// The database's URL as the command line takes it.
    pub url: String,
    pub sim: PathBuf,
    pub admin: String,
    dir: tempfile::TempDir,
}

impl Fleet {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::new(dir.path()).await;
        let url = db.cli_url();
        let admin = process::token(&url, "ops", "ADMIN");
        Self {
            sim: dir.path().join("sim"),
            db,
            url,
            admin,
            dir,
        }
    }

    /// Where a process named `name` logs.
    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// A server process of the fleet, with no robot of its own, logging as `name`.
    pub fn server(&self, name: &str) -> ServerProcess {
        ServerProcess::start_logging(&self.url, &self.sim, &["--no-robot"], Some(&self.log(name)))
    }

    /// A robot process of the fleet started with `flags`, logging as `name`.
    pub fn robot(&self, name: &str, flags: &[&str]) -> RobotProcess {
        RobotProcess::start(&self.url, &self.sim, flags, &self.log(name))
    }

    /// `n` robot processes started with `flags`, logging as `robot0`, `robot1`, ...
    pub fn robots(&self, n: usize, flags: &[&str]) -> Vec<RobotProcess> {
        (0..n)
            .map(|i| self.robot(&format!("robot{i}"), flags))
            .collect()
    }

    /// An ADMIN client of `server`.
    pub fn api(&self, server: &ServerProcess) -> Api {
        Api::new(&server.url, self.admin.clone())
    }

    /// Waits until every task is running (read from the database); returns them.
    pub async fn all_running(&self) -> Vec<db::models::Task> {
        let lib = Db::connect(&self.db.url).await.unwrap();
        loop {
            let mut pooled = lib.reader().await.unwrap();
            let all = db::tasks::page(&mut pooled.conn(), Default::default(), None, 1000)
                .await
                .unwrap();
            if all.iter().all(|t| t.state() == TaskState::Running) {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// How the tasks `tasks` ran, read from their events: the most that ran at once (from a
/// task's "started by" event to its final one) and the order in which they started.
pub fn at_once(events: &[db::models::TaskEvent], tasks: &[i64]) -> (i32, Vec<i64>) {
    // (time, +1 at a start, -1 at an end); at equal times ends come first.
    let mut edges = Vec::new();
    let mut starts = Vec::new();
    for event in events.iter().filter(|e| tasks.contains(&e.task_id)) {
        if event
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("started by"))
        {
            edges.push((event.at, 1));
            starts.push(event.task_id);
        } else if !event.state().is_open() {
            edges.push((event.at, -1));
        }
    }
    edges.sort();
    let (mut now, mut most) = (0, 0);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    (most, starts)
}
