use std::time::Duration;

use chrono::TimeZone;
use fleet_core::spec::FleetSpec;
use fleet_core::{Availability, InstanceType, Source};
use proptest::prelude::*;

use super::*;

pub(crate) fn t0() -> Time {
    chrono::Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn off(
    cloud: Cloud,
    region: &str,
    zone: Option<&str>,
    name: &str,
    gpu: GpuModel,
    count: u32,
    capacity: CapacityType,
    price: &str,
) -> Offering {
    Offering {
        cloud,
        region: region.into(),
        zone: zone.map(Into::into),
        instance: InstanceType {
            name: name.into(),
            gpu,
            gpu_count: count,
            vcpus: 16 * count,
            memory_gib: 100 * count,
            interconnect: None,
        },
        capacity,
        price: Price::parse_decimal(price).unwrap(),
        source: Source { name: "test".into(), as_of: t0().date_naive() },
        availability: Availability::Unknown,
    }
}

pub(crate) fn spec(text: &str) -> FleetSpec {
    FleetSpec::parse("test.toml", text).unwrap_or_else(|e| panic!("{e}"))
}

fn small_catalog() -> Arc<Catalog> {
    use CapacityType::*;
    use GpuModel::*;
    Arc::new(Catalog::new(vec![
        off(Cloud::Aws, "us-east-1", Some("use1-az1"), "p5.48xlarge", H100Sxm, 8, OnDemand, "98.32"),
        off(Cloud::Aws, "us-east-1", Some("use1-az1"), "p5.48xlarge", H100Sxm, 8, Spot, "30"),
        off(Cloud::Aws, "us-east-1", Some("use1-az2"), "p5.48xlarge", H100Sxm, 8, Spot, "31"),
        off(Cloud::Gcp, "us-central1", Some("us-central1-a"), "a3-highgpu-8g", H100Sxm, 8, OnDemand, "43.06615"),
        off(Cloud::Lambda, "us-east-1", None, "gpu_8x_h100_sxm5", H100Sxm, 8, OnDemand, "23.92"),
        off(Cloud::Lambda, "europe-central-1", None, "gpu_8x_h100_sxm5", H100Sxm, 8, OnDemand, "23.92"),
        off(Cloud::Runpod, "ca", Some("ca-mtl-1"), "1x_H100_SECURE", H100Pcie, 1, OnDemand, "2.39"),
        off(Cloud::Vast, "texas-us-na", None, "8x-A100", A100_40GB, 8, OnDemand, "6.00"),
        off(Cloud::Azure, "eastus", None, "Standard_ND96isr_H100_v5", H100Sxm, 8, Reserved, "60"),
    ]))
}

const APP: &str = r#"
[apps.llm]
gpu = "H100"
gpus = 8
[apps.llm.placement]
deny_regions = ["europe-*"]
max_price_per_gpu_hour = "10"
"#;

fn names(index: &PlacementIndex, v: &[Candidate]) -> Vec<String> {
    v.iter().map(|c| index.offering(c.offering).key().to_string()).collect()
}

#[test]
fn ranks_cheapest_effective_gpu_price_first_with_reasons_for_the_rest() {
    let index = PlacementIndex::new(small_catalog(), &spec(APP));
    let cache = UnavailableCache::default();
    let e = index.explain(0, &RankInput::new(t0(), &cache));
    assert_eq!(
        names(&index, &e.ranked),
        [
            "lambda/us-east-1/gpu_8x_h100_sxm5/on-demand",
            "aws/us-east-1/use1-az1/p5.48xlarge/spot",
            "aws/us-east-1/use1-az2/p5.48xlarge/spot",
            "gcp/us-central1/us-central1-a/a3-highgpu-8g/on-demand",
        ]
    );
    assert_eq!(e.ranked[0].effective_gpu_price, Price::parse_decimal("2.99").unwrap());
    let reason = |name: &str, cap: CapacityType| {
        e.excluded
            .iter()
            .find(|(id, _)| index.offering(*id).instance.name == name && index.offering(*id).capacity == cap)
            .map(|(_, r)| r.to_string())
            .unwrap()
    };
    assert_eq!(reason("p5.48xlarge", CapacityType::OnDemand), "$12.29/h per GPU is above the cap $10.00/h");
    assert_eq!(reason("1x_H100_SECURE", CapacityType::OnDemand), "too small: 1 GPUs, a runner needs 8");
    assert_eq!(reason("8x-A100", CapacityType::OnDemand), "GPU A100-40GB not wanted");
    assert_eq!(reason("Standard_ND96isr_H100_v5", CapacityType::Reserved), "reserved capacity is not bought by fleet");
    assert!(reason("gpu_8x_h100_sxm5", CapacityType::OnDemand).contains("region europe-central-1 not allowed"));
    assert_eq!(e.ranked.len() + e.excluded.len(), index.catalog().len());
}

#[test]
fn effective_price_counts_only_the_gpus_runners_use() {
    let s = spec("[apps.a]\ngpu = \"H100\"\ngpus = 3\n");
    let index = PlacementIndex::new(small_catalog(), &s);
    let cache = UnavailableCache::default();
    let lambda = index
        .rank(0, &RankInput::new(t0(), &cache), 10)
        .into_iter()
        .find(|c| c.node_price == Price::parse_decimal("23.92").unwrap())
        .unwrap();
    assert_eq!(lambda.runners_per_node, 2);
    assert_eq!(lambda.effective_gpu_price, Price::parse_decimal("23.92").unwrap().per_gpu(6));
}

#[test]
fn recently_failed_offerings_are_skipped_by_zone_region_and_capacity_type() {
    let index = PlacementIndex::new(small_catalog(), &spec(APP));
    let mut cache = UnavailableCache::default();
    let key = |zone: Option<&str>, cap| OfferingKey {
        cloud: Cloud::Aws,
        region: "us-east-1".into(),
        zone: zone.map(Into::into),
        instance_type: "p5.48xlarge".into(),
        capacity: cap,
    };
    cache.mark(
        key(Some("use1-az1"), CapacityType::Spot),
        UnavailableReason::InsufficientCapacity,
        t0(),
        Duration::from_secs(300),
    );
    let input = RankInput::new(t0(), &cache);
    let ranked = names(&index, &index.rank(0, &input, 10));
    assert!(!ranked.contains(&"aws/us-east-1/use1-az1/p5.48xlarge/spot".to_string()));
    assert!(ranked.contains(&"aws/us-east-1/use1-az2/p5.48xlarge/spot".to_string()));
    // A region-wide spot quota refusal blocks every zone's spot, and never on-demand (karpenter-aws #5789).
    cache.mark(key(None, CapacityType::Spot), UnavailableReason::QuotaExceeded, t0(), Duration::from_secs(300));
    let e = index.explain(0, &RankInput::new(t0(), &cache));
    assert!(names(&index, &e.ranked).iter().all(|n| !n.starts_with("aws/")));
    let aws_od = e
        .excluded
        .iter()
        .find(|(id, _)| index.offering(*id).key().to_string() == "aws/us-east-1/use1-az1/p5.48xlarge/on-demand");
    assert!(matches!(aws_od, Some((_, Reason::AbovePriceCap { .. }))), "{aws_od:?}");
    // Entries expire.
    let later = t0() + chrono::Duration::seconds(301);
    assert_eq!(index.rank(0, &RankInput::new(later, &cache), 10).len(), 4);
    cache.expire(later);
    assert!(cache.is_empty());
}

#[test]
fn quotas_budget_and_capacity_type_exclude_with_reasons() {
    let s = spec(&format!("{APP}\n[[quotas]]\ncloud = \"lambda\"\nmax_gpus = 8\n"));
    let index = PlacementIndex::new(small_catalog(), &s);
    let cache = UnavailableCache::default();
    let lambda_id = index.rank(0, &RankInput::new(t0(), &cache), 1)[0].offering;
    let used = index.quota_usage([lambda_id]);
    assert_eq!(used, [8]);
    let input = RankInput { quota_used: &used, ..RankInput::new(t0(), &cache) };
    let e = index.explain(0, &input);
    assert!(e.excluded.iter().any(|(_, r)| r.to_string() == "quota lambda full: 8 of 8 GPUs used, 8 more needed"));
    let cap = BudgetCap::FleetHourly { cap: Money::from_dollars(35) };
    let input = RankInput {
        max_node_price: Some(Money::from_dollars(31)),
        budget_cap: Some(&cap),
        ..RankInput::new(t0(), &cache)
    };
    let e = index.explain(0, &input);
    assert_eq!(
        names(&index, &e.ranked),
        [
            "lambda/us-east-1/gpu_8x_h100_sxm5/on-demand",
            "aws/us-east-1/use1-az1/p5.48xlarge/spot",
            "aws/us-east-1/use1-az2/p5.48xlarge/spot"
        ]
    );
    assert!(e.excluded.iter().any(|(_, r)| r.to_string() == "$43.06615/h exceeds the budget room of $31.00/h (fleet budget $35.00/hour)"));
    let input = RankInput { capacity: CapacityWanted::Spot, ..RankInput::new(t0(), &cache) };
    assert!(index.rank(0, &input, 10).iter().all(|c| c.capacity == CapacityType::Spot));
}

#[test]
fn on_demand_policy_never_ranks_spot() {
    let s = spec("[apps.a]\ngpu = \"H100-SXM\"\ngpus = 8\n[apps.a.placement]\nspot = \"on-demand\"\n");
    let index = PlacementIndex::new(small_catalog(), &s);
    let cache = UnavailableCache::default();
    let e = index.explain(0, &RankInput::new(t0(), &cache));
    assert!(e.ranked.iter().all(|c| c.capacity == CapacityType::OnDemand));
    assert_eq!(e.excluded.iter().filter(|(_, r)| *r == Reason::SpotNotAllowed).count(), 2);
}

// --- The real catalogs ----------------------------------------------------------------------

fn shared_catalog() -> Option<Arc<Catalog>> {
    let dir = fleet_core::catalog::shared_data_dir()?.join("catalogs");
    let (c, _) = Catalog::load(&[dir], chrono::NaiveDate::from_ymd_opt(2026, 11, 25)).unwrap();
    Some(Arc::new(c))
}

#[test]
fn cheapest_8x_h100_on_demand_across_all_clouds_and_without_aws_gcp() {
    let Some(catalog) = shared_catalog() else { return };
    let all = spec("[apps.a]\ngpu = \"H100\"\ngpus = 8\n[apps.a.placement]\nspot = \"on-demand\"\n");
    let index = PlacementIndex::new(catalog.clone(), &all);
    let cache = UnavailableCache::default();
    let best = index.rank(0, &RankInput::new(t0(), &cache), 1)[0];
    let o = index.offering(best.offering);
    // Cross-check against the catalog's own query, an independent path.
    let q = fleet_core::Query {
        gpu: "H100".parse().ok(),
        min_gpus: Some(8),
        capacity: Some(CapacityType::OnDemand),
        ..Default::default()
    };
    let by_query = catalog.query(&q)[0];
    assert_eq!(o.price_per_gpu(), by_query.price_per_gpu());
    assert_eq!(o.key().to_string(), "hyperstack/canada-1/n3-H100x8/on-demand");
    assert_eq!(best.effective_gpu_price, Price::parse_decimal("1.90").unwrap());

    let no_big = spec(
        "[apps.a]\ngpu = \"H100\"\ngpus = 8\n[apps.a.placement]\nspot = \"on-demand\"\ndeny_clouds = [\"aws\", \"gcp\"]\n",
    );
    let index = PlacementIndex::new(catalog.clone(), &no_big);
    let e = index.explain(0, &RankInput::new(t0(), &cache));
    assert!(e.ranked.iter().all(|c| !matches!(index.offering(c.offering).cloud, Cloud::Aws | Cloud::Gcp)));
    assert!(e.excluded.iter().any(|(_, r)| *r == Reason::CloudNotAllowed { cloud: Cloud::Aws }));
    assert!(e.excluded.iter().any(|(_, r)| *r == Reason::CloudNotAllowed { cloud: Cloud::Gcp }));
    // Only hyperscalers and SXM: the cheapest is GCP's a3 in us-central1 (a3-edgegpu-8g and
    // a3-highgpu-8g cost the same; the tie goes to the name that sorts first).
    let big = spec(
        "[apps.a]\ngpu = \"H100-SXM\"\ngpus = 8\n[apps.a.placement]\nspot = \"on-demand\"\nclouds = [\"aws\", \"gcp\", \"azure\"]\n",
    );
    let index = PlacementIndex::new(catalog, &big);
    let best = index.offering(index.rank(0, &RankInput::new(t0(), &cache), 1)[0].offering);
    assert_eq!(
        (best.cloud, best.region.as_str(), best.instance.name.as_str()),
        (Cloud::Gcp, "us-central1", "a3-edgegpu-8g")
    );
    assert_eq!(best.price, Price::parse_decimal("43.06615").unwrap());
}

// --- Properties -----------------------------------------------------------------------------

const CLOUDS: [Cloud; 4] = [Cloud::Aws, Cloud::Gcp, Cloud::Lambda, Cloud::Runpod];
const REGIONS: [&str; 3] = ["us-east-1", "us-west-2", "eu-west-1"];

prop_compose! {
    pub(crate) fn arb_offering()(
        c in 0usize..4, r in 0usize..3, z in proptest::option::of(0u8..2), g in 0usize..5, n in 0usize..4,
        spot in any::<bool>(), micros in 100_000i64..120_000_000, t in 0u8..2,
    ) -> Offering {
        let count = [1, 2, 4, 8][n];
        let cap = if spot { CapacityType::Spot } else { CapacityType::OnDemand };
        let price = fleet_core::Money::from_micros(micros).to_decimal_string();
        off(CLOUDS[c], REGIONS[r], z.map(|z| if z == 0 { "a" } else { "b" }), &format!("t{t}-{count}"), GpuModel::ALL[g], count, cap, &price)
    }
}

fn arb_spec() -> impl Strategy<Value = FleetSpec> {
    (
        proptest::sample::subsequence(CLOUDS.to_vec(), 0..=4),
        proptest::sample::subsequence(CLOUDS.to_vec(), 0..=2),
        prop_oneof![Just("H100"), Just("A100"), Just("H100-SXM"), Just("A100-80GB")],
        1u32..4,
        proptest::option::of(1u32..20),
        prop_oneof![Just("auto"), Just("spot"), Just("on-demand")],
        proptest::option::of(prop_oneof![Just("us-*"), Just("eu-west-1")]),
    )
        .prop_map(|(allow, deny, gpu, count, cap, spot, region)| {
            let allow: Vec<Cloud> = allow.into_iter().filter(|c| !deny.contains(c)).collect();
            let list = |v: &[Cloud]| v.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
            let mut t = format!("[apps.a]\ngpu = \"{gpu}\"\ngpus = {count}\n[apps.a.placement]\nspot = \"{spot}\"\n");
            if !allow.is_empty() {
                t += &format!("clouds = [{}]\n", list(&allow));
            }
            t += &format!("deny_clouds = [{}]\n", list(&deny));
            if let Some(c) = cap {
                t += &format!("max_price_per_gpu_hour = \"{c}\"\n");
            }
            if let Some(r) = region {
                t += &format!("regions = [\"{r}\"]\n");
            }
            t += "[[quotas]]\ncloud = \"aws\"\nmax_gpus = 16\n";
            spec(&t)
        })
}

/// Independent statement of "this offering may be used now", written from the spec, not the index.
fn feasible(s: &FleetSpec, o: &Offering, cache: &UnavailableCache, aws_used: u32, room: Option<Money>) -> bool {
    let a = &s.apps[0];
    let p = &a.placement;
    a.gpu.models.iter().any(|m| m.matches(o.instance.gpu))
        && (p.clouds.is_empty() || p.clouds.contains(&o.cloud))
        && !p.deny_clouds.contains(&o.cloud)
        && (p.regions.is_empty() || p.regions.iter().any(|r| fleet_core::spec::region_matches(r, &o.region)))
        && !(o.capacity == CapacityType::Spot && p.spot == SpotPolicy::OnDemand)
        && o.instance.gpu_count >= a.gpu.count
        && p.max_price_per_gpu_hour
            .is_none_or(|cap| o.price.per_gpu((o.instance.gpu_count / a.gpu.count) * a.gpu.count) <= cap)
        && cache.entries().all(|e| {
            !(e.key.cloud == o.cloud
                && e.key.region == o.region
                && e.key.instance_type == o.instance.name
                && e.key.capacity == o.capacity
                && (e.key.zone.is_none() || e.key.zone == o.zone))
        })
        && (o.cloud != Cloud::Aws || aws_used + o.instance.gpu_count <= 16)
        && room.is_none_or(|r| o.price.hourly() <= r)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn ranking_is_exactly_the_feasible_set_cheapest_first_and_deterministic(
        offerings in proptest::collection::vec(arb_offering(), 0..40),
        s in arb_spec(),
        failed in proptest::collection::vec((0usize..40, any::<bool>()), 0..6),
        aws_used in 0u32..20,
        room in proptest::option::of(0i64..100_000_000),
    ) {
        let mut cache = UnavailableCache::default();
        for (i, region_wide) in failed {
            if let Some(o) = offerings.get(i) {
                let mut k = o.key();
                if region_wide { k.zone = None; }
                cache.mark(k, UnavailableReason::InsufficientCapacity, t0(), Duration::from_secs(60));
            }
        }
        let catalog = Arc::new(Catalog::new(offerings.clone()));
        let index = PlacementIndex::new(catalog, &s);
        let used = [aws_used];
        let room = room.map(Money::from_micros);
        let input = RankInput { quota_used: &used, max_node_price: room, ..RankInput::new(t0(), &cache) };
        let ranked = index.rank(0, &input, usize::MAX);
        let want: usize = offerings.iter().filter(|o| feasible(&s, o, &cache, aws_used, room)).count();
        // Never an excluded or unavailable offering, and never none while one is feasible.
        prop_assert_eq!(ranked.len(), want);
        for c in &ranked {
            prop_assert!(feasible(&s, index.offering(c.offering), &cache, aws_used, room));
        }
        // Cheapest effective $/GPU-hour first.
        for w in ranked.windows(2) {
            prop_assert!(w[0].effective_gpu_price <= w[1].effective_gpu_price);
        }
        // rank, best and explain agree.
        prop_assert_eq!(index.best(0, &input), ranked.first().copied());
        prop_assert_eq!(&index.explain(0, &input).ranked, &ranked);
        prop_assert_eq!(index.rank(0, &input, 3), ranked.iter().take(3).copied().collect::<Vec<_>>());
        // The same offerings in another order rank the same way.
        let mut rev = offerings.clone();
        rev.reverse();
        let index2 = PlacementIndex::new(Arc::new(Catalog::new(rev)), &s);
        let keys = |ix: &PlacementIndex, v: &[Candidate]| v.iter().map(|c| (ix.offering(c.offering).key(), ix.offering(c.offering).price)).collect::<Vec<_>>();
        prop_assert_eq!(keys(&index, &ranked), keys(&index2, &index2.rank(0, &input, usize::MAX)));
    }
}
