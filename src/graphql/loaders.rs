//! Batch loading for one request. Everything hanging off a VM (its snapshots, their
//! history, tasks and events) loads in one statement per kind for all the VMs a request
//! touches, and is kept for the request; walking a snapshot tree of any depth or width
//! therefore costs a fixed number of statements.
//!
//! async-graphql's `DataLoader` batches keys asked for together, but a key asked for
//! while its batch is already running starts another batch. [`Loaders`] therefore keeps
//! one shared future per key: every later ask awaits the first load.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use async_graphql::dataloader::{DataLoader, Loader};
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

use crate::db::history::Scope;
use crate::db::models::{
    HistoryEntry, Host, HostHealth, Project, Snapshot, Task, TaskEvent, Token, Vm,
};
use crate::db::pages::Page;
use crate::domain::drift::Drift;
use crate::domain::tree::Tree;
use crate::error::AppError;
use crate::service::{Caller, Reads, Service};

/// A load in flight or done, shared by everyone who asks for the same key.
type Memo<V> = Shared<BoxFuture<'static, Result<Option<V>, AppError>>>;

/// The request's loaders: batching, then one load per key.
pub struct Loaders {
    /// The request's `DataLoader`, which batches the keys asked for together.
    batch: Arc<DataLoader<Batch>>,
    /// The service's reads, for loads made outside the `DataLoader` (`drift`).
    reads: Reads,
    /// Who asks, for those loads: drift is read only of a VM the caller may see.
    caller: Caller,
    /// Per key type, a `HashMap<K, Memo<V>>`; `None` keeps nothing (subscriptions, whose
    /// connection outlives any one answer).
    memo: Option<Mutex<HashMap<TypeId, Box<dyn Any + Send>>>>,
    /// Tasks loaded together (a tree's snapshots' tasks), by task: their events are asked
    /// for as one ([`Pages`]).
    task_groups: Mutex<HashMap<i64, Arc<[i64]>>>,
    /// VMs whose open snapshots the request lists whole (`snapshotTree`, `snapshots`):
    /// their snapshots' lists are asked for as one ([`Pages`]), as the cost model counts
    /// them.
    trees: Mutex<std::collections::HashSet<i64>>,
}

