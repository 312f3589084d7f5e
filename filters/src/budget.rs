//! Spend budgets on one node, in integer micro-dollars.
//!
//! Before a call, its worst-case cost is *reserved*; afterwards the
//! reservation is replaced by the real cost. A request is refused when spent +
//! reserved + its worst case would pass the hard limit, so concurrent requests
//! can overshoot only by what they used beyond their own reservations. Periods
//! (day, week, month) start on calendar boundaries in a configured time zone.

use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::quota::{Scope, ScopeKind};

/// How often a budget resets (`sluice_config::BudgetPeriod`).
pub use sluice_config::BudgetPeriod as Period;

/// Start of the period containing `now`, in unix seconds (`i64::MIN` for `Total`).
pub fn period_start(period: Period, now: Timestamp, tz: &TimeZone) -> i64 {
    let zoned = now.to_zoned(tz.clone());
    let day_start = zoned.start_of_day().ok();
    let start = match period {
        Period::Total => return i64::MIN,
        Period::Daily => day_start,
        Period::Weekly => day_start.and_then(|d| {
            let back = d.weekday().since(Weekday::Monday);
            d.checked_sub(i64::from(back).days()).ok()
        }),
        Period::Monthly => day_start.and_then(|d| d.first_of_month().ok()),
    };
    start.map_or(i64::MIN, |z| z.timestamp().as_second())
}

/// A budget on one key or tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetSpec {
    /// Hard limit: refuse beyond it, and cut running streams that cross it.
    pub limit_micros: i64,
    /// Soft limit: alert, and downgrade if configured.
    pub soft_limit_micros: Option<i64>,
    /// How often it resets.
    pub period: Period,
}

impl From<&sluice_config::Budget> for BudgetSpec {
    /// The limits of a configured budget (its `downgrade_to` is the access
    /// policy's business, not the reservation's).
    fn from(budget: &sluice_config::Budget) -> Self {
        BudgetSpec {
            limit_micros: budget.limit_micros,
            soft_limit_micros: budget.soft_limit_micros,
            period: budget.period,
        }
    }
}

/// Why a budget refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("You exceeded your current quota: the {scope_kind} budget of ${:.2} for this period is spent.", *limit_micros as f64 / 1e6)]
pub struct BudgetRejection {
    /// Whether the key's or the tenant's budget refused (or, for a stream
    /// cut mid-answer, the request's own running cost).
    pub scope_kind: ScopeKind,
    /// The hard limit.
    pub limit_micros: i64,
    /// Spent so far this period.
    pub spent_micros: i64,
}

#[derive(Debug)]
struct BudgetState {
    spec: BudgetSpec,
    period_start: i64,
    spent_micros: i64,
    reserved_micros: i64,
}

impl BudgetState {
    fn roll(&mut self, period_start: i64) {
        if period_start > self.period_start {
            self.period_start = period_start;
            self.spent_micros = 0;
        }
    }
}

/// Budget state of this node.
pub struct LocalBudgets {
    tz: TimeZone,
    scopes: RwLock<HashMap<Scope, Arc<Mutex<BudgetState>>>>,
}

/// A reservation held by a running request; settle it with the real cost.
/// Dropped unsettled, the whole reservation counts as spent (the safe side).
pub struct BudgetReservation {
    held: Vec<(Arc<Mutex<BudgetState>>, i64)>,
    settled: bool,
    /// Whether a soft limit was crossed by this reservation.
    pub soft_limit_crossed: bool,
}

impl BudgetReservation {
    /// Replaces the reservation with the real cost.
    pub fn settle(mut self, cost_micros: i64) {
        for (state, reserved) in &self.held {
            if let Ok(mut s) = state.lock() {
                s.reserved_micros -= reserved;
                s.spent_micros += cost_micros;
            }
        }
        self.settled = true;
    }

    /// Whether `running_cost_micros` for this request would take any of its
    /// budgets past the hard limit: a stream crossing it is cut.
    pub fn would_exceed(&self, running_cost_micros: i64) -> bool {
        self.held.iter().any(|(state, reserved)| {
            state.lock().is_ok_and(|s| {
                let others = s.spent_micros + s.reserved_micros - reserved;
                others + running_cost_micros > s.spec.limit_micros
            })
        })
    }
}

