//! Prices move (spot above all): every provider's offerings are gathered again every
//! `prices_every`, off the reconcile pass (a billing catalog takes seconds to page through), and
//! the placement index is rebuilt on them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use fleet_core::{Catalog, Offering, Price};
use fleet_policies::placement::PlacementIndex;
use ractor::ActorRef;

use super::{FleetMsg, FleetState};
use crate::actors::Ctx;
use crate::reconcile::offering_ids;

/// Offerings of every provider, live where the provider can, else the built-in catalog's rows of
/// that cloud.
pub(super) async fn gather(ctx: &Ctx) -> Catalog {
    let mut all: Vec<Offering> = Vec::new();
    for (cloud, p) in &ctx.providers {
        match p.offerings().await {
            Ok(o) => all.extend(o),
            Err(e) => {
                tracing::warn!(%cloud, error = %e, "offerings unavailable; using the built-in catalog for this cloud");
                all.extend(Catalog::builtin().offerings().iter().filter(|o| o.cloud == *cloud).cloned());
            }
        }
    }
    Catalog::new(all)
}

/// Gathers every provider's offerings every `prices_every` and sends them to the fleet actor
/// (until it is gone).
pub(super) fn spawn_refresh(fleet: &ActorRef<FleetMsg>, ctx: &Arc<Ctx>) {
    let (every, me, c) = (ctx.config.prices_every, fleet.clone(), ctx.clone());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let catalog = Arc::new(gather(&c).await);
            if me.send_message(FleetMsg::Prices(catalog)).is_err() {
                return;
            }
        }
    });
}

/// What moved between two gathers of the clouds' offerings, in words for the fleet's events
/// (`None`: nothing moved): how many prices went down and up, the largest moves (relative), and
/// offerings that left or joined.
pub fn price_changes(old: &Catalog, new: &Catalog) -> Option<String> {
    let before: HashMap<String, Price> = old.offerings().iter().map(|o| (o.key().to_string(), o.price)).collect();
    let now: HashSet<String> = new.offerings().iter().map(|o| o.key().to_string()).collect();
    let mut moves: Vec<(String, Price, Price)> = new
        .offerings()
        .iter()
        .filter_map(|o| {
            let k = o.key().to_string();
            before.get(&k).filter(|p| **p != o.price).map(|p| (k, *p, o.price))
        })
        .collect();
    let gone = before.keys().filter(|k| !now.contains(*k)).count();
    let added = now.iter().filter(|k| !before.contains_key(*k)).count();
    if moves.is_empty() && gone == 0 && added == 0 {
        return None;
    }
    // Only to order the moves: the amounts shown are exact money.
    let relative = |(_, a, b): &(String, Price, Price)| {
        (b.hourly().micros() - a.hourly().micros()).unsigned_abs() as f64 / a.hourly().micros().max(1) as f64
    };
    moves.sort_by(|x, y| relative(y).total_cmp(&relative(x)).then_with(|| x.0.cmp(&y.0)));
    let down = moves.iter().filter(|(_, a, b)| b < a).count();
    let mut msg = format!("{} offering price(s) moved ({down} down, {} up)", moves.len(), moves.len() - down);
    if !moves.is_empty() {
        let largest: Vec<String> = moves
            .iter()
            .take(3)
            .map(|(k, a, b)| format!("{k} {}/h -> {}/h", a.hourly().cents(), b.hourly().cents()))
            .collect();
        msg += &format!("; largest: {}", largest.join(", "));
    }
    if gone > 0 || added > 0 {
        msg += &format!("; {gone} offering(s) no longer sold, {added} new");
    }
    Some(msg)
}

/// Takes a gathered catalog: offering ids are positions in the catalog, so the placement index
/// is rebuilt with it. Returns what moved, for the events.
pub(super) fn apply(st: &mut FleetState, catalog: Arc<Catalog>) -> Option<String> {
    let moved = price_changes(&st.catalog, &catalog);
    *st.ctx.offerings.write().expect("offerings lock") = catalog.clone();
    st.catalog = catalog;
    if let Some(a) = &mut st.applied {
        a.index = PlacementIndex::new(st.catalog.clone(), &a.spec);
        a.ids = offering_ids(&a.index);
    }
    tracing::debug!(offerings = st.catalog.len(), "offerings refreshed");
    moved
}

#[cfg(test)]
mod tests {
    use fleet_core::{CapacityType, Catalog, Cloud};

    use crate::testing::harness::h100x8;

    #[test]
    fn moved_prices_are_said_largest_first_and_unmoved_ones_not_at_all() {
        let a = h100x8(Cloud::Lambda, "us-east-1", "20", CapacityType::OnDemand);
        let b = h100x8(Cloud::Lambda, "us-west-1", "30", CapacityType::OnDemand);
        let c = h100x8(Cloud::Lambda, "eu-west-1", "10", CapacityType::OnDemand);
        let old = Catalog::new(vec![a.clone(), b.clone(), c.clone()]);
        assert_eq!(super::price_changes(&old, &old), None);
        let a2 = h100x8(Cloud::Lambda, "us-east-1", "19", CapacityType::OnDemand);
        let b2 = h100x8(Cloud::Lambda, "us-west-1", "45", CapacityType::OnDemand);
        let d = h100x8(Cloud::Lambda, "ap-south-1", "12", CapacityType::OnDemand);
        let msg = super::price_changes(&old, &Catalog::new(vec![a2, b2, d])).unwrap();
        assert!(msg.starts_with("2 offering price(s) moved (1 down, 1 up); largest: lambda/us-west-1/"), "{msg}");
        assert!(msg.contains("$30.00/h -> $45.00/h") && msg.contains("$20.00/h -> $19.00/h"), "{msg}");
        assert!(msg.find("$45.00").unwrap() < msg.find("$19.00").unwrap(), "+50% before -5%: {msg}");
        assert!(msg.ends_with("; 1 offering(s) no longer sold, 1 new"), "{msg}");
    }
}
