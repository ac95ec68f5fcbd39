//! The hindsight oracle: what serving this demand costs someone who knows every arrival in
//! advance but pays what every policy pays — whole nodes, the cold start (provision + boot +
//! model load) billed before a node serves, each cloud's billing step and minimum — and meets
//! none of the surprises (no capacity errors, no preemptions, every delay at its mean).
//!
//! The algorithm, in four steps:
//!
//! 1. **Runners per bucket.** Time is cut into buckets as long as the scenario's SLO wait `W`.
//!    Bucket `b` needs ⌈work(b) ÷ (max_multiplexing × W)⌉ runners, work(b) being the service time
//!    of the requests that arrive in it on the GPU considered. This is a fluid relaxation:
//!    requests are treated as divisible, and may wait for about a bucket.
//! 2. **Levels.** The k-th runner is needed in the buckets where at least k are. A level's busy
//!    buckets form intervals; a node serving a level is up from the start of an interval to one
//!    bucket after its end (to finish what arrived last), launched one cold start earlier — but
//!    never before the first tick that sees a request, the first moment any policy can act (a
//!    node launched later than that serves its interval's work that much later, and stays up
//!    that much longer).
//! 3. **Gaps.** Consecutive intervals of a level share one node when keeping it through the gap
//!    costs no more than ending it and launching again — the two bills compared exactly, cold
//!    start, billing step and minimum billing included — deciding greedily from the first.
//! 4. **Node sizes.** A node of `k` runners serves levels j+1 … j+k and is up whenever level j+1
//!    is. A dynamic programme over the levels chooses for each block of levels the offering (and
//!    so the node size) that makes the whole cheapest. One GPU model serves the whole run: the
//!    cheapest such plan over the GPU models the app may use.
//!
//! The app's `min_concurrency` runners are needed in every bucket, and its first
//! `base_on_demand` levels are served by on-demand nodes (a node serving any of them is one), as
//! fleet never runs those runners on spot. It never runs more than `max_concurrency` runners
//! (work beyond them waits for the next bucket). It leaves out capacity limits, budgets and
//! quotas.
//! The engine then carries
//! the schedule out ([`crate::scenario::Policy::Oracle`]), so its waits and SLO attainment are
//! measured like every other policy's, and its cost is billed the same way; the spec's other apps
//! (no requests) are planned in that run as in every policy's, so their cost is counted alike.

use std::collections::HashMap;
use std::time::Duration;

use fleet_core::{GpuModel, Money};
use fleet_policies::placement::{Candidate, PlacementIndex, RankInput, UnavailableCache};

use crate::demand::Arrival;
use crate::engine::{service_ms, start_time};
use crate::scenario::Scenario;

/// One node the oracle rents for app `app` (its index in the spec): launched at `launch_ms`,
/// ended at `end_ms`, hosting `runners`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booking {
    pub app: usize,
    pub offering: u32,
    pub launch_ms: u64,
    pub end_ms: u64,
    pub runners: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub bookings: Vec<Booking>,
    /// What the bookings cost as billed.
    pub cost: Money,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One level's nodes on one candidate: their bill, and each node's (launch, end) in ms.
type Blocks = (Money, Vec<(u64, u64)>);

/// The oracle's nodes for app `app` (index in the spec) serving `arrivals` (see the module's
/// documentation).
pub fn schedule(sc: &Scenario, index: &PlacementIndex, app: usize, arrivals: &[Arrival]) -> Schedule {
    let cache = UnavailableCache::default();
    let ranked = index.explain(app, &RankInput::new(start_time(), &cache)).ranked;
    let mut gpus: Vec<GpuModel> = Vec::new();
    for c in &ranked {
        let g = index.offering(c.offering).instance.gpu;
        if !gpus.contains(&g) {
            gpus.push(g);
        }
    }
    gpus.into_iter()
        .map(|g| {
            let cands: Vec<&Candidate> =
                ranked.iter().filter(|c| index.offering(c.offering).instance.gpu == g).collect();
            for_gpu(sc, index, app, arrivals, g, &cands)
        })
        // Where `max_concurrency` runners cannot serve the demand as it comes, the GPU on which
        // it waits least: a slower one would cost less by serving less, later.
        .min_by_key(|(s, waited)| (*waited, s.cost))
        .map(|(s, _)| s)
        .unwrap_or(Schedule { bookings: Vec::new(), cost: Money::ZERO })
}

