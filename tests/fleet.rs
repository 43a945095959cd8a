//! Separate processes on one PostgreSQL database behave as one: servers without robots
//! take the actions, robots in other processes run them, and a subscriber on any server
//! sees every event of every process, in order, exactly once. (PostgreSQL only: SQLite
//! serves one machine.)

mod common;

use std::collections::HashMap;

use common::Api;
use common::fleet::{Ends, Fleet, at_once, check_invariants, on_postgres};
use common::process::{RobotProcess, ServerProcess};
use common::proxy::Proxy;
use snaptree::domain::TaskState;

/// One random action on VM `vm` that its tree allows; (task id, what it was).
async fn random_action(
    api: &Api,
    token: &str,
    vm: &str,
    step: usize,
    rng: &mut fastrand::Rng,
) -> (String, String) {
    let tree = api.tree(token, vm).await;
    let built: Vec<&String> = tree
        .iter()
        .filter(|s| s.2 == "RUNNING")
        .map(|s| &s.0)
        .collect();
    let active = tree.iter().any(|s| s.3);
    let roll = rng.u32(..100);
    let (snapshot, what) = match () {
        _ if built.is_empty() || roll < 40 => ("".to_owned(), "create"),
        _ if roll < 60 => (built[rng.usize(..built.len())].clone(), "apply"),
        _ if roll < 70 && active => ("".to_owned(), "revert"),
        _ if roll < 90 => (built[rng.usize(..built.len())].clone(), "delete"),
        _ => (built[rng.usize(..built.len())].clone(), "delete subtree"),
    };
    let (_, task) = match what {
        "create" => {
            api.create_snapshot(token, vm, &format!("s{step}-{}", rng.u32(..)))
                .await
        }
        "apply" => api.apply(token, &snapshot).await,
        "revert" => api.revert(token, vm).await,
        "delete" => api.delete(token, &snapshot, false).await,
        _ => api.delete(token, &snapshot, true).await,
    };
    (task, what.to_owned())
}

