//! fleet-simulator: capacity planning in virtual time with the daemon's own policies.
//!
//! Empty until the simulator issue lands; the `fleetsim` binary is added with it.
