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
//! it hosts (so the dearest nodes per used slot empty and go), then the longest idle. Runners
//! still starting count toward the target, but while it wants any runner the app keeps one ready
//! runner rather than wait out their cold start.
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
    /// The level demand itself calls for, which keep-alive learns from (`predict = true`; the
    /// same as `desired` otherwise): without the floor of runners that requests in flight
    /// occupy, and with a backlog drained over a re-creation instead of a cold start. A backlog
    /// being drained keeps every runner busy, and the runners started to drain it fast are
    /// wanted until it is; neither is demand wanting them again. (Until 2026-12-03 the fast
    /// drain counted: billed by the hour, the nodes started for the first cold start's backlog
    /// were kept a second paid hour, their level "wanted" within the last re-creation.)
    pub wanted: u32,
}

pub fn target(spec: &ScalingSpec, demand: u32) -> ScaleTarget {
    target_for(spec, demand, demand.div_ceil(spec.max_multiplexing.max(1)))
}

/// The target when `needed` runners serve `demand` (fal's buffer, minimum and maximum applied).
fn target_for(spec: &ScalingSpec, demand: u32, needed: u32) -> ScaleTarget {
    let perc = (u64::from(needed) * u64::from(spec.concurrency_buffer_perc)).div_ceil(100);
    let buffer = spec.concurrency_buffer.max(u32::try_from(perc).unwrap_or(u32::MAX));
    let desired = spec.min_concurrency.max(needed.saturating_add(buffer)).min(spec.max_concurrency);
    ScaleTarget { demand, needed, buffer, desired, wanted: desired }
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
    /// Until when its node is already paid for, where that is more than a second away: a cloud
    /// billing by the hour has been paid for the whole hour begun. `None`: billed by the second
    /// (or not known). [`crate::plan::plan`] sets it from the nodes it is given.
    pub paid_until: Option<Time>,
    /// How much of an H100's work its GPU does, in thousandths
    /// ([`fleet_core::GpuModel::work_milli`]: 315 on an A100); 0 where not known.
    /// [`crate::plan::plan`] sets it from the nodes it is given. `predict = true` counts each
    /// runner at its speed.
    pub work_milli: u32,
}

/// A runner whose node is paid for longer than this from now does not stop: stopping it saves
/// nothing before the paid time ends, it serves meanwhile at no cost, and the decision is made
/// again in the passes before the end. Two minutes leave room for those passes, a drain and the
/// cloud's terminate call; under billing by the minute or second no stop is ever deferred.
pub const PREPAID_LEAD: Duration = Duration::from_secs(120);

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

/// One decision's view of an app's demand, as the caller records it after the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemandSample {
    pub at: Time,
    /// Runners demand called for ([`ScaleTarget::wanted`]: not counting runners kept busy only
    /// because they exist, as while a backlog drains).
    pub desired: u32,
    /// Requests submitted to the app since the caller started counting (monotonic).
    pub arrived: u64,
    pub queued: u32,
    pub in_flight: u32,
    /// The requests in flight weighted by the speed of the runner serving each, in thousandths
    /// of an H100's work ([`RunnerInfo::work_milli`]; [`crate::plan::AppPlan::in_flight_work`]):
    /// the service time is measured in H100 work, so that what was measured on one GPU family
    /// sizes runners of another right.
    pub in_flight_work: u64,
}

/// What the autoscaler learns from an app's recent demand, kept by the caller between decisions
/// ([`DemandHistory::record`] after each): the samples of the last [`history_window`] (for
/// `keep_alive = "auto"` and the recent arrival rate), the service time measured from them
/// (kept after they age out), and arrivals per time-of-day bin over the last week (the daily
/// shape `predict = true` forecasts with).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DemandHistory {
    samples: std::collections::VecDeque<DemandSample>,
    /// Σ (work in flight at a + at b) × milliseconds from a to b over consecutive samples a, b
    /// ([`DemandSample::in_flight_work`]): twice the in-flight integral in thousandths of an
    /// H100's work, kept exactly as samples come and go, so measuring the service time does not
    /// walk the window every decision.
    busy_ms2: i128,
    /// What re-creating a runner costs in time billed: its cold start plus a new node's minimum
    /// billing.
    pub recreate: Duration,
    /// How long a runner started now takes to serve: provision + boot + model load.
    pub cold_start: Duration,
    /// Mean seconds a request is in service on an H100 (Little's law over the samples, in H100
    /// work), once measured: on an A100 it takes about three times as long.
    pub service_s: Option<f64>,
    /// Until [`Self::service_s`] is first measured: a lower bound on the mean service time of
    /// the requests served so far (in H100 work), counting each one still in flight as done
    /// now ([`DemandHistory::record`]). `predict = true` starts runners on it (never stops
    /// any), so that an app whose first requests are slow does not wait for twenty of them on
    /// its one probe runner before it scales.
    pub service_floor_s: Option<f64>,
    /// The speed of the runners that served the last requests seen in flight, in thousandths
    /// of an H100's work (0 before any): what sizing assumes when the app has no runner.
    pub work_milli: u32,
    /// Arrivals per [`DAY_BIN`] bin: (bin number since the epoch, requests), oldest first.
    pub bins: std::collections::VecDeque<(i64, u64)>,
    /// The most runners demand wanted ([`DemandSample::desired`]) in each minute
    /// ([`LEVEL_BIN`]) of the last [`LEVEL_MEMORY`]: (minute number since the epoch, runners),
    /// oldest first. The samples' window is minutes long; a level demand returns to every hour
    /// or so (the Azure code trace's bursts) is seen again only here ([`Self::level_returns`]).
    pub peaks: std::collections::VecDeque<(i64, u32)>,
}

/// The resolution of the levels demand wanted ([`DemandHistory::peaks`]), and how long they are
/// kept: a few consolidation horizons (an hour by default), so the intervals between a level's
/// returns are seen several times over where they are about as long as the horizon.
pub const LEVEL_BIN: Duration = Duration::from_secs(60);
pub const LEVEL_MEMORY: Duration = Duration::from_secs(3 * 3600);

/// The daily shape's resolution, and how many days of it are kept.
pub const DAY_BIN: Duration = Duration::from_secs(900);
const BINS_PER_DAY: i64 = 96;
const DAYS_KEPT: i64 = 7;
/// The recent arrival rate is measured over this much of the history.
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// Arrivals count as stopped after a silence this many times longer than any earlier one in the
/// history (and at least a [`RATE_WINDOW`]).
const STOPPED_FACTOR: f64 = 3.0;
/// Completions a service-time measurement needs before it replaces the last one.
const MIN_COMPLETIONS: f64 = 20.0;

/// Requests (completed or in flight) a floor under the service time needs
/// ([`DemandHistory::service_floor_s`]).
const MIN_FLOOR_REQUESTS: f64 = 3.0;

/// What [`DemandHistory::measure_service`] found.
enum Measured {
    /// The mean service time, from [`MIN_COMPLETIONS`] or more.
    Mean(f64),
    /// Fewer completions: a lower bound on it.
    Floor(f64),
    Nothing,
}

/// Where a new node's minimum billing is longer than its cold start (billed by the hour), the
/// least shortfall, in runners, that starts one more (see [`predicted`]).
const HOURLY_MIN_SHORTFALL: f64 = 0.25;

/// The least service time [`predicted_needed`] sizes for, in seconds.
const MIN_SERVICE_S: f64 = 0.001;

/// How far back the arrival rate's peak is looked for ([`DemandHistory::peak_rate`]): twenty
/// minutes, SkyPilot Serve's default downscale delay, within the history kept. Until
/// 2026-12-04 it was the whole history, which billed by the hour is three re-creations, over
/// three hours: the first hour's busiest minute held runners for hours, each paid every hour
/// begun (the code trace at twice its rate on 2-GPU runners, billed by the hour: a runner
/// started for the first burst was held into a second paid hour, $15.39 where target-qps paid
/// $12.31 at the same SLO attainment; now $12.31).
pub const PEAK_WINDOW: Duration = Duration::from_secs(20 * 60);

/// How far back a caller keeps the history: ten minutes, or three re-creations if longer.
pub fn history_window(recreate: Duration) -> Duration {
    Duration::from_secs(600).max(recreate.saturating_mul(3))
}

/// Twice the in-flight integral from sample `a` to `b` (trapezoid), in request-milliseconds.
fn trapezoid_ms2(a: &DemandSample, b: &DemandSample) -> i128 {
    (i128::from(a.in_flight_work) + i128::from(b.in_flight_work)) * i128::from((b.at - a.at).num_milliseconds())
}

fn secs_between(a: Time, b: Time) -> f64 {
    (b - a).num_milliseconds() as f64 / 1000.0
}

impl DemandHistory {
    pub fn new(recreate: Duration, cold_start: Duration) -> DemandHistory {
        DemandHistory { recreate, cold_start, ..DemandHistory::default() }
    }

