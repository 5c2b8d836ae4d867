//! How many starts each client may have in flight at once, and how many it may begin per
//! minute: a portal that loops, or a stolen token, cannot have the API create objects faster
//! than the administrator allows. The decision is a pure function of a client's budget and a
//! time in milliseconds; [`StartLimits`] keeps the budgets (per replica) and the clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The length of the rate window.
pub const WINDOW_MS: u64 = 60_000;

/// One client's use of its budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    pub in_flight: usize,
    /// When the current minute began.
    pub window_start_ms: u64,
    /// Starts begun in it.
    pub begun: u32,
}

/// Whether one more start may begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Yes; the budget after it.
    Go(Budget),
    No(Refused),
}

/// Why a start may not begin now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max` starts of this client are still in flight.
    TooMany { max: usize },
    /// `max` starts this minute already; the window turns in `retry_after` seconds.
    TooFast { max: u32, retry_after: u64 },
}

/// Decides whether a start may begin at `now_ms`.
pub fn admit(budget: Budget, now_ms: u64, max_in_flight: usize, per_minute: u32) -> Admission {
    if budget.in_flight >= max_in_flight {
        return Admission::No(Refused::TooMany { max: max_in_flight });
    }
    let elapsed = now_ms.saturating_sub(budget.window_start_ms);
    let (window_start_ms, begun) = if elapsed >= WINDOW_MS {
        (now_ms, 0)
    } else {
        (budget.window_start_ms, budget.begun)
    };
    if begun >= per_minute {
        let left = WINDOW_MS - now_ms.saturating_sub(window_start_ms);
        return Admission::No(Refused::TooFast {
            max: per_minute,
            retry_after: left.div_ceil(1000).max(1),
        });
    }
    Admission::Go(Budget {
        in_flight: budget.in_flight + 1,
        window_start_ms,
        begun: begun + 1,
    })
}

/// The budgets of every client on this replica.
#[derive(Debug, Clone)]
pub struct StartLimits {
    budgets: Arc<Mutex<HashMap<String, Budget>>>,
    epoch: Instant,
    max_in_flight: usize,
    per_minute: u32,
}

/// A start in flight; its slot is given back when dropped (the start ended, however).
#[derive(Debug)]
pub struct Permit {
    budgets: Arc<Mutex<HashMap<String, Budget>>>,
    client: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut budgets = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = budgets.get_mut(&self.client) {
            b.in_flight = b.in_flight.saturating_sub(1);
        }
    }
}

impl StartLimits {
    pub fn new(max_in_flight: usize, per_minute: u32) -> Self {
        Self {
            budgets: Arc::new(Mutex::new(HashMap::new())),
            epoch: Instant::now(),
            max_in_flight,
            per_minute,
        }
    }

    /// A permit for one start of `client`, or why not.
    pub fn try_begin(&self, client: &str) -> Result<Permit, Refused> {
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut budgets = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        let budget = budgets.get(client).copied().unwrap_or(Budget {
            in_flight: 0,
            window_start_ms: now_ms,
            begun: 0,
        });
        match admit(budget, now_ms, self.max_in_flight, self.per_minute) {
            Admission::Go(next) => {
                budgets.insert(client.to_string(), next);
                Ok(Permit {
                    budgets: self.budgets.clone(),
                    client: client.to_string(),
                })
            }
            Admission::No(refused) => Err(refused),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(in_flight: usize, start: u64, begun: u32) -> Budget {
        Budget {
            in_flight,
            window_start_ms: start,
            begun,
        }
    }

    #[test]
    fn starts_in_flight_are_capped() {
        assert_eq!(
            admit(at(2, 0, 0), 10, 2, 100),
            Admission::No(Refused::TooMany { max: 2 })
        );
        assert_eq!(admit(at(1, 0, 0), 10, 2, 100), Admission::Go(at(2, 0, 1)));
    }

    #[test]
    fn starts_per_minute_are_capped_and_the_window_turns() {
        assert_eq!(
            admit(at(0, 1_000, 3), 1_500, 10, 3),
            Admission::No(Refused::TooFast {
                max: 3,
                retry_after: 60
            })
        );
        assert_eq!(
            admit(at(0, 1_000, 3), 60_500, 10, 3),
            Admission::No(Refused::TooFast {
                max: 3,
                retry_after: 1
            })
        );
        // A new window begins a minute after the last one did.
        assert_eq!(
            admit(at(0, 1_000, 3), 61_000, 10, 3),
            Admission::Go(at(1, 61_000, 1))
        );
        assert_eq!(
            admit(at(0, 1_000, 2), 2_000, 10, 3),
            Admission::Go(at(1, 1_000, 3))
        );
    }

    #[test]
    fn a_permit_gives_its_slot_back() {
        let limits = StartLimits::new(1, 100);
        let first = limits.try_begin("portal").unwrap();
        assert!(matches!(
            limits.try_begin("portal"),
            Err(Refused::TooMany { max: 1 })
        ));
        // Clients have budgets of their own.
        let other = limits.try_begin("hub").unwrap();
        drop(first);
        assert!(limits.try_begin("portal").is_ok());
        drop(other);
    }
}
