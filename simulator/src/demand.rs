//! Demand: requests with their arrival time and token counts, from the Azure LLM inference traces
//! (`TIMESTAMP,ContextTokens,GeneratedTokens`) or synthetic sources, and trace transforms.

use std::path::Path;

use chrono::{DateTime, NaiveDateTime};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One request. Times are virtual milliseconds from the start of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    pub at_ms: u64,
    pub context_tokens: u32,
    pub generated_tokens: u32,
}

/// A run's requests: every demand's arrivals merged in time order (ties in the order the
/// scenario lists its demands), and which demand each came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requests {
    pub arrivals: Vec<Arrival>,
    /// Per arrival, its index in `Scenario::demands`; empty when the scenario has one demand
    /// (all are its: a month of requests then carries no tags).
    pub demand: Vec<u16>,
}

impl Requests {
    /// One demand's requests, as they come.
    pub fn one(arrivals: Vec<Arrival>) -> Requests {
        Requests { arrivals, demand: Vec::new() }
    }

    /// Several demands' requests (each in time order), merged.
    pub fn merge(streams: Vec<Vec<Arrival>>) -> Requests {
        if streams.len() <= 1 {
            return Requests::one(streams.into_iter().next().unwrap_or_default());
        }
        let mut tagged: Vec<(Arrival, u16)> = streams
            .into_iter()
            .enumerate()
            .flat_map(|(i, v)| {
                let i = u16::try_from(i).expect("scenarios have at most MAX_DEMANDS demands");
                v.into_iter().map(move |a| (a, i))
            })
            .collect();
        // Stable: within a stream the order stays, between streams at one instant the listed order.
        tagged.sort_by_key(|(a, _)| a.at_ms);
        let (arrivals, demand) = tagged.into_iter().unzip();
        Requests { arrivals, demand }
    }

    /// The demand request `i` came from.
    pub fn demand_of(&self, i: usize) -> usize {
        demand_of(&self.demand, i)
    }
}

/// The demand request `i` came from, given [`Requests::demand`]'s tags (none: the one demand).
pub(crate) fn demand_of(tags: &[u16], i: usize) -> usize {
    tags.get(i).map_or(0, |d| usize::from(*d))
}

#[derive(Debug, thiserror::Error)]
pub enum DemandError {
    #[error("cannot read trace {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Row { path: String, line: u64, message: String },
    #[error("{path}: the trace has no requests")]
    Empty { path: String },
}

/// Reads an Azure LLM inference trace: the 2023 files (`2023-11-16 18:17:03.9799600`, no zone)
/// and the 2024 week-long ones (`2024-05-10 00:00:00.009930+00:00`) alike; a `T` between date and
/// time and a `Z` or `±HH:MM` offset are read too (times with an offset are taken in UTC, those
/// without as they stand). Arrivals are relative to the earliest request. Rows out of time order
/// (logs merged from several front ends) are put in order; rows at one instant keep theirs.
pub fn read_azure_trace(path: &Path) -> Result<Vec<Arrival>, DemandError> {
    let p = path.display().to_string();
    let mut rdr = csv::Reader::from_path(path).map_err(|e| match e.into_kind() {
        csv::ErrorKind::Io(source) => DemandError::Io { path: p.clone(), source },
        other => DemandError::Row { path: p.clone(), line: 1, message: format!("{other:?}") },
    })?;
    // (microseconds since the epoch, context tokens, generated tokens)
    let mut rows: Vec<(i64, u32, u32)> = Vec::new();
    let mut in_order = true;
    for rec in rdr.records() {
        let rec = rec.map_err(|e| DemandError::Row {
            path: p.clone(),
            line: e.position().map(|x| x.line()).unwrap_or(0),
            message: e.to_string(),
        })?;
        let line = rec.position().map(|x| x.line()).unwrap_or(0);
        let bad = |m: String| DemandError::Row { path: p.clone(), line, message: m };
        let ts = rec.get(0).unwrap_or("").trim();
        let t = trace_timestamp_us(ts).ok_or_else(|| {
            bad(format!(
                "TIMESTAMP '{ts}' is not YYYY-MM-DD HH:MM:SS[.fffffff][+HH:MM] (as the Azure LLM traces write it)"
            ))
        })?;
        let num = |i: usize, name: &str| -> Result<u32, DemandError> {
            let v = rec.get(i).unwrap_or("").trim();
            v.parse().map_err(|_| bad(format!("{name} '{v}' is not a whole number of tokens from 0 to {}", u32::MAX)))
        };
        let (ctx, gen_tokens) = (num(1, "ContextTokens")?, num(2, "GeneratedTokens")?);
        in_order &= rows.last().is_none_or(|&(last, _, _)| last <= t);
        rows.push((t, ctx, gen_tokens));
    }
    if !in_order {
        rows.sort_by_key(|&(t, _, _)| t); // stable: one instant's rows keep the file's order
    }
    let Some(&(t0, _, _)) = rows.first() else {
        return Err(DemandError::Empty { path: p });
    };
    Ok(rows
        .into_iter()
        .map(|(t, context_tokens, generated_tokens)| Arrival {
            // Whole milliseconds, truncated (as the difference of the two times always was).
            at_ms: ((t - t0) / 1000) as u64,
            context_tokens,
            generated_tokens,
        })
        .collect())
}

