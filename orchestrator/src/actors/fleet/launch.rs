//! The launch gate: what keeps a pass from sending a launch twice, and a pool without capacity
//! from costing one refused call per node. A node's launch goes to its cloud actor once; an
//! offering that has not launched recently gets one probing launch at a time while the other
//! nodes for it wait; a refusal marks the offering and moves the node to its next candidate.

use fleet_core::NodeId;
use fleet_policies::placement::UnavailableReason;
use fleet_providers::ProviderError;
use fleet_state::lifecycle::node::NodePhase;
use fleet_state::model::{NodeRecord, update_at};
use fleet_state::store::StoreError;

use super::FleetState;
use crate::actors::cloud::CloudMsg;

/// A region's launch of `node` failed: the offering is marked (capacity, quota) and the node
/// walks on to its next candidate at once.
pub(super) async fn on_launch_failed(
    st: &mut FleetState,
    node: NodeId,
    error: ProviderError,
) -> Result<(), StoreError> {
    let now = st.ctx.clock.now();
    let ttl = st.ctx.config.unavailable_ttl;
    let why = match &error {
        ProviderError::InsufficientCapacity { .. } => Some(UnavailableReason::InsufficientCapacity),
        ProviderError::QuotaExceeded { .. } => Some(UnavailableReason::QuotaExceeded),
        _ => None,
    };
    if let (Some(why), Some(key)) = (why, error.unavailable_offering()) {
        st.unavailable.mark(key.clone(), why, now, ttl);
    }
    // Walk to the next candidate at once (the region already advanced the record).
    if let Some((rec, _)) = fleet_state::store::get_json::<NodeRecord>(&*st.ctx.store, &st.ctx.keys.node(node)).await?
        && matches!(rec.state, NodePhase::Requested { .. })
    {
        dispatch(st, rec).await?;
    }
    Ok(())
}

/// Nodes that waited for a probe go now (or wait for the next one).
pub(super) async fn release_waiting(st: &mut FleetState) -> Result<(), StoreError> {
    for id in std::mem::take(&mut st.waiting) {
        if let Some((rec, _)) =
            fleet_state::store::get_json::<NodeRecord>(&*st.ctx.store, &st.ctx.keys.node(id)).await?
            && matches!(rec.state, NodePhase::Requested { .. } | NodePhase::Launching { .. })
        {
            dispatch(st, rec).await?;
        }
    }
    Ok(())
}

/// Sends the node's launch to its cloud: first past candidates that refused meanwhile (the
/// record's attempt moves on; none left → Failed), and only one at a time to an offering that has
/// not launched recently.
pub(super) async fn dispatch(st: &mut FleetState, mut rec: NodeRecord) -> Result<(), StoreError> {
    if st.launching.contains(&rec.id) {
        return Ok(());
    }
    let now = st.ctx.clock.now();
    if matches!(rec.state, NodePhase::Requested { .. }) {
        let from = rec.attempt;
        let skip_to = (from..rec.candidates.len())
            .find(|i| st.unavailable.covering_key(&rec.candidates[*i].offering, now).is_none())
            .unwrap_or(rec.candidates.len());
        if skip_to != from {
            let updated = update_at(&*st.ctx.store, &st.ctx.keys.node(rec.id), |cur: &NodeRecord| {
                if cur.attempt != from || !matches!(cur.state, NodePhase::Requested { .. }) {
                    return None;
                }
                if skip_to >= cur.candidates.len() {
                    let reason = "every candidate offering refused capacity or quota".to_string();
                    let state = NodePhase::Failed { instance_id: None, reason, since: now };
                    return Some(NodeRecord { state, ..cur.clone() });
                }
                Some(NodeRecord { attempt: skip_to, ..cur.clone() })
            })
            .await?;
            if let Some((r, rev)) = &updated {
                st.informer.put_node(r.clone(), *rev);
            }
            match updated {
                Some((r, _)) if matches!(r.state, NodePhase::Requested { .. }) && r.attempt == skip_to => rec = r,
                _ => return Ok(()),
            }
        }
    }
    let Some(offering) = rec.offering().cloned() else { return Ok(()) };
    let ttl = chrono::Duration::from_std(st.ctx.config.unavailable_ttl).unwrap_or_default();
    let proven = st.proven.get(&offering).is_some_and(|t| now - *t < ttl);
    if !proven {
        if st.probing.contains(&offering) {
            st.waiting.insert(rec.id);
            return Ok(());
        }
        st.probing.insert(offering.clone());
    }
    let cloud = offering.cloud;
    let Some(actor) = st.clouds.get(&cloud) else {
        tracing::warn!(node = rec.id, %cloud, "no actor for the cloud right now; the next reconcile retries");
        st.probing.remove(&offering);
        return Ok(());
    };
    st.launching.insert(rec.id);
    if actor.send_message(CloudMsg::Launch(rec)).is_err() {
        tracing::warn!(%cloud, "cloud actor is gone; the next reconcile retries");
    }
    Ok(())
}