    /// Adds one decision's sample: trims the samples to [`history_window`], counts the new
    /// arrivals into their time-of-day bin, and re-measures the service time.
    pub fn record(&mut self, sample: DemandSample) {
        if let Some(last) = self.samples.back() {
            let new = sample.arrived.saturating_sub(last.arrived);
            let bin = sample.at.timestamp().div_euclid(DAY_BIN.as_secs() as i64);
            match self.bins.back_mut() {
                Some((b, n)) if *b == bin => *n += new,
                _ => self.bins.push_back((bin, new)),
            }
            while self.bins.front().is_some_and(|(b, _)| *b <= bin - DAYS_KEPT * BINS_PER_DAY) {
                self.bins.pop_front();
            }
        }
        let minute = sample.at.timestamp().div_euclid(LEVEL_BIN.as_secs() as i64);
        match self.peaks.back_mut() {
            Some((m, n)) if *m == minute => *n = (*n).max(sample.desired),
            _ => self.peaks.push_back((minute, sample.desired)),
        }
        let kept = (LEVEL_MEMORY.as_secs() / LEVEL_BIN.as_secs()) as i64;
        while self.peaks.front().is_some_and(|(m, _)| *m <= minute - kept) {
            self.peaks.pop_front();
        }
        if let Some(last) = self.samples.back() {
            self.busy_ms2 += trapezoid_ms2(last, &sample);
        }
        if sample.in_flight > 0 {
            self.work_milli = u32::try_from(sample.in_flight_work / u64::from(sample.in_flight)).unwrap_or(u32::MAX);
        }
        self.samples.push_back(sample);
        let window = chrono::Duration::from_std(history_window(self.recreate)).unwrap_or(chrono::Duration::MAX);
        while self.samples.front().is_some_and(|s| sample.at - s.at > window) {
            if let Some(gone) = self.samples.pop_front()
                && let Some(next) = self.samples.front()
            {
                self.busy_ms2 -= trapezoid_ms2(&gone, next);
            }
        }
        match self.measure_service() {
            Measured::Mean(s) => {
                self.service_s = Some(s);
                self.service_floor_s = None;
            }
            Measured::Floor(s) if self.service_s.is_none() => self.service_floor_s = Some(s),
            Measured::Floor(_) | Measured::Nothing => {}
        }
    }

    /// Little's law over the samples: requests completed = arrivals − growth of queued + in
    /// flight; mean in flight = completion rate × service time.
    ///
    /// With fewer than [`MIN_COMPLETIONS`], a floor: the same in-flight integral over the
    /// requests completed and those still in flight, each of which has been served for at most
    /// its whole service time within the samples.
    fn measure_service(&self) -> Measured {
        let (Some(first), Some(last)) = (self.samples.front(), self.samples.back()) else {
            return Measured::Nothing;
        };
        let span = secs_between(first.at, last.at);
        let open = |s: &DemandSample| f64::from(s.queued) + f64::from(s.in_flight);
        let completed = (last.arrived - first.arrived) as f64 - (open(last) - open(first));
        if span <= 0.0 {
            return Measured::Nothing;
        }
        // The in-flight integral (trapezoids between samples), in request-seconds of an H100's
        // work: over the completions, the mean service time; over all requests seen, a floor.
        let busy = self.busy_ms2 as f64 / 2000.0 / 1000.0;
        if completed < MIN_COMPLETIONS {
            let seen = completed.max(0.0) + f64::from(last.in_flight);
            if busy <= 0.0 || seen < MIN_FLOOR_REQUESTS {
                return Measured::Nothing;
            }
            return Measured::Floor(busy / seen);
        }
        debug_assert_eq!(
            self.busy_ms2,
            self.samples.iter().zip(self.samples.iter().skip(1)).map(|(a, b)| trapezoid_ms2(a, b)).sum::<i128>(),
            "the running in-flight integral is the samples' own"
        );
        Measured::Mean(busy / completed)
    }

    /// Requests per second over the last minute (`RATE_WINDOW`) of samples.
    pub fn recent_rate(&self, now: Time) -> f64 {
        let Some(last) = self.samples.back() else { return 0.0 };
        let from = now - chrono::Duration::from_std(RATE_WINDOW).unwrap_or_default();
        let first = self.samples.iter().find(|s| s.at >= from).unwrap_or(last);
        let span = secs_between(first.at, last.at);
        if span <= 0.0 { 0.0 } else { (last.arrived - first.arrived) as f64 / span }
    }

    /// The highest rate over any minute (`RATE_WINDOW`) of the last [`PEAK_WINDOW`] of the
    /// history: what the capacity kept warm is sized for, so that a burst like the recent ones
    /// finds it (as SkyPilot's and dstack's autoscalers hold replicas through a downscale delay).
    pub fn peak_rate(&self) -> f64 {
        let w = RATE_WINDOW.as_secs_f64();
        let mut best = 0.0f64;
        let v = &self.samples;
        let Some(last) = v.back() else { return 0.0 };
        let peak_window = PEAK_WINDOW.as_secs_f64();
        let first = v.partition_point(|s| secs_between(s.at, last.at) > peak_window);
        let history = secs_between(v[first].at, last.at);
        let mut j = first;
        for i in first..v.len() {
            // The first sample at most one window before sample i.
            while secs_between(v[j].at, v[i].at) > w {
                j += 1;
            }
            // Never over less than a window, unless the whole history is shorter.
            let span = secs_between(v[j].at, v[i].at).max(w.min(history));
            if span > 0.0 {
                best = best.max((v[i].arrived - v[j].arrived) as f64 / span);
            }
        }
        best
    }

    /// Whether any request arrived within the history.
    pub fn arrivals_seen(&self) -> bool {
        matches!((self.samples.front(), self.samples.back()), (Some(a), Some(b)) if b.arrived > a.arrived)
    }

    /// Whether arrivals have stopped: none for at least a minute (`RATE_WINDOW`), and for
    /// three times (`STOPPED_FACTOR`) longer than any silence between arrivals earlier in the history.
    /// Bursty demand falls silent between bursts as a matter of course (the Azure code trace for
    /// minutes at a time), so a silence counts only measured against the app's own; steady
    /// demand that stops is over, not between bursts.
    pub fn arrivals_stopped(&self, now: Time) -> bool {
        let Some(first) = self.samples.front() else { return false };
        // The sample at which the current silence began, and the longest silence before it.
        let mut since = first.at;
        let mut longest = 0.0f64;
        for (a, b) in self.samples.iter().zip(self.samples.iter().skip(1)) {
            if b.arrived > a.arrived {
                longest = longest.max(secs_between(since, a.at));
                since = b.at;
            }
        }
        let silent = secs_between(since, now);
        silent >= RATE_WINDOW.as_secs_f64() && silent > longest * STOPPED_FACTOR
    }

    /// The arrival rate to provision for, one cold start ahead: the recent rate, or the mean
    /// rate of the days seen at the same time of day over the next cold start (and the bin it
    /// ends in), whichever is higher. Days count only once a whole day of bins precedes now.
    /// The recent rate is the history's peak ([`Self::peak_rate`]) while arrivals go on, and
    /// nothing once they have stopped ([`Self::arrivals_stopped`]): capacity held for a burst
    /// like the recent ones is not held for demand that has ended, and what stays is then up to
    /// keep-alive.
    pub fn forecast_rate(&self, now: Time) -> f64 {
        let recent = if self.arrivals_stopped(now) { 0.0 } else { self.peak_rate() };
        let bin_s = DAY_BIN.as_secs() as i64;
        let now_bin = now.timestamp().div_euclid(bin_s);
        let Some(&(oldest, _)) = self.bins.front() else { return recent };
        let days = (now_bin - oldest) / BINS_PER_DAY;
        if days < 1 {
            return recent;
        }
        let ahead = (self.cold_start.as_secs() as i64).div_euclid(bin_s) + 1;
        let mut best = 0.0f64;
        for k in 0..=ahead {
            let mut total = 0u64;
            for d in 1..=days {
                let b = now_bin + k - d * BINS_PER_DAY;
                // Bins are sorted: a binary search finds the day's count (0 when absent).
                if let Ok(i) = self.bins.binary_search_by_key(&b, |(x, _)| *x) {
                    total += self.bins[i].1;
                }
            }
            best = best.max(total as f64 / days as f64 / bin_s as f64);
        }
        recent.max(best)
    }

    /// The expected time until demand next wants `level` runners: the mean time between the
    /// starts of the episodes in which it did within the history (the history's span for a single
    /// one), or the time since it last did once that is longer; `None` when it never did.
    pub fn expected_gap(&self, level: u32, now: Time) -> Option<Duration> {
        let mut starts: Vec<Time> = Vec::new();
        let mut last = None;
        let mut above = false;
        for s in &self.samples {
            let now_above = s.desired >= level;
            if now_above && !above {
                starts.push(s.at);
            }
            if now_above {
                last = Some(s.at);
            }
            above = now_above;
        }
        let last = last?;
        let span = |a: Time, b: Time| (b - a).to_std().unwrap_or_default();
        let mean = match starts.len() {
            0 | 1 => span(self.samples.front()?.at, now),
            k => span(starts[0], starts[k - 1]) / (k as u32 - 1),
        };
        Some(mean.max(span(last, now)))
    }
}

