//! fleet-providers: the one boundary between fleet and the clouds.
//!
//! - [`Provider`]: a handful of async methods, each with its contract in its doc comment.
//! - [`ProviderError`]: the few kinds of failure the orchestrator acts on; each adapter maps its
//!   vendor's codes onto them in one place (`aws/errors.rs`, …).
//! - [`fake::FakeProvider`]: fails the way clouds fail, on purpose, deterministically for a seed.
//! - `conformance`: the checks every adapter must pass.
//! - [`aws`] (feature `aws`): EC2 through aws-sdk-ec2.

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod error;
pub mod fake;
pub mod local;
#[cfg(any(test, feature = "testing"))]
pub mod moto;
pub mod origin;
pub mod prices;

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "azure")]
pub mod azure;
#[cfg(feature = "emulators")]
pub mod emulators;
#[cfg(feature = "gcp")]
pub mod gcp;
#[cfg(feature = "lambda")]
pub mod lambda;
#[cfg(any(feature = "lambda", feature = "runpod"))]
mod rest;
#[cfg(feature = "runpod")]
pub mod runpod;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fleet_core::{Cloud, Offering, OfferingKey, Price};
use serde::{Deserialize, Serialize};

pub use error::{ProviderError, ProviderResult};

/// Tag (label) keys every instance fleet launches carries, valid on every cloud (lower case,
/// digits and '-': GCP labels allow nothing else).
pub const TAG_FLEET: &str = "fleet-name";
pub const TAG_NODE: &str = "fleet-node";
pub const TAG_APP: &str = "fleet-app";
pub const TAG_TOKEN: &str = "fleet-token";

/// What to launch. Build it with [`LaunchRequest::new`] so the idempotency token and tags are right.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaunchRequest {
    pub offering: OfferingKey,
    /// fleet's id for the node this instance becomes.
    pub node_id: String,
    pub app: String,
    /// Same token, same instance: derived from the fleet and node id, at most 64 ASCII characters.
    pub idempotency_token: String,
    /// For spot: the most fleet will pay per hour (the cloud's default, on-demand, when `None`).
    pub max_price: Option<Price>,
    /// The fleet's tags plus any extra ones; [`TAG_FLEET`], [`TAG_NODE`], [`TAG_APP`], [`TAG_TOKEN`] always.
    pub tags: BTreeMap<String, String>,
}

impl LaunchRequest {
    pub fn new(fleet: &str, node_id: &str, app: &str, offering: OfferingKey) -> LaunchRequest {
        let token = idempotency_token(fleet, node_id);
        let tags = BTreeMap::from([
            (TAG_FLEET.to_string(), fleet.to_string()),
            (TAG_NODE.to_string(), node_id.to_string()),
            (TAG_APP.to_string(), app.to_string()),
            (TAG_TOKEN.to_string(), token.clone()),
        ]);
        LaunchRequest {
            offering,
            node_id: node_id.into(),
            app: app.into(),
            idempotency_token: token,
            max_price: None,
            tags,
        }
    }
}

impl LaunchRequest {
    /// What every adapter checks first: the request is for `cloud`, buys on-demand or spot
    /// (never reserved), and carries `fleet`'s tags with its token (built by [`LaunchRequest::new`]).
    pub fn check(&self, cloud: Cloud, fleet: &str) -> ProviderResult<()> {
        let o = &self.offering;
        let invalid = |detail: String| Err(ProviderError::InvalidRequest { detail });
        if o.cloud != cloud {
            return invalid(format!("{o} is not a {cloud} offering"));
        }
        if o.capacity == fleet_core::CapacityType::Reserved {
            return invalid("fleet does not launch into reserved capacity".into());
        }
        if self.tags.get(TAG_FLEET).map(String::as_str) != Some(fleet)
            || self.tags.get(TAG_TOKEN) != Some(&self.idempotency_token)
        {
            return invalid(format!(
                "launch request for {} lacks the fleet's tags; build it with LaunchRequest::new",
                self.node_id
            ));
        }
        Ok(())
    }
}

/// `fleet-node`, shortened with a stable hash when longer than EC2's 64-character limit.
pub fn idempotency_token(fleet: &str, node_id: &str) -> String {
    let raw = format!("{fleet}-{node_id}");
    if raw.len() <= 64 && raw.is_ascii() {
        return raw;
    }
    // FNV-1a: stable across processes and versions, unlike std's hasher.
    let h = fnv1a(0xcbf2_9ce4_8422_2325, &raw);
    let prefix: String = raw.chars().filter(char::is_ascii_alphanumeric).take(47).collect();
    format!("{prefix}-{h:016x}")
}