impl Loaders {
    /// Loaders for one request: each key loads once.
    pub fn new(service: Service, caller: Caller) -> Self {
        let reads = service.reads().clone();
        Self {
            batch: Arc::new(
                DataLoader::new(
                    Batch {
                        reads: reads.clone(),
                        caller: caller.clone(),
                    },
                    tokio::spawn,
                )
                // Keys asked for together are batched anyway: a batch is fetched on a task
                // of its own, after the resolvers polled with the first key have asked for
                // theirs. Waiting a further millisecond (the default) only added latency and
                // a timer thread's wake-up per batch (7% of the tree query's throughput).
                .delay(std::time::Duration::ZERO),
            ),
            reads,
            caller,
            memo: Some(Mutex::new(HashMap::new())),
            task_groups: Mutex::new(HashMap::new()),
            trees: Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// Records that the request lists VM `vm`'s open snapshots whole.
    pub fn list_tree(&self, vm: i64) {
        let mut trees = self.trees.lock().unwrap_or_else(|p| p.into_inner());
        trees.insert(vm);
    }

    /// Whether the request lists VM `vm`'s open snapshots whole.
    pub fn tree_listed(&self, vm: i64) -> bool {
        let trees = self.trees.lock().unwrap_or_else(|p| p.into_inner());
        trees.contains(&vm)
    }

    /// Records `tasks` as loaded together.
    pub fn group_tasks(&self, tasks: &[Task]) {
        let group: Arc<[i64]> = tasks.iter().map(|t| t.id).collect();
        let mut groups = self.task_groups.lock().unwrap_or_else(|p| p.into_inner());
        for task in tasks {
            groups.entry(task.id).or_insert_with(|| Arc::clone(&group));
        }
    }

    /// The tasks loaded with task `id` (itself alone when none were).
    pub fn task_group(&self, id: i64) -> Arc<[i64]> {
        let groups = self.task_groups.lock().unwrap_or_else(|p| p.into_inner());
        groups.get(&id).cloned().unwrap_or_else(|| Arc::from([id]))
    }

    /// Loaders for a subscription: each event's fields are read afresh.
    pub fn fresh(service: Service, caller: Caller) -> Self {
        Self {
            memo: None,
            ..Self::new(service, caller)
        }
    }

    /// The value for `key`, loaded at most once per request.
    pub async fn load<K, V>(&self, key: K) -> Result<Option<V>, AppError>
    where
        K: Send + Sync + Hash + Eq + Clone + 'static,
        V: Send + Sync + Clone + 'static,
        Batch: Loader<K, Value = V, Error = AppError>,
    {
        let Some(memo) = &self.memo else {
            return self.batch.load_one(key).await;
        };
        let shared = {
            let mut memo = memo.lock().unwrap_or_else(|p| p.into_inner());
            let by_key = memo
                .entry(TypeId::of::<K>())
                .or_insert_with(|| Box::new(HashMap::<K, Memo<V>>::new()))
                .downcast_mut::<HashMap<K, Memo<V>>>()
                .expect("each key type has one value type");
            let batch = Arc::clone(&self.batch);
            by_key
                .entry(key.clone())
                .or_insert_with(|| async move { batch.load_one(key).await }.boxed().shared())
                .clone()
        };
        shared.await
    }
}

/// Loads for one caller.
pub struct Batch {
    /// The service's batch reads, one statement per kind of key.
    reads: Reads,
    /// Who asks: only `VmsOn` is read for the caller (its VMs on a host).
    caller: Caller,
}

/// Keys, one type per kind of load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VmId(pub i64);
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HostId(pub i64);
/// A host's recorded health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HealthOf(pub i64);
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SnapshotId(pub i64);
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProjectId(pub i64);
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TaskId(pub i64);
/// A token, as a policy runs as it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TokenId(pub i64);
/// A VM's non-closed snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OpenSnapshotsOf(pub i64);
/// Pages of VMs' snapshots, closed ones too.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AllSnapshotsOf(pub Pages);
/// Pages of the history of VMs' snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HistoryOfVms(pub Pages);
/// The same page of each of several scopes, asked for as one: a tree's snapshots ask
/// for their history, their tasks and those tasks' events level by level, and keying
/// the request by the whole set (the VM's open snapshots, the tasks loaded together)
/// makes every level find the first one's load, so that a tree of any depth costs the
/// same statements. The rows are read page by page all the same (`db::pages`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pages {
    /// The scopes (snapshot or task ids).
    pub scopes: Arc<[i64]>,
    /// Each page starts after this id.
    pub after: Option<i64>,
    /// Each page holds at most this many rows.
    pub first: i64,
}

impl Pages {
    fn pages(&self) -> impl Iterator<Item = Page> + '_ {
        self.scopes
            .iter()
            .map(|&scope| Page::oldest(scope, self.after, self.first))
    }

    /// Scope `scope`'s page of `rows` (which hold every scope's).
    pub fn pick<T: Clone>(
        &self,
        scope: i64,
        rows: &[T],
        scope_of: impl Fn(&T) -> i64,
        id: impl Fn(&T) -> i64,
    ) -> Vec<T> {
        Page::oldest(scope, self.after, self.first).pick(rows, scope_of, id)
    }
}

/// Pages of snapshots' history.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HistoryOfSnapshots(pub Pages);
/// Pages of the tasks that acted on snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TasksOfSnapshots(pub Pages);
/// Pages of tasks' events.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EventsOfTasks(pub Pages);
/// A VM's queued or running task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OpenTaskOf(pub i64);

/// The caller's VMs on a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VmsOn(pub i64);

/// How many non-closed snapshots a project has across its VMs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SnapshotCountOf(pub i64);

impl Loader<SnapshotCountOf> for Batch {
    type Value = i64;
    type Error = AppError;

