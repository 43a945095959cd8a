//! The test harness: a real snaptree server on an ephemeral port, on SQLite or on
//! PostgreSQL, and a client that talks GraphQL to it over HTTP.
//!
//! `SNAPTREE_TEST_DATABASE=postgres` runs the suite on PostgreSQL: each test gets its own
//! database on the server at `SNAPTREE_TEST_POSTGRES_URL`, dropped afterwards. Without
//! the URL a PostgreSQL run fails rather than silently testing SQLite.

#![allow(dead_code)]

pub mod fleet;
pub mod hyperv;
pub mod libvirt;
pub mod process;
pub mod proxy;
pub mod target;
pub mod ws;

/// The dashboard's VM read (`web/js/queries.js`, `VM_QUERY`, its fragments written out),
/// as the benchmarks send it: keep it in step with the page.
pub const DASHBOARD_VM_QUERY: &str = "query($v: ID!) {
  vm(id: $v) { id name identifier stateName snapshotCount snapshotLimit
    host { id name hypervisor health { reachable since } }
    activeSnapshot { id name }
    actions { create { allowed reason refusal } revert { allowed reason refusal } }
    snapshots { id name description state active protected createdAt stale staleSince parent { id }
      actions { apply { allowed reason refusal } delete { allowed reason refusal }
        deleteSubtree { allowed reason refusal } rename { allowed reason refusal }
        protect { allowed reason refusal } } }
    currentTask { id kind state finished error progress phase requestedBy createdAt finishedAt
      snapshot { id name } savedAs { id name } actions { cancel { allowed reason refusal } } } }
  tasks(vmId: $v, first: 10) { edges { node { id kind state finished error progress phase
    requestedBy createdAt finishedAt snapshot { id name } savedAs { id name }
    actions { cancel { allowed reason refusal } }
    events(first: 20) { id state progress phase message at } } } } }";

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use snaptree::config::{DatabaseUrl, DriverConfig, Limits, RateLimits, Retention, RobotConfig};
use snaptree::domain::Role;
use snaptree::server::{ServeOptions, Server};
use tempfile::TempDir;

/// Polls for a task's end at most this often; a hang guard, not a performance limit.
const POLL: Duration = Duration::from_millis(20);
/// The scraper's token of every test server.
pub const METRICS_TOKEN: &str = "scraper-secret-for-tests";
const MAX_POLLS: usize = 15_000; // five minutes

/// A robot tuned for tests: quick retries; no slow poll racing the statement counts.
pub fn test_robot() -> RobotConfig {
    RobotConfig {
        // Renewed every 5/6 s: a test machine's slow moment must not cut a task short.
        lease: Duration::from_secs(5),
        poll: Duration::from_secs(3600),
        retry_base: Duration::from_millis(20),
        retry_cap: Duration::from_millis(100),
        give_up_after: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(5),
        // No policy runner racing the statement counts (tests/policies.rs starts one).
        policy_tick: Duration::from_secs(3600),
        ..RobotConfig::default()
    }
}

/// The default limits without the per-token budgets: tests poll far faster than any
/// budget allows. (`tests/abuse.rs` attacks the defaults, in a server process of its own.)
pub fn test_limits() -> Limits {
    Limits {
        rates: RateLimits {
            admin: None,
            operator: None,
            viewer: None,
        },
        ..Limits::default()
    }
}

/// A database for one test: a SQLite file in the test's directory, or a new PostgreSQL
/// database.
pub struct TestDb {
    pub url: DatabaseUrl,
    /// The PostgreSQL server and database to drop at the end.
    pg: Option<(String, String)>,
}

