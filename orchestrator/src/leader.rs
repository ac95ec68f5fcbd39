//! One acting daemon per fleet: the leader holds `/fleet/{fleet}/leader` on a lease it keeps
//! alive; the others wait for the key to go (its lease ends within one TTL of the leader's
//! death) and take it. A leader that cannot renew its lease before it would expire steps down
//! (`lost` fires): another may be leading by then, so it must stop acting at once.

use std::sync::Arc;
use std::time::Duration;

use fleet_core::keys::Keys;
use fleet_state::store::{Compare, LeaseId, Op, Store, StoreError, StoreResult, get_json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Leadership {
    pub lease: LeaseId,
    /// Becomes true when leadership is lost.
    pub lost: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Leadership {
    /// Resolves when leadership is lost.
    pub async fn lost(&mut self) {
        while !*self.lost.borrow() {
            if self.lost.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Who leads now (its identity as it wrote it), if anyone.
pub async fn current(store: &dyn Store, keys: &Keys) -> StoreResult<Option<String>> {
    Ok(get_json::<String>(store, &keys.leader()).await?.map(|(who, _)| who))
}

/// Waits until this daemon (`me`) leads, then keeps the lease alive in the background.
pub async fn acquire(store: Arc<dyn Store>, keys: &Keys, me: &str, ttl: Duration) -> StoreResult<Leadership> {
    let key = keys.leader();
    let mut waited = false;
    loop {
        let attempt: StoreResult<Result<LeaseId, fleet_state::store::Revision>> = async {
            let lease = store.grant_lease(ttl).await?;
            let res = store
                .txn(
                    vec![Compare::absent(&key)],
                    vec![Op::put_with_lease(&key, fleet_state::store::to_json(&me), lease)],
                )
                .await?;
            if res.succeeded {
                Ok(Ok(lease))
            } else {
                let _ = store.revoke(lease).await;
                Ok(Err(res.revision))
            }
        }
        .await;
        match attempt {
            Ok(Ok(lease)) => {
                tracing::info!(me, "leading the fleet");
                let (tx, rx) = watch::channel(false);
                let task = tokio::spawn(keep(store.clone(), lease, ttl, tx));
                return Ok(Leadership { lease, lost: rx, task });
            }
            Ok(Err(rev)) => {
                if !waited {
                    let who = current(&*store, keys).await.ok().flatten().unwrap_or_default();
                    tracing::info!(me, leader = %who, "another daemon leads; waiting to take over");
                    waited = true;
                }
                // The key goes when the leader's lease ends: campaign again the moment it does
                // (or after a while, should the watch miss it).
                if let Ok(mut w) = store.watch(&key, rev + 1).await {
                    let gone = async {
                        while let Some(ev) = w.recv().await {
                            if matches!(ev, Ok(fleet_state::store::WatchEvent::Delete { .. }) | Err(_)) {
                                return;
                            }
                        }
                    };
                    let _ = tokio::time::timeout(ttl, gone).await;
                    continue;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot campaign for leadership; retrying"),
        }
        tokio::time::sleep(ttl / 5).await;
    }
}

async fn keep(store: Arc<dyn Store>, lease: LeaseId, ttl: Duration, lost: watch::Sender<bool>) {
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(ttl / 4).await;
        match store.keep_alive(lease).await {
            Ok(()) => last_ok = tokio::time::Instant::now(),
            Err(StoreError::LeaseNotFound(_)) => {
                tracing::error!("leadership lease ended: stepping down");
                let _ = lost.send(true);
                return;
            }
            Err(e) => {
                // Not renewed for most of a TTL: the lease may be gone on the store's side.
                if last_ok.elapsed() >= ttl * 3 / 4 {
                    tracing::error!(error = %e, "leadership lease not renewed in time: stepping down");
                    let _ = lost.send(true);
                    return;
                }
            }
        }
    }
}
