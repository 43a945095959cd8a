//! Task events for subscribers, and the robot's wake-up.
//!
//! Every event is stored in the transaction that made the change it reports. A pump, one
//! per process, reads the stored events in id order whenever a commit (here, or in
//! another process over PostgreSQL's `LISTEN`) says there are new ones, and broadcasts
//! each exactly once, in order. A subscriber therefore sees the complete sequence: it
//! taps the broadcast, replays from the table what it missed up to the pump's position,
//! and continues live; if it falls behind the broadcast's buffer, it catches up from the
//! table again. One table read per wake-up serves every subscriber.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;

use crate::db::models::{Task, TaskEvent};
use crate::db::{self, Db};
use crate::metrics::Metrics;

/// Events a subscriber may fall behind before it catches up from the table.
const BUFFER: usize = 512;
/// Events the pump reads at a time.
const BATCH: i64 = 500;
/// How often the pump looks anyway (events from another process on SQLite, a lost
/// notification).
const POLL: Duration = Duration::from_millis(1000);

/// An event as the pump broadcasts it, with its task as it stood when the event was
/// published: read once here for every subscriber, who would otherwise each load it
/// (with 100 subscribers, 100 reads of the same row per event).
#[derive(Debug)]
pub struct Published {
    /// The stored event, as read from the event table.
    pub event: TaskEvent,
    /// `None` when the task could not be read with it (it is then loaded on demand).
    pub task: Option<Task>,
}

/// Committed events in order, and the robot's wake-up.
#[derive(Clone)]
pub struct EventBus {
    /// Shared by every clone: the pump, the service, the robot and each subscriber.
    inner: Arc<Inner>,
}

struct Inner {
    /// Signalled after a commit that stored events.
    committed: Notify,
    /// Every event, in id order, each once.
    stream: broadcast::Sender<Arc<Published>>,
    /// The id of the last event broadcast.
    position: AtomicI64,
    /// Signalled when a task is queued.
    queued: Notify,
    /// What other processes are to hear of (PostgreSQL), and the announcer's wake-up.
    announce: Announce,
}

/// What this process's commits have to tell other processes, sent after the commit by
/// one announcer (see [`spawn_pump`]) rather than by `NOTIFY` inside each transaction:
/// PostgreSQL makes every transaction that notified take one global lock through its
/// commit, flush to disk included, so commits that notify run one at a time.
#[derive(Default)]
struct Announce {
    /// Set when events were committed here since the last announcement (`db::events::PG_CHANNEL`).
    events: AtomicBool,
    /// Set when a task was queued, or room made for one, since the last announcement
    /// (`db::tasks::PG_CHANNEL`).
    tasks: AtomicBool,
    /// Wakes the announcer after either flag is set.
    wake: Notify,
}

impl Default for EventBus {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                committed: Notify::new(),
                stream: broadcast::channel(BUFFER).0,
                position: AtomicI64::new(0),
                queued: Notify::new(),
                announce: Announce::default(),
            }),
        }
    }
}

impl EventBus {
    /// Says that a transaction that stored events has committed (here: other processes
    /// hear of it from the announcer).
    pub fn committed(&self) {
        self.inner.committed.notify_one();
        self.inner.announce.events.store(true, Ordering::Release);
        self.inner.announce.wake.notify_one();
    }

    /// Says that a transaction that queued a task, or made room for one, has committed:
    /// the robot here is woken, and robots elsewhere hear of it from the announcer.
    pub fn announce_queued(&self) {
        self.task_queued();
        self.inner.announce.tasks.store(true, Ordering::Release);
        self.inner.announce.wake.notify_one();
    }

    /// The live stream, and the id of the last event broadcast before it. Events after
    /// that id all come through the stream (or, after a lag, from the table).
    pub fn tap(&self) -> (broadcast::Receiver<Arc<Published>>, i64) {
        let receiver = self.inner.stream.subscribe();
        (receiver, self.position())
    }

    /// The id of the last event broadcast.
    pub fn position(&self) -> i64 {
        self.inner.position.load(Ordering::Acquire)
    }

    /// Tells the robot here a task was queued (by this process, or another one).
    pub fn task_queued(&self) {
        self.inner.queued.notify_one();
    }

