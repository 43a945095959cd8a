//! Administration (ADMIN only): projects, tokens, hosts, VMs, and importing a host's VMs
//! with the snapshot trees they already have.

use std::collections::HashMap;

use std::sync::Arc;

use super::{Caller, Core};
use crate::db::models::{Host, NewHost, NewSnapshot, NewVm, Project, Vm};
use crate::db::{self, Conn, hosts, projects, snapshots, vms};
use crate::domain::{Hypervisor, SnapshotState, lifetime, names};
use crate::error::{AppError, AppResult};
use crate::hypervisor::{Capabilities, DriverError, HostSnapshot, HostUri};

/// Administration: what ADMIN tokens (and the command line) do.
#[derive(Clone)]
pub struct Admin {
    /// What every part of the service shares.
    pub(super) core: Arc<Core>,
}

/// Tasks that run on one host at once, across every robot, unless the host says
/// otherwise: a burst over a whole fleet must not pile snapshot work (memory dumps, disk
/// copies) onto one hypervisor.
pub const DEFAULT_CONCURRENT_TASKS: i32 = 8;

/// The most a host may be given: beyond it the limit would not protect the host.
const MAX_CONCURRENT_TASKS: i32 = 1000;

/// Most VMs one `import_vms` registers; a second call goes on where the first stopped.
pub const IMPORT_BATCH: usize = 200;

/// `n` as a host's `maxConcurrentTasks`, if it is one.
fn concurrency_limit(n: i32) -> AppResult<i32> {
    if (1..=MAX_CONCURRENT_TASKS).contains(&n) {
        Ok(n)
    } else {
        Err(AppError::validation(format!(
            "maxConcurrentTasks must be 1 to {MAX_CONCURRENT_TASKS}, not {n}."
        )))
    }
}

/// The longest VM identifier accepted.
const MAX_IDENTIFIER_CHARS: usize = 128;

/// An identifier reaches host command lines (as one argument, never through a shell), so
/// it is held to the characters hypervisors use in names.
fn identifier(raw: &str) -> AppResult<String> {
    let id = raw.trim();
    let fine = |c: char| c.is_ascii_alphanumeric() || " ._-+@:".contains(c);
    if id.is_empty() || id.len() > MAX_IDENTIFIER_CHARS || !id.chars().all(fine) {
        return Err(AppError::validation(format!(
            "A VM identifier is 1 to {MAX_IDENTIFIER_CHARS} letters, digits, spaces or . _ - + @ :, not {raw:?}."
        )));
    }
    Ok(id.to_owned())
}

/// A host's failure as an ADMIN (who administers hosts) is told it: with the host's
/// own words.
pub(super) fn host_failed(err: DriverError) -> AppError {
    AppError::invalid_state(format!("The host could not answer: {err}."))
}

/// A host's failure as a tenant is told it: snaptree's sentence only; the host's own
/// words (which may name its infrastructure) go to the log.
pub(super) fn host_failed_for_tenants(err: DriverError) -> AppError {
    tracing::warn!(error = %err, "a host could not answer a tenant's read");
    let failure = err.failure();
    AppError::invalid_state(format!("The host could not answer: {}.", failure.message))
}

fn duplicate(what: String) -> impl FnOnce(diesel::result::Error) -> AppError {
    move |e| {
        if db::is_unique_violation(&e) {
            AppError::validation(what)
        } else {
            e.into()
        }
    }
}

impl Admin {
    pub async fn create_project(&self, caller: &Caller, name: &str) -> AppResult<Project> {
        caller.require_admin()?;
        let name = names::name("project name", name)?;
        let mut tx = self.core.begin_for(caller).await?;
        let result = projects::insert(&mut tx.conn(), &name)
            .await
            .map_err(duplicate(format!(
                "A project named {name:?} already exists."
            )));
        tx.finish(result).await
    }

