//! Host health as this process's calls find it: whether each host answers now, since
//! when, and the last connection error. Every driver call reports its outcome here; only
//! a failure to reach the host (`DriverError::Unreachable`: the host or its connection,
//! not the request) makes a host unreachable, and any answer makes it reachable again.
//!
//! The robot leaves unreachable hosts' tasks queued rather than tie up workers on them,
//! and a probe keeps trying each such host until it answers. The service writes the
//! changes to the database, where every process and the dashboard see them.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use chrono::{NaiveDateTime, Utc};
use tokio::sync::Notify;

/// One host's health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// False from a failure to reach the host until its next answer, of any kind (`saw`).
    pub reachable: bool,
    /// When it last became reachable, or unreachable.
    pub since: NaiveDateTime,
    /// The last failure to reach it, kept after it recovers.
    pub last_error: Option<String>,
}

/// The health of every host this process has called.
#[derive(Default)]
pub struct HealthBook {
    /// Every known host's health and which have changed, under one lock.
    state: Mutex<Book>,
    /// Some health changed: the service's writer looks.
    changed: Notify,
    /// An unreachable host answered again: the robot looks for its tasks.
    recovered: Notify,
}

#[derive(Default)]
struct Book {
    /// Each host's health, by host id; a host not called yet has no entry.
    hosts: HashMap<i64, Health>,
    /// Changed since the writer last took the changes.
    dirty: HashSet<i64>,
}

impl HealthBook {
    /// Host `host` answered. True when that makes it reachable again.
    pub fn answered(&self, host: i64) -> bool {
        let mut book = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let recovered = match book.hosts.get_mut(&host) {
            Some(h) if h.reachable => return false,
            Some(h) => {
                h.reachable = true;
                h.since = now();
                true
            }
            None => {
                book.hosts.insert(
                    host,
                    Health {
                        reachable: true,
                        since: now(),
                        last_error: None,
                    },
                );
                false
            }
        };
        book.dirty.insert(host);
        drop(book);
        self.changed.notify_one();
        if recovered {
            self.recovered.notify_waiters();
        }
        recovered
    }

    /// Host `host` could not be reached. True when it was reachable (or not yet known).
    pub fn unreachable(&self, host: i64, error: &str) -> bool {
        let mut book = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let health = book.hosts.entry(host).or_insert_with(|| Health {
            reachable: true,
            since: now(),
            last_error: None,
        });
        let fell = health.reachable;
        if fell {
            health.reachable = false;
            health.since = now();
        } else if health.last_error.as_deref() == Some(error) {
            return false;
        }
        health.last_error = Some(error.to_owned());
        book.dirty.insert(host);
        drop(book);
        self.changed.notify_one();
        fell
    }

    /// Whether host `host` is known to be unreachable now.
    pub fn is_unreachable(&self, host: i64) -> bool {
        let book = self.state.lock().unwrap_or_else(|p| p.into_inner());
        book.hosts.get(&host).is_some_and(|h| !h.reachable)
    }

    /// The hosts known to be unreachable now.
    pub fn unreachable_hosts(&self) -> Vec<i64> {
        let book = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut down: Vec<i64> = book
            .hosts
            .iter()
            .filter(|(_, h)| !h.reachable)
            .map(|(id, _)| *id)
            .collect();
        down.sort_unstable();
        down
    }

    /// The healths changed since the last call.
    pub fn take_changes(&self) -> Vec<(i64, Health)> {
        let mut book = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let dirty: Vec<i64> = book.dirty.drain().collect();
        dirty
            .into_iter()
            .filter_map(|id| book.hosts.get(&id).map(|h| (id, h.clone())))
            .collect()
    }

    /// Until some health changes (or has changed since the last take).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Until an unreachable host answers again.
    pub async fn recovered(&self) {
        self.recovered.notified().await;
    }
}

fn now() -> NaiveDateTime {
    Utc::now().naive_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_falls_and_recovers_keeping_its_last_error() {
        let book = HealthBook::default();
        assert!(!book.answered(1), "a first answer is no recovery");
        assert!(book.unreachable(1, "Connection refused"));
        assert!(!book.unreachable(1, "Connection refused"));
        assert_eq!(book.unreachable_hosts(), [1]);
        let changes = book.take_changes();
        assert_eq!(changes.len(), 1);
        assert!(!changes[0].1.reachable);
        assert!(
            book.take_changes().is_empty(),
            "a repeated error is no change"
        );
        assert!(book.answered(1));
        assert!(!book.is_unreachable(1));
        let (_, health) = book.take_changes().pop().unwrap();
        assert_eq!(health.last_error.as_deref(), Some("Connection refused"));
    }
}
