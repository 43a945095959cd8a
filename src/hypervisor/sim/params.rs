//! A `sim://` URI's tuning: how long operations take, which fail and how, the VMs the
//! host starts with, whether it keeps a journal.

use std::time::Duration;

/// The tuning read from a `sim://` URI.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimParams {
    /// How long each create, apply or delete takes (`latency_ms`, at most 10 minutes).
    pub latency: Duration,
    /// Share of operations, 0 to 1, that fail for good; the three rates add up to 1 at most.
    pub fail_rate: f64,
    /// Share of operations, 0 to 1, that fail transiently (a lost connection).
    pub flaky_rate: f64,
    /// Share of operations, 0 to 1, that never answer, before making their change.
    pub hang_rate: f64,
    /// VMs the host lists from the start, besides those it has state files for.
    pub domains: Vec<String>,
    /// The operations the rates apply to; empty: all of them.
    pub fail_on: Vec<Op>,
    /// Whether operations are logged to `journal.log` as they begin and end.
    pub journal: bool,
}

/// A snapshot operation, as `fail_on` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Create,
    Apply,
    Delete,
}

impl Op {
    pub(super) fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Apply => "apply",
            Op::Delete => "delete",
        }
    }
}

impl SimParams {
    pub fn parse(uri: &str) -> Result<Self, String> {
        let rest = uri
            .strip_prefix("sim://")
            .ok_or_else(|| format!("a simulated host's URI starts with sim://, not {uri:?}"))?;
        let query = rest.split_once('?').map_or("", |(_, q)| q);
        let mut params = Self::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "latency_ms" => {
                    let ms: u64 = value
                        .parse()
                        .ok()
                        .filter(|ms| *ms <= 600_000)
                        .ok_or_else(|| format!("latency_ms must be 0 to 600000, not {value:?}"))?;
                    params.latency = Duration::from_millis(ms);
                }
                "fail_rate" => params.fail_rate = rate(key, value)?,
                "flaky_rate" => params.flaky_rate = rate(key, value)?,
                "hang_rate" => params.hang_rate = rate(key, value)?,
                "fail_on" => {
                    params.fail_on = value
                        .split(',')
                        .map(|op| match op {
                            "create" => Ok(Op::Create),
                            "apply" => Ok(Op::Apply),
                            "delete" => Ok(Op::Delete),
                            other => Err(format!(
                                "fail_on takes create, apply and delete, not {other:?}"
                            )),
                        })
                        .collect::<Result<_, _>>()?;
                }
                "journal" => {
                    params.journal = match value {
                        "1" | "true" => true,
                        "0" | "false" => false,
                        other => return Err(format!("journal is 1 or 0, not {other:?}")),
                    }
                }
                "domains" => {
                    params.domains = value
                        .split(',')
                        .filter(|d| !d.is_empty())
                        .map(str::to_owned)
                        .collect()
                }
                other => {
                    return Err(format!(
                        "unknown sim:// parameter {other:?}; use latency_ms, fail_rate, flaky_rate, hang_rate, fail_on, journal or domains"
                    ));
                }
            }
        }
        if params.fail_rate + params.flaky_rate + params.hang_rate > 1.0 {
            return Err("fail_rate, flaky_rate and hang_rate add up to more than 1".into());
        }
        Ok(params)
    }
}

fn rate(key: &str, value: &str) -> Result<f64, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| format!("{key} must be a number from 0 to 1, not {value:?}"))
}
