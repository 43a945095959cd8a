//! Snapshot policies' rules, in one place: when a schedule is due, what a run names its
//! snapshot, and which of a policy's snapshots retention prunes. The runner
//! (`service::policies`) and the preview both call these, so that a preview says what a
//! run then does.

use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use croner::Cron;

use super::Rejection;

/// When a policy runs.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// Every `every`, on slots counted from `anchor` (the policy's creation).
    Every {
        every: Duration,
        anchor: DateTime<Utc>,
    },
    /// A cron expression (five fields, or `@daily`, ...), read in time zone `zone`.
    Cron { cron: Box<Cron>, zone: Tz },
}

/// The shortest interval a policy may run at.
pub const MIN_INTERVAL: Duration = Duration::minutes(1);

impl Schedule {
    /// An interval schedule; refused under a minute.
    pub fn every(seconds: i64, anchor: DateTime<Utc>) -> Result<Self, String> {
        check_interval(seconds)?;
        let every = Duration::try_seconds(seconds).ok_or("everySeconds is out of range.")?;
        Ok(Self::Every { every, anchor })
    }

    /// A cron schedule in IANA time zone `zone` (`UTC`, `Europe/Dublin`, ...).
    pub fn cron(expression: &str, zone: &str) -> Result<Self, String> {
        let zone: Tz = zone
            .parse()
            .map_err(|_| format!("{zone:?} is not an IANA time zone (such as Europe/Dublin)."))?;
        let cron = Cron::from_str(expression.trim())
            .map_err(|e| format!("{expression:?} is not a cron expression: {e}"))?;
        Ok(Self::Cron {
            cron: Box::new(cron),
            zone,
        })
    }

    /// The zone names are read in (UTC for an interval).
    pub fn zone(&self) -> Tz {
        match self {
            Self::Every { .. } => Tz::UTC,
            Self::Cron { zone, .. } => *zone,
        }
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Every { every, anchor } => {
                if t < *anchor {
                    return Some(*anchor);
                }
                let step = every.num_seconds().max(1);
                let passed = (t - *anchor).num_seconds() / step;
                Some(*anchor + Duration::seconds((passed + 1) * step))
            }
            Self::Cron { cron, zone } => cron
                .find_next_occurrence(&t.with_timezone(zone), false)
                .ok()
                .map(|at| at.with_timezone(&Utc)),
        }
    }

    /// The last slot at or before `t` (`None` before the first).
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Every { every, anchor } => {
                if t < *anchor {
                    return None;
                }
                let step = every.num_seconds().max(1);
                let passed = (t - *anchor).num_seconds() / step;
                Some(*anchor + Duration::seconds(passed * step))
            }
            Self::Cron { cron, zone } => cron
                .find_previous_occurrence(&t.with_timezone(zone), true)
                .ok()
                .map(|at| at.with_timezone(&Utc)),
        }
    }

    /// The next `n` slots after `t`.
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut slots = Vec::with_capacity(n);
        let mut at = t;
        while slots.len() < n {
            match self.next_after(at) {
                Some(next) => {
                    slots.push(next);
                    at = next;
                }
                None => break,
            }
        }
        slots
    }
}

/// What a run names its snapshot: `template` with `{policy}`, `{vm}`, `{date}`
/// (YYYY-MM-DD), `{time}` (HHMM) and `{due}` (YYYY-MM-DDTHHMM), in the schedule's zone.
pub fn snapshot_name(
    template: &str,
    policy: &str,
    vm: &str,
    due: DateTime<Utc>,
    zone: Tz,
) -> String {
    let local = due.with_timezone(&zone);
    template
        .replace("{policy}", policy)
        .replace("{vm}", vm)
        .replace("{due}", &local.format("%Y-%m-%dT%H%M").to_string())
        .replace("{date}", &local.format("%Y-%m-%d").to_string())
        .replace("{time}", &local.format("%H%M").to_string())
}

/// How many upcoming runs [`check_template`] compares: enough that any two runs in a row
/// on one day are among them (an hourly schedule's 24, a minutely one's first hours).
const TEMPLATE_CHECK_RUNS: usize = 64;

