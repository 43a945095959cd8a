//! Lifetimes (issue 30): when a snapshot expires, and what the expiry sweep may delete.
//! An expired snapshot is deleted as a user's delete of it alone would (its children
//! move up), but never a protected one, and never the VM's active one: the active
//! snapshot is what a revert returns to, so it is kept, expired, until another becomes
//! active or a person deletes it.

use chrono::{Duration, NaiveDateTime};

use super::Rejection;
use super::lifecycle::{self, Plan};
use super::tree::Tree;

/// The longest lifetime a project may set: ten years, so that every expiry is a date.
pub const MAX_LIFETIME_HOURS: i32 = 24 * 366 * 10;

/// A project's maximum lifetime must be between an hour and [`MAX_LIFETIME_HOURS`].
pub fn check_max_lifetime(hours: Option<i32>) -> Result<(), Rejection> {
    match hours {
        Some(h) if !(1..=MAX_LIFETIME_HOURS).contains(&h) => {
            Err(Rejection::LifetimeOutOfRange { hours: h })
        }
        _ => Ok(()),
    }
}

/// When a snapshot made (or to be made) at `born` expires, given the expiry `asked` for
/// (`None`: none) at `now`, and its project's maximum lifetime in hours (`None`: none).
/// An expiry must be to come; a project's maximum is the default and the latest allowed.
pub fn expiry(
    asked: Option<NaiveDateTime>,
    max_hours: Option<i32>,
    born: NaiveDateTime,
    now: NaiveDateTime,
) -> Result<Option<NaiveDateTime>, Rejection> {
    if asked.is_some_and(|at| at <= now) {
        return Err(Rejection::ExpiryPast);
    }
    let Some(hours) = max_hours else {
        return Ok(asked);
    };
    let latest = born + Duration::hours(i64::from(hours));
    match asked {
        None => Ok(Some(latest)),
        Some(at) if at <= latest => Ok(Some(at)),
        Some(_) => Err(Rejection::LifetimeTooLong { hours, latest }),
    }
}

/// A change of an existing snapshot's expiry to `asked` (`None`: removed), for one made
/// at `born` in a project whose maximum lifetime is `max_hours`.
pub fn change_expiry(
    asked: Option<NaiveDateTime>,
    max_hours: Option<i32>,
    born: NaiveDateTime,
    now: NaiveDateTime,
) -> Result<Option<NaiveDateTime>, Rejection> {
    match (asked, max_hours) {
        (None, Some(hours)) => Err(Rejection::LifetimeRequired { hours }),
        _ => expiry(asked, max_hours, born, now),
    }
}

/// The expiry sweep's delete of snapshot `id` at `now`: a delete of it alone, once its
/// expiry has passed (as the tree has it: a change of expiry since the sweep read it
/// counts), refused for the VM's active snapshot and, as every delete, a protected one.
pub fn expire(tree: &Tree, id: i64, now: NaiveDateTime) -> Result<Plan, Rejection> {
    let node = tree.get(id).ok_or(Rejection::Closed { id })?;
    if node.expires_at.is_none_or(|at| at > now) {
        return Err(Rejection::NotExpired { id });
    }
    if node.active {
        return Err(Rejection::ExpiredButActive { id });
    }
    lifecycle::delete(tree, id, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tree::tests::tree;

    fn at(hour: u32) -> NaiveDateTime {
        chrono::NaiveDate::from_ymd_opt(2026, 12, 7)
            .unwrap()
            .and_hms_opt(hour, 0, 0)
            .unwrap()
    }

    #[test]
    fn an_expiry_must_be_to_come() {
        assert_eq!(
            expiry(Some(at(9)), None, at(10), at(10)),
            Err(Rejection::ExpiryPast)
        );
        assert_eq!(
            expiry(Some(at(10)), None, at(10), at(10)),
            Err(Rejection::ExpiryPast)
        );
        assert_eq!(expiry(Some(at(11)), None, at(10), at(10)), Ok(Some(at(11))));
        assert_eq!(expiry(None, None, at(10), at(10)), Ok(None));
    }

    #[test]
    fn a_projects_maximum_is_the_default_and_the_latest() {
        assert_eq!(expiry(None, Some(3), at(10), at(10)), Ok(Some(at(13))));
        assert_eq!(
            expiry(Some(at(12)), Some(3), at(10), at(10)),
            Ok(Some(at(12)))
        );
        assert_eq!(
            expiry(Some(at(13)), Some(3), at(10), at(10)),
            Ok(Some(at(13)))
        );
        assert_eq!(
            expiry(Some(at(14)), Some(3), at(10), at(10)),
            Err(Rejection::LifetimeTooLong {
                hours: 3,
                latest: at(13)
            })
        );
    }

    #[test]
    fn a_change_counts_from_the_snapshots_birth_and_cannot_remove_a_required_expiry() {
        // Made at 8, changed at 10, project maximum 3 hours: at most 11.
        assert_eq!(
            change_expiry(Some(at(11)), Some(3), at(8), at(10)),
            Ok(Some(at(11)))
        );
        assert!(change_expiry(Some(at(12)), Some(3), at(8), at(10)).is_err());
        assert_eq!(
            change_expiry(None, Some(3), at(8), at(10)),
            Err(Rejection::LifetimeRequired { hours: 3 })
        );
        assert_eq!(change_expiry(None, None, at(8), at(10)), Ok(None));
    }

    #[test]
    fn maximum_lifetimes_are_bounded() {
        assert!(check_max_lifetime(None).is_ok());
        assert!(check_max_lifetime(Some(1)).is_ok());
        assert!(check_max_lifetime(Some(0)).is_err());
        assert!(check_max_lifetime(Some(MAX_LIFETIME_HOURS + 1)).is_err());
    }

    #[test]
    fn expiry_deletes_alone_once_due_but_never_the_active_or_a_protected_one() {
        let mut nodes: Vec<_> = [1, 2, 3, 4]
            .iter()
            .map(|&id| tree(&[(id, None)], None).get(id).unwrap().clone())
            .collect();
        for n in &mut nodes {
            n.parent_id = (n.id > 1).then_some(n.id - 1);
            n.expires_at = Some(at(10));
        }
        nodes[2].active = true;
        nodes[3].protected = true;
        nodes[0].expires_at = Some(at(12));
        let t = Tree::new(nodes);
        let plan = expire(&t, 2, at(11)).unwrap();
        assert!(!plan.remove_subtree);
        assert_eq!(plan.target, 2);
        assert_eq!(expire(&t, 1, at(11)), Err(Rejection::NotExpired { id: 1 }));
        assert_eq!(
            expire(&t, 3, at(11)),
            Err(Rejection::ExpiredButActive { id: 3 })
        );
        assert!(matches!(
            expire(&t, 4, at(11)),
            Err(Rejection::Protected { id: 4, .. })
        ));
        assert_eq!(expire(&t, 9, at(11)), Err(Rejection::Closed { id: 9 }));
    }
}
