//! Price-aware placement: which offerings to try for a new node, in failover order.
//!
//! Work is split by how often its inputs change:
//! - [`PlacementIndex::new`] runs once per catalog and spec version: for every app it filters the
//!   catalog by what never changes between decisions (GPU model, shape, allowed clouds and regions,
//!   price cap, spot policy) and sorts the rest by effective $/GPU-hour.
//! - [`PlacementIndex::rank`] runs per decision: it walks that sorted list and applies what does
//!   change (offerings that recently failed, quotas, budget headroom, the capacity type wanted),
//!   stopping after `limit` candidates. [`PlacementIndex::explain`] applies the same checks to every
//!   offering and gives the reason for each exclusion.
//!
//! Effective $/GPU-hour is the node's price over the GPUs the app can use on it: a runner needing
//! 3 GPUs uses 6 of an 8-GPU machine, so that machine costs price/6 per useful GPU-hour. Offerings
//! are sorted by it per hour of H100 work ([`GpuModel::work_price`]: an A100's price counts about
//! 3.2 times, an app allowing both families weighing that an A100 runner does a third of the
//! work), which within one family is the same order. Ties are broken by node price, then cloud,
//! region, zone, instance type and capacity type.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use fleet_core::spec::{AppSpec, FleetSpec, Quota, SpotPolicy};
use fleet_core::{Availability, CapacityType, Catalog, Cloud, GpuModel, Money, Offering, OfferingKey, Price, Time};
use serde::Serialize;

use crate::budget::BudgetCap;

/// Position of an offering in the index's catalog.
pub type OfferingId = u32;

/// Why an offering was recently refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnavailableReason {
    InsufficientCapacity,
    QuotaExceeded,
    /// A spot node there was reclaimed.
    Preempted,
    /// A machine launched there was not what was rented (fewer GPUs, another model, ECC errors).
    Faulty,
}

impl fmt::Display for UnavailableReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnavailableReason::InsufficientCapacity => "insufficient capacity",
            UnavailableReason::QuotaExceeded => "quota exceeded",
            UnavailableReason::Preempted => "spot preempted",
            UnavailableReason::Faulty => "a machine was not what was rented",
        })
    }
}

/// Why an offering is not in the ranked list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Reason {
    GpuNotWanted {
        gpu: GpuModel,
    },
    TooSmall {
        detail: String,
    },
    CloudNotAllowed {
        cloud: Cloud,
    },
    RegionNotAllowed {
        region: String,
    },
    AbovePriceCap {
        price_per_gpu: Price,
        cap: Price,
    },
    SpotNotAllowed,
    /// Reserved capacity is bought outside fleet; the catalog's rows are for reference.
    ReservedCapacity,
    /// The provider marked it unavailable in its live offerings.
    MarkedUnavailable {
        detail: String,
    },
    RecentlyFailed {
        why: UnavailableReason,
        until: Time,
    },
    QuotaFull {
        cloud: Cloud,
        region: Option<String>,
        used: u32,
        max: u32,
        need: u32,
    },
    CapacityNotWanted {
        capacity: CapacityType,
    },
    /// Hosts fewer runners than this node must.
    FewerRunners {
        fits: u32,
        need: u32,
    },
    OverBudget {
        price: Price,
        room: Money,
        cap: Option<BudgetCap>,
    },
}