/// A template must name consecutive runs differently (names are unique per VM). Two
/// runs alone are not enough: `{date}` on an hourly schedule names 23:00 and 00:00
/// differently, and would pass late in the day.
pub fn check_template(
    template: &str,
    schedule: &Schedule,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let zone = schedule.zone();
    let names: Vec<String> = schedule
        .upcoming(now, TEMPLATE_CHECK_RUNS)
        .into_iter()
        .map(|due| snapshot_name(template, "p", "v", due, zone))
        .collect();
    if names.windows(2).any(|pair| pair[0] == pair[1]) {
        return Err(format!(
            "The name template {template:?} gives two runs in a row the same name; use {{due}}, or {{date}} and {{time}}."
        ));
    }
    Ok(())
}

/// How many of its snapshots a policy keeps.
#[derive(Clone, Copy, Debug, Default)]
pub struct Retention {
    /// Keep at most the newest `keep_last`.
    pub keep_last: Option<i32>,
    /// Keep none made longer ago than this.
    pub max_age: Option<Duration>,
}

/// One snapshot a policy made, as retention sees it.
#[derive(Clone, Debug)]
pub struct Made {
    /// The snapshot's id (the id `prune` returns).
    pub id: i64,
    /// The slot whose run made it.
    pub due: DateTime<Utc>,
    /// The VM runs from it: never pruned.
    pub active: bool,
    /// Kept until unprotected: out of the rotation, neither pruned nor counted.
    pub protected: bool,
}

/// The snapshots retention prunes at `now`, oldest first: beyond the newest
/// `keep_last`, or made more than `max_age` ago; never the active one, and never a
/// protected one (which does not count among the newest either). Only a policy's own
/// snapshots are ever given here.
pub fn prune(made: &[Made], retention: Retention, now: DateTime<Utc>) -> Vec<i64> {
    let mut by_age: Vec<&Made> = made.iter().filter(|m| !m.protected).collect();
    by_age.sort_by_key(|m| (std::cmp::Reverse(m.due), std::cmp::Reverse(m.id)));
    let keep = retention
        .keep_last
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(0));
    let mut pruned: Vec<&Made> = by_age
        .iter()
        .enumerate()
        .filter(|(i, m)| {
            let too_many = *i >= keep;
            let too_old = retention.max_age.is_some_and(|age| m.due < now - age);
            (too_many || too_old) && !m.active
        })
        .map(|(_, m)| *m)
        .collect();
    pruned.sort_by_key(|m| (m.due, m.id));
    pruned.into_iter().map(|m| m.id).collect()
}

