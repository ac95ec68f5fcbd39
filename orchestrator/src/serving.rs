//! Serving figures per app and runner, from every finished request: fleetd watches the results
//! prefix (each request's result is written there once, in the transaction that finishes it), so
//! requests submitted through the queue API and through the OpenAI-compatible endpoints count
//! alike, whichever fleetd took them.
//!
//! Per finished request: its latency (submitted → result written), its queue wait (submitted →
//! claimed by the runner that finished it), and for language models the runner's own timing —
//! time to first token (queue wait + the runner's first-token time), inter-token latency (decode
//! time ÷ (tokens − 1), one figure per request) and tokens generated. Exported as Prometheus
//! histograms and counters ([`crate::metrics::Metrics`]); the last [`WINDOW`] requests of each
//! app are kept for `GET /v1/apps` (p50/p99 and tokens/s), which `fleetctl describe app` shows.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_state::model::{RequestRecord, RequestState};
use fleet_state::store::WatchEvent;
use serde::Serialize;

use crate::actors::Ctx;
use crate::metrics::{AppLabel, Metrics, OutcomeLabels, RunnerTokenLabels};

/// Requests per app the summary is computed over.
pub const WINDOW: usize = 1000;

#[derive(Debug, Clone, Copy)]
struct Sample {
    latency_s: f64,
    queue_wait_s: Option<f64>,
    ttft_s: Option<f64>,
    itl_s: Option<f64>,
    tokens: u64,
    decode_s: f64,
}

#[derive(Debug, Default)]
struct AppSeries {
    done: u64,
    failed: u64,
    recent: VecDeque<Sample>,
}

/// What `GET /v1/apps` says about an app's serving (over its last [`WINDOW`] requests; the
/// counts since fleetd started).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServingView {
    pub done: u64,
    pub failed: u64,
    pub window: usize,
    pub latency_p50_s: Option<f64>,
    pub latency_p90_s: Option<f64>,
    pub latency_p99_s: Option<f64>,
    pub queue_wait_p50_s: Option<f64>,
    pub queue_wait_p99_s: Option<f64>,
    pub ttft_p50_s: Option<f64>,
    pub ttft_p90_s: Option<f64>,
    pub ttft_p99_s: Option<f64>,
    pub itl_p50_s: Option<f64>,
    /// Tokens generated ÷ decode time, over the window's LLM requests (one runner's rate; runners
    /// decoding in parallel add up).
    pub tokens_per_s: Option<f64>,
}

#[derive(Debug, Default)]
pub struct Serving {
    apps: Mutex<HashMap<String, AppSeries>>,
}

fn secs(d: chrono::TimeDelta) -> Option<f64> {
    d.to_std().ok().map(|d| d.as_secs_f64())
}

/// The `q` quantile (nearest rank) of `v`, sorted here.
pub(crate) fn quantile(mut v: Vec<f64>, q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    Some(v[i])
}

impl Serving {
    /// Counts one finished request (anything not finished is ignored).
    pub fn observe(&self, metrics: &Metrics, r: &RequestRecord) {
        let (finished_at, started_at, outcome) = match &r.state {
            RequestState::Done { finished_at, started_at, .. } => (*finished_at, *started_at, "done"),
            RequestState::Failed { finished_at, started_at, .. } => (*finished_at, *started_at, "failed"),
            _ => return,
        };
        let app = AppLabel { app: r.app.clone() };
        metrics.requests_finished.get_or_create(&OutcomeLabels { app: r.app.clone(), outcome: outcome.into() }).inc();
        let latency_s = secs(finished_at - r.submitted_at).unwrap_or(0.0);
        metrics.request_seconds.get_or_create(&app).observe(latency_s);
        let queue_wait_s = started_at.and_then(|s| secs(s - r.submitted_at));
        if let Some(w) = queue_wait_s {
            metrics.queue_wait_seconds.get_or_create(&app).observe(w);
        }
        let (mut ttft_s, mut itl_s, mut tokens, mut decode_s) = (None, None, 0, 0.0);
        if let RequestState::Done { output, runner, .. } = &r.state {
            tokens = output["usage"]["completion_tokens"].as_u64().unwrap_or(0);
            let timing = &output["timing"];
            if let (Some(first), Some(decode)) = (timing["first_token_s"].as_f64(), timing["decode_s"].as_f64()) {
                let t = queue_wait_s.unwrap_or(0.0) + first;
                ttft_s = Some(t);
                metrics.time_to_first_token_seconds.get_or_create(&app).observe(t);
                decode_s = decode;
                if tokens >= 2 {
                    let itl = decode / (tokens - 1) as f64;
                    itl_s = Some(itl);
                    metrics.inter_token_seconds.get_or_create(&app).observe(itl);
                }
            }
            if tokens > 0 {
                metrics
                    .generated_tokens
                    .get_or_create(&RunnerTokenLabels { app: r.app.clone(), runner: runner.to_string() })
                    .inc_by(tokens);
            }
        }
        let mut apps = self.apps.lock().expect("serving lock");
        let s = apps.entry(r.app.clone()).or_default();
        if outcome == "done" {
            s.done += 1;
        } else {
            s.failed += 1;
        }
        s.recent.push_back(Sample { latency_s, queue_wait_s, ttft_s, itl_s, tokens, decode_s });
        while s.recent.len() > WINDOW {
            s.recent.pop_front();
        }
    }

