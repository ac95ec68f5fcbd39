//! Interruption notices from the cloud's instance metadata endpoint, polled so the orchestrator
//! hears of a spot reclaim or maintenance as soon as the cloud announces it (AWS gives two
//! minutes, GCP about 30 s, Azure's Scheduled Events at least 30 s for Spot).
//!
//! - AWS: IMDSv2 token (`PUT /latest/api/token`), then `GET /latest/meta-data/spot/instance-action`:
//!   404 while there is none, else `{"action": "terminate|stop|hibernate", "time": "…"}`.
//! - GCP: `GET /computeMetadata/v1/instance/preempted` (`TRUE`/`FALSE`) and
//!   `…/instance/maintenance-event` (`NONE` or the event), with `Metadata-Flavor: Google`.
//! - Azure: `GET /metadata/scheduledevents?api-version=2020-07-01` with `Metadata: true`; events
//!   of type Preempt, Terminate, Redeploy or Reboot count.

use std::time::Duration;

use fleet_core::Time;
use fleet_state::model::InterruptionNotice;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeSource {
    Aws,
    Gcp,
    Azure,
}

impl std::str::FromStr for NoticeSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "aws" => Ok(NoticeSource::Aws),
            "gcp" => Ok(NoticeSource::Gcp),
            "azure" => Ok(NoticeSource::Azure),
            _ => Err(format!("unknown interruption source '{s}' (aws, gcp or azure)")),
        }
    }
}

impl NoticeSource {
    pub fn name(self) -> &'static str {
        match self {
            NoticeSource::Aws => "aws",
            NoticeSource::Gcp => "gcp",
            NoticeSource::Azure => "azure",
        }
    }

    pub fn default_endpoint(self) -> &'static str {
        match self {
            NoticeSource::Aws | NoticeSource::Azure => "http://169.254.169.254",
            NoticeSource::Gcp => "http://metadata.google.internal",
        }
    }
}

#[derive(Debug, Clone)]
pub struct NoticeConfig {
    pub source: NoticeSource,
    /// Scheme, host and port, no path (tests point it at a local server).
    pub endpoint: String,
    pub poll: Duration,
}

pub struct Poller {
    cfg: NoticeConfig,
    client: Client<HttpConnector, Full<Bytes>>,
    aws_token: Option<String>,
}

/// Metadata endpoints answer in milliseconds; a slow one must not hold up the next poll.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

impl Poller {
    pub fn new(cfg: NoticeConfig) -> Poller {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Poller { cfg, client, aws_token: None }
    }

    pub fn config(&self) -> &NoticeConfig {
        &self.cfg
    }

    async fn call(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Result<(StatusCode, String), String> {
        let url = format!("{}{}", self.cfg.endpoint.trim_end_matches('/'), path);
        let mut req = Request::builder().method(method).uri(&url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::new())).map_err(|e| format!("{url}: {e}"))?;
        let call = async {
            let resp = self.client.request(req).await.map_err(|e| format!("{url}: {e}"))?;
            let status = resp.status();
            let body = resp.into_body().collect().await.map_err(|e| format!("{url}: {e}"))?.to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| format!("{url}: no answer in {CALL_TIMEOUT:?}"))?
    }

    /// One look at the endpoint: the notice if there is one.
    pub async fn check(&mut self, now: Time) -> Result<Option<InterruptionNotice>, String> {
        let notice = |kind: String, not_before: Option<String>| InterruptionNotice {
            source: self.cfg.source.name().to_string(),
            kind,
            not_before,
            noticed_at: now,
        };
        match self.cfg.source {
            NoticeSource::Aws => {
                if self.aws_token.is_none() {
                    let (s, body) = self
                        .call(Method::PUT, "/latest/api/token", &[("X-aws-ec2-metadata-token-ttl-seconds", "21600")])
                        .await?;
                    if !s.is_success() {
                        return Err(format!("IMDSv2 token refused: HTTP {s}"));
                    }
                    self.aws_token = Some(body.trim().to_string());
                }
                let token = self.aws_token.clone().unwrap_or_default();
                let (s, body) = self
                    .call(
                        Method::GET,
                        "/latest/meta-data/spot/instance-action",
                        &[("X-aws-ec2-metadata-token", &token)],
                    )
                    .await?;
                match s {
                    StatusCode::NOT_FOUND => Ok(None),
                    StatusCode::UNAUTHORIZED => {
                        // The token expired: get a new one next time.
                        self.aws_token = None;
                        Err("IMDSv2 token expired".into())
                    }
                    s if s.is_success() => {
                        let v: serde_json::Value =
                            serde_json::from_str(&body).map_err(|e| format!("instance-action is not JSON: {e}"))?;
                        let action = v["action"].as_str().ok_or("instance-action has no \"action\"")?.to_string();
                        Ok(Some(notice(action, v["time"].as_str().map(str::to_string))))
                    }
                    s => Err(format!("instance-action: HTTP {s}")),
                }
            }
            NoticeSource::Gcp => {
                let h = [("Metadata-Flavor", "Google")];
                let (s, body) = self.call(Method::GET, "/computeMetadata/v1/instance/preempted", &h).await?;
                if !s.is_success() {
                    return Err(format!("preempted: HTTP {s}"));
                }
                if body.trim().eq_ignore_ascii_case("TRUE") {
                    return Ok(Some(notice("preempted".into(), None)));
                }
                let (s, body) = self.call(Method::GET, "/computeMetadata/v1/instance/maintenance-event", &h).await?;
                if !s.is_success() {
                    return Err(format!("maintenance-event: HTTP {s}"));
                }
                let ev = body.trim();
                Ok((ev != "NONE" && !ev.is_empty()).then(|| notice(ev.to_string(), None)))
            }
            NoticeSource::Azure => {
                let (s, body) = self
                    .call(Method::GET, "/metadata/scheduledevents?api-version=2020-07-01", &[("Metadata", "true")])
                    .await?;
                if !s.is_success() {
                    return Err(format!("scheduledevents: HTTP {s}"));
                }
                let v: serde_json::Value =
                    serde_json::from_str(&body).map_err(|e| format!("scheduledevents is not JSON: {e}"))?;
                let events = v["Events"].as_array().cloned().unwrap_or_default();
                let hit = events
                    .iter()
                    .find(|e| matches!(e["EventType"].as_str(), Some("Preempt" | "Terminate" | "Redeploy" | "Reboot")));
                Ok(hit.map(|e| {
                    notice(
                        e["EventType"].as_str().unwrap_or_default().to_string(),
                        e["NotBefore"].as_str().filter(|s| !s.is_empty()).map(str::to_string),
                    )
                }))
            }
        }
    }
}