fn fnv1a(seed: u64, s: &str) -> u64 {
    let mut h: u64 = seed;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A resource name every cloud accepts, derived from an idempotency token: lower case letters,
/// digits and '-', starting with a letter, at most 63 characters (GCP's rule, the strictest;
/// Azure VM names allow 64). The same token always gives the same name, so a re-sent launch
/// names the instance the first one made.
pub fn instance_name(token: &str) -> String {
    let mut s: String =
        token.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        s.insert_str(0, "f-");
    }
    let lossless = s.len() <= 63 && token.len() == s.len() && token == s;
    if !lossless {
        // Different tokens may map onto one cleaned name ("A" and "a"): a hash of the token keeps them apart.
        s.truncate(46);
        s = format!("{}-{:016x}", s.trim_end_matches('-'), fnv1a(0xcbf2_9ce4_8422_2325, token));
    }
    s.trim_end_matches('-').to_string()
}

/// A UUID derived from a token (GCP's `requestId` must be a UUID): same token, same UUID.
pub fn token_uuid(token: &str) -> String {
    let a = fnv1a(0xcbf2_9ce4_8422_2325, token);
    let b = fnv1a(0x6c62_272e_07bb_0142, token);
    // Version 8 ("custom") and the RFC 4122 variant bits.
    let a = (a & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_8000;
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    Pending,
    Running,
    Stopping,
    Stopped,
    /// Shutting down or gone; it no longer bills (or is about to stop billing).
    Terminated,
}

impl InstanceState {
    /// Still costs money or may yet.
    pub fn is_live(self) -> bool {
        !matches!(self, InstanceState::Terminated)
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::Terminated => "terminated",
        })
    }
}

/// An instance as the cloud reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub offering: OfferingKey,
    pub state: InstanceState,
    pub public_ip: Option<IpAddr>,
    pub private_ip: Option<IpAddr>,
    /// Where fleet reaches the instance's sshd: its address and port as this cloud maps them (port
    /// 22 on the public, else private, address for most clouds; RunPod maps 22 to another public
    /// port). `None` until the cloud reports an address.
    pub ssh: Option<SocketAddr>,
    /// The SSH host public keys (OpenSSH lines, `ssh-ed25519 AAAA…`) the cloud reported for the
    /// instance ([`Provider::host_keys`]): the server must present one of them. Empty where the
    /// cloud reports none (fleet then pins the key it sees at first contact).
    pub ssh_host_keys: Vec<String>,
    pub launched_at: Option<DateTime<Utc>>,
    pub tags: BTreeMap<String, String>,
}

/// sshd's usual endpoint: port 22 on the public address, else the private one.
pub fn ssh_on_22(public: Option<IpAddr>, private: Option<IpAddr>) -> Option<SocketAddr> {
    public.or(private).map(|ip| SocketAddr::new(ip, 22))
}

impl Instance {
    pub fn node_id(&self) -> Option<&str> {
        self.tags.get(TAG_NODE).map(String::as_str)
    }
}

/// One cloud account (and, where the cloud has them, one region) as fleet uses it.
///
/// Every method may fail with any [`ProviderError`]; the contracts below say which results are
/// *not* errors. Implementations are cheap to share (`Arc<dyn Provider>`) and safe to call
/// concurrently.
#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug {
    fn cloud(&self) -> Cloud;

    /// A name for logs and metrics: the cloud and region/account, never a credential.
    fn name(&self) -> String;

    /// Every offering this provider can sell: the catalog's, with live prices where the cloud
    /// exposes them (the source and date say which). Offerings the cloud does not offer now are
    /// included with [`fleet_core::Availability::Unavailable`].
    async fn offerings(&self) -> ProviderResult<Vec<Offering>>;

    /// Launches one instance for `req`. Idempotent: a second call with the same
    /// `idempotency_token` returns the instance the first one created (whatever its state)
    /// instead of creating another. The instance carries `req.tags`.
    ///
    /// `InsufficientCapacity` and `QuotaExceeded` name `req.offering`: the caller marks it
    /// unavailable and tries the next offering.
    async fn launch(&self, req: &LaunchRequest) -> ProviderResult<Instance>;

    /// The instance `id` of this fleet. `NotFound` when the cloud has no such instance, or it is
    /// not this fleet's. A terminated instance the cloud still reports comes back with
    /// [`InstanceState::Terminated`].
    async fn get(&self, id: &str) -> ProviderResult<Instance>;

    /// Every live (not terminated) instance carrying this fleet's [`TAG_FLEET`] tag, across all
    /// pages. Never another fleet's instances.
    async fn list(&self) -> ProviderResult<Vec<Instance>>;

    /// Terminates `id`. `Ok` once termination is accepted, and also when the instance is already
    /// terminated or unknown: callers may call it again until `get` says `Terminated`/`NotFound`.
    async fn terminate(&self, id: &str) -> ProviderResult<()>;

    /// The SSH host public keys of instance `id` as the cloud reports them from outside the
    /// machine (OpenSSH lines, `ssh-ed25519 AAAA…`), so fleet can verify the host before it sends
    /// any secret. AWS: the instance's console output, where cloud-init prints them; GCP: the
    /// `hostkeys/` guest attributes the guest environment publishes.
    ///
    /// `Ok(None)`: this cloud reports no host keys (fleet pins the key at first contact and says
    /// so in the node's events). `Ok(Some(empty))`: it does, but not for this instance yet (the
    /// guest has not finished booting); ask again later.
    async fn host_keys(&self, _id: &str) -> ProviderResult<Option<Vec<String>>> {
        Ok(None)
    }
}