/// Runners needed per bucket for `work` (service ms per bucket), each serving `per_runner` ms of
/// it in a bucket: at least `floor`, and never more than `max` (the spec's `max_concurrency`,
/// which binds every policy). What `max` runners cannot serve in a bucket waits for the next, a
/// fluid queue, and what is left at the end goes unserved, as it does under every policy. Also
/// returns how long work waited so (Σ over buckets of the work waiting at its end, per unit of
/// work, in millionths of a bucket): 0 wherever `max` runners serve every bucket's work. Until
/// 2026-12-03 the oracle ran as many runners as the demand wanted: where it wanted more than
/// `max_concurrency`, its schedule was one no policy may run (225 GPUs on average for a cap of 64
/// one-GPU runners), and every policy cost less than the oracle (0.47–0.68×).
fn runners_needed(work: &[u64], per_runner: u64, floor: u32, max: u32) -> (Vec<u32>, u64) {
    let max = max.max(floor);
    let per_runner = per_runner.max(1);
    let (mut waiting, mut waited) = (0u64, 0u128);
    let need = work
        .iter()
        .map(|x| {
            let due = waiting.saturating_add(*x);
            let n = u32::try_from(due.div_ceil(per_runner)).unwrap_or(u32::MAX).clamp(floor, max);
            waiting = due.saturating_sub(u64::from(n).saturating_mul(per_runner));
            waited += u128::from(waiting);
            n
        })
        .collect();
    let total = work.iter().fold(0u64, |t, x| t.saturating_add(*x));
    (need, u64::try_from(waited * 1_000_000 / u128::from(total.max(1))).unwrap_or(u64::MAX))
}

/// Each level's busy intervals in ms (start, end), for runners needed per bucket.
fn level_intervals(need: &[u32], w: u64, end: u64) -> Vec<Vec<(u64, u64)>> {
    let top = need.iter().copied().max().unwrap_or(0) as usize;
    let mut levels = vec![Vec::new(); top];
    let mut open = vec![0usize; top];
    let mut prev = 0usize;
    for b in 0..=need.len() {
        let n = need.get(b).copied().unwrap_or(0) as usize;
        for o in open.iter_mut().take(n).skip(prev) {
            *o = b;
        }
        for l in n..prev {
            // Busy from bucket open[l] through b − 1; up one bucket more to finish.
            let e = ((b as u64 + 1) * w).min(end);
            levels[l].push((open[l] as u64 * w, e));
        }
        prev = n;
    }
    levels
}

