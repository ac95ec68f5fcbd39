//! The durable queue's submit rate through the real fleetd (issue 19): an HTTP load generator
//! (`CLIENTS` connections kept alive, each submitting as fast as answers come back) against
//! `POST /v1/apps/{app}/requests` on the embedded store, for `SECONDS`. Every submit is durable
//! before it is acknowledged (group commit: `fleet_orchestrator::submitter`). Prints submits/s
//! and latency p50/p99 against the goal (≥ 10,000/s, p99 < 20 ms) and the ratios.
//!
//! `cargo bench -p fleet-orchestrator --no-default-features --bench queue`
//! (`FLEET_BENCH_CLIENTS`, default 64; `FLEET_BENCH_SECONDS`, default 5).

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

const SPEC: &str = r#"
[fleet]
name = "qbench"

[apps.chat]
gpu = "H100"
gpus = 1

[apps.chat.scaling]
min_concurrency = 0
max_concurrency = 1

[apps.chat.requests]
max_queue = 1000000
rate_per_token = 100000
"#;

fn main() {
    let clients: usize = std::env::var("FLEET_BENCH_CLIENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    let secs: f64 = std::env::var("FLEET_BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5.0);
    // No cloud: the app is applied and its queue takes requests; nothing is launched.
    let f = support::Fleetd::start("qbench", SPEC, &[], tempfile::tempdir().unwrap());
    let (addr, token) = (f.addr.clone(), f.token.clone());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (mut lat, errors, elapsed) = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (addr, token) = (addr.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (mut tx, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
                tokio::spawn(conn);
                let (mut lat, mut errors) = (Vec::new(), 0usize);
                while Instant::now() < deadline {
                    let req = hyper::Request::post("/v1/apps/chat/requests")
                        .header("host", addr.as_str())
                        .header("authorization", format!("Bearer {token}"))
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from_static(br#"{"input": {"prompt": "hello world"}}"#)))
                        .unwrap();
                    let t = Instant::now();
                    let resp = tx.send_request(req).await.unwrap();
                    let ok = resp.status() == 202;
                    let _ = resp.into_body().collect().await;
                    if ok {
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    } else {
                        errors += 1;
                    }
                }
                (lat, errors)
            }));
        }
        let (mut all, mut errors) = (Vec::new(), 0);
        for t in tasks {
            let (l, e) = t.await.unwrap();
            all.extend(l);
            errors += e;
        }
        (all, errors, start.elapsed().as_secs_f64())
    });
    drop(f);
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| lat[((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1];
    let rate = lat.len() as f64 / elapsed;
    println!(
        "{} submits acknowledged in {elapsed:.1} s by {clients} clients (embedded store, each durable)",
        lat.len()
    );
    println!("rate                   {rate:.0} submits/s   ({:.2}× the 10,000/s goal)", rate / 10_000.0);
    println!(
        "latency                p50 {:.2} ms   p99 {:.2} ms   ({:.2}× the 20 ms p99 goal)",
        q(0.5),
        q(0.99),
        q(0.99) / 20.0
    );
    println!("refused or failed      {errors}");
}
