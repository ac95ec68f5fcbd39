//! What fleetd adds to a request over calling the agent directly (issue 19): the real fleetd
//! with a local node (a real fleet-agent serving a tiny random-weight Llama on the CPU), the
//! same one-token completion sent open-loop at a fixed rate two ways, in the same run:
//!
//! - **direct**: `POST /v1/runners/{id}/generate` to the agent's push endpoint (its credential),
//!   the clock stopping at the agent's final line;
//! - **through fleetd**: `POST /v1/completions` (an admin token), which admits it, picks the
//!   runner and pushes it there; the clock stops at fleetd's answer.
//!
//! Each request opens its own connection in both (so the difference is fleetd's work plus one
//! more loopback hop). Prints p50/p99 of each and the difference.
//!
//! `cargo build --release -p fleet-agent && cargo bench -p fleet-orchestrator --bench serving`
//! (`FLEET_BENCH_RATE`, default 500 requests/s; `FLEET_BENCH_SECONDS`, default 4).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

const SPEC: &str = r#"
[fleet]
name = "bench"

[apps.chat]
gpu = "H100"
gpus = 1

[apps.chat.scaling]
min_concurrency = 1
max_concurrency = 1
max_multiplexing = 64
keep_alive = "1h"

[apps.chat.requests]
rate_per_token = 100000
"#;

/// One HTTP/1.1 request on a fresh connection; the whole body.
async fn call(addr: &str, path: &str, auth: &str, body: &str) -> Result<(u16, Bytes), String> {
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header("host", addr)
        .header("authorization", format!("Bearer {auth}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = tx.send_request(req).await.map_err(|e| format!("no answer: {e}"))?;
    let status = resp.status().as_u16();
    Ok((status, resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes()))
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

/// Sends `n` requests open-loop at `rate`/s with `send`; latencies in ms of those answered
/// well, and the first failure with how many failed.
async fn open_loop<F, Fut>(rate: f64, n: usize, send: F) -> (Vec<f64>, usize, Option<String>)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let send = Arc::new(send);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        let send = send.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            send().await.map(|_| t.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let (mut out, mut failed, mut first) = (Vec::with_capacity(n), 0, None);
    for t in tasks {
        match t.await.unwrap() {
            Ok(ms) => out.push(ms),
            Err(e) => {
                failed += 1;
                first.get_or_insert(e);
            }
        }
    }
    (out, failed, first)
}

fn main() {
    let rate: f64 = std::env::var("FLEET_BENCH_RATE").ok().and_then(|v| v.parse().ok()).unwrap_or(500.0);
    let secs: f64 = std::env::var("FLEET_BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(4.0);
    let dir = tempfile::tempdir().unwrap();
    let model = support::make_llm(dir.path(), "tiny", &["--family", "llama"]);
    let args: Vec<String> = ["--local", "--reconcile-every", "0.2", "--model"]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("chat={}", model.display())])
        .collect();
    let f = support::Fleetd::start("bench", SPEC, &args, dir);
    let (addr, token) = (f.addr.clone(), f.token.clone());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let result = rt.block_on(async {
        // Wait for the runner to serve and its agent to publish its endpoint.
        let (agent_addr, node, runner) = f.ready_runner().await;
        let key =
            fleet_core::Secret::new(std::fs::read_to_string(f.dir.path().join("push.key")).unwrap().trim().to_string());
        let cred = fleet_orchestrator::push::credential(&key, node).expose().to_string();
        let n = (rate * secs) as usize;
        let prompt = r#"{"prompt": "hello world", "max_tokens": 1}"#;
        // Warm both paths.
        for _ in 0..20 {
            let _ = call(&agent_addr, &format!("/v1/runners/{runner}/generate"), &cred, prompt).await;
            let _ = call(
                &addr,
                "/v1/completions",
                &token,
                r#"{"model": "chat", "prompt": "hello world", "max_tokens": 1}"#,
            )
            .await;
        }
        let (a, c) = (agent_addr.clone(), cred.clone());
        let (mut direct, direct_failed, direct_err) = open_loop(rate, n, move || {
            let (a, c) = (a.clone(), c.clone());
            async move {
                let (s, b) = call(&a, &format!("/v1/runners/{runner}/generate"), &c, prompt).await?;
                let b = String::from_utf8_lossy(&b);
                if s == 200 && b.contains("\"done\"") { Ok(()) } else { Err(format!("{s}: {b}")) }
            }
        })
        .await;
        let (f, tk) = (addr.clone(), token.clone());
        let (mut through, through_failed, through_err) = open_loop(rate, n, move || {
            let (f, tk) = (f.clone(), tk.clone());
            async move {
                let (s, b) =
                    call(&f, "/v1/completions", &tk, r#"{"model": "chat", "prompt": "hello world", "max_tokens": 1}"#)
                        .await?;
                let b = String::from_utf8_lossy(&b);
                if s == 200 && b.contains("\"choices\"") { Ok(()) } else { Err(format!("{s}: {b}")) }
            }
        })
        .await;
        for (what, failed, err) in
            [("direct", direct_failed, &direct_err), ("through fleetd", through_failed, &through_err)]
        {
            if failed > 0 {
                eprintln!("{what}: {failed} of {n} failed; the first: {}", err.as_deref().unwrap_or_default());
            }
        }
        assert!(direct.len() > n / 2 && through.len() > n / 2, "too many failures to measure");
        let d = (quantile(&mut direct, 0.5), quantile(&mut direct, 0.99));
        let t = (quantile(&mut through, 0.5), quantile(&mut through, 0.99));
        (n, d, t, direct_failed, through_failed)
    });
    drop(f);
    let (n, d, t, df, tf) = result;
    println!("{n} one-token completions at {rate} requests/s each way (loopback, CPU, a tiny Llama)");
    println!("direct to the agent        p50 {:.2} ms   p99 {:.2} ms", d.0, d.1);
    println!("through fleetd             p50 {:.2} ms   p99 {:.2} ms", t.0, t.1);
    println!("failed                     direct {df}, through fleetd {tf}");
    println!("fleetd adds                p50 {:.2} ms   p99 {:.2} ms (goal < 1 ms and < 5 ms)", t.0 - d.0, t.1 - d.1);
}
