//! A scenario: which fleet spec, which demand, how the simulated clouds behave. TOML; every knob
//! has a documented default (see `simulator/examples/`). Demand is one `[demand]` table, or one
//! `[[demand]]` table per app for a fleet serving several (`examples/two-apps-cost.toml`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleet_core::Cloud;
use fleet_core::spec::{FleetSpec, parse_duration};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error(transparent)]
    Spec(#[from] fleet_core::spec::SpecErrors),
}

/// How one cloud behaves in the simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudModel {
    /// From the launch call to a running instance: `provision_delay` ± `provision_jitter` (uniform).
    pub provision_delay: Duration,
    pub provision_jitter: Duration,
    /// From running to a Ready node: agent boot and burn-in.
    pub boot: Duration,
    /// Chance that a launch answers "insufficient capacity".
    pub ice_probability: f64,
    /// Spot reclaims per node-hour (exponential inter-arrival).
    pub preemptions_per_hour: f64,
    /// Billing step (1 s per-second billing, 3600 s per-hour) and minimum charge.
    pub billing_step: Duration,
    pub min_billing: Duration,
    /// Instances of one offering that can be live at once.
    pub capacity: u32,
}

impl CloudModel {
    /// The time billed for a node up `ran`: whole billing steps, at least the minimum.
    pub fn billed(&self, ran: Duration) -> Duration {
        billed(self.billing_step, self.min_billing, ran)
    }

    /// The least a node that runs at all is billed: the minimum billing, or one whole step where
    /// that is longer (billed by the hour, a node up a minute pays the hour whatever the stated
    /// minimum).
    pub fn least_billed(&self) -> Duration {
        self.billed(Duration::from_millis(1))
    }
}

/// The time billed for `ran` in whole steps of `step`, at least `min_billing`.
pub fn billed(step: Duration, min_billing: Duration, ran: Duration) -> Duration {
    let step = step.max(Duration::from_millis(1));
    let steps = ran.as_millis().div_ceil(step.as_millis());
    (step * u32::try_from(steps).unwrap_or(u32::MAX)).max(min_billing)
}

impl Default for CloudModel {
    /// Per-second billing with a one-minute minimum (AWS/GCP/Azure Linux), 90 ± 30 s to launch,
    /// 60 s to boot and burn in, no capacity errors, no preemptions, 1,000 instances per offering.
    fn default() -> Self {
        CloudModel {
            provision_delay: Duration::from_secs(90),
            provision_jitter: Duration::from_secs(30),
            boot: Duration::from_secs(60),
            ice_probability: 0.0,
            preemptions_per_hour: 0.0,
            billing_step: Duration::from_secs(1),
            min_billing: Duration::from_secs(60),
            capacity: 1000,
        }
    }
}

/// Most demands one scenario may drive (each request carries its demand's number in 16 bits).
pub const MAX_DEMANDS: usize = 256;
/// The most tokens a synthetic (`poisson_rate`) request may give for its context or generate.
pub const MAX_TOKENS: u32 = 10_000_000;

