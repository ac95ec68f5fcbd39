//! EC2 error codes → [`ProviderError`], in one place.
//!
//! Codes from the EC2 API reference ("Error codes for the Amazon EC2 API"). Capacity and quota
//! codes name the offering of the launch that got them, so placement can skip it.

use std::time::Duration;

use fleet_core::OfferingKey;

use crate::ProviderError;

/// An EC2 API failure, reduced to what the mapping needs (and never the request: no credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub code: Option<String>,
    pub message: String,
    pub status: Option<u16>,
    pub retry_after: Option<Duration>,
    /// The request never got an answer (timeout, connection refused, DNS).
    pub transport: bool,
}

/// Our code for "the credential chain found nothing" (not an EC2 code: the call was never sent).
pub(crate) const NO_CREDENTIALS: &str = "NoCredentials";

const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Maps an EC2 error. `offering` is the launch's offering, if the call was a launch.
pub(crate) fn map(e: ApiError, offering: Option<&OfferingKey>) -> ProviderError {
    let code = e.code.as_deref().unwrap_or("");
    let detail = if code.is_empty() { e.message.clone() } else { format!("{code}: {}", e.message) };
    let capacity = |detail: String| match offering {
        Some(o) => ProviderError::InsufficientCapacity { offering: o.clone(), detail },
        None => ProviderError::Transient { detail },
    };
    let quota = |detail: String| match offering {
        Some(o) => ProviderError::QuotaExceeded { offering: o.clone(), detail },
        None => ProviderError::Transient { detail },
    };
    if e.transport {
        return ProviderError::Transient { detail };
    }
    match code {
        "InsufficientInstanceCapacity"
        | "InsufficientHostCapacity"
        | "InsufficientReservedInstanceCapacity"
        | "InsufficientCapacity"
        | "InsufficientCapacityOnHost"
        // The spot price is above the max price fleet pays: unavailable at that price for now.
        | "SpotMaxPriceTooLow" => capacity(detail),
        "InstanceLimitExceeded"
        | "VcpuLimitExceeded"
        | "MaxSpotInstanceCountExceeded"
        | "MaxSpotFleetRequestCountExceeded"
        | "InsufficientAddressCapacity" => quota(detail),
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "TooManyRequestsException" => {
            ProviderError::Throttled { retry_after: e.retry_after.unwrap_or(DEFAULT_RETRY_AFTER), detail }
        }
        "UnauthorizedOperation" | "AuthFailure" | "InvalidClientTokenId" | "SignatureDoesNotMatch" | "OptInRequired"
        | "Blocked" | "PendingVerification" | "ExpiredToken" | "RequestExpired" | NO_CREDENTIALS => {
            ProviderError::Unauthorized { detail }
        }
        "InvalidInstanceID.NotFound" => ProviderError::NotFound { what: detail },
        "InvalidParameterValue" | "InvalidParameterCombination" | "InvalidParameter" | "MissingParameter"
        | "Unsupported" | "UnsupportedOperation" | "InvalidInstanceID.Malformed" | "InvalidAMIID.NotFound"
        | "InvalidAMIID.Malformed" | "InvalidSubnetID.NotFound" | "InvalidGroup.NotFound" | "InvalidKeyPair.NotFound"
        | "IdempotentParameterMismatch" | "InvalidInstanceType" => ProviderError::InvalidRequest { detail },
        "InternalError" | "InternalFailure" | "ServiceUnavailable" | "Unavailable" => ProviderError::Transient { detail },
        _ => match e.status {
            Some(429) => ProviderError::Throttled { retry_after: e.retry_after.unwrap_or(DEFAULT_RETRY_AFTER), detail },
            Some(401 | 403) => ProviderError::Unauthorized { detail },
            Some(s) if (400..500).contains(&s) && !code.is_empty() => ProviderError::InvalidRequest { detail },
            _ => ProviderError::Transient { detail },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_core::{CapacityType, Cloud};

    fn err(code: &str) -> ApiError {
        ApiError {
            code: Some(code.into()),
            message: "m".into(),
            status: Some(400),
            retry_after: None,
            transport: false,
        }
    }

    #[test]
    fn every_code_the_issue_names() {
        let o = OfferingKey {
            cloud: Cloud::Aws,
            region: "us-east-1".into(),
            zone: None,
            instance_type: "p5.48xlarge".into(),
            capacity: CapacityType::Spot,
        };
        let cases = [
            ("InsufficientInstanceCapacity", "insufficient-capacity"),
            ("InsufficientHostCapacity", "insufficient-capacity"),
            ("SpotMaxPriceTooLow", "insufficient-capacity"),
            ("InstanceLimitExceeded", "quota-exceeded"),
            ("VcpuLimitExceeded", "quota-exceeded"),
            ("MaxSpotInstanceCountExceeded", "quota-exceeded"),
            ("RequestLimitExceeded", "throttled"),
            ("UnauthorizedOperation", "unauthorized"),
            ("AuthFailure", "unauthorized"),
            ("InvalidParameterValue", "invalid-request"),
            ("Unsupported", "invalid-request"),
            ("InvalidInstanceID.NotFound", "not-found"),
            ("InternalError", "transient"),
            (NO_CREDENTIALS, "unauthorized"),
        ];
        for (code, kind) in cases {
            let m = map(err(code), Some(&o));
            assert_eq!(m.kind(), kind, "{code}");
            if matches!(kind, "insufficient-capacity" | "quota-exceeded") {
                assert_eq!(m.unavailable_offering(), Some(&o), "{code}");
            }
        }
        let transport = ApiError { transport: true, ..err("") };
        assert_eq!(map(transport, None).kind(), "transient");
        let unknown_429 =
            ApiError { code: None, status: Some(429), retry_after: Some(Duration::from_secs(7)), ..err("") };
        assert_eq!(
            map(unknown_429, None),
            ProviderError::Throttled { retry_after: Duration::from_secs(7), detail: "m".into() }
        );
    }
}