/// The run's seed, printed: `SNAPTREE_FLEET_SEED` replays a run.
fn seed() -> u64 {
    let seed = std::env::var("SNAPTREE_FLEET_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("SNAPTREE_FLEET_SEED={seed}");
    seed
}

/// `actions` random actions on each of `vms` at once, each VM's next once `ends` has seen
/// its last end, sent through `apis` in turn.
async fn random_chains(
    apis: &[Api],
    admin: &str,
    vms: &[String],
    ends: &Ends,
    seed: u64,
    actions: usize,
) {
    let chains = vms.iter().enumerate().map(|(v, vm)| {
        let mut rng = fastrand::Rng::with_seed(seed ^ v as u64);
        async move {
            for step in 0..actions {
                let api = &apis[(v + step) % apis.len()];
                let (task, _) = random_action(api, admin, vm, step, &mut rng).await;
                ends.wait(&task).await;
            }
        }
    });
    futures_util::future::join_all(chains).await;
}

/// Two `serve --no-robot` and three `snaptree robot` on one database: 1,000 random
/// actions over 100 VMs through both servers, each task run once by some robot, every
/// event seen on the other server, in order.
#[tokio::test]
async fn two_servers_and_three_robots_behave_as_one() {
    if !on_postgres() {
        return;
    }
    const VMS: usize = 100;
    const ACTIONS: usize = 10;
    let seed = seed();
    let fleet = Fleet::new().await;
    let (db, admin) = (&fleet.db, fleet.admin.clone());
    let servers: Vec<ServerProcess> = ["a", "b"].iter().map(|name| fleet.server(name)).collect();
    let robots: Vec<RobotProcess> = fleet.robots(3, &["--lease-seconds", "5"]);
    let apis: Vec<Api> = servers.iter().map(|s| fleet.api(s)).collect();

    let project = apis[0].create_project("fleet").await;
    let host = apis[0]
        .create_host("sim", "SIMULATED", "sim://?latency_ms=2", None)
        .await;
    let mut vms = Vec::new();
    for i in 0..VMS {
        vms.push(
            apis[i % 2]
                .create_vm(&host, &project, &format!("vm{i}"))
                .await,
        );
    }
    // The subscriber listens on server b; half the actions go through server a.
    let ends = Ends::default();
    let follower = ends.follow(&apis[1].url, &admin).await;

    random_chains(&apis, &admin, &vms, &ends, seed, ACTIONS).await;

    let (tasks, events) = check_invariants(db).await;
    assert_eq!(tasks.len(), VMS * ACTIONS);
    assert!(
        tasks.iter().all(|t| t.state() == TaskState::Succeeded),
        "a task failed on a host that does not fail"
    );
    // Every event, in id order, exactly once, on the server that ran none of them.
    let received: Vec<i64> = ends.received.lock().unwrap().iter().map(|e| e.0).collect();
    let stored: Vec<i64> = events.iter().map(|e| e.id).collect();
    assert_eq!(
        received, stored,
        "the subscriber on server b missed, repeated or reordered events"
    );
    // Each task was started once, and the work was shared by the robots.
    let mut by_robot: HashMap<String, usize> = HashMap::new();
    for event in &events {
        if let Some(owner) = event
            .message
            .as_deref()
            .and_then(|m| m.strip_prefix("started by "))
        {
            *by_robot.entry(owner.to_owned()).or_default() += 1;
        }
    }
    assert_eq!(
        by_robot.values().sum::<usize>(),
        tasks.len(),
        "{by_robot:?}"
    );
    assert!(
        by_robot.len() >= 2,
        "one robot did all the work: {by_robot:?}"
    );
    follower.abort();
    drop(robots);
    drop(servers);
}

/// A robot killed (SIGKILL) in the middle of tasks on a slow host: the other robots take
/// every one of its tasks up once its lease runs out, and finish each exactly once.
#[tokio::test]
async fn a_killed_robots_tasks_are_finished_by_the_others() {
    use snaptree::hypervisor::Driver;
    use snaptree::hypervisor::sim::SimDriver;
    if !on_postgres() {
        return;
    }
    const VMS: usize = 12;
    let fleet = Fleet::new().await;
    let (db, sim, admin) = (&fleet.db, &fleet.sim, fleet.admin.clone());
    let server = fleet.server("server");
    let mut robots: Vec<RobotProcess> = fleet.robots(3, &["--lease-seconds", "2"]);
    let api = fleet.api(&server);
    let project = api.create_project("fleet").await;
    let host = api
        .create_host_with(
            "slow",
            "SIMULATED",
            "sim://?latency_ms=3000",
            None,
            Some(VMS as i32),
        )
        .await;
    let ends = Ends::default();
    let follower = ends.follow(&api.url, &admin).await;
    let mut tasks = Vec::new();
    for i in 0..VMS {
        let vm = api.create_vm(&host, &project, &format!("vm{i}")).await;
        tasks.push(api.create_snapshot(&admin, &vm, "before").await.1);
    }

    // Once every task runs, kill the robot that holds the most.
    let holders = fleet.all_running().await;
    let mut held: HashMap<u32, Vec<i64>> = HashMap::new();
    for task in &holders {
        let owner = task.lease_owner.as_deref().unwrap();
        let pid: u32 = owner.split('-').nth(1).unwrap().parse().unwrap();
        held.entry(pid).or_default().push(task.id);
    }
    let (&victim, victims_tasks) = held.iter().max_by_key(|(_, t)| t.len()).unwrap();
    let victims_tasks = victims_tasks.clone();
    robots
        .iter_mut()
        .find(|r| r.pid() == victim)
        .unwrap()
        .kill();

    for task in &tasks {
        ends.wait(task).await;
    }
    let (all, events) = check_invariants(db).await;
    for task in &all {
        assert_eq!(task.state(), TaskState::Succeeded, "{task:?}");
        let started: Vec<&str> = events
            .iter()
            .filter(|e| e.task_id == task.id)
            .filter_map(|e| e.message.as_deref())
            .filter(|m| m.starts_with("started by") || m.starts_with("taken up again"))
            .collect();
        if victims_tasks.contains(&task.id) {
            assert!(task.attempts >= 2, "{task:?}");
            assert!(
                started.last().unwrap().starts_with("taken up again"),
                "{started:?}"
            );
            assert!(
                !started
                    .last()
                    .unwrap()
                    .contains(&format!("robot-{victim}-")),
                "{started:?}"
            );
        } else {
            assert_eq!(
                started.len(),
                1,
                "task {} started twice: {started:?}",
                task.id
            );
        }
    }
    // The host has each snapshot exactly once.
    let on_host = SimDriver::new("sim://", &sim.join(format!("host-{host}"))).unwrap();
    for i in 0..VMS {
        let listed = on_host.list(&format!("vm{i}")).await.unwrap();
        assert_eq!(listed.len(), 1, "vm{i}: {listed:?}");
    }
    follower.abort();
}

/// A robot told to stop (SIGTERM) finishes what it can within its grace and hands the
/// rest back at once: another robot takes the task up without waiting for the lease.
#[tokio::test]
async fn a_stopping_robot_hands_back_what_outlasts_its_grace() {
    use snaptree::hypervisor::Driver;
    use snaptree::hypervisor::sim::SimDriver;
    if !on_postgres() {
        return;
    }
    let fleet = Fleet::new().await;
    let (db, sim, admin) = (&fleet.db, &fleet.sim, fleet.admin.clone());
    let server = fleet.server("server");
    // A lease far longer than the test: only a hand-back lets another robot in.
    let flags = ["--lease-seconds", "600", "--shutdown-grace-seconds", "1"];
    let mut first = fleet.robot("first", &flags);
    let api = fleet.api(&server);
    let project = api.create_project("fleet").await;
    let host = api
        .create_host("slow", "SIMULATED", "sim://?latency_ms=5000", None)
        .await;
    let vm = api.create_vm(&host, &project, "vm").await;
    let ends = Ends::default();
    let follower = ends.follow(&api.url, &admin).await;
    let (_, task) = api.create_snapshot(&admin, &vm, "s").await;

    fleet.all_running().await;
    assert!(
        first.terminate().success(),
        "the robot did not stop cleanly"
    );
    let _second = fleet.robot("second", &["--lease-seconds", "600"]);
    ends.wait(&task).await;

    let (all, events) = check_invariants(db).await;
    assert_eq!(all[0].state(), TaskState::Succeeded);
    let messages: Vec<&str> = events.iter().filter_map(|e| e.message.as_deref()).collect();
    let handed_back = messages
        .iter()
        .position(|m| *m == "queued again: its robot is stopping");
    let taken_up = messages
        .iter()
        .position(|m| m.starts_with("taken up again"));
    assert!(
        matches!((handed_back, taken_up), (Some(a), Some(b)) if a < b),
        "{messages:#?}"
    );
    let on_host = SimDriver::new("sim://", &sim.join(format!("host-{host}"))).unwrap();
    assert_eq!(on_host.list("vm").await.unwrap().len(), 1);
    follower.abort();
}

/// Hosts that fail 30% of calls (half for good, half transiently) and hang 5%, and one
/// that is down (every call fails after a second, as when libvirtd is stopped), under
/// three robots with short host-call timeouts: every task ends, every failure says why on
/// its task, no robot loses a lease it holds (none dies here, so a task "taken up again"
/// would be a lapsed lease), and snaptree's trees match the hosts'.
#[tokio::test]
async fn faults_on_the_hosts_lose_nothing() {
    use snaptree::hypervisor::Driver;
    use snaptree::hypervisor::sim::SimDriver;
    if !on_postgres() {
        return;
    }
    const VMS: usize = 30;
    const ACTIONS: usize = 8;
    let seed = seed();
    let fleet = Fleet::new().await;
    let (db, sim, admin) = (&fleet.db, &fleet.sim, fleet.admin.clone());
    let server = fleet.server("server");
    // Leases of 8 s, renewed every 2.7 s. On the down host, attempts of 1 s and the first
    // waits between them (0.5, 1, 2 s) are each shorter than that period: a heartbeat
    // restarted with each attempt or wait (a bug once) would never beat, and the lease
    // would run out after a few of them.
    let flags = [
        "--lease-seconds",
        "8",
        "--create-timeout-seconds",
        "2",
        "--apply-timeout-seconds",
        "2",
        "--delete-timeout-seconds",
        "2",
    ];
    let _robots: Vec<RobotProcess> = fleet.robots(3, &flags);
    let api = fleet.api(&server);
    let project = api.create_project("faults").await;
    let host = api
        .create_host(
            "faulty",
            "SIMULATED",
            "sim://?latency_ms=8&fail_rate=0.15&flaky_rate=0.15&hang_rate=0.05",
            None,
        )
        .await;
    let down = api
        .create_host(
            "down",
            "SIMULATED",
            "sim://?latency_ms=2000&flaky_rate=1",
            None,
        )
        .await;
    let mut vms = Vec::new();
    for i in 0..VMS {
        vms.push(api.create_vm(&host, &project, &format!("vm{i}")).await);
    }
    let mut stranded = Vec::new();
    for i in 0..3 {
        stranded.push(
            api.create_vm(&down, &project, &format!("stranded{i}"))
                .await,
        );
    }
    let ends = Ends::default();
    let follower = ends.follow(&api.url, &admin).await;
    let mut doomed = Vec::new();
    for vm in &stranded {
        doomed.push(api.create_snapshot(&admin, vm, "never").await.1);
    }
    random_chains(
        std::slice::from_ref(&api),
        &admin,
        &vms,
        &ends,
        seed,
        ACTIONS,
    )
    .await;
    for task in &doomed {
        ends.wait(task).await;
    }

    let (tasks, events) = check_invariants(db).await;
    assert_eq!(tasks.len(), VMS * ACTIONS + doomed.len());
    for task in tasks.iter().filter(|t| doomed.contains(&t.id.to_string())) {
        let error = task.error.as_deref().unwrap_or_default();
        assert!(error.starts_with("gave up after"), "{error}");
    }
    let failed = tasks
        .iter()
        .filter(|t| t.state() == TaskState::Failed)
        .count();
    eprintln!(
        "{} tasks, {failed} failed, {} events",
        tasks.len(),
        events.len()
    );
    // With 15% of calls failing for good, some tasks must fail: else the faults were off.
    assert!(failed > 0, "no task failed on hosts that fail");
    for task in &tasks {
        let mine: Vec<&str> = events
            .iter()
            .filter(|e| e.task_id == task.id)
            .filter_map(|e| e.message.as_deref())
            .collect();
        if task.state() == TaskState::Failed {
            // Snaptree's words for the project, the host's own for an ADMIN.
            let error = task.error.as_deref().unwrap_or_default();
            let detail = task.error_detail.as_deref().unwrap_or_default();
            assert!(
                task.error_code.is_some() && !error.is_empty() && !error.contains("simulated"),
                "task {} failed without its reason, or with the host's words: {error:?}",
                task.id
            );
            assert!(
                detail.contains("simulated") || detail.contains("did not finish"),
                "task {} failed without the host's reason: {detail:?}",
                task.id
            );
        }
        let starts = mine
            .iter()
            .filter(|m| m.starts_with("started by") || m.starts_with("taken up again"))
            .count();
        assert_eq!(starts, 1, "task {} lost its lease: {mine:#?}", task.id);
    }
    // The hosts hold exactly the snapshots snaptree shows as built, and their current
    // snapshot is snaptree's active one.
    let lib = snaptree::db::Db::connect(&db.url).await.unwrap();
    let mut pooled = lib.reader().await.unwrap();
    let on_host = SimDriver::new("sim://", &sim.join(format!("host-{host}"))).unwrap();
    for (i, vm) in vms.iter().enumerate() {
        let vm: i64 = vm.parse().unwrap();
        let ours = snaptree::db::snapshots::of_vms(&mut pooled.conn(), &[vm], false)
            .await
            .unwrap();
        let mut built: Vec<&str> = ours
            .iter()
            .filter(|s| s.state() == snaptree::domain::SnapshotState::Running)
            .map(|s| s.host_name.as_str())
            .collect();
        built.sort();
        let active = ours.iter().find(|s| s.active).map(|s| s.host_name.clone());
        let theirs = on_host.list(&format!("vm{i}")).await.unwrap();
        let mut held: Vec<&str> = theirs.iter().map(|s| s.name.as_str()).collect();
        held.sort();
        let current = theirs.iter().find(|s| s.current).map(|s| s.name.clone());
        assert_eq!(built, held, "vm{i}: snaptree's snapshots vs the host's");
        assert_eq!(active, current, "vm{i}: active vs the host's current");
    }
    follower.abort();
}

/// Servers stopped while clients follow `events` on them: one killed outright (SIGKILL),
/// one told to stop (SIGTERM, which closes its sockets with 1001, "go elsewhere"). Their
/// subscribers resubscribe on the server left, with `after` the last event they saw, and
/// end up with every event, in order, exactly once.
#[tokio::test]
async fn subscribers_of_a_stopped_server_resume_on_another() {
    if !on_postgres() {
        return;
    }
    const VMS: usize = 20;
    const ACTIONS: usize = 10;
    let seed = seed();
    let fleet = Fleet::new().await;
    let (db, admin) = (&fleet.db, fleet.admin.clone());
    let mut servers: Vec<ServerProcess> = ["a", "b", "c"]
        .iter()
        .map(|name| fleet.server(name))
        .collect();
    let _robots: Vec<RobotProcess> = fleet.robots(2, &[]);
    let urls: Vec<String> = servers.iter().map(|s| fleet.api(s).url).collect();
    let api = fleet.api(&servers[1]);
    let project = api.create_project("fleet").await;
    let host = api
        .create_host("sim", "SIMULATED", "sim://?latency_ms=20", None)
        .await;
    let mut vms = Vec::new();
    for i in 0..VMS {
        vms.push(api.create_vm(&host, &project, &format!("vm{i}")).await);
    }
    // The actions go through b, and b's own subscriber says when each has ended.
    let on_b = Ends::default();
    let follow_b = on_b.follow(&urls[1], &admin).await;
    let on_a = Ends::default();
    let follow_a = on_a.follow_any(&[&urls[0], &urls[1]], &admin).await;
    let on_c = Ends::default();
    let follow_c = on_c.follow_any(&[&urls[2], &urls[1]], &admin).await;

    let apis = [api.clone()];
    let chains = random_chains(&apis, &admin, &vms, &on_b, seed, ACTIONS);
    let ended = |ends: &Ends| {
        ends.received
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e.2.as_str(), "SUCCEEDED" | "FAILED" | "CANCELLED"))
            .count()
    };
    let (mut a, mut c) = (servers.remove(0), servers.remove(1));
    let stopper = async {
        while ended(&on_b) < VMS * ACTIONS / 3 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        a.kill();
        while ended(&on_b) < VMS * ACTIONS * 2 / 3 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(c.terminate().success(), "server c did not stop cleanly");
    };
    tokio::join!(chains, stopper);

    let (tasks, events) = check_invariants(db).await;
    assert_eq!(tasks.len(), VMS * ACTIONS);
    let stored: Vec<i64> = events.iter().map(|e| e.id).collect();
    for (name, ends) in [("a", &on_a), ("c", &on_c)] {
        // The last events may still be on their way; a hang guard, not a time limit.
        for _ in 0..3000 {
            if ends.received.lock().unwrap().len() >= stored.len() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let received: Vec<i64> = ends.received.lock().unwrap().iter().map(|e| e.0).collect();
        assert_eq!(
            received, stored,
            "the subscriber of server {name} missed, repeated or reordered events"
        );
    }
    assert!(
        !on_a.closes.lock().unwrap().is_empty(),
        "server a's socket never closed"
    );
    assert!(
        on_c.closes.lock().unwrap().contains(&1001),
        "server c closed its sockets with {:?}, not 1001",
        on_c.closes.lock().unwrap()
    );
    for follower in [follow_a, follow_b, follow_c] {
        follower.abort();
    }
}