    /// The summary of `app` (`None` before any of its requests finished).
    pub fn view(&self, app: &str) -> Option<ServingView> {
        let apps = self.apps.lock().expect("serving lock");
        let s = apps.get(app)?;
        let col = |f: &dyn Fn(&Sample) -> Option<f64>| s.recent.iter().filter_map(f).collect::<Vec<f64>>();
        let tokens: u64 = s.recent.iter().filter(|x| x.ttft_s.is_some()).map(|x| x.tokens).sum();
        let decode: f64 = s.recent.iter().filter(|x| x.ttft_s.is_some()).map(|x| x.decode_s).sum();
        Some(ServingView {
            done: s.done,
            failed: s.failed,
            window: s.recent.len(),
            latency_p50_s: quantile(col(&|x| Some(x.latency_s)), 0.5),
            latency_p90_s: quantile(col(&|x| Some(x.latency_s)), 0.9),
            latency_p99_s: quantile(col(&|x| Some(x.latency_s)), 0.99),
            queue_wait_p50_s: quantile(col(&|x| x.queue_wait_s), 0.5),
            queue_wait_p99_s: quantile(col(&|x| x.queue_wait_s), 0.99),
            ttft_p50_s: quantile(col(&|x| x.ttft_s), 0.5),
            ttft_p90_s: quantile(col(&|x| x.ttft_s), 0.9),
            ttft_p99_s: quantile(col(&|x| x.ttft_s), 0.99),
            itl_p50_s: quantile(col(&|x| x.itl_s), 0.5),
            tokens_per_s: (decode > 0.0).then(|| tokens as f64 / decode),
        })
    }
}

/// Watches the results prefix for as long as fleetd runs, counting each result written (from
/// the moment it starts: results written before are history, not serving now).
pub async fn run(ctx: Arc<Ctx>) {
    let prefix = format!("{}results/", ctx.keys.root());
    loop {
        match ctx.store.watch(&prefix, 0).await {
            Ok(mut w) => {
                while let Some(ev) = w.recv().await {
                    match ev {
                        Ok(WatchEvent::Put(kv)) => {
                            if let Ok(r) = kv.json::<RequestRecord>() {
                                ctx.serving.observe(&ctx.metrics, &r);
                            }
                        }
                        Ok(WatchEvent::Delete { .. }) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "results watch ended; watching again");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch results for serving metrics; trying again"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: i64) -> fleet_core::Time {
        chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn finished_requests_give_latency_queue_wait_ttft_itl_and_tokens() {
        let m = Metrics::new();
        let s = Serving::default();
        let llm = |id: u64, wait: i64, end: i64| RequestRecord {
            id,
            app: "chat".into(),
            input: json!({"prompt": "x"}),
            submitted_at: t(0),
            attempts: 1,
            owner: None,
            state: RequestState::Done {
                output: json!({"text": "a b c", "usage": {"completion_tokens": 5},
                               "timing": {"first_token_s": 0.5, "decode_s": 2.0}}),
                runner: 7,
                finished_at: t(end),
                started_at: Some(t(wait)),
            },
        };
        s.observe(&m, &llm(1, 1, 4));
        s.observe(&m, &llm(2, 3, 6));
        s.observe(
            &m,
            &RequestRecord {
                state: RequestState::Failed {
                    error: "bad request: x".into(),
                    finished_at: t(2),
                    started_at: Some(t(1)),
                },
                ..llm(3, 0, 0)
            },
        );
        // Still queued: not counted.
        s.observe(&m, &RequestRecord { state: RequestState::Queued, ..llm(4, 0, 0) });
        let v = s.view("chat").unwrap();
        assert_eq!((v.done, v.failed, v.window), (2, 1, 3));
        assert_eq!(v.latency_p50_s, Some(4.0));
        assert_eq!(v.latency_p99_s, Some(6.0));
        assert_eq!(v.queue_wait_p50_s, Some(1.0));
        assert_eq!(v.queue_wait_p99_s, Some(3.0));
        assert_eq!((v.ttft_p50_s, v.ttft_p99_s), (Some(1.5), Some(3.5)));
        assert_eq!(v.itl_p50_s, Some(0.5));
        assert_eq!(v.tokens_per_s, Some(2.5));
        assert_eq!(s.view("other"), None);
        let text = m.encode();
        assert!(text.contains("fleet_generated_tokens_total{app=\"chat\",runner=\"7\"} 10"), "{text}");
        assert!(text.contains("fleet_requests_finished_total{app=\"chat\",outcome=\"failed\"} 1"), "{text}");
        assert!(text.contains("fleet_time_to_first_token_seconds_count{app=\"chat\"} 2"), "{text}");
        assert!(text.contains("fleet_inter_token_seconds_sum{app=\"chat\"} 1.0"), "{text}");
        assert!(text.contains("fleet_request_queue_wait_seconds_count{app=\"chat\"} 3"), "{text}");
    }
}
