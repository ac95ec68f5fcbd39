//! Right-sized nodes: the cheapest mix of node sizes for the runners a plan must place.
//!
//! Ranking offerings by $/GPU assumes every slot of a node gets filled; one runner of one GPU then
//! lands on an 8-GPU node because its $/GPU is lowest, and pays for seven idle GPUs. Here each
//! size an app can have (the cheapest offering per number of runners a node fits, see
//! [`PlacementIndex::size_classes`](crate::placement::PlacementIndex::size_classes)) is a coin,
//! and the mix is the cheapest way to make exactly `n` runners from them: a dynamic programme over
//! 0..=n runners, `cost[m] = min over sizes s of price(s) + cost[m − min(m, fits(s))]`, exact for
//! as many nodes of each size as wanted, O(n × sizes). A large node is chosen only where it really
//! is the cheapest way to host the runners it gets — or, billed by the hour, the runners it gets
//! and those of the app's dearer nodes it will take over ([`absorbing_mix`]).

#[cfg(test)]
use fleet_core::CapacityType;
use std::time::Duration;

use fleet_core::{Money, Price};

use crate::placement::SizeClass;

/// One node of a mix: which size (an index into the classes given) and how many runners it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizedNode {
    pub class: usize,
    pub runners: u32,
}

/// The cheapest mix of nodes hosting exactly `n` runners, most runners per node first, with its
/// price per hour; `None` when there is no size (or `n` is 0: nothing to host). Among mixes of
/// equal price, the one with fewer nodes (fewer launches, fewer boots). "Cheapest" is by price
/// per hour of H100 work ([`SizeClass::work_price`]), the same as by price where every size
/// has a GPU of one family; the price returned is what the mix bills.
pub fn cheapest_mix(classes: &[SizeClass], n: u32) -> Option<(Money, Vec<SizedNode>)> {
    if n == 0 {
        return None;
    }
    Mixes::new(classes, n).map(|t| t.mix(n))
}

/// The cheapest mixes for every number of runners up to a limit, from one dynamic programme
/// (see the module's doc): what [`cheapest_mix`] and [`absorbing_mix`] read.
struct Mixes<'a> {
    classes: &'a [SizeClass],
    /// best[m] = (work price, nodes, class chosen last) for hosting m runners.
    best: Vec<(Money, u32, usize)>,
}

impl<'a> Mixes<'a> {
    fn new(classes: &'a [SizeClass], n: u32) -> Option<Mixes<'a>> {
        if classes.is_empty() {
            return None;
        }
        let n = n as usize;
        let mut best: Vec<(Money, u32, usize)> = Vec::with_capacity(n + 1);
        best.push((Money::ZERO, 0, usize::MAX));
        for m in 1..=n {
            let mut choice: Option<(Money, u32, usize)> = None;
            for (ci, c) in classes.iter().enumerate() {
                let rest = m - m.min(c.fits as usize);
                let (p, k, _) = best[rest];
                let cand = (p + c.work_price, k + 1, ci);
                if choice.is_none_or(|(bp, bk, _)| (cand.0, cand.1) < (bp, bk)) {
                    choice = Some(cand);
                }
            }
            best.push(choice.expect("classes is not empty"));
        }
        Some(Mixes { classes, best })
    }

    /// The mix for `n` runners (at most the limit given to [`Mixes::new`]) and what it bills.
    fn mix(&self, n: u32) -> (Money, Vec<SizedNode>) {
        let mut nodes = Vec::new();
        let mut m = n as usize;
        let mut price = Money::ZERO;
        while m > 0 {
            let ci = self.best[m].2;
            price += self.classes[ci].price;
            let runners = m.min(self.classes[ci].fits as usize);
            nodes.push(SizedNode { class: ci, runners: runners as u32 });
            m -= runners;
        }
        nodes.sort_by(|a, b| b.runners.cmp(&a.runners).then(a.class.cmp(&b.class)));
        (price, nodes)
    }
}

/// An existing node whose runners new nodes could take over, so that it can be released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Movable {
    /// What it bills per hour.
    pub price: Money,
    /// The runners it hosts.
    pub runners: u32,
    /// How soon it could be released at the earliest: what it is paid for already (the end of
    /// the hour begun, billed by the hour), and at least the cold start its runners' successors
    /// take.
    pub release_in: Duration,
}