/// How demand has wanted a level of runners over the [`LEVEL_MEMORY`]
/// ([`DemandHistory::level_returns`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LevelReturns {
    /// The share of the time it wanted that many runners or more (0 to 1).
    pub share: f64,
    /// How many times an hour it came back to that level: episodes closer together than a
    /// re-creation count as one (the node started for the first is still there for the next).
    pub per_hour: f64,
}

impl DemandHistory {
    /// How often, and for how much of the time, demand wanted `level` runners or more within
    /// the [`LEVEL_MEMORY`] that [`Self::peaks`] keeps (a minute recorded counts whole where its
    /// peak reached `level`). What a move that gives up free slots weighs ([`crate::consolidate`]):
    /// while demand wants the runner those slots would have hosted, it needs a node of its own.
    /// The samples' window is minutes long; a burst that returns every hour (the Azure code
    /// trace's) is out of it between returns.
    pub fn level_returns(&self, level: u32, now: Time) -> LevelReturns {
        let bin_s = LEVEL_BIN.as_secs() as i64;
        let Some(&(first, _)) = self.peaks.front() else { return LevelReturns::default() };
        let span_s = (now.timestamp() - first * bin_s).max(bin_s) as f64;
        // Minutes apart beyond which a return is a new episode.
        let join = (self.recreate.as_secs() as i64 / bin_s).max(1);
        let (mut above, mut episodes, mut last) = (0u32, 0u32, None::<i64>);
        for &(m, peak) in &self.peaks {
            if peak >= level {
                above += 1;
                if last.is_none_or(|l| m - l > join) {
                    episodes += 1;
                }
                last = Some(m);
            }
        }
        // The share over the minutes recorded (a pass may come less often than once a minute:
        // fleetd's interval is the operator's), the returns over the time they span.
        LevelReturns {
            share: f64::from(above) / self.peaks.len().max(1) as f64,
            per_hour: f64::from(episodes) * 3600.0 / span_s,
        }
    }
}

/// Runners `predict = true` wants for this demand: enough slots for the forecast rate times the
/// measured service time, plus what drains the queue within one cold start (runners started now
/// help only after it), and never fewer than the requests in flight occupy. `None` until a
/// service time has been measured.
pub fn predicted_needed(
    spec: &ScalingSpec,
    history: &DemandHistory,
    queued: u32,
    in_flight: u32,
    now: Time,
) -> Option<u32> {
    let speeds = Speeds { kept: Vec::new(), new: share(history.work_milli) };
    let service_s = history.service_s?;
    let p = predicted(spec, history, service_s, queued, in_flight, None, &speeds, now);
    Some(p.wanted.max(p.busy))
}

/// [`predicted_needed`]'s parts ([`Predicted`]), for requests of `service_s` seconds of H100
/// work.
#[allow(clippy::too_many_arguments)]
fn predicted(
    spec: &ScalingSpec,
    history: &DemandHistory,
    service_s: f64,
    queued: u32,
    in_flight: u32,
    runners_now: Option<u32>,
    speeds: &Speeds,
    now: Time,
) -> Predicted {
    // Requests served faster than the passes sample (a few milliseconds each) are rarely seen in
    // flight, so their measured service time can be exactly zero; with it, neither the rate nor
    // a backlog would call for any runner, and once the last stopped, queued requests waited
    // for ever (until 2026-12-03). A millisecond, the store's and fleetsim's resolution, is the
    // least a request takes. The service time is measured in H100 work: `s` is a request's time
    // on the runners started next, and the slots below are theirs ([`Speeds`]).
    let s = (service_s / speeds.new).max(MIN_SERVICE_S);
    let mux = f64::from(spec.max_multiplexing.max(1));
    let horizon = history.cold_start.as_secs_f64().max(s).max(1.0);
    let rate = history.forecast_rate(now);
    let arriving = rate * s;
    // The backlog the runners started now are sized to drain within a cold start. Where a new
    // node's minimum billing is no longer than its cold start, a runner started for it pays
    // for about what it serves, and the queue as it stands is drained fast (the requests
    // behind it wait less). Where the minimum is longer (billed by the hour), each runner
    // started pays its minimum however soon the backlog is gone: fleet starts for the queue
    // as it will stand when a runner started now comes up, grown by what arrives meanwhile
    // beyond what the runners there serve, the ones still starting counted as serving
    // already. So the starts come in one step, which the node mix sizes whole (8-GPU nodes
    // for several runners), instead of a runner more at each pass as the queue grows, each on
    // the node that fits one, each paid an hour; and the backlog drains over longer than a
    // cold start. Until 2026-12-03 a growing first backlog on 4-GPU runners, billed by the
    // hour, started eleven runners one by one on eleven nodes.
    let billed_long = history.recreate.saturating_sub(history.cold_start) > history.cold_start;
    let backlog = match runners_now {
        Some(n) if billed_long => {
            let served = speeds.slots(n) * mux / s;
            (f64::from(queued) + (rate - served) * history.cold_start.as_secs_f64()).max(0.0)
        }
        _ => f64::from(queued),
    };
    let concurrency = arriving + backlog * s / horizon;
    let busy = in_flight.div_ceil(spec.max_multiplexing.max(1));
    let runners = |c: f64| speeds.runners(c / mux);
    let recreate = history.recreate.as_secs_f64().max(horizon);
    // Billed by the hour, a runner more is started for a shortfall of at least a quarter of its
    // slots ([`HOURLY_MIN_SHORTFALL`]): one started for less is paid an hour to serve a sliver
    // of it, and the estimate moving a little from one pass to the next (a request more or less
    // in the last minute) launched such nodes (an H100-or-A100 app at a request a second: a
    // second node-hour for one pass's blip, $3.39 where target-qps paid $1.89 at the same SLO).
    let wanted = match (runners(concurrency), runners_now) {
        (w, Some(n)) if billed_long && w > n && runners((concurrency - HOURLY_MIN_SHORTFALL * mux).max(0.0)) <= n => n,
        (w, _) => w,
    };
    Predicted { wanted, busy, again: runners(arriving + f64::from(queued) * s / recreate) }
}

/// The speeds [`predicted`] turns slots into runners with, each a share of an H100's work
/// ([`RunnerInfo::work_milli`]). Until 2026-12-03 the service time was measured on whichever
/// runners served and every runner counted alike: an app allowing H100s and A100s that had
/// served on both sized its A100 runners for a blend of the two (half their service time), and
/// queues grew on them (a consolidation move that put its one runner on an A100 left 73% of a
/// Poisson stream's requests served within 30 s).
struct Speeds {
    /// The app's runners', in the order scale-down keeps them: the cheapest per hour of work
    /// first (it stops the dearest first).
    kept: Vec<f64>,
    /// A runner started now: the speed the caller gives ([`decide_next`]: the plan's, of the
    /// nodes it would start the runners on); otherwise the cheapest runner's (an on-demand base
    /// runner, priced at nothing, only where no other is), or with none, the speed of the last
    /// runners seen serving (an H100's before any).
    new: f64,
}

/// A speed in thousandths of an H100's work as a share of it; 0 (not known) is an H100's.
fn share(work_milli: u32) -> f64 {
    if work_milli == 0 { 1.0 } else { f64::from(work_milli) / 1000.0 }
}

impl Speeds {
    /// The app's runners' speeds, cheapest work first; a new runner's is `next_work_milli`'s
    /// where known (not 0).
    fn of(runners: &[RunnerInfo], history: &DemandHistory, next_work_milli: u32) -> Speeds {
        let mut by_price: Vec<&RunnerInfo> = runners.iter().collect();
        by_price.sort_by(|a, b| a.slot_price.cmp(&b.slot_price).then(a.id.cmp(&b.id)));
        let last = share(history.work_milli);
        let speed = |r: &RunnerInfo| if r.work_milli == 0 { last } else { share(r.work_milli) };
        let kept: Vec<f64> = by_price.iter().map(|r| speed(r)).collect();
        // The plan prices an app's on-demand base runners at nothing (so they are kept): the
        // cheapest work is the cheapest runner priced.
        let cheapest = by_price.iter().find(|r| r.slot_price > Price::ZERO).or(by_price.first());
        let new = if next_work_milli != 0 { share(next_work_milli) } else { cheapest.map_or(last, |r| speed(r)) };
        Speeds { kept, new }
    }

    /// What the first `n` kept runners serve, in slots of a new runner.
    fn slots(&self, n: u32) -> f64 {
        if self.kept.iter().all(|v| *v == self.new) {
            return f64::from(n);
        }
        let kept: f64 = self.kept.iter().take(n as usize).map(|v| v / self.new).sum();
        kept + f64::from(n.saturating_sub(self.kept.len() as u32))
    }

