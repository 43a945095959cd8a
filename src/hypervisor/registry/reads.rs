//! Tenants' reads of a host (`drift`): they share the host with the robot's tasks, and
//! the tasks come first. A read
//!
//! - waits while a task is waiting for its turn on the host, so that reads delay a task
//!   by one read at most (they run one at a time per host);
//! - is shared: asked again for the same VM within [`FRESH`], it is answered from the
//!   last answer, and asked while it runs, the askers wait for the same answer (a task's
//!   change to the VM forgets the answer at once; a change made behind snaptree's back
//!   shows once it is [`FRESH`] old);
//! - is fair between projects: a project's reads of a host run one at a time, and the
//!   host's one read at a time goes to the projects first come, first served, so that a
//!   project waits for at most one read of each other project's; a project may have at
//!   most [`PENDING_PER_PROJECT`] reads of a host waiting (more are refused
//!   `RATE_LIMITED`), which bounds what a flood leaves queued;
//! - runs apart from the request that asked: a client that goes away, or a request past
//!   its deadline, leaves the read to finish, so that the host's lasting connection
//!   (which a command cut off in the middle would end) is kept. A read that passes its
//!   own deadline is cut off, as any hung host call is.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{OnceCell, Semaphore};

use super::Tracked;
use crate::hypervisor::{DriverError, HostSnapshot};

/// How long an answer about a VM is given again without asking the host.
pub const FRESH: Duration = Duration::from_secs(2);
/// Most reads of one host one project may have waiting or running.
pub const PENDING_PER_PROJECT: usize = 32;

/// Why a read was not answered.
#[derive(Debug)]
pub enum ReadFailed {
    /// The project already has its most reads of the host waiting or running.
    Crowded(usize),
    /// The host's own failure.
    Host(DriverError),
}

/// An answer about a VM's snapshots, and when the host gave it.
type Answer = (Instant, Result<Vec<HostSnapshot>, DriverError>);

/// The reads of one host.
pub struct Reads {
    /// The last answer (or the one coming) for each VM.
    recent: std::sync::Mutex<HashMap<String, Arc<OnceCell<Answer>>>>,
    /// Each project's reads waiting or running, and its turn (one read at a time).
    pending: std::sync::Mutex<HashMap<i64, (usize, Arc<Semaphore>)>>,
    /// The host's one read at a time, first come first served.
    slot: Semaphore,
}

impl Reads {
    pub fn new() -> Self {
        Self {
            recent: Default::default(),
            pending: Default::default(),
            slot: Semaphore::new(1),
        }
    }

    /// Forgets the answer about VM `vm`: a task has changed it.
    pub fn forget(&self, vm: &str) {
        self.recent.lock().unwrap().remove(vm);
    }
}

/// A project's place among its pending reads; given back when dropped.
struct Pending<'a> {
    /// The host's reads, whose `pending` count this place is in.
    reads: &'a Reads,
    /// The project the read is for.
    project: i64,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let mut pending = self.reads.pending.lock().unwrap();
        if let Some((n, _)) = pending.get_mut(&self.project) {
            *n -= 1;
            if *n == 0 {
                pending.remove(&self.project);
            }
        }
    }
}

impl Tracked {
    /// VM `vm`'s snapshots as the host lists them, for project `project`'s read; the
    /// host's call is cut off after `deadline`.
    pub(super) async fn read_listing(
        self: &Arc<Self>,
        vm: &str,
        project: i64,
        deadline: Duration,
    ) -> Result<Vec<HostSnapshot>, ReadFailed> {
        let cell = {
            let mut recent = self.reads.recent.lock().unwrap();
            // Answers past their time are dropped as new ones come: the map holds the
            // VMs read lately, no more.
            recent.retain(|_, c| c.get().is_none_or(|(at, _)| at.elapsed() < FRESH));
            Arc::clone(recent.entry(vm.to_owned()).or_default())
        };
        if let Some((_, answer)) = cell.get() {
            return answer.clone().map_err(ReadFailed::Host);
        }
        let turn = {
            let mut pending = self.reads.pending.lock().unwrap();
            let (n, turn) = pending
                .entry(project)
                .or_insert_with(|| (0, Arc::new(Semaphore::new(1))));
            if *n >= PENDING_PER_PROJECT {
                return Err(ReadFailed::Crowded(PENDING_PER_PROJECT));
            }
            *n += 1;
            Arc::clone(turn)
        };
        let me = Arc::clone(self);
        let vm = vm.to_owned();
        // Apart from the request: see the module's doc.
        let read = tokio::spawn(async move {
            let _pending = Pending {
                reads: &me.reads,
                project,
            };
            let answer = cell
                .get_or_init(|| async {
                    let _turn = turn.acquire().await.expect("never closed");
                    let _slot = me.reads.slot.acquire().await.expect("never closed");
                    me.after_waiting_tasks().await;
                    let _permit = me.permits.acquire().await.expect("never closed");
                    let listed = match tokio::time::timeout(deadline, me.inner.list(&vm)).await {
                        Ok(listed) => listed,
                        Err(_) => Err(DriverError::Transient(format!(
                            "the host did not answer within {} s",
                            deadline.as_secs()
                        ))),
                    };
                    (Instant::now(), me.saw(listed))
                })
                .await;
            answer.1.clone()
        });
        match read.await {
            Ok(answer) => answer.map_err(ReadFailed::Host),
            Err(err) => Err(ReadFailed::Host(DriverError::Transient(format!(
                "a host read failed: {err}"
            )))),
        }
    }

    /// Waits until no task is waiting for its turn on the host.
    async fn after_waiting_tasks(&self) {
        loop {
            let idle = self.tasks_idle.notified();
            if self.tasks_waiting.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}
