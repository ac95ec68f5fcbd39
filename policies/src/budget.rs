//! Hard dollar budgets.
//!
//! A cap is never broken by a decision:
//! - `max_per_hour`: the hourly price of every node the app (or fleet) runs, after the decision,
//!   is at most the cap.
//! - `max_per_month` (calendar month, UTC): month-to-date spend plus the hourly burn after the
//!   decision for the *horizon* (one hour, or less when the month ends sooner) is at most the cap.
//!   As the month's money runs out, the room for new nodes shrinks to nothing; spend already
//!   committed is the orchestrator's to wind down.

use std::fmt;

use chrono::{Datelike, Duration as ChronoDuration, NaiveDate, TimeZone};
use fleet_core::spec::Budget;
use fleet_core::{Money, Time};
use serde::Serialize;

/// What is being spent now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Spend {
    /// Sum of the hourly prices of running (and launching) nodes.
    pub burn_per_hour: Money,
    /// Spent since the start of the calendar month (UTC).
    pub month_to_date: Money,
}

/// Which cap limited a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "scope", rename_all = "kebab-case")]
pub enum BudgetCap {
    AppHourly { app: String, cap: Money },
    AppMonthly { app: String, cap: Money },
    FleetHourly { cap: Money },
    FleetMonthly { cap: Money },
}

impl fmt::Display for BudgetCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BudgetCap::AppHourly { app, cap } => write!(f, "app {app} budget {cap}/hour"),
            BudgetCap::AppMonthly { app, cap } => write!(f, "app {app} budget {cap}/month"),
            BudgetCap::FleetHourly { cap } => write!(f, "fleet budget {cap}/hour"),
            BudgetCap::FleetMonthly { cap } => write!(f, "fleet budget {cap}/month"),
        }
    }
}

/// How much hourly burn may still be added, and the cap that sets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Headroom {
    /// `None`: no cap applies.
    pub per_hour: Option<Money>,
    pub bound_by: Option<BudgetCap>,
}

impl Headroom {
    pub const UNLIMITED: Headroom = Headroom { per_hour: None, bound_by: None };

    /// The tighter of two headrooms.
    pub fn min(self, other: Headroom) -> Headroom {
        match (self.per_hour, other.per_hour) {
            (None, _) => other,
            (_, None) => self,
            (Some(a), Some(b)) => {
                if b < a {
                    other
                } else {
                    self
                }
            }
        }
    }

    pub fn allows(&self, price_per_hour: Money) -> bool {
        self.per_hour.is_none_or(|h| price_per_hour <= h)
    }

    /// Takes `amount` of the room (after [`Headroom::allows`] said yes).
    pub fn consume(&mut self, amount: Money) {
        if let Some(h) = &mut self.per_hour {
            *h -= amount;
        }
    }
}

/// The first instant of the next calendar month (UTC).
pub fn month_end(now: Time) -> Time {
    let (y, m) = if now.month() == 12 { (now.year() + 1, 1) } else { (now.year(), now.month() + 1) };
    let d = NaiveDate::from_ymd_opt(y, m, 1).expect("valid date").and_hms_opt(0, 0, 0).expect("valid time");
    chrono::Utc.from_utc_datetime(&d)
}

/// The monthly-cap horizon: one hour, or the time left in the month if less.
pub fn horizon_millis(now: Time) -> i64 {
    (month_end(now) - now).num_milliseconds().clamp(0, ChronoDuration::hours(1).num_milliseconds())
}

/// Room for more hourly burn under `budget`, given `spend`. `app` names the app for an app
/// budget, `None` for the fleet's.
pub fn headroom(budget: &Budget, spend: &Spend, now: Time, app: Option<&str>) -> Headroom {
    let mut h = Headroom::UNLIMITED;
    if let Some(cap) = budget.max_per_hour {
        let room = (cap - spend.burn_per_hour).max(Money::ZERO);
        let bound_by = match app {
            Some(a) => BudgetCap::AppHourly { app: a.to_string(), cap },
            None => BudgetCap::FleetHourly { cap },
        };
        h = h.min(Headroom { per_hour: Some(room), bound_by: Some(bound_by) });
    }
    if let Some(cap) = budget.max_per_month {
        let ms = horizon_millis(now);
        let left = (cap - spend.month_to_date).max(Money::ZERO);
        // Largest hourly total T with T × horizon ≤ left, i.e. T = floor(left × 3.6e6 / ms).
        let room = if ms == 0 {
            None // the month ends now: nothing more is charged to it
        } else {
            let total = i128::from(left.micros()) * 3_600_000 / i128::from(ms);
            let total = Money::from_micros(i64::try_from(total).unwrap_or(i64::MAX));
            Some((total - spend.burn_per_hour).max(Money::ZERO))
        };
        let bound_by = match app {
            Some(a) => BudgetCap::AppMonthly { app: a.to_string(), cap },
            None => BudgetCap::FleetMonthly { cap },
        };
        if room.is_some() {
            h = h.min(Headroom { per_hour: room, bound_by: Some(bound_by) });
        }
    }
    h
}

