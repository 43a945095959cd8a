//! Budgets per token: requests per second and cost per second (what `graphql::cost`
//! computes for each operation), by role, as CloudCIX throttles its API per user. A token
//! past its budget is refused with `RATE_LIMITED` and told when to come back; every
//! transport asks here before an operation runs.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::Caller;
use crate::config::{Rate, RateLimits};
use crate::domain::Role;
use crate::error::{AppError, AppResult};

/// The budgets of every token, keyed by token id.
pub struct Throttle {
    admin: Option<Budget>,
    operator: Option<Budget>,
    viewer: Option<Budget>,
}

/// The budgets of one role.
struct Budget {
    requests: DefaultKeyedRateLimiter<i64>,
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
    pub fn new(rates: &RateLimits) -> Self {
        Self {
            admin: rates.admin.map(Budget::new),
            operator: rates.operator.map(Budget::new),
            viewer: rates.viewer.map(Budget::new),
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

    /// Forgets tokens that have been quiet long enough to have a full budget again.
    pub fn forget_idle(&self) {
        for budget in [&self.admin, &self.operator, &self.viewer]
            .into_iter()
            .flatten()
        {
            budget.requests.retain_recent();
            budget.cost.retain_recent();
        }
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
        }
    }

    #[test]
    fn a_token_past_its_budget_is_told_when_to_come_back() {
        let throttle = Throttle::new(&RateLimits {
            admin: None,
            operator: Some(Rate {
                requests: 2,
                cost: 10,
            }),
            viewer: None,
        });
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
}
