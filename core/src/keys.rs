//! Where fleet keeps its state in the store (etcd, or the embedded store): every key, in one place.
//!
//! ```text
//! /fleet/{fleet}/spec                      the applied fleet spec (TOML text, with the revision it had)
//! /fleet/{fleet}/counters/{kind}           next id of nodes, runners, requests (bumped by compare-and-swap)
//! /fleet/{fleet}/nodes/{node}              NodeRecord: lifecycle, offering candidates, instance id
//! /fleet/{fleet}/runners/{runner}          RunnerRecord: app, node, lifecycle
//! /fleet/{fleet}/placed/{node}/{runner}    the runners placed on a node (an index the node's agent
//!                                          watches: it never reads every runner of the fleet)
//! /fleet/{fleet}/agents/{node}             the node agent's health record, attached to the agent's lease
//! /fleet/{fleet}/agentlogs/{node}         the last lines of the node agent's log, on the agent's lease
//! /fleet/{fleet}/hostkeys/{node}           the node's SSH host key, pinned at first contact (trust on first use)
//! /fleet/{fleet}/queue/{app}/{request}     a request not finished yet (queued or claimed)
//! /fleet/{fleet}/claims/{app}/{request}    who serves it now, attached to the claimer's lease
//! /fleet/{fleet}/results/{app}/{request}   a finished request (output or error)
//! /fleet/{fleet}/holders/{app}/{file}/{node}   the chunks of a cached model file a node holds and
//!                                          serves to its region's peers, on the agent's lease
//! /fleet/{fleet}/originfetch/{app}/{region}/{file}/{chunk}   a node fetching that chunk from the
//!                                          origin (on its lease): the region's others wait for it
//! /fleet/{fleet}/leader                    the election key of the daemon that acts
//! /fleet/{fleet}/tokens/{name}             an API token: its name, scope and SHA-256 (never the token)
//! /fleet/{fleet}/events/{event}            a decision and its reason (bounded history, oldest trimmed)
//! ```
//!
//! Ids are zero-padded to 20 digits so that the store's lexical order is numeric order (a
//! queue's prefix read returns oldest first). A claim lives on a lease: when the claiming runner's
//! agent dies, its lease expires, the claim disappears, and the request is queued again.

/// The keys of one fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    root: String,
}

/// Kinds of numbered records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Node,
    Runner,
    Request,
    Event,
}

impl Counter {
    fn name(self) -> &'static str {
        match self {
            Counter::Node => "node",
            Counter::Runner => "runner",
            Counter::Request => "request",
            Counter::Event => "event",
        }
    }
}

/// A numbered record's key segment: 20 digits, so lexical order is numeric order.
pub fn id_segment(id: u64) -> String {
    format!("{id:020}")
}

/// The id at the end of a key made by [`Keys`], if it is one.
pub fn id_of(key: &str) -> Option<u64> {
    let last = key.rsplit('/').next()?;
    if last.len() == 20 { last.parse().ok() } else { None }
}

impl Keys {
    /// `fleet` must be a slug (lower case, digits, '-'), as the spec checks.
    pub fn new(fleet: &str) -> Keys {
        Keys { root: format!("/fleet/{fleet}/") }
    }

    /// Everything of this fleet.
    pub fn root(&self) -> &str {
        &self.root
    }

    pub fn spec(&self) -> String {
        format!("{}spec", self.root)
    }

    pub fn counter(&self, c: Counter) -> String {
        format!("{}counters/{}", self.root, c.name())
    }

    pub fn nodes(&self) -> String {
        format!("{}nodes/", self.root)
    }

    pub fn node(&self, id: u64) -> String {
        format!("{}nodes/{}", self.root, id_segment(id))
    }

    pub fn runners(&self) -> String {
        format!("{}runners/", self.root)
    }

    pub fn runner(&self, id: u64) -> String {
        format!("{}runners/{}", self.root, id_segment(id))
    }

