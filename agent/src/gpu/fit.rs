//! Is this machine what was rented? fleetd tells the agent the node's shape (`[rented]` in its
//! config: the offering's GPU model and count); the agent holds what discovery finds to it, at
//! start and every minute after: fewer GPUs, another model, uncorrected ECC errors, or hardware
//! throttling that persists make the node unhealthy with a `hardware` reason, and fleetd then
//! drains and replaces it and avoids the offering for a while (`orchestrator/.../health.rs`).
//!
//! Discovery goes through [`GpuBackend`], so the judgement is tested with scripted GPUs
//! ([`Scripted`]): there is no GPU where fleet is built.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use fleet_core::{GpuModel, Time};

use super::Discovery;

/// Where GPU figures come from.
pub trait GpuBackend: Send + Sync {
    fn discover(&self) -> Discovery;
}

/// The CUDA driver and NVML, loaded at run time.
#[derive(Debug, Default)]
pub struct Nvml;

impl GpuBackend for Nvml {
    fn discover(&self) -> Discovery {
        super::discover()
    }
}

/// Discoveries given in advance, one per call (the last repeats): for tests.
#[derive(Debug)]
pub struct Scripted(pub Mutex<Vec<Discovery>>);

impl GpuBackend for Scripted {
    fn discover(&self) -> Discovery {
        let mut v = self.0.lock().expect("scripted lock");
        if v.len() > 1 { v.remove(0) } else { v[0].clone() }
    }
}

/// What the node was rented as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rented {
    pub model: GpuModel,
    pub gpus: u32,
}

/// Throttle reasons that mean the hardware is in trouble (a power cap set by software is not).
const HARDWARE_THROTTLE: [&str; 4] = ["hw-slowdown", "hw-thermal", "hw-power-brake", "sw-thermal"];

/// Judges discoveries over time (throttling must persist to count).
#[derive(Debug)]
pub struct FitCheck {
    pub rented: Rented,
    /// How long hardware throttling must last before the node is judged unfit.
    pub persist: Duration,
    throttled_since: HashMap<u32, Time>,
}

impl FitCheck {
    pub fn new(rented: Rented, persist: Duration) -> FitCheck {
        FitCheck { rented, persist, throttled_since: HashMap::new() }
    }

    /// `None`: fit. `Some(why)`: what is wrong, in words an operator can act on.
    pub fn judge(&mut self, d: &Discovery, now: Time) -> Option<String> {
        let r = self.rented;
        let found = d.gpus.len() as u32;
        if found < r.gpus {
            return Some(format!(
                "rented as {}× {}, the machine shows {found} GPU{}",
                r.gpus,
                r.model.name(),
                if found == 1 { "" } else { "s" }
            ));
        }
        let others: Vec<String> = d
            .gpus
            .iter()
            .filter(|g| g.model.as_deref() != Some(r.model.name()))
            .map(|g| format!("GPU {} is {}", g.index, g.model.clone().unwrap_or_else(|| g.name.clone())))
            .collect();
        if !others.is_empty() {
            return Some(format!("rented as {}× {}, but {}", r.gpus, r.model.name(), others.join(", ")));
        }
        if let Some(g) = d.gpus.iter().find(|g| g.ecc_uncorrected.is_some_and(|n| n > 0)) {
            return Some(format!(
                "GPU {} has {} uncorrected ECC error(s)",
                g.index,
                g.ecc_uncorrected.unwrap_or_default()
            ));
        }
        let mut worst: Option<(u32, Time, Vec<String>)> = None;
        for g in &d.gpus {
            let hw: Vec<String> =
                g.throttling.iter().filter(|t| HARDWARE_THROTTLE.contains(&t.as_str())).cloned().collect();
            if hw.is_empty() {
                self.throttled_since.remove(&g.index);
                continue;
            }
            let since = *self.throttled_since.entry(g.index).or_insert(now);
            if worst.as_ref().is_none_or(|w| since < w.1) {
                worst = Some((g.index, since, hw));
            }
        }
        let (index, since, reasons) = worst?;
        let lasted = (now - since).to_std().unwrap_or_default();
        (lasted >= self.persist)
            .then(|| format!("GPU {index} throttled ({}) for {} s", reasons.join(", "), lasted.as_secs()))
    }
}

