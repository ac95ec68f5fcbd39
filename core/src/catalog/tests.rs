use super::*;
use crate::gpu::{GpuFamily, GpuModel};
use crate::money::Price;

#[test]
fn builtin_catalog_parses_and_is_sourced() {
    let c = Catalog::builtin();
    assert!(c.len() > 100, "built-in catalog has only {} offerings", c.len());
    for o in c.offerings() {
        assert!(!o.source.name.is_empty());
        assert!(o.source.as_of >= chrono::NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(), "{:?}", o.source);
        assert!(o.price > Price::ZERO, "{}", o.key());
    }
}

#[test]
fn builtin_has_h100_from_at_least_five_clouds_including_the_big_three() {
    let q = Query { gpu: Some(GpuSelector::Family(GpuFamily::H100)), ..Query::default() };
    let clouds: BTreeSet<Cloud> = Catalog::builtin().query(&q).iter().map(|o| o.cloud).collect();
    for c in [Cloud::Aws, Cloud::Gcp, Cloud::Azure, Cloud::Lambda, Cloud::Runpod] {
        assert!(clouds.contains(&c), "no H100 from {c} in the built-in catalog");
    }
    let a100: BTreeSet<Cloud> = Catalog::builtin()
        .query(&Query { gpu: Some(GpuSelector::Family(GpuFamily::A100)), ..Query::default() })
        .iter()
        .map(|o| o.cloud)
        .collect();
    for c in [Cloud::Aws, Cloud::Gcp, Cloud::Azure, Cloud::Lambda, Cloud::Runpod] {
        assert!(a100.contains(&c), "no A100 from {c} in the built-in catalog");
    }
}

#[test]
fn builtin_round_trips_through_the_native_writer() {
    let mut buf = Vec::new();
    native::write(&mut buf, Catalog::builtin().offerings()).unwrap();
    let back = native::read("again.csv", buf.as_slice()).unwrap();
    assert_eq!(back.offerings, Catalog::builtin().offerings());
    assert!(back.notes.is_empty());
}

#[test]
fn query_filters_and_sorts_by_gpu_price_deterministically() {
    let q = Query {
        gpu: Some(GpuSelector::Family(GpuFamily::H100)),
        min_gpus: Some(8),
        capacity: Some(CapacityType::OnDemand),
        ..Query::default()
    };
    let a = Catalog::builtin().query(&q);
    assert!(!a.is_empty());
    for w in a.windows(2) {
        assert!(w[0].price_per_gpu() <= w[1].price_per_gpu());
    }
    for o in &a {
        assert!(
            o.instance.gpu_count >= 8
                && o.instance.gpu.family() == GpuFamily::H100
                && o.capacity == CapacityType::OnDemand
        );
    }
    let b = Catalog::builtin().query(&q);
    assert_eq!(a, b);
}

#[test]
fn query_by_cloud_region_and_prefix() {
    let c = Catalog::builtin();
    let q = Query { clouds: vec![Cloud::Aws], regions: vec!["US-East-1".into()], ..Query::default() };
    let got = c.query(&q);
    assert!(!got.is_empty());
    assert!(got.iter().all(|o| o.cloud == Cloud::Aws && o.region == "us-east-1"));
    let q = Query { clouds: vec![Cloud::Aws], regions: vec!["us-*".into()], ..Query::default() };
    let got = c.query(&q);
    assert!(got.iter().any(|o| o.region == "us-west-2"));
    assert!(got.iter().all(|o| o.region.starts_with("us-")));
    let q = Query { gpu: Some(GpuSelector::Model(GpuModel::H100Nvl)), clouds: vec![Cloud::Aws], ..Query::default() };
    assert!(c.query(&q).is_empty());
}