/// A trace's TIMESTAMP in microseconds since the epoch (finer digits are dropped): with an offset
/// (`+00:00`, `Z`) in UTC, without one as written. `None` if it is neither.
fn trace_timestamp_us(ts: &str) -> Option<i64> {
    // With an offset: chrono's RFC 3339 reader, which takes a space for the `T` (the 2024 files).
    if let Ok(t) = DateTime::parse_from_rfc3339(ts) {
        return Some(t.timestamp_micros());
    }
    // Without: %.f reads up to nine fractional digits, or none.
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(ts, f).ok())
        .map(|t| t.and_utc().timestamp_micros())
}

/// Stretches time (`factor` 2 = half the rate, same requests).
pub fn time_scale(v: &[Arrival], factor: f64) -> Vec<Arrival> {
    v.iter().map(|a| Arrival { at_ms: (a.at_ms as f64 * factor).round() as u64, ..*a }).collect()
}

/// Tiles `v` to fill `duration_ms` and shapes it: each request is kept `rate_scale ×
/// (1 + amplitude · sin(2π·(t/day − 0.25)))` times in expectation (peak at 12:00 of each
/// virtual day; `amplitude` 0 is flat). Seeded, so the same arguments give the same demand.
pub fn tile(v: &[Arrival], duration_ms: u64, rate_scale: f64, amplitude: f64, seed: u64) -> Vec<Arrival> {
    let Some(span) = v.last().map(|a| a.at_ms + 1) else { return Vec::new() };
    let mut rng = StdRng::seed_from_u64(seed);
    // Reserve what the tiling will hold (within a few percent), not grow a month of requests by doubling.
    let copies = duration_ms as f64 / span as f64 * v.len() as f64 * rate_scale.max(0.0) * (1.0 + amplitude.max(0.0));
    let mut out = Vec::with_capacity((copies.min(4e9) as usize).saturating_add(16));
    let mut offset = 0;
    while offset < duration_ms {
        for a in v {
            let t = offset + a.at_ms;
            if t >= duration_ms {
                break;
            }
            let phase = (t as f64 / 86_400_000.0 - 0.25) * std::f64::consts::TAU;
            let expected = (rate_scale * (1.0 + amplitude * phase.sin())).max(0.0);
            let mut copies = expected.floor() as u32;
            if rng.random::<f64>() < expected.fract() {
                copies += 1;
            }
            for _ in 0..copies {
                out.push(Arrival { at_ms: t, ..*a });
            }
        }
        offset += span;
    }
    out
}

/// A Poisson source of `rate` requests per second with fixed token counts.
pub fn poisson(rate: f64, duration_ms: u64, context_tokens: u32, generated_tokens: u32, seed: u64) -> Vec<Arrival> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    if rate <= 0.0 {
        return out;
    }
    let mut t = 0.0f64;
    loop {
        t += -(1.0 - rng.random::<f64>()).ln() / rate * 1000.0;
        if t >= duration_ms as f64 {
            return out;
        }
        out.push(Arrival { at_ms: t as u64, context_tokens, generated_tokens });
    }
}

