//! fleet-orchestrator: the `fleetd` daemon.
//!
//! Empty until the orchestrator issue lands; the `fleetd` binary is added with it, so that no
//! binary exists that pretends to run a fleet.
