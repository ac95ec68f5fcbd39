//! fleetd's notion of "now" for records and decisions.
//!
//! The daemon uses the system clock. Tests use [`Clock::Tokio`]: wall time that advances with
//! tokio's clock, so `#[tokio::test(start_paused = true)]` + `time::advance` moves keep-alive,
//! budgets and timeouts without sleeping.

use fleet_core::Time;

#[derive(Debug, Clone, Copy)]
pub enum Clock {
    System,
    Tokio { epoch: Time, start: tokio::time::Instant },
}

impl Clock {
    /// Wall time from `epoch`, advancing with tokio's clock from this call on.
    pub fn tokio(epoch: Time) -> Clock {
        Clock::Tokio { epoch, start: tokio::time::Instant::now() }
    }

    pub fn now(&self) -> Time {
        match self {
            Clock::System => chrono::Utc::now(),
            Clock::Tokio { epoch, start } => *epoch + chrono::Duration::from_std(start.elapsed()).unwrap_or_default(),
        }
    }
}