    async fn load(
        &self,
        keys: &[SnapshotCountOf],
    ) -> Result<HashMap<SnapshotCountOf, i64>, AppError> {
        let counts = self
            .reads
            .snapshot_counts_of_projects(&ids(keys, |k| k.0))
            .await?;
        Ok(counts
            .into_iter()
            .map(|(project, n)| (SnapshotCountOf(project), n))
            .collect())
    }
}

/// Where a VM's host and snaptree disagree, asked of the host once per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DriftOf(pub i64);

impl Loaders {
    /// The drift of VM `key.0`, asked of its host once per request. The host read itself
    /// runs apart from the request and is bounded by its own deadline (see
    /// `hypervisor::registry::reads`): a request that ends early stops waiting for it,
    /// and the host's lasting connection is not cut in the middle of a command.
    pub async fn drift(&self, key: DriftOf) -> Arc<Result<Vec<Drift>, AppError>> {
        let (reads, caller) = (self.reads.clone(), self.caller.clone());
        let ask = async move { Arc::new(reads.drift(&caller, key.0).await) };
        let Some(memo) = &self.memo else {
            return ask.await;
        };
        type Asked = Shared<BoxFuture<'static, Arc<Result<Vec<Drift>, AppError>>>>;
        let shared = {
            let mut memo = memo.lock().unwrap_or_else(|p| p.into_inner());
            let by_key = memo
                .entry(TypeId::of::<DriftOf>())
                .or_insert_with(|| Box::new(HashMap::<DriftOf, Asked>::new()))
                .downcast_mut::<HashMap<DriftOf, Asked>>()
                .expect("each key type has one value type");
            by_key
                .entry(key)
                .or_insert_with(|| ask.boxed().shared())
                .clone()
        };
        shared.await
    }
}

/// The memo key of a VM's tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct TreeOf(i64);

impl Loaders {
    /// VM `vm`'s tree as the rules see it, built once per request from its non-closed
    /// snapshots (every snapshot's offers are read off it).
    pub async fn tree(&self, vm: i64) -> Result<Arc<Tree>, AppError> {
        let rows: Arc<Vec<Snapshot>> = self.load(OpenSnapshotsOf(vm)).await?.unwrap_or_default();
        let build = || Arc::new(Tree::new(rows.iter().map(Into::into).collect()));
        let Some(memo) = &self.memo else {
            return Ok(build());
        };
        let mut memo = memo.lock().unwrap_or_else(|p| p.into_inner());
        let by_vm = memo
            .entry(TypeId::of::<TreeOf>())
            .or_insert_with(|| Box::new(HashMap::<TreeOf, Arc<Tree>>::new()))
            .downcast_mut::<HashMap<TreeOf, Arc<Tree>>>()
            .expect("each key type has one value type");
        Ok(Arc::clone(by_vm.entry(TreeOf(vm)).or_insert_with(build)))
    }
}

fn ids<K: Copy>(keys: &[K], id: impl Fn(K) -> i64) -> Vec<i64> {
    keys.iter().map(|&k| id(k)).collect()
}

/// Groups `rows` by `key`, giving every requested key a list (empty when it has none).
fn grouped<K, T>(keys: &[K], rows: Vec<T>, key: impl Fn(&T) -> K) -> HashMap<K, Arc<Vec<T>>>
where
    K: Copy + Eq + Hash,
{
    let mut groups: HashMap<K, Vec<T>> = keys.iter().map(|&k| (k, Vec::new())).collect();
    for row in rows {
        if let Some(group) = groups.get_mut(&key(&row)) {
            group.push(row);
        }
    }
    groups.into_iter().map(|(k, v)| (k, Arc::new(v))).collect()
}

/// Declares a loader from a batch read that returns rows, and how to key them.
macro_rules! by_key {
    ($key:ident => $value:ty, |$this:ident, $ids:ident| $read:expr, |$row:ident| $row_key:expr) => {
        impl Loader<$key> for Batch {
            type Value = $value;
            type Error = AppError;

            async fn load(&self, keys: &[$key]) -> Result<HashMap<$key, $value>, AppError> {
                let $this = self;
                let $ids = ids(keys, |k| k.0);
                let rows = $read.await?;
                Ok(rows.into_iter().map(|$row| ($row_key, $row)).collect())
            }
        }
    };
}

