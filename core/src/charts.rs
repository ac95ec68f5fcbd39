//! The charts both of fleet's pages draw (fleetd's dashboard, the report `fleetsim run --html`
//! writes): one script, compiled into each binary, so that neither page fetches anything at run
//! time. It lives here because both crates link this one.

/// `FleetCharts.line(...)` and `FleetCharts.bars(...)`: SVG charts with a title, axis labels
/// and units (see the script's head for the options).
pub const SCRIPT: &str = include_str!("../assets/charts.js");