impl Reason {
    /// A short stable name for the kind of reason (for summaries and JSON).
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::GpuNotWanted { .. } => "gpu-not-wanted",
            Reason::TooSmall { .. } => "too-small",
            Reason::CloudNotAllowed { .. } => "cloud-not-allowed",
            Reason::RegionNotAllowed { .. } => "region-not-allowed",
            Reason::AbovePriceCap { .. } => "above-price-cap",
            Reason::SpotNotAllowed => "spot-not-allowed",
            Reason::ReservedCapacity => "reserved-capacity",
            Reason::MarkedUnavailable { .. } => "marked-unavailable",
            Reason::RecentlyFailed { .. } => "recently-failed",
            Reason::QuotaFull { .. } => "quota-full",
            Reason::CapacityNotWanted { .. } => "capacity-not-wanted",
            Reason::FewerRunners { .. } => "fewer-runners",
            Reason::OverBudget { .. } => "over-budget",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::GpuNotWanted { gpu } => write!(f, "GPU {gpu} not wanted"),
            Reason::TooSmall { detail } => write!(f, "too small: {detail}"),
            Reason::CloudNotAllowed { cloud } => write!(f, "cloud {cloud} not allowed"),
            Reason::RegionNotAllowed { region } => write!(f, "region {region} not allowed"),
            Reason::AbovePriceCap { price_per_gpu, cap } => write!(f, "{price_per_gpu} per GPU is above the cap {cap}"),
            Reason::SpotNotAllowed => write!(f, "spot not allowed by the app's spot policy"),
            Reason::ReservedCapacity => write!(f, "reserved capacity is not bought by fleet"),
            Reason::MarkedUnavailable { detail } => write!(f, "unavailable: {detail}"),
            Reason::RecentlyFailed { why, until } => write!(f, "{why}; avoided until {}", until.format("%H:%M:%S")),
            Reason::QuotaFull { cloud, region, used, max, need } => {
                write!(f, "quota {cloud}")?;
                if let Some(r) = region {
                    write!(f, "/{r}")?;
                }
                write!(f, " full: {used} of {max} GPUs used, {need} more needed")
            }
            Reason::CapacityNotWanted { capacity } => write!(f, "{capacity} not wanted for this node"),
            Reason::FewerRunners { fits, need } => write!(f, "fits {fits} runners, this node needs {need}"),
            Reason::OverBudget { price, room, cap } => {
                write!(f, "{price} exceeds the budget room of {room}/h")?;
                if let Some(c) = cap {
                    write!(f, " ({c})")?;
                }
                Ok(())
            }
        }
    }
}

/// One node size an app can have: the cheapest offering whose nodes fit `fits` of its runners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SizeClass {
    pub fits: u32,
    pub capacity: CapacityType,
    /// Per hour.
    pub price: Money,
    /// Per hour of H100 work ([`Candidate::work_price`]): what sizes are compared by.
    pub work_price: Money,
    pub offering: OfferingId,
}

/// An offering an app can use, with what it costs the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Candidate {
    pub offering: OfferingId,
    pub capacity: CapacityType,
    pub gpus: u32,
    /// How many of the app's runners one node of this offering hosts.
    pub runners_per_node: u32,
    pub node_price: Price,
    /// Node price over the GPUs the app's runners use on it.
    pub effective_gpu_price: Price,
    /// The node price per hour of H100 work ([`GpuModel::work_price`]): offerings of different
    /// GPU families are compared by it, so that an app allowing `["H100", "A100-80GB"]` does not
    /// rent an A100 at $1.19/h for a third of the work an H100 does at $1.54/h. The node price
    /// for any H100.
    pub work_price: Price,
}

impl Candidate {
    /// [`Candidate::effective_gpu_price`] per hour of H100 work: the failover order's key.
    pub fn effective_work_price(&self, gpu: GpuModel) -> Price {
        gpu.work_price(self.effective_gpu_price)
    }
}

// ---------------------------------------------------------------------------------------------
// Unavailable offerings

/// Keys are already well-mixed 64-bit fingerprints; hashing them again is wasted work.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type FpMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

fn fingerprint(cloud: Cloud, region: &str, zone: Option<&str>, instance_type: &str, capacity: CapacityType) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    (cloud, region, zone, instance_type, capacity).hash(&mut h);
    h.finish()
}

