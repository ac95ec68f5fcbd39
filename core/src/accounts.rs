//! The `[clouds.*]` section of a fleet spec: which cloud accounts fleetd uses and how (project,
//! subscription, resource group, network, image, SSH key names). Never credentials: API keys come
//! from fleetd's environment (`LAMBDA_API_KEY`, `RUNPOD_API_KEY`), GCP and Azure from their
//! standard credential chains, AWS from its own; a spec that names one is refused.
//!
//! ```toml
//! [clouds.aws]
//! region = "us-east-1"
//! image = "ami-0123456789abcdef0"          # a GPU AMI (drivers installed)
//! subnet = "subnet-0abc"                   # optional
//! security_groups = ["sg-0abc"]            # optional
//! key_name = "fleet"                       # optional: an EC2 key pair
//!
//! [clouds.gcp]
//! project = "my-project"
//! zones = ["us-central1-a"]                # optional: every catalog zone when absent
//! image = "projects/ubuntu-os-accelerator-images/global/images/family/ubuntu-accelerator-2204-amd64-with-nvidia-570"
//! network = "global/networks/default"      # optional
//! ssh_public_key = "ssh-ed25519 AAAA… fleet"
//!
//! [clouds.azure]
//! subscription_id = "00000000-0000-0000-0000-000000000000"
//! resource_group = "fleet"
//! subnet_id = "/subscriptions/…/resourceGroups/fleet/providers/Microsoft.Network/virtualNetworks/fleet/subnets/nodes"
//! network_security_group = "/subscriptions/…/resourceGroups/fleet/providers/Microsoft.Network/networkSecurityGroups/fleet-ssh"
//! image = "microsoft-dsvm:ubuntu-hpc:2204:latest"
//! regions = ["eastus"]
//! ssh_public_key = "ssh-ed25519 AAAA… fleet"
//!
//! [clouds.lambda]
//! ssh_key_name = "fleet"                   # a key already in the Lambda account
//! regions = ["us-east-1"]
//!
//! [clouds.runpod]
//! image = "runpod/base:0.6.2-cuda12.4.1"
//! data_centers = ["US-CA-1"]
//! ssh_public_key = "ssh-ed25519 AAAA… fleet"
//! ```
//!
//! Every section takes `endpoint` too (another API address: a private endpoint, or a test server).

use serde::Deserialize;
use toml::Spanned;

use crate::catalog::Catalog;
use crate::cloud::Cloud;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloudAccounts {
    pub aws: Option<AwsAccount>,
    pub gcp: Option<GcpAccount>,
    pub azure: Option<AzureAccount>,
    pub lambda: Option<LambdaAccount>,
    pub runpod: Option<RunpodAccount>,
}

impl CloudAccounts {
    pub fn is_empty(&self) -> bool {
        self == &CloudAccounts::default()
    }

