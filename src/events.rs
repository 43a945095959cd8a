//! Task events for subscribers, and the robot's wake-up.
//!
//! Every event is stored in the transaction that made the change it reports. A pump, one
//! per process, reads the stored events in id order whenever a commit (here, or in
//! another process over PostgreSQL's `LISTEN`) says there are new ones, and broadcasts
//! each exactly once, in order. A subscriber therefore sees the complete sequence: it
//! taps the broadcast, replays from the table what it missed up to the pump's position,
//! and continues live; if it falls behind the broadcast's buffer, it catches up from the
//! table again. One table read per wake-up serves every subscriber.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;

use crate::db::models::TaskEvent;
use crate::db::{self, Db};

/// Events a subscriber may fall behind before it catches up from the table.
const BUFFER: usize = 512;
/// Events the pump reads at a time.
const BATCH: i64 = 500;
/// How often the pump looks anyway (events from another process on SQLite, a lost
/// notification).
const POLL: Duration = Duration::from_millis(1000);

/// Committed events in order, and the robot's wake-up.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
}

struct Inner {
    /// Signalled after a commit that stored events.
    committed: Notify,
    /// Every event, in id order, each once.
    stream: broadcast::Sender<Arc<TaskEvent>>,
    /// The id of the last event broadcast.
    position: AtomicI64,
    /// Signalled when a task is queued.
    queued: Notify,
}

impl Default for EventBus {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                committed: Notify::new(),
                stream: broadcast::channel(BUFFER).0,
                position: AtomicI64::new(0),
                queued: Notify::new(),
            }),
        }
    }
}

impl EventBus {
    /// Says that a transaction that stored events has committed.
    pub fn committed(&self) {
        self.inner.committed.notify_one();
    }

    /// The live stream, and the id of the last event broadcast before it. Events after
    /// that id all come through the stream (or, after a lag, from the table).
    pub fn tap(&self) -> (broadcast::Receiver<Arc<TaskEvent>>, i64) {
        let receiver = self.inner.stream.subscribe();
        (receiver, self.position())
    }

    /// The id of the last event broadcast.
    pub fn position(&self) -> i64 {
        self.inner.position.load(Ordering::Acquire)
    }

    /// Tells the robot a task was queued.
    pub fn task_queued(&self) {
        self.inner.queued.notify_one();
    }

    /// Waits until a task is queued (or was queued since the last wait).
    pub async fn wait_for_task(&self) {
        self.inner.queued.notified().await;
    }

    /// Broadcasts events read from the table after `self.position()`, in order.
    fn publish(&self, events: Vec<TaskEvent>) {
        for event in events {
            // Position first: a subscriber tapping now replays this one from the table.
            self.inner.position.store(event.id, Ordering::Release);
            let _ = self.inner.stream.send(Arc::new(event));
        }
    }
}

/// Starts the pump (and, on PostgreSQL, the listener for other processes' commits and
/// queued tasks). It stops when `shutdown` turns true.
pub fn spawn_pump(bus: EventBus, db: Db, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let start = match db.reader().await {
            Ok(mut pooled) => db::events::newest_id(&mut pooled.conn()).await.unwrap_or(0),
            Err(_) => 0,
        };
        bus.inner.position.store(start, Ordering::Release);
        let mut listener = listen(&db).await;
        loop {
            tokio::select! {
                _ = bus.inner.committed.notified() => {}
                channel = next_notification(&mut listener) => match channel.as_deref() {
                    Some(db::tasks::PG_CHANNEL) => { bus.task_queued(); continue; }
                    Some(_) => {}
                    None => listener = listen(&db).await,
                },
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => break,
            }
            if let Err(err) = pump(&bus, &db).await {
                tracing::warn!(error = %err, "could not read new task events");
            }
        }
    })
}

/// Reads and broadcasts every event after the bus's position.
async fn pump(bus: &EventBus, db: &Db) -> crate::AppResult<()> {
    loop {
        let after = bus.position();
        let mut pooled = db.reader().await?;
        let batch =
            db::events::after(&mut pooled.conn(), Default::default(), after, None, BATCH).await?;
        let full = batch.len() as i64 == BATCH;
        bus.publish(batch);
        if !full {
            return Ok(());
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
