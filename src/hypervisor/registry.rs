//! Which driver serves a host, built from its checked URI; the one limit on how many
//! operations run against a host at once, shared by queries (`drift`) and the robot; and
//! the host's health, from the outcome of every call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, Semaphore};

mod reads;

pub use reads::ReadFailed;

use super::health::HealthBook;
use super::hyperv::HypervDriver;
use super::kvm::KvmDriver;
use super::sim::SimDriver;
use super::uri::HostUri;
use super::{Driver, DriverError, HostRef, HostSnapshot, HostVm, Progress};
use crate::config::{DriverConfig, Limits};

/// The longest wait between two probes of an unreachable host.
const PROBE_CAP: Duration = Duration::from_secs(30);

/// The drivers of the hosts this process talks to, one per host.
pub struct Drivers {
    /// Where the drivers' programs and keys are, and simulated hosts' state directory.
    config: DriverConfig,
    /// Most operations at once against one host.
    per_host: usize,
    /// Longest a host's answer to a check may take.
    check_timeout: Duration,
    /// Each host's driver by host id, made at its first use and kept (a URI never changes).
    cache: Mutex<HashMap<i64, Arc<Tracked>>>,
    /// What every call found of each host, shared with each host's `Tracked`.
    health: Arc<HealthBook>,
}

impl Drivers {
    pub fn new(config: DriverConfig, limits: &Limits) -> Self {
        Self {
            config,
            per_host: limits.host_calls_per_host.max(1),
            check_timeout: limits.host_check_timeout,
            cache: Mutex::new(HashMap::new()),
            health: Arc::default(),
        }
    }

    /// What this process's calls found of each host.
    pub fn health(&self) -> &Arc<HealthBook> {
        &self.health
    }

    /// Reaches the host at `uri`, or says why it cannot (giving up after the check
    /// timeout: the host's command is killed, with everything it started).
    pub async fn check(&self, uri: &HostUri) -> Result<(), DriverError> {
        let driver: Box<dyn Driver> = match uri {
            // A simulated host has no connection to check (an outage it plays comes
            // from a file in its state directory, which a new host has not got yet).
            HostUri::Sim(_) => return Ok(()),
            HostUri::Kvm(kvm) => Box::new(self.kvm(kvm)),
            HostUri::Hyperv(target) => Box::new(self.hyperv(target)),
        };
        bounded(self.check_timeout, driver.check()).await
    }

    fn kvm(&self, uri: &super::uri::KvmUri) -> KvmDriver {
        let key = self.config.ssh_identity.as_deref();
        KvmDriver::new(uri, self.config.virsh.clone(), key)
    }

    fn hyperv(&self, target: &super::hyperv::Target) -> HypervDriver {
        let (ssh, key) = (self.config.ssh.clone(), self.config.ssh_identity.clone());
        HypervDriver::new(target.clone(), ssh, key, self.config.scripts_per_session)
    }

    /// The driver for `host`. Its URI is checked again: one stored before a rule was
    /// tightened is refused rather than run.
    pub fn for_host(&self, host: &HostRef) -> Result<Arc<dyn Driver>, DriverError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(driver) = cache.get(&host.id) {
            return Ok(Arc::clone(driver) as Arc<dyn Driver>);
        }
        let uri = HostUri::parse(host.kind, &host.uri).map_err(|e| {
            DriverError::Permanent(format!("host {}'s URI is refused: {e}", host.name))
        })?;
        let inner: Box<dyn Driver> = match &uri {
            HostUri::Sim(_) => {
                let dir = self.config.sim_dir.join(format!("host-{}", host.id));
                Box::new(SimDriver::new(&host.uri, &dir).map_err(DriverError::Permanent)?)
            }
            HostUri::Kvm(kvm) => Box::new(self.kvm(kvm)),
            HostUri::Hyperv(target) => Box::new(self.hyperv(target)),
        };
        let driver = Arc::new_cyclic(|me| Tracked {
            host: host.id,
            name: host.name.clone(),
            inner,
            permits: Semaphore::new(self.per_host),
            tasks_waiting: AtomicUsize::new(0),
            tasks_idle: Notify::new(),
            reads: reads::Reads::new(),
            health: Arc::clone(&self.health),
            check_timeout: self.check_timeout,
            me: me.clone(),
        });
        cache.insert(host.id, Arc::clone(&driver));
        Ok(driver)
    }

    /// A tenant's read of VM `vm`'s snapshots on `host`, for project `project`: shared,
    /// fair between projects, after the host's waiting tasks, and apart from the request
    /// (see [`reads`]); cut off after `deadline`.
    pub async fn read_listing(
        &self,
        host: &HostRef,
        vm: &str,
        project: i64,
        deadline: Duration,
    ) -> Result<Vec<HostSnapshot>, ReadFailed> {
        self.for_host(host).map_err(ReadFailed::Host)?;
        let tracked = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(cache.get(&host.id).expect("made just above"))
        };
        tracked.read_listing(vm, project, deadline).await
    }

    /// Connections this process has opened to each host it called, by host name (none
    /// for simulated hosts).
    pub fn connections(&self) -> Vec<(String, u64)> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<(String, u64)> = cache
            .values()
            .filter_map(|d| d.inner.connections().map(|n| (d.name.clone(), n)))
            .collect();
        all.sort_unstable();
        all
    }
}

