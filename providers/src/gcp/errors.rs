//! Compute Engine errors → [`ProviderError`], in one place. Two shapes reach fleet:
//!
//! - an HTTP error (the call itself failed): the JSON body `{"error": {"code", "message",
//!   "errors": [{"reason", …}], "status"}}`, mapped by `errors[].reason` (`rateLimitExceeded`,
//!   `notFound`, `forbidden`, `quotaExceeded`, …), then by HTTP status;
//! - an operation that finished with `error.errors[].code` (the insert was accepted, then failed):
//!   `ZONE_RESOURCE_POOL_EXHAUSTED(_WITH_DETAILS)` (no capacity), `QUOTA_EXCEEDED`, ….

use std::time::Duration;

use fleet_core::OfferingKey;
use google_cloud_compute_v1::model::Operation;
use serde_json::Value;

use crate::ProviderError;

const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(2);

/// What an HTTP-level failure says.
#[derive(Debug)]
pub(crate) enum Failure {
    /// `alreadyExists`: an insert of a name that exists (an earlier insert of the same node).
    AlreadyExists,
    Other(ProviderError),
}

pub(crate) fn from_gax(e: &google_cloud_gax::error::Error, offering: Option<&OfferingKey>) -> Failure {
    let status = e.http_status_code();
    let body: Value = e.http_payload().and_then(|b| serde_json::from_slice(b).ok()).unwrap_or(Value::Null);
    // The client parses Google's error body into a Status; the legacy `errors[].reason` becomes
    // an ErrorInfo detail. (A body that is not Google's JSON stays raw, in the payload.)
    let reason = body["error"]["errors"][0]["reason"]
        .as_str()
        .map(str::to_string)
        .or_else(|| {
            e.status().and_then(|s| {
                s.details.iter().find_map(|d| match d {
                    google_cloud_gax::error::rpc::StatusDetails::ErrorInfo(i) if !i.reason.is_empty() => {
                        Some(i.reason.clone())
                    }
                    _ => None,
                })
            })
        })
        .unwrap_or_default();
    let message = body["error"]["message"]
        .as_str()
        .map(str::to_string)
        .or_else(|| e.status().map(|s| s.message.clone()))
        .unwrap_or_else(|| e.to_string());
    let detail = if reason.is_empty() { message.clone() } else { format!("{reason}: {message}") };
    if e.is_authentication() {
        return Failure::Other(ProviderError::Unauthorized { detail: format!("no usable Google credentials: {e}") });
    }
    let Some(status) = status else {
        return Failure::Other(ProviderError::Transient { detail });
    };
    let retry_after = e
        .http_headers()
        .and_then(|h| h.get("retry-after"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_RETRY_AFTER);
    let kind = match (reason.as_str(), offering) {
        ("alreadyExists", _) => return Failure::AlreadyExists,
        ("rateLimitExceeded" | "userRateLimitExceeded", _) => ProviderError::Throttled { retry_after, detail },
        ("quotaExceeded", Some(o)) => ProviderError::QuotaExceeded { offering: o.clone(), detail },
        ("resourceExhausted" | "ZONE_RESOURCE_POOL_EXHAUSTED", Some(o)) => {
            ProviderError::InsufficientCapacity { offering: o.clone(), detail }
        }
        ("notFound", _) => ProviderError::NotFound { what: detail },
        ("forbidden" | "insufficientPermissions" | "accessNotConfigured" | "authError" | "required", _) => {
            ProviderError::Unauthorized { detail }
        }
        ("invalid" | "badRequest" | "invalidParameter" | "conditionNotMet", _) => {
            ProviderError::InvalidRequest { detail }
        }
        _ => match status {
            429 => ProviderError::Throttled { retry_after, detail },
            401 | 403 => ProviderError::Unauthorized { detail },
            404 => ProviderError::NotFound { what: detail },
            409 => return Failure::AlreadyExists,
            400..=499 => ProviderError::InvalidRequest { detail },
            _ => ProviderError::Transient { detail },
        },
    };
    Failure::Other(kind)
}

/// The error a finished operation carries, if any.
pub(crate) fn from_operation(op: &Operation, offering: Option<&OfferingKey>) -> Option<Failure> {
    let first = op.error.as_ref().and_then(|e| e.errors.first());
    if first.is_none() && op.http_error_status_code.is_none_or(|s| s < 400) {
        return None;
    }
    let code = first.and_then(|e| e.code.clone()).unwrap_or_default();
    let message = first.and_then(|e| e.message.clone()).or_else(|| op.http_error_message.clone()).unwrap_or_default();
    let detail = format!("{code}: {message}");
    let kind = match (code.as_str(), offering) {
        ("RESOURCE_ALREADY_EXISTS", _) => return Some(Failure::AlreadyExists),
        (
            "ZONE_RESOURCE_POOL_EXHAUSTED"
            | "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"
            | "RESOURCE_POOL_EXHAUSTED"
            | "STOCKOUT"
            // In practice GCP answers an insert with this when the zone cannot host the machine
            // type or its accelerators now (SkyPilot fails over to the next zone on it too).
            | "UNSUPPORTED_OPERATION",
            Some(o),
        ) => ProviderError::InsufficientCapacity { offering: o.clone(), detail },
        ("QUOTA_EXCEEDED", Some(o)) => ProviderError::QuotaExceeded { offering: o.clone(), detail },
        ("RESOURCE_NOT_FOUND", None) => ProviderError::NotFound { what: detail },
        ("RATE_LIMIT_EXCEEDED", _) => ProviderError::Throttled { retry_after: DEFAULT_RETRY_AFTER, detail },
        ("PERMISSIONS_ERROR" | "PERMISSION_DENIED", _) => ProviderError::Unauthorized { detail },
        _ => match op.http_error_status_code {
            Some(401 | 403) => ProviderError::Unauthorized { detail },
            Some(s) if (400..500).contains(&s) => ProviderError::InvalidRequest { detail },
            _ => ProviderError::Transient { detail },
        },
    };
    Some(Failure::Other(kind))
}

#[cfg(test)]
mod tests {
    use fleet_core::{CapacityType, Cloud};
    use google_cloud_compute_v1::model::operation::Error as OpError;
    use google_cloud_compute_v1::model::operation::error::Errors;

    use super::*;

    fn op(code: &str, http: i32) -> Operation {
        let mut o = Operation::new();
        o.error = Some(OpError::new().set_errors([Errors::new().set_code(code).set_message("m")]));
        o.http_error_status_code = Some(http);
        o
    }

    #[test]
    fn operation_codes_map_to_kinds() {
        let key = OfferingKey {
            cloud: Cloud::Gcp,
            region: "us-central1".into(),
            zone: Some("us-central1-a".into()),
            instance_type: "a3-highgpu-8g".into(),
            capacity: CapacityType::Spot,
        };
        let kind = |code: &str, http: i32| match from_operation(&op(code, http), Some(&key)) {
            Some(Failure::Other(e)) => e.kind(),
            Some(Failure::AlreadyExists) => "already-exists",
            None => "none",
        };
        assert_eq!(kind("ZONE_RESOURCE_POOL_EXHAUSTED", 503), "insufficient-capacity");
        assert_eq!(kind("ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", 503), "insufficient-capacity");
        assert_eq!(kind("QUOTA_EXCEEDED", 403), "quota-exceeded");
        assert_eq!(kind("RESOURCE_ALREADY_EXISTS", 409), "already-exists");
        assert_eq!(kind("INVALID_FIELD_VALUE", 400), "invalid-request");
        assert_eq!(kind("UNSUPPORTED_OPERATION", 400), "insufficient-capacity");
        assert!(from_operation(&Operation::new(), Some(&key)).is_none());
    }
}
