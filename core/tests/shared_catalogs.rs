//! The importer against the real SkyPilot catalogs in `../shared/data/catalogs/` (see its SOURCE.md).
//! Skips, saying so, when that folder is absent (set FLEET_SHARED_DATA to the data folder).

use std::collections::BTreeSet;
use std::path::PathBuf;

use chrono::NaiveDate;
use fleet_core::catalog::NoteKind;
use fleet_core::{CapacityType, Catalog, Cloud, GpuModel, Money, Offering, Price, Query};

fn catalogs_dir() -> Option<PathBuf> {
    fleet_core::catalog::shared_data_dir().map(|d| d.join("catalogs"))
}

fn as_of() -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(2026, 11, 25)
}

fn load(file: &str) -> Option<Vec<Offering>> {
    let dir = catalogs_dir()?;
    let (c, _) = Catalog::load(&[dir.join(file)], as_of()).unwrap_or_else(|e| panic!("{file}: {e}"));
    Some(c.offerings().to_vec())
}

fn price(s: &str) -> Price {
    Price::parse_decimal(s).unwrap()
}

fn find<'a>(v: &'a [Offering], instance: &str, zone_or_region: &str, cap: CapacityType) -> &'a Offering {
    v.iter()
        .find(|o| {
            o.instance.name == instance
                && o.capacity == cap
                && (o.zone.as_deref() == Some(zone_or_region) || o.region == zone_or_region)
        })
        .unwrap_or_else(|| panic!("no {instance} {cap} offering in {zone_or_region}"))
}

fn gpu_of(v: &[Offering], name: &str) -> GpuModel {
    v.iter().find(|o| o.instance.name == name).unwrap_or_else(|| panic!("no {name}")).instance.gpu
}

#[test]
fn every_catalog_file_imports() {
    let Some(dir) = catalogs_dir() else { return };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut clouds = BTreeSet::new();
    let mut checked = 0;
    for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "csv")) {
        let name = f.file_name().unwrap().to_str().unwrap();
        if matches!(name, "accelerators.csv" | "gpu_metadata.csv") {
            let e = Catalog::load(std::slice::from_ref(f), as_of()).unwrap_err();
            assert!(e.to_string().contains("not a catalog"), "{name}: {e}");
            continue;
        }
        let (c, _) = Catalog::load(std::slice::from_ref(f), as_of()).unwrap_or_else(|e| panic!("{e}"));
        assert!(!c.is_empty(), "{name} imported no offerings");
        clouds.extend(c.clouds());
        checked += 1;
    }
    assert_eq!(checked, 16);
    assert_eq!(clouds.len(), 15, "{clouds:?}");
    // The whole folder at once: the two non-catalog files are skipped with a note.
    let (all, notes) = Catalog::load(&[dir], as_of()).unwrap();
    assert!(all.len() > 1500, "{}", all.len());
    assert_eq!(notes.iter().filter(|n| n.message.contains("not a catalog")).count(), 2);
}

#[test]
fn gcp_price_is_host_plus_gpus() {
    let Some(v) = load("gcp.csv") else { return };
    let od = find(&v, "a3-highgpu-8g", "us-east4-a", CapacityType::OnDemand);
    assert_eq!((od.instance.gpu, od.instance.gpu_count), (GpuModel::H100Sxm, 8));
    assert_eq!(od.price, price("9.46006") + price("78.37241"));
    assert_eq!(od.price, price("87.83247"));
    assert_eq!((od.instance.vcpus, od.instance.memory_gib), (208, 1872));
    let spot = find(&v, "a3-highgpu-8g", "us-east4-a", CapacityType::Spot);
    assert_eq!(spot.price, price("2.15966") + price("17.8848"));
    let mega = find(&v, "a3-megagpu-8g", "us-east4-a", CapacityType::OnDemand);
    assert_eq!((mega.instance.gpu, mega.instance.gpu_count), (GpuModel::H100Sxm, 8));
    let a2 = v.iter().find(|o| o.instance.name == "a2-megagpu-16g").unwrap();
    assert_eq!((a2.instance.gpu, a2.instance.gpu_count), (GpuModel::A100_40GB, 16));
    assert_eq!(gpu_of(&v, "a2-ultragpu-8g"), GpuModel::A100_80GB);
    // No GCP offering is a host-only price (the host alone is about $9.5/h; with 8 H100s, $43–112/h).
    let a3: Vec<&Offering> =
        v.iter().filter(|o| o.instance.name == "a3-highgpu-8g" && o.capacity == CapacityType::OnDemand).collect();
    assert!(a3.len() > 10);
    assert!(a3.iter().all(|o| o.price > price("40")), "{a3:?}");
}

#[test]
fn azure_nd_h100_v5_has_8_gpus_not_12() {
    let Some(dir) = catalogs_dir() else { return };
    let (c, notes) = Catalog::load(&[dir.join("azure.csv")], as_of()).unwrap();
    let nd: Vec<&Offering> = c.offerings().iter().filter(|o| o.instance.name == "Standard_ND96isr_H100_v5").collect();
    assert!(!nd.is_empty());
    for o in &nd {
        assert_eq!((o.instance.gpu, o.instance.gpu_count), (GpuModel::H100Sxm, 8));
        // Azure's H100 rows repeat the on-demand price as SpotPrice: that is no spot offer.
        assert_eq!(o.capacity, CapacityType::OnDemand);
    }
    assert_eq!(notes.iter().filter(|n| n.kind == NoteKind::Corrected).count(), nd.len());
    assert_eq!(gpu_of(c.offerings(), "Standard_NC40ads_H100_v5"), GpuModel::H100Nvl);
    // The confidential-computing size has empty accelerator columns; its known shape fills them.
    assert_eq!(gpu_of(c.offerings(), "Standard_NCC40ads_H100_v5"), GpuModel::H100Nvl);
}