    /// The runners placed on `node`: written with each runner record, deleted with it.
    pub fn placed(&self, node: u64) -> String {
        format!("{}placed/{}/", self.root, id_segment(node))
    }

    pub fn placement(&self, node: u64, runner: u64) -> String {
        format!("{}placed/{}/{}", self.root, id_segment(node), id_segment(runner))
    }

    pub fn agents(&self) -> String {
        format!("{}agents/", self.root)
    }

    pub fn agent(&self, node: u64) -> String {
        format!("{}agents/{}", self.root, id_segment(node))
    }

    /// The last lines of a node agent's log (`fleetctl logs node ID`).
    pub fn agent_log(&self, node: u64) -> String {
        format!("{}agentlogs/{}", self.root, id_segment(node))
    }

    /// The SSH host key recorded for a node at its first bootstrap.
    pub fn host_key(&self, node: u64) -> String {
        format!("{}hostkeys/{}", self.root, id_segment(node))
    }

    /// Every app's unfinished requests.
    pub fn queues(&self) -> String {
        format!("{}queue/", self.root)
    }

    pub fn queue(&self, app: &str) -> String {
        format!("{}queue/{app}/", self.root)
    }

    pub fn queued(&self, app: &str, request: u64) -> String {
        format!("{}queue/{app}/{}", self.root, id_segment(request))
    }

    pub fn claims(&self) -> String {
        format!("{}claims/", self.root)
    }

    pub fn claim(&self, app: &str, request: u64) -> String {
        format!("{}claims/{app}/{}", self.root, id_segment(request))
    }

    /// Which nodes hold which chunks of `app`'s cached model files (`file`: the file's cache id).
    pub fn holders(&self, app: &str) -> String {
        format!("{}holders/{app}/", self.root)
    }

    pub fn holders_of(&self, app: &str, file: &str) -> String {
        format!("{}holders/{app}/{file}/", self.root)
    }

    pub fn holder(&self, app: &str, file: &str, node: u64) -> String {
        format!("{}holders/{app}/{file}/{}", self.root, id_segment(node))
    }

    /// Chunks of `app`'s model files being fetched from the origin, per region.
    pub fn origin_fetches(&self, app: &str) -> String {
        format!("{}originfetch/{app}/", self.root)
    }

    pub fn origin_fetch(&self, app: &str, region: &str, file: &str, chunk: usize) -> String {
        format!("{}originfetch/{app}/{region}/{file}/{chunk}", self.root)
    }

    pub fn results(&self, app: &str) -> String {
        format!("{}results/{app}/", self.root)
    }

    pub fn result(&self, app: &str, request: u64) -> String {
        format!("{}results/{app}/{}", self.root, id_segment(request))
    }

    pub fn tokens(&self) -> String {
        format!("{}tokens/", self.root)
    }

    pub fn token(&self, name: &str) -> String {
        format!("{}tokens/{name}", self.root)
    }

    /// The fleet's decisions with their reasons, oldest first (`fleetctl get events`).
    pub fn events(&self) -> String {
        format!("{}events/", self.root)
    }

    pub fn event(&self, id: u64) -> String {
        format!("{}events/{}", self.root, id_segment(id))
    }

    pub fn leader(&self) -> String {
        format!("{}leader", self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_numerically_and_round_trip() {
        let k = Keys::new("prod");
        let (a, b) = (k.queued("llm", 9), k.queued("llm", 10));
        assert!(a < b, "{a} should sort before {b}");
        assert!(a.starts_with(&k.queue("llm")) && a.starts_with(k.root()));
        assert_eq!(id_of(&b), Some(10));
        assert_eq!(id_of(&k.spec()), None);
        assert_eq!(k.node(7), "/fleet/prod/nodes/00000000000000000007");
    }

    #[test]
    fn one_apps_queue_is_not_a_prefix_of_anothers() {
        let k = Keys::new("prod");
        assert!(!k.queued("llm-big", 1).starts_with(&k.queue("llm")));
    }
}
