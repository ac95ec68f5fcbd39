//! The launch gate: what keeps a pass from sending a launch twice, and a pool without capacity
//! from costing one refused call per node. A node's launch goes to its cloud actor once; an
//! offering that has not launched recently gets one probing launch at a time while the other
//! nodes for it wait; a refusal marks the offering and moves the node to its next candidate.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use fleet_core::{Cloud, NodeId, OfferingKey, Time};
use fleet_policies::placement::UnavailableReason;
use fleet_providers::ProviderError;
use fleet_state::lifecycle::node::NodePhase;
use fleet_state::model::{NodeRecord, update_at};
use fleet_state::store::{Revision, StoreError};

use super::FleetState;
use crate::actors::cloud::CloudMsg;
use crate::actors::region::ToLaunch;
use ractor::ActorRef;

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
    if let Some((rec, kv)) = fleet_state::store::get_json::<NodeRecord>(&*st.ctx.store, &st.ctx.keys.node(node)).await?
        && matches!(rec.state, NodePhase::Requested { .. })
    {
        dispatch(st, rec, Some(kv.mod_revision), &mut Outbox::default()).await?;
    }
    Ok(())
}

/// Nodes that waited for a probe go now (or wait for the next one).
pub(super) async fn release_waiting(st: &mut FleetState) -> Result<(), StoreError> {
    let mut out = Outbox::default();
    for id in std::mem::take(&mut st.waiting) {
        if let Some((rec, kv)) =
            fleet_state::store::get_json::<NodeRecord>(&*st.ctx.store, &st.ctx.keys.node(id)).await?
            && matches!(rec.state, NodePhase::Requested { .. } | NodePhase::Launching { .. })
        {
            dispatch(st, rec, Some(kv.mod_revision), &mut out).await?;
        }
    }
    Ok(())
}

/// Launches on their way to their clouds' actors: one message per cloud for all of a pass's
/// launches (1,250 messages one by one reached the region over ~20 ms while the pass went on
/// writing). Sent by [`Outbox::send`], or when dropped (a pass that fails half-way still sends
/// the launches it marked as in flight).
#[derive(Default)]
pub(super) struct Outbox(BTreeMap<Cloud, (ActorRef<CloudMsg>, Vec<ToLaunch>)>);

impl Outbox {
    /// Sends what is gathered, one message per cloud, and leaves the outbox empty.
    pub(super) fn send(&mut self) {
        for (cloud, (actor, nodes)) in std::mem::take(&mut self.0) {
            if actor.send_message(CloudMsg::Launch(nodes)).is_err() {
                tracing::warn!(%cloud, "cloud actor is gone; the next reconcile retries");
            }
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.send();
    }
}

/// Sends the node's launch to its cloud: first past candidates that refused meanwhile (the
/// record's attempt moves on; none left → Failed), and only one at a time to an offering that has
/// not launched recently. `written_at`: the revision of `rec` when the caller knows it.
pub(super) async fn dispatch(
    st: &mut FleetState,
    mut rec: NodeRecord,
    mut written_at: Option<Revision>,
    out: &mut Outbox,
) -> Result<(), StoreError> {
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
                Some((r, rev)) if matches!(r.state, NodePhase::Requested { .. }) && r.attempt == skip_to => {
                    (rec, written_at) = (r, Some(rev));
                }
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
    out.0.entry(cloud).or_insert_with(|| (actor.clone(), Vec::new())).1.push(ToLaunch { node: rec, written_at });
    Ok(())
}

/// Offerings that launched within `ttl` of `now`, as the records say (a live node whose instance
/// started billing then), each with its latest launch. After a restart this is what the launch
/// gate knows: launches go to them in parallel again instead of one probe at a time.
pub(super) fn launched_recently(nodes: &[Arc<NodeRecord>], now: Time, ttl: Duration) -> HashMap<OfferingKey, Time> {
    let ttl = chrono::Duration::from_std(ttl).unwrap_or_default();
    let mut out: HashMap<OfferingKey, Time> = HashMap::new();
    for n in nodes {
        let (Some(since), Some(offering)) = (n.billing_since, n.offering()) else { continue };
        if n.is_live() && now - since < ttl {
            let t = out.entry(offering.clone()).or_insert(since);
            *t = (*t).max(since);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use fleet_core::{CapacityType, Cloud, OfferingKey};
    use fleet_state::lifecycle::node::NodePhase;
    use fleet_state::model::{CandidateRecord, NodeRecord};

    use super::launched_recently;
    use crate::testing::harness::h100x8;

    fn node(
        id: u64,
        offering: &OfferingKey,
        state: NodePhase,
        billing_since: Option<fleet_core::Time>,
    ) -> Arc<NodeRecord> {
        Arc::new(NodeRecord {
            id,
            app: "llm".into(),
            state,
            candidates: vec![CandidateRecord {
                offering: offering.clone(),
                price: fleet_core::Price::parse_decimal("20").unwrap(),
                slots: 1,
            }],
            attempt: 0,
            slots: 1,
            price: None,
            billing_since,
            billing_until: None,
            cordoned: false,
            leaving: None,
            created_at: billing_since.unwrap_or_default(),
        })
    }

    #[test]
    fn recent_launches_of_live_nodes_prove_their_offering_and_nothing_else_does() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z").unwrap().to_utc();
        let min = |m: i64| now - chrono::Duration::minutes(m);
        let ttl = Duration::from_secs(600);
        let [a, b, c, d] = ["us-east-1", "us-west-1", "eu-west-1", "ap-south-1"]
            .map(|r| h100x8(Cloud::Lambda, r, "20", CapacityType::OnDemand).key());
        let ready = |since| NodePhase::Ready { instance_id: "i".into(), offering: a.clone(), since };
        let nodes = vec![
            node(1, &a, ready(min(3)), Some(min(3))),
            node(2, &a, ready(min(1)), Some(min(1))), // the latest launch on `a` counts
            node(3, &b, ready(min(30)), Some(min(30))), // too long ago
            node(4, &c, NodePhase::Terminated { since: min(1) }, Some(min(2))), // gone
            node(5, &d, NodePhase::Requested { since: min(1) }, None), // never launched
        ];
        let got = launched_recently(&nodes, now, ttl);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[&a], min(1));
    }
}