    /// Runners for `need` runners' worth of a new runner's slots: the fewest kept runners that
    /// serve it, or all of them and new ones for the rest. With runners of one speed, ⌈need⌉.
    fn runners(&self, need: f64) -> u32 {
        let whole = |x: f64| x.ceil().clamp(0.0, f64::from(u32::MAX)) as u32;
        if self.kept.iter().all(|v| *v == self.new) {
            return whole(need);
        }
        let mut have = 0.0;
        for (k, v) in self.kept.iter().enumerate() {
            if have >= need {
                return k as u32;
            }
            have += v / self.new;
        }
        (self.kept.len() as u32).saturating_add(whole(need - have))
    }
}

/// [`predicted`]'s parts, in runners.
struct Predicted {
    /// What the forecast and the queue call for.
    wanted: u32,
    /// What the requests in flight occupy.
    busy: u32,
    /// The level demand wants again, which keep-alive learns from: the forecast, and the queue
    /// drained over a re-creation rather than a cold start. Runners started to drain a backlog
    /// fast are wanted until it is drained; wanting them again is a backlog like it, which a
    /// runner kept for a re-creation serves within one.
    again: u32,
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

/// Decides one app's runner changes; `history` is what `keep_alive = "auto"` weighs. With
/// `predict = true`, a runner started now is taken to be as fast as the app's cheapest runner
/// (see [`decide_next`] where placement's choice is known).
pub fn decide_with(
    spec: &ScalingSpec,
    queued: u32,
    in_flight: u32,
    pending_since: Option<Time>,
    runners: &[RunnerInfo],
    history: &DemandHistory,
    now: Time,
) -> ScaleDecision {
    decide_next(spec, queued, in_flight, pending_since, runners, history, 0, now)
}

/// [`decide_with`], where the runners started now run on GPUs doing `next_work_milli`
/// thousandths of an H100's work ([`RunnerInfo::work_milli`]; 0: not known, as
/// [`decide_with`]); [`crate::plan::plan`] gives the speed of the nodes it would place them
/// on. `predict = true` sizes the runners it starts at that speed. Until 2026-12-04 it took the
/// app's cheapest runner's: an H100-or-A100 app whose probe runner had landed on an A100 (a
/// capacity error on the H100 ranked first) sized the first backlog for A100 runners, and got
/// three times the H100s it needed (16 two-GPU runners where 5 served, each node paid an hour:
/// $58.17 where target-qps paid $15.34).
#[allow(clippy::too_many_arguments)]
pub fn decide_next(
    spec: &ScalingSpec,
    queued: u32,
    in_flight: u32,
    pending_since: Option<Time>,
    runners: &[RunnerInfo],
    history: &DemandHistory,
    next_work_milli: u32,
    now: Time,
) -> ScaleDecision {
    let demand = queued.saturating_add(in_flight);
    let current = u32::try_from(runners.len()).unwrap_or(u32::MAX);
    // The floor of runners kept busy counts the requests these runners serve. Requests in flight
    // elsewhere (on a consolidation move's leaving node, whose replaced runners the plan does not
    // pass) are not a reason to start more: until 2026-12-02 they were, and every Poisson burst
    // above the replacements' slots started a runner that was stopped again once idle, and held
    // the move (which waits for every starting runner) open for minutes at the old node's price.
    let serving = runners.iter().fold(0u32, |n, r| n.saturating_add(r.in_flight));
    let predict = |service_s: f64| {
        let speeds = Speeds::of(runners, history, next_work_milli);
        predicted(spec, history, service_s, queued, serving.min(in_flight), Some(current), &speeds, now)
    };
    let t = if !spec.predict {
        target(spec, demand)
    } else if let Some(service_s) = history.service_s {
        let p = predict(service_s);
        ScaleTarget {
            wanted: target_for(spec, demand, p.again).desired,
            ..target_for(spec, demand, p.wanted.max(p.busy))
        }
    } else {
        // Nothing measured yet (a new app, or a restarted fleetd): one runner probes the service
        // time and the count holds until it is known, rather than one slot per queued request
        // piling up during the first cold start. Never more than fal's rule would start.
        let fal = target(spec, demand);
        let probe = if demand == 0 { 0 } else { current.max(1) };
        let mut desired = fal.desired.min(probe.max(spec.min_concurrency));
        // Once the probe has served a few requests, the floor under their service time sizes
        // the runners the rate and the queue want at least; more start on it, none stop. Until
        // 2026-12-03 the count held until twenty had completed: 8-second requests on one A100
        // runner took over eight minutes, while 2,000 queued behind it.
        if let Some(floor) = history.service_floor_s {
            let p = predict(floor);
            desired = desired.max(target_for(spec, demand, p.wanted.max(p.busy)).desired);
        }
        ScaleTarget { desired, wanted: desired, ..fal }
    };
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
    // Runners still starting count against the target, but while it wants any runner the app
    // keeps one ready: the starting ones serve only after their cold start. Until 2026-12-03
    // two runners started for a spike that had passed made the app's last ready runners stop,
    // and the next burst (the Azure code trace's, seconds later) met none ready: 484 requests
    // queued and sixty cold starts. (Keeping every ready runner up to the target instead buys
    // some SLO attainment for money: code-100gpu +2% at +1.9 points.)
    let ready = runners.iter().filter(|r| r.ready).count() as u32;
    let excess = ready.saturating_sub(t.desired.min(1)).max(above_max).min(excess);
    // A fixed keep-alive has expired for runners idle since this instant or earlier (one
    // subtraction per decision instead of one per runner: this runs every pass for every app).
    let idle_before = match spec.keep_alive {
        KeepAlive::For(t) => chrono::Duration::from_std(t).ok().and_then(|t| now.checked_sub_signed(t)),
        KeepAlive::Auto => None,
    };
    // Demand that has ended (arrivals came within the history, then stopped): the episodes
    // before tell nothing of when it returns, so no runner waits for the gap they make; the
    // app's last one still stays for the window. Until 2026-12-03 runners waited out the gap:
    // one re-creation, and billed by the hour a re-creation is an hour and more, so the
    // conversation trace's runners were all paid a second idle hour after it ended.
    let ended_cell = std::cell::OnceCell::new();
    let ended = || *ended_cell.get_or_init(|| history.arrivals_seen() && history.arrivals_stopped(now));
    // Whether an idle runner (idle since `since`) may stop, `remaining` runners staying after it.
    let expired = |since: Time, remaining: u32| match spec.keep_alive {
        KeepAlive::For(_) => idle_before.is_some_and(|b| since <= b),
        // The app's last runner is priced differently: stopping it means the next request waits
        // a whole cold start, which the billed-time rule does not price. It stays until the app
        // has had no demand for the whole history window, or, once demand has ended, for as long
        // as re-creating it would cost (the ski-rental break-even). Until 2026-12-03 it stayed
        // the window after demand ended too: three re-creations, three hours and more billed by
        // the hour.
        KeepAlive::Auto if remaining == 0 => match history.expected_gap(1, now) {
            None => true,
            Some(gap) => ended() && gap >= history.recreate,
        },
        KeepAlive::Auto => {
            ended() || history.expected_gap(remaining + 1, now).is_none_or(|gap| gap >= history.recreate)
        }
    };
    // Its node paid for beyond the lead: keeping it costs nothing yet ([`PREPAID_LEAD`]).
    let lead = chrono::Duration::from_std(PREPAID_LEAD).unwrap_or(chrono::Duration::MAX);
    let prepaid = |r: &RunnerInfo| r.paid_until.is_some_and(|p| p - now > lead);
    let mut idle: Vec<(&RunnerInfo, Time, bool)> = runners
        .iter()
        .filter(|r| r.ready && r.in_flight == 0)
        .filter_map(|r| r.idle_since.map(|s| (r, s, prepaid(r))))
        // Within max only runners past keep-alive may stop: sort just those (this runs every
        // decision for every app, and keeps the list short).
        .filter(|(_, s, paid)| above_max > 0 || (!paid && expired(*s, current.saturating_sub(1))))
        .collect();
    // Runners beyond max_concurrency stop even if paid for, but those whose paid time ends
    // soonest first, then (as with none paid for) the dearest per slot and the longest idle.
    idle.sort_by(|(a, sa, pa), (b, sb, pb)| {
        let paid = |r: &RunnerInfo, p: bool| if p { r.paid_until } else { None };
        paid(a, *pa).cmp(&paid(b, *pb)).then(b.slot_price.cmp(&a.slot_price)).then(sa.cmp(sb)).then(a.id.cmp(&b.id))
    });
    let mut stop = Vec::new();
    for (i, (r, since, paid)) in idle.into_iter().enumerate() {
        if stop.len() as u32 >= excess {
            break;
        }
        // The first `above_max` stops need no keep-alive: those runners should not exist.
        let remaining = current - stop.len() as u32 - 1;
        if (i as u32) < above_max || (!paid && expired(since, remaining)) {
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
            predict: false,
            consolidation: true,
            keep_min_over_budget: false,
        }
    }

    fn idle(id: RunnerId, idle_for: i64, price: &str) -> RunnerInfo {
        RunnerInfo {
            id,
            ready: true,
            in_flight: 0,
            idle_since: Some(t0() - secs(idle_for)),
            slot_price: Price::parse_decimal(price).unwrap(),
            paid_until: None,
            work_milli: 0,
        }
    }

    fn busy(id: RunnerId, n: u32) -> RunnerInfo {
        RunnerInfo { in_flight: n, idle_since: None, ..idle(id, 0, "0") }
    }

    #[test]
    fn targets_follow_fal() {
        let s = spec();
        // 40 requests / 4 per runner = 10 needed, buffer max(1, 20% of 10 = 2) = 2, capped at 10.
        assert_eq!(target(&s, 40), ScaleTarget { demand: 40, needed: 10, buffer: 2, desired: 10, wanted: 10 });
        assert_eq!(target(&s, 9), ScaleTarget { demand: 9, needed: 3, buffer: 1, desired: 4, wanted: 4 });
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
    fn a_runner_whose_node_is_paid_for_stays_until_the_paid_time_is_nearly_up() {
        let s = ScalingSpec { min_concurrency: 0, concurrency_buffer: 0, concurrency_buffer_perc: 0, ..spec() };
        let paid = |r: RunnerInfo, left: i64| RunnerInfo { paid_until: Some(t0() + secs(left)), ..r };
        // All idle past keep-alive, no demand: all excess. 1's node is billed by the hour with 40
        // minutes paid for; 2's with 100 s (within the lead); 3 billed by the second.
        let runners = [paid(idle(1, 900, "9"), 2400), paid(idle(2, 900, "2"), 100), idle(3, 900, "1")];
        let d = decide(&s, 0, 0, None, &runners, t0());
        assert_eq!(d.stop, [2, 3]);
        // Forty minutes on, 1's paid time is nearly up: it stops too.
        let later = [paid(idle(1, 3300, "9"), 2400)];
        assert_eq!(decide(&s, 0, 0, None, &later, t0() + secs(2300)).stop, [1]);
        // Runners beyond max_concurrency stop even if paid for: those whose paid time ends
        // soonest first, then by slot price.
        let capped = ScalingSpec { max_concurrency: 1, ..s };
        let runners = [busy(1, 1), paid(idle(2, 5, "9"), 3000), paid(idle(3, 5, "1"), 600), idle(4, 5, "2")];
        assert_eq!(decide(&capped, 0, 1, None, &runners, t0()).stop, [4, 3, 2]);
    }

    #[test]
    fn the_last_ready_runner_does_not_stop_for_ones_still_starting() {
        // No demand; the minimum and the buffer want one runner. Two are ready and idle past
        // keep-alive, two more still start (for a spike that has passed): one ready runner
        // stops, one stays ready for the next request (until 2026-12-03 both stopped, the
        // starting ones counted in their place, and a burst then met none ready).
        let starting = |id| RunnerInfo { ready: false, idle_since: None, ..idle(id, 0, "1") };
        let runners = [idle(1, 600, "2"), idle(2, 600, "1"), starting(3), starting(4)];
        let d = decide(&spec(), 0, 0, None, &runners, t0());
        assert_eq!((d.target.desired, d.start, d.stop.as_slice()), (1, 0, [1].as_slice()));
        // With none starting, the same two ready: the same one stops.
        assert_eq!(decide(&spec(), 0, 0, None, &runners[..2], t0()).stop, [1]);
        // Ready runners beyond that one still stop for the starting ones the target counts:
        // five ready and idle, four starting, a target of four (12 queued, 4 at once, and a
        // buffer of one): the four dearest ready ones stop.
        let mut many: Vec<RunnerInfo> = (1..=5).map(|id| idle(id, 600, "1")).collect();
        many.extend((6..=9).map(starting));
        let d = decide(&spec(), 12, 0, None, &many, t0());
        assert_eq!((d.target.desired, d.stop.len()), (4, 4));
        // Beyond max_concurrency (10 here) ready ones stop whatever starts: twelve ready idle
        // for a moment (within keep-alive) and one starting, three above the maximum: three of
        // the ready ones stop.
        let mut over: Vec<RunnerInfo> = (1..=12).map(|id| idle(id, 10, "1")).collect();
        over.push(starting(13));
        assert_eq!(decide(&spec(), 0, 0, None, &over, t0()).stop.len(), 3);
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
        // Each burst brings ten requests.
        let history = |level: u32, every: i64, ago: i64| DemandHistory {
            samples: (0..60)
                .scan(0u64, |arrived, i| {
                    let t = -600 + i * 10;
                    let burst = (t + ago) % every == 0 && t <= -ago;
                    *arrived += if burst && level > 0 { 10 } else { 0 };
                    Some(sample(t, if burst { level } else { 0 }, *arrived, 0))
                })
                .collect(),
            ..DemandHistory::new(recreate, recreate)
        };
        let stops = |h: &DemandHistory| decide_with(&s, 0, 0, None, &runners, h, t0()).stop.len();
        // Bursts of 3 runners every 60 s, the last 10 s ago: all three will be needed within a
        // minute, well before a re-creation would pay: none stops.
        assert_eq!(stops(&history(3, 60, 10)), 0);
        // Bursts of 1 runner every 60 s: one is kept, the two others never wanted go.
        assert_eq!(stops(&history(1, 60, 10)), 2);
        // Bursts of 3 every 300 s: each waits longer than re-creating costs: all go but the
        // app's last, kept while demand came within the history window.
        assert_eq!(stops(&history(3, 300, 10)), 2);
        // Bursts every 60 s that stopped 200 s ago: the silence is the gap now, and more than
        // three times any before: demand has ended, and for longer than a re-creation, so the
        // last goes too (until 2026-12-03 it stayed the whole window).
        assert_eq!(stops(&history(3, 60, 200)), 3);
        // Stopped 170 s ago: ended, but not a re-creation ago: the last stays.
        assert_eq!(stops(&history(3, 60, 170)), 2);
        // Billed by the hour a re-creation costs more than an hour: bursts every 300 s keep
        // all three, and so do bursts every 60 s that paused 120 s ago (not 3 × the longest
        // 50 s silence between bursts yet). Paused 200 s, the demand has ended: all go but the
        // last, which stays until the silence is as long as a re-creation.
        let hourly = Duration::from_secs(3780);
        let long = |mut h: DemandHistory| {
            h.recreate = hourly;
            h
        };
        assert_eq!(stops(&long(history(3, 300, 10))), 0);
        assert_eq!(stops(&long(history(3, 60, 120))), 0);
        assert_eq!(stops(&long(history(3, 60, 200))), 2);
        // No demand in the whole window (or no history): nothing to wait for, the last goes too.
        assert_eq!(stops(&history(0, 60, 10)), 3);
        assert_eq!(stops(&DemandHistory::new(recreate, recreate)), 3);
        // The fixed keep-alive ignores the history: only the runner idle past 300 s goes.
        let fixed = ScalingSpec { keep_alive: KeepAlive::For(Duration::from_secs(300)), ..s };
        assert_eq!(decide_with(&fixed, 0, 0, None, &runners, &history(3, 60, 10), t0()).stop, [1]);
    }

    #[test]
    fn level_returns_sees_a_level_demand_comes_back_to_every_hour_beyond_the_samples_window() {
        // A pass every 10 s for three hours: one runner wanted, two for the first ten minutes
        // of each hour (re-creation 270 s: cold start 210 s, a minute's minimum billing).
        let recreate = Duration::from_secs(270);
        let mut h = DemandHistory::new(recreate, Duration::from_secs(210));
        let now = 3 * 3600 - 1800; // half an hour after the last burst began
        for t in (0..=now).step_by(10) {
            let desired = if t % 3600 < 600 { 2 } else { 1 };
            h.record(sample(t - now, desired, t as u64 / 10, 1));
        }
        // The samples' window (ten minutes here) holds no second runner since the last burst.
        assert_eq!(h.expected_gap(2, t0()), None);
        // Over the memory: three bursts of ten minutes in 2 h 30 min.
        let r = h.level_returns(2, t0());
        assert!((r.per_hour - 3.0 / 2.5).abs() < 0.01, "{r:?}");
        assert!((r.share - 30.0 / 150.0).abs() < 0.01, "{r:?}");
        // Never more than was wanted: no episode of three runners.
        assert_eq!(h.level_returns(3, t0()), LevelReturns { share: 0.0, per_hour: 0.0 });
        // Returns closer together than a re-creation are one: two runners for a minute every
        // four minutes (gaps of three) over an hour are one episode, a third of the time or so.
        let mut f = DemandHistory::new(recreate, Duration::from_secs(210));
        for t in (0..=3600).step_by(10) {
            f.record(sample(t - 3600, if t % 240 < 60 { 2 } else { 1 }, t as u64 / 10, 1));
        }
        let r = f.level_returns(2, t0());
        assert!((r.per_hour - 1.0).abs() < 0.02 && r.share > 0.25 && r.share < 0.55, "{r:?}");
        // The memory is kept for LEVEL_MEMORY: six hours later the bursts are forgotten.
        let later = LEVEL_MEMORY.as_secs() as i64 + 60;
        h.record(sample(later, 1, 20_000, 1));
        assert_eq!(h.level_returns(2, t0() + secs(later)).per_hour, 0.0);
        assert!(h.peaks.len() <= (LEVEL_MEMORY.as_secs() / LEVEL_BIN.as_secs()) as usize);
    }

    fn sample(at: i64, desired: u32, arrived: u64, in_flight: u32) -> DemandSample {
        DemandSample {
            at: t0() + secs(at),
            desired,
            arrived,
            queued: 0,
            in_flight,
            in_flight_work: u64::from(in_flight) * 1000,
        }
    }

    /// Five minutes of samples every 10 s up to now, `per_tick` arrivals each and `in_flight`
    /// requests in service at each (re-creation 240 s, cold start 180 s).
    fn steady(desired: u32, per_tick: u64, in_flight: u32) -> DemandHistory {
        let mut h = DemandHistory::new(Duration::from_secs(240), Duration::from_secs(180));
        for i in 0..=30 {
            h.record(sample(-300 + i * 10, desired, per_tick * i as u64, in_flight));
        }
        h
    }

    #[test]
    fn service_time_and_rate_are_measured_from_the_samples() {
        // Two requests a second, each in service 3 s: six in flight on average.
        assert_eq!(DemandHistory::new(Duration::from_secs(240), Duration::from_secs(180)).service_s, None);
        let mut h = steady(1, 20, 6);
        let s = h.service_s.expect("measured");
        assert!((s - 3.0).abs() < 0.01, "{s}");
        assert!((h.recent_rate(t0()) - 2.0).abs() < 0.01);
        // Silence afterwards: the rate falls to zero, the service time is remembered.
        for i in 1..=70 {
            h.record(sample(i * 10, 0, 600, 0));
        }
        assert_eq!(h.recent_rate(t0() + secs(700)), 0.0);
        assert!(h.service_s.is_some());
        assert!(h.samples.len() <= 73, "trimmed to the 720 s window: {}", h.samples.len());
    }

    #[test]
    fn service_time_is_measured_in_h100_work_and_runners_are_counted_at_their_own_speed() {
        // Two requests a second, five in flight on A100 runners (315 thousandths of an H100's
        // work each): 2.5 s each on an A100, 0.7875 s of an H100's work.
        let on_a100 = |per_tick: u64, in_flight: u32| {
            let mut h = DemandHistory::new(Duration::from_secs(240), Duration::from_secs(180));
            for i in 0..=30 {
                let at = sample(-300 + i * 10, 1, per_tick * i as u64, in_flight);
                h.record(DemandSample { in_flight_work: u64::from(in_flight) * 315, ..at });
            }
            h
        };
        let h = on_a100(20, 5);
        let s = h.service_s.expect("measured");
        assert!((s - 0.7875).abs() < 1e-9, "{s}");
        assert_eq!(h.work_milli, 315);
        let spec = ScalingSpec { max_multiplexing: 2, ..predict_spec(KeepAlive::Auto) };
        let runner = |id: RunnerId, price: &str, work_milli: u32| RunnerInfo {
            in_flight: 2,
            idle_since: None,
            work_milli,
            ..idle(id, 0, price)
        };
        // An A100's hour of work is the cheaper here ($1.00/h over 0.315).
        let (a100, h100) = (|id| runner(id, "3.17", 315), |id| runner(id, "3.60", 1000));
        let desired = |queued: u32, in_flight: u32, runners: &[RunnerInfo], h: &DemandHistory| {
            decide_with(&spec, queued, in_flight, None, runners, h, t0()).target.desired
        };
        // On A100s: 2/s × 2.5 s = 5 slots, three runners of two (as before the change).
        assert_eq!(desired(0, 6, &[a100(1), a100(2), a100(3)], &h), 3);
        // On H100s the same work is 2/s × 0.7875 s = 1.6 slots: one runner. (With the service
        // time taken as measured, on the A100s, it was three.)
        assert_eq!(desired(0, 2, &[h100(1), h100(2), h100(3)], &h), 1);
        // Mixed: counted in the order scale-down keeps them, the cheapest work first. The A100
        // serves 2 of the 5 A100 slots and an H100 (3.17 times as fast) the rest: two runners.
        assert_eq!(desired(0, 4, &[h100(1), a100(2), h100(3)], &h), 2);
        // A backlog of 120 to drain within the 180 s cold start: 120 × 2.5 / 180 = 1.7 more
        // A100 slots, 6.7 in all, and the two hold 2 + 6.3: still two.
        let two = [a100(1), h100(2)];
        assert_eq!(desired(120, 4, &two, &h), 2);
        // Twice the rate: 10 + 1.7 = 11.7 A100 slots, 8.3 held; the rest on new runners at the
        // speed of the cheapest work (the A100's): two more.
        assert_eq!(desired(120, 4, &two, &on_a100(40, 10)), 4);
        // An on-demand base runner (an H100 the plan prices at nothing, so it is kept first)
        // does not make new runners H100s: four times the rate, 20 A100 slots, are the base's
        // 6.3 and the A100's 2, and six more A100 runners (sized as H100s, two).
        let base = runner(9, "0", 1000);
        assert_eq!(desired(0, 4, &[base, a100(2)], &on_a100(80, 20)), 8);
        // No runner: the speed last seen serving (the A100s'), as `predicted_needed` sizes.
        assert_eq!(predicted_needed(&spec, &h, 0, 0, t0()), Some(3));
    }

    /// `predict = true`, eight requests per runner, no buffer, minimum or scaling delay.
    fn predict_spec(keep_alive: KeepAlive) -> ScalingSpec {
        ScalingSpec {
            min_concurrency: 0,
            max_concurrency: 100,
            concurrency_buffer: 0,
            concurrency_buffer_perc: 0,
            max_multiplexing: 8,
            keep_alive,
            scaling_delay: Duration::ZERO,
            predict: true,
            ..spec()
        }
    }

    #[test]
    fn predict_sizes_for_rate_times_service_time_not_one_slot_per_queued_request() {
        let s = predict_spec(KeepAlive::For(Duration::from_secs(300)));
        let mut h = DemandHistory::new(Duration::from_secs(240), Duration::from_secs(180));
        // Nothing measured yet, 360 requests queued behind one starting runner: fal would want
        // 45 runners; predict holds at the probe runner.
        let starting = [RunnerInfo {
            id: 1,
            ready: false,
            in_flight: 0,
            idle_since: None,
            slot_price: Price::ZERO,
            paid_until: None,
            work_milli: 0,
        }];
        let d = decide_with(&s, 360, 0, None, &starting, &h, t0());
        assert_eq!((d.target.desired, d.start), (1, 0));
        assert_eq!(
            decide_with(&ScalingSpec { predict: false, ..s.clone() }, 360, 0, None, &starting, &h, t0()).start,
            44
        );
        // No runner at all: the probe starts.
        assert_eq!(decide_with(&s, 5, 0, None, &[], &h, t0()).start, 1);
        // Measured: 2 requests/s of 2.1 s each = 4.2 slots; a backlog of 360 drains within the
        // 180 s cold start with 360 × 2.1 / 180 = 4.2 more: ⌈8.4 / 8⌉ = 2 runners.
        for i in 0..=30 {
            h.record(DemandSample {
                at: t0() + secs(-300 + i * 10),
                desired: 1,
                arrived: 20 * i as u64,
                queued: 0,
                in_flight: 0,
                in_flight_work: 0,
            });
        }
        h.service_s = Some(2.1);
        assert_eq!(predicted_needed(&s, &h, 360, 0, t0()), Some(2));
        assert_eq!(predicted_needed(&s, &h, 0, 0, t0()), Some(1));
        // Never below what the requests in flight occupy.
        assert_eq!(predicted_needed(&s, &h, 0, 40, t0()), Some(5));
    }

    #[test]
    fn before_twenty_complete_a_floor_under_the_service_time_starts_runners_and_stops_none() {
        let s = predict_spec(KeepAlive::Auto);
        let probe = |ready: bool| RunnerInfo {
            id: 1,
            ready,
            in_flight: if ready { 8 } else { 0 },
            idle_since: None,
            slot_price: Price::parse_decimal("1.00").unwrap(),
            paid_until: None,
            work_milli: 1000,
        };
        // Two requests a second arrive; the probe runner's eight slots have been busy for
        // `busy_s` seconds and `done` requests have completed.
        let history = |busy_s: i64, done: u64| {
            let mut h = DemandHistory::new(Duration::from_secs(240), Duration::from_secs(180));
            for i in 0..=busy_s / 10 {
                let arrived = 8 + 20 * i as u64;
                let done_now = done * i as u64 / (busy_s / 10) as u64;
                h.record(DemandSample {
                    at: t0() + secs(-busy_s + i * 10),
                    desired: 1,
                    arrived,
                    queued: (arrived - 8 - done_now) as u32,
                    in_flight: 8,
                    in_flight_work: 8000,
                });
            }
            h
        };
        // A minute in, nothing completed: each of the eight has taken 60 s so far, at least.
        let h = history(60, 0);
        assert_eq!(h.service_s, None);
        let floor = h.service_floor_s.expect("eight requests in service for a minute");
        assert!((floor - 60.0).abs() < 1e-9, "{floor}");
        // 2/s × 60 s = 120 slots, and the 120 queued drained within the 180 s cold start: 40
        // more; ⌈160 / 8⌉ = 20 runners. Until 2026-12-03 the count held at the probe.
        let d = decide_with(&s, 120, 8, None, &[probe(true)], &h, t0());
        assert_eq!((d.target.desired, d.start), (20, 19));
        // Ten completed as well: 480 request-seconds over 18 requests.
        let h = history(60, 10);
        let floor = h.service_floor_s.expect("floor");
        assert!((floor - 480.0 / 18.0).abs() < 1e-9, "{floor}");
        // A floor that wants fewer runners than run stops none of them.
        let low = DemandHistory { service_floor_s: Some(0.001), ..history(60, 0) };
        let runners: Vec<RunnerInfo> = (1..=5).map(|id| RunnerInfo { id, ..probe(id == 1) }).collect();
        let d = decide_with(&s, 120, 8, None, &runners, &low, t0());
        assert_eq!((d.target.desired, d.start, d.stop.len()), (5, 0, 0));
        // Fewer than three requests seen: no floor, the probe holds.
        let mut few = DemandHistory::new(Duration::from_secs(240), Duration::from_secs(180));
        for i in 0..=6 {
            few.record(DemandSample {
                at: t0() + secs(-60 + i * 10),
                desired: 1,
                arrived: 2,
                queued: 0,
                in_flight: 2,
                in_flight_work: 2000,
            });
        }
        assert_eq!((few.service_s, few.service_floor_s), (None, None));
        assert_eq!(decide_with(&s, 0, 2, None, &[probe(true)], &few, t0()).start, 0);
        // Twenty completions: the mean replaces the floor (Little's law, as before).
        let h = history(60, 20);
        assert_eq!(h.service_floor_s, None);
        let mean = h.service_s.expect("measured");
        assert!((mean - 480.0 / 20.0).abs() < 1e-9, "{mean}");
    }

    #[test]
    fn billed_by_the_hour_a_runner_more_starts_for_a_quarter_of_one_not_a_sliver() {
        let s = ScalingSpec { max_multiplexing: 1, ..predict_spec(KeepAlive::Auto) };
        // Two requests a second, billed by the hour (a re-creation of 3,780 s, a 180 s cold
        // start), four busy runners: the slots wanted are 2 s + (2 − 4 ÷ s) × s = 4 s − 4.
        let busy: Vec<RunnerInfo> =
            (1..=4).map(|id| RunnerInfo { in_flight: 1, idle_since: None, ..idle(id, 0, "1.00") }).collect();
        let hourly = |service: f64| DemandHistory {
            recreate: Duration::from_secs(3780),
            service_s: Some(service),
            ..steady(4, 20, 4)
        };
        // s = 2.05: 4.2 runners' worth, a fifth runner for a fifth of its slots, paid an hour.
        let d = decide_with(&s, 0, 4, None, &busy, &hourly(2.05), t0());
        assert_eq!((d.target.desired, d.start), (4, 0));
        // s = 2.1: 4.4, more than a quarter short: it starts.
        let d = decide_with(&s, 0, 4, None, &busy, &hourly(2.1), t0());
        assert_eq!((d.target.desired, d.start), (5, 1));
        // Billed by the second the sliver starts a runner (it pays about what it serves).
        let by_second = DemandHistory { service_s: Some(2.05), ..steady(4, 20, 4) };
        assert_eq!(decide_with(&s, 0, 4, None, &busy, &by_second, t0()).start, 1);
    }

    #[test]
    fn requests_too_fast_to_be_seen_in_flight_still_get_a_runner() {
        let s = predict_spec(KeepAlive::Auto);
        // A request a second, each done within a millisecond: no pass ever finds one in flight,
        // and the service time measures zero.
        let h = steady(1, 10, 0);
        assert_eq!(h.service_s, Some(0.0));
        // Arrivals go on: one runner, not none.
        assert_eq!(predicted_needed(&s, &h, 0, 0, t0()), Some(1));
        // Requests queued and no runner left: one starts.
        let d = decide_with(&s, 12, 0, None, &[], &h, t0());
        assert_eq!((d.target.desired, d.start), (1, 1));
    }

    #[test]
    fn forecast_rises_ahead_of_a_daily_wave() {
        let mut h = DemandHistory::new(Duration::from_secs(240), Duration::from_secs(1200));
        // Two days of samples every minute: quiet (1 request a minute), but 10 a second from
        // 09:00 to 10:00 each day.
        let start = chrono::Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        let mut arrived = 0;
        let mut at = start;
        while at < start + chrono::Duration::days(2) + chrono::Duration::hours(8) + chrono::Duration::minutes(50) {
            let wave = (9..10).contains(&chrono::Timelike::hour(&at));
            arrived += if wave { 600 } else { 1 };
            h.record(DemandSample { at, desired: 0, arrived, queued: 0, in_flight: 0, in_flight_work: 0 });
            at += chrono::Duration::minutes(1);
        }
        let now = at - chrono::Duration::minutes(1);
        // 08:49 on day 3: recent rate is quiet, the 20-minute cold start ends in the wave.
        assert!(h.recent_rate(now) < 0.1);
        let f = h.forecast_rate(now);
        assert!(f > 5.0, "{f}");
        // Without the days seen the forecast is the recent rate.
        let mut fresh = h.clone();
        fresh.bins.retain(|(b, _)| *b >= now.timestamp() / 900 - 20);
        assert!(fresh.forecast_rate(now) < 0.1);
    }

    #[test]
    fn the_held_peak_ends_when_arrivals_stop_for_longer_than_their_own_silences() {
        let mut steady = DemandHistory::new(Duration::from_secs(330), Duration::from_secs(270));
        // Six requests a second for ten minutes, sampled every 10 s, then nothing for 50 s.
        for i in 0..=60 {
            steady.record(sample(i * 10, 10, 60 * i as u64, 40));
        }
        for i in 61..=65 {
            steady.record(sample(i * 10, 10, 3600, 20));
        }
        let at = |s: i64| t0() + secs(s);
        // A 50 s silence is less than a rate window: the peak still holds.
        assert!(!steady.arrivals_stopped(at(650)));
        assert!((steady.forecast_rate(at(650)) - 6.0).abs() < 0.01);
        // At 60 s of silence, never silent before: stopped, nothing forecast.
        steady.record(sample(660, 10, 3600, 0));
        assert!(steady.arrivals_stopped(at(660)));
        assert_eq!(steady.forecast_rate(at(660)), 0.0);

        // Bursts of 600 requests every 3 minutes, silent between them.
        let mut bursty = DemandHistory::new(Duration::from_secs(330), Duration::from_secs(270));
        let mut arrived = 0;
        for i in 0..=60 {
            if i % 18 == 0 {
                arrived += 600;
            }
            bursty.record(sample(i * 10, 10, arrived, 0));
        }
        // The last burst was at 540 s; at 700 s, 160 s of silence against 170 s before: a gap
        // between bursts, and the peak holds for the next.
        bursty.record(sample(700, 10, arrived, 0));
        assert!(!bursty.arrivals_stopped(at(700)));
        assert!(bursty.forecast_rate(at(700)) >= 9.9, "{}", bursty.forecast_rate(at(700)));
        // Three times the longest silence seen (and still inside the history): stopped.
        assert!(!bursty.arrivals_stopped(at(540 + 3 * 170)));
        assert!(bursty.arrivals_stopped(at(540 + 3 * 170 + 10)));
    }

    #[test]
    fn the_peak_rate_is_looked_for_over_the_last_twenty_minutes_however_long_the_history() {
        // Billed by the hour: a re-creation is an hour and a cold start, the history over three
        // hours. Ten requests a second for the first ten minutes, then two a second for an hour.
        let mut h = DemandHistory::new(Duration::from_secs(3780), Duration::from_secs(180));
        assert!(history_window(h.recreate) > Duration::from_secs(3 * 3600));
        let mut arrived = 0;
        for i in 0..=420 {
            arrived += if i <= 60 { 100 } else { 20 };
            h.record(sample(i * 10, 2, arrived, 10));
        }
        let now = t0() + secs(4200);
        // The first ten minutes' rate held for the hour after (until 2026-12-04: 10/s).
        assert!((h.forecast_rate(now) - 2.0).abs() < 0.01, "{}", h.forecast_rate(now));
        // Within twenty minutes of the busy minutes, they still count.
        let mut recent = DemandHistory::new(Duration::from_secs(3780), Duration::from_secs(180));
        let mut arrived = 0;
        for i in 0..=180 {
            arrived += if (60..=66).contains(&i) { 100 } else { 20 };
            recent.record(sample(i * 10, 2, arrived, 10));
        }
        assert!(
            (recent.forecast_rate(t0() + secs(1800)) - 10.0).abs() < 0.01,
            "{}",
            recent.forecast_rate(t0() + secs(1800))
        );
    }

    #[test]
    fn runners_kept_busy_by_a_backlog_are_not_what_demand_wants() {
        let s = predict_spec(KeepAlive::Auto);
        // One request a second, each in service 10 s: ten at once, two runners of eight.
        let h = steady(2, 10, 10);
        // Five runners full with a backlog's 40 requests: none may stop (desired 5), but demand
        // wants two, and that is what a caller records for keep-alive.
        let runners: Vec<RunnerInfo> = (1..=5).map(|i| busy(i, 8)).collect();
        let d = decide_with(&s, 0, 40, None, &runners, &h, t0());
        assert_eq!((d.target.desired, d.target.wanted, d.start), (5, 2, 0));
        assert!(d.stop.is_empty());
        // Without `predict` they are the same.
        let fal = decide_with(&ScalingSpec { predict: false, ..s.clone() }, 0, 40, None, &runners, &h, t0());
        assert_eq!(fal.target.wanted, fal.target.desired);
        // 720 requests queued: drained within the 180 s cold start they call for 720 × 10 / 180
        // = 40 slots beside the arrivals' 10: ⌈50 / 8⌉ = 7 runners start. Demand wanting them
        // again is the backlog drained over a re-creation: 240 s here, 30 slots, ⌈40 / 8⌉ = 5.
        let d = decide_with(&s, 720, 0, None, &[], &h, t0());
        assert_eq!((d.target.desired, d.target.wanted, d.start), (7, 5, 7));
        // Billed by the hour a re-creation is the cold start and the hour: 720 × 10 / 3780 ≈ 1.9
        // slots, two runners (until 2026-12-03 seven, kept for a second paid hour). The runners
        // started are for the queue as it will stand when they come up, 720 + 180 arriving
        // meanwhile: 900 × 10 / 180 = 50 slots beside the arrivals' 10, ⌈60 / 8⌉ = 8.
        let hourly = DemandHistory { recreate: Duration::from_secs(3780), ..h };
        let d = decide_with(&s, 720, 0, None, &[], &hourly, t0());
        assert_eq!((d.target.desired, d.target.wanted), (8, 2));
    }

    #[test]
    fn billed_by_the_hour_a_growing_backlog_starts_its_runners_in_one_step() {
        let s = predict_spec(KeepAlive::Auto);
        // Four requests a second, each in service 2.1 s: 8.4 slots. A cold start of 180 s; a
        // new node's minimum billing a minute, or an hour.
        let history = |recreate: u64| DemandHistory {
            recreate: Duration::from_secs(recreate),
            service_s: Some(2.1),
            ..steady(1, 40, 0)
        };
        let (by_minute, by_hour) = (history(240), history(3780));
        let starting = |n: u32| -> Vec<RunnerInfo> {
            (1..=n)
                .map(|id| RunnerInfo {
                    id: RunnerId::from(id),
                    ready: false,
                    in_flight: 0,
                    idle_since: None,
                    slot_price: Price::ZERO,
                    paid_until: None,
                    work_milli: 0,
                })
                .collect()
        };
        // 720 queued, nothing running. By the minute, the queue as it stands is drained within
        // the cold start: 8.4 + 720 × 2.1 / 180 = 16.8 slots, 3 runners; and as it grows while
        // they start, a runner more (at 1,400 queued, 8.4 + 16.3 = 24.7 slots: 4).
        assert_eq!(decide_with(&s, 720, 0, None, &[], &by_minute, t0()).start, 3);
        assert_eq!(decide_with(&s, 1400, 0, None, &starting(3), &by_minute, t0()).start, 1);
        // By the hour each of those runners pays an hour, and each landed on the node that fits
        // one. Here the runners are for the queue as it will stand when they come up, 720 + 4 ×
        // 180 = 1,440: 8.4 + 16.8 = 25.2 slots, 4 runners at once (a mix sized for four). The
        // four still starting count as serving 4 × 8 / 2.1 = 15.2 a second against the 4
        // arriving: the queue they meet is drained by them, and nothing more starts as it grows.
        assert_eq!(decide_with(&s, 720, 0, None, &[], &by_hour, t0()).start, 4);
        assert_eq!(decide_with(&s, 1400, 0, None, &starting(4), &by_hour, t0()).start, 0);
        // Two runners ready serve 7.6 a second: 720 queued are drained by them within the cold
        // start (720 − 3.6 × 180 = 68 left: 8.4 + 0.8 slots, still two runners), and by the
        // hour nothing starts; by the minute a third starts (8.4 + 8.4 = 16.8 slots).
        let two = [busy(1, 8), busy(2, 8)];
        assert_eq!(decide_with(&s, 720, 16, None, &two, &by_hour, t0()).start, 0);
        assert_eq!(decide_with(&s, 720, 16, None, &two, &by_minute, t0()).start, 1);
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
                predict: false, consolidation: true, keep_min_over_budget: false,
            };
            let rs: Vec<RunnerInfo> = runners.iter().enumerate().map(|(i, (ready, inf, idle_for))| RunnerInfo {
                id: i as RunnerId, ready: *ready, in_flight: *inf,
                idle_since: (*inf == 0).then(|| t0() - secs(*idle_for)), slot_price: Price::ZERO, paid_until: None, work_milli: 0,
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

        #[test]
        fn predict_invariants(
            min in 0u32..3, extra in 1u32..20, mux in 1u32..8, queued in 0u32..500,
            runners in proptest::collection::vec((any::<bool>(), 0u32..3, 0i64..2000, prop_oneof![Just(0u32), Just(315u32), Just(1000u32)]), 0..15),
            // Samples 10 s apart: arrivals since the last, queued, in flight.
            samples in proptest::collection::vec((0u64..40, 0u32..300, 0u32..40), 0..60),
            hourly in any::<bool>(),
        ) {
            let s = ScalingSpec {
                min_concurrency: min, max_concurrency: min + extra, concurrency_buffer: 0,
                concurrency_buffer_perc: 0, max_multiplexing: mux, keep_alive: KeepAlive::Auto,
                scaling_delay: Duration::ZERO, predict: true, consolidation: true, keep_min_over_budget: false,
            };
            let recreate = if hourly { 3780 } else { 240 };
            let mut h = DemandHistory::new(Duration::from_secs(recreate), Duration::from_secs(180));
            let mut arrived = 0u64;
            for (i, (new, q, f)) in samples.iter().enumerate() {
                arrived += new;
                h.record(DemandSample {
                    at: t0() + secs(10 * (i as i64 - samples.len() as i64)),
                    desired: 1, arrived, queued: *q, in_flight: *f, in_flight_work: u64::from(*f) * 315,
                });
            }
            // A floor only until a mean is measured, and never negative or NaN.
            prop_assert!(h.service_s.is_none() || h.service_floor_s.is_none());
            for v in [h.service_s, h.service_floor_s].into_iter().flatten() {
                prop_assert!(v.is_finite() && v >= 0.0, "{v}");
            }
            let rs: Vec<RunnerInfo> = runners.iter().enumerate().map(|(i, (ready, inf, idle_for, work))| RunnerInfo {
                id: i as RunnerId, ready: *ready, in_flight: *inf,
                idle_since: (*inf == 0).then(|| t0() - secs(*idle_for)),
                slot_price: Price::parse_decimal(["1.00", "2.50", "0"][i % 3]).unwrap(), paid_until: None, work_milli: *work,
            }).collect();
            let in_flight: u32 = rs.iter().map(|r| r.in_flight).sum();
            let d = decide_with(&s, queued, in_flight, None, &rs, &h, t0());
            let n = rs.len() as u32;
            prop_assert!(d.start == 0 || d.stop.is_empty());
            prop_assert!(n + d.start <= s.max_concurrency.max(n));
            prop_assert!(n - d.stop.len() as u32 >= s.min_concurrency.min(n));
            for id in &d.stop {
                let r = rs.iter().find(|r| r.id == *id).unwrap();
                prop_assert!(r.in_flight == 0 && r.ready);
            }
            // Nothing measured and demand waiting: the runners held (the probe, what the floor
            // adds) stop only down to what fal's rule would run.
            if h.service_s.is_none() && queued + in_flight > 0 {
                let fal = target(&s, queued + in_flight).desired;
                prop_assert!(n - d.stop.len() as u32 >= n.min(fal), "{d:?}");
            }
        }
    }
}
