//! Lambda Cloud error codes → [`ProviderError`], in one place. Codes from the API's OpenAPI
//! document (`{"error": {"code": …}}`); the API's advice is to branch on `code`, never `message`.

use std::time::Duration;

use fleet_core::OfferingKey;

use crate::ProviderError;
use crate::rest::HttpFailure;

const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(2);

/// `offering`: the launch's offering, when the call was a launch.
pub(crate) fn map(f: HttpFailure, offering: Option<&OfferingKey>) -> ProviderError {
    let code = f.body["error"]["code"].as_str().unwrap_or("").to_string();
    let message = f.body["error"]["message"].as_str().map(str::to_string).unwrap_or_else(|| f.text.clone());
    let detail = match (code.as_str(), f.status) {
        ("", Some(s)) => format!("HTTP {s}: {message}"),
        ("", None) => message,
        (c, _) => format!("{c}: {message}"),
    };
    let Some(status) = f.status else { return ProviderError::Transient { detail } };
    if let Some(what) = code.strip_prefix("provider/") {
        return provider_error(what, offering, detail, f.retry_after);
    }
    match (code.as_str(), offering) {
        ("instance-operations/launch/insufficient-capacity", Some(o)) => {
            ProviderError::InsufficientCapacity { offering: o.clone(), detail }
        }
        ("global/quota-exceeded", Some(o)) => ProviderError::QuotaExceeded { offering: o.clone(), detail },
        ("global/invalid-api-key" | "global/account-inactive" | "global/invalid-address" | "global/forbidden", _) => {
            ProviderError::Unauthorized { detail }
        }
        // At launch, a missing object is the request's (an SSH key or filesystem name): fix the config.
        ("global/object-does-not-exist" | "global/not-found", Some(_)) => ProviderError::InvalidRequest { detail },
        ("global/object-does-not-exist" | "global/not-found", None) => ProviderError::NotFound { what: detail },
        ("global/invalid-parameters" | "instance-operations/launch/file-system-in-wrong-region", _) => {
            ProviderError::InvalidRequest { detail }
        }
        _ => match status {
            429 => ProviderError::Throttled { retry_after: f.retry_after.unwrap_or(DEFAULT_RETRY_AFTER), detail },
            401 | 403 => ProviderError::Unauthorized { detail },
            404 => ProviderError::NotFound { what: detail },
            400..=499 => ProviderError::InvalidRequest { detail },
            _ => ProviderError::Transient { detail },
        },
    }
}

/// `provider/…` codes: errors of Lambda's upstream providers, whatever the HTTP status. The
/// published spec names three sorts: outages and connectivity (retry), service unavailability
/// (`provider/internal-unavailable`: at a launch, this offering cannot be had now), and quota
/// limits or resource exhaustion. None of them is a bad request.
fn provider_error(
    what: &str,
    offering: Option<&OfferingKey>,
    detail: String,
    retry_after: Option<std::time::Duration>,
) -> ProviderError {
    let has = |w: &str| what.contains(w);
    match offering {
        Some(o) if has("quota") => ProviderError::QuotaExceeded { offering: o.clone(), detail },
        Some(o) if has("capacity") || has("exhaust") || has("unavailable") => {
            ProviderError::InsufficientCapacity { offering: o.clone(), detail }
        }
        _ if has("rate") || has("throttl") => {
            ProviderError::Throttled { retry_after: retry_after.unwrap_or(DEFAULT_RETRY_AFTER), detail }
        }
        _ => ProviderError::Transient { detail },
    }
}

#[cfg(test)]
mod tests {
    use fleet_core::{CapacityType, Cloud};
    use serde_json::json;

    use super::*;

    fn failure(status: u16, code: &str) -> HttpFailure {
        HttpFailure {
            status: Some(status),
            body: json!({"error": {"code": code, "message": "m"}}),
            text: String::new(),
            retry_after: Some(Duration::from_secs(7)),
        }
    }

    #[test]
    fn codes_map_to_kinds() {
        let o = OfferingKey {
            cloud: Cloud::Lambda,
            region: "us-east-1".into(),
            zone: None,
            instance_type: "gpu_8x_h100_sxm5".into(),
            capacity: CapacityType::OnDemand,
        };
        let kind = |s, c, launch: bool| map(failure(s, c), launch.then_some(&o)).kind();
        assert_eq!(kind(400, "instance-operations/launch/insufficient-capacity", true), "insufficient-capacity");
        assert_eq!(kind(400, "global/quota-exceeded", true), "quota-exceeded");
        assert_eq!(kind(401, "global/invalid-api-key", false), "unauthorized");
        assert_eq!(kind(403, "global/account-inactive", true), "unauthorized");
        assert_eq!(kind(404, "global/object-does-not-exist", false), "not-found");
        assert_eq!(kind(404, "global/object-does-not-exist", true), "invalid-request");
        assert_eq!(kind(400, "global/invalid-parameters", true), "invalid-request");
        assert_eq!(kind(500, "", false), "transient");
        // Upstream providers' errors, by their documented sorts, whatever the status.
        assert_eq!(kind(503, "provider/internal-unavailable", true), "insufficient-capacity");
        assert_eq!(kind(400, "provider/internal-unavailable", false), "transient");
        assert_eq!(kind(400, "provider/quota-exceeded", true), "quota-exceeded");
        assert_eq!(kind(400, "provider/resource-exhausted", true), "insufficient-capacity");
        assert_eq!(kind(400, "provider/network-outage", true), "transient");
        match map(failure(429, ""), None) {
            ProviderError::Throttled { retry_after, .. } => assert_eq!(retry_after, Duration::from_secs(7)),
            e => panic!("{e:?}"),
        }
        let t = HttpFailure { status: None, body: json!(null), text: "connection refused".into(), retry_after: None };
        assert_eq!(map(t, Some(&o)).kind(), "transient");
    }
}