    /// Waits until a task is queued (or was queued since the last wait).
    pub async fn wait_for_task(&self) {
        self.inner.queued.notified().await;
    }

    /// Broadcasts events read from the table after `self.position()`, in order, each
    /// with its task from `tasks`.
    fn publish(&self, events: Vec<TaskEvent>, tasks: &HashMap<i64, Task>) {
        for event in events {
            // Position first: a subscriber tapping now replays this one from the table.
            self.inner.position.store(event.id, Ordering::Release);
            let task = tasks.get(&event.task_id).cloned();
            let _ = self.inner.stream.send(Arc::new(Published { event, task }));
        }
    }
}

/// How soon the pump looks again while it waits at a gap (PostgreSQL).
const GAP_RECHECK: Duration = Duration::from_millis(1);

/// Ids that may still commit on PostgreSQL (see [`db::events`]): which event ids are known
/// final, from observations of the sequence and the running transactions.
#[derive(Debug, Default)]
struct Horizon {
    /// The newest id of the last observation, waiting for a transaction id taken after it.
    unpaired: Option<i64>,
    /// (newest id, a transaction id taken after it was read): final once no older
    /// transaction runs, as seen by a later observation.
    waiting: VecDeque<(i64, i64)>,
    /// Every id up to here is final: committed, or never will be.
    stable: i64,
}

impl Horizon {
    fn observe(&mut self, seen: db::events::Observation) {
        while let Some(&(last, xid)) = self.waiting.front() {
            if seen.xmin < xid {
                break;
            }
            self.stable = self.stable.max(last);
            self.waiting.pop_front();
        }
        if let Some(last) = self.unpaired.replace(seen.last_id) {
            self.waiting.push_back((last, seen.xid));
        }
    }
}

