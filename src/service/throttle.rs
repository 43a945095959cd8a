//! Budgets per token: requests per second and cost per second (what `graphql::cost`
//! computes for each operation), by role, as CloudCIX throttles its API per user. A token
//! past its budget is refused with `RATE_LIMITED` and told when to come back; every
//! transport asks here before an operation runs.
//!
//! Before there is a token, there is an address: failed authentications are counted per
//! client address, and an address past its budget is refused before any token it sends
//! is looked up, so that a flood of invented tokens costs no database work.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::Caller;
use crate::config::{Rate, RateLimits};
use crate::domain::Role;
use crate::error::{AppError, AppResult};

/// The budgets of every token, keyed by token id, and of every address's failed
/// authentications.
pub struct Throttle {
    /// Budgets of ADMIN tokens (none by default).
    admin: Option<Budget>,
    /// Budgets of OPERATOR tokens.
    operator: Option<Budget>,
    /// Budgets of VIEWER tokens.
    viewer: Option<Budget>,
    /// Failed authentications by address.
    logins: Logins,
}

/// Failed authentications by client address.
struct Logins {
    /// Each address's budget of failures.
    failures: DefaultKeyedRateLimiter<IpAddr>,
    /// Addresses past their budget, and until when they are refused.
    barred: Mutex<HashMap<IpAddr, Instant>>,
    /// How long an address past its budget is refused: until its whole burst has
    /// refilled, so that a flood meets a pause it can see rather than one try in
    /// every gap of a tenth of a second.
    bar: Duration,
}

/// The budgets of one role.
struct Budget {
    /// Requests a second per token id, in bursts of up to twice that.
    requests: DefaultKeyedRateLimiter<i64>,
    /// Operation cost a second per token id (`graphql::cost`), in bursts of up to four times that.
    cost: DefaultKeyedRateLimiter<i64>,
}

impl Budget {
    fn new(rate: Rate) -> Self {
        let quota = |per_second: u32, burst: u32| {
            let n = |v: u32| NonZeroU32::new(v.max(1)).expect("at least 1");
            Quota::per_second(n(per_second)).allow_burst(n(burst))
        };
        Self {
            requests: DefaultKeyedRateLimiter::keyed(quota(
                rate.requests,
                rate.requests.saturating_mul(2),
            )),
            cost: DefaultKeyedRateLimiter::keyed(quota(rate.cost, rate.cost.saturating_mul(4))),
        }
    }
}

impl Throttle {
    /// Budgets of `rates` per token, and `failed_logins` failures a second per address
    /// (bursts of three times that, then three seconds' bar).
    pub fn new(rates: &RateLimits, failed_logins: u32) -> Self {
        const BURST_SECONDS: u32 = 3;
        let n = |v: u32| NonZeroU32::new(v.max(1)).expect("at least 1");
        let failures = Quota::per_second(n(failed_logins))
            .allow_burst(n(failed_logins.saturating_mul(BURST_SECONDS)));
        Self {
            admin: rates.admin.map(Budget::new),
            operator: rates.operator.map(Budget::new),
            viewer: rates.viewer.map(Budget::new),
            logins: Logins {
                failures: DefaultKeyedRateLimiter::keyed(failures),
                barred: Mutex::new(HashMap::new()),
                bar: Duration::from_secs(BURST_SECONDS.into()),
            },
        }
    }

