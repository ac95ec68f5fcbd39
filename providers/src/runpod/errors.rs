//! RunPod failures → [`ProviderError`], in one place. RunPod's GraphQL API answers most errors
//! with HTTP 200 and `{"errors": [{"message"}]}` and no machine-readable code, so the mapping
//! goes by the messages RunPod is known to send (its SDKs and other schedulers match the same).

use std::time::Duration;

use fleet_core::OfferingKey;

use crate::ProviderError;
use crate::rest::HttpFailure;

const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(2);

/// Messages meaning "no machine fits right now".
const CAPACITY: [&str; 5] = [
    "no longer any instances available",
    "not enough free gpus",
    "does not have the resources to deploy",
    "no instances available",
    // An interruptible bid below the current minimum: unavailable at fleet's price for now.
    "below the minimum bid",
];
/// Messages meaning an account limit (funds, spend limit, pod count).
const QUOTA: [&str; 4] = ["enough funds", "balance is too low", "spend limit", "maximum number of pods"];

/// A GraphQL `errors` answer (HTTP 200) with this message.
pub(crate) fn from_message(message: &str, offering: Option<&OfferingKey>) -> ProviderError {
    let m = message.to_ascii_lowercase();
    let detail = message.to_string();
    match offering {
        Some(o) if CAPACITY.iter().any(|c| m.contains(c)) => {
            return ProviderError::InsufficientCapacity { offering: o.clone(), detail };
        }
        Some(o) if QUOTA.iter().any(|c| m.contains(c)) => {
            return ProviderError::QuotaExceeded { offering: o.clone(), detail };
        }
        _ => {}
    }
    if m.contains("unauthorized") || m.contains("api key") || m.contains("permission") {
        ProviderError::Unauthorized { detail }
    } else if m.contains("not found") {
        ProviderError::NotFound { what: detail }
    } else if m.contains("internal") || m.contains("timeout") || m.contains("try again later") {
        ProviderError::Transient { detail }
    } else {
        ProviderError::InvalidRequest { detail }
    }
}

/// A failure at the HTTP level (no GraphQL answer).
pub(crate) fn map(f: HttpFailure, offering: Option<&OfferingKey>) -> ProviderError {
    if let Some(m) = f.body["errors"][0]["message"].as_str() {
        return from_message(m, offering);
    }
    let detail = match f.status {
        Some(s) => format!("HTTP {s}: {}", f.text),
        None => f.text.clone(),
    };
    match f.status {
        None => ProviderError::Transient { detail },
        Some(401 | 403) => ProviderError::Unauthorized { detail },
        Some(429) => ProviderError::Throttled { retry_after: f.retry_after.unwrap_or(DEFAULT_RETRY_AFTER), detail },
        Some(404) => ProviderError::NotFound { what: detail },
        Some(400..=499) => ProviderError::InvalidRequest { detail },
        Some(_) => ProviderError::Transient { detail },
    }
}

#[cfg(test)]
mod tests {
    use fleet_core::{CapacityType, Cloud};
    use serde_json::json;

    use super::*;

    #[test]
    fn messages_and_statuses_map_to_kinds() {
        let o = OfferingKey {
            cloud: Cloud::Runpod,
            region: "us".into(),
            zone: Some("us-ca-1".into()),
            instance_type: "1x_H100-SXM_SECURE".into(),
            capacity: CapacityType::Spot,
        };
        let k = |m: &str, launch: bool| from_message(m, launch.then_some(&o)).kind();
        assert_eq!(
            k(
                "There are no longer any instances available with the requested specifications. Please refresh and try again.",
                true
            ),
            "insufficient-capacity"
        );
        assert_eq!(
            k("There are not enough free GPUs on the host machine to start this pod.", true),
            "insufficient-capacity"
        );
        assert_eq!(k("Your bid price of 1.5 is below the minimum bid of 2.09.", true), "insufficient-capacity");
        assert_eq!(k("You do not have enough funds to deploy this pod.", true), "quota-exceeded");
        assert_eq!(k("Pod abc not found", false), "not-found");
        assert_eq!(k("Invalid GPU type: X", true), "invalid-request");
        let http = |s: u16| HttpFailure { status: Some(s), body: json!(null), text: "x".into(), retry_after: None };
        assert_eq!(map(http(401), None).kind(), "unauthorized");
        assert_eq!(map(http(429), None).kind(), "throttled");
        assert_eq!(map(http(502), None).kind(), "transient");
    }
}