fn key_fingerprint(k: &OfferingKey) -> u64 {
    fingerprint(k.cloud, &k.region, k.zone.as_deref(), &k.instance_type, k.capacity)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnavailableEntry {
    /// With `zone: None`, the entry covers every zone of the region.
    pub key: OfferingKey,
    pub why: UnavailableReason,
    pub until: Time,
}

/// Offerings that recently answered "insufficient capacity", "quota exceeded", or lost a spot
/// node, each avoided until its entry expires. Keyed by cloud, region, zone (or the whole
/// region), instance type and capacity type: a spot refusal never blocks on-demand.
#[derive(Debug, Clone, Default)]
pub struct UnavailableCache {
    entries: FpMap<UnavailableEntry>,
    /// Entries per region-wide fingerprint (zone-level ones included): most offerings a decision
    /// checks are in no region with an entry, and one lookup here says so.
    regions: FpMap<u32>,
}

impl UnavailableCache {
    /// Marks `key` unavailable for `ttl` from `now`; an entry that already lasts longer is kept.
    pub fn mark(&mut self, key: OfferingKey, why: UnavailableReason, now: Time, ttl: Duration) {
        let until = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let fp = key_fingerprint(&key);
        let region_fp = fingerprint(key.cloud, &key.region, None, &key.instance_type, key.capacity);
        match self.entries.get_mut(&fp) {
            Some(e) if e.until >= until => {}
            Some(e) => *e = UnavailableEntry { key, why, until },
            None => {
                self.entries.insert(fp, UnavailableEntry { key, why, until });
                *self.regions.entry(region_fp).or_default() += 1;
            }
        }
    }

    /// Drops entries that have expired by `now`.
    pub fn expire(&mut self, now: Time) {
        let regions = &mut self.regions;
        self.entries.retain(|_, e| {
            let keep = e.until > now;
            if !keep {
                let k = &e.key;
                let rfp = fingerprint(k.cloud, &k.region, None, &k.instance_type, k.capacity);
                if let Some(n) = regions.get_mut(&rfp) {
                    *n -= 1;
                    if *n == 0 {
                        regions.remove(&rfp);
                    }
                }
            }
            keep
        });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> impl Iterator<Item = &UnavailableEntry> {
        self.entries.values()
    }

    /// The live entry covering offering `o`, if any.
    pub fn covering(&self, o: &Offering, now: Time) -> Option<&UnavailableEntry> {
        let zone_fp = fingerprint(o.cloud, &o.region, o.zone.as_deref(), &o.instance.name, o.capacity);
        let region_fp = fingerprint(o.cloud, &o.region, None, &o.instance.name, o.capacity);
        self.lookup(zone_fp, region_fp, now)
    }

    /// The live entry covering the offering with key `k`, if any.
    pub fn covering_key(&self, k: &OfferingKey, now: Time) -> Option<&UnavailableEntry> {
        let zone_fp = key_fingerprint(k);
        let region_fp = fingerprint(k.cloud, &k.region, None, &k.instance_type, k.capacity);
        self.lookup(zone_fp, region_fp, now)
    }

    /// Entries are found by 64-bit fingerprints of their keys, without comparing the strings: a
    /// collision (about one in 10^13 per decision with a thousand entries) could only make an
    /// offering be skipped for one TTL, never make an unavailable one be tried.
    fn lookup(&self, zone_fp: u64, region_fp: u64, now: Time) -> Option<&UnavailableEntry> {
        if !self.regions.contains_key(&region_fp) {
            return None;
        }
        [zone_fp, region_fp].into_iter().filter_map(|fp| self.entries.get(&fp)).find(|e| e.until > now)
    }
}

// ---------------------------------------------------------------------------------------------
// The index

/// Which capacity types a node may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapacityWanted {
    Any,
    OnDemand,
    Spot,
}

impl fmt::Display for CapacityWanted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            CapacityWanted::Any => "any",
            CapacityWanted::OnDemand => "on-demand",
            CapacityWanted::Spot => "spot",
        })
    }
}

impl CapacityWanted {
    pub(crate) fn accepts(self, c: CapacityType) -> bool {
        match self {
            CapacityWanted::Any => true,
            CapacityWanted::OnDemand => c == CapacityType::OnDemand,
            CapacityWanted::Spot => c == CapacityType::Spot,
        }
    }
}

/// What changes between decisions.
#[derive(Debug, Clone)]
pub struct RankInput<'a> {
    pub now: Time,
    pub unavailable: &'a UnavailableCache,
    /// GPUs in use per quota of the spec, in the spec's order (see [`PlacementIndex::quota_usage`]);
    /// an empty slice means none in use.
    pub quota_used: &'a [u32],
    pub capacity: CapacityWanted,
    /// The node must host at least this many runners.
    pub min_runners: u32,
    /// The most a node may cost per hour (budget room), and the cap that sets it.
    pub max_node_price: Option<Money>,
    pub budget_cap: Option<&'a BudgetCap>,
}

