//! The process's log filter, changeable at run time (`GET/PUT /api/logs/level`): a default
//! level plus per-target levels, applied through `tracing_subscriber`'s reload layer.
//!
//! `portico serve` registers the reload handle of the subscriber it installs; when none is
//! registered (another subscriber owns the process), the endpoints say so.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use tracing_subscriber::reload;
use tracing_subscriber::EnvFilter;

/// A default level and per-target levels, e.g. `info` and `portico::service_api: debug`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLevels {
    pub level: String,
    #[serde(default)]
    pub targets: BTreeMap<String, String>,
}

/// A change: a new default level and/or a new set of per-target levels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogChange {
    pub level: Option<String>,
    /// Replaces every per-target level; `{}` clears them.
    pub targets: Option<BTreeMap<String, String>>,
}

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

fn is_target(t: &str) -> bool {
    !t.is_empty()
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '-')
}

impl LogLevels {
    /// Splits a filter such as `info,portico::server=debug` (directives it cannot show as a
    /// target/level pair are kept whole under their text).
    pub fn parse(filter: &str) -> Self {
        let mut out = LogLevels {
            level: "info".into(),
            targets: BTreeMap::new(),
        };
        for part in filter.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.rsplit_once('=') {
                Some((target, level)) => {
                    out.targets.insert(target.to_string(), level.to_string());
                }
                None => out.level = part.to_string(),
            }
        }
        out
    }

    /// The filter text.
    pub fn filter(&self) -> String {
        let mut parts = vec![self.level.clone()];
        parts.extend(self.targets.iter().map(|(t, l)| format!("{t}={l}")));
        parts.join(",")
    }

    /// These levels with `change` applied, checked.
    pub fn apply(&self, change: LogChange) -> Result<Self, String> {
        let mut next = self.clone();
        if let Some(level) = change.level {
            next.level = level.to_ascii_lowercase();
        }
        if let Some(targets) = change.targets {
            next.targets = targets
                .into_iter()
                .map(|(t, l)| (t, l.to_ascii_lowercase()))
                .collect();
        }
        if !LEVELS.contains(&next.level.as_str()) {
            return Err(format!(
                "level {:?} is not one of {}",
                next.level,
                LEVELS.join(", ")
            ));
        }
        for (target, level) in &next.targets {
            if !is_target(target) {
                return Err(format!(
                    "target {target:?} is not a module path such as portico::service_api"
                ));
            }
            if !LEVELS.contains(&level.as_str()) {
                return Err(format!(
                    "level {level:?} of {target} is not one of {}",
                    LEVELS.join(", ")
                ));
            }
        }
        Ok(next)
    }
}

type Apply = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// The live log filter.
#[derive(Clone)]
pub struct LogControl {
    current: Arc<Mutex<LogLevels>>,
    apply: Arc<Apply>,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogControl")
            .field("current", &self.levels())
            .finish()
    }
}

static GLOBAL: OnceLock<LogControl> = OnceLock::new();

impl LogControl {
    /// Wraps a reload handle of the installed subscriber, whose filter is now `initial`.
    pub fn new<S: 'static>(handle: reload::Handle<EnvFilter, S>, initial: &str) -> Self {
        Self {
            current: Arc::new(Mutex::new(LogLevels::parse(initial))),
            apply: Arc::new(Box::new(move |filter| {
                handle.reload(filter).map_err(|e| e.to_string())
            })),
        }
    }

    /// Makes this the process's log control (the first registration wins).
    pub fn register_global(self) {
        let _ = GLOBAL.set(self);
    }

    /// The process's log control, when `portico serve` (or a test) registered one.
    pub fn global() -> Option<LogControl> {
        GLOBAL.get().cloned()
    }

    pub fn levels(&self) -> LogLevels {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Applies a change; returns the new levels.
    pub fn change(&self, change: LogChange) -> Result<LogLevels, String> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let next = current.apply(change)?;
        let filter = EnvFilter::try_new(next.filter()).map_err(|e| e.to_string())?;
        (self.apply)(filter)?;
        tracing::info!(filter = %next.filter(), "log filter changed");
        *current = next.clone();
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_apply_and_print() {
        let l = LogLevels::parse("info,portico::server=debug");
        assert_eq!(l.level, "info");
        assert_eq!(l.targets["portico::server"], "debug");
        assert_eq!(l.filter(), "info,portico::server=debug");
        let next = l
            .apply(LogChange {
                level: Some("WARN".into()),
                targets: None,
            })
            .unwrap();
        assert_eq!(next.filter(), "warn,portico::server=debug");
        let cleared = next
            .apply(LogChange {
                level: None,
                targets: Some(BTreeMap::new()),
            })
            .unwrap();
        assert_eq!(cleared.filter(), "warn");
        assert!(l
            .apply(LogChange {
                level: Some("loud".into()),
                targets: None
            })
            .is_err());
        let bad_target = LogChange {
            level: None,
            targets: Some([("a b".to_string(), "info".to_string())].into()),
        };
        assert!(l.apply(bad_target).is_err());
    }
}