/// A burst over two hosts that take 2 and 3 tasks at once, run by three robots with 8
/// workers each: never more tasks on a host at once than it takes (read from each task's
/// start and end events), the limit used to the full, and each host's tasks started in the
/// order they were queued.
#[tokio::test]
async fn a_hosts_limit_holds_across_robots() {
    if !on_postgres() {
        return;
    }
    const VMS: usize = 12;
    let fleet = Fleet::new().await;
    let (db, admin) = (&fleet.db, fleet.admin.clone());
    let server = fleet.server("server");
    let _robots: Vec<RobotProcess> = fleet.robots(3, &[]);
    let api = fleet.api(&server);
    let project = api.create_project("burst").await;
    let mut hosts = Vec::new();
    for (name, limit) in [("narrow", 2), ("wider", 3)] {
        // Long enough that a loaded machine (CI runs these tests side by side) still
        // starts a host's next tasks well before its running ones end.
        let uri = "sim://?latency_ms=1000";
        let host = api
            .create_host_with(name, "SIMULATED", uri, None, Some(limit))
            .await;
        let mut vms = Vec::new();
        for i in 0..VMS {
            vms.push(api.create_vm(&host, &project, &format!("{name}{i}")).await);
        }
        hosts.push((host.parse::<i64>().unwrap(), limit as usize, vms));
    }
    let ends = Ends::default();
    let follower = ends.follow(&api.url, &admin).await;
    let mut queued = Vec::new();
    for i in 0..VMS {
        for (_, _, vms) in &hosts {
            queued.push(api.create_snapshot(&admin, &vms[i], "burst").await.1);
        }
    }
    for task in &queued {
        ends.wait(task).await;
    }

    let (tasks, events) = check_invariants(db).await;
    assert!(tasks.iter().all(|t| t.state() == TaskState::Succeeded));
    for (host, limit, _) in &hosts {
        let mine: Vec<i64> = tasks
            .iter()
            .filter(|t| t.host_id == *host)
            .map(|t| t.id)
            .collect();
        let (most, starts) = at_once(&events, &mine);
        assert_eq!(most, *limit as i32, "host {host}: most tasks at once");
        let mut in_order = starts.clone();
        in_order.sort();
        assert_eq!(starts, in_order, "host {host}: tasks started out of order");
    }
    follower.abort();
}