/// Starts the pump (and, on PostgreSQL, the listener for other processes' commits and
/// queued tasks). It stops when `shutdown` turns true.
/// One function: the pump's state (the horizon, the listener, when it last listened, whether
/// it waits at a gap) lives in one task, through its start and its loop.
pub fn spawn_pump(
    bus: EventBus,
    db: Db,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    if db.backend() == "postgres" {
        tokio::spawn(announce(bus.clone(), db.clone(), shutdown.clone()));
    }
    tokio::spawn(async move {
        // SQLite commits ids in order: there a gap is final at once.
        let mut horizon = (db.backend() == "postgres").then(Horizon::default);
        let start = loop {
            match start_position(&db, horizon.as_mut()).await {
                Ok(start) => break start,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read the event log; trying again");
                    tokio::select! {
                        _ = tokio::time::sleep(POLL) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        };
        bus.inner.position.store(start, Ordering::Release);
        let mut listener = listen(&db).await;
        let mut listened = tokio::time::Instant::now();
        let mut at_gap = false;
        loop {
            let recheck = async {
                if at_gap {
                    tokio::time::sleep(GAP_RECHECK).await
                } else {
                    std::future::pending().await
                }
            };
            tokio::select! {
                _ = bus.inner.committed.notified() => {}
                channel = next_notification(&mut listener) => match channel.as_deref() {
                    Some(db::tasks::PG_CHANNEL) => { bus.task_queued(); continue; }
                    Some(_) => {}
                    None => {
                        tracing::warn!("lost the connection that listens for other processes; polling");
                        listener = None;
                    }
                },
                _ = recheck => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => break,
            }
            // A lost listener comes back by itself (the database restarted); what it
            // missed meanwhile, the pump and the robot's poll find.
            if listener.is_none() && db.backend() == "postgres" && listened.elapsed() >= POLL {
                listened = tokio::time::Instant::now();
                listener = listen(&db).await;
                if listener.is_some() {
                    tracing::info!("listening for other processes again");
                    bus.task_queued();
                }
            }
            match pump(&bus, &db, &metrics, horizon.as_mut()).await {
                Ok(gap) => at_gap = gap,
                Err(err) => tracing::warn!(error = %err, "could not read new task events"),
            }
        }
    })
}

/// Where the pump starts: the newest event on SQLite; on PostgreSQL, the newest id known
/// final (one that might still commit is published when it does).
async fn start_position(db: &Db, horizon: Option<&mut Horizon>) -> crate::AppResult<i64> {
    let mut pooled = db.reader().await?;
    let mut conn = pooled.conn();
    let Some(horizon) = horizon else {
        return Ok(db::events::newest_id(&mut conn).await?);
    };
    let mut target = None;
    loop {
        if let Some(seen) = db::events::observe(&mut conn).await? {
            horizon.observe(seen);
            let target = *target.get_or_insert(seen.last_id);
            if horizon.stable >= target {
                return Ok(target);
            }
        }
        tokio::time::sleep(GAP_RECHECK).await;
    }
}

/// Reads and broadcasts, in order, every event after the bus's position that is known
/// final. Returns true when it stopped at a gap that may still fill.
/// One function: each round reads, publishes and moves the bus's position on one connection,
/// and the gap found while reading decides how the round ends.
async fn pump(
    bus: &EventBus,
    db: &Db,
    metrics: &Metrics,
    mut horizon: Option<&mut Horizon>,
) -> crate::AppResult<bool> {
    let mut pooled = db.reader().await?;
    let mut conn = pooled.conn();
    loop {
        let after = bus.position();
        let stable = horizon.as_ref().map_or(i64::MAX, |h| h.stable);
        let batch = db::events::after(&mut conn, Default::default(), after, None, BATCH).await?;
        let full = batch.len() as i64 == BATCH;
        let mut next = after + 1;
        let mut gap = false;
        let ready: Vec<TaskEvent> = batch
            .into_iter()
            .take_while(|event| {
                // Publishable when every id before it is here or final.
                gap = event.id != next && event.id - 1 > stable;
                next = event.id + 1;
                !gap
            })
            .collect();
        let mut ids: Vec<i64> = ready.iter().map(|e| e.task_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let tasks: HashMap<i64, Task> = if ids.is_empty() {
            HashMap::new()
        } else {
            db::tasks::by_ids(&mut conn, &ids)
                .await?
                .into_iter()
                .map(|t| (t.id, t))
                .collect()
        };
        let now = db::now();
        for event in &ready {
            metrics.pumped((now - event.at).to_std().unwrap_or_default());
        }
        bus.publish(ready, &tasks);
        if !gap {
            // Nothing after the position up to `stable` is missing now: ids there that
            // never came never will.
            if !full && stable != i64::MAX && stable > bus.position() {
                bus.inner.position.store(stable, Ordering::Release);
            }
            if full {
                continue;
            }
            return Ok(false);
        }
        let Some(horizon) = horizon.as_deref_mut() else {
            return Ok(false);
        };
        let Some(seen) = db::events::observe(&mut conn).await? else {
            return Ok(false);
        };
        horizon.observe(seen);
        if horizon.stable <= stable {
            return Ok(true);
        }
    }
}
/// Tells other processes what this one committed, one notification per channel for
/// whatever was committed since the last (PostgreSQL). A notification lost (the database
/// is away) is made up for by their polls.
async fn announce(bus: EventBus, db: Db, mut shutdown: watch::Receiver<bool>) {
    let flags = &bus.inner.announce;
    loop {
        tokio::select! {
            _ = flags.wake.notified() => {}
            _ = shutdown.changed() => return,
        }
        let mut channels = Vec::with_capacity(2);
        if flags.events.swap(false, Ordering::AcqRel) {
            channels.push(db::events::PG_CHANNEL);
        }
        if flags.tasks.swap(false, Ordering::AcqRel) {
            channels.push(db::tasks::PG_CHANNEL);
        }
        if channels.is_empty() {
            continue;
        }
        if let Err(err) = db.notify(&channels).await {
            tracing::debug!(error = %err, "could not tell other processes of a commit");
        }
    }
}

async fn listen(db: &Db) -> Option<db::Listener> {
    match db
        .listen(&[db::events::PG_CHANNEL, db::tasks::PG_CHANNEL])
        .await
    {
        Ok(listener) => listener,
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for other processes' events; polling");
            None
        }
    }
}

/// The next notification, or never when there is no listener.
async fn next_notification(listener: &mut Option<db::Listener>) -> Option<String> {
    match listener {
        Some(l) => l.next().await,
        None => std::future::pending().await,
    }
}
