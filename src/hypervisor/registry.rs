//! Which driver serves a host, built from its checked URI, and the one limit on how many
//! operations run against a host at once, shared by queries (`drift`) and the robot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Semaphore;

use super::hyperv::HypervDriver;
use super::kvm::KvmDriver;
use super::sim::SimDriver;
use super::uri::HostUri;
use super::{Driver, DriverError, HostSnapshot, HostVm, Progress};
use crate::config::{DriverConfig, Limits};
use crate::db::models::Host;

/// The drivers of the hosts this process talks to, one per host.
pub struct Drivers {
    config: DriverConfig,
    /// Most operations at once against one host.
    per_host: usize,
    /// Longest a new host's first answer may take.
    check_timeout: Duration,
    cache: Mutex<HashMap<i64, Arc<dyn Driver>>>,
}

impl Drivers {
    pub fn new(config: DriverConfig, limits: &Limits) -> Self {
        Self {
            config,
            per_host: limits.host_calls_per_host.max(1),
            check_timeout: limits.host_check_timeout,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Reaches the host at `uri`, or says why it cannot (giving up after the check
    /// timeout: the host's command is killed, with everything it started).
    pub async fn check(&self, uri: &HostUri) -> Result<(), DriverError> {
        let driver: Box<dyn Driver> = match uri {
            // A simulated host is always there.
            HostUri::Sim(_) => return Ok(()),
            HostUri::Kvm(kvm) => Box::new(KvmDriver::new(kvm, self.config.virsh.clone())),
            HostUri::Hyperv(target) => Box::new(self.hyperv(target)),
        };
        match tokio::time::timeout(self.check_timeout, driver.check()).await {
            Ok(result) => result,
            Err(_) => Err(DriverError::Transient(format!(
                "the host did not answer within {} s",
                self.check_timeout.as_secs_f64()
            ))),
        }
    }

    fn hyperv(&self, target: &super::hyperv::Target) -> HypervDriver {
        let (ssh, key) = (self.config.ssh.clone(), self.config.ssh_identity.clone());
        HypervDriver::new(target.clone(), ssh, key)
    }

    /// The driver for `host`. Its URI is checked again: one stored before a rule was
    /// tightened is refused rather than run.
    pub fn for_host(&self, host: &Host) -> Result<Arc<dyn Driver>, DriverError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(driver) = cache.get(&host.id) {
            return Ok(Arc::clone(driver));
        }
        let uri = HostUri::parse(host.hypervisor(), &host.uri).map_err(|e| {
            DriverError::Permanent(format!("host {}'s URI is refused: {e}", host.name))
        })?;
        let inner: Arc<dyn Driver> = match &uri {
            HostUri::Sim(_) => {
                let dir = self.config.sim_dir.join(format!("host-{}", host.id));
                Arc::new(SimDriver::new(&host.uri, &dir).map_err(DriverError::Permanent)?)
            }
            HostUri::Kvm(kvm) => Arc::new(KvmDriver::new(kvm, self.config.virsh.clone())),
            HostUri::Hyperv(target) => Arc::new(self.hyperv(target)),
        };
        let driver: Arc<dyn Driver> = Arc::new(Limited {
            inner,
            permits: Semaphore::new(self.per_host),
        });
        cache.insert(host.id, Arc::clone(&driver));
        Ok(driver)
    }
}

/// A driver that runs at most so many operations at once; the others wait their turn.
struct Limited {
    inner: Arc<dyn Driver>,
    permits: Semaphore,
}

impl Limited {
    async fn turn(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.permits
            .acquire()
            .await
            .expect("the semaphore is never closed")
    }
}

#[async_trait]
impl Driver for Limited {
    async fn check(&self) -> Result<(), DriverError> {
        let _turn = self.turn().await;
        self.inner.check().await
    }

    async fn vm_state(&self, vm: &str) -> Result<i32, DriverError> {
        let _turn = self.turn().await;
        self.inner.vm_state(vm).await
    }

    async fn list_vms(&self) -> Result<Vec<HostVm>, DriverError> {
        let _turn = self.turn().await;
        self.inner.list_vms().await
    }

    async fn create(
        &self,
        vm: &str,
        snapshot: &str,
        progress: &Progress,
    ) -> Result<(), DriverError> {
        let _turn = self.turn().await;
        self.inner.create(vm, snapshot, progress).await
    }

    async fn apply(
        &self,
        vm: &str,
        snapshot: &str,
        progress: &Progress,
    ) -> Result<(), DriverError> {
        let _turn = self.turn().await;
        self.inner.apply(vm, snapshot, progress).await
    }

    async fn delete(
        &self,
        vm: &str,
        snapshot: &str,
        subtree: bool,
        progress: &Progress,
    ) -> Result<(), DriverError> {
        let _turn = self.turn().await;
        self.inner.delete(vm, snapshot, subtree, progress).await
    }

    async fn list(&self, vm: &str) -> Result<Vec<HostSnapshot>, DriverError> {
        let _turn = self.turn().await;
        self.inner.list(vm).await
    }
}