    /// Changes project `id`'s limits: its snapshot quota and its snapshots' maximum
    /// lifetime (`Some(None)` removes one; `None` keeps it). A quota below what the
    /// project has refuses only new snapshots, and a lifetime applies to new snapshots
    /// only: nothing is deleted.
    pub async fn set_project_limits(
        &self,
        caller: &Caller,
        id: i64,
        quota: Option<Option<i32>>,
        lifetime_hours: Option<Option<i32>>,
    ) -> AppResult<Project> {
        caller.require_admin()?;
        if quota.flatten().is_some_and(|q| q < 0) {
            return Err(AppError::validation(
                "maxSnapshots must be 0 or more (null: no quota).",
            ));
        }
        lifetime::check_max_lifetime(lifetime_hours.flatten())?;
        let mut tx = self.core.begin_for(caller).await?;
        let result = async {
            let conn = &mut tx.conn();
            let current = projects::by_id(conn, id)
                .await?
                .ok_or_else(|| AppError::not_found("project", id))?;
            let limits = projects::Limits {
                max_snapshots: quota.unwrap_or(current.max_snapshots),
                max_lifetime_hours: lifetime_hours.unwrap_or(current.max_lifetime_hours),
            };
            Ok(projects::set_limits(conn, id, limits).await?)
        }
        .await;
        tx.finish(result).await
    }

    pub async fn create_host(
        &self,
        caller: &Caller,
        name: &str,
        hypervisor: Hypervisor,
        uri: &str,
        max_snapshots_per_vm: Option<i32>,
        max_concurrent_tasks: Option<i32>,
    ) -> AppResult<Host> {
        caller.require_admin()?;
        let concurrent =
            concurrency_limit(max_concurrent_tasks.unwrap_or(DEFAULT_CONCURRENT_TASKS))?;
        let name = names::name("host name", name)?;
        let given = uri.trim();
        let parsed = HostUri::parse(hypervisor, given)
            .map_err(|e| AppError::validation(format!("Bad URI: {e}.")))?;
        let uri = parsed.canonical(given);
        let limit = self.host_snapshot_limit(hypervisor, max_snapshots_per_vm)?;
        self.core.drivers.check(&parsed).await.map_err(|e| {
            AppError::validation(format!("snaptree cannot reach the host at {uri}: {e}."))
        })?;
        let mut tx = self.core.begin_for(caller).await?;
        let new = NewHost {
            name: &name,
            hypervisor: hypervisor.as_str(),
            uri: &uri,
            max_snapshots_per_vm: limit,
            created_at: db::now(),
            max_concurrent_tasks: concurrent,
        };
        let result = hosts::insert(&mut tx.conn(), new)
            .await
            .map_err(duplicate(format!("A host named {name:?} already exists.")));
        tx.finish(result).await
    }

    /// Changes host `id`'s limits: `max_concurrent_tasks` when given, and
    /// `max_snapshots_per_vm` when given (`Some(None)`: the hypervisor's own limit, or
    /// none). Tasks running past a lowered limit finish; snapshots past one stay.
    pub async fn update_host(
        &self,
        caller: &Caller,
        id: i64,
        max_concurrent_tasks: Option<i32>,
        max_snapshots_per_vm: Option<Option<i32>>,
    ) -> AppResult<Host> {
        caller.require_admin()?;
        let concurrent = max_concurrent_tasks.map(concurrency_limit).transpose()?;
        let mut tx = self.core.begin_for(caller).await?;
        let result: AppResult<_> = async {
            let mut conn = tx.conn();
            let host = hosts::by_id(&mut conn, id)
                .await?
                .ok_or_else(|| AppError::not_found("host", id))?;
            let limit = max_snapshots_per_vm
                .map(|limit| self.host_snapshot_limit(host.hypervisor(), limit))
                .transpose()?;
            Ok(hosts::set_limits(&mut conn, id, concurrent, limit).await?)
        }
        .await;
        let host = tx.finish(result).await?;
        if concurrent.is_some() {
            // Room for tasks that wait there, perhaps: robots look again.
            self.core.bus.announce_queued();
        }
        Ok(host)
    }

