//! The spot mix: `base_on_demand` runners never on spot; the rest on spot where the policy allows,
//! falling back to on-demand (policy `auto`) while no spot offering can be had, and going back to
//! spot for new runners as soon as one can. Scale-down stops the most expensive idle runners first,
//! so on-demand fallback runners are the first to go once spot is back; the base runners go last
//! (`plan::base_runners`), so an app that scales down keeps them.

use fleet_core::spec::SpotPolicy;
use serde::Serialize;

/// How many new runners go where.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CapacitySplit {
    pub on_demand: u32,
    pub spot: u32,
    /// Of `on_demand`, how many are there only because spot is unavailable now.
    pub fallback: u32,
}

/// Splits `new` runners between on-demand and spot. `on_demand_running` counts the app's runners
/// already on on-demand nodes; `spot_available` says whether placement has any spot offering to try.
pub fn split(
    policy: SpotPolicy,
    base_on_demand: u32,
    on_demand_running: u32,
    new: u32,
    spot_available: bool,
) -> CapacitySplit {
    if policy == SpotPolicy::OnDemand {
        return CapacitySplit { on_demand: new, spot: 0, fallback: 0 };
    }
    let base = base_on_demand.saturating_sub(on_demand_running).min(new);
    let rest = new - base;
    match (policy, spot_available) {
        (SpotPolicy::Auto, false) => CapacitySplit { on_demand: base + rest, spot: 0, fallback: rest },
        // `spot` policy waits for spot rather than pay on-demand; `auto` with spot available uses it.
        _ => CapacitySplit { on_demand: base, spot: rest, fallback: 0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_first_then_spot() {
        assert_eq!(split(SpotPolicy::Auto, 2, 0, 5, true), CapacitySplit { on_demand: 2, spot: 3, fallback: 0 });
        assert_eq!(split(SpotPolicy::Auto, 2, 1, 5, true), CapacitySplit { on_demand: 1, spot: 4, fallback: 0 });
        assert_eq!(split(SpotPolicy::Auto, 2, 5, 5, true), CapacitySplit { on_demand: 0, spot: 5, fallback: 0 });
        assert_eq!(split(SpotPolicy::Auto, 10, 0, 3, true), CapacitySplit { on_demand: 3, spot: 0, fallback: 0 });
    }

    #[test]
    fn fallback_only_under_auto() {
        assert_eq!(split(SpotPolicy::Auto, 1, 0, 4, false), CapacitySplit { on_demand: 4, spot: 0, fallback: 3 });
        assert_eq!(split(SpotPolicy::Spot, 1, 0, 4, false), CapacitySplit { on_demand: 1, spot: 3, fallback: 0 });
        assert_eq!(split(SpotPolicy::OnDemand, 0, 0, 4, true), CapacitySplit { on_demand: 4, spot: 0, fallback: 0 });
    }
}