impl TestDb {
    /// The backend `SNAPTREE_TEST_DATABASE` names (SQLite when unset).
    pub async fn new(dir: &Path) -> Self {
        match std::env::var("SNAPTREE_TEST_DATABASE").as_deref() {
            Ok("postgres") => {
                let server = std::env::var("SNAPTREE_TEST_POSTGRES_URL").expect(
                    "SNAPTREE_TEST_DATABASE=postgres needs SNAPTREE_TEST_POSTGRES_URL \
                     (e.g. postgres://postgres@127.0.0.1/postgres)",
                );
                Self::postgres(&server).await
            }
            Ok("sqlite") | Err(_) => Self::sqlite(dir),
            Ok(other) => panic!("SNAPTREE_TEST_DATABASE must be sqlite or postgres, not {other}"),
        }
    }

    pub fn sqlite(dir: &Path) -> Self {
        Self {
            url: DatabaseUrl::Sqlite(dir.join("snaptree.db")),
            pg: None,
        }
    }

    /// A new database on the PostgreSQL server at `server`.
    pub async fn postgres(server: &str) -> Self {
        let name = format!(
            "snaptree_test_{}_{:08x}",
            std::process::id(),
            fastrand::u32(..)
        );
        admin_sql(server, &format!("CREATE DATABASE {name}")).await;
        let base = server.rsplit_once('/').map_or(server, |(b, _)| b);
        Self {
            url: DatabaseUrl::Postgres(format!("{base}/{name}")),
            pg: Some((server.to_owned(), name)),
        }
    }

    /// The URL as the command line takes it.
    pub fn cli_url(&self) -> String {
        match &self.url {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => url.clone(),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((server, name)) = self.pg.take() {
            // Drop runs outside async; a small runtime of its own does the work.
            let _ = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(admin_sql(
                        &server,
                        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    ))
            })
            .join();
        }
    }
}

async fn admin_sql(server: &str, sql: &str) {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    let mut conn = AsyncPgConnection::establish(server)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at SNAPTREE_TEST_POSTGRES_URL: {e}"));
    conn.batch_execute(sql).await.expect(sql);
}

/// A running server and an ADMIN token for it. The server runs on a runtime of its own,
/// built as `snaptree serve` builds it, not on the test's.
pub struct TestApp {
    runtime: Option<tokio::runtime::Runtime>,
    pub server: Option<Server>,
    pub api: Api,
    pub db: TestDb,
    pub dir: TempDir,
}

impl std::ops::Deref for TestApp {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

/// A GraphQL client of one server, holding an ADMIN token.
#[derive(Clone)]
pub struct Api {
    pub url: String,
    pub admin: String,
    pub client: reqwest::Client,
}

/// What a server is started with: its database, its directory, its drivers, its robot.
type Parts = (
    TestDb,
    TempDir,
    DriverConfig,
    Option<RobotConfig>,
    Retention,
);

/// A change to the host drivers' configuration.
type Tune = Box<dyn FnOnce(&mut DriverConfig)>;

/// How a [`TestApp`] is started: [`TestApp::builder`], then `spawn`.
pub struct TestAppBuilder {
    /// The robot the server runs (`None`: tasks stay queued).
    robot: Option<RobotConfig>,
    /// Changes to the host drivers' configuration (an SSH key, ...).
    tune: Option<Tune>,
    /// A database (and the directory of the server's files) made beforehand; `None`: a
    /// fresh one of the backend the environment chooses.
    on: Option<(TestDb, TempDir)>,
    /// What the server's retention keeps (the default: months, so nothing goes in a test).
    retention: Retention,
}

impl TestAppBuilder {
    /// Runs robot `robot` (the default is [`test_robot`]).
    pub fn robot(mut self, robot: RobotConfig) -> Self {
        self.robot = Some(robot);
        self
    }

    /// Runs no robot: queued tasks stay queued.
    pub fn without_robot(mut self) -> Self {
        self.robot = None;
        self
    }

    /// Lets `tune` adjust how hosts are reached.
    pub fn drivers(mut self, tune: impl FnOnce(&mut DriverConfig) + 'static) -> Self {
        self.tune = Some(Box::new(tune));
        self
    }