fn for_gpu(
    sc: &Scenario,
    index: &PlacementIndex,
    app: usize,
    arrivals: &[Arrival],
    gpu: GpuModel,
    cands: &[&Candidate],
) -> (Schedule, u64) {
    let w = ms(sc.slo_wait).max(1000);
    let end = ms(sc.duration);
    let mux = u64::from(sc.spec.apps[app].scaling.max_multiplexing.max(1));
    let service = sc.service_for(&sc.spec.apps[app].name);
    let mut work = vec![0u64; end.div_ceil(w) as usize];
    for a in arrivals.iter().filter(|a| a.at_ms < end) {
        work[(a.at_ms / w) as usize] += service_ms(service, a, gpu);
    }
    // The app's `min_concurrency` runners are held throughout, as every policy holds them: the
    // spec asks for them whatever the demand (until 2026-12-02 the oracle left them out, and an
    // app with a floor of two cost every policy twice the oracle's bill on steady demand).
    let floor = sc.spec.apps[app].scaling.min_concurrency;
    let (need, waited) = runners_needed(&work, mux * w, floor, sc.spec.apps[app].scaling.max_concurrency);
    let levels = level_intervals(&need, w, end);
    let tick = ms(sc.tick).max(1);
    let first_tick = arrivals.first().map_or(0, |a| a.at_ms.div_ceil(tick) * tick);
    // Per candidate: cold start and the bill for a node up so long.
    let bill = |c: &Candidate, ran: u64| -> Money {
        let model = sc.cloud(index.offering(c.offering).cloud);
        c.node_price.cost_for(model.billed(Duration::from_millis(ran)))
    };
    // Looked up once: `cold` runs for every candidate, level and interval.
    let runner_start = sc.runner_start_estimate(&sc.spec.apps[app].name, true);
    let cold = |c: &Candidate| -> u64 {
        let model = sc.cloud(index.offering(c.offering).cloud);
        ms(model.provision_delay + model.boot + runner_start)
    };
    // The nodes one level needs on one candidate, gaps bridged where that is cheaper.
    let blocks = |level: usize, c: &Candidate| -> Blocks {
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut cur: Option<(u64, u64)> = None;
        for &(s, e) in &levels[level] {
            let launch = s.saturating_sub(cold(c)).max(first_tick);
            // A node that cannot be ready by the interval's start serves its work late: the
            // interval moves back by that much.
            let e = (e + (launch + cold(c)).saturating_sub(s)).min(end).max(launch);
            cur = Some(match cur {
                None => (launch, e),
                Some((l0, e0)) if e0 >= launch => (l0, e.max(e0)),
                Some((l0, e0)) if bill(c, e - l0) <= bill(c, e0 - l0) + bill(c, e - launch) => (l0, e),
                Some(done) => {
                    out.push(done);
                    (launch, e)
                }
            });
        }
        out.extend(cur);
        let cost = out.iter().map(|(l, e)| bill(c, e - l)).sum();
        (cost, out)
    };
    let top = levels.len();
    // Levels 1..=base may not be served on spot, as fleet's first `base_on_demand` runners are
    // not (until 2026-12-03 the oracle put them on spot, and an app asking for two on-demand
    // runners cost fleet 1.89× the oracle where the spot bill set the oracle's). Where the GPU
    // has no on-demand offering the rule cannot hold, and does not.
    let is_spot = |c: &Candidate| index.offering(c.offering).capacity == fleet_core::CapacityType::Spot;
    let base = if cands.iter().any(|c| !is_spot(c)) { sc.spec.apps[app].placement.base_on_demand as usize } else { 0 };
    let mut memo: HashMap<(usize, usize), Blocks> = HashMap::new();
    // best[l]: the cheapest nodes for levels 1..=l; choice[l]: (candidate, j) covering j+1..=l.
    let mut best = vec![Money::ZERO; top + 1];
    let mut choice = vec![(0usize, 0usize); top + 1];
    for l in 1..=top {
        let mut b: Option<(Money, usize, usize)> = None;
        for (ci, c) in cands.iter().enumerate() {
            let j = l.saturating_sub(c.runners_per_node.max(1) as usize);
            if j < base && is_spot(c) {
                continue;
            }
            let cost = memo.entry((j, ci)).or_insert_with(|| blocks(j, c)).0;
            let total = best[j] + cost;
            if b.is_none_or(|(x, _, _)| total < x) {
                b = Some((total, ci, j));
            }
        }
        let (total, ci, j) = b.expect("an app with demand has candidates");
        best[l] = total;
        choice[l] = (ci, j);
    }
    let mut bookings = Vec::new();
    let mut l = top;
    while l > 0 {
        let (ci, j) = choice[l];
        for &(launch_ms, end_ms) in &memo[&(j, ci)].1 {
            bookings.push(Booking { app, offering: cands[ci].offering, launch_ms, end_ms, runners: (l - j) as u32 });
        }
        l = j;
    }
    bookings.sort_by_key(|b| (b.launch_ms, b.end_ms, b.offering));
    (Schedule { bookings, cost: best[top] }, waited)
}

#[cfg(test)]
mod tests {
    use super::{level_intervals, runners_needed};

    #[test]
    fn runners_stop_at_max_concurrency_and_the_rest_waits() {
        // Runners serving 10 ms of work a bucket each: 35 ms then 5 ms three buckets later.
        // Uncapped: 4 runners, then 1; nothing waits.
        assert_eq!(runners_needed(&[35, 0, 0, 5], 10, 0, 10), (vec![4, 0, 0, 1], 0));
        // At most 2: 15 ms wait a bucket and are served in the next; 15 of 40 ms waited one
        // bucket: 0.375 of a bucket per unit of work.
        assert_eq!(runners_needed(&[35, 0, 0, 5], 10, 0, 2), (vec![2, 2, 0, 1], 375_000));
        // The floor holds even where nothing comes, and a max below it is the floor.
        assert_eq!(runners_needed(&[0, 35], 10, 3, 1), (vec![3, 3], 142_857));
    }

    #[test]
    fn levels_nest_and_end_a_bucket_late() {
        // Runners per 10 s bucket: 1 2 0 2 1; the run ends at 45 s.
        let l = level_intervals(&[1, 2, 0, 2, 1], 10, 45);
        assert_eq!(l[0], [(0, 30), (30, 45)]);
        assert_eq!(l[1], [(10, 30), (30, 45)]);
        assert_eq!(l.len(), 2);
    }
}