#[test]
fn native_reader_rejects_bad_rows_with_position() {
    let head = native::HEADER.join(",");
    let cases = [
        ("nocloud,us,,x,H100-SXM,8,1,1,,on-demand,1.0,s,2026-11-25", "column 1 'cloud': unknown cloud 'nocloud'"),
        ("aws,us-east-1,,p5.48xlarge,H100-SMX,8,1,1,,on-demand,1.0,s,2026-11-25", "did you mean 'H100-SXM'"),
        ("aws,us-east-1,,p5.48xlarge,A100-80GB,8,1,1,,on-demand,1.0,s,2026-11-25", "p5.48xlarge has 8 × H100-SXM"),
        (
            "aws,us-east-1,,p5.48xlarge,H100-SXM,8,1,1,,on-demand,1.0,s,25/11/2026",
            "column 13 'as_of': '25/11/2026' is not a date",
        ),
        ("aws,us-east-1,,p5.48xlarge,H100-SXM,8,1,1,,on-demand,abc,s,2026-11-25", "column 11 'usd_per_hour'"),
        ("aws,us-east-1,,p5.48xlarge,H100-SXM,8,1,1,,cheap,1.0,s,2026-11-25", "column 10 'capacity'"),
        ("aws,us-east-1,,p5.48xlarge,H100-SXM,8,1,1,,spot,1.0,,2026-11-25", "every price says where it came from"),
    ];
    for (row, want) in cases {
        let data = format!(
            "{head}\naws,us-east-1,,p5.48xlarge,H100-SXM,8,192,2048,nvswitch,on-demand,98.32,s,2026-11-25\n{row}\n"
        );
        let e = native::read("x.csv", data.as_bytes()).unwrap_err().to_string();
        assert!(e.starts_with("x.csv:3: "), "{e}");
        assert!(e.contains(want), "{e} does not contain {want}");
    }
}

#[test]
fn duplicates_keep_the_first_and_are_noted() {
    let head = native::HEADER.join(",");
    let data = format!(
        "{head}\naws,us-east-1,,p5.48xlarge,H100-SXM,8,192,2048,,on-demand,98.32,s,2026-11-25\naws,us-east-1,,p5.48xlarge,H100-SXM,8,192,2048,,on-demand,50,s,2026-11-25\n"
    );
    let got = native::read("d.csv", data.as_bytes()).unwrap();
    assert_eq!(got.offerings.len(), 1);
    assert_eq!(got.offerings[0].price, Price::parse_decimal("98.32").unwrap());
    assert!(got.notes[0].message.contains("duplicate of d.csv:2"), "{:?}", got.notes);
}

#[test]
fn cloud_of_file_names() {
    assert_eq!(cloud_of_file(Path::new("x/aws.csv")).unwrap(), Cloud::Aws);
    assert_eq!(cloud_of_file(Path::new("x/fluidstack_v6.csv")).unwrap(), Cloud::Fluidstack);
    assert_eq!(cloud_of_file(Path::new("catalogs/v8/gcp/vms.csv")).unwrap(), Cloud::Gcp);
    let e = cloud_of_file(Path::new("x/lamdba.csv")).unwrap_err().to_string();
    assert!(e.contains("did you mean 'lambda'"), "{e}");
}

#[test]
fn a_bad_file_among_good_ones_loads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let good = "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region\ngpu_1x_h100_pcie,H100,1,26,200,2.49,us-east-1\n";
    std::fs::write(dir.path().join("lambda.csv"), good).unwrap();
    std::fs::write(dir.path().join("runpod.csv"), good.replace("2.49", "2,49")).unwrap();
    let e = Catalog::load(&[dir.path().to_path_buf()], None).unwrap_err().to_string();
    assert!(e.contains("runpod.csv:2: this row has 8 fields but the header has 7"), "{e}");
    std::fs::write(dir.path().join("runpod.csv"), good).unwrap();
    std::fs::write(dir.path().join("notes.csv"), "a,b\n1,2\n").unwrap();
    let (c, notes) = Catalog::load(&[dir.path().to_path_buf()], None).unwrap();
    assert_eq!(c.clouds(), BTreeSet::from([Cloud::Lambda, Cloud::Runpod]));
    assert!(notes.iter().any(|n| n.file.ends_with("notes.csv") && n.message.contains("not a catalog")));
    let e = Catalog::load(&[dir.path().join("notes.csv")], None).unwrap_err().to_string();
    assert!(e.contains("not a catalog"), "{e}");
    let e = Catalog::load(&[dir.path().join("missing.csv")], None).unwrap_err().to_string();
    assert!(e.starts_with("cannot read") && e.contains("missing.csv"), "{e}");
}
