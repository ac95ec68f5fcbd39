//! The fleet spec: what an operator asks for, in TOML.
//!
//! ```toml
//! [fleet]
//! name = "prod"
//!
//! [budget]                       # fleet-wide hard caps
//! max_per_hour = "400.00"        # money is a string (or a whole number): never a float
//! max_per_month = "150000"
//!
//! [[quotas]]                     # what the cloud accounts allow, in GPUs
//! cloud = "aws"
//! region = "us-east-1"           # optional: without it, the whole cloud
//! capacity = "spot"              # optional: without it, all capacity types
//! max_gpus = 64
//!
//! [apps.llama-70b]
//! gpu = ["H100", "A100-80GB"]    # a family, a model, or any of several
//! gpus = 8                       # GPUs per runner
//! min_vcpus = 64                 # per runner
//! min_memory_gib = 512           # per runner
//!
//! [apps.llama-70b.placement]
//! clouds = ["aws", "gcp", "lambda", "runpod"]   # allowed; absent = all
//! deny_clouds = []
//! regions = ["us-*"]                            # allowed patterns; absent = all
//! deny_regions = []
//! spot = "auto"                                 # spot | on-demand | auto
//! base_on_demand = 1                            # runners never on spot
//! max_price_per_gpu_hour = "4.00"
//!
//! [apps.llama-70b.scaling]
//! min_concurrency = 0
//! max_concurrency = 8
//! concurrency_buffer = 1
//! concurrency_buffer_perc = 20
//! max_multiplexing = 4
//! keep_alive = "5m"             # or "auto": kept while re-creating would cost more (KeepAlive)
//! scaling_delay = "30s"
//! predict = false               # true: scale up for the rate forecast one cold start ahead
//! consolidation = true          # false: never move runners to fewer, smaller or cheaper nodes
//! keep_min_over_budget = false  # true: min_concurrency runners stay when a monthly cap runs out
//!
//! [apps.llama-70b.budget]
//! max_per_hour = "200"
//!
//! [apps.llama-70b.model]         # the weights each runner loads (`fleetctl model push` prints both)
//! source = "s3://models/llama-70b"   # s3://, gs://, https:// or file:///
//! digest = "sha256:…"                # the manifest's SHA-256: exactly these bytes, wherever they come from
//!
//! [apps.llama-70b.requests]      # what callers may ask (defaults shown)
//! max_queue = 10000              # queued or in flight; beyond: 429
//! max_input_bytes = 1048576      # one request's input, as JSON; beyond: 413 (at most 16 MiB)
//! rate_per_token = 100           # submits per second per token; beyond: 429
//! result_ttl = "24h"             # finished requests' results are removed after this
//! ```
//!
//! [`FleetSpec::parse`] checks the whole file and returns every problem at once, each naming file,
//! line, column and field and saying how to fix it; a spec with any error is not used at all.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

pub use crate::accounts::{AwsAccount, AzureAccount, CloudAccounts, GcpAccount, LambdaAccount, RunpodAccount};
use crate::cloud::Cloud;
use crate::gpu::GpuSelector;
use crate::money::{Money, Price};
use crate::names::{self, slug};
use crate::offering::CapacityType;

/// A validated fleet spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSpec {
    pub name: String,
    pub budget: Budget,
    pub quotas: Vec<Quota>,
    /// The cloud accounts fleetd uses (`[clouds.*]`); empty when the spec has none.
    pub clouds: CloudAccounts,
    /// Sorted by name, so every decision walks apps in the same order.
    pub apps: Vec<AppSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSpec {
    pub name: String,
    pub gpu: GpuRequirement,
    pub placement: PlacementRules,
    pub scaling: ScalingSpec,
    pub budget: Budget,
    pub requests: RequestLimits,
    /// The model artefact each runner loads (`[apps.X.model]`), when the spec names one.
    pub model: Option<ModelRef>,
}

/// A model pinned by the digest of its manifest, and where its chunks are kept (see
/// [`crate::artifact`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    pub origin: crate::artifact::Origin,
    pub digest: crate::artifact::Digest,
}

/// What callers may ask of an app (`[apps.X.requests]`); the API enforces each, answering 413 or
/// 429 with the field to change, so no caller can fill the store or starve the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Requests queued or in flight at once; a submit beyond it is refused (429).
    pub max_queue: u32,
    /// Bytes of one request's input (as JSON); a larger one is refused (413).
    pub max_input_bytes: u32,
    /// Submits per second one token may make (a burst of as many); beyond it, 429.
    pub rate_per_token: u32,
    /// How long a finished request's result is kept before it is removed.
    pub result_ttl: Duration,
}