impl Drop for BudgetReservation {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        for (state, reserved) in &self.held {
            if let Ok(mut s) = state.lock() {
                s.reserved_micros -= reserved;
                s.spent_micros += reserved;
            }
        }
    }
}

impl LocalBudgets {
    /// Budgets whose periods follow `tz`.
    pub fn new(tz: TimeZone) -> Self {
        LocalBudgets {
            tz,
            scopes: RwLock::new(HashMap::new()),
        }
    }

    fn state(&self, scope: &Scope, spec: &BudgetSpec, now: Timestamp) -> Arc<Mutex<BudgetState>> {
        if let Ok(map) = self.scopes.read() {
            if let Some(s) = map.get(scope) {
                return s.clone();
            }
        }
        let fresh = Arc::new(Mutex::new(BudgetState {
            spec: spec.clone(),
            period_start: period_start(spec.period, now, &self.tz),
            spent_micros: 0,
            reserved_micros: 0,
        }));
        match self.scopes.write() {
            Ok(mut map) => map.entry(scope.clone()).or_insert(fresh).clone(),
            Err(_) => fresh,
        }
    }

    /// Sets what `scope` has already spent in the current period (at start,
    /// from the ledger, the durable source of truth).
    pub fn seed(&self, scope: &Scope, spec: &BudgetSpec, spent_micros: i64, now: Timestamp) {
        let state = self.state(scope, spec, now);
        let mut guard = state.lock();
        if let Ok(s) = guard.as_mut() {
            s.spent_micros = spent_micros;
        }
    }

    /// Reserves `worst_case_micros` on every budget, or refuses.
    pub fn reserve(
        &self,
        scopes: &[(Scope, BudgetSpec)],
        worst_case_micros: i64,
        now: Timestamp,
    ) -> Result<BudgetReservation, BudgetRejection> {
        let mut reservation = BudgetReservation {
            held: Vec::with_capacity(scopes.len()),
            settled: false,
            soft_limit_crossed: false,
        };
        for (scope, spec) in scopes {
            let state = self.state(scope, spec, now);
            let Ok(mut s) = state.lock() else { continue };
            s.spec = spec.clone();
            s.roll(period_start(spec.period, now, &self.tz));
            let after = s.spent_micros + s.reserved_micros + worst_case_micros;
            if after > spec.limit_micros {
                let rejection = BudgetRejection {
                    scope_kind: scope.kind(),
                    limit_micros: spec.limit_micros,
                    spent_micros: s.spent_micros,
                };
                drop(s);
                // Earlier scopes' reservations are released, not spent.
                reservation.settle_released();
                return Err(rejection);
            }
            if spec.soft_limit_micros.is_some_and(|soft| after > soft) {
                reservation.soft_limit_crossed = true;
            }
            s.reserved_micros += worst_case_micros;
            drop(s);
            reservation.held.push((state, worst_case_micros));
        }
        Ok(reservation)
    }

    /// The zone whose calendar bounds the periods.
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// `(spent, reserved)` for `scope` in its current period.
    pub fn usage(&self, scope: &Scope) -> Option<(i64, i64)> {
        let map = self.scopes.read().ok()?;
        let s = map.get(scope)?.lock().ok()?;
        Some((s.spent_micros, s.reserved_micros))
    }
}

