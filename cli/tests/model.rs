//! `fleetctl model push` against moto's S3 API (the real aws-sdk-s3 inside fleetctl) and a
//! directory: the digest it prints, chunks not sent twice, and errors that name the problem.

use std::process::Command;

use fleet_providers::moto::Moto;

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn fleetctl(moto: &Moto, args: &[&str]) -> Out {
    let o = Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        .args(args)
        .env("HOME", "/nonexistent")
        .env("AWS_ENDPOINT_URL", &moto.url)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    Out {
        ok: o.status.success(),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

fn digest_in(out: &Out) -> String {
    let line = out.stdout.lines().find_map(|l| l.strip_prefix("digest: ")).unwrap_or_else(|| panic!("{}", out.stdout));
    line.trim().to_string()
}

#[test]
fn a_model_pushed_to_s3_and_to_a_directory_gets_one_digest_and_no_chunk_is_sent_twice() {
    let moto = Moto::start();
    // moto takes an unsigned bucket creation.
    ureq::put(&format!("{}/models", moto.url)).send_empty().unwrap();
    let t = tempfile::tempdir().unwrap();
    let model = t.path().join("m");
    std::fs::create_dir_all(model.join("shards")).unwrap();
    let mut x = 7u32;
    let weights: Vec<u8> = (0..40_000)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) as u8
        })
        .collect();
    std::fs::write(model.join("shards/model.safetensors"), weights).unwrap();
    std::fs::write(model.join("config.json"), "{}").unwrap();
    let m = model.to_str().unwrap();

    let first = fleetctl(&moto, &["model", "push", m, "s3://models/tiny", "--chunk-size", "4KiB"]);
    assert!(first.ok, "{}", first.stderr);
    assert!(first.stdout.contains("2 files, 40002 bytes in 11 chunks (11 sent, 0 already there)"), "{}", first.stdout);
    assert!(first.stdout.contains("[apps.APP.model]\n  source = \"s3://models/tiny\""), "{}", first.stdout);
    let digest = digest_in(&first);
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{digest}");

    let again = fleetctl(&moto, &["model", "push", m, "s3://models/tiny", "--chunk-size", "4KiB", "-o", "json"]);
    assert!(again.ok, "{}", again.stderr);
    let v: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(v["digest"], digest.as_str());
    assert_eq!((v["chunks"].as_u64(), v["uploaded_chunks"].as_u64()), (Some(11), Some(0)), "{v}");

    // The identity is the bytes', not the origin's.
    let local = t.path().join("origin");
    let to_dir = fleetctl(&moto, &["model", "push", m, &format!("file://{}", local.display()), "--chunk-size", "4KiB"]);
    assert!(to_dir.ok, "{}", to_dir.stderr);
    assert_eq!(digest_in(&to_dir), digest);
    assert!(local.join("manifests").join(&digest["sha256:".len()..]).is_file());

    for (args, want) in [
        (vec!["model", "push", m, "s3://no-such-bucket/x", "--chunk-size", "4KiB"], "NoSuchBucket"),
        (vec!["model", "push", m, "https://models.example.com/m"], "cannot write to an HTTP origin"),
        (vec!["model", "push", m, "ftp://x/y"], "none of s3://, gs://, https://, file://"),
        (vec!["model", "push", "/nonexistent/dir", "s3://models/x"], "/nonexistent/dir is not a directory"),
        (vec!["model", "push", m, "s3://models/x", "--chunk-size", "1KiB"], "outside 4KiB..=1GiB"),
    ] {
        let out = fleetctl(&moto, &args);
        assert!(!out.ok, "{args:?} succeeded");
        assert!(out.stderr.contains(want), "{args:?}: {}", out.stderr);
    }
}
