//! The API's accept loop under slow and idle sockets (on loopback, real time, bounded): a
//! connection limit turns the excess away at once, and sockets that never finish a request head
//! are disconnected after the header-read timeout — so `/healthz` answers again within a bound
//! while the attack goes on.

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use fleet_orchestrator::serve::{Limits, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn healthz(addr: std::net::SocketAddr) -> bool {
    let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await else {
        return false;
    };
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    matches!(tokio::time::timeout(Duration::from_millis(500), s.read_to_end(&mut buf)).await, Ok(Ok(_)))
        && buf.starts_with(b"HTTP/1.1 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_sockets_do_not_stop_the_api() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/healthz", get(|| async { "ok\n" }));
    let limits = Limits { max_connections: 32, header_read_timeout: Duration::from_millis(500) };
    tokio::spawn(serve(listener, app, limits, std::future::pending()));
    assert!(healthz(addr).await, "answers before the attack");

    // 200 slowloris sockets: each sends half a request head and then nothing.
    let mut slow = Vec::new();
    for _ in 0..200 {
        if let Ok(mut s) = TcpStream::connect(addr).await {
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
            slow.push(s);
        }
    }
    let attacked = Instant::now();
    // Within a bound (the header timeout and some), /healthz answers again, the sockets still open
    // on the attacker's side.
    let mut ok = false;
    while attacked.elapsed() < Duration::from_secs(5) {
        if healthz(addr).await {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = attacked.elapsed();
    assert!(ok, "/healthz did not answer within 5 s of the attack");
    println!("/healthz answered {took:?} after 200 slow sockets (limit 32, header timeout 500 ms)");
    // Every slow socket was closed by the server: at the door (over the limit) or at its timeout.
    let mut closed = 0;
    for s in &mut slow {
        let mut b = [0u8; 512];
        match tokio::time::timeout(Duration::from_secs(2), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            Ok(Ok(_)) => closed += 1, // a 408 answer, then the close
            Err(_) => {}
        }
    }
    assert_eq!(closed, slow.len(), "slow sockets the server still holds");
}

/// A kept-alive connection left idle is closed after the header-read timeout too (agents open a
/// new one when they next call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/healthz", get(|| async { "ok\n" }));
    let limits = Limits { max_connections: 8, header_read_timeout: Duration::from_millis(300) };
    tokio::spawn(serve(listener, app, limits, std::future::pending()));
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut b = [0u8; 1024];
    let n = s.read(&mut b).await.unwrap();
    assert!(b[..n].starts_with(b"HTTP/1.1 200"));
    let idle = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(3), s.read(&mut b)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "still open after {:?}: {r:?}", idle.elapsed());
    println!("idle connection closed after {:?}", idle.elapsed());
}
