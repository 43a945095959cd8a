//! Budgets per token: requests per second and cost per second (what `graphql::cost`
//! computes for each operation), by role, as CloudCIX throttles its API per user. A token
//! past its budget is refused with `RATE_LIMITED` and told when to come back; every
//! transport asks here before an operation runs.
//!
//! Before there is a token, there is an address: failed authentications are counted per
//! client address, and an address past its budget is refused before any token it sends
//! is looked up, so that a flood of invented tokens costs no database work.
//!
//! And a token's operations refused as too complex are counted: past its budget of them,
//! the token is refused before its next documents are parsed (parsing is most of what a
//! refusal costs), whatever its role, so that a flood of documents built to be refused
//! costs little more than reading them.

use std::collections::HashMap;
use std::hash::Hash;
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
    logins: Bar<IpAddr>,
    /// Operations refused as too complex, by token id.
    refusals: Bar<i64>,
}

/// Failures counted per key (an address's failed logins, a token's refused operations):
/// a key past its budget is refused until its whole burst has refilled.
struct Bar<K: Hash + Eq + Clone> {
    /// Each key's budget of failures.
    failures: DefaultKeyedRateLimiter<K>,
    /// Keys past their budget, and until when they are refused.
    barred: Mutex<HashMap<K, Instant>>,
    /// How long a key past its budget is refused: until its whole burst has refilled,
    /// so that a flood meets a pause it can see rather than one try in every gap of a
    /// tenth of a second.
    bar: Duration,
}

impl<K: Hash + Eq + Clone> Bar<K> {
    /// Seconds of failures a key may make at once, at `per_second`.
    const BURST_SECONDS: u32 = 3;

    /// A budget of `per_second` failures, in bursts of [`Self::BURST_SECONDS`] of them.
    fn new(per_second: u32) -> Self {
        let n = |v: u32| NonZeroU32::new(v.max(1)).expect("at least 1");
        let quota = Quota::per_second(n(per_second))
            .allow_burst(n(per_second.saturating_mul(Self::BURST_SECONDS)));
        Self {
            failures: DefaultKeyedRateLimiter::keyed(quota),
            barred: Mutex::new(HashMap::new()),
            bar: Duration::from_secs(Self::BURST_SECONDS.into()),
        }
    }

    /// How long `key` is still refused, if it is.
    fn barred_for(&self, key: &K) -> Option<Duration> {
        let mut barred = self.barred.lock().unwrap();
        match barred.get(key) {
            Some(until) if *until > Instant::now() => {
                Some(until.saturating_duration_since(Instant::now()))
            }
            Some(_) => {
                barred.remove(key);
                None
            }
            None => None,
        }
    }

    /// Counts a failure of `key`; past its budget, it is barred (no failure is counted
    /// while it is barred, so the budget is full when the bar lifts).
    fn fail(&self, key: K) {
        if self.failures.check_key(&key).is_err() {
            let mut barred = self.barred.lock().unwrap();
            barred.insert(key, Instant::now() + self.bar);
        }
    }

    fn forget_idle(&self) {
        self.failures.retain_recent();
        let now = Instant::now();
        self.barred.lock().unwrap().retain(|_, until| *until > now);
    }
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
    /// Budgets of `rates` per token, `failed_logins` failures a second per address and
    /// `refused` refused operations a second per token (each in bursts of three times
    /// that, then three seconds' bar).
    pub fn new(rates: &RateLimits, failed_logins: u32, refused: u32) -> Self {
        Self {
            admin: rates.admin.map(Budget::new),
            operator: rates.operator.map(Budget::new),
            viewer: rates.viewer.map(Budget::new),
            logins: Bar::new(failed_logins),
            refusals: Bar::new(refused),
        }
    }

    /// Whether `peer` may try a token now: refused while it is past its budget of
    /// failures.
    pub fn may_log_in(&self, peer: IpAddr) -> AppResult<()> {
        match self.logins.barred_for(&peer) {
            Some(wait) => Err(AppError::too_many_failed_logins(wait)),
            None => Ok(()),
        }
    }

    /// Counts a failed authentication of `peer`.
    pub fn failed_login(&self, peer: IpAddr) {
        self.logins.fail(peer);
    }

    /// Whether `caller`'s token may send an operation now: refused, before it is
    /// parsed, while the token is past its budget of refused operations.
    pub fn may_send(&self, caller: &Caller) -> AppResult<()> {
        match self.refusals.barred_for(&caller.token_id) {
            Some(wait) => Err(AppError::too_many_refusals(wait)),
            None => Ok(()),
        }
    }

    /// Counts an operation of `caller`'s token refused as too complex.
    pub fn refused(&self, caller: &Caller) {
        self.refusals.fail(caller.token_id);
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
        self.logins.forget_idle();
        self.refusals.forget_idle();
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
            reason: crate::domain::Reason::User,
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
        let throttle = Throttle::new(&RateLimits::default(), 2, 10);
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

    #[test]
    fn a_token_past_its_refused_operations_is_barred_and_others_are_not() {
        let throttle = Throttle::new(&RateLimits::default(), 10, 2);
        let admin = caller(Role::Admin);
        for _ in 0..7 {
            throttle.may_send(&admin).unwrap(); // a burst of three times the rate, and one
            throttle.refused(&admin);
        }
        let err = throttle.may_send(&admin).unwrap_err();
        assert_eq!(err.code(), "RATE_LIMITED");
        assert!(err.public_message().contains("refused"), "{err:?}");
        assert!(matches!(
            err,
            AppError::RateLimited {
                retry_after_seconds: 3,
                ..
            }
        ));
        let other = Caller {
            token_id: 8,
            ..admin
        };
        throttle.may_send(&other).unwrap();
    }
}