    /// The clouds configured, in order.
    pub fn clouds(&self) -> Vec<Cloud> {
        let mut v = Vec::new();
        if self.aws.is_some() {
            v.push(Cloud::Aws);
        }
        if self.gcp.is_some() {
            v.push(Cloud::Gcp);
        }
        if self.azure.is_some() {
            v.push(Cloud::Azure);
        }
        if self.lambda.is_some() {
            v.push(Cloud::Lambda);
        }
        if self.runpod.is_some() {
            v.push(Cloud::Runpod);
        }
        v
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsAccount {
    pub region: String,
    pub image: String,
    pub subnet: Option<String>,
    pub security_groups: Vec<String>,
    pub key_name: Option<String>,
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcpAccount {
    pub project: String,
    pub zones: Vec<String>,
    pub image: String,
    pub network: Option<String>,
    pub subnetwork: Option<String>,
    pub ssh_public_key: Option<String>,
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureAccount {
    pub subscription_id: String,
    pub resource_group: String,
    pub subnet_id: String,
    /// The NSG on every VM's NIC; it must admit TCP 22 from fleetd (Standard public IPs admit
    /// nothing inbound without one).
    pub network_security_group: String,
    /// `publisher:offer:sku:version`.
    pub image: String,
    pub regions: Vec<String>,
    pub admin_username: String,
    pub ssh_public_key: String,
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LambdaAccount {
    pub ssh_key_name: String,
    pub regions: Vec<String>,
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunpodAccount {
    pub image: String,
    pub data_centers: Vec<String>,
    pub ssh_public_key: Option<String>,
    pub endpoint: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// As written

type S = Option<Spanned<String>>;
type L = Option<Vec<Spanned<String>>>;

type Secret = Option<Spanned<toml::Value>>;

/// A section as written, plus the fields that would hold a credential (refused, with where
/// credentials come from instead). serde's `flatten` would lose the spans, hence a macro.
macro_rules! section {
    ($name:ident { $($field:ident: $ty:ty),* $(,)? }) => {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name {
            $($field: $ty,)*
            api_key: Secret,
            secret_access_key: Secret,
            access_key_id: Secret,
            client_secret: Secret,
            credentials: Secret,
            password: Secret,
        }

        impl $name {
            fn secrets(&self) -> [(&'static str, &Secret); 6] {
                [
                    ("api_key", &self.api_key),
                    ("secret_access_key", &self.secret_access_key),
                    ("access_key_id", &self.access_key_id),
                    ("client_secret", &self.client_secret),
                    ("credentials", &self.credentials),
                    ("password", &self.password),
                ]
            }
        }
    };
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClouds {
    aws: Option<Spanned<RawAws>>,
    gcp: Option<Spanned<RawGcp>>,
    azure: Option<Spanned<RawAzure>>,
    lambda: Option<Spanned<RawLambda>>,
    runpod: Option<Spanned<RawRunpod>>,
}

section!(RawAws { region: S, image: S, subnet: S, security_groups: L, key_name: S, endpoint: S });

section!(RawGcp { project: S, zones: L, image: S, network: S, subnetwork: S, ssh_public_key: S, endpoint: S });

section!(RawAzure {
    subscription_id: S,
    resource_group: S,
    subnet_id: S,
    network_security_group: S,
    image: S,
    regions: L,
    admin_username: S,
    ssh_public_key: S,
    endpoint: S,
});

section!(RawLambda { ssh_key_name: S, regions: L, endpoint: S });

section!(RawRunpod { image: S, data_centers: L, ssh_public_key: S, endpoint: S });

/// Where the checks report: (span, field, message).
pub(crate) type Report<'a> = dyn FnMut(std::ops::Range<usize>, String, String) + 'a;

struct Ck<'a, 'b> {
    report: &'a mut Report<'b>,
    section: &'static str,
    /// Where a missing field is reported: the section.
    at: std::ops::Range<usize>,
}

impl Ck<'_, '_> {
    fn err(&mut self, span: std::ops::Range<usize>, field: &str, msg: impl Into<String>) {
        (self.report)(span, format!("clouds.{}.{field}", self.section), msg.into());
    }

    fn required(&mut self, v: &S, field: &str, what: &str) -> String {
        match v {
            Some(s) if !s.get_ref().trim().is_empty() => s.get_ref().trim().to_string(),
            Some(s) => {
                self.err(s.span(), field, format!("is empty; set it to {what}"));
                String::new()
            }
            None => {
                self.err(self.at.clone(), field, format!("is missing; set it to {what}"));
                String::new()
            }
        }
    }

    fn optional(&mut self, v: &S, field: &str) -> Option<String> {
        match v {
            Some(s) if s.get_ref().trim().is_empty() => {
                self.err(s.span(), field, "is empty; leave it out instead");
                None
            }
            Some(s) => Some(s.get_ref().trim().to_string()),
            None => None,
        }
    }

    fn list(v: &L) -> Vec<String> {
        v.iter().flatten().map(|s| s.get_ref().trim().to_string()).collect()
    }

    fn endpoint(&mut self, v: &S) -> Option<String> {
        let e = self.optional(v, "endpoint")?;
        if !(e.starts_with("https://") || e.starts_with("http://")) {
            self.err(v.as_ref().map(Spanned::span).unwrap_or(0..0), "endpoint", format!("'{e}' is not an http(s) URL"));
            return None;
        }
        Some(e)
    }

    fn secrets(&mut self, fields: [(&'static str, &Secret); 6], from: &str) {
        for (name, v) in fields {
            if let Some(v) = v {
                self.err(
                    v.span(),
                    name,
                    format!("credentials never go in the spec (it is stored and shown); remove it: {from}"),
                );
            }
        }
    }

    fn ssh_key(&mut self, v: &S, field: &str) -> Option<String> {
        let k = self.optional(v, field)?;
        let ok = ["ssh-ed25519 ", "ssh-rsa ", "ecdsa-sha2-"].iter().any(|p| k.starts_with(p));
        if !ok {
            let span = v.as_ref().map(Spanned::span).unwrap_or(0..0);
            if k.contains("PRIVATE KEY") {
                self.err(
                    span,
                    field,
                    "this is a private key: never put it in the spec; give the public key (ssh-ed25519 AAAA…)",
                );
            } else {
                self.err(span, field, "expected an OpenSSH public key such as \"ssh-ed25519 AAAA… fleet\"");
            }
            return None;
        }
        Some(k)
    }

    /// Each value must be one the catalog has offerings in (`what`: "zone", "region" …).
    fn known(&mut self, v: &L, field: &str, what: &str, known: &[String]) {
        for s in v.iter().flatten() {
            if !known.iter().any(|k| k.eq_ignore_ascii_case(s.get_ref().trim())) {
                let mut some: Vec<&str> = known.iter().map(String::as_str).take(6).collect();
                some.sort();
                self.err(
                    s.span(),
                    field,
                    format!(
                        "'{}' is not a {what} the catalog has GPU offerings in (e.g. {})",
                        s.get_ref(),
                        some.join(", ")
                    ),
                );
            }
        }
    }
}

fn catalog_values(cloud: Cloud, f: impl Fn(&crate::offering::Offering) -> Option<String>) -> Vec<String> {
    let mut v: Vec<String> = Catalog::builtin().offerings().iter().filter(|o| o.cloud == cloud).filter_map(f).collect();
    v.sort();
    v.dedup();
    v
}

pub(crate) fn check(raw: &RawClouds, report: &mut Report<'_>) -> CloudAccounts {
    let mut out = CloudAccounts::default();
    if let Some(r) = &raw.aws {
        let mut ck = Ck { report, section: "aws", at: r.span() };
        let r = r.get_ref();
        ck.secrets(r.secrets(), "fleetd uses the standard AWS credential chain (environment, profile, instance role)");
        let region = ck.required(&r.region, "region", "the AWS region, e.g. \"us-east-1\"");
        let regions = catalog_values(Cloud::Aws, |o| Some(o.region.clone()));
        if !region.is_empty() && !regions.contains(&region) {
            let span = r.region.as_ref().map(Spanned::span).unwrap_or(0..0);
            ck.err(span, "region", format!("'{region}' is not a region the catalog has GPU offerings in"));
        }
        let image = ck.required(&r.image, "image", "the GPU AMI nodes boot, e.g. \"ami-0123456789abcdef0\"");
        if !image.is_empty() && !image.starts_with("ami-") {
            let span = r.image.as_ref().map(Spanned::span).unwrap_or(0..0);
            ck.err(span, "image", format!("'{image}' is not an AMI id (ami-…)"));
        }
        out.aws = Some(AwsAccount {
            region,
            image,
            subnet: ck.optional(&r.subnet, "subnet"),
            security_groups: Ck::list(&r.security_groups),
            key_name: ck.optional(&r.key_name, "key_name"),
            endpoint: ck.endpoint(&r.endpoint),
        });
    }
    if let Some(r) = &raw.gcp {
        let mut ck = Ck { report, section: "gcp", at: r.span() };
        let r = r.get_ref();
        ck.secrets(
            r.secrets(),
            "fleetd uses Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS or the metadata server)",
        );
        let project = ck.required(&r.project, "project", "the GCP project id");
        let valid = project.len() >= 6
            && project.len() <= 30
            && project.starts_with(|c: char| c.is_ascii_lowercase())
            && project.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !project.is_empty() && !valid {
            let span = r.project.as_ref().map(Spanned::span).unwrap_or(0..0);
            ck.err(span, "project", format!("'{project}' is not a project id (6–30 lower-case letters, digits, '-')"));
        }
        ck.known(&r.zones, "zones", "zone", &catalog_values(Cloud::Gcp, |o| o.zone.clone()));
        out.gcp = Some(GcpAccount {
            project,
            zones: Ck::list(&r.zones),
            image: ck.required(
                &r.image,
                "image",
                "the boot image, e.g. \"projects/ubuntu-os-accelerator-images/global/images/family/…\"",
            ),
            network: ck.optional(&r.network, "network"),
            subnetwork: ck.optional(&r.subnetwork, "subnetwork"),
            ssh_public_key: ck.ssh_key(&r.ssh_public_key, "ssh_public_key"),
            endpoint: ck.endpoint(&r.endpoint),
        });
    }
    if let Some(r) = &raw.azure {
        let mut ck = Ck { report, section: "azure", at: r.span() };
        let r = r.get_ref();
        ck.secrets(r.secrets(), "fleetd uses the Azure credential chain (AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET, managed identity, az login)");
        let sub = ck.required(&r.subscription_id, "subscription_id", "the subscription's id (a UUID)");
        let uuid = sub.len() == 36
            && sub
                .chars()
                .enumerate()
                .all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() });
        if !sub.is_empty() && !uuid {
            let span = r.subscription_id.as_ref().map(Spanned::span).unwrap_or(0..0);
            ck.err(span, "subscription_id", format!("'{sub}' is not a subscription id (a UUID)"));
        }
        let rg = ck.required(&r.resource_group, "resource_group", "the resource group fleet's VMs live in");
        let subnet = ck.required(&r.subnet_id, "subnet_id", "the full resource id of the subnet VMs join");
        let subnet_ok = subnet.starts_with("/subscriptions/") && subnet.contains("/subnets/");
        if !subnet.is_empty() && !subnet_ok {
            let span = r.subnet_id.as_ref().map(Spanned::span).unwrap_or(0..0);
            ck.err(
                span,
                "subnet_id",
                "expected /subscriptions/…/providers/Microsoft.Network/virtualNetworks/…/subnets/…",
            );
        }
        let nsg = ck.required(
            &r.network_security_group,
            "network_security_group",
            "the full resource id of a network security group that admits TCP 22 from fleetd (a Standard public IP admits no SSH without one)",
        );
        if !nsg.is_empty() && (!nsg.starts_with("/subscriptions/") || !nsg.contains("/networkSecurityGroups/")) {
            let span = r.network_security_group.as_ref().map(Spanned::span).unwrap_or(0..0);
            ck.err(
                span,
                "network_security_group",
                "expected /subscriptions/…/providers/Microsoft.Network/networkSecurityGroups/…",
            );
        }
        let image = ck.required(&r.image, "image", "a marketplace image publisher:offer:sku:version");
        if !image.is_empty() && (image.split(':').count() != 4 || image.split(':').any(str::is_empty)) {
            let span = r.image.as_ref().map(Spanned::span).unwrap_or(0..0);
            ck.err(span, "image", format!("'{image}' is not publisher:offer:sku:version"));
        }
        ck.known(&r.regions, "regions", "region", &catalog_values(Cloud::Azure, |o| Some(o.region.clone())));
        let key = ck.ssh_key(&r.ssh_public_key, "ssh_public_key");
        if r.ssh_public_key.is_none() {
            ck.err(
                ck.at.clone(),
                "ssh_public_key",
                "is missing; Linux VMs are created with password login off, so give the public key fleet logs in with",
            );
        }
        out.azure = Some(AzureAccount {
            subscription_id: sub,
            resource_group: rg,
            subnet_id: subnet,
            network_security_group: nsg,
            image,
            regions: Ck::list(&r.regions),
            admin_username: ck.optional(&r.admin_username, "admin_username").unwrap_or_else(|| "fleet".into()),
            ssh_public_key: key.unwrap_or_default(),
            endpoint: ck.endpoint(&r.endpoint),
        });
    }
    if let Some(r) = &raw.lambda {
        let mut ck = Ck { report, section: "lambda", at: r.span() };
        let r = r.get_ref();
        ck.secrets(r.secrets(), "set LAMBDA_API_KEY in fleetd's environment");
        ck.known(&r.regions, "regions", "region", &catalog_values(Cloud::Lambda, |o| Some(o.region.clone())));
        out.lambda = Some(LambdaAccount {
            ssh_key_name: ck.required(&r.ssh_key_name, "ssh_key_name", "the name of an SSH key in the Lambda account"),
            regions: Ck::list(&r.regions),
            endpoint: ck.endpoint(&r.endpoint),
        });
    }
    if let Some(r) = &raw.runpod {
        let mut ck = Ck { report, section: "runpod", at: r.span() };
        let r = r.get_ref();
        ck.secrets(r.secrets(), "set RUNPOD_API_KEY in fleetd's environment");
        ck.known(&r.data_centers, "data_centers", "data center", &catalog_values(Cloud::Runpod, |o| o.zone.clone()));
        out.runpod = Some(RunpodAccount {
            image: ck.required(&r.image, "image", "the container image pods run (it must start sshd)"),
            data_centers: Ck::list(&r.data_centers),
            ssh_public_key: ck.ssh_key(&r.ssh_public_key, "ssh_public_key"),
            endpoint: ck.endpoint(&r.endpoint),
        });
    }
    out
}