/// Whether VM `name` is one a project-wide policy with `filter` covers: `*` matches any
/// run of characters, `?` one; no filter covers every VM. Linear in both lengths times
/// the stars (the usual one-backtrack-point match), whatever the filter.
pub fn covers(filter: Option<&str>, name: &str) -> bool {
    let Some(filter) = filter else {
        return true;
    };
    let (p, s): (Vec<char>, Vec<char>) = (filter.chars().collect(), name.chars().collect());
    let (mut i, mut j) = (0, 0);
    // The last star seen, and where in `s` its match now ends.
    let mut star: Option<(usize, usize)> = None;
    while j < s.len() {
        if i < p.len() && (p[i] == '?' || p[i] == s[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((at, matched)) = star {
            // Let the last star take one more character.
            i = at + 1;
            j = matched + 1;
            star = Some((at, matched + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// The longest VM filter and cron expression a policy may have.
pub const MAX_PATTERN_CHARS: usize = 100;
/// The longest interval and the oldest age a policy may name: ten years.
pub const MAX_SECONDS: i64 = 10 * 366 * 24 * 3600;

/// Runs missed in a row after which a policy pauses: something keeps refusing it (a VM
/// at its limit, a quota, a name taken), and trying again each slot would only fill its
/// runs with the same refusal.
pub const PAUSE_AFTER_MISSES: i32 = 10;

/// Why a policy with `misses` runs missed in a row pauses, if it does.
pub fn pause_because(misses: i32) -> Option<String> {
    (misses >= PAUSE_AFTER_MISSES).then(|| {
        format!(
            "paused after {misses} runs in a row were missed (their lastError says why); resume it once that is fixed"
        )
    })
}

/// Whether a policy may be resumed: only a `paused` one, and only while its token lets it
/// run (`stopped` says why not).
pub fn resume(paused: bool, stopped: Option<&'static str>) -> Result<(), Rejection> {
    if let Some(why) = stopped {
        return Err(Rejection::PolicyStopped { why });
    }
    if !paused {
        return Err(Rejection::NotPaused);
    }
    Ok(())
}

/// An interval a policy may run at: a minute to ten years.
fn check_interval(seconds: i64) -> Result<(), String> {
    if seconds < MIN_INTERVAL.num_seconds() {
        return Err(format!(
            "A policy runs at most once a minute; {seconds} seconds is too often."
        ));
    }
    if seconds > MAX_SECONDS {
        return Err(format!(
            "everySeconds must be at most {MAX_SECONDS} (ten years)."
        ));
    }
    Ok(())
}

/// What a policy's definition must hold besides its schedule and names: bounded
/// numbers and patterns (a hostile tenant's largest would overflow the time arithmetic
/// or cost the runner without bound), and one way of naming its VMs.
pub fn check_definition(
    every_seconds: Option<i64>,
    keep_last: Option<i32>,
    max_age_seconds: Option<i64>,
    one_vm: bool,
    vm_filter: Option<&str>,
    cron: Option<&str>,
) -> Result<(), String> {
    if let Some(seconds) = every_seconds {
        check_interval(seconds)?;
    }
    if keep_last.is_some_and(|n| n < 1) {
        return Err("keepLast must be 1 or more.".into());
    }
    if max_age_seconds.is_some_and(|s| !(60..=MAX_SECONDS).contains(&s)) {
        return Err(format!("maxAgeSeconds must be 60 to {MAX_SECONDS}."));
    }
    if one_vm && vm_filter.is_some() {
        return Err("A policy is for one VM (vmId) or a filter, not both.".into());
    }
    for (what, text) in [("vmFilter", vm_filter), ("cron", cron)] {
        if text.is_some_and(|t| t.chars().count() > MAX_PATTERN_CHARS) {
            return Err(format!(
                "{what} is at most {MAX_PATTERN_CHARS} characters long."
            ));
        }
        if text.is_some_and(|t| t.chars().any(char::is_control)) {
            return Err(format!("{what} must not contain control characters."));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_paused_policy_whose_token_lives_resumes() {
        assert_eq!(resume(true, None), Ok(()));
        assert_eq!(resume(false, None), Err(Rejection::NotPaused));
        assert_eq!(
            resume(true, Some("its token has expired")),
            Err(Rejection::PolicyStopped {
                why: "its token has expired"
            })
        );
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn intervals_count_slots_from_their_anchor() {
        let s = Schedule::every(3600, at("2030-01-01T00:30:00Z")).unwrap();
        assert_eq!(
            s.next_after(at("2030-01-01T00:00:00Z")),
            Some(at("2030-01-01T00:30:00Z"))
        );
        assert_eq!(
            s.next_after(at("2030-01-01T00:30:00Z")),
            Some(at("2030-01-01T01:30:00Z"))
        );
        assert_eq!(
            s.next_after(at("2030-01-01T05:00:00Z")),
            Some(at("2030-01-01T05:30:00Z"))
        );
        assert_eq!(
            s.latest_at_or_before(at("2030-01-01T05:00:00Z")),
            Some(at("2030-01-01T04:30:00Z"))
        );
        assert_eq!(s.latest_at_or_before(at("2030-01-01T00:00:00Z")), None);
        assert!(Schedule::every(59, at("2030-01-01T00:00:00Z")).is_err());
    }

    #[test]
    fn cron_reads_its_time_zone() {
        let s = Schedule::cron("0 3 * * *", "Europe/Dublin").unwrap();
        // Summer: 03:00 in Dublin is 02:00 UTC; winter: 03:00 UTC.
        assert_eq!(
            s.next_after(at("2030-07-01T00:00:00Z")),
            Some(at("2030-07-01T02:00:00Z"))
        );
        assert_eq!(
            s.next_after(at("2030-12-01T00:00:00Z")),
            Some(at("2030-12-01T03:00:00Z"))
        );
        assert_eq!(
            s.latest_at_or_before(at("2030-12-05T12:00:00Z")),
            Some(at("2030-12-05T03:00:00Z"))
        );
        assert!(Schedule::cron("0 3 * *", "UTC").is_err());
        assert!(Schedule::cron("0 3 * * *", "Mars/Olympus").is_err());
        assert!(Schedule::cron("@daily", "UTC").is_ok());
    }

    #[test]
    fn names_are_rendered_in_the_zone_and_must_differ() {
        let due = at("2030-12-01T23:30:00Z");
        let tokyo: Tz = "Asia/Tokyo".parse().unwrap();
        assert_eq!(
            snapshot_name("{policy}-{vm}-{due}", "daily", "web", due, tokyo),
            "daily-web-2030-12-02T0830"
        );
        let hourly = Schedule::every(3600, due).unwrap();
        assert!(check_template("{policy}-{date}", &hourly, due).is_err());
        assert!(check_template("{policy}-{date}-{time}", &hourly, due).is_ok());
        // The next two runs fall on either side of midnight; later ones collide.
        let late = at("2030-12-01T22:30:00Z");
        let hourly = Schedule::every(3600, late).unwrap();
        assert!(check_template("{policy}-{date}", &hourly, late).is_err());
        let daily = Schedule::every(86400, late).unwrap();
        assert!(check_template("{policy}-{date}", &daily, late).is_ok());
    }

    #[test]
    fn retention_keeps_the_newest_and_the_young_never_the_active() {
        let day = |d: i64| at("2030-01-01T00:00:00Z") + Duration::days(d);
        let made: Vec<Made> = (0..6)
            .map(|d| Made {
                id: d + 1,
                due: day(d),
                active: d == 1,
                protected: false,
            })
            .collect();
        let keep3 = Retention {
            keep_last: Some(3),
            max_age: None,
        };
        // 1..6, newest three kept (4, 5, 6); 2 is active.
        assert_eq!(prune(&made, keep3, day(6)), [1, 3]);
        let week = Retention {
            keep_last: None,
            max_age: Some(Duration::days(4)),
        };
        assert_eq!(prune(&made, week, day(6)), [1]); // 2 is active, 3 is exactly 4 days old
        let both = Retention {
            keep_last: Some(4),
            max_age: Some(Duration::days(2)),
        };
        assert_eq!(prune(&made, both, day(6)), [1, 3, 4]);
        assert!(prune(&made, Retention::default(), day(100)).is_empty());
        // A protected one is out of the rotation: kept, and not one of the newest three.
        let mut guarded = made.clone();
        guarded[4].protected = true;
        assert_eq!(prune(&guarded, keep3, day(6)), [1]);
        guarded[0].protected = true;
        assert!(prune(&guarded, keep3, day(6)).is_empty());
    }

    #[test]
    fn filters_are_globs_over_vm_names() {
        assert!(covers(None, "anything"));
        assert!(covers(Some("web-*"), "web-1"));
        assert!(!covers(Some("web-*"), "db-1"));
        assert!(covers(Some("db-?"), "db-2"));
        assert!(!covers(Some("db-?"), "db-12"));
        assert!(covers(Some("*"), ""));
        assert!(covers(Some("a*b*c"), "aXbYbZc"));
        assert!(!covers(Some("a*b*c"), "aXbYbZ"));
        // A filter made to backtrack: answered at once.
        let hostile = "*a".repeat(50) + "b";
        assert!(!covers(Some(&hostile), &"a".repeat(200)));
    }

    #[test]
    fn definitions_are_bounded() {
        assert!(
            check_definition(Some(3600), Some(7), Some(86400), false, Some("web-*"), None).is_ok()
        );
        assert!(check_definition(Some(i64::MAX), None, None, false, None, None).is_err());
        assert!(check_definition(None, None, Some(i64::MAX), false, None, None).is_err());
        assert!(check_definition(None, Some(0), None, false, None, None).is_err());
        assert!(check_definition(None, None, None, true, Some("x"), None).is_err());
        let long = "x".repeat(MAX_PATTERN_CHARS + 1);
        assert!(check_definition(None, None, None, false, Some(&long), None).is_err());
        assert!(check_definition(None, None, None, false, None, Some(&long)).is_err());
    }
}
