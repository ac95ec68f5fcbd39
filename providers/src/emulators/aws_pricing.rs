//! The AWS Price List Query API's GetProducts (JSON 1.1: `POST /` with
//! `X-Amz-Target: AWSPriceListService.GetProducts`), answering with price list entries as AWS
//! writes them: each a JSON document in a string, with `product.attributes` and `terms.OnDemand`.
//! Filters are applied as TERM_MATCH on the attributes; one entry a page, so clients follow
//! `NextToken`.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::{Running, serve};

#[derive(Debug)]
pub struct PricingEmulator {
    pub running: Running,
    entries: Arc<Mutex<Vec<Value>>>,
}

impl std::ops::Deref for PricingEmulator {
    type Target = Running;
    fn deref(&self) -> &Running {
        &self.running
    }
}

/// A price list entry for an EC2 instance type in a region.
pub fn entry(instance_type: &str, region: &str, os: &str, tenancy: &str, usd: &str) -> Value {
    let sku = format!("{}{}", instance_type.replace('.', "").to_uppercase(), region.replace('-', "").to_uppercase());
    json!({
        "product": {
            "productFamily": "Compute Instance",
            "attributes": {
                "instanceType": instance_type, "regionCode": region, "operatingSystem": os, "tenancy": tenancy,
                "preInstalledSw": "NA", "capacitystatus": "Used", "marketoption": "OnDemand",
                "servicecode": "AmazonEC2", "usagetype": format!("BoxUsage:{instance_type}")
            },
            "sku": sku
        },
        "serviceCode": "AmazonEC2",
        "terms": {"OnDemand": {format!("{sku}.JRTCKXETXF"): {
            "priceDimensions": {format!("{sku}.JRTCKXETXF.6YS6EN2CT7"): {
                "unit": "Hrs", "endRange": "Inf", "beginRange": "0",
                "description": format!("${usd} per On Demand {os} {instance_type} Instance Hour"),
                "pricePerUnit": {"USD": usd}, "appliesTo": []
            }},
            "sku": sku, "effectiveDate": "2026-11-01T00:00:00Z", "offerTermCode": "JRTCKXETXF", "termAttributes": {}
        }}},
        "version": "20261101000000",
        "publicationDate": "2026-11-01T00:00:00Z"
    })
}

/// The same product bought as an EC2 Capacity Block (`marketoption: CapacityBlock`): listed with
/// the on-demand ones, under the same attributes otherwise, at another price.
pub fn capacity_block_entry(instance_type: &str, region: &str, usd: &str) -> Value {
    let mut e = entry(instance_type, region, "Linux", "Shared", usd);
    e["product"]["attributes"]["marketoption"] = json!("CapacityBlock");
    e["product"]["sku"] = json!(format!("CB{}", e["product"]["sku"].as_str().unwrap_or("")));
    e
}

impl PricingEmulator {
    pub async fn start(entries: Vec<Value>) -> PricingEmulator {
        let entries = Arc::new(Mutex::new(entries));
        let e = entries.clone();
        let app = Router::new().route(
            "/",
            post(move |h: HeaderMap, body: String| {
                let e = e.clone();
                async move { get_products(&e, &h, &body) }
            }),
        );
        PricingEmulator { running: serve(app).await, entries }
    }

    pub fn set(&self, entries: Vec<Value>) {
        *self.entries.lock().unwrap() = entries;
    }
}

fn get_products(entries: &Mutex<Vec<Value>>, h: &HeaderMap, body: &str) -> Response {
    let json11 = |status: u16, v: Value| {
        let mut r = super::json(status, v);
        r.headers_mut().insert("content-type", "application/x-amz-json-1.1".parse().expect("header"));
        r
    };
    if h.get("x-amz-target").and_then(|v| v.to_str().ok()) != Some("AWSPriceListService.GetProducts") {
        return json11(400, json!({"__type": "UnknownOperationException", "message": "unknown operation"}));
    }
    if !h.get("authorization").and_then(|v| v.to_str().ok()).is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256 ")) {
        return json11(
            400,
            json!({"__type": "MissingAuthenticationTokenException", "message": "Missing Authentication Token"}),
        );
    }
    let req: Value = serde_json::from_str(body).unwrap_or_default();
    let filters: Vec<(String, String)> = req["Filters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| Some((f["Field"].as_str()?.to_string(), f["Value"].as_str()?.to_string())))
        .collect();
    let all: Vec<String> = entries
        .lock()
        .unwrap()
        .iter()
        .filter(|e| filters.iter().all(|(k, v)| e["product"]["attributes"][k].as_str() == Some(v)))
        .map(|e| e.to_string())
        .collect();
    let start: usize = req["NextToken"].as_str().and_then(|t| t.parse().ok()).unwrap_or(0);
    let page: Vec<&String> = all.iter().skip(start).take(1).collect();
    let mut out = json!({"FormatVersion": "aws_v1", "PriceList": page});
    if start + 1 < all.len() {
        out["NextToken"] = json!((start + 1).to_string());
    }
    json11(200, out).into_response()
}