    /// Retires what `retention` says has aged out (by the server's clock, which
    /// [`TestApp::set_clock`] moves).
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Runs the server on `db`, keeping its files in `dir` (a benchmark picks each
    /// backend in turn).
    pub fn on(mut self, db: TestDb, dir: TempDir) -> Self {
        self.on = Some((db, dir));
        self
    }

    /// Starts the server (on a fresh database unless [`Self::on`] gave one).
    pub async fn spawn(self) -> TestApp {
        let (db, dir, drivers, robot, retention) = self.parts().await;
        TestApp::start(db, dir, robot, drivers, retention).await
    }

    /// Starts the server with the stand-in Windows host as its Hyper-V hosts (their ssh
    /// is the stand-in's).
    pub async fn spawn_with_standin(self) -> (TestApp, hyperv::StandIn) {
        let (db, dir, mut drivers, robot, retention) = self.parts().await;
        let standin = hyperv::StandIn::new(dir.path());
        drivers.ssh = standin.ssh.clone();
        let app = TestApp::start(db, dir, robot, drivers, retention).await;
        (app, standin)
    }

    /// The database, the server's directory, its drivers as tuned, and its robot.
    async fn parts(self) -> Parts {
        let (db, dir) = match self.on {
            Some(made) => made,
            None => {
                let dir = tempfile::tempdir().unwrap();
                (TestDb::new(dir.path()).await, dir)
            }
        };
        let mut drivers = DriverConfig::new(dir.path().join("sim"));
        if let Some(tune) = self.tune {
            tune(&mut drivers);
        }
        (db, dir, drivers, self.robot, self.retention)
    }
}

impl TestApp {
    /// A server with a test robot, on a fresh database: what most tests want.
    pub async fn spawn() -> Self {
        Self::builder().spawn().await
    }

    /// A server set up step by step (its robot, its host drivers, a Hyper-V stand-in).
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            robot: Some(test_robot()),
            tune: None,
            on: None,
            retention: Retention::default(),
        }
    }

    async fn start(
        db: TestDb,
        dir: TempDir,
        robot: Option<RobotConfig>,
        drivers: DriverConfig,
        retention: Retention,
    ) -> Self {
        let runtime = snaptree::server::runtime().unwrap();
        let options = ServeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            database: db.url.clone(),
            robot,
            drivers,
            retention,
            limits: test_limits(),
            origins: Default::default(),
            metrics: snaptree::http::MetricsAccess {
                token: Some(METRICS_TOKEN.to_owned()),
                listen: None,
            },
            clock: snaptree::clock::Clock::file(dir.path().join("clock")),
        };
        let (server, admin) = runtime
            .spawn(async move {
                let server = Server::start(options).await.expect("the server starts");
                let admin = server
                    .service
                    .admin()
                    .bootstrap_token("ops", Role::Admin, "admin")
                    .await;
                (server, admin.unwrap())
            })
            .await
            .unwrap();
        Self {
            runtime: Some(runtime),
            api: Api::new(&format!("http://{}/", server.addr), admin),
            server: Some(server),
            db,
            dir,
        }
    }

    /// Stops the server the way `serve` stops on SIGTERM.
    pub async fn stop(&mut self) {
        if let (Some(server), Some(runtime)) = (self.server.take(), &self.runtime) {
            runtime.spawn(server.stop()).await.unwrap();
        }
    }

    /// Sets the server's clock to `at` (it reads the system's until this is called).
    pub fn set_clock(&self, at: chrono::DateTime<chrono::Utc>) {
        std::fs::write(self.dir.path().join("clock"), at.to_rfc3339()).unwrap();
    }

    pub fn sim_dir(&self) -> PathBuf {
        self.dir.path().join("sim")
    }

    /// Sets VM `vm`'s state in the database, as if its host had reported it (no API
    /// changes a VM's state).
    pub async fn set_vm_state(&self, vm: &str, state: i32) {
        use snaptree::db::Conn;
        let db = self.server.as_ref().unwrap().service.db().clone();
        let query = diesel::sql_query(format!(
            "UPDATE vms SET state = {state} WHERE id = {}",
            vm.parse::<i64>().unwrap()
        ));
        let mut tx = db.begin().await.unwrap();
        let done = match tx.conn() {
            Conn::Sqlite(c) => diesel_async::RunQueryDsl::execute(query, c).await,
            Conn::Pg(c) => diesel_async::RunQueryDsl::execute(query, c).await,
        };
        tx.finish(done.map_err(snaptree::db::Error::from))
            .await
            .unwrap();
    }

    /// Statements the server's database connections have run so far.
    pub fn statements(&self) -> u64 {
        self.server.as_ref().unwrap().service.db().statement_count()
    }
}

