//! fal-style autoscaling of an app's runners.
//!
//! - demand = queued + in-flight requests; `needed` = ⌈demand / max_multiplexing⌉ runners;
//! - buffer = max(concurrency_buffer, ⌈needed × concurrency_buffer_perc / 100⌉);
//! - desired = min(max_concurrency, max(min_concurrency, needed + buffer)). With no minimum and no
//!   buffer, no demand means zero runners: scale to zero.
//!
//! Scale-up: runners below `min_concurrency` start at once; the rest only once demand has wanted
//! them for `scaling_delay` (the caller keeps `pending_since` between decisions). Scale-down: only
//! runners that are ready, serve nothing, and have been idle for `keep_alive` stop (runners beyond
//! `max_concurrency` need not wait out keep-alive); first those whose node costs most per runner
//! it hosts (so the dearest nodes per used slot empty and go), then the longest idle.
//!
//! With `keep_alive = "auto"` ([`KeepAlive::Auto`]) "idle long enough" is a cost decision instead
//! of a fixed time. Re-creating a runner costs its slot price over `recreate` (cold start:
//! provision + boot + model load, all billed, plus the minimum billing of a new node); keeping it
//! idle costs the same slot price over the gap until demand needs it again. An excess runner
//! whose stop would leave `n` runners is needed again when the app's desired runners reach
//! `n + 1`; that gap is learned from the app's recent demand ([`DemandHistory`]: desired runners,
//! pass by pass): the mean time between the episodes in which demand reached `n + 1`, or the
//! time since it last did once that is longer. The runner stays while `gap < recreate` and stops
//! otherwise — at once when demand never reached that level in the window. Both sides are priced
//! per slot, so the rule compares times (a ski-rental decision with the gap learned).

use std::time::Duration;

use fleet_core::spec::{KeepAlive, ScalingSpec};
use fleet_core::{Price, RunnerId, Time};
use serde::Serialize;

/// How many runners demand calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ScaleTarget {
    /// Requests queued or in flight.
    pub demand: u32,
    pub needed: u32,
    pub buffer: u32,
    pub desired: u32,
}

pub fn target(spec: &ScalingSpec, demand: u32) -> ScaleTarget {
    let mux = spec.max_multiplexing.max(1);
    let needed = demand.div_ceil(mux);
    let perc = (u64::from(needed) * u64::from(spec.concurrency_buffer_perc)).div_ceil(100);
    let buffer = spec.concurrency_buffer.max(u32::try_from(perc).unwrap_or(u32::MAX));
    let desired = spec.min_concurrency.max(needed.saturating_add(buffer)).min(spec.max_concurrency);
    ScaleTarget { demand, needed, buffer, desired }
}

/// A runner as the autoscaler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerInfo {
    pub id: RunnerId,
    /// False while starting (booting, loading the model).
    pub ready: bool,
    pub in_flight: u32,
    /// When it last became idle; `None` while it serves requests.
    pub idle_since: Option<Time>,
    /// What its node costs per hour for each runner on it (node price over the runners it
    /// hosts): scale-down empties the dearest nodes per used slot first. [`crate::plan::plan`]
    /// sets it from the nodes it is given; callers of [`decide`] alone set it themselves.
    pub slot_price: Price,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScaleDecision {
    pub target: ScaleTarget,
    /// Runners to start.
    pub start: u32,
    /// Runners to stop, in the order chosen.
    pub stop: Vec<RunnerId>,
    /// Since when demand has wanted more runners than run (keep it for the next decision).
    pub pending_since: Option<Time>,
}

/// What `keep_alive = "auto"` weighs, kept by the caller: the app's desired runners at each
/// recent decision (oldest first), and what re-creating a runner costs in time billed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DemandHistory {
    pub samples: Vec<(Time, u32)>,
    pub recreate: Duration,
}

/// How far back a caller keeps the history: ten minutes, or three re-creations if longer.
pub fn history_window(recreate: Duration) -> Duration {
    Duration::from_secs(600).max(recreate.saturating_mul(3))
}