impl RequestLimits {
    /// The largest `max_input_bytes` a spec may set (the API's body limit is set from it).
    pub const MAX_INPUT_BYTES: u32 = 16 << 20;
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_queue: 10_000,
            max_input_bytes: 1 << 20,
            rate_per_token: 100,
            result_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// What one runner of an app needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuRequirement {
    /// Any of these GPUs will do.
    pub models: Vec<GpuSelector>,
    /// GPUs per runner.
    pub count: u32,
    pub min_vcpus: u32,
    pub min_memory_gib: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpotPolicy {
    /// Spot only (beyond `base_on_demand`); wait rather than pay on-demand.
    Spot,
    /// Never spot.
    OnDemand,
    /// Spot when it can be had, on-demand while it cannot.
    Auto,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementRules {
    /// Allowed clouds; empty means all.
    pub clouds: Vec<Cloud>,
    pub deny_clouds: Vec<Cloud>,
    /// Allowed region patterns (normalised; a trailing `*` is a prefix); empty means all.
    pub regions: Vec<String>,
    pub deny_regions: Vec<String>,
    pub spot: SpotPolicy,
    /// Runners that never run on spot.
    pub base_on_demand: u32,
    pub max_price_per_gpu_hour: Option<Price>,
}

/// fal-style autoscaling knobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalingSpec {
    pub min_concurrency: u32,
    pub max_concurrency: u32,
    /// Extra runners beyond demand (absolute floor of the buffer).
    pub concurrency_buffer: u32,
    /// Extra runners as a percentage of the runners demand needs.
    pub concurrency_buffer_perc: u32,
    /// Requests one runner serves at once.
    pub max_multiplexing: u32,
    /// How long an idle runner stays warm: a fixed time, or `"auto"` (see [`KeepAlive`]).
    pub keep_alive: KeepAlive,
    /// How long demand must persist before scaling up.
    pub scaling_delay: Duration,
    /// Predictive scale-up (`predict = true`): size for the arrival rate forecast one cold start
    /// ahead (the recent rate, raised by the daily shape learned from the days seen) and the
    /// service time measured, instead of one slot per queued request (fal's rule). See
    /// `fleet_policies::autoscale`.
    pub predict: bool,
    /// Whether fleet may move this app's runners to fewer, smaller or cheaper nodes
    /// (`consolidation = false` forbids it). See `fleet_policies::consolidate`.
    pub consolidation: bool,
    /// When a monthly cap's money runs out, keep `min_concurrency` runners anyway (the cap may
    /// then be overrun by their cost); `false` (default): wind down to none.
    pub keep_min_over_budget: bool,
}

impl Default for ScalingSpec {
    /// fal's defaults: no minimum, no buffer, one request per runner, 60 s keep-alive, no delay.
    fn default() -> Self {
        ScalingSpec {
            min_concurrency: 0,
            max_concurrency: 10,
            concurrency_buffer: 0,
            concurrency_buffer_perc: 0,
            max_multiplexing: 1,
            keep_alive: KeepAlive::For(Duration::from_secs(60)),
            scaling_delay: Duration::ZERO,
            predict: false,
            consolidation: true,
            keep_min_over_budget: false,
        }
    }
}

/// How long an idle runner stays warm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// fal's fixed keep-alive: an idle runner stops once idle this long (and not needed).
    For(Duration),
    /// Cost-aware (`keep_alive = "auto"`): an idle runner is kept while re-creating it would cost
    /// more than keeping it until the app's next request is expected. Re-creating costs the cold
    /// start (provision + boot + model load, all billed) plus the minimum billing of a new node;
    /// keeping costs the same slot price for the expected gap, n × the app's recent mean
    /// inter-arrival time when n runners share its requests. Both are priced per slot, so a
    /// runner is stopped once `n × mean gap ≥ cold start + minimum billing` (at once when no
    /// request arrived recently). See `fleet_policies::autoscale`.
    Auto,
}

/// Hard dollar caps. `None` means no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    pub max_per_hour: Option<Money>,
    pub max_per_month: Option<Money>,
}

/// A cloud account limit in GPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub cloud: Cloud,
    pub region: Option<String>,
    pub capacity: Option<CapacityType>,
    pub max_gpus: u32,
}

impl PlacementRules {
    pub fn allows_cloud(&self, c: Cloud) -> bool {
        (self.clouds.is_empty() || self.clouds.contains(&c)) && !self.deny_clouds.contains(&c)
    }

    pub fn allows_region(&self, region: &str) -> bool {
        (self.regions.is_empty() || self.regions.iter().any(|p| region_matches(p, region)))
            && !self.deny_regions.iter().any(|p| region_matches(p, region))
    }
}

