//! Fault injection (per-verb error rate, latency and 429s; dropped and expired watches) and the
//! request counters (per user, verb and resource).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Faults, switchable at run time (`PUT /sandbox/faults` or the library handle).
///
/// Verb keys are Kubernetes verbs (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
/// `deletecollection`) or `*` for all. Rates are fractions in 0..=1 and are applied
/// deterministically: with rate 0.5 every second matching request fails.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Faults {
    /// Fraction of requests answered 500 InternalError, per verb.
    pub error_rate: BTreeMap<String, f64>,
    /// Added latency in milliseconds, per verb.
    pub latency_ms: BTreeMap<String, u64>,
    /// Fraction of requests answered 429 TooManyRequests, per verb.
    pub throttle_rate: BTreeMap<String, f64>,
    /// `Retry-After` seconds sent with 429s.
    pub retry_after_seconds: u64,
    /// Close every watch stream after this many milliseconds.
    pub drop_watches_after_ms: Option<u64>,
    /// Answer every new watch that names a resourceVersion with 410 Gone (an ERROR event).
    pub force_watch_gone: bool,
    /// Apply faults only to requests by these users (all users when empty).
    pub only_users: Vec<String>,
    /// Apply faults only to these resources (e.g. `pods`, `services`; all when empty).
    pub only_resources: Vec<String>,
}

impl Faults {
    fn applies(&self, user: &str, resource: &str) -> bool {
        (self.only_users.is_empty() || self.only_users.iter().any(|u| u == user))
            && (self.only_resources.is_empty()
                || self
                    .only_resources
                    .iter()
                    .any(|r| r == resource || resource.starts_with(&format!("{r}/"))))
    }

    fn lookup<T: Copy>(map: &BTreeMap<String, T>, verb: &str) -> Option<T> {
        map.get(verb).or_else(|| map.get("*")).copied()
    }
}

/// What the fault layer decided for one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultDecision {
    /// Sleep this long first.
    pub latency_ms: u64,
    /// Answer 500.
    pub error: bool,
    /// Answer 429 with this Retry-After.
    pub throttle: Option<u64>,
}

/// Fault state: the configuration plus per-verb sequence numbers for deterministic rates.
#[derive(Debug, Default)]
pub struct FaultState {
    /// Current configuration.
    pub faults: Faults,
    seq: BTreeMap<String, u64>,
}

fn hit(rate: f64, n: u64) -> bool {
    if rate <= 0.0 {
        return false;
    }
    if rate >= 1.0 {
        return true;
    }
    ((n + 1) as f64 * rate).floor() > (n as f64 * rate).floor()
}

impl FaultState {
    /// Decides the faults for one request.
    pub fn decide(&mut self, user: &str, verb: &str, resource: &str) -> FaultDecision {
        let f = &self.faults;
        if !f.applies(user, resource) {
            return FaultDecision::default();
        }
        let latency_ms = Faults::lookup(&f.latency_ms, verb).unwrap_or(0);
        let err_rate = Faults::lookup(&f.error_rate, verb).unwrap_or(0.0);
        let thr_rate = Faults::lookup(&f.throttle_rate, verb).unwrap_or(0.0);
        let retry = f.retry_after_seconds.max(1);
        if err_rate <= 0.0 && thr_rate <= 0.0 {
            return FaultDecision {
                latency_ms,
                ..Default::default()
            };
        }
        let n = self.seq.entry(verb.to_string()).or_insert(0);
        let cur = *n;
        *n += 1;
        FaultDecision {
            latency_ms,
            error: hit(err_rate, cur),
            throttle: (!hit(err_rate, cur) && hit(thr_rate, cur)).then_some(retry),
        }
    }
}

/// One counter row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CounterKey {
    /// Requesting user.
    pub user: String,
    /// Kubernetes verb.
    pub verb: String,
    /// `pods`, `pods/status`, `deployments.apps`, `exposures.portico.dev`, ...
    pub resource: String,
}

/// A snapshot of the request counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Count per (user, verb, resource).
    pub counts: BTreeMap<CounterKey, u64>,
}

/// The verbs that change state.
pub const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

impl Counters {
    /// Requests matching the given filters (`None` = any).
    pub fn count(&self, user: Option<&str>, verb: Option<&str>, resource: Option<&str>) -> u64 {
        self.counts
            .iter()
            .filter(|(k, _)| {
                user.is_none_or(|u| k.user == u)
                    && verb.is_none_or(|v| k.verb == v)
                    && resource.is_none_or(|r| k.resource == r)
            })
            .map(|(_, n)| *n)
            .sum()
    }

    /// Write requests (create, update, patch, delete, deletecollection) by `user`.
    pub fn writes_by(&self, user: &str) -> u64 {
        WRITE_VERBS
            .iter()
            .map(|v| self.count(Some(user), Some(v), None))
            .sum()
    }

    /// Counts accumulated since `earlier` (a previous snapshot).
    pub fn since(&self, earlier: &Counters) -> Counters {
        let counts = self
            .counts
            .iter()
            .filter_map(|(k, n)| {
                let d = n.saturating_sub(earlier.counts.get(k).copied().unwrap_or(0));
                (d > 0).then(|| (k.clone(), d))
            })
            .collect();
        Counters { counts }
    }

    /// Rows as JSON objects (`[{user, verb, resource, count}]`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.counts
                .iter()
                .map(|(k, n)| {
                    serde_json::json!({"user": k.user, "verb": k.verb, "resource": k.resource, "count": n})
                })
                .collect(),
        )
    }

    /// Adds one.
    pub fn incr(&mut self, user: &str, verb: &str, resource: &str) {
        *self
            .counts
            .entry(CounterKey {
                user: user.into(),
                verb: verb.into(),
                resource: resource.into(),
            })
            .or_insert(0) += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_rates() {
        let mut s = FaultState::default();
        s.faults.error_rate.insert("get".into(), 0.5);
        let fails: Vec<bool> = (0..4).map(|_| s.decide("u", "get", "pods").error).collect();
        assert_eq!(fails, vec![false, true, false, true]);
        assert!(!s.decide("u", "list", "pods").error);
        s.faults.only_users = vec!["other".into()];
        assert!(!s.decide("u", "get", "pods").error);
    }

    #[test]
    fn counters_filter() {
        let mut c = Counters::default();
        c.incr("a", "patch", "services");
        c.incr("a", "get", "services");
        c.incr("b", "create", "pods");
        assert_eq!(c.writes_by("a"), 1);
        assert_eq!(c.count(None, None, Some("services")), 2);
        let before = c.clone();
        c.incr("a", "get", "services");
        assert_eq!(c.since(&before).count(None, None, None), 1);
    }
}
