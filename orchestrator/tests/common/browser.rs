//! A real headless Chromium (Debian's `chromium`), driven over WebDriver: `chromedriver` started
//! on a free port, fantoccini as the client. scripts/test installs both packages.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

pub struct Chromedriver {
    child: Child,
    pub url: String,
}

impl Chromedriver {
    pub fn start() -> Chromedriver {
        let bin = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| std::path::Path::new(p).is_file())
            .expect("chromedriver: install Debian's chromium and chromium-driver (scripts/test does)");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let d = Chromedriver { child, url: format!("http://127.0.0.1:{port}") };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if ready(port) {
                return d;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("chromedriver did not become ready within 20 s");
    }

    /// A new headless browser window of `w` × `h` CSS pixels, keeping the page's console log.
    pub async fn browser(&self, w: u32, h: u32) -> Client {
        let mut caps = serde_json::Map::new();
        let mut opts = json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--no-first-run", format!("--window-size={w},{h}")],
        });
        if std::path::Path::new("/usr/bin/chromium").is_file() {
            opts["binary"] = json!("/usr/bin/chromium");
        }
        caps.insert("goog:chromeOptions".into(), opts);
        caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a chromium session");
        c.set_window_size(w, h).await.unwrap();
        c
    }
}

/// Whether chromedriver's `/status` says it is ready (it keeps connections open whatever the
/// request says, so the answer is read until it has been seen, not until the connection ends).
fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(format!("GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&got).contains("\"ready\":true") {
            return true;
        }
    }
    false
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// chromedriver's browser log (`POST /session/{id}/se/log`): what the page's console printed,
/// errors the browser reported (failed loads, blocked content, uncaught exceptions) included.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }
    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

/// The console's errors since the last call (SEVERE entries of the browser log).
pub async fn console_errors(c: &Client) -> Vec<String> {
    let log = c.issue_cmd(BrowserLog).await.expect("the browser log");
    log.as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Runs `script` (a function body returning a value) until it returns something truthy.
pub async fn wait_for(c: &Client, what: &str, script: &str, limit: Duration) -> Value {
    let t = Instant::now();
    loop {
        let v = c.execute(script, vec![]).await.unwrap_or(Value::Null);
        let truthy = match &v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            _ => true,
        };
        if truthy {
            return v;
        }
        if t.elapsed() > limit {
            let body = c.execute("return document.body.innerText", vec![]).await.unwrap_or_default();
            panic!("{what}: not within {limit:?}; the page says:\n{}", body.as_str().unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Saves a screenshot as `{dir}/{name}.png` and returns its path.
pub async fn screenshot(c: &Client, dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let png = c.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let p = dir.join(format!("{name}.png"));
    std::fs::write(&p, png).unwrap();
    p
}