impl Api {
    /// A client of the server at `base` (`http://host:port/`).
    pub fn new(base: &str, admin: String) -> Self {
        Self {
            url: format!("{base}graphql"),
            admin,
            client: reqwest::Client::new(),
        }
    }

    /// Sends a GraphQL request with `token` (none: no Authorization header); returns
    /// the whole response body.
    pub async fn request(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request = self
            .client
            .post(&self.url)
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap().json().await.unwrap()
    }

    /// POSTs `body` as it is (an operation, a batch, a hash alone) with `token`; the
    /// status and the answer.
    pub async fn post_json(&self, token: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .post(&self.url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// The response's data; fails the test on any error.
    pub async fn data(&self, token: &str, query: &str, variables: Value) -> Value {
        let body = self.request(Some(token), query, variables).await;
        assert!(
            body.get("errors").is_none(),
            "unexpected errors: {body:#}\nfor {query}"
        );
        body["data"].clone()
    }

    /// The code of the response's first error; fails the test if there is none.
    pub async fn error_code(&self, token: Option<&str>, query: &str, variables: Value) -> String {
        let body = self.request(token, query, variables).await;
        error_code(&body)
    }

    pub async fn create_project(&self, name: &str) -> String {
        let data = self
            .data(
                &self.admin,
                "mutation($n: String!) { createProject(name: $n) { id } }",
                json!({ "n": name }),
            )
            .await;
        data["createProject"]["id"].as_str().unwrap().to_owned()
    }

    pub async fn create_token(&self, project: &str, role: &str) -> String {
        let data = self
            .data(
                &self.admin,
                "mutation($p: ID!, $r: Role!) { createToken(projectId: $p, name: $r, role: $r) { token } }",
                json!({ "p": project, "r": role }),
            )
            .await;
        data["createToken"]["token"].as_str().unwrap().to_owned()
    }

    pub async fn create_host(
        &self,
        name: &str,
        hypervisor: &str,
        uri: &str,
        max: Option<i32>,
    ) -> String {
        self.create_host_with(name, hypervisor, uri, max, None)
            .await
    }

    /// Like [`Api::create_host`], with the host's `maxConcurrentTasks`.
    pub async fn create_host_with(
        &self,
        name: &str,
        hypervisor: &str,
        uri: &str,
        max: Option<i32>,
        concurrent: Option<i32>,
    ) -> String {
        let data = self
            .data(
                &self.admin,
                "mutation($n: String!, $h: Hypervisor!, $u: String!, $m: Int, $c: Int) {
                   createHost(name: $n, hypervisor: $h, uri: $u, maxSnapshotsPerVm: $m,
                              maxConcurrentTasks: $c) { id }
                 }",
                json!({ "n": name, "h": hypervisor, "u": uri, "m": max, "c": concurrent }),
            )
            .await;
        data["createHost"]["id"].as_str().unwrap().to_owned()
    }

    pub async fn create_vm(&self, host: &str, project: &str, name: &str) -> String {
        let data = self
            .data(
                &self.admin,
                "mutation($h: ID!, $p: ID!, $n: String!) {
                   createVm(hostId: $h, projectId: $p, name: $n, identifier: $n) { id }
                 }",
                json!({ "h": host, "p": project, "n": name }),
            )
            .await;
        data["createVm"]["id"].as_str().unwrap().to_owned()
    }

