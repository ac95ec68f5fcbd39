//! Cold-start-aware decisions: where a new node goes, and when an empty node goes, knowing which
//! regions already hold an app's model weights (a node there, or its peers, has them).
//!
//! The rule is in money, because a cold start is billed time: a node is paid from its launch,
//! while it provisions, boots, fetches the weights and loads them, and the origin bills every
//! read out of it. A node of offering `o` launched now is expected to cost, over the `horizon` it
//! then serves,
//!
//! ```text
//! price_o × (cold_start_o + horizon) + egress_o
//! cold_start_o = provision_and_boot + fetch_o + load
//! ```
//!
//! with the fetch from the region's peers when the region is warm (some node of the app there
//! holds the weights) and otherwise from the origin, whose bill is `egress_o` (zero from peers).
//! A new node tries its candidates (placement's failover list, cheapest first) in the order of
//! that figure, ties kept in placement's order: a warm offering dearer per hour goes first only
//! when the cold start it saves is worth more than the price difference over the horizon.
//!
//! Scale-down: an empty node that is the last holder of the weights in its region is kept while
//! keeping it has cost less than what losing the copy would cost the region's next node —
//! fetching from the origin instead of the peers (time at the node's price) plus the origin's
//! bill — like a ski rental: at most twice the cheaper choice, whatever demand does next.

use std::time::Duration;

use fleet_core::{Money, Price};

/// What an app's cold start is made of. Copy: it travels in each decision's view of the app.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColdStartModel {
    /// The weights, in GB.
    pub size_gb: f64,
    /// One node reading the origin, and its region's peers, and its own disk (GB/s).
    pub origin_gb_per_s: f64,
    pub peer_gb_per_s: f64,
    pub disk_gb_per_s: f64,
    /// What the origin bills per GB read out of it.
    pub egress_per_gb: Money,
    /// From the launch call to a node that takes runners.
    pub provision_and_boot: Duration,
    /// How long a new node is expected to serve (what its price is weighed over).
    pub horizon: Duration,
}

impl ColdStartModel {
    fn secs(gb: f64, rate: f64) -> Duration {
        Duration::from_secs_f64((gb / rate.max(1e-9)).clamp(0.0, 1e9))
    }

    pub fn fetch(&self, warm: bool) -> Duration {
        Self::secs(self.size_gb, if warm { self.peer_gb_per_s } else { self.origin_gb_per_s })
    }

    pub fn load(&self) -> Duration {
        Self::secs(self.size_gb, self.disk_gb_per_s)
    }

    /// From the launch call to the node's first runner serving.
    pub fn cold_start(&self, warm: bool) -> Duration {
        self.provision_and_boot + self.fetch(warm) + self.load()
    }

    /// The origin's bill for one fetch of the weights.
    pub fn egress(&self) -> Money {
        Money::from_micros_saturating((self.egress_per_gb.micros() as f64 * self.size_gb).round() as i128)
    }

    /// What a node at `price` is expected to cost: its cold start and the horizon, billed, and
    /// the origin's bill when its region is cold.
    pub fn node_cost(&self, price: Price, warm: bool) -> Money {
        let billed = price.cost_for(self.cold_start(warm) + self.horizon);
        if warm { billed } else { billed + self.egress() }
    }

    /// How long an empty node at `price` that holds its region's last copy of the weights is
    /// worth keeping: until keeping it has cost what the region's next node would pay for the
    /// copy being gone (the slower fetch at the same price, and the origin's bill).
    pub fn keep_last_copy_for(&self, price: Price) -> Duration {
        let slower = self.fetch(false).saturating_sub(self.fetch(true));
        let hourly = price.hourly().micros();
        if hourly <= 0 {
            return slower;
        }
        let egress_time = Duration::from_secs_f64(self.egress().micros() as f64 / hourly as f64 * 3600.0);
        slower + egress_time
    }
}

/// Reorders `candidates` by [`ColdStartModel::node_cost`], `warm(i)` saying whether the region
/// of `candidates[i]` holds the weights and `price(i)` its node price. Stable: equal figures
/// keep the order they came in (placement's).
pub fn order<T: Clone>(
    candidates: &mut Vec<T>,
    model: &ColdStartModel,
    warm: impl Fn(&T) -> bool,
    price: impl Fn(&T) -> Price,
) {
    let mut keyed: Vec<(Money, usize, T)> =
        candidates.drain(..).enumerate().map(|(i, c)| (model.node_cost(price(&c), warm(&c)), i, c)).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    candidates.extend(keyed.into_iter().map(|(_, _, c)| c));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(s: &str) -> Money {
        Money::parse_decimal(s).unwrap()
    }

    /// A 70B model (140 GB): 280 s from the origin at 0.5 GB/s, 20 s from peers at 7, 20 s load;
    /// $0.09 per GB from the origin ($12.60 a fetch); 150 s to provision and boot; an hour.
    fn llama70b() -> ColdStartModel {
        ColdStartModel {
            size_gb: 140.0,
            origin_gb_per_s: 0.5,
            peer_gb_per_s: 7.0,
            disk_gb_per_s: 7.0,
            egress_per_gb: usd("0.09"),
            provision_and_boot: Duration::from_secs(150),
            horizon: Duration::from_secs(3600),
        }
    }

    #[test]
    fn a_cold_start_is_billed_time_plus_the_origins_bill() {
        let m = llama70b();
        assert_eq!(m.cold_start(false), Duration::from_secs(150 + 280 + 20));
        assert_eq!(m.cold_start(true), Duration::from_secs(150 + 20 + 20));
        assert_eq!(m.egress(), usd("12.60"));
        // $36/h: 450 s + 1 h = $40.50, + $12.60 from the origin; warm: 190 s + 1 h = $37.90.
        let p = Price::per_hour(usd("36"));
        assert_eq!(m.node_cost(p, false), usd("53.10"));
        assert_eq!(m.node_cost(p, true), usd("37.90"));
    }

    #[test]
    fn a_warm_region_wins_only_while_what_it_saves_beats_its_price() {
        let m = llama70b();
        // (price, warm): the cold offering is $2/h cheaper, the warm one saves $15.20 of cold
        // start: warm first. At $20/h cheaper, the cold one wins.
        let mut c = vec![("cold", usd("34"), false), ("warm", usd("36"), true)];
        order(&mut c, &m, |x| x.2, |x| Price::per_hour(x.1));
        assert_eq!(c[0].0, "warm");
        let mut c = vec![("cold", usd("16"), false), ("warm", usd("36"), true)];
        order(&mut c, &m, |x| x.2, |x| Price::per_hour(x.1));
        assert_eq!(c[0].0, "cold");
        // All cold: placement's order stands (cheapest first, ties as given).
        let mut c = vec![("a", usd("30"), false), ("b", usd("30"), false), ("c", usd("31"), false)];
        order(&mut c, &m, |x| x.2, |x| Price::per_hour(x.1));
        assert_eq!(c.iter().map(|x| x.0).collect::<Vec<_>>(), ["a", "b", "c"]);
    }

    #[test]
    fn the_last_copy_is_kept_while_keeping_it_costs_less_than_losing_it() {
        let m = llama70b();
        // At $36/h: 260 s slower from the origin, and $12.60 is 1,260 s of the node: 1,520 s.
        assert_eq!(m.keep_last_copy_for(Price::per_hour(usd("36"))), Duration::from_secs(1520));
        // A dearer node is kept for less.
        assert!(m.keep_last_copy_for(Price::per_hour(usd("72"))) < Duration::from_secs(1520));
    }
}
