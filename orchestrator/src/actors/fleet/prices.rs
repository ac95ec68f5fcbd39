//! Prices move (spot above all): every provider's offerings are gathered again every
//! `prices_every`, off the reconcile pass (a billing catalog takes seconds to page through), and
//! the placement index is rebuilt on them.

use std::sync::Arc;

use fleet_core::{Catalog, Offering};
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

/// Takes a gathered catalog: offering ids are positions in the catalog, so the placement index
/// is rebuilt with it.
pub(super) fn apply(st: &mut FleetState, catalog: Arc<Catalog>) {
    *st.ctx.offerings.write().expect("offerings lock") = catalog.clone();
    st.catalog = catalog;
    if let Some(a) = &mut st.applied {
        a.index = PlacementIndex::new(st.catalog.clone(), &a.spec);
        a.ids = offering_ids(&a.index);
    }
    tracing::debug!(offerings = st.catalog.len(), "offerings refreshed");
}
