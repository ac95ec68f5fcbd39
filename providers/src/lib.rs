//! fleet-providers: the one `Provider` trait the orchestrator talks to, and an adapter per cloud.
//!
//! Nothing lives here yet: the trait, its error model, the fault-injecting fake and the cloud
//! adapters arrive with the "Providers I" and "Providers II" issues. The crate exists now so the
//! workspace already has the shape the design describes.