/// The SSH host keys in text a machine printed at boot: the lines between cloud-init's
/// `-----BEGIN SSH HOST KEY KEYS-----` and `-----END SSH HOST KEY KEYS-----` (the last such block,
/// the one of the current boot) that read as `<type> <base64> [comment]` of a known key type.
/// Anything else is ignored: a console log is written by the guest and proves nothing by itself
/// beyond what the cloud relays.
pub fn host_keys_in_console(text: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN SSH HOST KEY KEYS-----";
    const END: &str = "-----END SSH HOST KEY KEYS-----";
    let Some(start) = text.rfind(BEGIN) else { return Vec::new() };
    let rest = &text[start + BEGIN.len()..];
    let Some(end) = rest.find(END) else { return Vec::new() };
    rest[..end]
        .lines()
        .filter_map(|l| {
            // Console lines may carry a kernel timestamp or "ec2: " prefix before the key.
            let mut words = l.split_whitespace().skip_while(|w| !is_host_key_type(w));
            let (kind, blob) = (words.next()?, words.next()?);
            let base64_ok = blob.len() >= 16
                && blob.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=');
            base64_ok.then(|| format!("{kind} {blob}"))
        })
        .collect()
}

fn is_host_key_type(w: &str) -> bool {
    matches!(w, "ssh-ed25519" | "ssh-rsa" | "ecdsa-sha2-nistp256" | "ecdsa-sha2-nistp384" | "ecdsa-sha2-nistp521")
}

#[cfg(test)]
mod host_key_tests {
    use super::host_keys_in_console;

    #[test]
    fn host_keys_are_read_from_cloud_init_console_output() {
        // As an EC2 Ubuntu instance's console prints them (keys shortened).
        let console = "[   12.3] cloud-init[1023]: Cloud-init v. 24.1 running 'modules:final'\n\
            ec2: #############################################################\n\
            -----BEGIN SSH HOST KEY KEYS-----\n\
            ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= root@ip-10-0-0-5\n\
            ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOx7tYkE2 root@ip-10-0-0-5\n\
            not a key line\n\
            ssh-rsa short\n\
            -----END SSH HOST KEY KEYS-----\n\
            [   13.0] cloud-init[1023]: finished\n";
        assert_eq!(
            host_keys_in_console(console),
            vec![
                "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY=".to_string(),
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOx7tYkE2".to_string(),
            ]
        );
        // The block of the latest boot wins; an unfinished block or none gives nothing.
        let two = format!(
            "{console}\n-----BEGIN SSH HOST KEY KEYS-----\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5BBBBnewboot\n-----END SSH HOST KEY KEYS-----\n"
        );
        assert_eq!(host_keys_in_console(&two), vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5BBBBnewboot".to_string()]);
        assert!(
            host_keys_in_console("-----BEGIN SSH HOST KEY KEYS-----\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA").is_empty()
        );
        assert!(host_keys_in_console("Linux version 6.8 booting").is_empty());
    }
}

#[cfg(test)]
mod naming_tests {
    use super::*;

    #[test]
    fn instance_names_are_valid_everywhere_and_stable() {
        let ok = |n: &str| {
            n.len() <= 63
                && n.starts_with(|c: char| c.is_ascii_lowercase())
                && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !n.ends_with('-')
        };
        assert_eq!(instance_name("prod-12"), "prod-12");
        for t in ["prod-12", "Prod-12", "9lives-1", "a_b.c", &"x".repeat(80), "prod-", "-"] {
            let n = instance_name(t);
            assert!(ok(&n), "{t} -> {n}");
            assert_eq!(n, instance_name(t));
        }
        assert_ne!(instance_name("Prod-1"), instance_name("prod-1"));
        assert_ne!(instance_name(&"x".repeat(70)), instance_name(&"x".repeat(71)));
    }

    #[test]
    fn token_uuids_are_uuids() {
        let u = token_uuid("prod-12");
        assert_eq!(u, token_uuid("prod-12"));
        assert_ne!(u, token_uuid("prod-13"));
        let parts: Vec<&str> = u.split('-').collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![8, 4, 4, 4, 12]);
        assert!(parts[2].starts_with('8') && matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'), "{u}");
    }
}
