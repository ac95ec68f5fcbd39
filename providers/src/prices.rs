//! Live prices with a safety net: each adapter's `offerings()` asks its cloud for prices, and
//! when that fails answers with the last prices it got, or (never having got any) the built-in
//! catalog's. A failed refresh never empties the offerings placement works from.

use std::sync::Mutex;

use fleet_core::Offering;

use crate::{ProviderError, ProviderResult};

#[derive(Debug, Default)]
pub struct PriceBook {
    last_good: Mutex<Option<Vec<Offering>>>,
}

/// Where a set of offerings came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceOrigin {
    Live,
    LastGood,
    Catalog,
}

impl PriceBook {
    pub fn new() -> PriceBook {
        PriceBook::default()
    }

    /// `live` is this refresh's result; `catalog` the built-in rows for this provider.
    pub fn resolve(
        &self,
        who: &str,
        live: ProviderResult<Vec<Offering>>,
        catalog: impl FnOnce() -> Vec<Offering>,
    ) -> ProviderResult<(Vec<Offering>, PriceOrigin)> {
        let mut last = self.last_good.lock().unwrap_or_else(|p| p.into_inner());
        match live {
            Ok(rows) if !rows.is_empty() => {
                *last = Some(rows.clone());
                Ok((rows, PriceOrigin::Live))
            }
            Ok(_) => {
                fallback(who, &last, catalog, ProviderError::Transient { detail: "no offerings in the answer".into() })
            }
            Err(e) => fallback(who, &last, catalog, e),
        }
    }
}

fn fallback(
    who: &str,
    last: &Option<Vec<Offering>>,
    catalog: impl FnOnce() -> Vec<Offering>,
    e: ProviderError,
) -> ProviderResult<(Vec<Offering>, PriceOrigin)> {
    if let Some(rows) = last {
        tracing::warn!(provider = who, error = %e, "price refresh failed; keeping the last prices fetched");
        return Ok((rows.clone(), PriceOrigin::LastGood));
    }
    let rows = catalog();
    if rows.is_empty() {
        return Err(e);
    }
    tracing::warn!(provider = who, error = %e, "price refresh failed; using the built-in catalog's prices");
    Ok((rows, PriceOrigin::Catalog))
}
