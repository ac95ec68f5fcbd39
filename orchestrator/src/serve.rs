//! The API's accept loop, with the bounds axum's `serve` lacks, so slow or idle sockets cannot
//! stall fleetd: at most `max_connections` at once (a connection beyond is closed at once, its
//! client retries), and a client that does not send a whole request head within
//! `header_read_timeout` — a slowloris, or a kept-alive socket left idle — is disconnected.
//! Request bodies are bounded per route by the router (`DefaultBodyLimit`), TLS handshakes by
//! `tls.rs` (concurrency and time).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    /// 4,096 connections (agents keep one each through the gateway), 10 s to send a request head.
    fn default() -> Self {
        Limits { max_connections: 4096, header_read_timeout: Duration::from_secs(10) }
    }
}

/// Serves `app` on `listener` until `stop` resolves (connections open then finish on their own).
pub async fn serve<L>(mut listener: L, app: Router, limits: Limits, stop: impl Future<Output = ()>)
where
    L: axum::serve::Listener,
    L::Io: Unpin + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut full_logged = false;
    tokio::pin!(stop);
    loop {
        let (io, _) = tokio::select! {
            c = listener.accept() => c,
            () = &mut stop => return,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if !full_logged {
                tracing::warn!(max = limits.max_connections, "API connection limit reached: closing new connections");
                full_logged = true;
            }
            drop(io);
            continue;
        };
        full_logged = false;
        let svc = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
            if let Err(e) = b.serve_connection(TokioIo::new(io), svc).with_upgrades().await {
                tracing::debug!(error = %e, "API connection ended");
            }
            drop(permit);
        });
    }
}
