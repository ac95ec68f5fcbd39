//! Right-sized nodes: the cheapest mix of node sizes for the runners a plan must place.
//!
//! Ranking offerings by $/GPU assumes every slot of a node gets filled; one runner of one GPU then
//! lands on an 8-GPU node because its $/GPU is lowest, and pays for seven idle GPUs. Here each
//! size an app can have (the cheapest offering per number of runners a node fits, see
//! [`PlacementIndex::size_classes`](crate::placement::PlacementIndex::size_classes)) is a coin,
//! and the mix is the cheapest way to make exactly `n` runners from them: a dynamic programme over
//! 0..=n runners, `cost[m] = min over sizes s of price(s) + cost[m − min(m, fits(s))]`, exact for
//! as many nodes of each size as wanted, O(n × sizes). A large node is chosen only where it really
//! is the cheapest way to host the runners it gets.

#[cfg(test)]
use fleet_core::CapacityType;
use fleet_core::Money;

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
    if n == 0 || classes.is_empty() {
        return None;
    }
    let n = n as usize;
    // best[m] = (work price, nodes, class chosen last) for hosting m runners.
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
    let mut nodes = Vec::new();
    let mut m = n;
    let mut price = Money::ZERO;
    while m > 0 {
        let ci = best[m].2;
        price += classes[ci].price;
        let runners = m.min(classes[ci].fits as usize);
        nodes.push(SizedNode { class: ci, runners: runners as u32 });
        m -= runners;
    }
    nodes.sort_by(|a, b| b.runners.cmp(&a.runners).then(a.class.cmp(&b.class)));
    Some((price, nodes))
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

    proptest! {
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