/// How long before a monthly cap's money runs out, at the current burn, the fleet winds down:
/// long enough for runners to drain and nodes to be released. Shorter than the hour new
/// launches must fit in, so a fleet that just used its room does not wind down at once.
pub const WIND_DOWN_NOTICE_MS: i64 = 10 * 60 * 1000;

/// The monthly cap whose money runs out within [`WIND_DOWN_NOTICE_MS`] at `spend`'s burn
/// (month-to-date plus burn × that above it), if any: the caller winds spending down.
pub fn month_exhausted(budget: &Budget, spend: &Spend, now: Time, app: Option<&str>) -> Option<BudgetCap> {
    let cap = budget.max_per_month?;
    let notice = horizon_millis(now).min(WIND_DOWN_NOTICE_MS);
    let committed = i128::from(spend.burn_per_hour.micros()) * i128::from(notice) / 3_600_000;
    (i128::from(spend.month_to_date.micros()) + committed > i128::from(cap.micros())).then(|| match app {
        Some(a) => BudgetCap::AppMonthly { app: a.to_string(), cap },
        None => BudgetCap::FleetMonthly { cap },
    })
}

/// Is `spend` plus `added` hourly burn within `budget` (the invariant every decision keeps)?
pub fn within(budget: &Budget, spend: &Spend, added: Money, now: Time) -> bool {
    let burn = spend.burn_per_hour + added;
    let hourly_ok = budget.max_per_hour.is_none_or(|cap| burn <= cap);
    let monthly_ok = budget.max_per_month.is_none_or(|cap| {
        let committed = i128::from(burn.micros()) * i128::from(horizon_millis(now)) / 3_600_000;
        i128::from(spend.month_to_date.micros()) + committed <= i128::from(cap.micros())
    });
    hourly_ok && monthly_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Time {
        chrono::Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn usd(s: &str) -> Money {
        Money::parse_decimal(s).unwrap()
    }

    #[test]
    fn month_end_and_horizon() {
        assert_eq!(month_end(at(2026, 12, 31, 23, 30)), at(2027, 1, 1, 0, 0));
        assert_eq!(month_end(at(2026, 2, 10, 0, 0)), at(2026, 3, 1, 0, 0));
        assert_eq!(horizon_millis(at(2026, 11, 25, 6, 0)), 3_600_000);
        assert_eq!(horizon_millis(at(2026, 11, 30, 23, 30)), 1_800_000);
    }

    #[test]
    fn hourly_cap() {
        let b = Budget { max_per_hour: Some(usd("100")), max_per_month: None };
        let s = Spend { burn_per_hour: usd("60"), month_to_date: Money::ZERO };
        let h = headroom(&b, &s, at(2026, 11, 25, 6, 0), Some("llm"));
        assert_eq!(h.per_hour, Some(usd("40")));
        assert_eq!(h.bound_by.unwrap().to_string(), "app llm budget $100.00/hour");
        assert!(within(&b, &s, usd("40"), at(2026, 11, 25, 6, 0)));
        assert!(!within(&b, &s, usd("40.000001"), at(2026, 11, 25, 6, 0)));
    }

    #[test]
    fn monthly_cap_binds_when_the_month_money_runs_low() {
        let b = Budget { max_per_hour: Some(usd("1000")), max_per_month: Some(usd("10000")) };
        let s = Spend { burn_per_hour: usd("50"), month_to_date: usd("9900") };
        let now = at(2026, 11, 20, 0, 0);
        let h = headroom(&b, &s, now, None);
        assert_eq!(h.per_hour, Some(usd("50")));
        assert!(matches!(h.bound_by, Some(BudgetCap::FleetMonthly { .. })));
        assert!(within(&b, &s, usd("50"), now) && !within(&b, &s, usd("50.01"), now));
        // Half an hour before month end, the same money covers twice the burn.
        let late = at(2026, 11, 30, 23, 30);
        assert_eq!(headroom(&b, &s, late, None).per_hour, Some(usd("150")));
        // Already over: no room, never negative.
        let over = Spend { burn_per_hour: usd("50"), month_to_date: usd("10001") };
        assert_eq!(headroom(&b, &over, now, None).per_hour, Some(Money::ZERO));
    }

    #[test]
    fn no_caps_is_unlimited() {
        let h = headroom(&Budget::default(), &Spend::default(), at(2026, 11, 25, 6, 0), None);
        assert_eq!(h, Headroom::UNLIMITED);
        assert!(h.allows(Money::from_dollars(1_000_000)));
    }
}