/// A hang guard, not a performance limit: what never happens fails the test instead of
/// stalling the suite.
const HANG_GUARD: std::time::Duration = std::time::Duration::from_secs(300);

/// Waits until `done`, within the hang guard.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let guard = std::time::Instant::now() + HANG_GUARD;
    while !done() {
        assert!(std::time::Instant::now() < guard, "{what}: never happened");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// How the database goes away from a robot in [`cut_off_past_the_lease`].
#[derive(Clone, Copy)]
enum Outage {
    /// Its connections stay open and carry nothing (a network partition).
    Silent,
    /// Its connections close and new ones are closed at once (a database that went away).
    Closed,
}

/// The host's journal of `host`, as (event, operation, VM, snapshot, process) lines.
fn journal(fleet: &Fleet, host: &str) -> Vec<Vec<String>> {
    let path = fleet.sim.join(format!("host-{host}")).join("journal.log");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(' ').map(str::to_owned).collect())
        .collect()
}

/// Checks that no two operations on one VM overlapped on the host (each began after the
/// one before had ended, however it did); returns the ones still running.
fn never_beside_another(lines: &[Vec<String>]) -> Vec<Vec<String>> {
    let mut running: HashMap<String, &Vec<String>> = HashMap::new();
    for line in lines {
        let vm = line[2].clone();
        match line[0].as_str() {
            "began" => {
                if let Some(other) = running.insert(vm, line) {
                    panic!("{line:?} began while {other:?} ran: {lines:#?}");
                }
            }
            _ => {
                let began = running.remove(&vm);
                assert!(
                    began.is_some_and(|b| b[1..] == line[1..]),
                    "{line:?} ended what it did not begin: {lines:#?}"
                );
            }
        }
    }
    running.into_values().cloned().collect()
}