/// `call`, cut off after `limit`.
async fn bounded(
    limit: Duration,
    call: impl Future<Output = Result<(), DriverError>>,
) -> Result<(), DriverError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(DriverError::Transient(format!(
            "the host did not answer within {} s",
            limit.as_secs_f64()
        ))),
    }
}

/// A host's driver, running at most so many operations at once (the others wait their
/// turn), and telling the host's health from each outcome.
struct Tracked {
    /// The host's id.
    host: i64,
    /// The host's name, for metrics.
    name: String,
    /// The host's own driver.
    inner: Box<dyn Driver>,
    /// Its operations at once.
    permits: Semaphore,
    /// Calls other than tenants' reads waiting for a permit: reads wait until none is.
    tasks_waiting: AtomicUsize,
    /// Told when `tasks_waiting` falls to 0.
    tasks_idle: Notify,
    /// Tenants' reads.
    reads: reads::Reads,
    /// Where each call's outcome is noted (`saw`): the book all hosts share.
    health: Arc<HealthBook>,
    /// Longest the probe waits for the host's answer to a check.
    check_timeout: Duration,
    /// Itself, for the probe it starts when the host stops answering.
    me: Weak<Tracked>,
}

impl Tracked {
    /// A turn on the host for a task's call (or an ADMIN's): tenants' reads wait while
    /// one is waiting.
    async fn turn(&self) -> tokio::sync::SemaphorePermit<'_> {
        /// Counts a call as waiting, until it has its turn or is dropped.
        struct Waiting<'a>(&'a Tracked);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                if self.0.tasks_waiting.fetch_sub(1, Ordering::AcqRel) == 1 {
                    self.0.tasks_idle.notify_waiters();
                }
            }
        }
        self.tasks_waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(self);
        self.permits
            .acquire()
            .await
            .expect("the semaphore is never closed")
    }

    /// Notes what a call's outcome says of the host: any answer, even a refusal or a
    /// busy host's, is the host's; only a failure to reach it makes it unreachable.
    fn saw<T>(&self, outcome: Result<T, DriverError>) -> Result<T, DriverError> {
        match &outcome {
            Err(DriverError::Unreachable(error)) => {
                if self.health.unreachable(self.host, error) {
                    self.probe();
                }
            }
            Err(DriverError::Transient(_)) => {}
            _ => {
                self.health.answered(self.host);
            }
        }
        outcome
    }

    /// Checks the unreachable host again and again, backing off, until it answers: the
    /// robot takes its tasks only once it does.
    fn probe(&self) {
        let (Some(me), Ok(runtime)) = (self.me.upgrade(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(async move {
            let mut delay = Duration::from_millis(500);
            while me.health.is_unreachable(me.host) {
                tokio::time::sleep(delay).await;
                let checked = {
                    let _turn = me.turn().await;
                    bounded(me.check_timeout, me.inner.check()).await
                };
                match checked {
                    // Too slow is no answer either.
                    Err(DriverError::Transient(e)) => {
                        me.health.unreachable(me.host, &e);
                    }
                    outcome => {
                        me.saw(outcome).ok();
                    }
                }
                delay = (delay * 2).min(PROBE_CAP);
            }
        });
    }
}

#[async_trait]
impl Driver for Tracked {
    async fn check(&self) -> Result<(), DriverError> {
        let _turn = self.turn().await;
        self.saw(self.inner.check().await)
    }

    fn connections(&self) -> Option<u64> {
        self.inner.connections()
    }

    fn passable(&self, name: &str) -> Result<(), String> {
        self.inner.passable(name)
    }

    async fn vm_state(&self, vm: &str) -> Result<i32, DriverError> {
        let _turn = self.turn().await;
        self.saw(self.inner.vm_state(vm).await)
    }

    async fn unsupported(&self, vm: &str) -> Result<Option<String>, DriverError> {
        let _turn = self.turn().await;
        self.saw(self.inner.unsupported(vm).await)
    }

    async fn list_vms(&self) -> Result<Vec<HostVm>, DriverError> {
        let _turn = self.turn().await;
        self.saw(self.inner.list_vms().await)
    }

    async fn create(
        &self,
        vm: &str,
        snapshot: &str,
        progress: &Progress,
    ) -> Result<(), DriverError> {
        let _turn = self.turn().await;
        let created = self.inner.create(vm, snapshot, progress).await;
        self.reads.forget(vm);
        self.saw(created)
    }

    async fn apply(
        &self,
        vm: &str,
        snapshot: &str,
        progress: &Progress,
    ) -> Result<(), DriverError> {
        let _turn = self.turn().await;
        let applied = self.inner.apply(vm, snapshot, progress).await;
        self.reads.forget(vm);
        self.saw(applied)
    }

    async fn delete(
        &self,
        vm: &str,
        snapshot: &str,
        subtree: bool,
        progress: &Progress,
    ) -> Result<(), DriverError> {
        let _turn = self.turn().await;
        let deleted = self.inner.delete(vm, snapshot, subtree, progress).await;
        self.reads.forget(vm);
        self.saw(deleted)
    }

    async fn list(&self, vm: &str) -> Result<Vec<HostSnapshot>, DriverError> {
        let _turn = self.turn().await;
        self.saw(self.inner.list(vm).await)
    }
}
