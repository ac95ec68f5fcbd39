//! What each adapter relies on from its cloud's official API definition, written down as data of
//! the project's own (`providers/api/{cloud}.json`, each naming its sources and the date they
//! were read), and a checker that holds every recorded exchange with a local server to it: the
//! request an adapter sent (an unknown field, a missing required one, a value outside an
//! enumeration fails) and the answer the server gave (a missing required field fails). So the
//! adapters and the servers cannot drift apart in the same wrong way unnoticed.
//!
//! The schemas are a small subset of JSON Schema: `type` (one or a list), `properties`,
//! `required`, `additionalProperties` (`false` closes an object; request objects are closed unless
//! they say `true`, answers are open unless they say `false`), `values` (every value of a map),
//! `items`, `enum`, `anyOf`, and `$ref` to the file's `definitions`.
//!
//! An exchange is matched to an operation by method and path (`{}` matches one segment); for a
//! GraphQL API (`"graphql": true`), by the document's first field, the request schema applying to
//! `variables.input` and the answer's to `data.<field>`. Answers with a status of 500 or more are
//! not checked (a gateway may answer them with anything); other failures against `error`.

use serde_json::Value;

use super::Recorded;

/// The definitions this crate ships, by cloud.
pub fn definition(cloud: &str) -> Value {
    let text = match cloud {
        "gcp" => include_str!("../../api/gcp.json"),
        "azure" => include_str!("../../api/azure.json"),
        "lambda" => include_str!("../../api/lambda.json"),
        "runpod" => include_str!("../../api/runpod.json"),
        "aws-pricing" => include_str!("../../api/aws-pricing.json"),
        other => panic!("no API definition for {other}"),
    };
    serde_json::from_str(text).unwrap_or_else(|e| panic!("api/{cloud}.json: {e}"))
}

/// Every way `exchanges` depart from `def`; empty when they all conform.
pub fn check(def: &Value, exchanges: &[Recorded]) -> Vec<String> {
    let mut out = Vec::new();
    let graphql = def["graphql"] == true;
    for r in exchanges {
        let what = if graphql {
            graphql_field(r.body["query"].as_str().unwrap_or(""))
        } else {
            format!("{} {}", r.method, r.path)
        };
        let Some(op) = find_op(def, r, graphql, &what) else {
            out.push(format!("{what}: no operation of the definition matches"));
            continue;
        };
        let name = op["name"].as_str().unwrap_or("?");
        let mut errs = Vec::new();
        for q in op["query_required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if r.query_param(q).is_none_or(|v| v.is_empty()) {
                errs.push(format!("query parameter {q} is required"));
            }
        }
        let request = if graphql { &r.body["variables"]["input"] } else { &r.body };
        match op.get("request") {
            Some(schema) => validate(def, request, schema, true, "request", &mut errs),
            None if !request.is_null() => errs.push("request: the operation takes no body".into()),
            None => {}
        }
        let failed = r.status >= 300 || (graphql && !r.response["errors"].is_null());
        if r.status < 500 {
            if failed {
                let schema = op.get("error").unwrap_or(&def["error"]);
                validate(def, &r.response, schema, false, "error answer", &mut errs);
            } else if graphql {
                if let Some(schema) = op.get("response") {
                    validate(def, &r.response["data"][what.as_str()], schema, false, "answer", &mut errs);
                }
            } else if let Some(schema) = op.get("response") {
                validate(def, &r.response, schema, false, "answer", &mut errs);
            }
        }
        out.extend(errs.into_iter().map(|e| format!("{name} ({} {}): {e}", r.method, r.path)));
    }
    out
}

/// Panics listing every departure (for tests).
pub fn assert_conforms(cloud: &str, exchanges: &[Recorded]) {
    assert!(!exchanges.is_empty(), "no exchange with the {cloud} server to check");
    let errs = check(&definition(cloud), exchanges);
    assert!(errs.is_empty(), "exchanges depart from api/{cloud}.json:\n{}", errs.join("\n"));
}

fn find_op<'a>(def: &'a Value, r: &Recorded, graphql: bool, what: &str) -> Option<&'a Value> {
    def["operations"].as_array()?.iter().find(|op| {
        if graphql {
            op["field"].as_str() == Some(what)
        } else {
            op["method"].as_str() == Some(r.method.as_str()) && path_matches(op["path"].as_str().unwrap_or(""), &r.path)
        }
    })
}

fn path_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.trim_end_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    t.len() == p.len() && t.iter().zip(&p).all(|(a, b)| *a == "{}" && !b.is_empty() || a == b)
}

