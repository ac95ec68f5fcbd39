//! `-o json` and `-o yaml` for every command that shows a resource.

use serde_json::Value;

/// Prints `v` as pretty JSON or YAML.
pub fn print(v: &Value, yaml: bool) {
    if yaml {
        out!("{}", to_yaml(v));
    } else {
        outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        // Quoted whenever a plain scalar could read as something else.
        Value::String(s) => {
            let plain = !s.is_empty()
                && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./@".contains(c))
                && !matches!(s.as_str(), "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "~")
                && s.parse::<f64>().is_err();
            if plain { s.clone() } else { serde_json::to_string(s).unwrap_or_default() }
        }
        _ => unreachable!("containers are not scalars"),
    }
}

fn is_empty_container(v: &Value) -> Option<&'static str> {
    match v {
        Value::Array(a) if a.is_empty() => Some("[]"),
        Value::Object(o) if o.is_empty() => Some("{}"),
        _ => None,
    }
}

/// YAML 1.2 block style (JSON strings are valid YAML double-quoted scalars).
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    emit(v, 0, &mut out);
    if out.is_empty() || !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

fn emit(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(o) if !o.is_empty() => {
            for (k, val) in o {
                let key = scalar(&Value::String(k.clone()));
                match (val, is_empty_container(val)) {
                    (_, Some(e)) => out.push_str(&format!("{pad}{key}: {e}\n")),
                    (Value::Object(_) | Value::Array(_), None) => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        emit(val, indent + 2, out);
                    }
                    _ => out.push_str(&format!("{pad}{key}: {}\n", scalar(val))),
                }
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for item in a {
                match (item, is_empty_container(item)) {
                    (_, Some(e)) => out.push_str(&format!("{pad}- {e}\n")),
                    (Value::Object(_) | Value::Array(_), None) => {
                        let mut inner = String::new();
                        emit(item, indent + 2, &mut inner);
                        // The first line goes after the dash.
                        out.push_str(&format!("{pad}- {}", &inner[indent + 2..]));
                    }
                    _ => out.push_str(&format!("{pad}- {}\n", scalar(item))),
                }
            }
        }
        other => match is_empty_container(other) {
            Some(e) => out.push_str(&format!("{pad}{e}\n")),
            None => out.push_str(&format!("{pad}{}\n", scalar(other))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_of_nested_values() {
        let v = serde_json::json!({
            "name": "llm", "n": 3, "ok": true, "tags": ["a b", "x"], "empty": [],
            "nodes": [{"id": 1, "state": {"state": "ready"}}, {"id": 2, "price": "8.00"}],
            "odd": "true", "num": "12"
        });
        let y = to_yaml(&v);
        let want = "empty: []\nn: 3\nname: llm\nnodes:\n  - id: 1\n    state:\n      state: ready\n  - id: 2\n    price: \"8.00\"\nnum: \"12\"\nodd: \"true\"\nok: true\ntags:\n  - \"a b\"\n  - x\n";
        assert_eq!(y, want);
    }
}