/// A mix sized for more runners than it starts: room for the runners of the first `absorbs`
/// movable nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsorbingMix {
    /// What the mix bills per hour.
    pub price: Money,
    /// The nodes, most runners first; `runners` is what each starts now.
    pub nodes: Vec<SizedNode>,
    /// For each node (same order), the runners it is sized for: `runners` and room.
    pub sized_for: Vec<u32>,
    /// How many of the movable nodes (a prefix of the order given) its room can take in.
    pub absorbs: usize,
    /// The runners of those nodes.
    pub room: u32,
    /// What the room saves over `horizon` after those nodes are released, net of what the
    /// larger mix costs meanwhile.
    pub net_saving: Money,
}

/// Right-sizing for the level an app runs at rather than for the runners being started alone.
///
/// The cheapest mix for `n` new runners ignores the app's nodes already running: one runner on a
/// 4-GPU node ($6.16/h) and a second runner on another ($6.16/h) are each the cheapest fit for
/// the runner they got, and together cost $12.31/h, where one 8-GPU node ($6.84/h) hosts both.
/// Consolidation can merge them later, at the cost of another cold start and, billed by the
/// hour, another node-hour; sizing the new node for both at launch costs neither: the old
/// node's runner moves to the new node's free slot (a delete move) once it has used what it is
/// paid for.
///
/// `movable` are the app's nodes whose runners may move, dearest per runner first (the least
/// used and dearest would go first; the same order merges try). For each prefix of it, the mix
/// for `n` plus their runners is weighed against the mix for `n` alone over the time until they
/// can be released plus `horizon` (the plan passes a new node's minimum billing: what merging
/// them later would pay again): the larger mix costs its extra price per hour over all of that,
/// the nodes it takes in save their price over the horizon. The best prefix that saves something
/// wins; `None` when none does (start the mix for `n`). Every node of the mix starts at least one runner (an empty new node would be
/// released at once), so a prefix whose mix has more nodes than `n` is not a candidate.
pub fn absorbing_mix(classes: &[SizeClass], n: u32, movable: &[Movable], horizon: Duration) -> Option<AbsorbingMix> {
    if n == 0 || movable.is_empty() {
        return None;
    }
    let total: u32 = movable.iter().map(|m| m.runners).sum();
    let table = Mixes::new(classes, n.checked_add(total)?)?;
    let (alone, _) = table.mix(n);
    let mut best: Option<AbsorbingMix> = None;
    let (mut room, mut freed, mut release) = (0u32, Money::ZERO, Duration::ZERO);
    for (k, m) in movable.iter().enumerate() {
        room += m.runners;
        freed += m.price;
        release = release.max(m.release_in);
        let (price, nodes) = table.mix(n + room);
        if nodes.len() as u32 > n {
            continue;
        }
        let extra = (price - alone).max(Money::ZERO);
        let net_saving = Price::per_hour(freed).cost_for(horizon) - Price::per_hour(extra).cost_for(release + horizon);
        if net_saving <= Money::ZERO || best.as_ref().is_some_and(|b| b.net_saving >= net_saving) {
            continue;
        }
        // Each node keeps at least one runner to start; the room comes off the largest first.
        let sized_for: Vec<u32> = nodes.iter().map(|x| x.runners).collect();
        let mut started = sized_for.clone();
        let mut left = room;
        for s in &mut started {
            let off = left.min(*s - 1);
            *s -= off;
            left -= off;
        }
        debug_assert_eq!(left, 0, "n ≥ nodes, so the room always comes off");
        let nodes = nodes.iter().zip(&started).map(|(x, s)| SizedNode { class: x.class, runners: *s }).collect();
        best = Some(AbsorbingMix { price, nodes, sized_for, absorbs: k + 1, room, net_saving });
    }
    best
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn class(fits: u32, dollars: i64) -> SizeClass {
        let price = Money::from_micros(dollars * 1_000_000);
        SizeClass { fits, capacity: CapacityType::Spot, price, work_price: price, offering: fits }
    }

    /// Every way to host `n` runners: for each size, how many nodes (at most ⌈n / fits⌉ each).
    fn exhaustive(classes: &[SizeClass], n: u32) -> Money {
        fn go(classes: &[SizeClass], n: u32, i: usize, hosted: u32, cost: Money, best: &mut Option<Money>) {
            if hosted >= n {
                if best.is_none_or(|b| cost < b) {
                    *best = Some(cost);
                }
                return;
            }
            if i == classes.len() {
                return;
            }
            let c = classes[i];
            for k in 0..=(n - hosted).div_ceil(c.fits) {
                go(classes, n, i + 1, hosted + k * c.fits, cost + c.price.times(k), best);
            }
        }
        let mut best = None;
        go(classes, n, 0, 0, Money::ZERO, &mut best);
        best.expect("some mix hosts n runners")
    }

    #[test]
    fn one_runner_takes_the_small_node_not_the_cheapest_per_gpu() {
        // 1×H100 spot at $1.54/h; 8×H100 spot at $10.24/h ($1.28 per GPU, cheaper per GPU).
        let classes = [
            SizeClass {
                fits: 1,
                capacity: CapacityType::Spot,
                price: Money::from_micros(1_540_000),
                work_price: Money::from_micros(1_540_000),
                offering: 0,
            },
            SizeClass {
                fits: 8,
                capacity: CapacityType::Spot,
                price: Money::from_micros(10_240_000),
                work_price: Money::from_micros(10_240_000),
                offering: 1,
            },
        ];
        let (price, nodes) = cheapest_mix(&classes, 1).unwrap();
        assert_eq!(price, Money::from_micros(1_540_000));
        assert_eq!(nodes, [SizedNode { class: 0, runners: 1 }]);
        // Seven runners: the 8-GPU node ($10.24) beats seven small ones ($10.78).
        let (price, nodes) = cheapest_mix(&classes, 7).unwrap();
        assert_eq!(price, Money::from_micros(10_240_000));
        assert_eq!(nodes, [SizedNode { class: 1, runners: 7 }]);
        // Ten: one large and two small.
        let (price, nodes) = cheapest_mix(&classes, 10).unwrap();
        assert_eq!(price, Money::from_micros(10_240_000 + 2 * 1_540_000));
        assert_eq!(nodes.iter().map(|n| n.runners).collect::<Vec<_>>(), [8, 1, 1]);
    }

    #[test]
    fn nothing_to_host_or_no_size_is_no_mix() {
        assert_eq!(cheapest_mix(&[class(1, 1)], 0), None);
        assert_eq!(cheapest_mix(&[], 3), None);
    }

    #[test]
    fn sizes_are_compared_by_the_work_they_buy_and_the_mix_bills_its_price() {
        // A 1-GPU A100 node at $1.19/h does a third of an H100's work ($3.77 per H100-hour); an
        // H100 node at $1.54/h wins though it bills more.
        let a100 = SizeClass {
            fits: 1,
            capacity: CapacityType::Spot,
            price: Money::from_micros(1_190_000),
            work_price: Money::from_micros(3_772_147),
            offering: 0,
        };
        let h100 = SizeClass { offering: 1, ..class(1, 0) };
        let h100 =
            SizeClass { price: Money::from_micros(1_540_000), work_price: Money::from_micros(1_540_000), ..h100 };
        let (price, nodes) = cheapest_mix(&[a100, h100], 3).unwrap();
        assert_eq!(nodes.iter().map(|n| n.class).collect::<Vec<_>>(), [1, 1, 1]);
        assert_eq!(price, Money::from_micros(3 * 1_540_000));
        // The A100 alone: its price is what is returned, not its work price.
        assert_eq!(cheapest_mix(&[a100], 2).unwrap().0, Money::from_micros(2_380_000));
    }

    /// A size of `fits` runners at `dollars` per hour (cents allowed).
    fn class_at(fits: u32, dollars: &str) -> SizeClass {
        let price = Money::parse_decimal(dollars).unwrap();
        SizeClass { price, work_price: price, ..class(fits, 0) }
    }

    fn movable(dollars: &str, runners: u32, release_s: u64) -> Movable {
        Movable { price: Money::parse_decimal(dollars).unwrap(), runners, release_in: Duration::from_secs(release_s) }
    }

    #[test]
    fn a_new_runner_gets_a_node_with_room_for_a_dearer_nodes_runner() {
        // One runner per 4-GPU node ($6.16/h), two per 8-GPU node ($6.84/h). One runner is on a
        // 4-GPU node, paid for 3,000 s more; one more is wanted.
        let (small, big) = (class_at(1, "6.16"), class_at(2, "6.84"));
        let hour = Duration::from_secs(3600);
        let a = absorbing_mix(&[small, big], 1, &[movable("6.16", 1, 3000)], hour).expect("room pays");
        assert_eq!(a.nodes, [SizedNode { class: 1, runners: 1 }]);
        assert_eq!((a.sized_for.as_slice(), a.absorbs, a.room), ([2].as_slice(), 1, 1));
        assert_eq!(a.price, Money::from_micros(6_840_000));
        // $6.16 saved over the hour after the release, less $0.68/h over 3,000 s and the hour.
        assert_eq!(a.net_saving, Money::from_micros(6_160_000 - 1_246_667));
        // Counted over a cold start, released after one: $0.31 saved against $0.07 of room over
        // both, still worth it (the node taken over costs 9× the room per hour).
        assert!(absorbing_mix(&[small, big], 1, &[movable("6.16", 1, 180)], Duration::from_secs(180)).is_some());
        // One that costs less than twice the room per hour is not taken over then.
        assert_eq!(absorbing_mix(&[small, big], 1, &[movable("1.30", 1, 180)], Duration::from_secs(180)), None);
        // Nothing to start, or nothing to take over: no mix.
        assert_eq!(absorbing_mix(&[small, big], 0, &[movable("6.16", 1, 3000)], hour), None);
        assert_eq!(absorbing_mix(&[small, big], 1, &[], hour), None);
    }

    #[test]
    fn every_node_of_the_mix_starts_a_runner() {
        // Two runners to take over and one to start: the mix for three has two 2-runner nodes,
        // one of which would start empty (and be released at once). The first node's runner
        // alone fits beside the new one.
        let big = class_at(2, "6.84");
        let hour = Duration::from_secs(3600);
        let a = absorbing_mix(&[big], 1, &[movable("6.16", 1, 600), movable("6.84", 2, 600)], hour).unwrap();
        assert_eq!((a.absorbs, a.room, a.nodes.len()), (1, 1, 1));
        assert_eq!(absorbing_mix(&[big], 1, &[movable("13.68", 2, 600)], hour), None);
    }

    proptest! {
        #[test]
        fn an_absorbing_mix_starts_n_runners_has_room_for_a_prefix_and_saves(
            sizes in prop::collection::vec((1u32..=8, 1i64..=40), 1..=4),
            n in 1u32..=12,
            nodes in prop::collection::vec((1u32..=6, 1i64..=60, 0u64..=7200), 1..=5),
            horizon_s in 60u64..=7200,
        ) {
            let classes: Vec<SizeClass> = sizes.iter().map(|(f, d)| class(*f, *d)).collect();
            let movable: Vec<Movable> = nodes
                .iter()
                .map(|(r, d, s)| Movable { price: Money::from_micros(d * 1_000_000), runners: *r, release_in: Duration::from_secs(*s) })
                .collect();
            let horizon = Duration::from_secs(horizon_s);
            if let Some(a) = absorbing_mix(&classes, n, &movable, horizon) {
                prop_assert_eq!(a.nodes.iter().map(|x| x.runners).sum::<u32>(), n);
                prop_assert_eq!(a.room, movable[..a.absorbs].iter().map(|m| m.runners).sum::<u32>());
                prop_assert_eq!(a.sized_for.iter().sum::<u32>(), n + a.room);
                for (x, sized) in a.nodes.iter().zip(&a.sized_for) {
                    prop_assert!(x.runners >= 1 && x.runners <= *sized && *sized <= classes[x.class].fits);
                }
                prop_assert_eq!(a.nodes.iter().map(|x| classes[x.class].price).sum::<Money>(), a.price);
                prop_assert!(a.net_saving > Money::ZERO);
                // What it saves, worked out again: what the prefix's nodes bill over the horizon,
                // less the larger mix's extra price over their release and the horizon.
                let alone = cheapest_mix(&classes, n).unwrap().0;
                let freed: Money = movable[..a.absorbs].iter().map(|m| m.price).sum();
                let release = movable[..a.absorbs].iter().map(|m| m.release_in).max().unwrap();
                let net = Price::per_hour(freed).cost_for(horizon)
                    - Price::per_hour((a.price - alone).max(Money::ZERO)).cost_for(release + horizon);
                prop_assert_eq!(a.net_saving, net);
            }
        }

        #[test]
        fn the_mix_is_the_exhaustive_optimum_and_hosts_exactly_n(
            sizes in prop::collection::vec((1u32..=8, 1i64..=40), 1..=4),
            n in 1u32..=20,
        ) {
            let classes: Vec<SizeClass> = sizes.iter().map(|(f, d)| class(*f, *d)).collect();
            let (price, nodes) = cheapest_mix(&classes, n).unwrap();
            prop_assert_eq!(price, exhaustive(&classes, n));
            prop_assert_eq!(nodes.iter().map(|x| x.runners).sum::<u32>(), n);
            prop_assert!(nodes.iter().all(|x| x.runners >= 1 && x.runners <= classes[x.class].fits));
            prop_assert_eq!(nodes.iter().map(|x| classes[x.class].price).sum::<Money>(), price);
        }
    }
}