impl DemandHistory {
    /// The expected time until demand next wants `level` runners: the mean time between the
    /// starts of the episodes in which it did within the history (the history's span for a single
    /// one), or the time since it last did once that is longer; `None` when it never did.
    pub fn expected_gap(&self, level: u32, now: Time) -> Option<Duration> {
        let mut starts: Vec<Time> = Vec::new();
        let mut last = None;
        let mut above = false;
        for (t, desired) in &self.samples {
            let now_above = *desired >= level;
            if now_above && !above {
                starts.push(*t);
            }
            if now_above {
                last = Some(*t);
            }
            above = now_above;
        }
        let last = last?;
        let span = |a: Time, b: Time| (b - a).to_std().unwrap_or_default();
        let mean = match starts.len() {
            0 | 1 => span(self.samples.first()?.0, now),
            k => span(starts[0], starts[k - 1]) / (k as u32 - 1),
        };
        Some(mean.max(span(last, now)))
    }
}

/// Decides one app's runner changes (with no demand history: see [`decide_with`]).
pub fn decide(
    spec: &ScalingSpec,
    queued: u32,
    in_flight: u32,
    pending_since: Option<Time>,
    runners: &[RunnerInfo],
    now: Time,
) -> ScaleDecision {
    decide_with(spec, queued, in_flight, pending_since, runners, &DemandHistory::default(), now)
}