    /// Whether `peer` may try a token now: refused while it is past its budget of
    /// failures.
    pub fn may_log_in(&self, peer: IpAddr) -> AppResult<()> {
        let mut barred = self.logins.barred.lock().unwrap();
        match barred.get(&peer) {
            Some(until) if *until > Instant::now() => Err(AppError::too_many_failed_logins(
                until.saturating_duration_since(Instant::now()),
            )),
            Some(_) => {
                barred.remove(&peer);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts a failed authentication of `peer`; past its budget, it is barred until
    /// its whole burst has refilled (no failure is counted while it is barred, so the
    /// budget is full when the bar lifts).
    pub fn failed_login(&self, peer: IpAddr) {
        if self.logins.failures.check_key(&peer).is_err() {
            let mut barred = self.logins.barred.lock().unwrap();
            barred.insert(peer, Instant::now() + self.logins.bar);
        }
    }

    fn budget(&self, role: Role) -> Option<&Budget> {
        match role {
            Role::Admin => self.admin.as_ref(),
            Role::Operator => self.operator.as_ref(),
            Role::Viewer => self.viewer.as_ref(),
        }
    }

    /// Counts one request of `caller`'s token.
    pub fn request(&self, caller: &Caller) -> AppResult<()> {
        let Some(budget) = self.budget(caller.role) else {
            return Ok(());
        };
        budget
            .requests
            .check_key(&caller.token_id)
            .map_err(|until| {
                let wait = until.wait_time_from(DefaultClock::default().now());
                AppError::rate_limited(wait, "requests")
            })
    }

    /// Spends `cost` of `caller`'s token's budget.
    pub fn spend(&self, caller: &Caller, cost: u64) -> AppResult<()> {
        let Some(budget) = self.budget(caller.role) else {
            return Ok(());
        };
        let Some(n) = NonZeroU32::new(u32::try_from(cost).unwrap_or(u32::MAX)) else {
            return Ok(());
        };
        match budget.cost.check_key_n(&caller.token_id, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(until)) => {
                let wait = until.wait_time_from(DefaultClock::default().now());
                Err(AppError::rate_limited(wait, "query cost"))
            }
            // More than the whole budget: no wait would let it through.
            Err(_) => Err(AppError::too_complex(format!(
                "This operation costs {cost}, more than your token's whole budget; ask for less."
            ))),
        }
    }

    /// Forgets tokens and addresses that have been quiet long enough to have a full
    /// budget again.
    pub fn forget_idle(&self) {
        for budget in [&self.admin, &self.operator, &self.viewer]
            .into_iter()
            .flatten()
        {
            budget.requests.retain_recent();
            budget.cost.retain_recent();
        }
        self.logins.failures.retain_recent();
        let now = Instant::now();
        self.logins
            .barred
            .lock()
            .unwrap()
            .retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role) -> Caller {
        Caller {
            token_id: 7,
            name: "t".into(),
            project_id: 1,
            role,
            expires_at: None,
        }
    }

    #[test]
    fn a_token_past_its_budget_is_told_when_to_come_back() {
        let throttle = Throttle::new(
            &RateLimits {
                admin: None,
                operator: Some(Rate {
                    requests: 2,
                    cost: 10,
                }),
                viewer: None,
            },
            10,
        );
        let op = caller(Role::Operator);
        for _ in 0..4 {
            throttle.request(&op).unwrap(); // a burst of twice the rate
        }
        let err = throttle.request(&op).unwrap_err();
        assert_eq!(err.code(), "RATE_LIMITED");
        assert!(matches!(
            err,
            AppError::RateLimited {
                retry_after_seconds: 1,
                ..
            }
        ));
        throttle.spend(&op, 40).unwrap();
        assert_eq!(throttle.spend(&op, 5).unwrap_err().code(), "RATE_LIMITED");
        assert_eq!(
            throttle.spend(&op, 41).unwrap_err().code(),
            "QUERY_TOO_COMPLEX"
        );
        // Roles without a budget, and other tokens, are not affected.
        for _ in 0..100 {
            throttle.request(&caller(Role::Admin)).unwrap();
        }
        let other = Caller {
            token_id: 8,
            ..op.clone()
        };
        throttle.request(&other).unwrap();
    }

    #[test]
    fn an_address_past_its_failed_logins_is_refused_before_a_lookup() {
        let throttle = Throttle::new(&RateLimits::default(), 2);
        let (bad, good): (IpAddr, IpAddr) = ([127, 0, 0, 9].into(), [127, 0, 0, 8].into());
        for _ in 0..7 {
            throttle.may_log_in(bad).unwrap(); // a burst of three times the rate, and one
            throttle.failed_login(bad);
        }
        let err = throttle.may_log_in(bad).unwrap_err();
        assert_eq!(err.code(), "RATE_LIMITED");
        assert!(err.public_message().contains("your address"), "{err:?}");
        // Barred until the whole burst has refilled, not for the next free moment.
        assert!(matches!(
            err,
            AppError::RateLimited {
                retry_after_seconds: 3,
                ..
            }
        ));
        throttle.may_log_in(good).unwrap();
    }
}
