//! fleet-agent: GPU discovery, burn-in, runners and health on each rented node.
//!
//! Empty until the agent issue lands; the `fleet-agent` binary is added with it.