impl BudgetReservation {
    fn settle_released(&mut self) {
        for (state, reserved) in &self.held {
            if let Ok(mut s) = state.lock() {
                s.reserved_micros -= reserved;
            }
        }
        self.settled = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(limit: i64) -> BudgetSpec {
        BudgetSpec {
            limit_micros: limit,
            soft_limit_micros: Some(limit / 2),
            period: Period::Monthly,
        }
    }

    fn now() -> Timestamp {
        "2026-11-21T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn periods_start_on_calendar_boundaries_in_the_time_zone() {
        let tz = TimeZone::get("America/New_York").unwrap();
        let t: Timestamp = "2026-11-18T03:00:00Z".parse().unwrap(); // Tue 22:00 Nov 17 in New York
        let day: Timestamp = "2026-11-17T05:00:00Z".parse().unwrap();
        let week: Timestamp = "2026-11-16T05:00:00Z".parse().unwrap();
        let month: Timestamp = "2026-11-01T04:00:00Z".parse().unwrap(); // EDT until Nov 1 02:00
        assert_eq!(period_start(Period::Daily, t, &tz), day.as_second());
        assert_eq!(period_start(Period::Weekly, t, &tz), week.as_second());
        assert_eq!(period_start(Period::Monthly, t, &tz), month.as_second());
        assert_eq!(period_start(Period::Total, t, &tz), i64::MIN);
    }

    #[test]
    fn reservations_hold_the_line_and_settle_to_real_cost() {
        let b = LocalBudgets::new(TimeZone::UTC);
        let scopes = vec![(Scope::Key("k".into()), spec(1_000))];
        let r1 = b.reserve(&scopes, 600, now()).unwrap();
        assert!(r1.soft_limit_crossed);
        assert!(b.reserve(&scopes, 600, now()).is_err(), "600 + 600 > 1000");
        r1.settle(100);
        assert_eq!(b.usage(&scopes[0].0), Some((100, 0)));
        let r2 = b.reserve(&scopes, 600, now()).unwrap();
        drop(r2); // unsettled: counts as spent
        assert_eq!(b.usage(&scopes[0].0), Some((700, 0)));
        let err = b.reserve(&scopes, 301, now()).err().unwrap();
        assert_eq!(err.spent_micros, 700);
        assert_eq!(err.scope_kind, ScopeKind::Key);
        assert_eq!(
            err.to_string(),
            "You exceeded your current quota: the key budget of $0.00 for this period is spent."
        );
    }

    #[test]
    fn tenant_refusal_releases_the_key_reservation() {
        let b = LocalBudgets::new(TimeZone::UTC);
        let scopes = vec![
            (Scope::Key("k".into()), spec(10_000)),
            (Scope::Tenant("t".into()), spec(100)),
        ];
        assert!(b.reserve(&scopes, 500, now()).is_err());
        assert_eq!(b.usage(&Scope::Key("k".into())), Some((0, 0)));
    }

    #[test]
    fn a_new_period_starts_from_zero() {
        let b = LocalBudgets::new(TimeZone::UTC);
        let scopes = vec![(Scope::Tenant("t".into()), spec(1_000))];
        b.reserve(&scopes, 900, now()).unwrap().settle(900);
        assert!(b.reserve(&scopes, 200, now()).is_err());
        let next_month: Timestamp = "2026-12-01T00:00:01Z".parse().unwrap();
        assert!(b.reserve(&scopes, 200, next_month).is_ok());
    }

    #[test]
    fn running_cost_check_for_stream_cuts() {
        let b = LocalBudgets::new(TimeZone::UTC);
        let scopes = vec![(Scope::Key("k".into()), spec(1_000))];
        b.reserve(&scopes, 0, now()).unwrap().settle(800);
        let r = b.reserve(&scopes, 150, now()).unwrap();
        assert!(!r.would_exceed(150));
        assert!(r.would_exceed(201));
    }

    #[test]
    fn concurrent_reservations_never_overshoot() {
        let b = Arc::new(LocalBudgets::new(TimeZone::UTC));
        let scopes = Arc::new(vec![(Scope::Tenant("t".into()), spec(10_000))]);
        let handles: Vec<_> = (0..200)
            .map(|_| {
                let (b, scopes) = (b.clone(), scopes.clone());
                std::thread::spawn(move || {
                    if let Ok(r) = b.reserve(&scopes, 100, now()) {
                        r.settle(100);
                        1
                    } else {
                        0
                    }
                })
            })
            .collect();
        let admitted: i32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(admitted, 100);
        assert_eq!(b.usage(&scopes[0].0), Some((10_000, 0)));
    }
}
