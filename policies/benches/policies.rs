//! Placement and autoscaling throughput.
//!
//!   cargo bench -p fleet-policies --bench policies
//!
//! Placement runs over the full imported catalogs (../shared/data/catalogs, all clouds) when
//! present, else over the built-in catalog (the same rows, normalised).

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fleet_core::spec::{FleetSpec, KeepAlive, ScalingSpec};
use fleet_core::{Catalog, Price};
use fleet_policies::autoscale::{self, RunnerInfo};
use fleet_policies::placement::{PlacementIndex, RankInput, UnavailableCache, UnavailableReason};

fn catalog() -> Arc<Catalog> {
    match fleet_core::catalog::shared_data_dir() {
        Some(d) => {
            let (c, _) = Catalog::load(&[d.join("catalogs")], None).expect("shared catalogs load");
            eprintln!("placement bench: {} offerings from the shared catalogs", c.len());
            Arc::new(c)
        }
        None => {
            eprintln!("placement bench: shared catalogs absent; using the built-in catalog");
            Arc::new(Catalog::builtin().clone())
        }
    }
}

const SPEC: &str = r#"
[[quotas]]
cloud = "aws"
max_gpus = 256
[[quotas]]
cloud = "gcp"
region = "us-central1"
max_gpus = 64

[apps.llm]
gpu = ["H100", "A100-80GB"]
gpus = 8
[apps.llm.placement]
deny_clouds = ["vast"]
max_price_per_gpu_hour = "8"
"#;

fn placement(c: &mut Criterion) {
    let catalog = catalog();
    let spec = FleetSpec::parse("bench.toml", SPEC).unwrap();
    let now = chrono::Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
    let index = PlacementIndex::new(catalog.clone(), &spec);
    // The 20 cheapest candidates recently failed: every decision has to walk past them.
    let mut cache = UnavailableCache::default();
    for cand in index.rank(0, &RankInput::new(now, &cache), 20) {
        cache.mark(
            index.offering(cand.offering).key(),
            UnavailableReason::InsufficientCapacity,
            now,
            Duration::from_secs(600),
        );
    }
    let used = index.quota_usage([]);
    let input = RankInput { quota_used: &used, ..RankInput::new(now, &cache) };
    assert_eq!(index.rank(0, &input, 16).len(), 16);

    let no_failures = UnavailableCache::default();
    let clean = RankInput { quota_used: &used, ..RankInput::new(now, &no_failures) };

    let mut g = c.benchmark_group("placement");
    g.throughput(Throughput::Elements(1));
    g.bench_function("ranked_failover_list_16_no_recent_failures", |b| {
        b.iter(|| std::hint::black_box(index.rank(0, std::hint::black_box(&clean), 16)))
    });
    g.bench_function("best_offering", |b| b.iter(|| std::hint::black_box(index.best(0, std::hint::black_box(&input)))));
    g.bench_function("ranked_failover_list_16", |b| {
        b.iter(|| std::hint::black_box(index.rank(0, std::hint::black_box(&input), 16)))
    });
    g.sample_size(10);
    g.bench_function("build_index_per_catalog_version", |b| b.iter(|| PlacementIndex::new(catalog.clone(), &spec)));
    g.finish();
}

fn autoscaling(c: &mut Criterion) {
    let now = chrono::Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
    let spec = ScalingSpec {
        min_concurrency: 1,
        max_concurrency: 50,
        concurrency_buffer: 1,
        concurrency_buffer_perc: 20,
        max_multiplexing: 4,
        keep_alive: KeepAlive::For(Duration::from_secs(300)),
        scaling_delay: Duration::from_secs(30),
        predict: false,
        consolidation: true,
        keep_min_over_budget: false,
    };
    // 1,000 apps, each with 0-19 runners in mixed states and its own demand.
    let apps: Vec<(u32, u32, Vec<RunnerInfo>)> = (0..1000u32)
        .map(|a| {
            let runners = (0..(a % 20))
                .map(|r| RunnerInfo {
                    id: u64::from(a) * 100 + u64::from(r),
                    ready: r % 5 != 0,
                    in_flight: if r % 3 == 0 { 0 } else { r % 4 },
                    idle_since: (r % 3 == 0).then(|| now - chrono::Duration::seconds(i64::from(r * 37))),
                    slot_price: Price::per_hour(fleet_core::Money::from_micros(i64::from(1_000_000 + r * 10_000))),
                    paid_until: None,
                    work_milli: 0,
                })
                .collect();
            ((a * 7) % 90, (a * 3) % 40, runners)
        })
        .collect();
    let mut g = c.benchmark_group("autoscale");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("decide_1000_apps", |b| {
        b.iter(|| {
            for (queued, in_flight, runners) in &apps {
                std::hint::black_box(autoscale::decide(&spec, *queued, *in_flight, None, runners, now));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, placement, autoscaling);
criterion_main!(benches);
