//! Azure Resource Manager error codes → [`ProviderError`], in one place. ARM answers
//! `{"error": {"code", "message"}}` (also in `x-ms-error-code`), synchronously for a refused PUT
//! and in the async-operation status (`{"status": "Failed", "error": {…}}`) for a VM whose
//! allocation failed later. Codes from Azure's "Troubleshoot allocation failures" and
//! "Resource Manager common errors" pages.

use std::time::Duration;

use fleet_core::OfferingKey;

use crate::ProviderError;

const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Maps one ARM error. `offering`: the launch's, when the call was a launch.
pub(crate) fn map(status: Option<u16>, code: &str, message: &str, offering: Option<&OfferingKey>) -> ProviderError {
    let detail = if code.is_empty() { message.to_string() } else { format!("{code}: {message}") };
    let capacity = matches!(
        code,
        "SkuNotAvailable"
            | "AllocationFailed"
            | "ZonalAllocationFailed"
            | "OverconstrainedAllocationRequest"
            | "OverconstrainedZonalAllocationRequest"
            | "AllocationFailedWithLowPriority"
            // Spot codes (Microsoft's "Azure Spot Virtual Machines" error-code table): the current
            // Spot price is above the max price fleet gave, or this size is not sold as Spot.
            | "SpotPriceGreaterThanProvidedMaxPrice"
            | "AzureSpotIsNotSupportedForThisVMSize"
    );
    // OperationNotAllowed is ARM's quota refusal ("Operation could not be completed as it results
    // in exceeding approved standardNDSH100v5Family Cores quota…").
    // AzureSpotFeatureNotEnabledForSubscriptionType: this subscription may not buy Spot at all.
    let quota = matches!(
        code,
        "QuotaExceeded"
            | "OperationNotAllowed"
            | "SpotQuotaExceeded"
            | "ResourceQuotaExceeded"
            | "AzureSpotFeatureNotEnabledForSubscriptionType"
    );
    match offering {
        Some(o) if capacity => return ProviderError::InsufficientCapacity { offering: o.clone(), detail },
        Some(o) if quota => return ProviderError::QuotaExceeded { offering: o.clone(), detail },
        _ => {}
    }
    match code {
        "TooManyRequests" | "SubscriptionRequestsThrottled" => {
            ProviderError::Throttled { retry_after: DEFAULT_RETRY_AFTER, detail }
        }
        "AuthorizationFailed"
        | "AuthenticationFailed"
        | "InvalidAuthenticationToken"
        | "ExpiredAuthenticationToken"
        | "LinkedAuthorizationFailed"
        | "SubscriptionNotFound"
        | "InvalidAuthenticationTokenTenant" => ProviderError::Unauthorized { detail },
        "ResourceNotFound" | "NotFound" => ProviderError::NotFound { what: detail },
        "ResourceGroupNotFound"
        | "InvalidParameter"
        | "BadRequest"
        | "InvalidRequestContent"
        | "PropertyChangeNotAllowed"
        | "ImageNotFound"
        | "PlatformImageNotFound"
        | "InvalidTemplate"
        | "MissingSubscriptionRegistration"
        // The request itself is wrong (the rest of the Spot table, and the public IP's).
        | "MaxPriceValueInvalid"
        | "MaxPriceIsSupportedOnlyForAzureSpotVirtualMachines"
        | "EvictionPolicyCanBeSetOnlyOnAzureSpotVirtualMachines"
        | "AzureSpotVMNotSupportedInAvailabilitySet"
        | "VMPriorityCannotBeApplied"
        | "AzureSpotIsNotSupportedForThisAPIVersion"
        | "StandardSkuPublicIPAddressesMustBeStatic" => ProviderError::InvalidRequest { detail },
        _ => match status {
            Some(429) => ProviderError::Throttled { retry_after: DEFAULT_RETRY_AFTER, detail },
            Some(401 | 403) => ProviderError::Unauthorized { detail },
            Some(404) => ProviderError::NotFound { what: detail },
            Some(s) if (400..500).contains(&s) => ProviderError::InvalidRequest { detail },
            _ => ProviderError::Transient { detail },
        },
    }
}

/// An error from the SDK (azure_core), reduced to status, code and message.
pub(crate) fn from_sdk(e: &azure_core::Error, offering: Option<&OfferingKey>) -> ProviderError {
    if let Some(h) = e.as_http_error() {
        let status = u16::from(h.status());
        return map(Some(status), h.error_code().unwrap_or(""), h.error_message().unwrap_or(""), offering);
    }
    match e.kind() {
        azure_core::error::ErrorKind::HttpResponse { status, error_code } => {
            map(Some(u16::from(*status)), error_code.as_deref().unwrap_or(""), &e.to_string(), offering)
        }
        azure_core::error::ErrorKind::Credential => {
            ProviderError::Unauthorized { detail: format!("no usable Azure credential: {e}") }
        }
        _ => ProviderError::Transient { detail: e.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use fleet_core::{CapacityType, Cloud};

    use super::*;

    #[test]
    fn codes_map_to_kinds() {
        let o = OfferingKey {
            cloud: Cloud::Azure,
            region: "eastus".into(),
            zone: None,
            instance_type: "Standard_ND96isr_H100_v5".into(),
            capacity: CapacityType::Spot,
        };
        let k = |s: u16, c: &str, launch: bool| map(Some(s), c, "m", launch.then_some(&o)).kind();
        for c in ["SkuNotAvailable", "AllocationFailed", "ZonalAllocationFailed", "OverconstrainedAllocationRequest"] {
            assert_eq!(k(409, c, true), "insufficient-capacity", "{c}");
        }
        assert_eq!(k(409, "OperationNotAllowed", true), "quota-exceeded");
        assert_eq!(k(409, "SpotPriceGreaterThanProvidedMaxPrice", true), "insufficient-capacity");
        assert_eq!(k(400, "AzureSpotIsNotSupportedForThisVMSize", true), "insufficient-capacity");
        assert_eq!(k(400, "AzureSpotFeatureNotEnabledForSubscriptionType", true), "quota-exceeded");
        assert_eq!(k(400, "StandardSkuPublicIPAddressesMustBeStatic", true), "invalid-request");
        assert_eq!(k(409, "QuotaExceeded", true), "quota-exceeded");
        assert_eq!(k(429, "TooManyRequests", false), "throttled");
        assert_eq!(k(403, "AuthorizationFailed", false), "unauthorized");
        assert_eq!(k(404, "ResourceNotFound", false), "not-found");
        assert_eq!(k(404, "ResourceGroupNotFound", true), "invalid-request");
        assert_eq!(k(500, "InternalServerError", false), "transient");
    }
}
