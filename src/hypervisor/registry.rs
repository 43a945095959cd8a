//! Which driver serves a host, and which URIs each kind of host accepts.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::sim::{SimDriver, SimParams};
use super::{Driver, DriverError};
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
        Hypervisor::Hyperv if uri.starts_with("ssh://") && uri.len() > "ssh://".len() => Ok(()),
        Hypervisor::Hyperv => Err(format!(
            "a Hyper-V host's URI is ssh://user@host, not {uri:?}"
        )),
    }
}

/// The drivers of the hosts this process talks to, one per host.
pub struct Drivers {
    /// Where simulated hosts keep their state, a directory per host.
    sim_dir: PathBuf,
    cache: Mutex<HashMap<i64, Arc<dyn Driver>>>,
}

impl Drivers {
    pub fn new(sim_dir: PathBuf) -> Self {
        Self {
            sim_dir,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The driver for `host`.
    pub fn for_host(&self, host: &Host) -> Result<Arc<dyn Driver>, DriverError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(driver) = cache.get(&host.id) {
            return Ok(Arc::clone(driver));
        }
        let driver: Arc<dyn Driver> = match host.hypervisor() {
            Hypervisor::Simulated => Arc::new(
                SimDriver::new(&host.uri, &self.sim_dir.join(format!("host-{}", host.id)))
                    .map_err(DriverError::Permanent)?,
            ),
            kind => {
                return Err(DriverError::Permanent(format!(
                    "this build of snaptree has no driver for {kind} hosts yet"
                )));
            }
        };
        cache.insert(host.id, Arc::clone(&driver));
        Ok(driver)
    }
}
