//! A minimal blocking HTTP/1.1 client for tests that drive a real `fleetd` over its API (one
//! request per connection; no dependency on an HTTP client crate).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Sends one request; returns the status code and the body. JSON bodies (starting with `{`) are
/// sent as `application/json`, others as text; `headers` are extra `Name: value` lines.
pub fn request(addr: &str, method: &str, path: &str, headers: &[&str], body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let ct = if body.starts_with('{') { "application/json" } else { "text/plain" };
    let mut extra = String::new();
    for h in headers {
        extra.push_str(h);
        extra.push_str("\r\n");
    }
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// [`request`] without extra headers.
pub fn http(addr: &str, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    request(addr, method, path, &[], body)
}
