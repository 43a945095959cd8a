//! Which driver serves a host, and which URIs each kind of host accepts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::hyperv::{HypervDriver, Target};
use super::kvm::KvmDriver;
use super::sim::{SimDriver, SimParams};
use super::{Driver, DriverError};
use crate::config::DriverConfig;
use crate::db::models::Host;
use crate::domain::Hypervisor;

/// Checks that `uri` can reach a host of kind `kind`; the message says what is wrong.
pub fn validate_uri(kind: Hypervisor, uri: &str) -> Result<(), String> {
    match kind {
        Hypervisor::Simulated => SimParams::parse(uri).map(drop),
        Hypervisor::Kvm if uri.starts_with("qemu:///") || uri.starts_with("qemu+ssh://") => Ok(()),
        Hypervisor::Kvm => Err(format!(
            "a KVM host's URI is qemu:///system or qemu+ssh://user@host/system, not {uri:?}"
        )),
        Hypervisor::Hyperv => Target::parse(uri).map(drop),
    }
}

/// The drivers of the hosts this process talks to, one per host.
pub struct Drivers {
    config: DriverConfig,
    cache: Mutex<HashMap<i64, Arc<dyn Driver>>>,
}

impl Drivers {
    pub fn new(config: DriverConfig) -> Self {
        Self {
            config,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Reaches a host of kind `kind` at `uri`, or says why it cannot.
    pub async fn check(&self, kind: Hypervisor, uri: &str) -> Result<(), DriverError> {
        match kind {
            // A simulated host is always there; its URI was checked already.
            Hypervisor::Simulated => Ok(()),
            Hypervisor::Kvm => KvmDriver::new(uri, self.config.virsh.clone()).check().await,
            Hypervisor::Hyperv => self.hyperv(uri)?.check().await,
        }
    }

    fn hyperv(&self, uri: &str) -> Result<HypervDriver, DriverError> {
        let (ssh, key) = (self.config.ssh.clone(), self.config.ssh_identity.clone());
        HypervDriver::new(uri, ssh, key).map_err(DriverError::Permanent)
    }

    /// The driver for `host`.
    pub fn for_host(&self, host: &Host) -> Result<Arc<dyn Driver>, DriverError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(driver) = cache.get(&host.id) {
            return Ok(Arc::clone(driver));
        }
        let driver: Arc<dyn Driver> = match host.hypervisor() {
            Hypervisor::Simulated => {
                let dir = self.config.sim_dir.join(format!("host-{}", host.id));
                Arc::new(SimDriver::new(&host.uri, &dir).map_err(DriverError::Permanent)?)
            }
            Hypervisor::Kvm => Arc::new(KvmDriver::new(&host.uri, self.config.virsh.clone())),
            Hypervisor::Hyperv => Arc::new(self.hyperv(&host.uri)?),
        };
        cache.insert(host.id, Arc::clone(&driver));
        Ok(driver)
    }
}