/// How many times the host's journal says `op` was done.
fn times_done(lines: &[Vec<String>], op: &str) -> usize {
    lines
        .iter()
        .filter(|l| l[0] == "done" && l[1] == op)
        .count()
}

/// A robot runs a slow create (6 s, twice its 3 s lease) when the database stops
/// answering it, for longer than the lease. With `second`, another robot is there to
/// take the task up; without, the database comes back once the lease has run out and
/// the same process claims the task again. Either way the create runs on the host once
/// at a time, is done once, and the record is true: the robot gives the task up before
/// its lease runs out, and whatever it still sends under its old claim is refused.
async fn cut_off_past_the_lease(outage: Outage, second: bool) {
    let fleet = Fleet::new().await;
    let (db, url, sim, admin) = (&fleet.db, &fleet.url, &fleet.sim, fleet.admin.clone());
    let log = |name: &str| fleet.log(name);
    let server = fleet.server("server");
    let proxy = Proxy::start(Proxy::postgres_addr(url)).await;
    let through = Proxy::postgres_url(url, proxy.addr.port());
    let flags = ["--lease-seconds", "3", "--shutdown-grace-seconds", "1"];
    let mut first = RobotProcess::start(&through, sim, &flags, &log("first"));
    let api = fleet.api(&server);
    let project = api.create_project("fleet").await;
    let uri = "sim://?latency_ms=6000&journal=1";
    let host = api.create_host("slow", "SIMULATED", uri, None).await;
    let vm = api.create_vm(&host, &project, "vm").await;
    let ends = Ends::default();
    let follower = ends.follow(&api.url, &admin).await;
    let (_, task) = api.create_snapshot(&admin, &vm, "s").await;
    until("the create began on the host", || {
        !journal(&fleet, &host).is_empty()
    })
    .await;

    match outage {
        Outage::Silent => proxy.pause(),
        Outage::Closed => proxy.cut(),
    }
    let _second = if second {
        Some(fleet.robot("second", &flags))
    } else {
        // The database lets another claim in once the lease has run out.
        let lib = snaptree::db::Db::connect(&db.url).await.unwrap();
        let guard = std::time::Instant::now() + HANG_GUARD;
        loop {
            let mut pooled = lib.reader().await.unwrap();
            let all = snaptree::db::tasks::page(&mut pooled.conn(), Default::default(), None, 10)
                .await
                .unwrap();
            if all[0].lease_expires_at < Some(snaptree::db::now()) {
                break;
            }
            assert!(std::time::Instant::now() < guard, "the lease never ran out");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // The robot stopped its host call before its lease ran out.
        let lines = journal(&fleet, &host);
        assert!(never_beside_another(&lines).is_empty(), "{lines:#?}");
        proxy.resume();
        None
    };
    ends.wait(&task).await;
    // Whatever the first robot still does, the host has run no call beside another.
    never_beside_another(&journal(&fleet, &host));
    proxy.resume();
    // The first robot has given the task up; terminated, it has nothing left to write.
    let first_log = log("first");
    until("the first robot gave the task up", || {
        std::fs::read_to_string(&first_log)
            .unwrap_or_default()
            .contains("gave the task up")
    })
    .await;
    assert!(
        first.terminate().success(),
        "the first robot did not stop cleanly"
    );

    let lines = journal(&fleet, &host);
    never_beside_another(&lines);
    assert_eq!(times_done(&lines, "create"), 1, "{lines:#?}");
    let (all, events) = check_invariants(db).await;
    assert_eq!(all[0].state(), TaskState::Succeeded);
    assert_eq!(all[0].attempts, 2, "{all:#?}");
    let messages: Vec<&str> = events.iter().filter_map(|e| e.message.as_deref()).collect();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("taken up again by robot-") && m.ends_with("after 1 attempts")),
        "{messages:#?}"
    );
    use snaptree::hypervisor::Driver;
    let on_host =
        snaptree::hypervisor::sim::SimDriver::new("sim://", &sim.join(format!("host-{host}")))
            .unwrap();
    assert_eq!(on_host.list("vm").await.unwrap().len(), 1);
    follower.abort();
}

#[tokio::test]
async fn a_robot_cut_off_by_a_silent_network_stops_before_another_takes_its_task_up() {
    if on_postgres() {
        cut_off_past_the_lease(Outage::Silent, true).await;
    }
}

#[tokio::test]
async fn a_robot_whose_database_went_away_stops_before_another_takes_its_task_up() {
    if on_postgres() {
        cut_off_past_the_lease(Outage::Closed, true).await;
    }
}

#[tokio::test]
async fn a_robot_that_takes_its_own_lapsed_task_up_again_never_runs_it_twice() {
    if on_postgres() {
        cut_off_past_the_lease(Outage::Closed, false).await;
    }
}