    /// Registers VM `identifier` of host `host` for project `project`; its id.
    pub async fn register_vm(&self, host: &str, project: &str, identifier: &str) -> String {
        let data = self
            .data(
                &self.admin,
                "mutation($h: ID!, $p: ID!, $i: String!) {
                   createVm(hostId: $h, projectId: $p, name: \"vm\", identifier: $i) { id }
                 }",
                json!({ "h": host, "p": project, "i": identifier }),
            )
            .await;
        data["createVm"]["id"].as_str().unwrap().to_owned()
    }

    /// The VM's tree as its host sees it, in snaptree's record: (host name, parent's host
    /// name) pairs, sorted, and the active snapshot's host name.
    pub async fn host_view(
        &self,
        token: &str,
        vm: &str,
    ) -> (Vec<(String, Option<String>)>, Option<String>) {
        let data = self
            .data(
                token,
                "query($v: ID!) { vm(id: $v) { activeSnapshot { hostName } snapshots { hostName parent { hostName } } } }",
                json!({ "v": vm }),
            )
            .await;
        let mut pairs: Vec<_> = data["vm"]["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["hostName"].as_str().unwrap().to_owned(),
                    s["parent"]["hostName"].as_str().map(str::to_owned),
                )
            })
            .collect();
        pairs.sort();
        let active = data["vm"]["activeSnapshot"]["hostName"]
            .as_str()
            .map(str::to_owned);
        (pairs, active)
    }

    /// A project with an OPERATOR token and a VM on a new simulated host tuned by `uri`.
    pub async fn project_with_vm(&self, project: &str, uri: &str) -> Fixture {
        let project_id = self.create_project(project).await;
        let operator = self.create_token(&project_id, "OPERATOR").await;
        let host = self
            .create_host(&format!("{project}-host"), "SIMULATED", uri, None)
            .await;
        let vm = self
            .create_vm(&host, &project_id, &format!("{project}-vm"))
            .await;
        Fixture {
            project: project_id,
            operator,
            host,
            vm,
        }
    }

    /// Runs an action mutation (`createSnapshot`, ...) and returns (snapshot id, task id).
    pub async fn act(&self, token: &str, mutation: &str, variables: Value) -> (String, String) {
        let data = self.data(token, mutation, variables).await;
        let payload = data.as_object().unwrap().values().next().unwrap();
        (
            payload["snapshot"]["id"].as_str().unwrap().to_owned(),
            payload["task"]["id"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn create_snapshot(&self, token: &str, vm: &str, name: &str) -> (String, String) {
        self.act(
            token,
            "mutation($v: ID!, $n: String!) { createSnapshot(vmId: $v, name: $n) { snapshot { id } task { id } } }",
            json!({ "v": vm, "n": name }),
        )
        .await
    }

    pub async fn apply(&self, token: &str, snapshot: &str) -> (String, String) {
        self.act(
            token,
            "mutation($s: ID!) { applySnapshot(id: $s) { snapshot { id } task { id } } }",
            json!({ "s": snapshot }),
        )
        .await
    }

    pub async fn revert(&self, token: &str, vm: &str) -> (String, String) {
        self.act(
            token,
            "mutation($v: ID!) { revertSnapshot(vmId: $v) { snapshot { id } task { id } } }",
            json!({ "v": vm }),
        )
        .await
    }

    pub async fn delete(&self, token: &str, snapshot: &str, subtree: bool) -> (String, String) {
        self.act(
            token,
            "mutation($s: ID!, $t: Boolean) { deleteSnapshot(id: $s, removeSubtree: $t) { snapshot { id } task { id } } }",
            json!({ "s": snapshot, "t": subtree }),
        )
        .await
    }

    /// Waits until task `task` has ended; returns it with its snapshot.
    pub async fn finished(&self, token: &str, task: &str) -> Value {
        for _ in 0..MAX_POLLS {
            let data = self
                .data(
                    token,
                    "query($t: ID!) { task(id: $t) {
                       id kind state attempts error errorCode errorDetail progress phase startedAt finishedAt
                       snapshot { id state active parent { id } }
                       events { id state progress phase message detail }
                     } }",
                    json!({ "t": task }),
                )
                .await;
            let task = &data["task"];
            if !matches!(task["state"].as_str(), Some("QUEUED" | "RUNNING")) {
                return task.clone();
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("task {task} never ended");
    }

    /// Creates a snapshot and waits for it to be built; returns its id.
    pub async fn snapshot_built(&self, token: &str, vm: &str, name: &str) -> String {
        let (snapshot, task) = self.create_snapshot(token, vm, name).await;
        let done = self.finished(token, &task).await;
        assert_eq!(done["state"], "SUCCEEDED", "{done:#}");
        snapshot
    }

    /// The VM's non-closed snapshots as (id, parent id, state, active), oldest first.
    pub async fn tree(&self, token: &str, vm: &str) -> Vec<(String, Option<String>, String, bool)> {
        let data = self
            .data(
                token,
                "query($v: ID!) { vm(id: $v) { snapshots { id state active parent { id } } } }",
                json!({ "v": vm }),
            )
            .await;
        data["vm"]["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_str().unwrap().to_owned(),
                    s["parent"]["id"].as_str().map(str::to_owned),
                    s["state"].as_str().unwrap().to_owned(),
                    s["active"].as_bool().unwrap(),
                )
            })
            .collect()
    }

    /// The VM's active snapshot id.
    pub async fn active(&self, token: &str, vm: &str) -> Option<String> {
        let data = self
            .data(
                token,
                "query($v: ID!) { vm(id: $v) { activeSnapshot { id } } }",
                json!({ "v": vm }),
            )
            .await;
        data["vm"]["activeSnapshot"]["id"]
            .as_str()
            .map(str::to_owned)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        drop(self.server.take());
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The code of a response's first error.
/// Scrapes with `token`: the status and the body.
pub async fn scrape(app: &TestApp, token: Option<&str>) -> (u16, String) {
    let url = app.url.replace("graphql", "metrics");
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The value of the sample `name` whose labels include `labels` (0 when none is).
pub fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .sum()
}

/// Connections the server has opened to host `host`, by its `/metrics`.
pub async fn connections_opened(app: &TestApp, host: &str) -> f64 {
    let (_, text) = scrape(app, Some(METRICS_TOKEN)).await;
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).unwrap();
    value(
        &parsed,
        "snaptree_host_connections_opened_total",
        &[("host", host)],
    )
}

pub fn error_code(body: &Value) -> String {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error with a code, got {body:#}"))
        .to_owned()
}

/// A project with an OPERATOR token and one VM on its own simulated host.
pub struct Fixture {
    pub project: String,
    pub operator: String,
    pub host: String,
    pub vm: String,
}

/// `tests/<dir>`, when node and its npm package `package` (from its lockfile) can run
/// there; `None` (the test is skipped) otherwise, unless `SNAPTREE_TEST_REQUIRE_NODE=1`
/// (CI), which makes it a failure.
pub fn node_package(dir: &str, package: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(dir);
    let ready = dir.join("node_modules").join(package).exists()
        && std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if ready {
        return Some(dir);
    }
    assert!(
        std::env::var("SNAPTREE_TEST_REQUIRE_NODE").as_deref() != Ok("1"),
        "SNAPTREE_TEST_REQUIRE_NODE=1 but node or {}/node_modules is missing",
        dir.display()
    );
    eprintln!("skipped: node or {}/node_modules is missing", dir.display());
    None
}