    /// The snapshot limit a host of `hypervisor` gets when `asked` for: within the
    /// server's ceiling and the hypervisor's own limit, which is also the default.
    fn host_snapshot_limit(
        &self,
        hypervisor: Hypervisor,
        asked: Option<i32>,
    ) -> AppResult<Option<i32>> {
        let ceiling = self.core.snapshot_limit(None);
        match asked {
            Some(n) if n < 0 => {
                return Err(AppError::validation(
                    "maxSnapshotsPerVm must not be negative.",
                ));
            }
            Some(n) if n > ceiling => {
                return Err(AppError::validation(format!(
                    "This server keeps at most {ceiling} snapshots per VM, so maxSnapshotsPerVm cannot be {n}."
                )));
            }
            _ => {}
        }
        let own = Capabilities::of(hypervisor);
        Ok(match (own.snapshot_limit, asked) {
            (Some(limit), Some(n)) if n > limit => {
                return Err(AppError::validation(format!(
                    "{} allows at most {limit} snapshots per VM, not {n}.",
                    own.name
                )));
            }
            (own, None) => own,
            (_, asked) => asked,
        })
    }

    /// Registers VM `identifier` of host `host_id` for project `project_id`; its state
    /// comes from the host.
    pub async fn create_vm(
        &self,
        caller: &Caller,
        host_id: i64,
        project_id: i64,
        name: &str,
        identifier: &str,
    ) -> AppResult<Vm> {
        caller.require_admin()?;
        let name = names::name("VM name", name)?;
        let identifier = self::identifier(identifier)?;
        let (host, project) = self.host_and_project(host_id, project_id).await?;
        let driver = self
            .core
            .drivers
            .for_host(&super::host_ref(&host).map_err(host_failed)?)
            .map_err(host_failed)?;
        let state = driver.vm_state(&identifier).await.map_err(host_failed)?;
        let unsupported = driver.unsupported(&identifier).await.map_err(host_failed)?;
        let mut tx = self.core.begin_for(caller).await?;
        let new = NewVm {
            host_id: host.id,
            project_id: project.id,
            name: &name,
            identifier: &identifier,
            state,
            created_at: db::now(),
            unsupported: unsupported.as_deref(),
        };
        let result = vms::insert(&mut tx.conn(), new)
            .await
            .map_err(duplicate(format!(
                "Host {} already has a VM {identifier:?}.",
                host.name
            )));
        tx.finish(result).await
    }

    /// Registers the VMs of host `host_id` that snaptree does not know yet, for project
    /// `project_id`, with the snapshot trees they already have. A VM with a snapshot
    /// whose name could not be sent back to the host safely (made there by hand) is not
    /// imported: it is among the refusals returned, with the reason.
    /// One function: one loop over the host's VMs, where each check (known, batch full, gone,
    /// unsafe name, too many snapshots) skips, stops or refuses; most lines are the messages.
    pub async fn import_vms(
        &self,
        caller: &Caller,
        host_id: i64,
        project_id: i64,
    ) -> AppResult<(Vec<Vm>, Vec<String>)> {
        caller.require_admin()?;
        let (host, project) = self.host_and_project(host_id, project_id).await?;
        let driver = self
            .core
            .drivers
            .for_host(&super::host_ref(&host).map_err(host_failed)?)
            .map_err(host_failed)?;
        let known: Vec<String> = {
            let mut pooled = self.core.db.reader().await?;
            vms::on_hosts(&mut pooled.conn(), &[host.id], None)
                .await?
                .into_iter()
                .map(|vm| vm.identifier)
                .collect()
        };
        let limit = self.core.snapshot_limit(host.max_snapshots_per_vm);
        let mut imported = Vec::new();
        let mut refused = Vec::new();
        for found in driver.list_vms().await.map_err(host_failed)? {
            if known.contains(&found.identifier) || identifier(&found.identifier).is_err() {
                continue;
            }
            // One call registers a bounded number; the next call goes on from there.
            if imported.len() == IMPORT_BATCH {
                break;
            }
            let listed = match driver.list(&found.identifier).await {
                Ok(listed) => listed,
                // Removed from the host since it was listed: nothing to import.
                Err(DriverError::NoSuchVm(_)) => continue,
                Err(e) => return Err(host_failed(e)),
            };
            let unsafe_name = listed.iter().find_map(|snap| {
                let why = driver.passable(&snap.name).err()?;
                Some(format!(
                    "VM {:?} was not imported: its snapshot {:?} has a name that cannot be sent to the host safely ({why}); rename it on the host first.",
                    found.identifier, snap.name
                ))
            });
            if let Some(why) = unsafe_name {
                tracing::warn!(host = %host.name, "{why}");
                refused.push(why);
                continue;
            }
            if listed.len() > usize::try_from(limit).unwrap_or(0) {
                return Err(AppError::LimitReached {
                    message: format!(
                        "VM {:?} has {} snapshots on the host, more than the {limit} a VM may have here; delete some on the host first.",
                        found.identifier,
                        listed.len()
                    ),
                    limit,
                });
            }
            let unsupported = match driver.unsupported(&found.identifier).await {
                Ok(why) => why,
                Err(DriverError::NoSuchVm(_)) => continue,
                Err(e) => return Err(host_failed(e)),
            };
            let mut tx = self.core.begin_for(caller).await?;
            let found = Found {
                vm: &found,
                snapshots: &listed,
                unsupported: unsupported.as_deref(),
            };
            let result = import_vm(&mut tx.conn(), caller, &host, &project, found).await;
            imported.push(tx.finish(result).await?);
        }
        Ok((imported, refused))
    }