#[derive(Debug, Clone, PartialEq)]
pub enum DemandSource {
    Trace { path: PathBuf, tile: bool },
    Poisson { rate_per_s: f64, context_tokens: u32, generated_tokens: u32 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Demand {
    pub app: String,
    pub source: DemandSource,
    pub time_scale: f64,
    pub rate_scale: f64,
    pub diurnal_amplitude: f64,
    /// The app's model's own token rates and load time (the demand table's
    /// `prefill_tokens_per_s`, `decode_tokens_per_s`, `model_load`, each defaulting to
    /// `[service]`'s); `None`: the scenario's `[service]`.
    pub service: Option<ServiceModel>,
    /// The app's model's size in GB where `[weights]` is given (the demand table's `weights_gb`;
    /// `None`: `weights.size_gb`).
    pub weights_gb: Option<f64>,
}

/// Throughput of one runner, from tokens: H100-SXM reference rates, scaled for other GPUs by
/// their bf16 TFLOP/s relative to the H100-SXM (data-sheet facts in `fleet_core::gpu`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceModel {
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    /// Starting a runner on a Ready node (loading the model).
    pub model_load: Duration,
}

impl Default for ServiceModel {
    fn default() -> Self {
        ServiceModel { prefill_tokens_per_s: 10_000.0, decode_tokens_per_s: 50.0, model_load: Duration::from_secs(30) }
    }
}

/// Where a runner's model weights come from (`[weights]`). Without the table a runner loads its
/// model in `service.model_load`, whatever ran before. With it, a node fetches the weights once
/// into its disk (its runners, and runners started on it later, load from there) and loads them
/// at the disk's speed; the fetch is from the origin (the object store the model was pushed to,
/// billed per GB read), or, with `cache` on (fleet's node cache and peers), from nodes of its
/// region that hold them or are fetching them (a peer streams what it has: a fetch from peers
/// ends no sooner than the first such fetch in the region).
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    pub size_gb: f64,
    /// One node reading the origin, GB/s.
    pub origin_gb_per_s: f64,
    /// One node reading its region's peers, GB/s.
    pub peer_gb_per_s: f64,
    /// Loading from the node's disk, GB/s.
    pub disk_gb_per_s: f64,
    /// What the origin bills per GB read out of it (egress).
    pub egress_per_gb: fleet_core::Money,
    /// fleet's node cache with peers; off: every node fetches from the origin.
    pub cache: bool,
    /// With the cache: new nodes prefer regions that hold the weights and a region's last copy
    /// is kept a while (`fleet_policies::coldstart`); off: placement by price alone.
    pub cold_start_aware: bool,
}

/// Where one fetch reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchFrom {
    Origin,
    Peers,
}

impl Weights {
    pub fn fetch(&self, from: FetchFrom) -> Duration {
        let rate = match from {
            FetchFrom::Origin => self.origin_gb_per_s,
            FetchFrom::Peers => self.peer_gb_per_s,
        };
        Duration::from_secs_f64(self.size_gb / rate)
    }

    pub fn load(&self) -> Duration {
        Duration::from_secs_f64(self.size_gb / self.disk_gb_per_s)
    }

    /// The origin's bill for one fetch of the weights.
    pub fn egress(&self) -> fleet_core::Money {
        fleet_core::Money::from_micros_saturating((self.egress_per_gb.micros() as f64 * self.size_gb).round() as i128)
    }
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    /// Who decides the demand app's runners: the spec's own policies, or a baseline (set by
    /// `fleetsim compare --baselines`, not read from the file).
    pub policy: Policy,
    pub spec: FleetSpec,
    pub seed: u64,
    pub duration: Duration,
    pub tick: Duration,
    pub slo_wait: Duration,
    pub unavailable_ttl: Duration,
    /// Consolidation moves must pay for themselves within this long; `None` (`"off"`): none.
    pub consolidation_horizon: Option<Duration>,
    /// Catalog files; empty means the built-in catalog.
    pub catalog: Vec<PathBuf>,
    /// The requests, one stream per app (`[demand]`, or `[[demand]]` once per app); at least one.
    /// The spec's other apps get no requests (their floors and budgets still apply).
    pub demands: Vec<Demand>,
    pub service: ServiceModel,
    pub default_cloud: CloudModel,
    pub clouds: BTreeMap<Cloud, CloudModel>,
    /// Instances of one offering that can be live at once, overriding its cloud's `capacity`.
    /// Keyed as offerings print: `cloud/region[/zone]/instance-type/capacity`.
    pub capacity: BTreeMap<String, u32>,
    pub weights: Option<Weights>,
}

/// Who decides the demand apps' runners (the rest of the spec, placement included, applies alike).
/// Per-app figures are in the order of [`Scenario::demands`].
#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    /// The spec's own scaling.
    Spec,
    /// A fixed fleet: `runners` (per demand) from the start to the end, never scaled.
    StaticPeak { runners: Vec<u32> },
    /// Replicas = ⌈requests/s over the last minute ÷ `per_runner_qps`⌉, as SkyPilot Serve and
    /// dstack scale: more at once, fewer only after the lower count has held for
    /// `downscale_delay` (their cooldown).
    TargetQps { per_runner_qps: Vec<f64>, downscale_delay: Duration },
    /// The hindsight oracle's nodes ([`crate::oracle`]), launched and ended when it says, with
    /// no capacity errors, no preemptions and mean delays.
    Oracle { bookings: Vec<crate::oracle::Booking> },
}