/// Decides one app's runner changes; `history` is what `keep_alive = "auto"` weighs.
pub fn decide_with(
    spec: &ScalingSpec,
    queued: u32,
    in_flight: u32,
    pending_since: Option<Time>,
    runners: &[RunnerInfo],
    history: &DemandHistory,
    now: Time,
) -> ScaleDecision {
    let t = target(spec, queued.saturating_add(in_flight));
    let current = u32::try_from(runners.len()).unwrap_or(u32::MAX);
    if t.desired > current {
        let immediate = spec.min_concurrency.saturating_sub(current).min(t.desired - current);
        let since = pending_since.unwrap_or(now);
        let waited = (now - since).to_std().unwrap_or_default();
        if waited >= spec.scaling_delay {
            return ScaleDecision { target: t, start: t.desired - current, stop: Vec::new(), pending_since: None };
        }
        return ScaleDecision { target: t, start: immediate, stop: Vec::new(), pending_since: Some(since) };
    }
    let excess = current - t.desired;
    if excess == 0 {
        return ScaleDecision { target: t, start: 0, stop: Vec::new(), pending_since: None };
    }
    let above_max = current.saturating_sub(spec.max_concurrency);
    // Whether an idle runner (idle since `since`) may stop, `remaining` runners staying after it.
    let expired = |since: Time, remaining: u32| match spec.keep_alive {
        KeepAlive::For(t) => {
            now.signed_duration_since(since) >= chrono::Duration::from_std(t).unwrap_or(chrono::Duration::MAX)
        }
        KeepAlive::Auto => history.expected_gap(remaining + 1, now).is_none_or(|gap| gap >= history.recreate),
    };
    let mut idle: Vec<(&RunnerInfo, Time)> = runners
        .iter()
        .filter(|r| r.ready && r.in_flight == 0)
        .filter_map(|r| r.idle_since.map(|s| (r, s)))
        // Within max only runners past keep-alive may stop: sort just those (this runs every
        // decision for every app, and keeps the list short).
        .filter(|(_, s)| above_max > 0 || expired(*s, current.saturating_sub(1)))
        .collect();
    idle.sort_by(|(a, sa), (b, sb)| b.slot_price.cmp(&a.slot_price).then(sa.cmp(sb)).then(a.id.cmp(&b.id)));
    let mut stop = Vec::new();
    for (i, (r, since)) in idle.into_iter().enumerate() {
        if stop.len() as u32 >= excess {
            break;
        }
        // The first `above_max` stops need no keep-alive: those runners should not exist.
        let remaining = current - stop.len() as u32 - 1;
        if (i as u32) < above_max || expired(since, remaining) {
            stop.push(r.id);
        }
    }
    ScaleDecision { target: t, start: 0, stop, pending_since: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use std::time::Duration;

    fn t0() -> Time {
        chrono::Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }

    fn secs(s: i64) -> chrono::Duration {
        chrono::Duration::seconds(s)
    }

    fn spec() -> ScalingSpec {
        ScalingSpec {
            min_concurrency: 1,
            max_concurrency: 10,
            concurrency_buffer: 1,
            concurrency_buffer_perc: 20,
            max_multiplexing: 4,
            keep_alive: KeepAlive::For(Duration::from_secs(300)),
            scaling_delay: Duration::from_secs(30),
        }
    }

    fn idle(id: RunnerId, idle_for: i64, price: &str) -> RunnerInfo {
        RunnerInfo {
            id,
            ready: true,
            in_flight: 0,
            idle_since: Some(t0() - secs(idle_for)),
            slot_price: Price::parse_decimal(price).unwrap(),
        }
    }

    fn busy(id: RunnerId, n: u32) -> RunnerInfo {
        RunnerInfo { id, ready: true, in_flight: n, idle_since: None, slot_price: Price::ZERO }
    }

    #[test]
    fn targets_follow_fal() {
        let s = spec();
        // 40 requests / 4 per runner = 10 needed, buffer max(1, 20% of 10 = 2) = 2, capped at 10.
        assert_eq!(target(&s, 40), ScaleTarget { demand: 40, needed: 10, buffer: 2, desired: 10 });
        assert_eq!(target(&s, 9), ScaleTarget { demand: 9, needed: 3, buffer: 1, desired: 4 });
        // No demand: the buffer (1) beats min_concurrency (1): 1 runner.
        assert_eq!(target(&s, 0).desired, 1);
        // Scale to zero with neither minimum nor buffer.
        let z = ScalingSpec { min_concurrency: 0, concurrency_buffer: 0, concurrency_buffer_perc: 0, ..s.clone() };
        assert_eq!(target(&z, 0).desired, 0);
        assert_eq!(target(&z, 1).desired, 1);
        // The percentage buffer rounds up: 20% of one runner is one more.
        assert_eq!(target(&ScalingSpec { concurrency_buffer_perc: 20, ..z }, 1).desired, 2);
    }

    #[test]
    fn scale_up_waits_for_scaling_delay_except_below_min() {
        let s = spec();
        let d = decide(&s, 20, 0, None, &[], t0());
        // 20/4 = 5 needed + 1 buffer = 6 desired; only the minimum (1) starts now.
        assert_eq!((d.target.desired, d.start, d.pending_since), (6, 1, Some(t0())));
        let d2 = decide(&s, 20, 0, d.pending_since, &[idle(1, 0, "2")], t0() + secs(29));
        assert_eq!((d2.start, d2.pending_since), (0, Some(t0())));
        let d3 = decide(&s, 20, 0, d2.pending_since, &[idle(1, 0, "2")], t0() + secs(30));
        assert_eq!((d3.start, d3.pending_since), (5, None));
    }

    #[test]
    fn scale_down_dearest_slot_first_then_longest_idle_never_busy() {
        let s = ScalingSpec { min_concurrency: 0, concurrency_buffer: 0, concurrency_buffer_perc: 0, ..spec() };
        // 1 busy; 2 idle 10 s dear; 3 idle 900 s at $2 a slot; 4 idle 900 s at $4; 5 idle 1000 s
        // at $1; 6 idle 950 s at $2.
        let runners =
            [busy(1, 2), idle(2, 10, "9"), idle(3, 900, "2"), idle(4, 900, "4"), idle(5, 1000, "1"), idle(6, 950, "2")];
        // Demand 2 (in flight on 1) needs 1 runner: 5 excess; 2 is inside keep-alive.
        let d = decide(&s, 0, 2, None, &runners, t0());
        assert_eq!(d.stop, [4, 6, 3, 5]);
        assert!(!d.stop.contains(&1));
    }

    #[test]
    fn auto_keep_alive_keeps_a_runner_while_recreating_it_costs_more_than_the_expected_gap() {
        let s = ScalingSpec {
            min_concurrency: 0,
            concurrency_buffer: 0,
            concurrency_buffer_perc: 0,
            keep_alive: KeepAlive::Auto,
            ..spec()
        };
        // Three idle runners (one idle for an hour), no demand now: all three are excess.
        let runners = [idle(1, 3600, "2"), idle(2, 5, "2"), idle(3, 5, "2")];
        let recreate = Duration::from_secs(180); // cold start + minimum billing
        // Desired runners every 10 s over the last ten minutes: `level` runners for 10 s every
        // `every` seconds (the last burst `ago` seconds ago), none otherwise.
        let history = |level: u32, every: i64, ago: i64| DemandHistory {
            samples: (0..60)
                .map(|i| {
                    let t = -600 + i * 10;
                    let burst = (t + ago) % every == 0 && t <= -ago;
                    (t0() + secs(t), if burst { level } else { 0 })
                })
                .collect(),
            recreate,
        };
        let stops = |h: &DemandHistory| decide_with(&s, 0, 0, None, &runners, h, t0()).stop.len();
        // Bursts of 3 runners every 60 s, the last 10 s ago: all three will be needed within a
        // minute, well before a re-creation would pay: none stops.
        assert_eq!(stops(&history(3, 60, 10)), 0);
        // Bursts of 1 runner every 60 s: one is kept, the two others never wanted go.
        assert_eq!(stops(&history(1, 60, 10)), 2);
        // Bursts of 3 every 300 s: each waits longer than re-creating costs: all go.
        assert_eq!(stops(&history(3, 300, 10)), 3);
        // Bursts every 60 s that stopped 200 s ago: the silence is the gap now: all go.
        assert_eq!(stops(&history(3, 60, 200)), 3);
        // No history: nothing to wait for.
        assert_eq!(stops(&DemandHistory { samples: vec![], recreate }), 3);
        // The fixed keep-alive ignores the history: only the runner idle past 300 s goes.
        let fixed = ScalingSpec { keep_alive: KeepAlive::For(Duration::from_secs(300)), ..s };
        assert_eq!(decide_with(&fixed, 0, 0, None, &runners, &history(3, 60, 10), t0()).stop, [1]);
    }

    #[test]
    fn above_max_need_not_wait_for_keep_alive() {
        let s = ScalingSpec { max_concurrency: 1, min_concurrency: 0, ..spec() };
        let d = decide(&s, 0, 0, None, &[idle(1, 1, "1"), idle(2, 2, "1")], t0());
        assert_eq!(d.stop, [2]);
    }

    proptest! {
        #[test]
        fn invariants(
            min in 0u32..5, extra in 0u32..10, buffer in 0u32..4, perc in 0u32..100, mux in 1u32..8,
            queued in 0u32..200, runners in proptest::collection::vec((any::<bool>(), 0u32..3, 0i64..2000), 0..15),
            delay in 0u64..60, pending in proptest::option::of(0i64..120),
        ) {
            let s = ScalingSpec {
                min_concurrency: min, max_concurrency: min + extra.max(1), concurrency_buffer: buffer,
                concurrency_buffer_perc: perc, max_multiplexing: mux,
                keep_alive: KeepAlive::For(Duration::from_secs(300)), scaling_delay: Duration::from_secs(delay),
            };
            let rs: Vec<RunnerInfo> = runners.iter().enumerate().map(|(i, (ready, inf, idle_for))| RunnerInfo {
                id: i as RunnerId, ready: *ready, in_flight: *inf,
                idle_since: (*inf == 0).then(|| t0() - secs(*idle_for)), slot_price: Price::ZERO,
            }).collect();
            let in_flight: u32 = rs.iter().map(|r| r.in_flight).sum();
            let d = decide(&s, queued, in_flight, pending.map(|p| t0() - secs(p)), &rs, t0());
            let n = rs.len() as u32;
            prop_assert!(d.start == 0 || d.stop.is_empty());
            // Never above max through starts, never below min through stops.
            prop_assert!(n + d.start <= s.max_concurrency.max(n));
            prop_assert!(n - d.stop.len() as u32 >= s.min_concurrency.min(n));
            // Below min: at least up to min at once.
            if n < s.min_concurrency { prop_assert!(n + d.start >= s.min_concurrency); }
            // Never stops a runner with requests in flight, nor one still starting.
            for id in &d.stop {
                let r = rs.iter().find(|r| r.id == *id).unwrap();
                prop_assert!(r.in_flight == 0 && r.ready);
            }
        }
    }
}
