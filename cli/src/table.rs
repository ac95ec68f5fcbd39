//! Plain aligned tables, kubectl-style: upper-case headers, two spaces between columns.

/// A JSON value as a table cell: `-` for null, strings bare, whole numbers without `.0`.
/// An amount of money from fleetd's JSON (a decimal string, exact) as people read it: to the
/// cent, like every amount fleetctl prints (`$12.35`); `-` for null.
pub fn usd(v: &serde_json::Value) -> String {
    match v.as_str().map(str::parse::<fleet_core::Money>) {
        Some(Ok(m)) => m.cents().to_string(),
        Some(Err(_)) => cell(v),
        None if v.is_null() => "-".into(),
        None => cell(v),
    }
}

/// A price per hour (`$2.49/h`), to the cent.
pub fn usd_per_hour(v: &serde_json::Value) -> String {
    match usd(v).as_str() {
        "-" => "-".into(),
        x => format!("{x}/h"),
    }
}

pub fn cell(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => "-".into(),
        Value::String(x) => x.clone(),
        // 989.0 reads as 989.
        Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0 && f.abs() < 1e15) => {
            format!("{}", n.as_f64().unwrap_or_default() as i64)
        }
        other => other.to_string(),
    }
}

pub struct Table {
    headers: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// `right` marks columns aligned to the right (numbers).
    pub fn new(headers: &[(&'static str, bool)]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.0).collect(),
            right: headers.iter().map(|h| h.1).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        let line = |cells: Vec<&str>, out: &mut String| {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i > 0 {
                    s.push_str("  ");
                }
                let pad = widths[i] - c.chars().count();
                if self.right[i] {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(c);
                } else {
                    s.push_str(c);
                    if i + 1 < cells.len() {
                        s.push_str(&" ".repeat(pad));
                    }
                }
            }
            out.push_str(s.trim_end());
            out.push('\n');
        };
        line(self.headers.clone(), &mut out);
        for r in &self.rows {
            line(r.iter().map(String::as_str).collect(), &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let mut t = Table::new(&[("NAME", false), ("PRICE", true)]);
        assert_eq!(super::usd(&serde_json::json!("3.765")), "$3.77");
        assert_eq!(super::usd(&serde_json::json!("98")), "$98.00");
        assert_eq!(super::usd(&serde_json::Value::Null), "-");
        assert_eq!(super::usd_per_hour(&serde_json::json!("2.4929")), "$2.49/h");
        t.row(vec!["a".into(), "$1.00".into()]);
        t.row(vec!["longer".into(), "$10.50".into()]);
        assert_eq!(t.render(), "NAME     PRICE\na        $1.00\nlonger  $10.50\n");
    }
}