/// A Poisson source whose rate follows the day: `rate × (1 + amplitude · sin(2π·(t/day − 0.25)))`
/// (peak at 12:00), drawn by thinning a Poisson process at the peak rate.
pub fn diurnal_poisson(
    rate: f64,
    amplitude: f64,
    duration_ms: u64,
    context_tokens: u32,
    generated_tokens: u32,
    seed: u64,
) -> Vec<Arrival> {
    let peak = rate * (1.0 + amplitude);
    let mut rng = StdRng::seed_from_u64(seed ^ 0xd1u64);
    poisson(peak, duration_ms, context_tokens, generated_tokens, seed)
        .into_iter()
        .filter(|a| {
            let phase = (a.at_ms as f64 / 86_400_000.0 - 0.25) * std::f64::consts::TAU;
            rng.random::<f64>() * (1.0 + amplitude) < 1.0 + amplitude * phase.sin()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_azure_code_trace() {
        let Some(d) = fleet_core::catalog::shared_data_dir() else { return };
        let v = read_azure_trace(&d.join("traces/azure_llm_2023/AzureLLMInferenceTrace_code.csv")).unwrap();
        assert_eq!(v.len(), 8819);
        assert_eq!(v[0].at_ms, 0);
        // SOURCE.md: 18:17:03.98 → 19:14:19.93, 57.3 minutes.
        assert!((3_430_000..3_440_000).contains(&v.last().unwrap().at_ms), "{}", v.last().unwrap().at_ms);
        assert!(v.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    }

    #[test]
    fn bad_rows_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.csv");
        std::fs::write(
            &f,
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.99,x,1\n",
        )
        .unwrap();
        let e = read_azure_trace(&f).unwrap_err().to_string();
        assert!(e.ends_with("t.csv:3: ContextTokens 'x' is not a whole number of tokens from 0 to 4294967295"), "{e}");
        // A count too large for the trace's reader says so too (it said "not a whole number").
        std::fs::write(&f, "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,99999999999\n")
            .unwrap();
        let e = read_azure_trace(&f).unwrap_err().to_string();
        assert!(
            e.ends_with("t.csv:2: GeneratedTokens '99999999999' is not a whole number of tokens from 0 to 4294967295"),
            "{e}"
        );
    }

    fn read(dir: &tempfile::TempDir, rows: &str) -> Result<Vec<Arrival>, DemandError> {
        let f = dir.path().join("t.csv");
        std::fs::write(&f, format!("TIMESTAMP,ContextTokens,GeneratedTokens\n{rows}")).unwrap();
        read_azure_trace(&f)
    }

    #[test]
    fn reads_the_2024_week_long_traces_format() {
        // The 2024 release (DynamoLLM) writes UTC offsets and six fractional digits, and a row at a
        // whole second has no fraction at all.
        let dir = tempfile::tempdir().unwrap();
        let v = read(
            &dir,
            "2024-05-10 00:00:00.009930+00:00,2162,5\n2024-05-10 00:00:01+00:00,100,7\n\
             2024-05-10 00:00:02.5+00:00,3,4\n2024-05-11 00:00:00.009930+00:00,1,1\n",
        )
        .unwrap();
        let at: Vec<u64> = v.iter().map(|a| a.at_ms).collect();
        assert_eq!(at, [0, 990, 2490, 86_400_000]);
        assert_eq!((v[0].context_tokens, v[0].generated_tokens), (2162, 5));
        // Offsets are honoured: 01:00+01:00 is midnight UTC; `T` and `Z` are read too.
        let v = read(&dir, "2024-05-10T00:00:00Z,1,1\n2024-05-10 01:00:00.250+01:00,1,1\n2024-05-10T00:00:01.5,1,1\n")
            .unwrap();
        assert_eq!(v.iter().map(|a| a.at_ms).collect::<Vec<_>>(), [0, 250, 1500]);
        // Not a time at all: named, with the line.
        let e = read(&dir, "2024-05-10 00:00:00+00:00,1,1\n1715299200,1,1\n").unwrap_err().to_string();
        assert!(e.contains("t.csv:3: TIMESTAMP '1715299200' is not YYYY-MM-DD HH:MM:SS"), "{e}");
    }

    #[test]
    fn rows_out_of_time_order_are_put_in_order() {
        let dir = tempfile::tempdir().unwrap();
        // The earliest row is not the first: times count from it, and ties keep the file's order.
        let v = read(
            &dir,
            "2023-11-16 18:15:47.000,1,1\n2023-11-16 18:15:46.5,2,2\n2023-11-16 18:15:47.000,3,3\n\
             2023-11-16 18:15:46.0,4,4\n",
        )
        .unwrap();
        let got: Vec<(u64, u32)> = v.iter().map(|a| (a.at_ms, a.context_tokens)).collect();
        assert_eq!(got, [(0, 4), (500, 2), (1000, 1), (1000, 3)]);
    }

    #[test]
    fn transforms() {
        let v: Vec<Arrival> =
            (0..100).map(|i| Arrival { at_ms: i * 10, context_tokens: 1, generated_tokens: 1 }).collect();
        assert_eq!(time_scale(&v, 2.0)[99].at_ms, 1980);
        let t = tile(&v, 10_000, 1.0, 0.0, 1);
        // The trace spans 991 ms, so 10 000 ms hold 10 copies and the first 9 requests of an 11th.
        assert_eq!(t.len(), 1009);
        let doubled = tile(&v, 10_000, 2.5, 0.0, 1);
        assert!((2400..=2650).contains(&doubled.len()), "{}", doubled.len());
        assert_eq!(tile(&v, 10_000, 2.5, 0.0, 1), doubled, "seeded");
        let p = poisson(10.0, 100_000, 5, 5, 3);
        assert!((900..1100).contains(&p.len()), "{}", p.len());
        // A day at 1 req/s with amplitude 0.8: about 86,400 requests, five times as many in the
        // hour around noon as in the hour around midnight.
        let d = diurnal_poisson(1.0, 0.8, 86_400_000, 5, 5, 3);
        assert!((84_000..89_000).contains(&d.len()), "{}", d.len());
        let hour = |h: u64| d.iter().filter(|a| a.at_ms / 3_600_000 == h).count() as f64;
        let (noon, midnight) = (hour(11) + hour(12), hour(23) + hour(0));
        assert!(noon > 4.0 * midnight, "noon {noon} vs midnight {midnight}");
    }
}