/// Declares a loader of [`Pages`]: one statement reads every page of every key (each
/// scope's once), and each key gets all the rows; its resolvers pick their own.
macro_rules! grouped_pages {
    ($key:ident => $row_ty:ty, |$this:ident, $pages:ident| $read:expr) => {
        impl Loader<$key> for Batch {
            type Value = Arc<Vec<$row_ty>>;
            type Error = AppError;

            async fn load(
                &self,
                keys: &[$key],
            ) -> Result<HashMap<$key, Arc<Vec<$row_ty>>>, AppError> {
                let $this = self;
                let $pages: Vec<Page> = keys
                    .iter()
                    .flat_map(|k| k.0.pages())
                    .collect::<std::collections::HashSet<_>>()
                    .into_iter()
                    .collect();
                let rows = Arc::new($read.await?);
                Ok(keys
                    .iter()
                    .map(|k| (k.clone(), Arc::clone(&rows)))
                    .collect())
            }
        }
    };
}

/// Declares a loader of lists: every key gets one, empty when it has no rows.
macro_rules! lists {
    ($key:ident => $row_ty:ty, |$this:ident, $ids:ident| $read:expr, |$row:ident| $row_key:expr) => {
        impl Loader<$key> for Batch {
            type Value = Arc<Vec<$row_ty>>;
            type Error = AppError;

            async fn load(
                &self,
                keys: &[$key],
            ) -> Result<HashMap<$key, Arc<Vec<$row_ty>>>, AppError> {
                let $this = self;
                let $ids = ids(keys, |k| k.0);
                let rows = $read.await?;
                Ok(grouped(keys, rows, |$row: &$row_ty| $row_key))
            }
        }
    };
}

by_key!(VmId => Vm, |b, ids| b.reads.vms_by_ids(&ids), |r| VmId(r.id));
by_key!(HostId => Host, |b, ids| b.reads.hosts_by_ids(&ids), |r| HostId(r.id));
by_key!(HealthOf => HostHealth, |b, ids| b.reads.health_of_hosts(&ids), |r| HealthOf(r.host_id));
by_key!(ProjectId => Project, |b, ids| b.reads.projects_by_ids(&ids), |r| ProjectId(r.id));
by_key!(SnapshotId => Snapshot, |b, ids| b.reads.snapshots_by_ids(&ids), |r| SnapshotId(r.id));
by_key!(TaskId => Task, |b, ids| b.reads.tasks_by_ids(&ids), |r| TaskId(r.id));
by_key!(TokenId => Token, |b, ids| b.reads.tokens_by_ids(&ids), |r| TokenId(r.id));
by_key!(OpenTaskOf => Task, |b, ids| b.reads.open_tasks_of_vms(&ids), |r| OpenTaskOf(r.vm_id));
lists!(OpenSnapshotsOf => Snapshot, |b, ids| b.reads.snapshots_of_vms(&ids, false), |r| OpenSnapshotsOf(r.vm_id));
grouped_pages!(AllSnapshotsOf => Snapshot, |b, pages| b.reads.snapshot_pages_of_vms(&pages));
grouped_pages!(HistoryOfVms => HistoryEntry, |b, pages| b.reads.history_pages(Scope::Vm, &pages));
grouped_pages!(HistoryOfSnapshots => HistoryEntry, |b, pages| b.reads.history_pages(Scope::Snapshot, &pages));
grouped_pages!(TasksOfSnapshots => Task, |b, pages| b.reads.task_pages_of_snapshots(&pages));
grouped_pages!(EventsOfTasks => TaskEvent, |b, pages| b.reads.event_pages(&pages));
lists!(VmsOn => Vm, |b, ids| b.reads.vms_on_hosts(&b.caller, &ids), |r| VmsOn(r.host_id));
