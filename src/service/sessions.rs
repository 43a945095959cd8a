//! The WebSocket connections open in this process, by token: the cap on connections per
//! token, and revocation reaching the connections a revoked token holds. A revocation
//! made here reaches them at once; one made by another process sharing the database is
//! found by [`watch_revocations`] within [`REVOCATION_POLL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Caller, Service};
use crate::db::tokens;
use crate::error::{AppError, AppResult};

/// How often other processes' revocations are looked for while connections are open.
pub const REVOCATION_POLL: Duration = Duration::from_millis(400);

/// Open connections per token.
#[derive(Default)]
pub struct Sessions {
    /// Per token id: its open connections; an entry goes when its count reaches 0.
    open: Mutex<HashMap<i64, Entry>>,
}

struct Entry {
    /// Connections this token holds open.
    count: usize,
    /// Turns true when the token is revoked.
    revoked: watch::Sender<bool>,
}

/// One open connection; dropping it closes its place.
pub struct Session {
    /// The token the connection authenticated with.
    token_id: i64,
    /// Turns true when that token is revoked (or, found by the watch, expires).
    revoked: watch::Receiver<bool>,
    /// Where the connection is counted; dropping the session gives its place back.
    sessions: Arc<Sessions>,
}

impl Session {
    /// Waits until the connection's token is revoked.
    pub async fn revoked(&mut self) {
        let told = self.revoked.wait_for(|revoked| *revoked).await.is_ok();
        if !told {
            // The sessions were dropped: no revocation can come any more.
            std::future::pending::<()>().await;
        }
    }

    /// Whether the token has been revoked already.
    pub fn is_revoked(&self) -> bool {
        *self.revoked.borrow()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut open = self.sessions.lock();
        if let Some(entry) = open.get_mut(&self.token_id) {
            entry.count -= 1;
            if entry.count == 0 {
                open.remove(&self.token_id);
            }
        }
    }
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Entry>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a connection for `caller`, unless its token already holds `cap` of them.
    pub fn open(self: &Arc<Self>, caller: &Caller, cap: Option<usize>) -> AppResult<Session> {
        let mut open = self.lock();
        let entry = open.entry(caller.token_id).or_insert_with(|| Entry {
            count: 0,
            revoked: watch::channel(false).0,
        });
        if cap.is_some_and(|cap| entry.count >= cap) {
            let cap = cap.unwrap_or_default();
            return Err(AppError::too_many_connections(cap));
        }
        entry.count += 1;
        Ok(Session {
            token_id: caller.token_id,
            revoked: entry.revoked.subscribe(),
            sessions: Arc::clone(self),
        })
    }

    /// Tells the connections of token `token_id` that it was revoked.
    pub fn revoke(&self, token_id: i64) {
        if let Some(entry) = self.lock().get(&token_id) {
            entry.revoked.send_replace(true);
        }
    }

    /// The tokens holding connections that are not revoked yet.
    fn live_tokens(&self) -> Vec<i64> {
        self.lock()
            .iter()
            .filter(|(_, e)| !*e.revoked.borrow())
            .map(|(id, _)| *id)
            .collect()
    }
}

/// Looks, while connections are open, for their tokens revoked by another process, or
/// expired, and tells their connections. Stops when `shutdown` turns true.
pub fn watch_revocations(service: Service, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REVOCATION_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let live = service.sessions().live_tokens();
            if live.is_empty() {
                continue;
            }
            match ended_among(&service, &live).await {
                Ok(revoked) => revoked
                    .into_iter()
                    .for_each(|id| service.sessions().revoke(id)),
                Err(err) => tracing::warn!(error = %err, "cannot look for revoked tokens"),
            }
        }
    })
}

/// The tokens among `ids` revoked, or expired by the service's clock.
async fn ended_among(service: &Service, ids: &[i64]) -> AppResult<Vec<i64>> {
    let mut pooled = service.db().reader().await?;
    let now = service.clock().now_naive();
    Ok(tokens::ended_among(&mut pooled.conn(), ids, now).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;

    #[test]
    fn connections_are_counted_per_token_and_told_of_revocation() {
        let sessions = Arc::new(Sessions::default());
        let caller = Caller {
            token_id: 3,
            name: "t".into(),
            project_id: 1,
            role: Role::Viewer,
            expires_at: None,
            reason: crate::domain::Reason::User,
        };
        let a = sessions.open(&caller, Some(2)).unwrap();
        let b = sessions.open(&caller, Some(2)).unwrap();
        assert_eq!(
            sessions.open(&caller, Some(2)).err().unwrap().code(),
            "RATE_LIMITED"
        );
        drop(b);
        let c = sessions.open(&caller, Some(2)).unwrap();
        assert_eq!(sessions.live_tokens(), vec![3]);
        sessions.revoke(3);
        assert!(a.is_revoked() && c.is_revoked());
        assert!(sessions.live_tokens().is_empty());
        drop((a, c));
        assert!(sessions.lock().is_empty());
    }
}
