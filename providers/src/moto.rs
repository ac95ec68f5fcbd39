//! moto's EC2 server (`pip install "moto[server]"`, which `scripts/test` installs) on a free
//! loopback port: the EC2 API that AWS tests run against (this crate's and fleetd's).

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `moto_server`; stopped when dropped.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`: the endpoint override for the AWS SDK.
    pub url: String,
    pub port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts moto and waits until it listens (blocking; at most 10 s).
    pub fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server not found: install it with `pip install \"moto[server]\"` (scripts/test does)");
        let moto = Moto { child, url: format!("http://127.0.0.1:{port}"), port };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return moto;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("moto_server did not listen on port {port} within 10 s");
    }
}