/// `us-*` matches `us-east-1`; otherwise names must be equal (both normalised).
pub fn region_matches(pattern: &str, region: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => region.starts_with(prefix),
        None => pattern == region,
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// One problem in a spec, with where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted path of the field (`apps.llama.scaling.max_concurrency`), or empty for syntax errors.
    pub field: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a spec (at least one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "{} has {n} error{}; nothing was applied", self.0[0].file, if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

struct Checker<'a> {
    file: &'a str,
    text: &'a str,
    errors: Vec<SpecError>,
}

impl Checker<'_> {
    /// A `true` / `false` field.
    fn boolean(&mut self, v: &Option<Spanned<toml::Value>>, field: &str, default: bool) -> bool {
        let Some(v) = v else { return default };
        match v.get_ref() {
            toml::Value::Boolean(b) => *b,
            other => {
                self.err(v.span(), field.to_string(), format!("expected true or false, not {other}"));
                default
            }
        }
    }

    fn err(&mut self, span: Range<usize>, field: impl Into<String>, message: impl Into<String>) {
        let (line, column) = line_col(self.text, span.start);
        self.errors.push(SpecError {
            file: self.file.to_string(),
            line,
            column,
            field: field.into(),
            message: message.into(),
        });
    }

    fn money(&mut self, v: &Option<Spanned<toml::Value>>, field: &str) -> Option<Money> {
        let v = v.as_ref()?;
        let m = match v.get_ref() {
            toml::Value::String(s) => match Money::parse_decimal(s) {
                Ok(m) => m,
                Err(e) => {
                    self.err(v.span(), field, e.to_string());
                    return None;
                }
            },
            toml::Value::Integer(i) => match Money::from_dollars(1).checked_mul(*i) {
                Some(m) => m,
                None => {
                    self.err(v.span(), field, "is too large");
                    return None;
                }
            },
            toml::Value::Float(f) => {
                self.err(
                    v.span(),
                    field,
                    format!("{f} is a float; write money as a string such as \"{f}\", so it is exact"),
                );
                return None;
            }
            other => {
                self.err(
                    v.span(),
                    field,
                    format!("expected an amount of dollars such as \"4.00\", found a {}", other.type_str()),
                );
                return None;
            }
        };
        if m <= Money::ZERO {
            self.err(v.span(), field, format!("must be more than zero, not {m}; leave it out for no limit"));
            return None;
        }
        Some(m)
    }

    fn requests(&mut self, r: Option<&RawRequests>, path: &str) -> RequestLimits {
        let empty = RawRequests::default();
        let r = r.unwrap_or(&empty);
        let d = RequestLimits::default();
        let f = |x: &str| format!("{path}.{x}");
        let result_ttl = self.duration(&r.result_ttl, &f("result_ttl"), d.result_ttl);
        if !(Duration::from_secs(60)..=Duration::from_secs(30 * 86_400)).contains(&result_ttl) {
            let span = r.result_ttl.as_ref().map(Spanned::span).unwrap_or(0..0);
            self.err(span, f("result_ttl"), "is out of range; keep results for 1m to 30d");
        }
        RequestLimits {
            max_queue: self.int(&r.max_queue, &f("max_queue"), d.max_queue, 1, 1_000_000),
            max_input_bytes: self.int(
                &r.max_input_bytes,
                &f("max_input_bytes"),
                d.max_input_bytes,
                1,
                RequestLimits::MAX_INPUT_BYTES,
            ),
            rate_per_token: self.int(&r.rate_per_token, &f("rate_per_token"), d.rate_per_token, 1, 100_000),
            result_ttl,
        }
    }

    fn duration(&mut self, v: &Option<Spanned<toml::Value>>, field: &str, default: Duration) -> Duration {
        let Some(v) = v else { return default };
        let parsed = match v.get_ref() {
            toml::Value::Integer(i) if *i >= 0 => Some(Duration::from_secs(*i as u64)),
            toml::Value::String(s) => parse_duration(s),
            _ => None,
        };
        parsed.unwrap_or_else(|| {
            self.err(v.span(), field, "expected a duration such as \"30s\", \"5m\", \"1h\" or a number of seconds");
            default
        })
    }

    /// `keep_alive` and `scaling_delay`: a duration of at most 30 days. Runners kept longer are a
    /// minimum (`min_concurrency`), and a delay longer never scales up; beyond any bound, times
    /// computed from them overflow (until 2026-12-03 `fleetctl plan` panicked on
    /// `scaling_delay = "18446744073709551615s"`).
    /// `hint` ends the error where the value is out of range.
    fn scaling_duration(
        &mut self,
        v: &Option<Spanned<toml::Value>>,
        field: &str,
        default: Duration,
        hint: &str,
    ) -> Duration {
        let d = self.duration(v, field, default);
        if d > MAX_SCALING_DURATION {
            let span = v.as_ref().map(Spanned::span).unwrap_or(0..0);
            self.err(span, field, format!("is out of range; use 0s to 30d{hint}"));
            return default;
        }
        d
    }

    fn cloud(&mut self, v: &Spanned<String>, field: &str) -> Option<Cloud> {
        match v.get_ref().parse::<Cloud>() {
            Ok(c) => Some(c),
            Err(e) => {
                self.err(v.span(), field, e.to_string());
                None
            }
        }
    }

    fn clouds(&mut self, v: &Option<Vec<Spanned<String>>>, field: &str) -> Vec<Cloud> {
        v.iter().flatten().filter_map(|c| self.cloud(c, field)).collect()
    }

    fn regions(&mut self, v: &Option<Vec<Spanned<String>>>, field: &str) -> Vec<String> {
        let mut out = Vec::new();
        for r in v.iter().flatten() {
            let raw = r.get_ref();
            let (base, star) = match raw.strip_suffix('*') {
                Some(b) => (b, true),
                None => (raw.as_str(), false),
            };
            let s = slug(base);
            if s.is_empty() && !star {
                self.err(r.span(), field, "an empty region name matches nothing; remove it, or write \"*\" for all");
                continue;
            }
            // Keep a trailing separator of a prefix pattern: "us-*" must not match "usa".
            let keep_dash = star && base.ends_with(['-', '_']);
            let pattern =
                format!("{s}{}{}", if keep_dash && !s.is_empty() { "-" } else { "" }, if star { "*" } else { "" });
            // A pattern that matches no region any cloud sells is a typo ("us-est-1"), never a
            // silent "nowhere" (the local cloud's region is "local").
            let known = crate::Catalog::builtin().regions();
            if !known.iter().any(|k| region_matches(&pattern, k)) && !region_matches(&pattern, "local") {
                let hint = crate::names::closest(&s, known.iter().map(String::as_str))
                    .map(|h| format!(" (did you mean '{h}'?)"))
                    .unwrap_or_default();
                self.err(r.span(), field, format!("'{raw}' matches no region of any cloud{hint}"));
                continue;
            }
            out.push(pattern);
        }
        out
    }
}

/// `"90"`, `"90s"`, `"5m"`, `"1h"`, `"1h30m"`, `"250ms"`.
/// The longest `keep_alive` or `scaling_delay` a spec may give.
pub const MAX_SCALING_DURATION: Duration = Duration::from_secs(30 * 86_400);

pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let d = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            "d" => Duration::from_secs(n.checked_mul(86_400)?),
            _ => return None,
        };
        total = total.checked_add(d)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// Replaces with spaces the line holding byte `at` (an unknown key and its value, on one line)
/// or, where that line is a table header (`[apps.x.scalingg]`), the header and the table's lines
/// up to the next header. Lengths are kept, so offsets into the text stay valid.
fn blank_out(text: &mut String, at: usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = |from: usize| text[from..].find('\n').map_or(text.len(), |i| from + i);
    let mut end = line_end(start);
    if text[start..end].trim_start().starts_with('[') {
        while end < text.len() {
            let next = end + 1;
            let next_end = line_end(next);
            if text[next..next_end].trim_start().starts_with('[') {
                break;
            }
            end = next_end;
        }
    }
    let blanked: String = text[start..end].chars().map(|c| if c == '\n' { '\n' } else { ' ' }).collect();
    // Multi-byte characters become one space each: pad to keep the byte length.
    let pad = (end - start).saturating_sub(blanked.len());
    text.replace_range(start..end, &format!("{blanked}{}", " ".repeat(pad)));
}

