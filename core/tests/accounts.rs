//! The `[clouds.*]` section of a spec: a full one parses into what fleetd builds providers from;
//! every mistake is reported with its line, field and what to do; credentials are refused.

use fleet_core::spec::FleetSpec;

const APP: &str = "[apps.chat]\ngpu = \"H100\"\n";

fn parse(clouds: &str) -> Result<FleetSpec, Vec<String>> {
    let text = format!("[fleet]\nname = \"prod\"\n{APP}{clouds}");
    FleetSpec::parse("fleet.toml", &text).map_err(|e| e.0.iter().map(ToString::to_string).collect())
}

#[test]
fn every_cloud_section_parses() {
    let s = parse(
        r#"
[clouds.aws]
region = "us-east-1"
image = "ami-0123456789abcdef0"
security_groups = ["sg-1"]
[clouds.gcp]
project = "my-project-1"
zones = ["us-central1-a"]
image = "projects/ubuntu-os-accelerator-images/global/images/family/ubuntu-accelerator-2204-amd64-with-nvidia-570"
ssh_public_key = "ssh-ed25519 AAAAC3Nza fleet"
[clouds.azure]
subscription_id = "00000000-0000-0000-0000-000000000001"
resource_group = "fleet"
subnet_id = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/fleet/providers/Microsoft.Network/virtualNetworks/v/subnets/nodes"
network_security_group = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/fleet/providers/Microsoft.Network/networkSecurityGroups/fleet-ssh"
image = "microsoft-dsvm:ubuntu-hpc:2204:latest"
regions = ["eastus"]
ssh_public_key = "ssh-ed25519 AAAAC3Nza fleet"
[clouds.lambda]
ssh_key_name = "fleet"
regions = ["us-east-1"]
[clouds.runpod]
image = "runpod/base:0.6.2"
data_centers = ["US-CA-1"]
endpoint = "http://127.0.0.1:9/graphql"
"#,
    )
    .unwrap();
    let c = &s.clouds;
    assert_eq!(c.clouds().len(), 5);
    assert_eq!(c.aws.as_ref().unwrap().security_groups, vec!["sg-1"]);
    assert_eq!(c.gcp.as_ref().unwrap().zones, vec!["us-central1-a"]);
    assert_eq!(c.azure.as_ref().unwrap().admin_username, "fleet");
    assert_eq!(c.lambda.as_ref().unwrap().ssh_key_name, "fleet");
    assert_eq!(c.runpod.as_ref().unwrap().endpoint.as_deref(), Some("http://127.0.0.1:9/graphql"));
    assert!(parse("").unwrap().clouds.is_empty());
}

#[test]
fn mistakes_are_named_with_where_and_what_to_do() {
    let errs = parse(
        r#"
[clouds.gcp]
project = "My_Project"
zones = ["us-central1-z"]
[clouds.azure]
subscription_id = "not-a-uuid"
resource_group = "fleet"
subnet_id = "nodes"
image = "ubuntu"
[clouds.runpod]
image = "runpod/base"
ssh_public_key = "-----BEGIN OPENSSH PRIVATE KEY-----"
endpoint = "ftp://x"
"#,
    )
    .unwrap_err();
    let has = |needle: &str| errs.iter().any(|e| e.contains(needle));
    assert!(has("fleet.toml:7:11: clouds.gcp.project: 'My_Project' is not a project id"), "{errs:#?}");
    assert!(has("clouds.gcp.zones: 'us-central1-z' is not a zone the catalog has GPU offerings in"), "{errs:#?}");
    assert!(has("clouds.gcp.image: is missing"), "{errs:#?}");
    assert!(has("clouds.azure.subscription_id: 'not-a-uuid' is not a subscription id"), "{errs:#?}");
    assert!(has("clouds.azure.subnet_id: expected /subscriptions/"), "{errs:#?}");
    assert!(has("clouds.azure.image: 'ubuntu' is not publisher:offer:sku:version"), "{errs:#?}");
    assert!(has("clouds.azure.ssh_public_key: is missing"), "{errs:#?}");
    assert!(has("clouds.azure.network_security_group: is missing"), "{errs:#?}");
    assert!(has("clouds.runpod.ssh_public_key: this is a private key"), "{errs:#?}");
    assert!(has("clouds.runpod.endpoint: 'ftp://x' is not an http(s) URL"), "{errs:#?}");
    // No private key material is echoed back.
    assert!(!errs.iter().any(|e| e.contains("BEGIN OPENSSH")), "{errs:#?}");
}

#[test]
fn credentials_in_the_spec_are_refused_without_echoing_them() {
    let errs = parse("[clouds.lambda]\nssh_key_name = \"fleet\"\napi_key = \"secret_abc123\"\n").unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].contains("clouds.lambda.api_key: credentials never go in the spec")
            && errs[0].contains("LAMBDA_API_KEY"),
        "{errs:?}"
    );
    assert!(!errs[0].contains("secret_abc123"));
    let errs =
        parse("[clouds.aws]\nregion = \"us-east-1\"\nimage = \"ami-1\"\nsecret_access_key = \"wJalr\"\n").unwrap_err();
    assert!(errs[0].contains("clouds.aws.secret_access_key") && !errs[0].contains("wJalr"), "{errs:?}");
    // A misspelt field is still an error (not silently ignored).
    let errs = parse("[clouds.lambda]\nssh_key_name = \"fleet\"\nregion = \"us-east-1\"\n").unwrap_err();
    assert!(errs[0].contains("unknown field `region`"), "{errs:?}");
    let errs = parse("[clouds.vultr]\n").unwrap_err();
    assert!(errs[0].contains("unknown field `vultr`"), "{errs:?}");
}