    async fn host_and_project(&self, host_id: i64, project_id: i64) -> AppResult<(Host, Project)> {
        let mut pooled = self.core.db.reader().await?;
        let mut conn = pooled.conn();
        let host = hosts::by_id(&mut conn, host_id)
            .await?
            .ok_or_else(|| AppError::not_found("host", host_id))?;
        let project = projects::by_id(&mut conn, project_id)
            .await?
            .ok_or_else(|| AppError::not_found("project", project_id))?;
        Ok((host, project))
    }
}

/// A VM found on a host, as it is imported.
#[derive(Clone, Copy)]
struct Found<'a> {
    /// The VM, as the host lists it.
    vm: &'a crate::hypervisor::HostVm,
    /// Its snapshots on the host.
    snapshots: &'a [HostSnapshot],
    /// Why the host cannot snapshot it, if it cannot.
    unsupported: Option<&'a str>,
}

/// Inserts one discovered VM and its snapshots, parents first, all RUNNING, the host's
/// current snapshot active.
/// One function: the VM's insert, then its snapshots in rounds, parents before children;
/// most lines are the two rows' fields, one a line.
async fn import_vm(
    conn: &mut Conn<'_>,
    caller: &Caller,
    host: &Host,
    project: &Project,
    found: Found<'_>,
) -> AppResult<Vm> {
    let Found {
        vm: found,
        snapshots: listed,
        unsupported,
    } = found;
    let vm = vms::insert(
        conn,
        NewVm {
            host_id: host.id,
            project_id: project.id,
            name: &found.identifier,
            identifier: &found.identifier,
            state: found.state,
            created_at: db::now(),
            unsupported,
        },
    )
    .await?;
    let mut ids: HashMap<&str, i64> = HashMap::new();
    let mut pending: Vec<&HostSnapshot> = listed.iter().collect();
    while !pending.is_empty() {
        let before = pending.len();
        let mut later = Vec::new();
        for snap in pending {
            let parent = match &snap.parent {
                None => None,
                Some(p) => match ids.get(p.as_str()) {
                    Some(id) => Some(*id),
                    None if listed.iter().any(|s| &s.name == p) => {
                        later.push(snap);
                        continue;
                    }
                    None => None, // a parent the listing lacks: treat as a root
                },
            };
            let now = db::now();
            let name: String = snap.name.chars().take(names::MAX_NAME_CHARS).collect();
            let row = snapshots::insert(
                conn,
                &vm,
                NewSnapshot {
                    vm_id: vm.id,
                    parent_id: parent,
                    name: &name,
                    description: Some("imported from the host"),
                    host_name: &snap.name,
                    active: snap.current,
                    state: SnapshotState::Running.code(),
                    created_at: now,
                    updated_at: now,
                    policy_id: None,
                    policy_due_at: None,
                    protected: false,
                    // Made on the host before snaptree knew it: no lifetime is imposed.
                    expires_at: None,
                },
                caller.actor(),
            )
            .await?;
            ids.insert(&snap.name, row.id);
        }
        if later.len() == before {
            return Err(AppError::invalid_state(
                "The host's snapshot list has a cycle; it cannot be imported.",
            ));
        }
        pending = later;
    }
    Ok(vm)
}
