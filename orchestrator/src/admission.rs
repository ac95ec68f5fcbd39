//! What the API lets in, per app (`[apps.X.requests]`): a bounded queue and a rate per token, so
//! no caller can fill the store or starve the others. Input size is checked where the body is
//! read (`api.rs`); finished results are removed after their TTL by the fleet's pass
//! (`queue::expire_results`).
//!
//! The queue's length is read from the store at most once a second per app and counted up
//! locally between reads: several fleetd share the store, so the bound may be passed by the
//! submissions other fleetd admit within one second, never by more. After the first read, the
//! next ones happen beside the submits (one at a time per app), not in their way: a long queue
//! takes a while to count, and no submit waits for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_core::keys::Keys;
use fleet_state::store::{Store, StoreResult};
use tokio::time::Instant;

const QUEUE_READ_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct Admission {
    /// app → its queue's length as last read plus what was admitted since.
    queues: Arc<Mutex<HashMap<String, QueueCount>>>,
    /// (token, app) → token bucket.
    buckets: Mutex<HashMap<(String, String), Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct QueueCount {
    read_at: Instant,
    n: u32,
    /// A read is under way.
    reading: bool,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Why a submit is refused: the answer says which limit and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    QueueFull { queued: u32, max: u32 },
    RateLimited { rate: u32, retry_after: Duration },
}

impl Admission {
    /// One submit by `token` to `app`, allowed `rate` per second (bursts of `rate`).
    pub fn take(&self, token: &str, app: &str, rate: u32) -> Result<(), Refused> {
        let now = Instant::now();
        let rate_f = f64::from(rate.max(1));
        let mut buckets = self.buckets.lock().expect("buckets lock");
        let b = buckets.entry((token.to_string(), app.to_string())).or_insert(Bucket { tokens: rate_f, at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate_f).min(rate_f);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let retry_after = Duration::from_secs_f64((1.0 - b.tokens) / rate_f);
            Err(Refused::RateLimited { rate, retry_after })
        }
    }

    /// Room for one more request in `app`'s queue (queued or in flight) under `max`; counts it.
    pub async fn queue_room(
        &self,
        store: &Arc<dyn Store>,
        keys: &Keys,
        app: &str,
        max: u32,
    ) -> StoreResult<Result<(), Refused>> {
        let known = {
            let mut q = self.queues.lock().expect("queues lock");
            match q.get_mut(app) {
                None => None,
                Some(c) => {
                    if c.read_at.elapsed() >= QUEUE_READ_EVERY && !c.reading {
                        c.reading = true;
                        let (store, prefix, queues, app) =
                            (store.clone(), keys.queue(app), self.queues.clone(), app.to_string());
                        tokio::spawn(async move {
                            let n =
                                store.range(&prefix).await.map(|(kvs, _)| u32::try_from(kvs.len()).unwrap_or(u32::MAX));
                            let mut q = queues.lock().expect("queues lock");
                            if let Some(c) = q.get_mut(&app) {
                                c.reading = false;
                                // A failed read is tried again at the next submit.
                                if let Ok(n) = n {
                                    *c = QueueCount { read_at: Instant::now(), n, reading: false };
                                }
                            }
                        });
                    }
                    Some(c.n)
                }
            }
        };
        let queued = match known {
            Some(n) => n,
            None => {
                let n = u32::try_from(store.range(&keys.queue(app)).await?.0.len()).unwrap_or(u32::MAX);
                let mut q = self.queues.lock().expect("queues lock");
                q.entry(app.to_string()).or_insert(QueueCount { read_at: Instant::now(), n, reading: false }).n
            }
        };
        if queued >= max {
            return Ok(Err(Refused::QueueFull { queued, max }));
        }
        if let Some(c) = self.queues.lock().expect("queues lock").get_mut(app) {
            c.n = c.n.saturating_add(1);
        }
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_token_gets_its_rate_in_bursts_and_no_more() {
        let a = Admission::default();
        for _ in 0..5 {
            a.take("alice", "llm", 5).unwrap();
        }
        match a.take("alice", "llm", 5) {
            Err(Refused::RateLimited { rate: 5, retry_after }) => assert!(retry_after <= Duration::from_millis(200)),
            other => panic!("{other:?}"),
        }
        // Others are not held back by alice, nor alice in another app.
        a.take("bob", "llm", 5).unwrap();
        a.take("alice", "embed", 5).unwrap();
        tokio::time::advance(Duration::from_millis(400)).await;
        a.take("alice", "llm", 5).unwrap();
        a.take("alice", "llm", 5).unwrap();
        assert!(a.take("alice", "llm", 5).is_err(), "two per 400 ms at 5/s");
    }
}
