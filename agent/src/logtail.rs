//! The agent's log tail: every line the agent logs also goes into a ring of the last
//! [`LINES`] lines, which the agent publishes under `agentlogs/{node}` (on its lease) so that
//! `fleetctl logs node ID` shows it wherever the node runs.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

pub const LINES: usize = 200;

#[derive(Debug, Default)]
struct Ring {
    lines: VecDeque<String>,
    partial: String,
    /// Bumped on every new line (the publisher writes only when it moved).
    seq: u64,
}

/// The process's log tail (set up by `fleet-agent`'s main; absent in tests that embed the agent).
static TAIL: OnceLock<Arc<Mutex<Ring>>> = OnceLock::new();

/// A `tracing_subscriber` writer: stderr, and the tail.
#[derive(Clone)]
pub struct Tee(Arc<Mutex<Ring>>);

/// Installs the tail; returns the writer to give `tracing_subscriber::fmt().with_writer`.
pub fn install() -> Tee {
    Tee(TAIL.get_or_init(Default::default).clone())
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().write_all(buf)?;
        let mut r = self.0.lock().expect("log tail");
        r.partial.push_str(&String::from_utf8_lossy(buf));
        while let Some(i) = r.partial.find('\n') {
            let line: String = r.partial.drain(..=i).collect();
            r.lines.push_back(line.trim_end().to_string());
            if r.lines.len() > LINES {
                r.lines.pop_front();
            }
            r.seq += 1;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Tee {
    type Writer = Tee;
    fn make_writer(&'a self) -> Tee {
        self.clone()
    }
}

/// The tail and its sequence number, if the tail is installed and moved past `seen`.
pub fn since(seen: u64) -> Option<(u64, Vec<String>)> {
    let r = TAIL.get()?.lock().expect("log tail");
    (r.seq != seen).then(|| (r.seq, r.lines.iter().cloned().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_whole() {
        let mut t = install();
        let seen = since(0).map_or(0, |(s, _)| s);
        write!(t, "one\ntw").unwrap();
        t.write_all(b"o\n").unwrap();
        let (seq, lines) = since(seen).unwrap();
        assert!(lines.ends_with(&["one".to_string(), "two".to_string()]), "{lines:?}");
        assert!(since(seq).is_none(), "nothing new");
        for i in 0..(LINES + 5) {
            writeln!(t, "l{i}").unwrap();
        }
        let (_, lines) = since(seq).unwrap();
        assert_eq!(lines.len(), LINES);
        assert_eq!(lines.last().unwrap(), &format!("l{}", LINES + 4));
    }
}
