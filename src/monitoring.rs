//! What an operator loads into their monitoring, shipped in the binary
//! (`snaptree monitoring rules|rules-tests|dashboard` prints each): Prometheus alerting
//! rules on the metrics of [`crate::metrics`], their unit tests for `promtool test
//! rules`, and a Grafana dashboard whose panels read the same metrics. The tests check
//! the rules with promtool and every metric they and the dashboard name against a
//! running server's `/metrics`.

/// Prometheus alerting rules: stale snapshots, deep chains, unreachable hosts, a stuck
/// queue, failing tasks.
pub const RULES: &str = include_str!("monitoring/rules.yml");

/// `promtool test rules` cases for [`RULES`] (which they load as `rules.yml`).
pub const RULES_TESTS: &str = include_str!("monitoring/rules.test.yml");

/// A Grafana dashboard (JSON model) of the fleet.
pub const DASHBOARD: &str = include_str!("monitoring/dashboard.json");
