//! The clouds fleet knows how to price (and, as adapters land, to rent from).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::names;

/// A cloud or GPU marketplace. Hyperscalers first, then neoclouds, then `Local` (this machine,
/// for the demo and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cloud {
    Aws,
    Gcp,
    Azure,
    Oci,
    Lambda,
    Runpod,
    Nebius,
    Cudo,
    Fluidstack,
    Hyperstack,
    Paperspace,
    /// DigitalOcean.
    Do,
    /// Vast.ai, a marketplace of hosts.
    Vast,
    /// Prime Intellect, an aggregator reselling other clouds' offers.
    Primeintellect,
    /// Verda, formerly DataCrunch.
    Verda,
    Local,
}

impl Cloud {
    pub const ALL: [Cloud; 16] = [
        Cloud::Aws,
        Cloud::Gcp,
        Cloud::Azure,
        Cloud::Oci,
        Cloud::Lambda,
        Cloud::Runpod,
        Cloud::Nebius,
        Cloud::Cudo,
        Cloud::Fluidstack,
        Cloud::Hyperstack,
        Cloud::Paperspace,
        Cloud::Do,
        Cloud::Vast,
        Cloud::Primeintellect,
        Cloud::Verda,
        Cloud::Local,
    ];

    /// The canonical lower-case name used in specs, CLIs and store keys.
    pub const fn as_str(self) -> &'static str {
        match self {
            Cloud::Aws => "aws",
            Cloud::Gcp => "gcp",
            Cloud::Azure => "azure",
            Cloud::Oci => "oci",
            Cloud::Lambda => "lambda",
            Cloud::Runpod => "runpod",
            Cloud::Nebius => "nebius",
            Cloud::Cudo => "cudo",
            Cloud::Fluidstack => "fluidstack",
            Cloud::Hyperstack => "hyperstack",
            Cloud::Paperspace => "paperspace",
            Cloud::Do => "do",
            Cloud::Vast => "vast",
            Cloud::Primeintellect => "primeintellect",
            Cloud::Verda => "verda",
            Cloud::Local => "local",
        }
    }

    /// Hyperscalers bill and behave differently (quotas, spot markets) from neoclouds.
    pub const fn is_hyperscaler(self) -> bool {
        matches!(self, Cloud::Aws | Cloud::Gcp | Cloud::Azure | Cloud::Oci)
    }
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown cloud '{input}'{}; known clouds: {}", suggestion.map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default(), Cloud::ALL.map(|c| c.as_str()).join(", "))]
pub struct UnknownCloud {
    pub input: String,
    pub suggestion: Option<&'static str>,
}

impl FromStr for Cloud {
    type Err = UnknownCloud;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key = names::slug(s).replace('-', "");
        let alias = match key.as_str() {
            "amazon" | "ec2" => Some(Cloud::Aws),
            "google" | "gce" | "googlecloud" => Some(Cloud::Gcp),
            "microsoft" => Some(Cloud::Azure),
            "oracle" => Some(Cloud::Oci),
            "lambdalabs" | "lambdacloud" => Some(Cloud::Lambda),
            "digitalocean" => Some(Cloud::Do),
            "vastai" => Some(Cloud::Vast),
            "datacrunch" => Some(Cloud::Verda),
            "cudocompute" => Some(Cloud::Cudo),
            _ => None,
        };
        if let Some(c) = alias {
            return Ok(c);
        }
        Cloud::ALL.into_iter().find(|c| c.as_str() == key).ok_or_else(|| UnknownCloud {
            input: s.to_string(),
            suggestion: names::closest(s, Cloud::ALL.map(|c| c.as_str())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_aliases() {
        for c in Cloud::ALL {
            assert_eq!(c.as_str().parse::<Cloud>().unwrap(), c);
            assert_eq!(c.as_str().to_uppercase().parse::<Cloud>().unwrap(), c);
        }
        assert_eq!("DigitalOcean".parse::<Cloud>().unwrap(), Cloud::Do);
        assert_eq!("Lambda Labs".parse::<Cloud>().unwrap(), Cloud::Lambda);
        assert_eq!("datacrunch".parse::<Cloud>().unwrap(), Cloud::Verda);
    }

    #[test]
    fn unknown_cloud_suggests() {
        let e = "runpd".parse::<Cloud>().unwrap_err();
        assert_eq!(e.suggestion, Some("runpod"));
        assert!(e.to_string().contains("did you mean 'runpod'"), "{e}");
        assert!(e.to_string().contains("known clouds: aws, gcp"), "{e}");
    }

    #[test]
    fn serde_is_lowercase() {
        assert_eq!(serde_json::to_string(&Cloud::Primeintellect).unwrap(), "\"primeintellect\"");
    }
}