/// `query Q($input: T) { gpuTypes(input: $input) { … } }` → `gpuTypes`.
fn graphql_field(q: &str) -> String {
    let body = q.split_once('{').map(|(_, b)| b).unwrap_or("");
    body.trim_start().split(|c: char| !c.is_ascii_alphanumeric() && c != '_').next().unwrap_or("").to_string()
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `closed`: objects without `additionalProperties` refuse unknown fields (requests).
fn validate(def: &Value, v: &Value, schema: &Value, closed: bool, at: &str, errs: &mut Vec<String>) {
    if let Some(r) = schema["$ref"].as_str() {
        let target = &def["definitions"][r];
        if target.is_null() {
            errs.push(format!("{at}: the definition has no {r}"));
            return;
        }
        return validate(def, v, target, closed, at, errs);
    }
    if let Some(any) = schema["anyOf"].as_array() {
        let fits = any.iter().any(|s| {
            let mut e = Vec::new();
            validate(def, v, s, closed, at, &mut e);
            e.is_empty()
        });
        if !fits {
            errs.push(format!("{at}: fits none of its allowed shapes: {}", short(v)));
        }
        return;
    }
    let actual = type_of(v);
    let allowed: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let type_ok = allowed.is_empty() || allowed.iter().any(|t| *t == actual || (*t == "number" && actual == "integer"));
    if !type_ok {
        errs.push(format!("{at}: is {actual}, expected {}: {}", allowed.join(" or "), short(v)));
        return;
    }
    if let Some(values) = schema["enum"].as_array()
        && !values.contains(v)
    {
        errs.push(format!("{at}: {} is not one of {}", short(v), Value::Array(values.clone())));
    }
    match v {
        Value::Object(map) => {
            for r in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                if !map.contains_key(r) {
                    errs.push(format!("{at}.{r}: is required and missing"));
                }
            }
            let props = schema["properties"].as_object();
            let closed_here = match schema["additionalProperties"].as_bool() {
                Some(open) => !open,
                None => closed && props.is_some(),
            };
            for (k, x) in map {
                match props.and_then(|p| p.get(k)) {
                    Some(s) => validate(def, x, s, closed, &format!("{at}.{k}"), errs),
                    None if !schema["values"].is_null() => {
                        validate(def, x, &schema["values"], closed, &format!("{at}.{k}"), errs)
                    }
                    None if closed_here => errs.push(format!("{at}.{k}: is not a field the API defines")),
                    None => {}
                }
            }
        }
        Value::Array(items) if !schema["items"].is_null() => {
            for (i, x) in items.iter().enumerate() {
                validate(def, x, &schema["items"], closed, &format!("{at}[{i}]"), errs);
            }
        }
        _ => {}
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 { format!("{}…", &s[..s.floor_char_boundary(80)]) } else { s }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rec(method: &str, path: &str, body: Value, status: u16, response: Value) -> Recorded {
        Recorded {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            body,
            authorization: None,
            status,
            response,
        }
    }

    #[test]
    fn unknown_request_fields_missing_answer_fields_and_bad_enums_fail() {
        let def = json!({
            "definitions": {"Thing": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}},
            "error": {"type": "object", "required": ["error"]},
            "operations": [{
                "name": "things.launch", "method": "POST", "path": "/v1/{}/launch",
                "request": {"type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string"}, "kind": {"type": "string", "enum": ["a", "b"]},
                    "labels": {"type": "object", "values": {"type": "string"}}}},
                "response": {"$ref": "Thing"}
            }]
        });
        let ok =
            rec("POST", "/v1/p/launch", json!({"name": "x", "labels": {"k": "v"}}), 200, json!({"id": "1", "more": 2}));
        assert!(check(&def, &[ok]).is_empty());
        let bad = [
            rec("POST", "/v1/p/launch", json!({"name": "x", "quantity": 1}), 200, json!({"id": "1"})),
            rec("POST", "/v1/p/launch", json!({"name": "x"}), 200, json!({"other": 1})),
            rec("POST", "/v1/p/launch", json!({"name": "x", "kind": "c"}), 200, json!({"id": "1"})),
            rec("POST", "/v1/p/launch", json!({"kind": "a"}), 200, json!({"id": "1"})),
            rec("POST", "/v1/p/launch", json!({"name": "x", "labels": {"k": 1}}), 200, json!({"id": "1"})),
            rec("POST", "/v1/p/launch", json!({"name": "x"}), 400, json!({"message": "no"})),
            rec("GET", "/v1/p/launch", Value::Null, 200, json!({})),
        ];
        let errs: Vec<Vec<String>> = bad.iter().map(|r| check(&def, std::slice::from_ref(r))).collect();
        assert!(errs[0][0].contains("request.quantity: is not a field the API defines"), "{errs:?}");
        assert!(errs[1][0].contains("answer.id: is required and missing"), "{errs:?}");
        assert!(errs[2][0].contains("\"c\" is not one of"), "{errs:?}");
        assert!(errs[3][0].contains("request.name: is required"), "{errs:?}");
        assert!(errs[4][0].contains("request.labels.k: is integer, expected string"), "{errs:?}");
        assert!(errs[5][0].contains("error answer.error: is required"), "{errs:?}");
        assert!(errs[6][0].contains("no operation"), "{errs:?}");
        // 5xx answers are a gateway's to shape; not checked.
        assert!(check(&def, &[rec("POST", "/v1/p/launch", json!({"name": "x"}), 503, json!(null))]).is_empty());
    }

    #[test]
    fn every_shipped_definition_parses_and_names_its_sources() {
        for cloud in ["gcp", "azure", "lambda", "runpod", "aws-pricing"] {
            let d = definition(cloud);
            let sources = d["sources"].as_array().unwrap_or_else(|| panic!("{cloud}: no sources"));
            assert!(!sources.is_empty());
            for s in sources {
                assert!(s["name"].is_string() && s["url"].is_string(), "{cloud}: {s}");
                assert!(s["read"].as_str().is_some_and(|d| d.len() == 10), "{cloud}: a date: {s}");
            }
            assert!(d["operations"].as_array().is_some_and(|o| !o.is_empty()), "{cloud}");
        }
    }
}