#[cfg(test)]
mod tests {
    use fleet_state::model::GpuReport;

    use super::*;

    fn h100(index: u32) -> GpuReport {
        GpuReport {
            index,
            name: "NVIDIA H100 80GB HBM3".into(),
            model: Some(GpuModel::H100Sxm.name().into()),
            memory_total_mib: 81_559,
            ecc_uncorrected: Some(0),
            ..GpuReport::default()
        }
    }

    fn found(gpus: Vec<GpuReport>) -> Discovery {
        Discovery { gpus, cuda_driver: Some("13.0".into()), nvml: true, notes: vec![] }
    }

    fn t(s: i64) -> Time {
        chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn a_machine_unlike_its_rental_is_unfit_and_one_like_it_is_fit() {
        let rented = Rented { model: GpuModel::H100Sxm, gpus: 8 };
        let mut c = FitCheck::new(rented, Duration::from_secs(300));
        let eight = || (0..8).map(h100).collect::<Vec<_>>();
        assert_eq!(c.judge(&found(eight()), t(0)), None);
        let why = c.judge(&found((0..7).map(h100).collect()), t(0)).unwrap();
        assert!(why.contains("8× H100") && why.contains("7 GPUs"), "{why}");
        let mut other = eight();
        other[3] = GpuReport { model: Some(GpuModel::A100_80GB.name().into()), ..h100(3) };
        assert!(c.judge(&found(other), t(0)).unwrap().contains("GPU 3 is A100"));
        let mut ecc = eight();
        ecc[5].ecc_uncorrected = Some(2);
        assert!(c.judge(&found(ecc), t(0)).unwrap().contains("GPU 5 has 2 uncorrected ECC"));
        // No GPUs at all (the driver is gone): unfit.
        assert!(c.judge(&found(vec![]), t(0)).unwrap().contains("0 GPUs"));
    }

    #[test]
    fn throttling_counts_only_when_it_persists_and_is_the_hardwares() {
        let rented = Rented { model: GpuModel::H100Sxm, gpus: 2 };
        let mut c = FitCheck::new(rented, Duration::from_secs(300));
        let throttled = |reasons: &[&str]| {
            let mut g = vec![h100(0), h100(1)];
            g[1].throttling = reasons.iter().map(|s| s.to_string()).collect();
            found(g)
        };
        // A software power cap is no fault.
        assert_eq!(c.judge(&throttled(&["sw-power-cap"]), t(0)), None);
        assert_eq!(c.judge(&throttled(&["sw-power-cap"]), t(900)), None);
        // Thermal slowdown for a minute: not yet; it stops; it starts again: counted afresh.
        assert_eq!(c.judge(&throttled(&["hw-thermal"]), t(1000)), None);
        assert_eq!(c.judge(&throttled(&["hw-thermal"]), t(1060)), None);
        assert_eq!(c.judge(&throttled(&[]), t(1120)), None);
        assert_eq!(c.judge(&throttled(&["hw-thermal"]), t(1200)), None);
        let why = c.judge(&throttled(&["hw-thermal", "sw-power-cap"]), t(1500)).unwrap();
        assert!(why.contains("GPU 1 throttled (hw-thermal) for 300 s"), "{why}");
    }

    #[test]
    fn the_scripted_backend_plays_its_script_then_repeats_the_last() {
        let s = Scripted(Mutex::new(vec![found(vec![h100(0)]), found(vec![])]));
        assert_eq!(s.discover().gpus.len(), 1);
        assert_eq!(s.discover().gpus.len(), 0);
        assert_eq!(s.discover().gpus.len(), 0);
    }
}