// ---------------------------------------------------------------------------------------------
// The file as written

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    fleet: Option<RawFleet>,
    budget: Option<RawBudget>,
    #[serde(default)]
    quotas: Vec<Spanned<RawQuota>>,
    #[serde(default)]
    apps: BTreeMap<Spanned<String>, Spanned<RawApp>>,
    clouds: Option<crate::accounts::RawClouds>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    name: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    max_per_hour: Option<Spanned<toml::Value>>,
    max_per_month: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuota {
    cloud: Spanned<String>,
    region: Option<Spanned<String>>,
    capacity: Option<Spanned<String>>,
    max_gpus: Spanned<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    /// A string or an array of strings (serde's untagged enums lose spans, so it is checked by hand).
    gpu: Option<Spanned<toml::Value>>,
    gpus: Option<Spanned<i64>>,
    min_vcpus: Option<Spanned<i64>>,
    min_memory_gib: Option<Spanned<i64>>,
    placement: Option<RawPlacement>,
    scaling: Option<RawScaling>,
    budget: Option<RawBudget>,
    requests: Option<RawRequests>,
    model: Option<RawModel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    source: Spanned<String>,
    digest: Spanned<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRequests {
    max_queue: Option<Spanned<i64>>,
    max_input_bytes: Option<Spanned<i64>>,
    rate_per_token: Option<Spanned<i64>>,
    result_ttl: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPlacement {
    clouds: Option<Vec<Spanned<String>>>,
    deny_clouds: Option<Vec<Spanned<String>>>,
    regions: Option<Vec<Spanned<String>>>,
    deny_regions: Option<Vec<Spanned<String>>>,
    spot: Option<Spanned<String>>,
    base_on_demand: Option<Spanned<i64>>,
    max_price_per_gpu_hour: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawScaling {
    min_concurrency: Option<Spanned<i64>>,
    max_concurrency: Option<Spanned<i64>>,
    concurrency_buffer: Option<Spanned<i64>>,
    concurrency_buffer_perc: Option<Spanned<i64>>,
    max_multiplexing: Option<Spanned<i64>>,
    keep_alive: Option<Spanned<toml::Value>>,
    scaling_delay: Option<Spanned<toml::Value>>,
    predict: Option<Spanned<toml::Value>>,
    consolidation: Option<Spanned<toml::Value>>,
    keep_min_over_budget: Option<Spanned<toml::Value>>,
}

impl Checker<'_> {
    /// An integer field within `lo..=hi`.
    fn int(&mut self, v: &Option<Spanned<i64>>, field: &str, default: u32, lo: u32, hi: u32) -> u32 {
        let Some(v) = v else { return default };
        let x = *v.get_ref();
        if x < i64::from(lo) || x > i64::from(hi) {
            self.err(v.span(), field, format!("{x} is out of range; use {lo} to {hi}"));
            return default;
        }
        x as u32
    }

    fn budget(&mut self, b: &Option<RawBudget>, path: &str) -> Budget {
        let Some(b) = b else { return Budget::default() };
        Budget {
            max_per_hour: self.money(&b.max_per_hour, &format!("{path}.max_per_hour")),
            max_per_month: self.money(&b.max_per_month, &format!("{path}.max_per_month")),
        }
    }

    fn app(&mut self, name: &Spanned<String>, raw: &Spanned<RawApp>) -> AppSpec {
        let n = name.get_ref();
        let path = format!("apps.{n}");
        if slug(n) != *n {
            self.err(
                name.span(),
                &path,
                format!("app names are lower-case letters, digits and '-'; try \"{}\"", slug(n)),
            );
        }
        let a = raw.get_ref();
        let gpu_field = format!("{path}.gpu");
        let mut models = Vec::new();
        match &a.gpu {
            None => self.err(raw.span(), &gpu_field, "missing; say which GPU the app needs, e.g. gpu = \"H100\""),
            Some(g) => {
                let list: Vec<Spanned<String>> = match g.get_ref() {
                    toml::Value::String(s) => vec![Spanned::new(g.span(), s.clone())],
                    toml::Value::Array(items) => {
                        let mut out = Vec::new();
                        let mut from = g.span().start;
                        for item in items {
                            let Some(s) = item.as_str() else {
                                self.err(
                                    g.span(),
                                    &gpu_field,
                                    format!("expected GPU names, found a {}", item.type_str()),
                                );
                                continue;
                            };
                            // Array elements carry no span: find the element's text after the previous
                            // one. Written another way (a 'literal' string, escapes) it is not found:
                            // then the whole array's span stands for it.
                            let quoted = format!("\"{s}\"");
                            let found = self.text.get(from..g.span().end).and_then(|t| t.find(&quoted));
                            let span = match found {
                                Some(i) => {
                                    from += i + quoted.len();
                                    from - quoted.len()..from
                                }
                                None => g.span(),
                            };
                            out.push(Spanned::new(span, s.to_string()));
                        }
                        out
                    }
                    other => {
                        self.err(
                            g.span(),
                            &gpu_field,
                            format!("expected a GPU name or a list of them, found a {}", other.type_str()),
                        );
                        Vec::new()
                    }
                };
                if list.is_empty() && g.get_ref().is_array() {
                    self.err(g.span(), &gpu_field, "is empty; list at least one GPU, e.g. [\"H100\", \"A100-80GB\"]");
                }
                for s in &list {
                    match s.get_ref().parse::<GpuSelector>() {
                        Ok(sel) if !models.contains(&sel) => models.push(sel),
                        Ok(_) => {}
                        Err(e) => self.err(s.span(), &gpu_field, e.to_string()),
                    }
                }
            }
        }
        let count = self.int(&a.gpus, &format!("{path}.gpus"), 1, 1, 16);
        let min_vcpus = self.int(&a.min_vcpus, &format!("{path}.min_vcpus"), 0, 0, 4096);
        let min_memory_gib = self.int(&a.min_memory_gib, &format!("{path}.min_memory_gib"), 0, 0, 65_536);

        let p = a.placement.as_ref();
        let pf = |f: &str| format!("{path}.placement.{f}");
        let empty = RawPlacement::default();
        let p = p.unwrap_or(&empty);
        let clouds = self.clouds(&p.clouds, &pf("clouds"));
        let deny_clouds = self.clouds(&p.deny_clouds, &pf("deny_clouds"));
        if let Some(both) = clouds.iter().find(|c| deny_clouds.contains(c)) {
            let span = p.deny_clouds.iter().flatten().find(|s| s.get_ref().parse() == Ok(*both)).map(|s| s.span());
            self.err(
                span.unwrap_or(raw.span()),
                pf("deny_clouds"),
                format!("{both} is both allowed and denied; remove it from one list"),
            );
        }
        let regions = self.regions(&p.regions, &pf("regions"));
        let deny_regions = self.regions(&p.deny_regions, &pf("deny_regions"));
        let spot = match &p.spot {
            None => SpotPolicy::Auto,
            Some(s) => match s.get_ref().to_ascii_lowercase().replace('_', "-").as_str() {
                "spot" => SpotPolicy::Spot,
                "on-demand" | "ondemand" => SpotPolicy::OnDemand,
                "auto" => SpotPolicy::Auto,
                other => {
                    let hint = names::closest(other, ["spot", "on-demand", "auto"])
                        .map(|h| format!(" (did you mean \"{h}\"?)"))
                        .unwrap_or_default();
                    self.err(
                        s.span(),
                        pf("spot"),
                        format!("unknown spot policy \"{other}\"{hint}; use \"spot\", \"on-demand\" or \"auto\""),
                    );
                    SpotPolicy::Auto
                }
            },
        };
        let max_price_per_gpu_hour =
            self.money(&p.max_price_per_gpu_hour, &pf("max_price_per_gpu_hour")).map(Price::per_hour);

        let s = a.scaling.as_ref();
        let sf = |f: &str| format!("{path}.scaling.{f}");
        let empty = RawScaling::default();
        let s = s.unwrap_or(&empty);
        let d = ScalingSpec::default();
        let max_concurrency = self.int(&s.max_concurrency, &sf("max_concurrency"), d.max_concurrency, 1, 100_000);
        let min_concurrency = self.int(&s.min_concurrency, &sf("min_concurrency"), d.min_concurrency, 0, 100_000);
        if min_concurrency > max_concurrency {
            let span = s.min_concurrency.as_ref().map(|x| x.span()).unwrap_or(raw.span());
            self.err(
                span,
                sf("min_concurrency"),
                format!(
                    "{min_concurrency} is above max_concurrency {max_concurrency}; lower it or raise max_concurrency"
                ),
            );
        }
        let base_on_demand = self.int(&p.base_on_demand, &pf("base_on_demand"), 0, 0, 100_000);
        if base_on_demand > max_concurrency {
            let span = p.base_on_demand.as_ref().map(|x| x.span()).unwrap_or(raw.span());
            self.err(
                span,
                pf("base_on_demand"),
                format!("{base_on_demand} is above max_concurrency {max_concurrency}; it can be at most that"),
            );
        }
        let scaling = ScalingSpec {
            min_concurrency,
            max_concurrency,
            concurrency_buffer: self.int(&s.concurrency_buffer, &sf("concurrency_buffer"), 0, 0, 100_000),
            concurrency_buffer_perc: self.int(&s.concurrency_buffer_perc, &sf("concurrency_buffer_perc"), 0, 0, 1000),
            max_multiplexing: self.int(&s.max_multiplexing, &sf("max_multiplexing"), d.max_multiplexing, 1, 10_000),
            keep_alive: match s.keep_alive.as_ref().map(|v| v.get_ref()) {
                Some(toml::Value::String(a)) if a == "auto" => KeepAlive::Auto,
                _ => {
                    let fixed = match d.keep_alive {
                        KeepAlive::For(t) => t,
                        KeepAlive::Auto => Duration::from_secs(60),
                    };
                    KeepAlive::For(self.scaling_duration(
                        &s.keep_alive,
                        &sf("keep_alive"),
                        fixed,
                        " (to keep runners for good, set min_concurrency)",
                    ))
                }
            },
            scaling_delay: self.scaling_duration(&s.scaling_delay, &sf("scaling_delay"), d.scaling_delay, ""),
            predict: self.boolean(&s.predict, &sf("predict"), d.predict),
            consolidation: self.boolean(&s.consolidation, &sf("consolidation"), d.consolidation),
            keep_min_over_budget: self.boolean(
                &s.keep_min_over_budget,
                &sf("keep_min_over_budget"),
                d.keep_min_over_budget,
            ),
        };
        AppSpec {
            name: n.clone(),
            gpu: GpuRequirement { models, count, min_vcpus, min_memory_gib },
            placement: PlacementRules {
                clouds,
                deny_clouds,
                regions,
                deny_regions,
                spot,
                base_on_demand,
                max_price_per_gpu_hour,
            },
            scaling,
            budget: self.budget(&a.budget, &format!("{path}.budget")),
            requests: self.requests(a.requests.as_ref(), &format!("{path}.requests")),
            model: self.model(a.model.as_ref(), &format!("{path}.model")),
        }
    }

    fn model(&mut self, m: Option<&RawModel>, path: &str) -> Option<ModelRef> {
        let m = m?;
        let origin = m.source.get_ref().parse::<crate::artifact::Origin>();
        let digest = m.digest.get_ref().parse::<crate::artifact::Digest>();
        if let Err(e) = &origin {
            self.err(m.source.span(), format!("{path}.source"), e.to_string());
        }
        if let Err(e) = &digest {
            self.err(m.digest.span(), format!("{path}.digest"), format!("{e} (`fleetctl model push` prints it)"));
        }
        Some(ModelRef { origin: origin.ok()?, digest: digest.ok()? })
    }
}

impl FleetSpec {
    /// Parses and checks a spec. `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<FleetSpec, SpecErrors> {
        let mut ck = Checker { file, text, errors: Vec::new() };
        // An unknown field stops the TOML reader at the first one; so that every problem is
        // listed at once, each unknown field is noted and blanked out (spaces, so every span
        // still points into `text`), and the rest is read and checked as usual.
        let mut cleaned = text.to_string();
        let mut unknown = 0;
        let raw: RawSpec = loop {
            match toml::from_str(&cleaned) {
                Ok(r) => break r,
                Err(e) => {
                    let span = e.span().unwrap_or(0..0);
                    let msg = e.message().trim().to_string();
                    let mut at = span.start.min(cleaned.len());
                    while !cleaned.is_char_boundary(at) {
                        at -= 1;
                    }
                    let blanked = cleaned[..at].rfind('\n').map_or(0, |i| i + 1);
                    let already = cleaned[blanked..].lines().next().is_some_and(|l| l.trim().is_empty());
                    if msg.starts_with("unknown field") && unknown < 100 && !already {
                        ck.err(
                            span.clone(),
                            "",
                            format!("{msg}; check the spelling (see the spec format in the README)"),
                        );
                        unknown += 1;
                        blank_out(&mut cleaned, span.start);
                        continue;
                    }
                    // After blanking, what remains may not read (a value over several lines):
                    // the unknown fields already listed say what to fix first.
                    if unknown == 0 {
                        ck.err(span, "", msg);
                    }
                    return Err(SpecErrors(ck.errors));
                }
            }
        };
        let name = match raw.fleet.as_ref().and_then(|f| f.name.as_ref()) {
            Some(n) if slug(n.get_ref()) == *n.get_ref() => n.get_ref().clone(),
            Some(n) => {
                ck.err(
                    n.span(),
                    "fleet.name",
                    format!("use lower-case letters, digits and '-'; try \"{}\"", slug(n.get_ref())),
                );
                String::new()
            }
            None => "default".to_string(),
        };
        let budget = ck.budget(&raw.budget, "budget");
        let mut quotas = Vec::new();
        for (i, q) in raw.quotas.iter().enumerate() {
            let f = |x: &str| format!("quotas[{i}].{x}");
            let r = q.get_ref();
            let cloud = ck.cloud(&r.cloud, &f("cloud"));
            let capacity = match &r.capacity {
                None => None,
                Some(c) => match c.get_ref().parse::<CapacityType>() {
                    Ok(c) => Some(c),
                    Err(e) => {
                        ck.err(c.span(), f("capacity"), e);
                        None
                    }
                },
            };
            let max_gpus = ck.int(&Some(r.max_gpus.clone()), &f("max_gpus"), 0, 0, 1_000_000);
            let region = r.region.as_ref().map(|s| slug(s.get_ref()));
            if let Some(cloud) = cloud {
                quotas.push(Quota { cloud, region, capacity, max_gpus });
            }
        }
        if raw.apps.is_empty() {
            ck.err(0..0, "apps", "the spec has no apps; add one, e.g. [apps.my-model] with gpu = \"H100\"");
        }
        let apps: Vec<AppSpec> = raw.apps.iter().map(|(n, a)| ck.app(n, a)).collect();
        let clouds = match &raw.clouds {
            Some(c) => {
                let mut found = Vec::new();
                let accounts = crate::accounts::check(c, &mut |span, field, msg| found.push((span, field, msg)));
                for (span, field, msg) in found {
                    ck.err(span, field, msg);
                }
                accounts
            }
            None => CloudAccounts::default(),
        };
        if ck.errors.is_empty() {
            Ok(FleetSpec { name, budget, quotas, clouds, apps })
        } else {
            ck.errors.sort_by_key(|e| (e.line, e.column));
            Err(SpecErrors(ck.errors))
        }
    }

    pub fn app(&self, name: &str) -> Option<&AppSpec> {
        self.apps.iter().find(|a| a.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{GpuFamily, GpuModel};

    const GOOD: &str = r#"
[fleet]
name = "prod"

[budget]
max_per_hour = "400.00"
max_per_month = 150000

[[quotas]]
cloud = "aws"
region = "us-east-1"
capacity = "spot"
max_gpus = 64

[apps.llama-70b]
gpu = ["H100", "A100-80GB"]
gpus = 8
min_vcpus = 64

[apps.llama-70b.placement]
clouds = ["aws", "gcp", "lambda"]
regions = ["us-*", "europe-west4"]
spot = "auto"
base_on_demand = 1
max_price_per_gpu_hour = "4.50"

[apps.llama-70b.scaling]
max_concurrency = 8
concurrency_buffer = 1
concurrency_buffer_perc = 20
max_multiplexing = 4
keep_alive = "5m"
scaling_delay = "30s"

[apps.sdxl]
gpu = "H100-PCIe"
"#;

    #[test]
    fn parses_a_full_spec() {
        let s = FleetSpec::parse("fleet.toml", GOOD).unwrap();
        assert_eq!(s.name, "prod");
        assert_eq!(s.budget.max_per_hour, Some(Money::from_dollars(400)));
        assert_eq!(s.budget.max_per_month, Some(Money::from_dollars(150_000)));
        assert_eq!(
            s.quotas,
            vec![Quota {
                cloud: Cloud::Aws,
                region: Some("us-east-1".into()),
                capacity: Some(CapacityType::Spot),
                max_gpus: 64
            }]
        );
        assert_eq!(s.apps.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["llama-70b", "sdxl"]);
        let a = &s.apps[0];
        assert_eq!(a.gpu.models, vec![GpuSelector::Family(GpuFamily::H100), GpuSelector::Model(GpuModel::A100_80GB)]);
        assert_eq!((a.gpu.count, a.gpu.min_vcpus, a.gpu.min_memory_gib), (8, 64, 0));
        assert_eq!(a.placement.regions, ["us-*", "europe-west4"]);
        assert!(a.placement.allows_region("us-east-1") && !a.placement.allows_region("usa-1"));
        assert!(a.placement.allows_cloud(Cloud::Gcp) && !a.placement.allows_cloud(Cloud::Azure));
        assert_eq!(a.placement.max_price_per_gpu_hour, Some(Price::parse_decimal("4.5").unwrap()));
        assert_eq!(a.scaling.keep_alive, KeepAlive::For(Duration::from_secs(300)));
        assert_eq!(a.scaling.scaling_delay, Duration::from_secs(30));
        let b = &s.apps[1];
        assert_eq!(b.scaling, ScalingSpec::default());
        assert_eq!(b.placement.spot, SpotPolicy::Auto);
    }

    #[test]
    fn an_app_model_is_an_origin_and_a_digest_each_checked() {
        let d = crate::artifact::Digest::of(b"m");
        let ok = format!("[apps.a]\ngpu = \"H100\"\n[apps.a.model]\nsource = \"s3://models/a\"\ndigest = \"{d}\"\n");
        let s = FleetSpec::parse("f.toml", &ok).unwrap();
        let m = s.apps[0].model.as_ref().unwrap();
        assert_eq!(m.digest, d);
        assert_eq!(m.origin.to_string(), "s3://models/a");
        let e = errors("[apps.a]\ngpu = \"H100\"\n[apps.a.model]\nsource = \"ftp://x\"\ndigest = \"abc\"\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("f.toml:4:10: apps.a.model.source: model origin `ftp://x`"), "{e:?}");
        assert!(e[1].starts_with("f.toml:5:10: apps.a.model.digest: `abc` is not a digest"), "{e:?}");
        let e = errors("[apps.a]\ngpu = \"H100\"\n[apps.a.model]\nsource = \"s3://models/a\"\n");
        assert!(e[0].contains("digest"), "{e:?}");
    }

    fn errors(text: &str) -> Vec<String> {
        FleetSpec::parse("f.toml", text).unwrap_err().0.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn unknown_gpu_names_position_field_and_suggestion() {
        let e = errors("[apps.a]\ngpu = \"H10O\"\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("f.toml:2:7: apps.a.gpu: unknown GPU 'H10O' (did you mean 'H100'?)"), "{e:?}");
    }

    #[test]
    fn all_errors_are_reported_at_once() {
        let text = r#"
[apps.a]
gpu = ["H100-SMX"]
[apps.a.placement]
clouds = ["aws", "lamda"]
deny_clouds = ["aws"]
spot = "spto"
max_price_per_gpu_hour = 4.5
[apps.a.scaling]
min_concurrency = 5
max_concurrency = 2
keep_alive = "5 minutes"
"#;
        let e = errors(text);
        let want = [
            "f.toml:3:8: apps.a.gpu: unknown GPU 'H100-SMX' (did you mean 'H100-SXM'?)",
            "f.toml:5:18: apps.a.placement.clouds: unknown cloud 'lamda' (did you mean 'lambda'?)",
            "f.toml:6:16: apps.a.placement.deny_clouds: aws is both allowed and denied",
            "f.toml:7:8: apps.a.placement.spot: unknown spot policy \"spto\" (did you mean \"spot\"?)",
            "f.toml:8:26: apps.a.placement.max_price_per_gpu_hour: 4.5 is a float; write money as a string",
            "f.toml:10:19: apps.a.scaling.min_concurrency: 5 is above max_concurrency 2",
            "f.toml:12:14: apps.a.scaling.keep_alive: expected a duration",
        ];
        assert_eq!(e.len(), want.len(), "{e:#?}");
        for (got, want) in e.iter().zip(want) {
            assert!(got.starts_with(want), "{got}\n  does not start with\n{want}");
        }
        let all = FleetSpec::parse("f.toml", text).unwrap_err().to_string();
        assert!(all.starts_with("f.toml has 7 errors; nothing was applied\n  f.toml:3:8"), "{all}");
    }

    #[test]
    fn a_region_no_cloud_sells_is_refused_with_a_suggestion() {
        let text = "[apps.a]\ngpu = \"H100\"\n[apps.a.placement]\nregions = [\"us-est-1\", \"us-*\", \"mars-*\", \"europe-west4\"]\n";
        let e: Vec<String> = FleetSpec::parse("f.toml", text).unwrap_err().0.iter().map(|e| e.to_string()).collect();
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(e[0].contains("'us-est-1' matches no region of any cloud (did you mean 'us-east-1'?)"), "{e:#?}");
        assert!(e[1].contains("'mars-*' matches no region of any cloud"), "{e:#?}");
    }

    #[test]
    fn unknown_fields_do_not_hide_the_other_problems() {
        // Two unknown keys (one with a non-ASCII value), an unknown table with keys of its own,
        // and two value errors: every one is listed, at its own line.
        let text = "[fleet]\nname = \"t\"\n[apps.llm]\ngpu = \"H1000\"\ncolour = \"rouge é\"\n\
                    [apps.llm.scalingg]\nmax = 3\nmin = 1\n[apps.llm.scaling]\nmax_concurrency = 2\n\
                    min_concurrency = 5\nkeepalive = \"5m\"\n";
        let e: Vec<String> = FleetSpec::parse("f.toml", text).unwrap_err().0.iter().map(|e| e.to_string()).collect();
        let want = [
            "f.toml:4:7: apps.llm.gpu: unknown GPU 'H1000'",
            "f.toml:5:1: unknown field `colour`",
            "f.toml:6:11: unknown field `scalingg`",
            "f.toml:11:19: apps.llm.scaling.min_concurrency: 5 is above max_concurrency 2",
            "f.toml:12:1: unknown field `keepalive`",
        ];
        let mut got = e.clone();
        got.sort_by_key(|l| {
            let mut p = l.split(':').skip(1).take(2).map(|n| n.parse::<u32>().unwrap_or(0));
            (p.next(), p.next())
        });
        assert_eq!(got.len(), want.len(), "{e:#?}");
        for (g, w) in got.iter().zip(want) {
            assert!(g.starts_with(w), "{g}\n  does not start with\n{w}\nall: {e:#?}");
        }
    }

    #[test]
    fn syntax_and_unknown_fields() {
        let e = errors("[apps.a]\ngpu = \"H100\"\ngpuz = 8\n");
        assert!(e[0].starts_with("f.toml:3:1: unknown field `gpuz`"), "{e:?}");
        let e = errors("[apps.a\ngpu = 1\n");
        assert!(e[0].starts_with("f.toml:1:"), "{e:?}");
        let e = errors("[fleet]\nname = \"x\"\n");
        assert!(e[0].contains("apps: the spec has no apps"), "{e:?}");
        let e = errors("[apps.a]\ngpus = 8\n");
        assert!(e[0].starts_with("f.toml:1:1: apps.a.gpu: missing"), "{e:?}");
        let e = errors("[apps.A_b]\ngpu = \"H100\"\n");
        assert!(e[0].contains("try \"a-b\""), "{e:?}");
        let e = errors("[apps.a]\ngpu = \"H100\"\ngpus = 0\n[budget]\nmax_per_hour = \"-5\"\n");
        assert!(e[0].contains("apps.a.gpus: 0 is out of range; use 1 to 16"), "{e:?}");
        assert!(e[1].contains("budget.max_per_hour: must be more than zero"), "{e:?}");
    }

    #[test]
    fn gpu_names_written_any_way_never_panic_the_checker() {
        for v in [
            r#"['é', "H100"]"#,
            r#"["\u00e9x", "H100"]"#,
            r#"["ÄÖ", "é", 'ü']"#,
            r#"['H100', "é"]"#,
            r#"["H100", 'é', "Ä100"]"#,
            // An escaped quote before a non-ASCII letter: the search for the element's text
            // used to resume inside the letter and panic.
            r#"["\"é", "x"]"#,
        ] {
            let text = format!("[apps.a]\ngpu = {v}\n");
            let e = FleetSpec::parse("f.toml", &text).unwrap_err().to_string();
            assert!(e.contains("apps.a.gpu"), "{v}: {e}");
        }
        // A literal string that is a GPU name is fine.
        let ok = FleetSpec::parse("f.toml", "[apps.a]\ngpu = ['H100', \"A100\"]\n").unwrap();
        assert_eq!(ok.apps[0].gpu.models.len(), 2);
    }

    #[test]
    fn predict_is_off_unless_asked_for_and_must_be_a_boolean() {
        let parse = |v: &str| {
            let text = format!("[apps.a]\ngpu = \"H100\"\n[apps.a.scaling]\n{v}\n");
            FleetSpec::parse("f.toml", &text).map(|s| s.apps[0].scaling.predict)
        };
        assert!(!parse("").unwrap());
        assert!(parse("predict = true").unwrap());
        let e = parse("predict = \"yes\"").unwrap_err().to_string();
        assert!(e.contains("f.toml:4:11: apps.a.scaling.predict: expected true or false"), "{e}");
        let text = "[apps.a]\ngpu = \"H100\"\n[apps.a.scaling]\nconsolidation = false\n";
        assert!(!FleetSpec::parse("f.toml", text).unwrap().apps[0].scaling.consolidation);
        assert!(FleetSpec::parse("f.toml", "[apps.a]\ngpu = \"H100\"\n").unwrap().apps[0].scaling.consolidation);
    }

    #[test]
    fn keep_alive_is_a_duration_or_auto() {
        let parse = |v: &str| {
            let text = format!("[apps.a]\ngpu = \"H100\"\n[apps.a.scaling]\nkeep_alive = {v}\n");
            FleetSpec::parse("f.toml", &text).map(|s| s.apps[0].scaling.keep_alive)
        };
        assert_eq!(parse("\"auto\"").unwrap(), KeepAlive::Auto);
        assert_eq!(parse("\"90s\"").unwrap(), KeepAlive::For(Duration::from_secs(90)));
        assert_eq!(parse("30").unwrap(), KeepAlive::For(Duration::from_secs(30)));
        let e = parse("\"automatic\"").unwrap_err().to_string();
        assert!(e.contains("apps.a.scaling.keep_alive: expected a duration"), "{e}");
        assert_eq!(parse("\"30d\"").unwrap(), KeepAlive::For(Duration::from_secs(30 * 86_400)));
        let e = parse("\"31d\"").unwrap_err().to_string();
        assert!(e.contains("apps.a.scaling.keep_alive: is out of range; use 0s to 30d"), "{e}");
        let text = "[apps.a]\ngpu = \"H100\"\n[apps.a.scaling]\nscaling_delay = \"18446744073709551615s\"\n";
        let e = FleetSpec::parse("f.toml", text).unwrap_err().to_string();
        assert!(e.contains("apps.a.scaling.scaling_delay: is out of range; use 0s to 30d"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5 m"), None);
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_duration("5x"), None);
    }
}