#[test]
fn marketplace_memory_is_per_machine() {
    let Some(v) = load("vast.csv") else { return };
    assert_eq!(gpu_of(&v, "2x-A100_SXM4-32-65536"), GpuModel::A100_40GB); // 81920 MiB over 2 GPUs
    assert_eq!(gpu_of(&v, "1x-A100_PCIE-32-65536"), GpuModel::A100_80GB);
    assert_eq!(gpu_of(&v, "2x-H100_NVL-32-65536"), GpuModel::H100Nvl);
    assert_eq!(gpu_of(&v, "8x-H100_SXM-32-65536"), GpuModel::H100Sxm);
    // Vast's SpotPrice is 0.00: no spot offers.
    assert!(v.iter().all(|o| o.capacity == CapacityType::OnDemand));

    let Some(p) = load("primeintellect.csv") else { return };
    let crusoe = p.iter().find(|o| o.instance.name == "crusoecloud__2xA100_80GB__24__240").unwrap();
    assert_eq!((crusoe.instance.gpu, crusoe.instance.gpu_count), (GpuModel::A100_80GB, 2));
    let spot: Vec<&Offering> =
        p.iter().filter(|o| o.instance.name == "datacrunch__8xH100_80GB__176__1480__SPOT").collect();
    assert_eq!(spot.len(), 1);
    assert_eq!((spot[0].capacity, spot[0].price), (CapacityType::Spot, price("6.84")));
}

#[test]
fn neocloud_names_resolve() {
    let Some(r) = load("runpod.csv") else { return };
    assert_eq!(gpu_of(&r, "8x_H100_SECURE"), GpuModel::H100Pcie);
    assert_eq!(gpu_of(&r, "8x_H100-SXM_SECURE"), GpuModel::H100Sxm);
    assert_eq!(gpu_of(&r, "8x_A100-80GB-SXM_SECURE"), GpuModel::A100_80GB);
    let Some(c) = load("cudo.csv") else { return };
    let noisy = find(&c, "sapphire-rapids-h100_1x2v4gb", "no-kristiansand-1", CapacityType::OnDemand);
    assert_eq!(noisy.price, price("1.8214"));
    assert_eq!(gpu_of(&c, "epyc-genoa-a100-pcie_1x2v4gb"), GpuModel::A100_80GB);
    let Some(h) = load("hyperstack.csv") else { return };
    assert_eq!(gpu_of(&h, "n3-H100x8-NVLink"), GpuModel::H100Pcie);
    assert_eq!(gpu_of(&h, "n3-H100-SXM5x8"), GpuModel::H100Sxm);
    let Some(l) = load("lambda.csv") else { return };
    assert_eq!(gpu_of(&l, "gpu_1x_h100_pcie"), GpuModel::H100Pcie);
    assert_eq!(gpu_of(&l, "gpu_8x_a100_80gb_sxm4"), GpuModel::A100_80GB);
    let Some(p) = load("paperspace.csv") else { return };
    let ps = p.iter().find(|o| o.instance.name == "H100x8").unwrap();
    assert_eq!(ps.region, "east-coast-ny2");
}

#[test]
fn money_sums_are_exact() {
    // Sums of the Price column computed with Python's Decimal: aws.csv 3316.111418 over 95 rows
    // (f64 gives 3316.111418000001); cudo.csv 313.9452 over 52 rows, each rounded to the micro-dollar.
    let Some(aws) = load("aws.csv") else { return };
    let od: Vec<&Offering> = aws.iter().filter(|o| o.capacity == CapacityType::OnDemand).collect();
    assert_eq!(od.len(), 95);
    assert_eq!(od.iter().map(|o| o.price.hourly()).sum::<Money>(), Money::parse_decimal("3316.111418").unwrap());
    let Some(cudo) = load("cudo.csv") else { return };
    assert_eq!(cudo.len(), 52);
    assert_eq!(cudo.iter().map(|o| o.price.hourly()).sum::<Money>(), Money::parse_decimal("313.9452").unwrap());
}

#[test]
fn cheapest_8x_h100_across_all_clouds() {
    let Some(dir) = catalogs_dir() else { return };
    let (c, _) = Catalog::load(&[dir], as_of()).unwrap();
    let q = Query {
        gpu: "H100".parse().ok(),
        min_gpus: Some(8),
        capacity: Some(CapacityType::OnDemand),
        ..Query::default()
    };
    let ranked = c.query(&q);
    let clouds: BTreeSet<Cloud> = ranked.iter().map(|o| o.cloud).collect();
    assert!(clouds.len() >= 10, "{clouds:?}");
    // Neoclouds at about $2–3/GPU-hour, hyperscalers far above: the spread fleet exists for.
    let cheapest = ranked[0].price_per_gpu();
    let aws = ranked.iter().find(|o| o.cloud == Cloud::Aws).unwrap().price_per_gpu();
    assert!(cheapest < price("3.00"), "{cheapest}");
    assert!(aws.hourly() > cheapest.hourly().times(2), "aws {aws} vs {cheapest}");
}