impl<'a> RankInput<'a> {
    /// No quotas used, no budget limit, any capacity type.
    pub fn new(now: Time, unavailable: &'a UnavailableCache) -> RankInput<'a> {
        RankInput {
            now,
            unavailable,
            quota_used: &[],
            capacity: CapacityWanted::Any,
            min_runners: 1,
            max_node_price: None,
            budget_cap: None,
        }
    }
}

struct Indexed {
    zone_fp: u64,
    region_fp: u64,
    /// Quotas of the spec this offering counts against.
    quotas: Vec<u16>,
}

/// What a decision checks of one candidate, laid out next to the others so that walking the
/// ranked list reads memory in order instead of chasing each offering.
#[derive(Clone, Copy)]
struct Meta {
    zone_fp: u64,
    region_fp: u64,
    quota_start: u32,
    quota_len: u32,
}

struct AppCandidates {
    /// Sorted best first; `meta[i]` belongs to `candidates[i]`.
    candidates: Vec<Candidate>,
    /// Positions in `candidates` by node price per hour of H100 work (then node price, then
    /// the same tie-breaks): the order a node of a known size fails over in, where what counts
    /// is what the node costs for the work it does, not its $/GPU.
    by_node_price: Vec<u32>,
    meta: Vec<Meta>,
    /// The quota ids of every candidate, concatenated.
    quota_ids: Vec<u16>,
    excluded: Vec<(OfferingId, Reason)>,
}

/// Everything placement needs that does not change between decisions.
pub struct PlacementIndex {
    catalog: Arc<Catalog>,
    indexed: Vec<Indexed>,
    quotas: Vec<Quota>,
    app_names: Vec<String>,
    apps: Vec<AppCandidates>,
}

/// The full account of one placement decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub ranked: Vec<Candidate>,
    pub excluded: Vec<(OfferingId, Reason)>,
}

fn quota_matches(q: &Quota, o: &Offering) -> bool {
    q.cloud == o.cloud && q.region.as_ref().is_none_or(|r| *r == o.region) && q.capacity.is_none_or(|c| c == o.capacity)
}

/// Static checks for one app and offering: `Ok` with the candidate, or why not.
fn static_candidate(app: &AppSpec, id: OfferingId, o: &Offering) -> Result<Candidate, Reason> {
    let g = &app.gpu;
    if !g.models.iter().any(|m| m.matches(o.instance.gpu)) {
        return Err(Reason::GpuNotWanted { gpu: o.instance.gpu });
    }
    let p = &app.placement;
    if !p.allows_cloud(o.cloud) {
        return Err(Reason::CloudNotAllowed { cloud: o.cloud });
    }
    if !p.allows_region(&o.region) {
        return Err(Reason::RegionNotAllowed { region: o.region.clone() });
    }
    match o.capacity {
        CapacityType::Reserved => return Err(Reason::ReservedCapacity),
        CapacityType::Spot if p.spot == SpotPolicy::OnDemand => return Err(Reason::SpotNotAllowed),
        _ => {}
    }
    if let Availability::Unavailable { reason } = &o.availability {
        return Err(Reason::MarkedUnavailable { detail: reason.clone() });
    }
    let by_gpus = o.instance.gpu_count / g.count;
    let by_cpu = o.instance.vcpus.checked_div(g.min_vcpus).unwrap_or(u32::MAX);
    let by_mem = o.instance.memory_gib.checked_div(g.min_memory_gib).unwrap_or(u32::MAX);
    let rpn = by_gpus.min(by_cpu).min(by_mem);
    if rpn == 0 {
        let detail = if by_gpus == 0 {
            format!("{} GPUs, a runner needs {}", o.instance.gpu_count, g.count)
        } else if by_cpu == 0 {
            format!("{} vCPUs, a runner needs {}", o.instance.vcpus, g.min_vcpus)
        } else {
            format!("{} GiB memory, a runner needs {}", o.instance.memory_gib, g.min_memory_gib)
        };
        return Err(Reason::TooSmall { detail });
    }
    let effective = o.price.per_gpu(rpn * g.count);
    if let Some(cap) = p.max_price_per_gpu_hour
        && effective > cap
    {
        return Err(Reason::AbovePriceCap { price_per_gpu: effective, cap });
    }
    Ok(Candidate {
        offering: id,
        capacity: o.capacity,
        gpus: o.instance.gpu_count,
        runners_per_node: rpn,
        node_price: o.price,
        effective_gpu_price: effective,
        work_price: o.work_price(),
    })
}

