//! `fleetctl catalog` as an operator runs it: the real binary, its exit codes and its output.

use std::collections::BTreeSet;
use std::process::{Command, Output};

fn fleetctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetctl")).args(args).output().expect("run fleetctl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn h100_by_price_lists_at_least_five_clouds_from_the_builtin_catalog() {
    let o = fleetctl(&["catalog", "--gpu", "H100", "--sort", "price"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let mut lines = out.lines();
    assert!(lines.next().unwrap().starts_with("CLOUD"));
    let clouds: BTreeSet<&str> = lines.map(|l| l.split_whitespace().next().unwrap()).collect();
    for c in ["aws", "gcp", "azure", "lambda", "runpod"] {
        assert!(clouds.contains(c), "{c} missing from {clouds:?}");
    }
}

#[test]
fn json_is_sorted_by_gpu_price_and_filtered() {
    let o = fleetctl(&["catalog", "--gpu", "H100", "--min-gpus", "8", "--spot", "--sort", "price", "-o", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let rows = v.as_array().unwrap();
    assert!(rows.len() > 5);
    let mut last = 0i64;
    for r in rows {
        assert_eq!(r["capacity"], "spot");
        assert!(r["instance"]["gpu_count"].as_u64().unwrap() >= 8);
        assert!(r["instance"]["gpu"].as_str().unwrap().starts_with("H100"));
        // Money is a decimal string, never a float.
        let p = fleet_price(r["price_per_gpu"].as_str().unwrap());
        assert!(p >= last, "not sorted: {r}");
        last = p;
    }
}

fn fleet_price(s: &str) -> i64 {
    fleet_core::Money::parse_decimal(s).unwrap().micros()
}

#[test]
fn unknown_gpu_suggests_and_exits_2() {
    let o = fleetctl(&["catalog", "--gpu", "H10O"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.lines().next().unwrap().contains("unknown GPU 'H10O' (did you mean 'H100'?)"), "{e}");
    assert!(stdout(&o).is_empty());
}

#[test]
fn bad_catalog_csv_names_file_line_and_column_and_prints_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("lambda.csv");
    std::fs::write(
        &f,
        "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region\n\
         gpu_1x_h100_pcie,H100,1,26,200,2.49,us-east-1\n\
         gpu_8x_h100_sxm5,H100,eight,208,1800,23.92,us-east-1\n",
    )
    .unwrap();
    let o = fleetctl(&["catalog", "--catalog", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("lambda.csv:3: column 3 'AcceleratorCount': 'eight' is not a number"), "{e}");
    assert!(stdout(&o).is_empty());
}

#[test]
fn csv_output_reloads_as_a_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let o = fleetctl(&["catalog", "--gpu", "A100", "--cloud", "aws,lambda", "-o", "csv"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let f = dir.path().join("mine.csv");
    std::fs::write(&f, &o.stdout).unwrap();
    let again = fleetctl(&["catalog", "--catalog", f.to_str().unwrap(), "-o", "csv"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stdout(&again), stdout(&o));
}