impl Scenario {
    pub fn cloud(&self, c: Cloud) -> &CloudModel {
        self.clouds.get(&c).unwrap_or(&self.default_cloud)
    }

    /// Where app `app`'s runners' weights come from: `[weights]`, with its demand's own size.
    pub fn weights_for(&self, app: &str) -> Option<Weights> {
        let mut w = self.weights.clone()?;
        if let Some(gb) = self.demands.iter().find(|d| d.app == app).and_then(|d| d.weights_gb) {
            w.size_gb = gb;
        }
        Some(w)
    }

    /// How fast app `app`'s runners serve and how long they take to load: its demand's own
    /// rates where it gives them, else `[service]`.
    pub fn service_for(&self, app: &str) -> &ServiceModel {
        self.demands.iter().find(|d| d.app == app).and_then(|d| d.service.as_ref()).unwrap_or(&self.service)
    }

    /// From a node being ready to a runner of app `app` on it serving, as planners estimate it:
    /// the model load, or with `[weights]` the fetch (from peers when `warm` and the cache is
    /// on, else from the origin) and the load from disk.
    pub fn runner_start_estimate(&self, app: &str, warm: bool) -> Duration {
        runner_start_estimate(self.service_for(app), self.weights_for(app).as_ref(), warm)
    }
}

