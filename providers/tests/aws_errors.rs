//! EC2 error mapping through the real SDK: a local HTTP server answers as EC2 does, with its
//! error XML (`<Response><Errors><Error><Code>…`), status codes and Retry-After, for every code
//! the adapter maps. moto cannot produce these (it never runs out of capacity).
#![cfg(feature = "aws")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_core::{CapacityType, Catalog, Cloud, OfferingKey, Secret};
use fleet_providers::aws::{AwsConfig, AwsProvider, StaticCredentials};
use fleet_providers::{LaunchRequest, Provider, ProviderError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the server answers to one EC2 action: (action, HTTP status, error code, Retry-After).
#[derive(Clone, Default)]
struct Script {
    action: &'static str,
    status: u16,
    code: &'static str,
    retry_after: Option<u64>,
}

const EMPTY_DESCRIBE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>8f7724cf-496f-496e-8fe3-example</requestId><reservationSet/></DescribeInstancesResponse>"#;

fn error_xml(code: &str) -> String {
    let message = match code {
        "InsufficientInstanceCapacity" => {
            "We currently do not have sufficient p5.48xlarge capacity in the Availability Zone you requested (us-east-1a). Our system will be working on provisioning additional capacity. You can currently get p5.48xlarge capacity by not specifying an Availability Zone in your request or choosing us-east-1b, us-east-1c."
        }
        "VcpuLimitExceeded" => {
            "You have requested more vCPU capacity than your current vCPU limit of 0 allows for the instance bucket that the specified instance type belongs to. Please visit http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit."
        }
        "RequestLimitExceeded" => "Request limit exceeded.",
        "UnauthorizedOperation" => "You are not authorized to perform this operation.",
        "AuthFailure" => "AWS was not able to validate the provided access credentials",
        _ => "The request could not be completed.",
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>ea966190-f9aa-478e-9ede-example</RequestID></Response>"#
    )
}

async fn serve(script: Arc<Mutex<Script>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let script = script.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head, then as much body as Content-Length says.
                let body_start = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..body_start]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < body_start + len {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = String::from_utf8_lossy(&buf[body_start..]).to_string();
                let s = script.lock().unwrap().clone();
                let (status, xml, retry_after) = if body.contains(&format!("Action={}", s.action)) {
                    (s.status, error_xml(s.code), s.retry_after)
                } else if body.contains("Action=DescribeInstances") {
                    (200, EMPTY_DESCRIBE.to_string(), None)
                } else {
                    (500, error_xml("InternalError"), None)
                };
                let extra = retry_after.map(|r| format!("Retry-After: {r}\r\n")).unwrap_or_default();
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: text/xml;charset=UTF-8\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{xml}",
                    xml.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    url
}

async fn provider(url: &str) -> AwsProvider {
    let cfg = AwsConfig {
        endpoint_url: Some(url.to_string()),
        credentials: Some(StaticCredentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            session_token: None,
        }),
        max_attempts: 1,
        ..AwsConfig::new("errors", "us-east-1", "ami-03cf127a")
    };
    AwsProvider::connect(cfg, Arc::new(Catalog::default())).await
}

fn offering() -> OfferingKey {
    OfferingKey {
        cloud: Cloud::Aws,
        region: "us-east-1".into(),
        zone: None,
        instance_type: "p5.48xlarge".into(),
        capacity: CapacityType::Spot,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_mapped_ec2_code_through_the_sdk() {
    let script = Arc::new(Mutex::new(Script::default()));
    let url = serve(script.clone()).await;
    let p = provider(&url).await;
    let req = LaunchRequest::new("errors", "n1", "app", offering());
    let cases: [(&str, u16, &str); 11] = [
        ("InsufficientInstanceCapacity", 500, "insufficient-capacity"),
        ("InsufficientHostCapacity", 500, "insufficient-capacity"),
        ("SpotMaxPriceTooLow", 400, "insufficient-capacity"),
        ("InstanceLimitExceeded", 400, "quota-exceeded"),
        ("VcpuLimitExceeded", 400, "quota-exceeded"),
        ("MaxSpotInstanceCountExceeded", 400, "quota-exceeded"),
        ("RequestLimitExceeded", 503, "throttled"),
        ("UnauthorizedOperation", 403, "unauthorized"),
        ("AuthFailure", 401, "unauthorized"),
        ("InvalidParameterValue", 400, "invalid-request"),
        ("Unsupported", 400, "invalid-request"),
    ];
    for (code, status, kind) in cases {
        *script.lock().unwrap() = Script { action: "RunInstances", status, code, retry_after: None };
        let e = p.launch(&req).await.unwrap_err();
        assert_eq!(e.kind(), kind, "{code}: {e}");
        assert!(e.to_string().contains(code), "{code}: the message should keep the vendor code: {e}");
        if matches!(kind, "insufficient-capacity" | "quota-exceeded") {
            assert_eq!(e.unavailable_offering(), Some(&offering()), "{code}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_not_found_and_terminate_of_a_gone_instance() {
    let script = Arc::new(Mutex::new(Script::default()));
    let url = serve(script.clone()).await;
    let p = provider(&url).await;
    *script.lock().unwrap() =
        Script { action: "RunInstances", status: 503, code: "RequestLimitExceeded", retry_after: Some(7) };
    let e = p.launch(&LaunchRequest::new("errors", "n1", "app", offering())).await.unwrap_err();
    assert!(
        matches!(e, ProviderError::Throttled { retry_after, .. } if retry_after == Duration::from_secs(7)),
        "{e:?}"
    );

    *script.lock().unwrap() =
        Script { action: "DescribeInstances", status: 400, code: "InvalidInstanceID.NotFound", retry_after: None };
    assert!(matches!(p.get("i-0123456789abcdef0").await, Err(ProviderError::NotFound { .. })));
    // Terminating what the cloud does not know is fine: callers retry until NotFound.
    p.terminate("i-0123456789abcdef0").await.unwrap();

    // Nothing listening: a transient error, never a panic.
    drop(p);
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let p = provider(&dead).await;
    assert_eq!(p.list().await.unwrap_err().kind(), "transient");
}
