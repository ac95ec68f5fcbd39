//! fleet-policies: pure decision functions (no I/O, no wall clock) shared by `fleetd` and `fleetsim`.
//!
//! Empty until the policies issue lands: placement with failover, autoscaling, spot mix, budgets.
