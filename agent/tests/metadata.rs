//! The interruption-notice poller against local servers that answer as each cloud's metadata
//! endpoint does (paths, required headers, documents), before and after a notice.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use fleet_agent::metadata::{NoticeConfig, NoticeSource, Poller};

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn poller(source: NoticeSource, endpoint: String) -> Poller {
    Poller::new(NoticeConfig { source, endpoint, poll: Duration::from_millis(100) })
}

#[tokio::test]
async fn gcp_preemption_and_maintenance() {
    // (preempted, maintenance-event)
    let state = Arc::new(Mutex::new(("FALSE", "NONE")));
    let s1 = state.clone();
    let s2 = state.clone();
    let flavor = |h: &HeaderMap| h.get("metadata-flavor").map(|v| v.as_bytes()) == Some(b"Google");
    let app = Router::new()
        .route(
            "/computeMetadata/v1/instance/preempted",
            get(move |h: HeaderMap| {
                let s = s1.clone();
                async move {
                    if !flavor(&h) {
                        return (StatusCode::FORBIDDEN, "Missing Metadata-Flavor:Google header.".to_string());
                    }
                    (StatusCode::OK, s.lock().unwrap().0.to_string())
                }
            }),
        )
        .route(
            "/computeMetadata/v1/instance/maintenance-event",
            get(move |h: HeaderMap| {
                let s = s2.clone();
                async move {
                    if !flavor(&h) {
                        return (StatusCode::FORBIDDEN, String::new());
                    }
                    (StatusCode::OK, s.lock().unwrap().1.to_string())
                }
            }),
        );
    let mut p = poller(NoticeSource::Gcp, serve(app).await);
    let now = chrono::Utc::now();
    assert_eq!(p.check(now).await.unwrap(), None);
    state.lock().unwrap().1 = "TERMINATE_ON_HOST_MAINTENANCE";
    let n = p.check(now).await.unwrap().expect("maintenance notice");
    assert_eq!((n.source.as_str(), n.kind.as_str()), ("gcp", "TERMINATE_ON_HOST_MAINTENANCE"));
    *state.lock().unwrap() = ("TRUE", "NONE");
    assert_eq!(p.check(now).await.unwrap().expect("preemption").kind, "preempted");
}

#[tokio::test]
async fn azure_scheduled_events() {
    let doc = Arc::new(Mutex::new(r#"{"DocumentIncarnation": 0, "Events": []}"#.to_string()));
    let d = doc.clone();
    let app = Router::new().route(
        "/metadata/scheduledevents",
        get(move |h: HeaderMap| {
            let d = d.clone();
            async move {
                if h.get("metadata").map(|v| v.as_bytes()) != Some(b"true") {
                    return (
                        StatusCode::BAD_REQUEST,
                        r#"{"error": "Bad request. Required metadata header not specified"}"#.to_string(),
                    );
                }
                (StatusCode::OK, d.lock().unwrap().clone())
            }
        }),
    );
    let mut p = poller(NoticeSource::Azure, serve(app).await);
    let now = chrono::Utc::now();
    assert_eq!(p.check(now).await.unwrap(), None);
    // A freeze is seconds long: not an interruption.
    *doc.lock().unwrap() = r#"{"DocumentIncarnation": 1, "Events": [{"EventId": "a", "EventType": "Freeze", "ResourceType": "VirtualMachine", "Resources": ["vm1"], "EventStatus": "Scheduled", "NotBefore": "Mon, 19 Sep 2016 18:29:47 GMT"}]}"#.into();
    assert_eq!(p.check(now).await.unwrap(), None);
    *doc.lock().unwrap() = r#"{"DocumentIncarnation": 2, "Events": [{"EventId": "b", "EventType": "Preempt", "ResourceType": "VirtualMachine", "Resources": ["vm1"], "EventStatus": "Scheduled", "NotBefore": "Mon, 19 Sep 2016 18:29:47 GMT", "Description": "", "EventSource": "Platform", "DurationInSeconds": -1}]}"#.into();
    let n = p.check(now).await.unwrap().expect("spot eviction");
    assert_eq!((n.source.as_str(), n.kind.as_str()), ("azure", "Preempt"));
    assert_eq!(n.not_before.as_deref(), Some("Mon, 19 Sep 2016 18:29:47 GMT"));
}

#[tokio::test]
async fn aws_token_expiry_and_an_unreachable_endpoint_are_errors_not_notices() {
    let app = Router::new()
        .route("/latest/api/token", axum::routing::put(|| async { "tok" }))
        .route("/latest/meta-data/spot/instance-action", get(|| async { (StatusCode::UNAUTHORIZED, "") }));
    let mut p = poller(NoticeSource::Aws, serve(app).await);
    let e = p.check(chrono::Utc::now()).await.unwrap_err();
    assert!(e.contains("token expired"), "{e}");
    let mut p = poller(NoticeSource::Aws, "http://127.0.0.1:1".into());
    assert!(p.check(chrono::Utc::now()).await.is_err());
}