impl PlacementIndex {
    /// Builds the index for `spec` over `catalog`. Cost: one pass over the catalog per app, and a
    /// sort of each app's candidates.
    pub fn new(catalog: Arc<Catalog>, spec: &FleetSpec) -> PlacementIndex {
        let indexed: Vec<Indexed> = catalog
            .offerings()
            .iter()
            .map(|o| Indexed {
                zone_fp: fingerprint(o.cloud, &o.region, o.zone.as_deref(), &o.instance.name, o.capacity),
                region_fp: fingerprint(o.cloud, &o.region, None, &o.instance.name, o.capacity),
                quotas: spec
                    .quotas
                    .iter()
                    .enumerate()
                    .filter(|(_, q)| quota_matches(q, o))
                    .map(|(i, _)| i as u16)
                    .collect(),
            })
            .collect();
        let offerings = catalog.offerings();
        let apps = spec
            .apps
            .iter()
            .map(|app| {
                let mut candidates = Vec::new();
                let mut excluded = Vec::new();
                for (i, o) in offerings.iter().enumerate() {
                    match static_candidate(app, i as OfferingId, o) {
                        Ok(c) => candidates.push(c),
                        Err(r) => excluded.push((i as OfferingId, r)),
                    }
                }
                candidates.sort_by(|a, b| {
                    let (oa, ob) = (&offerings[a.offering as usize], &offerings[b.offering as usize]);
                    (
                        a.effective_work_price(oa.instance.gpu),
                        a.node_price,
                        oa.cloud,
                        &oa.region,
                        &oa.zone,
                        &oa.instance.name,
                        oa.capacity,
                    )
                        .cmp(&(
                            b.effective_work_price(ob.instance.gpu),
                            b.node_price,
                            ob.cloud,
                            &ob.region,
                            &ob.zone,
                            &ob.instance.name,
                            ob.capacity,
                        ))
                });
                let mut quota_ids = Vec::new();
                let meta = candidates
                    .iter()
                    .map(|c| {
                        let ix: &Indexed = &indexed[c.offering as usize];
                        let quota_start = quota_ids.len() as u32;
                        quota_ids.extend_from_slice(&ix.quotas);
                        Meta {
                            zone_fp: ix.zone_fp,
                            region_fp: ix.region_fp,
                            quota_start,
                            quota_len: ix.quotas.len() as u32,
                        }
                    })
                    .collect();
                let mut by_node_price: Vec<u32> = (0..candidates.len() as u32).collect();
                // Stable: equal prices keep the $/GPU order (and its tie-breaks).
                by_node_price.sort_by_key(|i| {
                    let c = &candidates[*i as usize];
                    (c.work_price, c.node_price)
                });
                AppCandidates { candidates, by_node_price, meta, quota_ids, excluded }
            })
            .collect();
        PlacementIndex {
            catalog,
            indexed,
            quotas: spec.quotas.clone(),
            app_names: spec.apps.iter().map(|a| a.name.clone()).collect(),
            apps,
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn offering(&self, id: OfferingId) -> &Offering {
        &self.catalog.offerings()[id as usize]
    }

    /// The position of `app` in the spec (and so in this index).
    pub fn app_index(&self, app: &str) -> Option<usize> {
        self.app_names.iter().position(|a| a == app)
    }

    /// GPUs in use per quota, given the offerings of the nodes that run (or are launching).
    pub fn quota_usage(&self, nodes: impl IntoIterator<Item = OfferingId>) -> Vec<u32> {
        let mut used = vec![0u32; self.quotas.len()];
        for id in nodes {
            let gpus = self.offering(id).instance.gpu_count;
            for q in &self.indexed[id as usize].quotas {
                used[*q as usize] += gpus;
            }
        }
        used
    }

    /// The spec's quotas (by position) that offering `id` counts against.
    pub fn quotas_of(&self, id: OfferingId) -> &[u16] {
        &self.indexed[id as usize].quotas
    }

    /// The dynamic checks of candidate `i` of app `app`, in the order their reasons are reported.
    fn check(&self, app: &AppCandidates, i: usize, input: &RankInput) -> Result<(), Reason> {
        let c = &app.candidates[i];
        let m = &app.meta[i];
        if !input.capacity.accepts(c.capacity) {
            return Err(Reason::CapacityNotWanted { capacity: c.capacity });
        }
        if c.runners_per_node < input.min_runners {
            return Err(Reason::FewerRunners { fits: c.runners_per_node, need: input.min_runners });
        }
        if !input.unavailable.is_empty()
            && let Some(e) = input.unavailable.lookup(m.zone_fp, m.region_fp, input.now)
        {
            return Err(Reason::RecentlyFailed { why: e.why, until: e.until });
        }
        let quotas = &app.quota_ids[m.quota_start as usize..(m.quota_start + m.quota_len) as usize];
        for q in quotas {
            let used = input.quota_used.get(*q as usize).copied().unwrap_or(0);
            let quota = &self.quotas[*q as usize];
            if used + c.gpus > quota.max_gpus {
                return Err(Reason::QuotaFull {
                    cloud: quota.cloud,
                    region: quota.region.clone(),
                    used,
                    max: quota.max_gpus,
                    need: c.gpus,
                });
            }
        }
        if let Some(room) = input.max_node_price
            && c.node_price.hourly() > room
        {
            return Err(Reason::OverBudget { price: c.node_price, room, cap: input.budget_cap.cloned() });
        }
        Ok(())
    }

    /// Up to `limit` offerings to try for a new node of app number `app`, best first. This is the
    /// failover order: on *insufficient capacity* or *quota exceeded*, mark the offering in the
    /// [`UnavailableCache`] and try the next (or rank again).
    pub fn rank(&self, app: usize, input: &RankInput, limit: usize) -> Vec<Candidate> {
        let a = &self.apps[app];
        let mut out = Vec::with_capacity(limit.min(16));
        for i in 0..a.candidates.len() {
            if out.len() >= limit {
                break;
            }
            if self.check(a, i, input).is_ok() {
                out.push(a.candidates[i]);
            }
        }
        out
    }

    /// The most runners of app `app` any one offering's node holds (0: none fits it).
    pub fn max_runners_per_node(&self, app: usize) -> u32 {
        self.apps[app].candidates.iter().map(|c| c.runners_per_node).max().unwrap_or(0)
    }

    /// The failover list of a node that will host `input.min_runners` runners: up to `limit`
    /// offerings that fit them and pass every check, cheapest node first. Unlike
    /// [`PlacementIndex::rank`] ($/GPU first), a node for one small runner fails over to other
    /// small nodes before a large one that would leave most of its GPUs paid for and unused.
    pub fn rank_for_runners(&self, app: usize, input: &RankInput, limit: usize) -> Vec<Candidate> {
        let a = &self.apps[app];
        let mut out = Vec::with_capacity(limit.min(16));
        for i in &a.by_node_price {
            if out.len() >= limit {
                break;
            }
            if self.check(a, *i as usize, input).is_ok() {
                out.push(a.candidates[*i as usize]);
            }
        }
        out
    }

    /// The node sizes app number `app` can have now: for each number of runners a node fits,
    /// the cheapest offering that passes every check of `input` (its `min_runners` and budget are
    /// ignored), without the sizes another size makes pointless (one that fits as many runners or
    /// more for no more money). Fewest runners first.
    pub fn size_classes(&self, app: usize, input: &RankInput) -> Vec<SizeClass> {
        let a = &self.apps[app];
        let input = RankInput { min_runners: 0, max_node_price: None, ..input.clone() };
        let mut best: std::collections::BTreeMap<u32, SizeClass> = std::collections::BTreeMap::new();
        for i in &a.by_node_price {
            let c = &a.candidates[*i as usize];
            if best.contains_key(&c.runners_per_node) || self.check(a, *i as usize, &input).is_err() {
                continue;
            }
            best.insert(
                c.runners_per_node,
                SizeClass {
                    fits: c.runners_per_node,
                    capacity: c.capacity,
                    price: c.node_price.hourly(),
                    work_price: c.work_price.hourly(),
                    offering: c.offering,
                },
            );
        }
        // Dominated: a size that fits more runners costs no more.
        let mut out: Vec<SizeClass> = Vec::new();
        for c in best.into_values().rev() {
            if out.last().is_none_or(|bigger: &SizeClass| bigger.work_price > c.work_price) {
                out.push(c);
            }
        }
        out.reverse();
        out
    }

    /// The first offering [`PlacementIndex::rank`] would return, without allocating.
    pub fn best(&self, app: usize, input: &RankInput) -> Option<Candidate> {
        let a = &self.apps[app];
        (0..a.candidates.len()).find(|i| self.check(a, *i, input).is_ok()).map(|i| a.candidates[i])
    }

    /// Every offering of the catalog, ranked or excluded with its reason.
    pub fn explain(&self, app: usize, input: &RankInput) -> Explanation {
        let a = &self.apps[app];
        let mut ranked = Vec::new();
        let mut excluded = a.excluded.clone();
        for (i, c) in a.candidates.iter().enumerate() {
            match self.check(a, i, input) {
                Ok(()) => ranked.push(*c),
                Err(r) => excluded.push((c.offering, r)),
            }
        }
        excluded.sort_by_key(|(id, _)| *id);
        Explanation { ranked, excluded }
    }
}

#[cfg(test)]
pub(crate) mod tests;