/// [`Scenario::runner_start_estimate`] for an app that serves as `service` and fetches as `weights`
/// (the engine keeps both per app).
pub fn runner_start_estimate(service: &ServiceModel, weights: Option<&Weights>, warm: bool) -> Duration {
    match weights {
        None => service.model_load,
        Some(w) => {
            let from = if warm && w.cache { FetchFrom::Peers } else { FetchFrom::Origin };
            w.fetch(from) + w.load()
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: Option<String>,
    spec: String,
    seed: Option<u64>,
    duration: String,
    tick: Option<String>,
    slo_wait: Option<String>,
    unavailable_ttl: Option<String>,
    consolidation_horizon: Option<String>,
    #[serde(default)]
    catalog: Vec<String>,
    demand: RawDemands,
    #[serde(default)]
    service: RawService,
    #[serde(default)]
    clouds: BTreeMap<String, RawCloud>,
    #[serde(default)]
    capacity: BTreeMap<String, u32>,
    weights: Option<RawWeights>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeights {
    size_gb: f64,
    origin_gb_per_s: Option<f64>,
    peer_gb_per_s: Option<f64>,
    disk_gb_per_s: Option<f64>,
    egress_dollars_per_gb: Option<String>,
    cache: Option<bool>,
    cold_start_aware: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDemand {
    app: String,
    trace: Option<String>,
    #[serde(default)]
    tile: bool,
    poisson_rate: Option<f64>,
    context_tokens: Option<u32>,
    generated_tokens: Option<u32>,
    time_scale: Option<f64>,
    rate_scale: Option<f64>,
    diurnal_amplitude: Option<f64>,
    prefill_tokens_per_s: Option<f64>,
    decode_tokens_per_s: Option<f64>,
    model_load: Option<String>,
    weights_gb: Option<f64>,
}

/// `[demand]` (one table) or `[[demand]]` (an array of tables), read with the TOML parser's own
/// errors (an untagged enum would lose them).
struct RawDemands(Vec<RawDemand>);

impl<'de> Deserialize<'de> for RawDemands {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawDemands;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a [demand] table or [[demand]] tables")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<RawDemands, A::Error> {
                RawDemand::deserialize(serde::de::value::MapAccessDeserializer::new(m)).map(|d| RawDemands(vec![d]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, s: A) -> Result<RawDemands, A::Error> {
                Vec::<RawDemand>::deserialize(serde::de::value::SeqAccessDeserializer::new(s)).map(RawDemands)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawService {
    prefill_tokens_per_s: Option<f64>,
    decode_tokens_per_s: Option<f64>,
    model_load: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawCloud {
    provision_delay: Option<String>,
    provision_jitter: Option<String>,
    boot: Option<String>,
    ice_probability: Option<f64>,
    preemptions_per_hour: Option<f64>,
    billing: Option<String>,
    min_billing: Option<String>,
    capacity: Option<u32>,
}

impl Scenario {
    /// Reads a scenario; `spec`, `trace` and `catalog` paths are relative to the scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io { path: p.clone(), source })?;
        Scenario::parse(&p, &text, path.parent().unwrap_or(Path::new(".")))
    }

    pub fn parse(file: &str, text: &str, base: &Path) -> Result<Scenario, ScenarioError> {
        let invalid = |message: String| ScenarioError::Invalid { path: file.to_string(), message };
        let raw: Raw = toml::from_str(text).map_err(|e| invalid(e.to_string().trim().to_string()))?;
        let dur = |v: &Option<String>, field: &str, default: Duration| -> Result<Duration, ScenarioError> {
            match v {
                None => Ok(default),
                Some(s) => match parse_duration(s) {
                    // Every duration is bounded by what one run can simulate (its clock's range).
                    Some(d) if d <= crate::engine::MAX_DURATION => Ok(d),
                    Some(_) => Err(invalid(format!("{field}: '{s}' is longer than a run can be; at most 49 days"))),
                    None => Err(invalid(format!("{field}: '{s}' is not a duration such as \"90s\", \"5m\", \"30d\""))),
                },
            }
        };
        let spec_path = base.join(&raw.spec);
        let spec_text = std::fs::read_to_string(&spec_path)
            .map_err(|source| ScenarioError::Io { path: spec_path.display().to_string(), source })?;
        let spec = FleetSpec::parse(&spec_path.display().to_string(), &spec_text)?;
        // Scales and rates are bounded too: a run's events must fit in memory and its clock.
        let positive = |v: Option<f64>, field: &str, default: f64| -> Result<f64, ScenarioError> {
            let x = v.unwrap_or(default);
            let max = if field.ends_with("tokens_per_s") { 1e9 } else { 10_000.0 };
            if x.is_finite() && x > 0.0 && x <= max {
                Ok(x)
            } else {
                Err(invalid(format!("{field}: must be a positive number, at most {max}")))
            }
        };
        // A synthetic request's token counts: what one model's context window could hold.
        let tokens = |v: Option<u32>, field: &str, default: u32| -> Result<u32, ScenarioError> {
            match v.unwrap_or(default) {
                n if n <= MAX_TOKENS => Ok(n),
                n => Err(invalid(format!("{field}: {n} tokens; at most {MAX_TOKENS} a request"))),
            }
        };
        let sd = ServiceModel::default();
        let service = ServiceModel {
            prefill_tokens_per_s: positive(
                raw.service.prefill_tokens_per_s,
                "service.prefill_tokens_per_s",
                sd.prefill_tokens_per_s,
            )?,
            decode_tokens_per_s: positive(
                raw.service.decode_tokens_per_s,
                "service.decode_tokens_per_s",
                sd.decode_tokens_per_s,
            )?,
            model_load: dur(&raw.service.model_load, "service.model_load", sd.model_load)?,
        };
        let many = raw.demand.0.len() > 1;
        if raw.demand.0.is_empty() || raw.demand.0.len() > MAX_DEMANDS {
            return Err(invalid(format!("demand: give 1 to {MAX_DEMANDS} [[demand]] tables, one per app")));
        }
        let mut demands: Vec<Demand> = Vec::with_capacity(raw.demand.0.len());
        for (i, d) in raw.demand.0.iter().enumerate() {
            // `demand.app` for the one table, `demand[1].app` for the second of several.
            let name = if many { format!("demand[{i}]") } else { "demand".to_string() };
            if spec.app(&d.app).is_none() {
                return Err(invalid(format!("{name}.app: no app '{}' in {}", d.app, spec_path.display())));
            }
            if let Some(j) = demands.iter().position(|x| x.app == d.app) {
                return Err(invalid(format!(
                    "{name}.app: app '{}' has a demand already (demand[{j}]); give each app one stream",
                    d.app
                )));
            }
            let source = match (&d.trace, d.poisson_rate) {
                (Some(t), None) => DemandSource::Trace { path: base.join(t), tile: d.tile },
                (None, Some(rate)) if rate > 0.0 && rate <= 100_000.0 => DemandSource::Poisson {
                    rate_per_s: rate,
                    context_tokens: tokens(d.context_tokens, &format!("{name}.context_tokens"), 1000)?,
                    generated_tokens: tokens(d.generated_tokens, &format!("{name}.generated_tokens"), 100)?,
                },
                _ => {
                    return Err(invalid(format!(
                        "{name}: give either trace = \"FILE\" or poisson_rate = N (more than 0, at most 100000 per second)"
                    )));
                }
            };
            demands.push(Demand {
                app: d.app.clone(),
                source,
                time_scale: positive(d.time_scale, &format!("{name}.time_scale"), 1.0)?,
                rate_scale: positive(d.rate_scale, &format!("{name}.rate_scale"), 1.0)?,
                diurnal_amplitude: match d.diurnal_amplitude.unwrap_or(0.0) {
                    // 1 swings the rate from nothing at midnight to twice it at noon; beyond, the
                    // night's rate would be below zero.
                    a if (0.0..=1.0).contains(&a) => a,
                    a => {
                        return Err(invalid(format!(
                            "{name}.diurnal_amplitude: {a} is outside 0 to 1 (0 is flat, 1 swings from nothing at midnight to twice the rate at noon)"
                        )));
                    }
                },
                service: if d.prefill_tokens_per_s.is_some()
                    || d.decode_tokens_per_s.is_some()
                    || d.model_load.is_some()
                {
                    Some(ServiceModel {
                        prefill_tokens_per_s: positive(
                            d.prefill_tokens_per_s,
                            &format!("{name}.prefill_tokens_per_s"),
                            service.prefill_tokens_per_s,
                        )?,
                        decode_tokens_per_s: positive(
                            d.decode_tokens_per_s,
                            &format!("{name}.decode_tokens_per_s"),
                            service.decode_tokens_per_s,
                        )?,
                        model_load: dur(&d.model_load, &format!("{name}.model_load"), service.model_load)?,
                    })
                } else {
                    None
                },
                weights_gb: match d.weights_gb {
                    None => None,
                    Some(_) if raw.weights.is_none() => {
                        return Err(invalid(format!(
                            "{name}.weights_gb: sizes this app's model for the [weights] table, and there is none; add [weights] (size_gb = …) or drop it"
                        )));
                    }
                    Some(gb) if gb.is_finite() && gb > 0.0 && gb <= 100_000.0 => Some(gb),
                    Some(_) => {
                        return Err(invalid(format!(
                            "{name}.weights_gb: the model's size in GB, more than 0 and at most 100000"
                        )));
                    }
                },
            });
        }
        let cloud_model = |r: &RawCloud, base: &CloudModel, name: &str| -> Result<CloudModel, ScenarioError> {
            let f = |k: &str| format!("clouds.{name}.{k}");
            let prob = |v: Option<f64>, k: &str, d: f64| -> Result<f64, ScenarioError> {
                let x = v.unwrap_or(d);
                if (0.0..=1.0).contains(&x) {
                    Ok(x)
                } else {
                    Err(invalid(format!("{}: a probability is 0 to 1", f(k))))
                }
            };
            let billing_step = match r.billing.as_deref() {
                None => base.billing_step,
                Some("per-second") => Duration::from_secs(1),
                Some("per-minute") => Duration::from_secs(60),
                Some("per-hour") => Duration::from_secs(3600),
                Some(o) => {
                    return Err(invalid(format!("{}: '{o}'; use per-second, per-minute or per-hour", f("billing"))));
                }
            };
            let preempt = r.preemptions_per_hour.unwrap_or(base.preemptions_per_hour);
            if !(preempt.is_finite() && (0.0..=3600.0).contains(&preempt)) {
                return Err(invalid(format!("{}: must be 0 to 3600", f("preemptions_per_hour"))));
            }
            Ok(CloudModel {
                provision_delay: dur(&r.provision_delay, &f("provision_delay"), base.provision_delay)?,
                provision_jitter: dur(&r.provision_jitter, &f("provision_jitter"), base.provision_jitter)?,
                boot: dur(&r.boot, &f("boot"), base.boot)?,
                ice_probability: prob(r.ice_probability, "ice_probability", base.ice_probability)?,
                preemptions_per_hour: preempt,
                billing_step,
                min_billing: dur(&r.min_billing, &f("min_billing"), base.min_billing)?,
                capacity: r.capacity.unwrap_or(base.capacity),
            })
        };
        let default_cloud = match raw.clouds.get("default") {
            Some(r) => cloud_model(r, &CloudModel::default(), "default")?,
            None => CloudModel::default(),
        };
        let mut clouds = BTreeMap::new();
        for (name, r) in &raw.clouds {
            if name == "default" {
                continue;
            }
            let c: Cloud =
                name.parse().map_err(|e: fleet_core::cloud::UnknownCloud| invalid(format!("clouds.{name}: {e}")))?;
            clouds.insert(c, cloud_model(r, &default_cloud, name)?);
        }
        let weights = match &raw.weights {
            None => None,
            Some(w) => {
                let rate = |v: Option<f64>, k: &str, d: f64| -> Result<f64, ScenarioError> {
                    let x = v.unwrap_or(d);
                    if x.is_finite() && (0.001..=10_000.0).contains(&x) {
                        Ok(x)
                    } else {
                        Err(invalid(format!("weights.{k}: GB/s from 0.001 to 10000")))
                    }
                };
                if !(w.size_gb.is_finite() && w.size_gb > 0.0 && w.size_gb <= 100_000.0) {
                    return Err(invalid(
                        "weights.size_gb: the model's size in GB, more than 0 and at most 100000".into(),
                    ));
                }
                let egress = match &w.egress_dollars_per_gb {
                    None => fleet_core::Money::from_micros(90_000),
                    Some(s) => fleet_core::Money::parse_decimal(s)
                        .ok()
                        .filter(|m| !m.is_negative() && *m <= fleet_core::Money::from_dollars(100))
                        .ok_or_else(|| {
                            invalid(format!(
                                "weights.egress_dollars_per_gb: '{s}' is not an amount from 0 to 100, such as \"0.09\""
                            ))
                        })?,
                };
                Some(Weights {
                    size_gb: w.size_gb,
                    origin_gb_per_s: rate(w.origin_gb_per_s, "origin_gb_per_s", 0.5)?,
                    peer_gb_per_s: rate(w.peer_gb_per_s, "peer_gb_per_s", 6.0)?,
                    disk_gb_per_s: rate(w.disk_gb_per_s, "disk_gb_per_s", 7.0)?,
                    egress_per_gb: egress,
                    cache: w.cache.unwrap_or(true),
                    cold_start_aware: w.cold_start_aware.unwrap_or(true),
                })
            }
        };
        let duration = dur(&Some(raw.duration.clone()), "duration", Duration::ZERO)?;
        if duration.is_zero() || duration > crate::engine::MAX_DURATION {
            return Err(invalid("duration: must be more than zero and at most 49 days".into()));
        }
        let tick = dur(&raw.tick, "tick", Duration::from_secs(10))?;
        if tick < Duration::from_secs(1) {
            return Err(invalid("tick: at least 1s".into()));
        }
        // Policies decide once a tick: a tick as long as the run would decide once, at the start,
        // before any demand, and the report would show nothing served, not a bad input.
        if tick >= duration {
            return Err(invalid(format!(
                "tick: '{}' is not shorter than the duration ('{}'); policies decide once a tick",
                raw.tick.as_deref().unwrap_or("10s"),
                raw.duration
            )));
        }
        Ok(Scenario {
            name: raw.name.unwrap_or_else(|| file.to_string()),
            policy: Policy::Spec,
            spec,
            seed: raw.seed.unwrap_or(1),
            duration,
            tick,
            slo_wait: dur(&raw.slo_wait, "slo_wait", Duration::from_secs(30))?,
            unavailable_ttl: dur(&raw.unavailable_ttl, "unavailable_ttl", Duration::from_secs(600))?,
            consolidation_horizon: match raw.consolidation_horizon.as_deref() {
                Some("off") => None,
                _ => Some(dur(
                    &raw.consolidation_horizon,
                    "consolidation_horizon",
                    fleet_policies::plan::PlanOptions::default().consolidation_horizon.unwrap_or_default(),
                )?),
            },
            catalog: raw.catalog.iter().map(|c| base.join(c)).collect(),
            demands,
            service,
            default_cloud,
            clouds,
            capacity: raw.capacity,
            weights,
        })
    }
}
