//! fleet-agent: what runs on each rented node. It finds the GPUs ([`gpu`]), proves them with a
//! burn-in ([`burnin`]), registers and reports health on an etcd lease, runs the runners the
//! orchestrator assigns with candle ([`model`], [`serve`]) and relays the cloud's interruption
//! notices ([`metadata`]). Models named by digest come through its content-addressed cache ([`cache`]). It links no cloud SDK: the store client and the queue protocol are
//! fleetd's own (`fleet-orchestrator` without its `aws` feature).

pub mod burnin;
pub mod cache;
pub mod config;
pub mod gpu;
pub mod llm;
pub mod logtail;
pub mod metadata;
pub mod model;
pub mod push;
pub mod serve;
