//! The few kinds of provider failure the orchestrator acts on. Adapters map their vendor's
//! codes here in one place each; messages never carry credentials.

use std::time::Duration;

use fleet_core::OfferingKey;

pub type ProviderResult<T> = Result<T, ProviderError>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The cloud has no capacity for this offering now. Mark it unavailable and try the next one.
    #[error("insufficient capacity for {offering}: {detail}; try the next offering")]
    InsufficientCapacity { offering: OfferingKey, detail: String },

    /// An account limit stops this launch. Mark the offering unavailable; raise the quota with the cloud.
    #[error("quota exceeded for {offering}: {detail}; try another region or cloud, or raise the quota")]
    QuotaExceeded { offering: OfferingKey, detail: String },

    /// The cloud's API rate limit. Wait `retry_after`, then retry the same call.
    #[error("throttled by the cloud API: {detail}; retry after {retry_after:?}")]
    Throttled { retry_after: Duration, detail: String },

    #[error("not found: {what}")]
    NotFound { what: String },

    /// Credentials missing, wrong or lacking a permission. Retrying will not help.
    #[error("unauthorized: {detail}; check the credentials and the permissions they grant")]
    Unauthorized { detail: String },

    /// The cloud refused the request as malformed or unsupported. Retrying will not help.
    #[error("invalid request: {detail}")]
    InvalidRequest { detail: String },

    /// Network trouble or a server-side error. Retry with backoff.
    #[error("transient error: {detail}; retry with backoff")]
    Transient { detail: String },
}

impl ProviderError {
    /// Worth retrying the same call later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProviderError::Throttled { .. } | ProviderError::Transient { .. })
    }

    /// The offering this error says cannot be had now (capacity or quota), if any.
    pub fn unavailable_offering(&self) -> Option<&OfferingKey> {
        match self {
            ProviderError::InsufficientCapacity { offering, .. } | ProviderError::QuotaExceeded { offering, .. } => {
                Some(offering)
            }
            _ => None,
        }
    }

    /// A short stable name of the kind, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::InsufficientCapacity { .. } => "insufficient-capacity",
            ProviderError::QuotaExceeded { .. } => "quota-exceeded",
            ProviderError::Throttled { .. } => "throttled",
            ProviderError::NotFound { .. } => "not-found",
            ProviderError::Unauthorized { .. } => "unauthorized",
            ProviderError::InvalidRequest { .. } => "invalid-request",
            ProviderError::Transient { .. } => "transient",
        }
    }
}
